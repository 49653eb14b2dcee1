"""RISC-V IOMMU in-memory data-structure layouts (riscv-iommu: "Data Structures"): DDT and
PDT entries, device and process contexts, and the AIA MSI page-table entries.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.fields import Access, layout

__all__ = [
    "DC_FSC",
    "DC_IOHGATP",
    "DC_MSIPTP",
    "DC_TA",
    "DC_TC",
    "DDTE",
    "MSIPTE_BASIC",
    "MSIPTE_MRIF",
    "MSI_ADDR_MASK",
    "PC_FSC",
    "PC_TA",
    "PDTE",
]

_C = Access.CUSTOM

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
