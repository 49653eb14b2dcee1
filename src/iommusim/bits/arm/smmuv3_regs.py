"""The Arm SMMUv3 register file as tables (IHI 0070 chapter 6, "Memory map and registers").

The non-secure programming interface is two 64 KiB pages (IHI 0070 6.1, "Memory map"): page 0
holds the ID, control, table-base and queue-base registers; page 1 (at ``0x10000``) holds the
producer/consumer indexes the SMMU itself updates -- ``SMMU_EVENTQ_PROD/CONS`` and
``SMMU_PRIQ_PROD/CONS`` exist only there (offsets ``0x100A8``, ``0x100AC``, ``0x100C8``,
``0x100CC``; the matching page-0 offsets are reserved). Every offset here is the absolute offset
from the SMMU base.

Each register is a :class:`Register`: its offset, a :class:`Layout` whose fields carry the
access rule of IHI 0070 6.3 (RO, RW, RW1S, WARL; bits in no field are RES0), and its reset value
where the spec fixes one (``None`` where it is UNKNOWN or IMPLEMENTATION DEFINED). The ``Final``
offsets and masks at the end are derived from the tables for code that works on plain ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iommusim.bits.fields import Access, Layout, layout

__all__ = [
    "AGBPA",
    "AIDR",
    "CMDQ_BASE",
    "CMDQ_CONS",
    "CMDQ_CONS_ERR",
    "CMDQ_CONS_ERR_SHIFT",
    "CMDQ_PROD",
    "CR0",
    "CR0ACK",
    "CR0_ATSCHK",
    "CR0_CMDQEN",
    "CR0_EVENTQEN",
    "CR0_PRIQEN",
    "CR0_SMMUEN",
    "CR1",
    "CR2",
    "EVENTQ_BASE",
    "EVENTQ_CONS",
    "EVENTQ_PROD",
    "GATOS_CTRL",
    "GATOS_SID",
    "GBPA",
    "GBPA_ABORT",
    "GBPA_UPDATE",
    "GERROR",
    "GERRORN",
    "GERROR_ERRORS",
    "IDR0",
    "IDR1",
    "IDR2",
    "IDR3",
    "IDR4",
    "IDR5",
    "IIDR",
    "IRQ_CFG0",
    "IRQ_CFG1",
    "IRQ_CFG2",
    "IRQ_CTRL",
    "IRQ_CTRLACK",
    "OFF",
    "PAGE1",
    "PAGE_SIZE",
    "PRIQ_BASE",
    "PRIQ_CONS",
    "PRIQ_PROD",
    "QUEUE_ADDR_MASK",
    "QUEUE_LOG2SIZE_MASK",
    "QUEUE_OVFLG",
    "REGISTERS",
    "STATUSR",
    "STRTAB_ADDR_MASK",
    "STRTAB_BASE",
    "STRTAB_BASE_CFG",
    "STRTAB_FMT_2LVL",
    "STRTAB_FMT_LINEAR",
    "Register",
]

_RO = Access.RO
_RW = Access.RW
_W1S = Access.RW1S
_WARL = Access.WARL


@dataclass(frozen=True, slots=True)
class Register:
    """One SMMUv3 register: absolute ``offset`` from the SMMU base, its ``layout`` and its
    ``reset`` value (IHI 0070 6.3; ``None`` where the spec leaves it UNKNOWN or
    IMPLEMENTATION DEFINED)."""

    name: str
    offset: int
    layout: Layout
    reset: int | None = None

    @property
    def size(self) -> int:
        """Size in bytes (4 or 8)."""
        return self.layout.width // 8

    @property
    def page(self) -> int:
        """The 64 KiB page the register is in (IHI 0070 6.1)."""
        return self.offset // PAGE_SIZE


#: IHI 0070 6.1: each register page is 64 KiB; page 1 starts at 0x10000.
PAGE_SIZE: Final = 0x10000
PAGE1: Final = PAGE_SIZE

# -- ID registers (IHI 0070 6.3): read-only ---------------------------------------------

# IHI 0070 6.3, SMMU_IDR0
IDR0: Final = layout(
    "smmu_idr0",
    32,
    "IHI 0070 6.3, SMMU_IDR0",
    ("s2p", 0, 1, _RO),
    ("s1p", 1, 1, _RO),
    ("ttf", 2, 2, _RO),
    ("cohacc", 4, 1, _RO),
    ("btm", 5, 1, _RO),
    ("httu", 6, 2, _RO),
    ("dormhint", 8, 1, _RO),
    ("hyp", 9, 1, _RO),
    ("ats", 10, 1, _RO),
    ("ns1ats", 11, 1, _RO),
    ("asid16", 12, 1, _RO),
    ("msi", 13, 1, _RO),
    ("sev", 14, 1, _RO),
    ("atos", 15, 1, _RO),
    ("pri", 16, 1, _RO),
    ("vmw", 17, 1, _RO),
    ("vmid16", 18, 1, _RO),
    ("cd2l", 19, 1, _RO),
    ("vatos", 20, 1, _RO),
    ("ttendian", 21, 2, _RO),
    ("atsrecerr", 23, 1, _RO),
    ("stall_model", 24, 2, _RO),
    ("term_model", 26, 1, _RO),
    ("st_level", 27, 2, _RO),
    ("rme_impl", 30, 1, _RO),
)

# IHI 0070 6.3, SMMU_IDR1
IDR1: Final = layout(
    "smmu_idr1",
    32,
    "IHI 0070 6.3, SMMU_IDR1",
    ("sidsize", 0, 6, _RO),
    ("ssidsize", 6, 5, _RO),
    ("priqs", 11, 5, _RO),
    ("eventqs", 16, 5, _RO),
    ("cmdqs", 21, 5, _RO),
    ("attr_perms_ovr", 26, 1, _RO),
    ("attr_types_ovr", 27, 1, _RO),
    ("rel", 28, 1, _RO),
    ("queues_preset", 29, 1, _RO),
    ("tables_preset", 30, 1, _RO),
    ("ecmdq", 31, 1, _RO),
)

# IHI 0070 6.3, SMMU_IDR2
IDR2: Final = layout("smmu_idr2", 32, "IHI 0070 6.3, SMMU_IDR2", ("ba_vatos", 0, 10, _RO))

# IHI 0070 6.3, SMMU_IDR3
IDR3: Final = layout(
    "smmu_idr3",
    32,
    "IHI 0070 6.3, SMMU_IDR3",
    ("had", 2, 1, _RO),
    ("pbha", 3, 1, _RO),
    ("xnx", 4, 1, _RO),
    ("pps", 5, 1, _RO),
    ("mpam", 7, 1, _RO),
    ("fwb", 8, 1, _RO),
    ("stt", 9, 1, _RO),
    ("ril", 10, 1, _RO),
    ("bbml", 11, 2, _RO),
    ("e0pd", 13, 1, _RO),
    ("ptwnnc", 14, 1, _RO),
    ("dpt", 15, 1, _RO),
)

# IHI 0070 6.3, SMMU_IDR4: wholly IMPLEMENTATION DEFINED.
IDR4: Final = layout("smmu_idr4", 32, "IHI 0070 6.3, SMMU_IDR4", ("impdef", 0, 32, _RO))

# IHI 0070 6.3, SMMU_IDR5
IDR5: Final = layout(
    "smmu_idr5",
    32,
    "IHI 0070 6.3, SMMU_IDR5",
    ("oas", 0, 3, _RO),
    ("gran4k", 4, 1, _RO),
    ("gran16k", 5, 1, _RO),
    ("gran64k", 6, 1, _RO),
    ("ds", 7, 1, _RO),
    ("vax", 10, 2, _RO),
    ("stall_max", 16, 16, _RO),
)

# IHI 0070 6.3, SMMU_IIDR
IIDR: Final = layout(
    "smmu_iidr",
    32,
    "IHI 0070 6.3, SMMU_IIDR",
    ("implementer", 0, 12, _RO),
    ("revision", 12, 4, _RO),
    ("variant", 16, 4, _RO),
    ("productid", 20, 12, _RO),
)

# IHI 0070 6.3, SMMU_AIDR: SMMUv3.x is ArchMajorRev 0, ArchMinorRev x.
AIDR: Final = layout(
    "smmu_aidr",
    32,
    "IHI 0070 6.3, SMMU_AIDR",
    ("archminorrev", 0, 4, _RO),
    ("archmajorrev", 4, 4, _RO),
)

# -- control (IHI 0070 6.3) -------------------------------------------------------------


def _cr0(name: str, spec: str, access: Access) -> Layout:
    # CR0 and CR0ACK share their fields: the ACK register reflects each enable once the SMMU has
    # acted on it (IHI 0070 6.3).
    return layout(
        name,
        32,
        spec,
        ("smmuen", 0, 1, access),
        ("priqen", 1, 1, access),
        ("eventqen", 2, 1, access),
        ("cmdqen", 3, 1, access),
        ("atschk", 4, 1, access),
        ("vmw", 6, 3, access),
    )


# IHI 0070 6.3, SMMU_CR0 / SMMU_CR0ACK
CR0: Final = _cr0("smmu_cr0", "IHI 0070 6.3, SMMU_CR0", _RW)
CR0ACK: Final = _cr0("smmu_cr0ack", "IHI 0070 6.3, SMMU_CR0ACK", _RO)

# IHI 0070 6.3, SMMU_CR1: attributes of queue and table accesses.
CR1: Final = layout(
    "smmu_cr1",
    32,
    "IHI 0070 6.3, SMMU_CR1",
    ("queue_ic", 0, 2, _RW),
    ("queue_oc", 2, 2, _RW),
    ("queue_sh", 4, 2, _RW),
    ("table_ic", 6, 2, _RW),
    ("table_oc", 8, 2, _RW),
    ("table_sh", 10, 2, _RW),
)

# IHI 0070 6.3, SMMU_CR2
CR2: Final = layout(
    "smmu_cr2",
    32,
    "IHI 0070 6.3, SMMU_CR2",
    ("e2h", 0, 1, _WARL),
    ("recinvsid", 1, 1, _RW),
    ("ptm", 2, 1, _WARL),
)

# IHI 0070 6.3, SMMU_STATUSR
STATUSR: Final = layout("smmu_statusr", 32, "IHI 0070 6.3, SMMU_STATUSR", ("dormant", 0, 1, _RO))

# IHI 0070 6.3, SMMU_GBPA: attributes of transactions bypassing the SMMU while SMMUEN is 0.
# Software writes with UPDATE = 1 and polls until the SMMU clears it: write-1-to-set.
GBPA: Final = layout(
    "smmu_gbpa",
    32,
    "IHI 0070 6.3, SMMU_GBPA",
    ("memattr", 0, 4, _RW),
    ("mtcfg", 4, 1, _RW),
    ("alloccfg", 8, 4, _RW),
    ("shcfg", 12, 2, _RW),
    ("nscfg", 14, 2, _RW),
    ("privcfg", 16, 2, _RW),
    ("instcfg", 18, 2, _RW),
    ("abort", 20, 1, _RW),
    ("update", 31, 1, _W1S),
)

# IHI 0070 6.3, SMMU_AGBPA: IMPLEMENTATION DEFINED alternative bypass attributes.
AGBPA: Final = layout("smmu_agbpa", 32, "IHI 0070 6.3, SMMU_AGBPA", ("impdef", 0, 32, _RW))

# -- interrupts and global errors (IHI 0070 6.3) ---------------------------------------


def _irq_ctrl(name: str, spec: str, access: Access) -> Layout:
    return layout(
        name,
        32,
        spec,
        ("gerror_irqen", 0, 1, access),
        ("priq_irqen", 1, 1, access),
        ("eventq_irqen", 2, 1, access),
    )


# IHI 0070 6.3, SMMU_IRQ_CTRL / SMMU_IRQ_CTRLACK
IRQ_CTRL: Final = _irq_ctrl("smmu_irq_ctrl", "IHI 0070 6.3, SMMU_IRQ_CTRL", _RW)
IRQ_CTRLACK: Final = _irq_ctrl("smmu_irq_ctrlack", "IHI 0070 6.3, SMMU_IRQ_CTRLACK", _RO)


def _gerror(name: str, spec: str, access: Access) -> Layout:
    # GERROR and GERRORN share their fields: an error is active while the two bits differ, and
    # software acknowledges it by toggling the GERRORN bit (IHI 0070 6.3, SMMU_GERROR).
    return layout(
        name,
        32,
        spec,
        ("cmdq_err", 0, 1, access),
        ("eventq_abt_err", 2, 1, access),
        ("priq_abt_err", 3, 1, access),
        ("msi_cmdq_abt_err", 4, 1, access),
        ("msi_eventq_abt_err", 5, 1, access),
        ("msi_priq_abt_err", 6, 1, access),
        ("msi_gerror_abt_err", 7, 1, access),
        ("sfm_err", 8, 1, access),
        ("cmdqp_err", 9, 1, access),
    )


# IHI 0070 6.3, SMMU_GERROR / SMMU_GERRORN
GERROR: Final = _gerror("smmu_gerror", "IHI 0070 6.3, SMMU_GERROR", _RO)
GERRORN: Final = _gerror("smmu_gerrorn", "IHI 0070 6.3, SMMU_GERRORN", _RW)

# MSI configuration, one alike set per interrupt source (IHI 0070 6.3, SMMU_GERROR_IRQ_CFG0/1/2,
# SMMU_EVENTQ_IRQ_CFG0/1/2, SMMU_PRIQ_IRQ_CFG0/1/2). Address bits above the implemented PA size
# are RES0, so ADDR is WARL.
IRQ_CFG0: Final = layout(
    "smmu_irq_cfg0", 64, "IHI 0070 6.3, SMMU_GERROR_IRQ_CFG0", ("addr", 2, 50, _WARL)
)
IRQ_CFG1: Final = layout("smmu_irq_cfg1", 32, "IHI 0070 6.3, SMMU_GERROR_IRQ_CFG1", ("data", 0, 32))
IRQ_CFG2: Final = layout(
    "smmu_irq_cfg2",
    32,
    "IHI 0070 6.3, SMMU_GERROR_IRQ_CFG2",
    ("memattr", 0, 4, _RW),
    ("sh", 4, 2, _RW),
)

# -- stream table and queues (IHI 0070 6.3) --------------------------------------------

# IHI 0070 6.3, SMMU_STRTAB_BASE
STRTAB_BASE: Final = layout(
    "smmu_strtab_base",
    64,
    "IHI 0070 6.3, SMMU_STRTAB_BASE",
    ("addr", 6, 46, _WARL),
    ("ra", 62, 1, _RW),
)

# IHI 0070 6.3, SMMU_STRTAB_BASE_CFG
STRTAB_BASE_CFG: Final = layout(
    "smmu_strtab_base_cfg",
    32,
    "IHI 0070 6.3, SMMU_STRTAB_BASE_CFG",
    ("log2size", 0, 6, _RW),
    ("split", 6, 5, _WARL),
    ("fmt", 16, 2, _WARL),
)
#: STRTAB_BASE_CFG.FMT encodings (IHI 0070 6.3).
STRTAB_FMT_LINEAR: Final = 0
STRTAB_FMT_2LVL: Final = 1


def _queue_base(name: str, spec: str, allocate: str) -> Layout:
    # The CMDQ base's hint is RA (read-allocate), the output queues' is WA (write-allocate).
    return layout(
        name,
        64,
        spec,
        ("log2size", 0, 5, _RW),
        ("addr", 5, 47, _WARL),
        (allocate, 62, 1, _RW),
    )


def _queue_index(name: str, spec: str, index: str, access: Access, flag: str = "") -> Layout:
    # IHI 0070 6.3: the index is 20 bits, LOG2SIZE bits of entry index then one wrap bit
    # (queues hold at most 2^19 entries); the output queues add an overflow flag at bit 31.
    fields: list[tuple[str, int, int, Access]] = [(index, 0, 20, access)]
    if flag:
        fields.append((flag, 31, 1, access))
    return layout(name, 32, spec, *fields)


# IHI 0070 6.3, SMMU_CMDQ_BASE / PROD / CONS: software produces, the SMMU consumes.
CMDQ_BASE: Final = _queue_base("smmu_cmdq_base", "IHI 0070 6.3, SMMU_CMDQ_BASE", "ra")
CMDQ_PROD: Final = _queue_index("smmu_cmdq_prod", "IHI 0070 6.3, SMMU_CMDQ_PROD", "wr", _RW)
CMDQ_CONS: Final = layout(
    "smmu_cmdq_cons",
    32,
    "IHI 0070 6.3, SMMU_CMDQ_CONS",
    ("rd", 0, 20, _RO),
    ("err", 24, 7, _RO),
)

# IHI 0070 6.3, SMMU_EVENTQ_BASE / PROD / CONS: the SMMU produces, software consumes.
EVENTQ_BASE: Final = _queue_base("smmu_eventq_base", "IHI 0070 6.3, SMMU_EVENTQ_BASE", "wa")
EVENTQ_PROD: Final = _queue_index(
    "smmu_eventq_prod", "IHI 0070 6.3, SMMU_EVENTQ_PROD", "wr", _RO, "ovflg"
)
EVENTQ_CONS: Final = _queue_index(
    "smmu_eventq_cons", "IHI 0070 6.3, SMMU_EVENTQ_CONS", "rd", _RW, "ovackflg"
)

# IHI 0070 6.3, SMMU_PRIQ_BASE / PROD / CONS.
PRIQ_BASE: Final = _queue_base("smmu_priq_base", "IHI 0070 6.3, SMMU_PRIQ_BASE", "wa")
PRIQ_PROD: Final = _queue_index(
    "smmu_priq_prod", "IHI 0070 6.3, SMMU_PRIQ_PROD", "wr", _RO, "ovflg"
)
PRIQ_CONS: Final = _queue_index(
    "smmu_priq_cons", "IHI 0070 6.3, SMMU_PRIQ_CONS", "rd", _RW, "ovackflg"
)

# -- address translation operations (IHI 0070 6.3), the part that is just fields -------

# IHI 0070 6.3, SMMU_GATOS_CTRL: software sets RUN, the SMMU clears it when the ATOS is done.
GATOS_CTRL: Final = layout(
    "smmu_gatos_ctrl", 32, "IHI 0070 6.3, SMMU_GATOS_CTRL", ("run", 0, 1, _W1S)
)
# IHI 0070 6.3, SMMU_GATOS_SID
GATOS_SID: Final = layout(
    "smmu_gatos_sid",
    64,
    "IHI 0070 6.3, SMMU_GATOS_SID",
    ("streamid", 0, 32, _RW),
    ("substreamid", 32, 20, _RW),
    ("ssid_valid", 52, 1, _RW),
)

#: IHI 0070 6.2 "Register overview", in address order. The three MSI blocks share one set of
#: layouts; EVENTQ and PRIQ PROD/CONS live in page 1.
REGISTERS: Final[tuple[Register, ...]] = (
    Register("smmu_idr0", 0x0000, IDR0),
    Register("smmu_idr1", 0x0004, IDR1),
    Register("smmu_idr2", 0x0008, IDR2),
    Register("smmu_idr3", 0x000C, IDR3),
    Register("smmu_idr4", 0x0010, IDR4),
    Register("smmu_idr5", 0x0014, IDR5),
    Register("smmu_iidr", 0x0018, IIDR),
    Register("smmu_aidr", 0x001C, AIDR),
    Register("smmu_cr0", 0x0020, CR0, reset=0),
    Register("smmu_cr0ack", 0x0024, CR0ACK, reset=0),
    Register("smmu_cr1", 0x0028, CR1),
    Register("smmu_cr2", 0x002C, CR2),
    Register("smmu_statusr", 0x0040, STATUSR),
    Register("smmu_gbpa", 0x0044, GBPA),
    Register("smmu_agbpa", 0x0048, AGBPA),
    Register("smmu_irq_ctrl", 0x0050, IRQ_CTRL, reset=0),
    Register("smmu_irq_ctrlack", 0x0054, IRQ_CTRLACK, reset=0),
    Register("smmu_gerror", 0x0060, GERROR, reset=0),
    Register("smmu_gerrorn", 0x0064, GERRORN, reset=0),
    Register("smmu_gerror_irq_cfg0", 0x0068, IRQ_CFG0),
    Register("smmu_gerror_irq_cfg1", 0x0070, IRQ_CFG1),
    Register("smmu_gerror_irq_cfg2", 0x0074, IRQ_CFG2),
    Register("smmu_strtab_base", 0x0080, STRTAB_BASE),
    Register("smmu_strtab_base_cfg", 0x0088, STRTAB_BASE_CFG),
    Register("smmu_cmdq_base", 0x0090, CMDQ_BASE),
    Register("smmu_cmdq_prod", 0x0098, CMDQ_PROD),
    Register("smmu_cmdq_cons", 0x009C, CMDQ_CONS),
    Register("smmu_eventq_base", 0x00A0, EVENTQ_BASE),
    Register("smmu_eventq_irq_cfg0", 0x00B0, IRQ_CFG0),
    Register("smmu_eventq_irq_cfg1", 0x00B8, IRQ_CFG1),
    Register("smmu_eventq_irq_cfg2", 0x00BC, IRQ_CFG2),
    Register("smmu_priq_base", 0x00C0, PRIQ_BASE),
    Register("smmu_priq_irq_cfg0", 0x00D0, IRQ_CFG0),
    Register("smmu_priq_irq_cfg1", 0x00D8, IRQ_CFG1),
    Register("smmu_priq_irq_cfg2", 0x00DC, IRQ_CFG2),
    Register("smmu_gatos_ctrl", 0x0100, GATOS_CTRL, reset=0),
    Register("smmu_gatos_sid", 0x0108, GATOS_SID),
    Register("smmu_eventq_prod", PAGE1 + 0x00A8, EVENTQ_PROD),
    Register("smmu_eventq_cons", PAGE1 + 0x00AC, EVENTQ_CONS),
    Register("smmu_priq_prod", PAGE1 + 0x00C8, PRIQ_PROD),
    Register("smmu_priq_cons", PAGE1 + 0x00CC, PRIQ_CONS),
)


class OFF:
    """Absolute offsets of the registers (IHI 0070 6.2), derived from :data:`REGISTERS`."""

    _BY_NAME: Final = {r.name: r.offset for r in REGISTERS}
    IDR0: Final = _BY_NAME["smmu_idr0"]
    IDR1: Final = _BY_NAME["smmu_idr1"]
    IDR2: Final = _BY_NAME["smmu_idr2"]
    IDR3: Final = _BY_NAME["smmu_idr3"]
    IDR4: Final = _BY_NAME["smmu_idr4"]
    IDR5: Final = _BY_NAME["smmu_idr5"]
    IIDR: Final = _BY_NAME["smmu_iidr"]
    AIDR: Final = _BY_NAME["smmu_aidr"]
    CR0: Final = _BY_NAME["smmu_cr0"]
    CR0ACK: Final = _BY_NAME["smmu_cr0ack"]
    CR1: Final = _BY_NAME["smmu_cr1"]
    CR2: Final = _BY_NAME["smmu_cr2"]
    STATUSR: Final = _BY_NAME["smmu_statusr"]
    GBPA: Final = _BY_NAME["smmu_gbpa"]
    AGBPA: Final = _BY_NAME["smmu_agbpa"]
    IRQ_CTRL: Final = _BY_NAME["smmu_irq_ctrl"]
    IRQ_CTRLACK: Final = _BY_NAME["smmu_irq_ctrlack"]
    GERROR: Final = _BY_NAME["smmu_gerror"]
    GERRORN: Final = _BY_NAME["smmu_gerrorn"]
    GERROR_IRQ_CFG0: Final = _BY_NAME["smmu_gerror_irq_cfg0"]
    GERROR_IRQ_CFG1: Final = _BY_NAME["smmu_gerror_irq_cfg1"]
    GERROR_IRQ_CFG2: Final = _BY_NAME["smmu_gerror_irq_cfg2"]
    STRTAB_BASE: Final = _BY_NAME["smmu_strtab_base"]
    STRTAB_BASE_CFG: Final = _BY_NAME["smmu_strtab_base_cfg"]
    CMDQ_BASE: Final = _BY_NAME["smmu_cmdq_base"]
    CMDQ_PROD: Final = _BY_NAME["smmu_cmdq_prod"]
    CMDQ_CONS: Final = _BY_NAME["smmu_cmdq_cons"]
    EVENTQ_BASE: Final = _BY_NAME["smmu_eventq_base"]
    EVENTQ_PROD: Final = _BY_NAME["smmu_eventq_prod"]
    EVENTQ_CONS: Final = _BY_NAME["smmu_eventq_cons"]
    EVENTQ_IRQ_CFG0: Final = _BY_NAME["smmu_eventq_irq_cfg0"]
    EVENTQ_IRQ_CFG1: Final = _BY_NAME["smmu_eventq_irq_cfg1"]
    EVENTQ_IRQ_CFG2: Final = _BY_NAME["smmu_eventq_irq_cfg2"]
    PRIQ_BASE: Final = _BY_NAME["smmu_priq_base"]
    PRIQ_PROD: Final = _BY_NAME["smmu_priq_prod"]
    PRIQ_CONS: Final = _BY_NAME["smmu_priq_cons"]
    PRIQ_IRQ_CFG0: Final = _BY_NAME["smmu_priq_irq_cfg0"]
    PRIQ_IRQ_CFG1: Final = _BY_NAME["smmu_priq_irq_cfg1"]
    PRIQ_IRQ_CFG2: Final = _BY_NAME["smmu_priq_irq_cfg2"]
    GATOS_CTRL: Final = _BY_NAME["smmu_gatos_ctrl"]
    GATOS_SID: Final = _BY_NAME["smmu_gatos_sid"]


# -- masks for plain-int code, derived from the tables -----------------------------------------

CR0_SMMUEN: Final = CR0.mask("smmuen")
CR0_PRIQEN: Final = CR0.mask("priqen")
CR0_EVENTQEN: Final = CR0.mask("eventqen")
CR0_CMDQEN: Final = CR0.mask("cmdqen")
CR0_ATSCHK: Final = CR0.mask("atschk")

GBPA_ABORT: Final = GBPA.mask("abort")
GBPA_UPDATE: Final = GBPA.mask("update")

#: Every global error bit (IHI 0070 6.3).
GERROR_ERRORS: Final = GERROR.access_mask(Access.RO)

STRTAB_ADDR_MASK: Final = STRTAB_BASE.mask("addr")

# The three queue bases share their LOG2SIZE and ADDR positions.
QUEUE_LOG2SIZE_MASK: Final = CMDQ_BASE.mask("log2size")
QUEUE_ADDR_MASK: Final = CMDQ_BASE.mask("addr")
#: The overflow flag of the output queues' PROD (and the ack flag of their CONS).
QUEUE_OVFLG: Final = EVENTQ_PROD.mask("ovflg")

CMDQ_CONS_ERR: Final = CMDQ_CONS.mask("err")
CMDQ_CONS_ERR_SHIFT: Final = CMDQ_CONS["err"].lsb
