"""The SMMUv3 Performance Monitor Counter Group register frame (IHI 0070 chapter 10, "Performance
Monitor Counter Groups"; 10.4 "Registers"): offsets within the PMCG's own 4 KiB page, the
layouts of its configuration, control and event-type registers, and the architected event
numbers (10.3 "Event numbers", the ones Linux ``arm_smmuv3_pmu`` names)."""

from __future__ import annotations

from typing import Final

from iommusim.bits.fields import Access, layout

__all__ = [
    "CFGR",
    "CR",
    "EVENT_ATS_TRANSLATED",
    "EVENT_ATS_TRANS_REQ",
    "EVENT_CONFIG_ACCESS",
    "EVENT_CONFIG_MISS",
    "EVENT_CYCLES",
    "EVENT_TLB_MISS",
    "EVENT_TRANSACTION",
    "EVENT_WALK_ACCESS",
    "EVTYPER",
    "PMCG_AIDR",
    "PMCG_CAPR",
    "PMCG_CEID0",
    "PMCG_CEID1",
    "PMCG_CFGR",
    "PMCG_CNTENCLR0",
    "PMCG_CNTENSET0",
    "PMCG_CR",
    "PMCG_EVCNTR",
    "PMCG_EVTYPER",
    "PMCG_INTENCLR0",
    "PMCG_INTENSET0",
    "PMCG_IRQ_CTRL",
    "PMCG_IRQ_CTRLACK",
    "PMCG_OFFSET",
    "PMCG_OVSCLR0",
    "PMCG_OVSSET0",
    "PMCG_SCR",
    "PMCG_SMR",
    "PMCG_SVR",
]

_RO = Access.RO
_RW = Access.RW

#: Where the model places the PMCG page: right after the SMMU's two register pages (IHI 0070
#: 10: a PMCG's address is IMPLEMENTATION DEFINED, given by firmware).
PMCG_OFFSET: Final = 0x20000

# -- offsets (IHI 0070 10.4, page 0 of the PMCG; without CFGR.RELOC_CTRS) ---------------------

#: SMMU_PMCG_EVCNTR<n>: counter n at ``PMCG_EVCNTR + n * 8`` (64-bit counters, CFGR.SIZE > 31).
PMCG_EVCNTR: Final = 0x000
#: SMMU_PMCG_EVTYPER<n> at ``PMCG_EVTYPER + n * 4``.
PMCG_EVTYPER: Final = 0x400
#: SMMU_PMCG_SVR<n> (shadow values of a capture) at ``PMCG_SVR + n * 8``.
PMCG_SVR: Final = 0x600
#: SMMU_PMCG_SMR<n> (StreamID filter) at ``PMCG_SMR + n * 4``.
PMCG_SMR: Final = 0xA00
PMCG_CNTENSET0: Final = 0xC00
PMCG_CNTENCLR0: Final = 0xC20
PMCG_INTENSET0: Final = 0xC40
PMCG_INTENCLR0: Final = 0xC60
PMCG_OVSCLR0: Final = 0xC80
PMCG_OVSSET0: Final = 0xCC0
PMCG_CAPR: Final = 0xD88
PMCG_SCR: Final = 0xDF8
PMCG_CFGR: Final = 0xE00
PMCG_CR: Final = 0xE04
PMCG_CEID0: Final = 0xE20
PMCG_CEID1: Final = 0xE28
PMCG_IRQ_CTRL: Final = 0xE50
PMCG_IRQ_CTRLACK: Final = 0xE54
PMCG_AIDR: Final = 0xE70

# -- layouts ---------------------------------------------------------------------------------

# IHI 0070 10.4 SMMU_PMCG_CFGR: NCTR = counters - 1, SIZE = counter bits - 1, and the options.
CFGR: Final = layout(
    "smmu_pmcg_cfgr",
    32,
    "IHI 0070 10.4 SMMU_PMCG_CFGR",
    ("nctr", 0, 6, _RO),
    ("size", 8, 6, _RO),
    ("reloc_ctrs", 20, 1, _RO),
    ("msi", 21, 1, _RO),
    ("capture", 22, 1, _RO),
    ("sid_filter_type", 23, 1, _RO),
)
# IHI 0070 10.4 SMMU_PMCG_CR: E enables every counter whose CNTENSET0 bit is set.
CR: Final = layout("smmu_pmcg_cr", 32, "IHI 0070 10.4 SMMU_PMCG_CR", ("e", 0, 1, _RW))
# IHI 0070 10.4 SMMU_PMCG_EVTYPER<n>: the event counted, and the StreamID filter controls.
EVTYPER: Final = layout(
    "smmu_pmcg_evtyper",
    32,
    "IHI 0070 10.4 SMMU_PMCG_EVTYPER<n>",
    ("event", 0, 16, _RW),
    ("filter_sid_span", 29, 1, _RW),
    ("filter_sec_sid", 30, 1, _RW),
)

# -- events (IHI 0070 10.3) ------------------------------------------------------------------

EVENT_CYCLES: Final = 0x0
EVENT_TRANSACTION: Final = 0x1
EVENT_TLB_MISS: Final = 0x2
EVENT_CONFIG_MISS: Final = 0x3
EVENT_WALK_ACCESS: Final = 0x4
EVENT_CONFIG_ACCESS: Final = 0x5
EVENT_ATS_TRANS_REQ: Final = 0x6
EVENT_ATS_TRANSLATED: Final = 0x7
