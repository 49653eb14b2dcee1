"""RISC-V IOMMU in-memory data-structure layouts (riscv-iommu: "Data Structures",
"In-memory queue interface") and the privileged-spec page-table entry formats.

One source of truth: the hardware decoders take their masks from here, the explainer decodes
with these tables, and software encoders build values with them.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.fields import Access, Layout, layout

__all__ = [
    "CMD_ATS",
    "CMD_IODIR",
    "CMD_IOFENCE",
    "CMD_IOTINVAL",
    "DC_FSC",
    "DC_IOHGATP",
    "DC_MSIPTP",
    "DC_TA",
    "DC_TC",
    "DDTE",
    "FQ_RECORD",
    "MSIPTE_BASIC",
    "MSIPTE_MRIF",
    "MSI_ADDR_MASK",
    "PC_FSC",
    "PC_TA",
    "PDTE",
    "PQ_RECORD",
    "PTE",
    "PTE32",
]

_C = Access.CUSTOM
_R = Access.RSVD

# riscv-iommu: "Non-leaf DDT entry"
DDTE: Final = layout("ddte", 64, "Non-leaf DDT entry", ("v", 0, 1), ("ppn", 10, 44))

# riscv-iommu: "Translation control (tc)"
DC_TC: Final = layout(
    "dc.tc",
    64,
    "Translation control (tc)",
    ("v", 0, 1),
    ("en_ats", 1, 1),
    ("en_pri", 2, 1),
    ("t2gpa", 3, 1),
    ("dtf", 4, 1),
    ("pdtv", 5, 1),
    ("prpr", 6, 1),
    ("gade", 7, 1),
    ("sade", 8, 1),
    ("dpe", 9, 1),
    ("sbe", 10, 1),
    ("sxl", 11, 1),
    ("custom", 24, 8, _C),
)

# riscv-iommu: "IO hypervisor guest address translation and protection (iohgatp)"
DC_IOHGATP: Final = layout(
    "dc.iohgatp", 64, "iohgatp", ("ppn", 0, 44), ("gscid", 44, 16), ("mode", 60, 4)
)

# riscv-iommu: "Translation attributes (ta)" of the DC
DC_TA: Final = layout(
    "dc.ta",
    64,
    "Translation attributes (ta)",
    ("pscid", 12, 20),
    ("rcid", 40, 12),
    ("mcid", 52, 12),
)

# riscv-iommu: "First-Stage context (fsc)": iosatp and pdtp share the shape
DC_FSC: Final = layout("dc.fsc", 64, "First-Stage context (fsc)", ("ppn", 0, 44), ("mode", 60, 4))

# riscv-iommu: "MSI page table pointer (msiptp)"
DC_MSIPTP: Final = layout(
    "dc.msiptp", 64, "MSI page table pointer (msiptp)", ("ppn", 0, 44), ("mode", 60, 4)
)

# riscv-iommu: "MSI address mask (msi_addr_mask) and pattern (msi_addr_pattern)"
MSI_ADDR_MASK: Final = layout(
    "dc.msi_addr_mask", 64, "MSI address mask and pattern", ("mask", 0, 52)
)

# riscv-iommu: "Non-leaf PDT entry"
PDTE: Final = layout("pdte", 64, "Non-leaf PDT entry", ("v", 0, 1), ("ppn", 10, 44))

# riscv-iommu: "Process-context fields"
PC_TA: Final = layout(
    "pc.ta", 64, "Process-context ta", ("v", 0, 1), ("ens", 1, 1), ("sum", 2, 1), ("pscid", 12, 20)
)
PC_FSC: Final = layout("pc.fsc", 64, "Process-context fsc", ("ppn", 0, 44), ("mode", 60, 4))

# Privileged spec: Sv39/48/57 (and x4) page-table entry; bits 60:59 are reserved unless
# Svrsw60t59b, then they are for software (riscv-iommu: "PTE Reserved-for-Software Bits 60-59").
PTE: Final = layout(
    "pte",
    64,
    "privileged spec: Sv39/Sv48/Sv57 PTE",
    ("v", 0, 1),
    ("r", 1, 1),
    ("w", 2, 1),
    ("x", 3, 1),
    ("u", 4, 1),
    ("g", 5, 1),
    ("a", 6, 1),
    ("d", 7, 1),
    ("rsw", 8, 2, _C),
    ("ppn", 10, 44),
    ("rsw60t59b", 59, 2, _R),
    ("pbmt", 61, 2),
    ("n", 63, 1),
)

# Privileged spec: Sv32 (and Sv32x4) page-table entry.
PTE32: Final = layout(
    "pte32",
    32,
    "privileged spec: Sv32 PTE",
    ("v", 0, 1),
    ("r", 1, 1),
    ("w", 2, 1),
    ("x", 3, 1),
    ("u", 4, 1),
    ("g", 5, 1),
    ("a", 6, 1),
    ("d", 7, 1),
    ("rsw", 8, 2, _C),
    ("ppn", 10, 22),
)

# AIA: MSI page-table entry, basic translate mode (M = 3), first doubleword.
MSIPTE_BASIC: Final = layout(
    "msipte.basic",
    64,
    "AIA MSI PTE, write-through mode",
    ("v", 0, 1),
    ("m", 1, 2),
    ("ppn", 10, 44),
    ("c", 63, 1, _C),
)
# AIA: MSI page-table entry, MRIF mode (M = 1): doubleword 0, then doubleword 1 at bit 64.
MSIPTE_MRIF: Final = layout(
    "msipte.mrif",
    128,
    "AIA MSI PTE, MRIF mode",
    ("v", 0, 1),
    ("m", 1, 2),
    ("mrif_addr", 7, 47),
    ("c", 63, 1, _C),
    ("n90", 64, 10),
    ("nppn", 74, 44),
    ("n10", 124, 1),
)

# riscv-iommu: "Fault/Event-Queue (FQ)", fault-queue record (four doublewords).
FQ_RECORD: Final = layout(
    "fq.record",
    256,
    "Fault-queue record",
    ("cause", 0, 12),
    ("pid", 12, 20),
    ("pv", 32, 1),
    ("priv", 33, 1),
    ("ttyp", 34, 6),
    ("did", 40, 24),
    ("custom", 64, 32, _C),
    ("iotval", 128, 64),
    ("iotval2", 192, 64),
)

# riscv-iommu: "Page-Request-Queue (PQ)" record (two doublewords).
PQ_RECORD: Final = layout(
    "pq.record",
    128,
    "Page-request-queue record",
    ("pid", 12, 20),
    ("pv", 32, 1),
    ("priv", 33, 1),
    ("exec", 34, 1),
    ("did", 40, 24),
    ("payload", 64, 64),
)

# riscv-iommu: "Command-Queue (CQ)" command formats (two doublewords, 128 bits).
CMD_IOTINVAL: Final = layout(
    "cmd.iotinval",
    128,
    "IOMMU Page-Table cache invalidation commands",
    ("opcode", 0, 7),
    ("func3", 7, 3),
    ("av", 10, 1),
    ("pscid", 12, 20),
    ("pscv", 32, 1),
    ("gv", 33, 1),
    ("nl", 34, 1),
    ("gscid", 44, 16),
    ("s", 73, 1),
    ("addr", 74, 52),
)
CMD_IOFENCE: Final = layout(
    "cmd.iofence",
    128,
    "IOMMU Command-queue Fence commands",
    ("opcode", 0, 7),
    ("func3", 7, 3),
    ("av", 10, 1),
    ("wsi", 11, 1),
    ("pr", 12, 1),
    ("pw", 13, 1),
    ("data", 32, 32),
    ("addr", 64, 62),
)
CMD_IODIR: Final = layout(
    "cmd.iodir",
    128,
    "IOMMU directory cache invalidation commands",
    ("opcode", 0, 7),
    ("func3", 7, 3),
    ("pid", 12, 20),
    ("dv", 33, 1),
    ("did", 40, 24),
)
CMD_ATS: Final = layout(
    "cmd.ats",
    128,
    "IOMMU PCIe ATS commands",
    ("opcode", 0, 7),
    ("func3", 7, 3),
    ("pid", 12, 20),
    ("pv", 32, 1),
    ("dsv", 33, 1),
    ("rid", 40, 16),
    ("dseg", 56, 8),
    ("payload", 64, 64),
)

ALL_LAYOUTS: Final[tuple[Layout, ...]] = (
    DDTE,
    DC_TC,
    DC_IOHGATP,
    DC_TA,
    DC_FSC,
    DC_MSIPTP,
    MSI_ADDR_MASK,
    PDTE,
    PC_TA,
    PC_FSC,
    PTE,
    PTE32,
    MSIPTE_BASIC,
    MSIPTE_MRIF,
    FQ_RECORD,
    PQ_RECORD,
    CMD_IOTINVAL,
    CMD_IOFENCE,
    CMD_IODIR,
    CMD_ATS,
)
