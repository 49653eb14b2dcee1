"""Page-table writer for the RISC-V formats the IOMMU walks (after Linux io-pgtable).

First stage: Sv39, Sv48, Sv57 (privileged spec "Sv39/Sv48/Sv57: Page-Based Virtual-Memory
Systems"), pointed to by ``iosatp`` (``DC.fsc`` or ``PC.fsc``). G-stage: Sv39x4, Sv48x4,
Sv57x4 (privileged spec "Two-Stage Address Translation": the root table has two more index
bits, is 16 KiB and 16 KiB aligned; riscv-iommu: "Device-context fields", ``iohgatp``).

The PTE layout comes from :data:`iommusim.bits.riscv.pgtable.PTE`, the table the hardware
walkers are cross-checked against. Hot paths work on plain ints with masks precomputed from it.

Rules the writer keeps (DESIGN rule 2: software touches hardware only through memory):

* A concurrent walker never sees a half-built table: a new table's whole subtree is written
  before the entry linking it is; a leaf in an existing table is one 64-bit store.
* A failed :meth:`RiscvPageTable.map`, :meth:`RiscvPageTable.unmap` or
  :meth:`RiscvPageTable.protect` changes nothing: the whole range is checked (and the table
  pages counted and allocated) before the first store.
* An emptied table is unlinked and put on the gather's freelist, never freed here: the IOMMU
  may cache or be walking it until the IOTLB invalidation completes (riscv-iommu: "Guidelines
  for invalidations"; Linux ``iommu_iotlb_sync`` then ``iommu_put_pages_list``).
* Every linked table other than the root holds at least one valid entry.

Leaf permissions from the map ``prot`` (Linux generic_pt ``riscvpt_iommu_set_prot``):
``IOMMU_READ`` -> R; ``IOMMU_WRITE`` -> W and R (W without R is reserved, privileged spec
"Table: Encoding of PTE R/W/X fields"); X unless ``IOMMU_NOEXEC``; a prot granting none of
R/W/X is :class:`NotSupported`. First-stage leaves get U = 1 unless ``IOMMU_PRIV`` (Linux
always sets U; ``IOMMU_PRIV`` is honoured here so supervisor-only DMA can be modelled);
G-stage leaves always get U = 1, as G-stage translation treats every access as a user access.
With ``set_ad`` A is preset, and D on writable leaves, so the IOMMU never has to update them
(riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates"). With ``svpbmt``,
``IOMMU_MMIO`` selects PBMT = IO (privileged spec "Svpbmt").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.structures import DC_FSC, DC_IOHGATP
from iommusim.errors import Exists, InvalidArgument, ModelError, NotSupported, OutOfMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.prot import (
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_PROT_MASK,
    IOMMU_READ,
    IOMMU_WRITE,
)

__all__ = [
    "FORMATS",
    "SV39",
    "SV39X4",
    "SV48",
    "SV48X4",
    "SV57",
    "SV57X4",
    "RiscvPageTable",
    "RiscvPtFormat",
]

# PTE bits, from the spec table (privileged spec "Sv39 page table entry").
_V: Final = PTE.mask("v")
_R: Final = PTE.mask("r")
_W: Final = PTE.mask("w")
_X: Final = PTE.mask("x")
_U: Final = PTE.mask("u")
_A: Final = PTE.mask("a")
_D: Final = PTE.mask("d")
_RWX: Final = _R | _W | _X
#: Leaf bits protect() keeps: the PPN, A/D state, G, N and the bits software owns.
_PROTECT_KEEP: Final = PTE.mask("ppn", "a", "d", "g", "rsw", "rsw60t59b", "n")
_PPN_SHIFT: Final = PTE["ppn"].lsb
_PPN_MASK: Final = PTE["ppn"].mask
_PBMT_SHIFT: Final = PTE["pbmt"].lsb
_PBMT_MASK: Final = PTE["pbmt"].mask
#: Svpbmt memory types.
_PBMT_IO: Final = 2 << _PBMT_SHIFT
#: Physical addresses a PTE can hold: PPN is 44 bits, so 56-bit PAs.
_PA_LIMIT: Final = 1 << (PTE["ppn"].width + 12)
_PAGE: Final = 4096
_PAGE_MASK: Final = _PAGE - 1
_VPN_BITS: Final = 9  # index bits per level of the 64-bit-PTE formats
_TOP: Final = 1 << 64
#: Largest leaf this writer builds: level 3 (512 GiB), as the Linux driver's pgsize_bitmap.
_MAX_LEAF_LEVEL: Final = 3


@dataclass(frozen=True, slots=True)
class RiscvPtFormat:
    """One paged virtual-memory scheme.

    ``mode`` is the ``iosatp.MODE`` (``DC.tc.SXL`` = 0) or ``iohgatp.MODE`` (``fctl.GXL`` = 0)
    encoding (riscv-iommu: "Encodings of iosatp.MODE field", "Encodings of iohgatp.MODE
    field").
    """

    name: str
    levels: int
    gstage: bool
    mode: int

    @property
    def va_bits(self) -> int:
        """Width of the input address: VA bits (first stage) or GPA bits (G-stage)."""
        return 12 + _VPN_BITS * self.levels + (2 if self.gstage else 0)

    @property
    def root_order(self) -> int:
        """log2 of the root table's size in pages: 16 KiB G-stage roots are order 2."""
        return 2 if self.gstage else 0

    @property
    def root_index_bits(self) -> int:
        return _VPN_BITS + (2 if self.gstage else 0)

    @property
    def leaf_levels(self) -> range:
        """Levels at which this writer places leaves (0 = 4 KiB, 1 = 2 MiB, ...)."""
        return range(min(self.levels, _MAX_LEAF_LEVEL + 1))

    @property
    def pgsize_bitmap(self) -> int:
        """Supported leaf sizes as a bitmap of sizes (Linux ``pgsize_bitmap``)."""
        bm = 0
        for lvl in self.leaf_levels:
            bm |= 1 << (12 + _VPN_BITS * lvl)
        return bm


SV39: Final = RiscvPtFormat("sv39", 3, False, 8)
SV48: Final = RiscvPtFormat("sv48", 4, False, 9)
SV57: Final = RiscvPtFormat("sv57", 5, False, 10)
SV39X4: Final = RiscvPtFormat("sv39x4", 3, True, 8)
SV48X4: Final = RiscvPtFormat("sv48x4", 4, True, 9)
SV57X4: Final = RiscvPtFormat("sv57x4", 5, True, 10)
#: Formats by name.
FORMATS: Final[dict[str, RiscvPtFormat]] = {
    f.name: f for f in (SV39, SV48, SV57, SV39X4, SV48X4, SV57X4)
}


def _swap64(v: int) -> int:
    return int.from_bytes(v.to_bytes(8, "little"), "big")


class RiscvPageTable:
    """An I/O page table in ``mem`` whose table pages come from ``pages``.

    ``fmt`` is a :class:`RiscvPtFormat` or its name (``"sv39"``, ``"sv48x4"``, ...).
    ``big_endian`` writes the table for a walker with ``DC.tc.SBE`` = 1 (or ``fctl.BE`` = 1
    for G-stage tables). The root table is allocated here (:class:`OutOfMemory` if it cannot
    be) and released, with every other table page, by :meth:`destroy`.
    """

    __slots__ = (
        "_counts",
        "_levels",
        "_rd",
        "_root_mask",
        "_set_ad",
        "_svpbmt",
        "_wr",
        "fmt",
        "mem",
        "pages",
        "root_pa",
    )

    def __init__(
        self,
        mem: PhysicalMemory,
        pages: PageAllocator,
        fmt: RiscvPtFormat | str,
        *,
        set_ad: bool = True,
        big_endian: bool = False,
        svpbmt: bool = False,
    ) -> None:
        if isinstance(fmt, str):
            try:
                fmt = FORMATS[fmt]
            except KeyError:
                raise InvalidArgument(
                    f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}"
                ) from None
        self.fmt = fmt
        self.mem = mem
        self.pages = pages
        self._set_ad = set_ad
        self._svpbmt = svpbmt
        self._levels = fmt.levels
        self._root_mask = (1 << fmt.root_index_bits) - 1
        self._rd: Callable[[int], int]
        self._wr: Callable[[int, int], None]
        if big_endian:
            rd64 = mem.read64
            wr64 = mem.write64
            self._rd = lambda pa: _swap64(rd64(pa))
            self._wr = lambda pa, v: wr64(pa, _swap64(v))
        else:
            self._rd = mem.read64
            self._wr = mem.write64
        self.root_pa = pages.alloc_pages(fmt.root_order)
        # Valid entries per table page (software bookkeeping, like Linux's struct page
        # counters): a table whose count drops to 0 is unlinked by unmap.
        self._counts: dict[int, int] = {self.root_pa: 0}

    # ------------------------------------------------------------------ description
    @property
    def root_ppn(self) -> int:
        return self.root_pa >> 12

    @property
    def mode(self) -> int:
        """``iosatp.MODE`` / ``iohgatp.MODE`` of the format."""
        return self.fmt.mode

    @property
    def gstage(self) -> bool:
        return self.fmt.gstage

    @property
    def va_bits(self) -> int:
        return self.fmt.va_bits

    @property
    def pgsize_bitmap(self) -> int:
        return self.fmt.pgsize_bitmap

    @property
    def pa_limit(self) -> int:
        """Exclusive top of the physical addresses a leaf can hold (the 44-bit PPN: 2^56)."""
        return _PA_LIMIT

    def atp(self, gscid: int = 0) -> int:
        """The ``iosatp`` (first stage) or ``iohgatp`` (G-stage, with ``gscid``) value that
        points the IOMMU at this table (riscv-iommu: "First-Stage context (fsc)", "IO
        hypervisor guest address translation and protection (iohgatp)")."""
        self._live()
        if self.fmt.gstage:
            return DC_IOHGATP.encode(mode=self.mode, gscid=gscid, ppn=self.root_ppn)
        if gscid:
            raise InvalidArgument(f"gscid must be 0 for a first-stage table, not {gscid}")
        return DC_FSC.encode(mode=self.mode, ppn=self.root_ppn)

    @property
    def table_pages(self) -> list[int]:
        """PAs of the table pages in use (the root first, then by address)."""
        return [self.root_pa, *sorted(p for p in self._counts if p != self.root_pa)]

    # ------------------------------------------------------------------ checks
    def _live(self) -> None:
        if self.root_pa < 0:
            raise ModelError("page table used after destroy()")

    def _check_range(self, iova: int, size: int) -> None:
        """The range must be 4 KiB aligned and inside the format's input address space:
        canonical (sign-extended from bit va_bits - 1) for a first stage, below 2^va_bits for
        a G-stage (privileged spec "Sv39": "bits 63-39 must all equal bit 38"; "Two-Stage
        Address Translation": GPA bits above 40 must be zero for Sv39x4)."""
        if size <= 0 or size & _PAGE_MASK:
            raise InvalidArgument(f"size must be a positive multiple of 4 KiB, not {size:#x}")
        if iova < 0 or iova & _PAGE_MASK:
            raise InvalidArgument(f"iova must be 4 KiB aligned, not {iova:#x}")
        vb = self.fmt.va_bits
        end = iova + size
        if self.fmt.gstage:
            if end > 1 << vb:
                raise InvalidArgument(
                    f"GPA range {iova:#x}+{size:#x} must lie below 2^{vb} for {self.fmt.name}"
                )
        else:
            half = 1 << (vb - 1)
            if not (end <= half or (iova >= _TOP - half and end <= _TOP)):
                raise InvalidArgument(
                    f"IOVA range {iova:#x}+{size:#x} must be canonical "
                    f"for {self.fmt.name} (one {vb - 1}-bit half)"
                )

    def leaf_bits(self, prot: int) -> int:
        """PTE bits other than the PPN of a leaf mapped with ``prot`` (see module docs)."""
        if prot < 0 or prot & ~IOMMU_PROT_MASK:
            raise InvalidArgument(f"prot must be a combination of IOMMU_* bits, not {prot:#x}")
        bits = _V
        if prot & IOMMU_WRITE:
            bits |= _R | _W | (_D if self._set_ad else 0)
        if prot & IOMMU_READ:
            bits |= _R
        if not prot & IOMMU_NOEXEC:
            bits |= _X
        if not bits & _RWX:
            raise NotSupported(f"prot {prot:#x} grants no access (no READ, WRITE or exec)")
        if self._set_ad:
            bits |= _A
        if self.fmt.gstage or not prot & IOMMU_PRIV:
            bits |= _U
        if self._svpbmt and prot & IOMMU_MMIO:
            bits |= _PBMT_IO
        return bits

    def _prot_of(self, pte: int) -> int:
        prot = 0
        if pte & _R:
            prot |= IOMMU_READ
        if pte & _W:
            prot |= IOMMU_WRITE
        if not pte & _X:
            prot |= IOMMU_NOEXEC
        if not self.fmt.gstage and not pte & _U:
            prot |= IOMMU_PRIV
        if pte & _PBMT_MASK == _PBMT_IO:
            prot |= IOMMU_MMIO
        return prot

    # ------------------------------------------------------------------ map
    def map(self, iova: int, pa: int, size: int, prot: int) -> None:
        """Map ``[iova, iova + size)`` to ``[pa, pa + size)`` with the largest leaves that
        the alignment of ``iova`` and ``pa`` allows (4 KiB, 2 MiB, 1 GiB, 512 GiB).

        Errors, with nothing changed: misalignment or an address outside the format
        (:class:`InvalidArgument`), a page of the range already mapped (:class:`Exists`),
        a prot granting nothing (:class:`NotSupported`), no memory for table pages
        (:class:`OutOfMemory`).
        """
        self._live()
        bits = self.leaf_bits(prot)
        self._check_range(iova, size)
        if pa < 0 or pa & _PAGE_MASK:
            raise InvalidArgument(f"pa must be 4 KiB aligned, not {pa:#x}")
        if pa + size > _PA_LIMIT:
            raise InvalidArgument(f"PA range {pa:#x}+{size:#x} must lie below 2^56")
        top = self._levels - 1
        delta = pa - iova
        needed = self._plan(self.root_pa, top, iova, iova + size, delta)
        if needed > self.pages.nr_free:
            raise OutOfMemory(
                f"mapping {iova:#x}+{size:#x} needs {needed} table pages, {self.pages.nr_free} free"
            )
        pool: list[int] = []
        try:
            for _ in range(needed):
                pool.append(self.pages.alloc_page())
        except OutOfMemory:
            for p in pool:
                self.pages.free_page(p)
            raise
        pool.reverse()  # pop() hands out the lowest address first
        self._map(self.root_pa, top, iova, iova + size, delta, bits, pool)
        if pool:
            for p in pool:
                self.pages.free_page(p)
            raise ModelError("map planned more table pages than it used")

    def _plan(self, tpa: int, level: int, start: int, end: int, delta: int) -> int:
        """Check ``[start, end)`` under the table at ``tpa`` (-1: a table still to be made)
        for existing mappings; return how many table pages the map needs."""
        shift = 12 + _VPN_BITS * level
        esize = 1 << shift
        emask = esize - 1
        imask = self._root_mask if level == self._levels - 1 else 511
        leafable = level <= _MAX_LEAF_LEVEL
        rd = self._rd
        # Bounded work: once the count passes the free pages the map fails with ENOMEM
        # anyway, so a huge range stops here instead of being planned to the end.
        budget = self.pages.nr_free
        new = 0
        v = start
        while v < end and new <= budget:
            nxt = ((v >> shift) + 1) << shift
            nxt = min(nxt, end)
            entry = rd(tpa + ((v >> shift) & imask) * 8) if tpa >= 0 else 0
            if (
                leafable
                and not (v | (v + delta)) & emask
                and nxt - v == esize
                and not (entry & _V and not entry & _RWX)
            ):
                if entry & _V:
                    raise Exists(f"IOVA {v:#x}+{esize:#x} is already mapped")
            elif entry & _V:
                if entry & _RWX:
                    raise Exists(f"IOVA {v:#x} is already mapped by a {esize:#x}-byte leaf")
                new += self._plan((entry & _PPN_MASK) >> _PPN_SHIFT << 12, level - 1, v, nxt, delta)
            elif level > 1:
                new += 1 + self._plan(-1, level - 1, v, nxt, delta)
            else:
                new += 1  # a new level-0 table: every entry in it is a 4 KiB leaf
            v = nxt
        return new

    def _map(
        self, tpa: int, level: int, start: int, end: int, delta: int, bits: int, pool: list[int]
    ) -> None:
        shift = 12 + _VPN_BITS * level
        esize = 1 << shift
        emask = esize - 1
        imask = self._root_mask if level == self._levels - 1 else 511
        leafable = level <= _MAX_LEAF_LEVEL
        rd = self._rd
        wr = self._wr
        counts = self._counts
        v = start
        while v < end:
            nxt = ((v >> shift) + 1) << shift
            nxt = min(nxt, end)
            addr = tpa + ((v >> shift) & imask) * 8
            out = v + delta
            entry = rd(addr)
            # A slot that still holds a (possibly empty) table is mapped through it with
            # smaller leaves: replacing the table by a leaf would need an invalidation first.
            if leafable and not (v | out) & emask and nxt - v == esize and not entry & _V:
                wr(addr, bits | (out >> 12) << _PPN_SHIFT)
                counts[tpa] += 1
            elif entry & _V:
                self._map(
                    (entry & _PPN_MASK) >> _PPN_SHIFT << 12, level - 1, v, nxt, delta, bits, pool
                )
            else:
                # Build the whole subtree in the unlinked page, then publish it with one
                # store: a walker sees either no table or a complete one.
                child = pool.pop()
                counts[child] = 0
                self._map(child, level - 1, v, nxt, delta, bits, pool)
                wr(addr, _V | (child >> 12) << _PPN_SHIFT)
                counts[tpa] += 1
            v = nxt

    # ------------------------------------------------------------------ unmap
    def unmap(self, iova: int, size: int, gather: IotlbGather) -> int:
        """Clear the leaves in ``[iova, iova + size)``; return the bytes they mapped (holes
        count 0). Cleared leaves extend ``gather``'s range; tables whose whole span the range
        covers are unlinked and appended to ``gather.freelist`` for the caller to free after
        the IOTLB invalidation.

        A leaf only partly inside the range is not split: :class:`InvalidArgument`, nothing
        changed (as the Linux RISC-V driver refuses partial leaf unmaps).
        """
        self._live()
        self._check_range(iova, size)
        self._check_no_split(iova, size)
        return self._unmap(self.root_pa, self._levels - 1, iova, iova + size, gather)

    def _check_no_split(self, iova: int, size: int) -> None:
        """A leaf only partly inside ``[iova, iova + size)`` must straddle one of its ends."""
        end = iova + size
        for probe in (iova, end - 1):
            found = self._find(probe)
            if found is not None:
                base = probe & ~((1 << (12 + _VPN_BITS * found[1])) - 1)
                if base < iova or base + (1 << (12 + _VPN_BITS * found[1])) > end:
                    raise InvalidArgument(
                        f"range {iova:#x}+{size:#x} would split the "
                        f"{1 << (12 + _VPN_BITS * found[1]):#x}-byte leaf at {base:#x}"
                    )

    def _unmap(self, tpa: int, level: int, start: int, end: int, gather: IotlbGather) -> int:
        shift = 12 + _VPN_BITS * level
        esize = 1 << shift
        imask = self._root_mask if level == self._levels - 1 else 511
        rd = self._rd
        wr = self._wr
        counts = self._counts
        done = 0
        v = start
        while v < end:
            nxt = ((v >> shift) + 1) << shift
            nxt = min(nxt, end)
            addr = tpa + ((v >> shift) & imask) * 8
            entry = rd(addr)
            if entry & _V:
                if entry & _RWX:
                    wr(addr, 0)
                    counts[tpa] -= 1
                    gather.add_page(v, esize)
                    done += esize
                else:
                    child = (entry & _PPN_MASK) >> _PPN_SHIFT << 12
                    done += self._unmap(child, level - 1, v, nxt, gather)
                    if not counts[child] and nxt - v == esize:
                        # A table is released only when the unmap covers its whole span
                        # (as Linux io-pgtable and generic_pt do): a table merely emptied
                        # by smaller unmaps stays linked for the next map, so ordinary
                        # unmaps need only a range invalidation. Unlink only; the page is
                        # freed by the caller after the IOTLB invalidation, since a walker
                        # may still hold it.
                        wr(addr, 0)
                        counts[tpa] -= 1
                        del counts[child]
                        gather.freelist.append(child)
            v = nxt
        return done

    # ------------------------------------------------------------------ protect
    def protect(self, iova: int, size: int, prot: int, gather: IotlbGather) -> int:
        """Rewrite the permissions of the leaves in ``[iova, iova + size)`` to ``prot``
        (Linux ``change_protection`` on a page table the IOMMU shares); return the bytes
        mapped by the leaves whose PTE changed. Holes are skipped.

        Each changed leaf is one 64-bit store of the new PTE, so a concurrent walker sees the
        old or the new permissions, never a mix. The PPN, A, D, G, N and the software bits
        are kept: D stays set when W is removed (a clean D is not needed for correctness, and
        the page may already be dirty); with ``set_ad`` A, and D on a writable leaf, are set
        as :meth:`map` does. V, R, W, X, U and PBMT come from ``prot`` as for :meth:`map`.
        Changed leaves extend ``gather``'s range (no table is ever unlinked here); the caller
        must invalidate it when a permission was removed (riscv-iommu: "Guidelines for
        invalidations"), while an added permission needs none.

        Errors, with nothing changed: misalignment or an address outside the format, or a
        leaf only partly inside the range (:class:`InvalidArgument`: a leaf is not split), a
        prot granting nothing (:class:`NotSupported`; unmap instead).
        """
        self._live()
        bits = self.leaf_bits(prot)
        self._check_range(iova, size)
        self._check_no_split(iova, size)
        return self._protect(self.root_pa, self._levels - 1, iova, iova + size, bits, gather)

    def _protect(
        self, tpa: int, level: int, start: int, end: int, bits: int, gather: IotlbGather
    ) -> int:
        shift = 12 + _VPN_BITS * level
        esize = 1 << shift
        imask = self._root_mask if level == self._levels - 1 else 511
        rd = self._rd
        wr = self._wr
        done = 0
        v = start
        while v < end:
            nxt = ((v >> shift) + 1) << shift
            nxt = min(nxt, end)
            addr = tpa + ((v >> shift) & imask) * 8
            entry = rd(addr)
            if entry & _V:
                if entry & _RWX:
                    new = (entry & _PROTECT_KEEP) | bits
                    if new != entry:
                        wr(addr, new)
                        gather.add_page(v, esize)
                        done += esize
                else:
                    done += self._protect(
                        (entry & _PPN_MASK) >> _PPN_SHIFT << 12, level - 1, v, nxt, bits, gather
                    )
            v = nxt
        return done

    # ------------------------------------------------------------------ planning
    def tables_needed(self, iova: int, size: int) -> int:
        """Table pages that mapping every unmapped 4 KiB page of ``[iova, iova + size)``
        with 4 KiB leaves would allocate, given the tables present now.

        Lets a caller that maps many single pages (a demand-paging fault handler) check the
        allocator once and then map without a failure half-way. Pages already mapped, by
        any leaf size, need nothing. :class:`InvalidArgument` as for :meth:`map`.
        """
        self._live()
        self._check_range(iova, size)
        return self._tables_needed(self.root_pa, self._levels - 1, iova, iova + size)

    def _tables_needed(self, tpa: int, level: int, start: int, end: int) -> int:
        if level == 0:
            return 0
        shift = 12 + _VPN_BITS * level
        imask = self._root_mask if level == self._levels - 1 else 511
        rd = self._rd
        # Bounded work: once the count passes the free pages the map fails with ENOMEM
        # anyway, so a huge range stops here instead of being planned to the end.
        budget = self.pages.nr_free
        new = 0
        v = start
        while v < end and new <= budget:
            nxt = ((v >> shift) + 1) << shift
            nxt = min(nxt, end)
            entry = rd(tpa + ((v >> shift) & imask) * 8) if tpa >= 0 else 0
            if not entry & _V:
                new += 1 + self._tables_needed(-1, level - 1, v, nxt)
            elif not entry & _RWX:
                new += self._tables_needed(
                    (entry & _PPN_MASK) >> _PPN_SHIFT << 12, level - 1, v, nxt
                )
            v = nxt
        return new

    # ------------------------------------------------------------------ lookup
    def _in_range(self, iova: int) -> bool:
        vb = self.fmt.va_bits
        if iova < 0 or iova >= _TOP:
            return False
        if self.fmt.gstage:
            return iova >> vb == 0
        top = iova >> (vb - 1)
        return top in (0, (1 << (65 - vb)) - 1)

    def _find(self, iova: int) -> tuple[int, int] | None:
        """``(leaf PTE, level)`` of the leaf mapping ``iova``, or None."""
        if not self._in_range(iova):
            return None
        rd = self._rd
        level = self._levels - 1
        tpa = self.root_pa
        imask = self._root_mask
        while True:
            shift = 12 + _VPN_BITS * level
            entry = rd(tpa + ((iova >> shift) & imask) * 8)
            if not entry & _V:
                return None
            if entry & _RWX:
                return entry, level
            if level == 0:
                raise ModelError(f"non-leaf PTE at level 0 for {iova:#x}: {entry:#x}")
            level -= 1
            tpa = (entry & _PPN_MASK) >> _PPN_SHIFT << 12
            imask = 511

    def iova_to_phys(self, iova: int) -> int | None:
        """The PA ``iova`` translates to, or None when it is not mapped."""
        self._live()
        found = self._find(iova)
        if found is None:
            return None
        entry, level = found
        mask = (1 << (12 + _VPN_BITS * level)) - 1
        return (((entry & _PPN_MASK) >> _PPN_SHIFT << 12) & ~mask) | (iova & mask)

    def lookup(self, iova: int) -> tuple[int, int, int, int] | None:
        """``(leaf iova, leaf pa, leaf size, prot)`` of the leaf mapping ``iova``, or None.

        ``prot`` is what the PTE grants (``IOMMU_WRITE`` comes with ``IOMMU_READ``;
        ``IOMMU_NOEXEC`` when X is clear; ``IOMMU_PRIV`` when U is clear in a first stage).
        """
        self._live()
        found = self._find(iova)
        if found is None:
            return None
        entry, level = found
        size = 1 << (12 + _VPN_BITS * level)
        return (
            iova & ~(size - 1),
            ((entry & _PPN_MASK) >> _PPN_SHIFT << 12) & ~(size - 1),
            size,
            self._prot_of(entry),
        )

    def walk_leaves(self) -> Iterator[tuple[int, int, int, int]]:
        """Every leaf as ``(iova, pa, size, prot)`` in table order (the lower canonical half
        first, then the upper half)."""
        self._live()
        vb = self.fmt.va_bits
        sign = 0 if self.fmt.gstage else 1 << (vb - 1)
        ext = _TOP - (1 << vb)
        for iova, pte, level in self._walk(self.root_pa, self._levels - 1, 0):
            if iova & sign:
                iova |= ext
            size = 1 << (12 + _VPN_BITS * level)
            yield (
                iova,
                ((pte & _PPN_MASK) >> _PPN_SHIFT << 12) & ~(size - 1),
                size,
                self._prot_of(pte),
            )

    def _walk(self, tpa: int, level: int, base: int) -> Iterator[tuple[int, int, int]]:
        shift = 12 + _VPN_BITS * level
        n = self._root_mask + 1 if level == self._levels - 1 else 512
        rd = self._rd
        for i in range(n):
            entry = rd(tpa + i * 8)
            if not entry & _V:
                continue
            iova = base | i << shift
            if entry & _RWX:
                yield iova, entry, level
            elif level:
                yield from self._walk((entry & _PPN_MASK) >> _PPN_SHIFT << 12, level - 1, iova)

    # ------------------------------------------------------------------ teardown
    def destroy(self) -> None:
        """Free every table page, the root included (Linux ``free_io_pgtable_ops``).

        Only once no device context or process context points at the table any more and the
        IOMMU's caches have been invalidated; the object is unusable afterwards.
        """
        self._live()
        for tpa in self._counts:
            if tpa != self.root_pa:
                self.pages.free_page(tpa)
        self.pages.free_pages(self.root_pa, self.fmt.root_order)
        self._counts = {}
        self.root_pa = -1

    def __repr__(self) -> str:
        if self.root_pa < 0:
            return f"RiscvPageTable({self.fmt.name}, destroyed)"
        return (
            f"RiscvPageTable({self.fmt.name}, root={self.root_pa:#x}, tables={len(self._counts)})"
        )
