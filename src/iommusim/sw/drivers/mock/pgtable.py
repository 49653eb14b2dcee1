"""The mock IOMMU's page table: naturally aligned leaves, each with its size and a dirty bit.

Linux 7.3's selftest backs its paging domains with the generic page table library in an
AMDv1 variant with a 2 KiB granule (``drivers/iommu/generic_pt/fmt/amdv1.h`` under
``AMDV1_IOMMUFD_SELFTEST``, instantiated by ``fmt/iommu_mock.c``; ``selftest.c``
``mock_domain_alloc_pgtable`` starts it at level 2 without a dynamic top). What the selftest
observes of it is modelled here: every leaf is a power-of-two size of the domain's
``pgsize_bitmap``, naturally aligned in IOVA and PA; a leaf has one dirty bit, set for any
byte of it (``amdv1pt_entry_is_write_dirty`` checks the whole contiguous run), so a dirty
leaf of size S is reported as S bytes. Nothing lives in simulated memory: the mock IOMMU has
no walker to read it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from iommusim.addr import PhysAddr
from iommusim.errors import Exists, InvalidArgument
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.prot import IOMMU_PROT_MASK

__all__ = ["MOCK_OA_BITS", "MOCK_VA_BITS", "MockLeaf", "MockPageTable"]

#: The 2 KiB granule and three 512-entry levels from ``starting_level = 2``:
#: 11 + 3 * 9 = 38 bits of IOVA (``amdv1pt_iommu_fmt_init`` without PT_FEAT_DYNAMIC_TOP).
MOCK_VA_BITS: Final = 38
#: ``cfg.common.hw_max_oasz_lg2 = 51`` in ``mock_domain_alloc_pgtable``.
MOCK_OA_BITS: Final = 51


@dataclass(slots=True)
class MockLeaf:
    """One leaf: ``size`` bytes at ``pa`` with ``prot``; ``dirty`` is its D bit."""

    pa: int
    size: int
    prot: int
    dirty: bool = False


class MockPageTable:
    """Leaves keyed by their IOVA (a sorted list of bases beside a dict, for range queries)."""

    __slots__ = ("_bases", "_leaves", "_sizes", "granule", "pgsize_bitmap")

    def __init__(self, pgsize_bitmap: int) -> None:
        if pgsize_bitmap <= 0 or pgsize_bitmap >> MOCK_VA_BITS:
            raise InvalidArgument(
                f"pgsize_bitmap must be non-zero below 2^{MOCK_VA_BITS}, not {pgsize_bitmap:#x}"
            )
        self.pgsize_bitmap = pgsize_bitmap
        self.granule = pgsize_bitmap & -pgsize_bitmap
        # Largest first: a map takes the largest leaf that fits (iommu_pgsize's rule).
        self._sizes = tuple(
            1 << b for b in range(MOCK_VA_BITS - 1, -1, -1) if pgsize_bitmap >> b & 1
        )
        self._bases: list[int] = []
        self._leaves: dict[int, MockLeaf] = {}

    def __len__(self) -> int:
        return len(self._bases)

    def leaves(self) -> list[tuple[int, MockLeaf]]:
        """Every ``(iova, leaf)``, by IOVA (a copy)."""
        return [(b, self._leaves[b]) for b in self._bases]

    # ------------------------------------------------------------------ lookups
    def leaf_at(self, iova: int) -> tuple[int, MockLeaf] | None:
        """The leaf mapping ``iova`` and its base IOVA, or None."""
        i = bisect_right(self._bases, iova) - 1
        if i < 0:
            return None
        base = self._bases[i]
        leaf = self._leaves[base]
        return (base, leaf) if iova < base + leaf.size else None

    def iova_to_phys(self, iova: int) -> PhysAddr | None:
        found = self.leaf_at(iova)
        if found is None:
            return None
        base, leaf = found
        return PhysAddr(leaf.pa + iova - base)

    def _check_range(self, iova: int, size: int) -> None:
        g = self.granule
        if size <= 0 or (iova | size) & (g - 1):
            raise InvalidArgument(
                f"iova {iova:#x} and size {size:#x} must be positive multiples of {g:#x}"
            )
        if iova < 0 or iova + size > 1 << MOCK_VA_BITS:
            raise InvalidArgument(
                f"range {iova:#x}+{size:#x} must lie below 2^{MOCK_VA_BITS} (the table's IOVA)"
            )

    # ------------------------------------------------------------------ map / unmap
    def map(self, iova: int, pa: int, size: int, prot: int) -> None:
        """Map ``[iova, iova + size)`` to ``[pa, pa + size)`` with the largest leaves the
        alignment of both allows. EINVAL for misalignment, a range beyond the table or the
        output width, or prot bits the IOMMU API does not define; EEXIST when any byte of the
        range is mapped. Nothing changes on failure."""
        self._check_range(iova, size)
        if pa < 0 or pa & (self.granule - 1) or pa + size > 1 << MOCK_OA_BITS:
            raise InvalidArgument(
                f"pa {pa:#x} must be {self.granule:#x} aligned and {pa:#x}+{size:#x} lie "
                f"below 2^{MOCK_OA_BITS}"
            )
        if prot & ~IOMMU_PROT_MASK:
            raise InvalidArgument(f"prot {prot:#x} has bits outside {IOMMU_PROT_MASK:#x}")
        end = iova + size
        i = bisect_left(self._bases, end)
        if i and self._bases[i - 1] + self._leaves[self._bases[i - 1]].size > iova:
            raise Exists(f"range {iova:#x}+{size:#x} is already mapped in part")
        off = 0
        while off < size:
            align = (iova + off) | (pa + off)
            step = next(s for s in self._sizes if s <= size - off and not align & (s - 1))
            insort(self._bases, iova + off)
            self._leaves[iova + off] = MockLeaf(pa + off, step, prot)
            off += step

    def unmap(self, iova: int, size: int, gather: IotlbGather) -> int:
        """Clear the leaves in ``[iova, iova + size)`` into ``gather``; return the bytes they
        mapped (holes count 0). A leaf only partly inside the range is not split: EINVAL,
        nothing changed (the core's contract; generic_pt would drop a leaf whose head the
        range covers)."""
        self._check_range(iova, size)
        end = iova + size
        lo = bisect_left(self._bases, iova)
        hi = bisect_left(self._bases, end)
        if lo and self._bases[lo - 1] + self._leaves[self._bases[lo - 1]].size > iova:
            raise InvalidArgument(f"range {iova:#x}+{size:#x} would split a leaf at its start")
        if hi > lo and self._bases[hi - 1] + self._leaves[self._bases[hi - 1]].size > end:
            raise InvalidArgument(f"range {iova:#x}+{size:#x} would split a leaf at its end")
        done = 0
        for base in self._bases[lo:hi]:
            leaf = self._leaves.pop(base)
            gather.add_page(base, leaf.size)
            done += leaf.size
        del self._bases[lo:hi]
        return done

    def clear(self) -> None:
        """Drop every leaf (the domain is freed)."""
        self._bases.clear()
        self._leaves.clear()

    # ------------------------------------------------------------------ dirty bits
    def set_dirty(self, iova: int) -> bool:
        """``pt_iommu_set_dirty``: set the D bit of the leaf mapping ``iova`` (the
        selftest's stand-in for a device write); False when nothing maps it."""
        found = self.leaf_at(iova)
        if found is None:
            return False
        found[1].dirty = True
        return True

    def read_and_clear_dirty(
        self, iova: int, size: int, no_clear: bool, record: Callable[[int, int], None]
    ) -> None:
        """``read_and_clear_dirty``: ``record(iova, length)`` for every dirty leaf meeting
        ``[iova, iova + size)``, clipped to it (the kernel's ``iova_bitmap_set`` clips the
        whole leaf it is given to the bitmap), and clean it unless ``no_clear``."""
        end = iova + size
        lo = max(bisect_right(self._bases, iova) - 1, 0)
        hi = bisect_left(self._bases, end)
        for base in self._bases[lo:hi]:
            leaf = self._leaves[base]
            if not leaf.dirty or base + leaf.size <= iova:
                continue
            start = max(base, iova)
            record(start, min(base + leaf.size, end) - start)
            if not no_clear:
                leaf.dirty = False
