"""Privileged-spec page-table entry layouts (Sv32, Sv39/48/57 and their x4 G-stage forms) as the
RISC-V IOMMU walks them (riscv-iommu: "Process to translate an IOVA"), and the page-table
formats built on them (:class:`~iommusim.bits.pgformat.PtFormat` instances) that the hardware
walker (:mod:`iommusim.hw.pgtable`) and the radix writer (:mod:`iommusim.sw.pgtable`) share.
"""

from __future__ import annotations

from typing import Final, Literal

from iommusim.bits.fields import Access, Layout, layout
from iommusim.bits.pgformat import PtFormat

__all__ = [
    "FIRST_STAGE_FORMATS",
    "G_STAGE_FORMATS",
    "PTE",
    "PTE32",
    "RISCV_FORMATS",
    "SV32",
    "SV32X4",
    "SV39",
    "SV39X4",
    "SV48",
    "SV48X4",
    "SV57",
    "SV57X4",
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


def _riscv(
    name: str, spec: str, pte: Layout, index_bits: tuple[int, ...], input_: Literal["sign", "zero"]
) -> PtFormat:
    """A RISC-V paged format: privileged spec "Virtual Address Translation Process" -- a PTE
    with V = 1 and R = W = X = 0 points to the next level, any other valid PTE is a leaf, at
    any level (superpages), whose PPN must be aligned to its size; D, A and U are reserved in a
    non-leaf PTE ("For non-leaf PTEs, the D, A, and U bits are reserved"), and so are N
    (Svnapot) and PBMT (Svpbmt) there. Svnapot: a leaf with N = 1 is a 64 KiB NAPOT page (PPN
    bits 3:0 = 1000). Svpbmt: PBMT = 3 is reserved; without Svpbmt bits 62:61 are reserved,
    without Svrsw60t59b bits 60:59 (riscv-iommu: "PTE Reserved-for-Software Bits 60-59")."""
    wide = pte.width == 64
    return PtFormat(
        name=name,
        spec=spec,
        pte=pte,
        index_bits=index_bits,
        page_shift=12,
        input=input_,
        oa="ppn",
        valid="v",
        read="r",
        write="w",
        execute="x",
        user="u",
        accessed="a",
        dirty="d",
        global_="g",
        table_fields=("v", "r", "w", "x"),
        nonleaf_reserved=("d", "a", "u", "n", "pbmt") if wide else ("d", "a", "u"),
        optional=(("svpbmt", "pbmt"), ("svrsw60t59b", "rsw60t59b")) if wide else (),
        memtype="pbmt" if wide else None,
        memtype_reserved=(3,) if wide else (),
        napot="n" if wide else None,
        napot_order=4 if wide else 0,
        # "Table: Encoding of PTE R/W/X fields": W without R is reserved.
        write_only_reserved=True,
    )


# Privileged spec "Sv32: Page-Based 32-bit Virtual-Memory Systems": 2 levels of 10 index bits,
# 4-byte PTEs, 32-bit VAs (not sign-extended), 34-bit PAs.
SV32: Final = _riscv("sv32", "privileged spec: Sv32", PTE32, (10, 10), "zero")
# Privileged spec "Sv39" / "Sv48" / "Sv57": 3 / 4 / 5 levels of 9 index bits, 8-byte PTEs; the
# VA must be sign-extended from its top bit ("bits 63-39 must all equal bit 38").
SV39: Final = _riscv("sv39", "privileged spec: Sv39", PTE, (9, 9, 9), "sign")
SV48: Final = _riscv("sv48", "privileged spec: Sv48", PTE, (9, 9, 9, 9), "sign")
SV57: Final = _riscv("sv57", "privileged spec: Sv57", PTE, (9, 9, 9, 9, 9), "sign")
# Privileged spec "Two-Stage Address Translation" (hypervisor extension, "Guest Physical
# Address Translation"): the G-stage formats widen the root index by 2 bits -- a 16 KiB root
# table, 16 KiB aligned -- and the GPA bits above the format must be zero.
SV32X4: Final = _riscv("sv32x4", "privileged spec: Sv32x4", PTE32, (10, 12), "zero")
SV39X4: Final = _riscv("sv39x4", "privileged spec: Sv39x4", PTE, (9, 9, 11), "zero")
SV48X4: Final = _riscv("sv48x4", "privileged spec: Sv48x4", PTE, (9, 9, 9, 11), "zero")
SV57X4: Final = _riscv("sv57x4", "privileged spec: Sv57x4", PTE, (9, 9, 9, 9, 11), "zero")

#: First-stage formats by ``iosatp.MODE``, per ``DC.tc.SXL`` (riscv-iommu: "Encodings of
#: iosatp.MODE field").
FIRST_STAGE_FORMATS: Final[tuple[dict[int, PtFormat], dict[int, PtFormat]]] = (
    {8: SV39, 9: SV48, 10: SV57},
    {8: SV32},
)
#: G-stage formats by ``iohgatp.MODE``, per ``fctl.GXL`` (riscv-iommu: "Encodings of
#: iohgatp.MODE field").
G_STAGE_FORMATS: Final[tuple[dict[int, PtFormat], dict[int, PtFormat]]] = (
    {8: SV39X4, 9: SV48X4, 10: SV57X4},
    {8: SV32X4},
)
#: Every RISC-V format by name.
RISCV_FORMATS: Final[dict[str, PtFormat]] = {
    f.name: f for f in (SV32, SV39, SV48, SV57, SV32X4, SV39X4, SV48X4, SV57X4)
}
