"""Page-table formats as descriptions (after Linux ``io-pgtable.h``: format is not algorithm).

A :class:`PtFormat` says everything a radix walker or writer needs to know about one paged
translation scheme -- levels, index widths (a wider root included), page size, the PTE
:class:`~iommusim.bits.fields.Layout` and which of its fields mean valid, read, write, execute,
user, accessed, dirty, global, the output address, the memory type and the naturally aligned
power-of-two (NAPOT) hint -- and derives from the layout the plain-int masks the hot paths use.
The machinery names no architecture: the RISC-V Sv* formats are instances in
:mod:`iommusim.bits.riscv.pgtable`, Arm VMSAv8-64 will be another.

Level numbering follows the walk from the leaf side: level 0 holds the smallest pages and the
root is level ``levels - 1`` (privileged spec "Virtual Address Translation Process": ``i =
LEVELS - 1`` down to 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from iommusim.bits.fields import Layout
from iommusim.errors import ModelError

__all__ = ["Perms", "PtFormat"]


class Perms(NamedTuple):
    """The permissions a leaf PTE grants, decoded (for dumps, explain and tests)."""

    read: bool
    write: bool
    execute: bool
    user: bool


@dataclass(frozen=True, slots=True)
class PtFormat:
    """One page-table format.

    ``index_bits[level]`` is the width of the table index at ``level`` (the root's may be
    wider, as in the RISC-V x4 G-stage formats). A PTE whose ``table_fields`` equal just the
    valid bit points to the next table; any other valid PTE is a leaf (the ``leaf rule``).
    ``input`` says how the address bits above ``va_bits`` must look: ``"sign"``-extended from
    bit ``va_bits - 1`` or ``"zero"``. ``misaligned_superpage_faults``: a leaf above level 0
    whose output address has bits set below its size is malformed (the superpage-alignment
    rule). ``nonleaf_reserved`` names fields reserved in a non-leaf PTE; ``optional`` maps an
    extension name to a field that is reserved unless the extension is implemented.
    ``write_only_reserved``: a leaf granting write without read is a reserved encoding.
    ``memtype_reserved`` lists memory-type values that make a leaf malformed. A NAPOT leaf
    (``napot`` set) is only defined at level 0, with the low ``napot_order`` bits of its page
    number equal to ``1 << (napot_order - 1)``. ``root_align`` is the root table's alignment
    in bytes (its size when 0).
    """

    name: str
    spec: str
    pte: Layout
    index_bits: tuple[int, ...]
    page_shift: int
    input: Literal["sign", "zero"]
    oa: str
    valid: str
    read: str
    write: str
    execute: str
    user: str
    accessed: str
    dirty: str
    global_: str
    table_fields: tuple[str, ...]
    nonleaf_reserved: tuple[str, ...]
    optional: tuple[tuple[str, str], ...] = ()
    memtype: str | None = None
    memtype_reserved: tuple[int, ...] = ()
    napot: str | None = None
    napot_order: int = 0
    misaligned_superpage_faults: bool = True
    write_only_reserved: bool = False
    root_align: int = 0
    # Derived masks (computed in __post_init__).
    valid_mask: int = field(init=False, repr=False, compare=False)
    read_mask: int = field(init=False, repr=False, compare=False)
    write_mask: int = field(init=False, repr=False, compare=False)
    exec_mask: int = field(init=False, repr=False, compare=False)
    perm_mask: int = field(init=False, repr=False, compare=False)
    user_mask: int = field(init=False, repr=False, compare=False)
    accessed_mask: int = field(init=False, repr=False, compare=False)
    dirty_mask: int = field(init=False, repr=False, compare=False)
    global_mask: int = field(init=False, repr=False, compare=False)
    table_mask: int = field(init=False, repr=False, compare=False)
    napot_mask: int = field(init=False, repr=False, compare=False)
    memtype_shift: int = field(init=False, repr=False, compare=False)
    memtype_mask: int = field(init=False, repr=False, compare=False)
    oa_shift: int = field(init=False, repr=False, compare=False)
    oa_mask: int = field(init=False, repr=False, compare=False)
    optional_mask: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.index_bits or self.page_shift <= 0:
            raise ModelError(f"{self.name}: needs at least one level and a page shift")
        if self.pte.width not in (32, 64):
            raise ModelError(f"{self.name}: PTEs must be 32 or 64 bits, not {self.pte.width}")
        lay = self.pte
        oa = lay[self.oa]
        derived = {
            "valid_mask": lay.mask(self.valid),
            "read_mask": lay.mask(self.read),
            "write_mask": lay.mask(self.write),
            "exec_mask": lay.mask(self.execute),
            "perm_mask": lay.mask(self.read, self.write, self.execute),
            "user_mask": lay.mask(self.user),
            "accessed_mask": lay.mask(self.accessed),
            "dirty_mask": lay.mask(self.dirty),
            "global_mask": lay.mask(self.global_),
            "table_mask": lay.mask(*self.table_fields),
            "napot_mask": lay.mask(self.napot) if self.napot else 0,
            "memtype_shift": lay[self.memtype].lsb if self.memtype else 0,
            "memtype_mask": lay[self.memtype].mask if self.memtype else 0,
            "oa_shift": oa.lsb,
            "oa_mask": oa.mask,
            "optional_mask": lay.mask(*(f for _, f in self.optional)),
        }
        for k, v in derived.items():
            object.__setattr__(self, k, v)

    # ------------------------------------------------------------------ geometry
    @property
    def levels(self) -> int:
        return len(self.index_bits)

    @property
    def pte_bytes(self) -> int:
        return self.pte.width // 8

    @property
    def va_bits(self) -> int:
        """Width of the input address (VA, or GPA for a second stage)."""
        return self.page_shift + sum(self.index_bits)

    @property
    def oa_bits(self) -> int:
        """Width of the output (physical) addresses a leaf can hold."""
        return self.page_shift + self.pte[self.oa].width

    @property
    def root_index_bits(self) -> int:
        return self.index_bits[-1]

    @property
    def root_bytes(self) -> int:
        """Size of the root table."""
        return (1 << self.root_index_bits) * self.pte_bytes

    @property
    def root_alignment(self) -> int:
        return self.root_align or self.root_bytes

    def level_shift(self, level: int) -> int:
        """log2 of the bytes one entry at ``level`` maps."""
        return self.page_shift + sum(self.index_bits[:level])

    def index_mask(self, level: int) -> int:
        return (1 << self.index_bits[level]) - 1

    # ------------------------------------------------------------------ PTE semantics
    @property
    def table_value(self) -> int:
        """``pte & table_mask`` of a pointer to the next table: only the valid bit."""
        return self.valid_mask

    def is_table(self, pte: int) -> bool:
        return pte & self.table_mask == self.valid_mask

    def is_leaf(self, pte: int) -> bool:
        return bool(pte & self.valid_mask) and not self.is_table(pte)

    def oa_of(self, pte: int) -> int:
        """The address in ``pte``'s output-address field (a table's or a page's base)."""
        return (pte & self.oa_mask) >> self.oa_shift << self.page_shift

    def pte_oa(self, pa: int) -> int:
        """``pa`` (page aligned) placed in the output-address field."""
        return (pa >> self.page_shift) << self.oa_shift

    def perms(self, pte: int) -> Perms:
        """Permission decode of a leaf PTE."""
        return Perms(
            bool(pte & self.read_mask),
            bool(pte & self.write_mask),
            bool(pte & self.exec_mask),
            bool(pte & self.user_mask),
        )

    def leaf_reserved_mask(self, extensions: Iterable[str] = ()) -> int:
        """Leaf bits reserved for future standard use: in no field of the layout, in a
        reserved field, or in the field of an optional extension not in ``extensions``."""
        m = self.pte.reserved_mask
        on = frozenset(extensions)
        for ext, f in self.optional:
            if ext in on:
                m &= ~self.pte.mask(f)
            else:
                m |= self.pte.mask(f)
        return m

    def nonleaf_reserved_mask(self, extensions: Iterable[str] = ()) -> int:
        """Non-leaf bits that must be zero: the leaf-reserved bits and ``nonleaf_reserved``."""
        return self.leaf_reserved_mask(extensions) | self.pte.mask(*self.nonleaf_reserved)

    def input_ok(self, va: int) -> bool:
        """Is ``va`` inside the input address space (canonical, or below ``2^va_bits``)?"""
        vb = self.va_bits
        if self.input == "zero":
            return 0 <= va < 1 << vb
        top = va >> (vb - 1)
        return top == 0 or top == (1 << (65 - vb)) - 1
