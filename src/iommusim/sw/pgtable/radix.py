"""One radix page-table writer for every :class:`~iommusim.bits.pgformat.PtFormat` (after Linux
``io-pgtable``: ``io_pgtable_ops`` map/unmap/iova_to_phys, with the IOTLB maintenance it
needs reported through ``iommu_flush_ops``-style callbacks, :class:`FlushOps`).

The format says where the bits are; a :class:`LeafCodec` says which leaf bits a map ``prot``
gives and which ``prot`` a leaf grants (the architecture's permission policy). Every
operation is one recursive range walk, :meth:`RadixPageTable._slots`, over the entries that
cover a range at one level.

Rules the writer keeps (DESIGN rule 2: software touches hardware only through memory):

* A concurrent walker never sees a half-built table: a new table's whole subtree is written
  before the entry linking it is; a leaf in an existing table is one PTE store.
* A failed :meth:`~RadixPageTable.map`, :meth:`~RadixPageTable.unmap` or
  :meth:`~RadixPageTable.protect` changes nothing: the whole range is checked (and the table
  pages counted and allocated) before the first store.
* An emptied table is unlinked and put on the gather's freelist, never freed here: the IOMMU
  may cache or be walking it until the IOTLB invalidation completes (Linux
  ``iommu_iotlb_sync`` then ``iommu_put_pages_list``).
* Every linked table other than the root holds at least one valid entry.

Dirty tracking (after Linux ``iommu_dirty_ops`` over io-pgtable): with :attr:`track_dirty`
leaves are written clean -- the format's dirty bit cleared -- so hardware that updates it
marks the leaves a device writes; :meth:`~RadixPageTable.read_and_clear_dirty` reports and
cleans them, :meth:`~RadixPageTable.set_dirty` marks every writable leaf dirty again for
hardware that will no longer update the bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final, Protocol

from iommusim.bits.pgformat import PtFormat
from iommusim.errors import Exists, InvalidArgument, ModelError, OutOfMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.gather import IotlbGather

__all__ = ["FlushOps", "GatherFlush", "LeafCodec", "RadixPageTable"]

_TOP: Final = 1 << 64


class FlushOps(Protocol):
    """IOTLB maintenance a page-table change needs (Linux ``struct iommu_flush_ops``)."""

    def tlb_flush_all(self) -> None:
        """The whole address space's translations are gone (before the tables are freed)."""

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        """Tables covering ``[iova, iova + size)`` were unlinked: cached non-leaf entries
        (walk caches) for the range must go before the tables are reused."""

    def tlb_add_page(self, gather: IotlbGather, iova: int, granule: int) -> None:
        """One leaf of ``granule`` bytes at ``iova`` was cleared or changed: add it to the
        invalidation ``gather`` collects."""


class GatherFlush:
    """The default flush ops: record leaves in the gather and leave every invalidation to
    the caller's ``iotlb_sync`` -- which invalidates the whole address space when the
    gather's freelist holds unlinked tables (Linux RISC-V ``riscv_iommu_iotlb_sync``), so
    the walk and flush-all callbacks have nothing to add."""

    def tlb_flush_all(self) -> None:
        return

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        return

    def tlb_add_page(self, gather: IotlbGather, iova: int, granule: int) -> None:
        gather.add_page(iova, granule)


class LeafCodec(Protocol):
    """An architecture's leaf permission policy over a format's PTE bits."""

    @property
    def keep_mask(self) -> int:
        """Leaf bits :meth:`RadixPageTable.protect` keeps (the output address, A/D state and
        the bits software or hints own); the rest come from :meth:`leaf_bits`."""
        ...

    def leaf_bits(self, prot: int) -> int:
        """PTE bits other than the output address of a leaf mapped with ``prot`` (raises
        :class:`InvalidArgument` or :class:`NotSupported` for a prot it cannot map)."""
        ...

    def prot_of(self, pte: int) -> int:
        """The ``IOMMU_*`` prot a leaf PTE grants."""
        ...


def _swap(v: int, nbytes: int) -> int:
    return int.from_bytes(v.to_bytes(nbytes, "little"), "big")


class RadixPageTable:
    """An I/O page table of ``fmt`` in ``mem`` whose table pages come from ``pages``.

    ``codec`` encodes leaves; ``max_leaf_level`` is the highest level at which :meth:`map`
    places leaves (Linux ``pgsize_bitmap``); ``big_endian`` writes the table for a walker
    reading big-endian entries; ``flush`` receives the IOTLB maintenance callbacks
    (:class:`GatherFlush` when None). The root table is allocated here
    (:class:`OutOfMemory` if it cannot be) and released, with every other table page, by
    :meth:`destroy`.
    """

    __slots__ = (
        "_codec",
        "_counts",
        "_d",
        "_flush",
        "_imasks",
        "_leaf_ok",
        "_levels",
        "_lv",
        "_max_leaf",
        "_nent",
        "_oa_mask",
        "_oa_shift",
        "_perm",
        "_pte_bytes",
        "_rd",
        "_shifts",
        "_tmask",
        "_tv",
        "_v",
        "_wr",
        "mem",
        "pages",
        "pt",
        "root_pa",
        "table_order",
        "track_dirty",
    )

    def __init__(
        self,
        mem: PhysicalMemory,
        pages: PageAllocator,
        fmt: PtFormat,
        codec: LeafCodec,
        *,
        max_leaf_level: int,
        big_endian: bool = False,
        flush: FlushOps | None = None,
    ) -> None:
        self.pt = fmt
        self.mem = mem
        self.pages = pages
        self._codec = codec
        self._flush: FlushOps = flush if flush is not None else GatherFlush()
        self._levels = fmt.levels
        self._max_leaf = min(max_leaf_level, fmt.levels - 1)
        self._shifts = tuple(fmt.level_shift(i) for i in range(fmt.levels))
        self._imasks = tuple(fmt.index_mask(i) for i in range(fmt.levels))
        self._nent = tuple(m + 1 for m in self._imasks)
        self._pte_bytes = fmt.pte_bytes
        self._v = fmt.valid_mask
        self._tmask = fmt.table_mask
        #: ``pte & table_mask`` of a table pointer, per level (the leaf rule: the valid bit
        #: at every level; VMSAv8-64 0b11, DDI 0487 D8 "Translation table descriptor formats").
        self._tv = fmt.level_table_values
        #: May a leaf sit at each level (VMSAv8-64: blocks only where the granule allows,
        #: DDI 0487 D8 "Translation table descriptor formats"; the leaf rule: everywhere)?
        self._leaf_ok = tuple(lv >= 0 for lv in fmt.level_leaf_values)
        #: The type bits of a leaf at each level, ORed into the codec's bits (VMSAv8-64: a
        #: page descriptor 0b11 at level 3, a block 0b01 above; the leaf rule: V).
        self._lv = tuple(max(lv, 0) for lv in fmt.level_leaf_values)
        self._perm = fmt.table_mask & ~fmt.valid_mask
        self._oa_mask = fmt.oa_mask
        self._oa_shift = fmt.oa_shift
        self._d = fmt.dirty_mask
        #: Leaves are written clean (the format's dirty bit cleared from the codec's bits):
        #: the hardware sets it on the first write through the leaf (riscv-iommu: "IOMMU
        #: updating of PTE accessed (A) and dirty (D) updates"). Off: as the codec says.
        self.track_dirty = False
        self._rd: Callable[[int], int]
        self._wr: Callable[[int, int], None]
        n = fmt.pte_bytes
        rd = mem.read64 if n == 8 else mem.read32
        wr = mem.write64 if n == 8 else mem.write32
        if big_endian:
            self._rd = lambda pa: _swap(rd(pa), n)
            self._wr = lambda pa, v: wr(pa, _swap(v, n))
        else:
            self._rd = rd
            self._wr = wr
        #: log2 of a non-root table's size in 4 KiB pages: a table is one granule (VMSAv8-64
        #: 16KB and 64KB granules: order 2 and 4). Table pages on a gather's freelist are
        #: returned with ``pages.free_pages(pa, table_order)``.
        self.table_order = max(0, fmt.page_shift - 12)
        self.root_pa: int = pages.alloc_pages(self.root_order)  # -1 once destroyed
        # Valid entries per table page (software bookkeeping, like Linux's struct page
        # counters): a table whose count drops to 0 is unlinked by unmap.
        self._counts: dict[int, int] = {self.root_pa: 0}

    # ------------------------------------------------------------------ description
    @property
    def root_order(self) -> int:
        """log2 of the root table's size in 4 KiB pages (its alignment is its size; a root
        smaller than 4 KiB -- a VMSAv8-64 start table resolving few bits -- gets one page)."""
        return max(0, (self.pt.root_alignment >> 12).bit_length() - 1)

    @property
    def root_ppn(self) -> int:
        return self.root_pa >> self.pt.page_shift

    @property
    def va_bits(self) -> int:
        return self.pt.va_bits

    @property
    def pgsize_bitmap(self) -> int:
        """Supported leaf sizes as a bitmap of sizes (Linux ``pgsize_bitmap``)."""
        bm = 0
        for lvl in range(self._max_leaf + 1):
            bm |= 1 << self._shifts[lvl]
        return bm

    @property
    def pa_limit(self) -> int:
        """Exclusive top of the physical addresses a leaf can hold."""
        return 1 << self.pt.oa_bits

    @property
    def table_pages(self) -> list[int]:
        """PAs of the table pages in use (the root first, then by address)."""
        return [self.root_pa, *sorted(p for p in self._counts if p != self.root_pa)]

    def leaf_bits(self, prot: int) -> int:
        """PTE bits other than the output address of a leaf mapped with ``prot`` (clean
        under :attr:`track_dirty`)."""
        bits = self._codec.leaf_bits(prot)
        return bits & ~self._d if self.track_dirty else bits

    # ------------------------------------------------------------------ checks
    def _live(self) -> None:
        if self.root_pa < 0:
            raise ModelError("page table used after destroy()")

    def check_range(self, iova: int, size: int) -> None:
        """The range must be page aligned and inside the format's input address space:
        canonical (sign-extended from bit va_bits - 1) or below 2^va_bits, as the format
        says (privileged spec "Sv39": "bits 63-39 must all equal bit 38"; "Two-Stage Address
        Translation": GPA bits above 40 must be zero for Sv39x4)."""
        page = 1 << self.pt.page_shift
        if size <= 0 or size & (page - 1):
            raise InvalidArgument(f"size must be a positive multiple of 4 KiB, not {size:#x}")
        if iova < 0 or iova & (page - 1):
            raise InvalidArgument(f"iova must be 4 KiB aligned, not {iova:#x}")
        vb = self.pt.va_bits
        end = iova + size
        if self.pt.input == "zero":
            if end > 1 << vb:
                raise InvalidArgument(
                    f"GPA range {iova:#x}+{size:#x} must lie below 2^{vb} for {self.pt.name}"
                )
        else:
            half = 1 << (vb - 1)
            if not (end <= half or (iova >= _TOP - half and end <= _TOP)):
                raise InvalidArgument(
                    f"IOVA range {iova:#x}+{size:#x} must be canonical "
                    f"for {self.pt.name} (one {vb - 1}-bit half)"
                )

    def _check_no_split(self, iova: int, size: int) -> None:
        """A leaf only partly inside ``[iova, iova + size)`` must straddle one of its ends."""
        end = iova + size
        for probe in (iova, end - 1):
            found = self._find(probe)
            if found is not None:
                lsize = 1 << self._shifts[found[1]]
                base = probe & ~(lsize - 1)
                if base < iova or base + lsize > end:
                    raise InvalidArgument(
                        f"range {iova:#x}+{size:#x} would split the "
                        f"{lsize:#x}-byte leaf at {base:#x}"
                    )

    # ------------------------------------------------------------------ the range walk
    def _slots(
        self, tpa: int, level: int, start: int, end: int
    ) -> Iterator[tuple[int, int, int, int]]:
        """``(v, nxt, addr, entry)`` for each entry of the table at ``tpa`` (-1: a table
        still to be made, whose entries read as 0) covering ``[start, end)`` at ``level``:
        the entry maps ``[v, nxt)`` of the range and lives at ``addr``."""
        shift = self._shifts[level]
        imask = self._imasks[level]
        esz = self._pte_bytes
        rd = self._rd
        v = start
        while v < end:
            nxt = min(((v >> shift) + 1) << shift, end)
            addr = tpa + ((v >> shift) & imask) * esz
            yield v, nxt, addr, rd(addr) if tpa >= 0 else 0
            v = nxt

    def _child(self, entry: int) -> int:
        return (entry & self._oa_mask) >> self._oa_shift << self.pt.page_shift

    def _is_leaf(self, entry: int, level: int) -> bool:
        """A valid entry that is no table pointer at ``level`` (per-level: a VMSAv8-64 0b11
        is a table above level 3 and a page at level 3, DDI 0487 D8)."""
        return bool(entry & self._v) and entry & self._tmask != self._tv[level]

    # ------------------------------------------------------------------ map
    def map(self, iova: int, pa: int, size: int, prot: int) -> None:
        """Map ``[iova, iova + size)`` to ``[pa, pa + size)`` with the largest leaves that
        the alignment of ``iova`` and ``pa`` allows (up to ``max_leaf_level``).

        Errors, with nothing changed: misalignment or an address outside the format
        (:class:`InvalidArgument`), a page of the range already mapped (:class:`Exists`),
        a prot the codec cannot map (:class:`NotSupported`), no memory for table pages
        (:class:`OutOfMemory`).
        """
        self._live()
        bits = self.leaf_bits(prot)
        self.check_range(iova, size)
        if pa < 0 or pa & ((1 << self.pt.page_shift) - 1):
            raise InvalidArgument(f"pa must be 4 KiB aligned, not {pa:#x}")
        if pa + size > self.pa_limit:
            raise InvalidArgument(f"PA range {pa:#x}+{size:#x} must lie below 2^{self.pt.oa_bits}")
        top = self._levels - 1
        delta = pa - iova
        needed = self._plan(self.root_pa, top, iova, iova + size, delta)
        order = self.table_order
        if needed << order > self.pages.nr_free:
            raise OutOfMemory(
                f"mapping {iova:#x}+{size:#x} needs {needed} table pages, {self.pages.nr_free} free"
            )
        pool: list[int] = []
        try:
            for _ in range(needed):
                pool.append(self.pages.alloc_pages(order))
        except OutOfMemory:
            for p in pool:
                self.pages.free_pages(p, order)
            raise
        pool.reverse()  # pop() hands out the lowest address first
        self._map(self.root_pa, top, iova, iova + size, delta, bits, pool)
        if pool:
            for p in pool:
                self.pages.free_pages(p, order)
            raise ModelError("map planned more table pages than it used")

    def _leafable(self, level: int, v: int, nxt: int, delta: int) -> bool:
        """May ``[v, nxt)`` be one leaf at ``level``: allowed there, the whole entry's span,
        and both addresses aligned to it?"""
        esize = 1 << self._shifts[level]
        return (
            level <= self._max_leaf
            and self._leaf_ok[level]
            and nxt - v == esize
            and not (v | (v + delta)) & (esize - 1)
        )

    def _plan(self, tpa: int, level: int, start: int, end: int, delta: int) -> int:
        """Check ``[start, end)`` under the table at ``tpa`` (-1: a table still to be made)
        for existing mappings; return how many table pages the map needs."""
        esize = 1 << self._shifts[level]
        v_bit = self._v
        # Bounded work: once the count passes the free pages the map fails with ENOMEM
        # anyway, so a huge range stops here instead of being planned to the end.
        budget = self.pages.nr_free
        new = 0
        for v, nxt, _, entry in self._slots(tpa, level, start, end):
            if new > budget:
                break
            table = entry & self._tmask == self._tv[level]
            if self._leafable(level, v, nxt, delta) and not table:
                if entry & v_bit:
                    raise Exists(f"IOVA {v:#x}+{esize:#x} is already mapped")
            elif entry & v_bit:
                if not table:
                    raise Exists(f"IOVA {v:#x} is already mapped by a {esize:#x}-byte leaf")
                new += self._plan(self._child(entry), level - 1, v, nxt, delta)
            elif level > 1:
                new += 1 + self._plan(-1, level - 1, v, nxt, delta)
            else:
                new += 1  # a new level-0 table: every entry in it is a leaf
        return new

    def _map(
        self, tpa: int, level: int, start: int, end: int, delta: int, bits: int, pool: list[int]
    ) -> None:
        wr = self._wr
        counts = self._counts
        v_bit = self._v
        for v, nxt, addr, entry in self._slots(tpa, level, start, end):
            # A slot that still holds a (possibly empty) table is mapped through it with
            # smaller leaves: replacing the table by a leaf would need an invalidation first.
            if not entry & v_bit and self._leafable(level, v, nxt, delta):
                wr(addr, bits | self._lv[level] | self.pt.pte_oa(v + delta))
                counts[tpa] += 1
            elif entry & v_bit:
                self._map(self._child(entry), level - 1, v, nxt, delta, bits, pool)
            else:
                # Build the whole subtree in the unlinked page, then publish it with one
                # store: a walker sees either no table or a complete one.
                child = pool.pop()
                counts[child] = 0
                self._map(child, level - 1, v, nxt, delta, bits, pool)
                wr(addr, self._tv[level] | self.pt.pte_oa(child))
                counts[tpa] += 1

    # ------------------------------------------------------------------ unmap
    def unmap(self, iova: int, size: int, gather: IotlbGather) -> int:
        """Clear the leaves in ``[iova, iova + size)``; return the bytes they mapped (holes
        count 0). Cleared leaves go to ``gather`` (``tlb_add_page``); tables whose whole span
        the range covers are unlinked (``tlb_flush_walk``) and appended to
        ``gather.freelist`` for the caller to free after the IOTLB invalidation.

        A leaf only partly inside the range is not split: :class:`InvalidArgument`, nothing
        changed (as the Linux RISC-V driver refuses partial leaf unmaps).
        """
        self._live()
        self.check_range(iova, size)
        self._check_no_split(iova, size)
        return self._unmap(self.root_pa, self._levels - 1, iova, iova + size, gather)

    def _unmap(self, tpa: int, level: int, start: int, end: int, gather: IotlbGather) -> int:
        esize = 1 << self._shifts[level]
        wr = self._wr
        counts = self._counts
        flush = self._flush
        done = 0
        for v, nxt, addr, entry in self._slots(tpa, level, start, end):
            if not entry & self._v:
                continue
            if self._is_leaf(entry, level):
                wr(addr, 0)
                counts[tpa] -= 1
                flush.tlb_add_page(gather, v, esize)
                done += esize
                continue
            child = self._child(entry)
            done += self._unmap(child, level - 1, v, nxt, gather)
            if not counts[child] and nxt - v == esize:
                # A table is released only when the unmap covers its whole span (as Linux
                # io-pgtable and generic_pt do): a table merely emptied by smaller unmaps
                # stays linked for the next map, so ordinary unmaps need only a range
                # invalidation. Unlink only; the page is freed by the caller after the IOTLB
                # invalidation, since a walker may still hold it.
                wr(addr, 0)
                counts[tpa] -= 1
                del counts[child]
                gather.freelist.append(child)
                flush.tlb_flush_walk(v, esize, 1 << self._shifts[level - 1])
        return done

    # ------------------------------------------------------------------ protect
    def protect(self, iova: int, size: int, prot: int, gather: IotlbGather) -> int:
        """Rewrite the permissions of the leaves in ``[iova, iova + size)`` to ``prot``
        (Linux ``change_protection`` on a page table the IOMMU shares); return the bytes
        mapped by the leaves whose PTE changed. Holes are skipped.

        Each changed leaf is one PTE store of the new value, so a concurrent walker sees the
        old or the new permissions, never a mix. The codec's ``keep_mask`` bits are kept, the
        rest come from ``prot`` as for :meth:`map`. Changed leaves go to ``gather`` (no table
        is ever unlinked here); the caller must invalidate it when a permission was removed,
        while an added permission needs none.

        Errors, with nothing changed: misalignment or an address outside the format, or a
        leaf only partly inside the range (:class:`InvalidArgument`: a leaf is not split), a
        prot the codec cannot map (:class:`NotSupported`; unmap instead).
        """
        self._live()
        bits = self.leaf_bits(prot)
        self.check_range(iova, size)
        self._check_no_split(iova, size)
        return self._protect(self.root_pa, self._levels - 1, iova, iova + size, bits, gather)

    def _protect(
        self, tpa: int, level: int, start: int, end: int, bits: int, gather: IotlbGather
    ) -> int:
        esize = 1 << self._shifts[level]
        keep = self._codec.keep_mask
        done = 0
        for v, nxt, addr, entry in self._slots(tpa, level, start, end):
            if not entry & self._v:
                continue
            if self._is_leaf(entry, level):
                new = (entry & keep) | bits
                if new != entry:
                    self._wr(addr, new)
                    self._flush.tlb_add_page(gather, v, esize)
                    done += esize
            else:
                done += self._protect(self._child(entry), level - 1, v, nxt, bits, gather)
        return done

    # ------------------------------------------------------------------ planning
    def tables_needed(self, iova: int, size: int) -> int:
        """Table pages that mapping every unmapped page of ``[iova, iova + size)`` with
        level-0 leaves would allocate, given the tables present now.

        Lets a caller that maps many single pages (a demand-paging fault handler) check the
        allocator once and then map without a failure half-way. Pages already mapped, by
        any leaf size, need nothing. :class:`InvalidArgument` as for :meth:`map`.
        """
        self._live()
        self.check_range(iova, size)
        return self._tables_needed(self.root_pa, self._levels - 1, iova, iova + size)

    def _tables_needed(self, tpa: int, level: int, start: int, end: int) -> int:
        if level == 0:
            return 0
        # Bounded work, as in _plan.
        budget = self.pages.nr_free
        new = 0
        for v, nxt, _, entry in self._slots(tpa, level, start, end):
            if new > budget:
                break
            if not entry & self._v:
                new += 1 + self._tables_needed(-1, level - 1, v, nxt)
            elif not self._is_leaf(entry, level):
                new += self._tables_needed(self._child(entry), level - 1, v, nxt)
        return new

    # ------------------------------------------------------------------ lookup
    def _find(self, iova: int) -> tuple[int, int] | None:
        """``(leaf PTE, level)`` of the leaf mapping ``iova``, or None."""
        if not 0 <= iova < _TOP or not self.pt.input_ok(iova):
            return None
        level = self._levels - 1
        tpa = self.root_pa
        while True:
            entry = self._rd(
                tpa + ((iova >> self._shifts[level]) & self._imasks[level]) * self._pte_bytes
            )
            if not entry & self._v:
                return None
            if self._is_leaf(entry, level):
                return entry, level
            if level == 0:
                raise ModelError(f"non-leaf PTE at level 0 for {iova:#x}: {entry:#x}")
            level -= 1
            tpa = self._child(entry)

    def iova_to_phys(self, iova: int) -> int | None:
        """The PA ``iova`` translates to, or None when it is not mapped."""
        self._live()
        found = self._find(iova)
        if found is None:
            return None
        entry, level = found
        mask = (1 << self._shifts[level]) - 1
        return (self._child(entry) & ~mask) | (iova & mask)

    def lookup(self, iova: int) -> tuple[int, int, int, int] | None:
        """``(leaf iova, leaf pa, leaf size, prot)`` of the leaf mapping ``iova``, or None."""
        self._live()
        found = self._find(iova)
        if found is None:
            return None
        entry, level = found
        size = 1 << self._shifts[level]
        return (
            iova & ~(size - 1),
            self._child(entry) & ~(size - 1),
            size,
            self._codec.prot_of(entry),
        )

    def walk_leaves(self) -> Iterator[tuple[int, int, int, int]]:
        """Every leaf as ``(iova, pa, size, prot)`` in table order (for a sign-extended
        format the lower canonical half first, then the upper half)."""
        self._live()
        vb = self.pt.va_bits
        sign = 1 << (vb - 1) if self.pt.input == "sign" else 0
        ext = _TOP - (1 << vb)
        top = self._levels - 1
        span = 1 << (self._shifts[top] + self._imasks[top].bit_length())
        for iova, pte, level, _ in self._leaves(self.root_pa, top, 0, span):
            if iova & sign:
                iova |= ext
            size = 1 << self._shifts[level]
            yield iova, self._child(pte) & ~(size - 1), size, self._codec.prot_of(pte)

    def _leaves(
        self, tpa: int, level: int, start: int, end: int
    ) -> Iterator[tuple[int, int, int, int]]:
        """``(v, entry, level, addr)`` of every leaf covering part of ``[start, end)``: the
        leaf maps from ``v`` (its base, or ``start`` inside it) and lives at ``addr``."""
        for v, nxt, addr, entry in self._slots(tpa, level, start, end):
            if not entry & self._v:
                continue
            if self._is_leaf(entry, level):
                yield v, entry, level, addr
            elif level:
                yield from self._leaves(self._child(entry), level - 1, v, nxt)

    # ------------------------------------------------------------------ dirty tracking
    def read_and_clear_dirty(
        self,
        iova: int,
        size: int,
        no_clear: bool,
        record: Callable[[int, int], None],
        gather: IotlbGather,
    ) -> None:
        """``record(leaf_iova, leaf_size)`` for every leaf with the dirty bit set that covers
        part of ``[iova, iova + size)`` (the whole leaf, as Linux's dirty ops report it) and,
        unless ``no_clear``, clear its dirty bit and add it to ``gather``
        (``tlb_add_page``): a cached translation of the dirty leaf would let later writes
        through without setting the bit again, so the caller must invalidate what ``gather``
        holds (riscv-iommu: "Accessed (A)/Dirty (D) bit updates and page promotions"). Holes
        are skipped.

        Each clear is one PTE store of the entry read just before, with only the dirty bit
        changed. The hardware sets A/D bits concurrently, so a real driver clears with an
        atomic AND (or a compare-and-swap loop); the model's hardware runs only between
        software calls (the model is single-threaded), so the plain store loses no update.

        :class:`InvalidArgument` for a range :meth:`map` would refuse, nothing changed.
        """
        self._live()
        self.check_range(iova, size)
        d = self._d
        for v, entry, level, addr in self._leaves(
            self.root_pa, self._levels - 1, iova, iova + size
        ):
            if entry & d:
                lsize = 1 << self._shifts[level]
                base = v & ~(lsize - 1)
                record(base, lsize)
                if not no_clear:
                    self._wr(addr, entry & ~d)
                    self._flush.tlb_add_page(gather, base, lsize)

    def set_dirty(self, iova: int, size: int) -> int:
        """Set the dirty bit of every writable leaf in ``[iova, iova + size)`` that lacks it,
        so hardware that no longer updates the bit lets every permitted write through
        (riscv-iommu "Device-context fields": with ``SADE``/``GADE`` 0 the IOMMU faults "if
        the memory access is a store and the D bit is 0"); return the bytes of the leaves
        changed. Setting the bit needs no invalidation: a cached clean translation at worst
        makes the hardware set it again. :class:`InvalidArgument` for a range :meth:`map`
        would refuse, nothing changed."""
        self._live()
        self.check_range(iova, size)
        d, w = self._d, self.pt.write_mask
        done = 0
        for _, entry, level, addr in self._leaves(
            self.root_pa, self._levels - 1, iova, iova + size
        ):
            if entry & w and not entry & d:
                self._wr(addr, entry | d)
                done += 1 << self._shifts[level]
        return done

    # ------------------------------------------------------------------ teardown
    def destroy(self) -> None:
        """Free every table page, the root included (Linux ``free_io_pgtable_ops``, after
        ``tlb_flush_all``).

        Only once nothing points at the table any more; the object is unusable afterwards.
        """
        self._live()
        self._flush.tlb_flush_all()
        for tpa in self._counts:
            if tpa != self.root_pa:
                self.pages.free_pages(tpa, self.table_order)
        self.pages.free_pages(self.root_pa, self.root_order)
        self._counts = {}
        self.root_pa = -1

    def __repr__(self) -> str:
        name = type(self).__name__
        if self.root_pa < 0:
            return f"{name}({self.pt.name}, destroyed)"
        return f"{name}({self.pt.name}, root={self.root_pa:#x}, tables={len(self._counts)})"
