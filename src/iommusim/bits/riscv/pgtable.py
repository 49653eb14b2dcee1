"""Privileged-spec page-table entry layouts (Sv32, Sv39/48/57 and their x4 G-stage forms) as the
RISC-V IOMMU walks them (riscv-iommu: "Process to translate an IOVA").
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.fields import Access, layout

__all__ = [
    "PTE",
    "PTE32",
]

_C = Access.CUSTOM
_R = Access.RSVD

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
