"""Page-table formats as descriptions (after Linux ``io-pgtable.h``: format is not algorithm).

A :class:`PtFormat` says everything a radix walker or writer needs to know about one paged
translation scheme -- levels, index widths (a wider root included), page size, the PTE
:class:`~iommusim.bits.fields.Layout` and which of its fields mean valid, read, write, execute,
user, accessed, dirty, global, the output address, the memory type and the naturally aligned
power-of-two (NAPOT) hint -- and derives from the layout the plain-int masks the hot paths use.
The machinery names no architecture: the RISC-V Sv* formats are instances in
:mod:`iommusim.bits.riscv.pgtable`, the Arm VMSAv8-64 ones in :mod:`iommusim.bits.arm.vmsa`.

Two shapes of descriptor are described by the same fields:

* positive permission bits deciding table versus leaf (RISC-V: a valid entry with R = W = X = 0
  points to the next table, at any level; ``table_fields`` and the valid bit say so);
* a per-level descriptor type (VMSAv8-64, DDI 0487 D8 "Translation table descriptor
  formats": bits[1:0] = 0b11 is a table above the last level and a page at the last level,
  0b01 a block where the level allows blocks, anything else invalid): ``table_values`` and
  ``leaf_values`` give, per level, the value of ``pte & table_mask`` meaning table and the
  value of ``pte & leaf_mask`` meaning leaf, with -1 for "never at this level". Negative
  permissions (AP[2:1], UXN, PXN, S2AP, XN) are decoded by ``perm_table``, indexed by the
  ``perm_fields`` values and the privilege of the access (:meth:`PtFormat.grants`); a dirty
  state kept in a write-permission bit (DBM) is ``dirty`` with ``dirty_when_clear``.

Level numbering follows the walk from the leaf side: level 0 holds the smallest pages and the
root is level ``levels - 1`` (privileged spec "Virtual Address Translation Process": ``i =
LEVELS - 1`` down to 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

from iommusim.bits.fields import Layout
from iommusim.errors import ModelError

__all__ = ["PERM_R", "PERM_W", "PERM_X", "Perms", "PtFormat"]

#: The walker's generic permissions, as bits of the int :meth:`PtFormat.grants` returns.
PERM_R: Final = 1
PERM_W: Final = 2
PERM_X: Final = 4


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

    Per-level descriptor types (``table_values``, ``leaf_values``, ``leaf_fields``; empty for
    the leaf rule), negative permissions (``perm_fields``, ``perm_table``) and dirty state
    in a write-permission bit (``dirty_when_clear``, ``dbm``) are described in the module
    docstring. A field named ``None`` (``read`` ... ``global_``) does not exist in the format:
    its mask is 0. ``hints`` names fields that are caching hints only (the VMSAv8-64
    Contiguous bit, D8 "The Contiguous bit"): they never change a walk's result.
    """

    name: str
    spec: str
    pte: Layout
    index_bits: tuple[int, ...]
    page_shift: int
    input: Literal["sign", "zero"]
    oa: str
    valid: str
    read: str | None
    write: str | None
    execute: str | None
    user: str | None
    accessed: str
    dirty: str
    global_: str | None
    table_fields: tuple[str, ...]
    nonleaf_reserved: tuple[str, ...]
    table_values: tuple[int, ...] = ()
    leaf_fields: tuple[str, ...] = ()
    leaf_values: tuple[int, ...] = ()
    perm_fields: tuple[str, ...] = ()
    perm_table: tuple[int, ...] = ()
    dirty_when_clear: bool = False
    dbm: str | None = None
    hints: tuple[str, ...] = ()
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
    leaf_mask: int = field(init=False, repr=False, compare=False)
    dbm_mask: int = field(init=False, repr=False, compare=False)
    level_table_values: tuple[int, ...] = field(init=False, repr=False, compare=False)
    level_leaf_values: tuple[int, ...] = field(init=False, repr=False, compare=False)
    perm_shifts: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.index_bits or self.page_shift <= 0:
            raise ModelError(f"{self.name}: needs at least one level and a page shift")
        if self.pte.width not in (32, 64):
            raise ModelError(f"{self.name}: PTEs must be 32 or 64 bits, not {self.pte.width}")
        n = len(self.index_bits)
        for what, vals in (("table_values", self.table_values), ("leaf_values", self.leaf_values)):
            if vals and len(vals) != n:
                raise ModelError(f"{self.name}: {what} must have {n} entries, not {len(vals)}")
        lay = self.pte
        perm_bits = sum(lay[f].width for f in self.perm_fields)
        if self.perm_fields and len(self.perm_table) != 2 << perm_bits:
            raise ModelError(
                f"{self.name}: perm_table must have {2 << perm_bits} entries, "
                f"not {len(self.perm_table)}"
            )
        oa = lay[self.oa]

        def m(*names: str | None) -> int:
            return lay.mask(*(x for x in names if x is not None))

        shifts = []
        at = 0
        for f in self.perm_fields:
            shifts.append((lay[f].lsb - at, lay[f].mask))
            at += lay[f].width
        derived = {
            "valid_mask": lay.mask(self.valid),
            "read_mask": m(self.read),
            "write_mask": m(self.write),
            "exec_mask": m(self.execute),
            "perm_mask": m(self.read, self.write, self.execute),
            "user_mask": m(self.user),
            "accessed_mask": lay.mask(self.accessed),
            "dirty_mask": lay.mask(self.dirty),
            "global_mask": m(self.global_),
            "leaf_mask": lay.mask(*self.leaf_fields) if self.leaf_fields else lay.mask(self.valid),
            "dbm_mask": m(self.dbm),
            "perm_shifts": tuple(shifts),
            "table_mask": lay.mask(*self.table_fields),
            "napot_mask": lay.mask(self.napot) if self.napot else 0,
            "memtype_shift": lay[self.memtype].lsb if self.memtype else 0,
            "memtype_mask": lay[self.memtype].mask if self.memtype else 0,
            "oa_shift": oa.lsb,
            "oa_mask": oa.mask,
            "optional_mask": lay.mask(*(f for _, f in self.optional)),
        }
        # The leaf rule as per-level values: a table is ``pte & table_mask == valid`` at
        # every level, a leaf any entry with the valid bit set.
        v = derived["valid_mask"]
        derived["level_table_values"] = self.table_values or (v,) * n
        derived["level_leaf_values"] = self.leaf_values or (v,) * n
        for k, val in derived.items():
            object.__setattr__(self, k, val)

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
        """``pte & table_mask`` of a pointer from the root to the next table (the leaf rule:
        only the valid bit; VMSAv8-64: 0b11)."""
        return self.level_table_values[-1]

    def is_table(self, pte: int, level: int | None = None) -> bool:
        """Does ``pte`` point to a next-level table (at ``level``; at the root if None)?"""
        lvl = self.levels - 1 if level is None else level
        return pte & self.table_mask == self.level_table_values[lvl]

    def is_leaf(self, pte: int, level: int | None = None) -> bool:
        """Is ``pte`` a valid leaf (a page, superpage or block) at ``level`` (root if None)?"""
        lvl = self.levels - 1 if level is None else level
        return pte & self.leaf_mask == self.level_leaf_values[lvl] and not self.is_table(pte, lvl)

    def block_levels(self) -> tuple[int, ...]:
        """The levels at which a leaf may appear (every level for the leaf rule)."""
        return tuple(i for i, lv in enumerate(self.level_leaf_values) if lv >= 0)

    def oa_of(self, pte: int) -> int:
        """The address in ``pte``'s output-address field (a table's or a page's base)."""
        return (pte & self.oa_mask) >> self.oa_shift << self.page_shift

    def pte_oa(self, pa: int) -> int:
        """``pa`` (page aligned) placed in the output-address field."""
        return (pa >> self.page_shift) << self.oa_shift

    def perms(self, pte: int) -> Perms:
        """Permission decode of a leaf PTE (with ``perm_table``: privileged read, write and
        execute, and ``user`` when an unprivileged access is granted anything)."""
        if self.perm_fields:
            p = self.grants(pte, True)
            return Perms(
                bool(p & PERM_R), bool(p & PERM_W), bool(p & PERM_X), bool(self.grants(pte, False))
            )
        return Perms(
            bool(pte & self.read_mask),
            bool(pte & self.write_mask),
            bool(pte & self.exec_mask),
            bool(pte & self.user_mask),
        )

    def perm_index(self, pte: int, privileged: bool) -> int:
        """The ``perm_table`` index of ``pte``: its ``perm_fields`` values concatenated (the
        first field lowest), the privilege above them."""
        i = 0
        for sh, mask in self.perm_shifts:
            i |= (pte & mask) >> sh
        return i | (len(self.perm_table) >> 1 if privileged else 0)

    def grants(self, pte: int, privileged: bool) -> int:
        """The ``PERM_R | PERM_W | PERM_X`` bits a leaf grants to an access of that privilege
        (formats with ``perm_table``)."""
        return self.perm_table[self.perm_index(pte, privileged)]

    def is_dirty(self, pte: int) -> bool:
        """Is the leaf's dirty state set (D = 1; or, ``dirty_when_clear``, the field 0)?"""
        return bool(pte & self.dirty_mask) != self.dirty_when_clear

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
