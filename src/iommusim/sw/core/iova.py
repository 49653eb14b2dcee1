"""The DMA API's IOVA allocator (after Linux ``drivers/iommu/iova.c``).

Ranges are allocated top-down below a limit, aligned to their own size when the size is a
power of two (``alloc_iova(..., size_aligned=true)``); page frame 0 is never handed out
(``base_pfn`` 1), so IOVA 0 stays a recognisable error. In front of it sits the range cache
(``iova_rcache``): per size order up to 32 pages, each CPU has a loaded and a spare magazine
of freed pfns and there is a shared depot of full magazines, so a steady map/unmap workload
mostly recycles the same IOVAs without touching the tree.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from typing import Final

from iommusim.errors import InvalidArgument

__all__ = ["IOVA_MAG_SIZE", "IOVA_RANGE_CACHE_MAX_SIZE", "IovaAllocator"]

#: log2 of the largest size (in pages) the range cache holds, plus one (Linux value 6).
IOVA_RANGE_CACHE_MAX_SIZE: Final = 6
#: Pfns per magazine (Linux IOVA_MAG_SIZE, 127 so a magazine fills a 1 KiB allocation).
IOVA_MAG_SIZE: Final = 127
#: Full magazines the depot keeps per size order before it frees the rest to the tree.
MAX_GLOBAL_MAGS: Final = 32


@dataclass(slots=True)
class _CpuCache:
    loaded: list[int]
    prev: list[int]


class _Rcache:
    def __init__(self, ncpus: int) -> None:
        self.cpus = [_CpuCache([], []) for _ in range(ncpus)]
        self.depot: list[list[int]] = []


class IovaAllocator:
    """IOVA page frames in ``[start_pfn, limit]`` with ``granule`` bytes per frame."""

    def __init__(self, granule: int = 4096, start_pfn: int = 1, ncpus: int = 1) -> None:
        if granule & (granule - 1) or granule < 4096:
            raise InvalidArgument(f"granule must be a power of two >= 4096, not {granule}")
        self.granule = granule
        self.shift = granule.bit_length() - 1
        self.start_pfn = start_pfn
        self._starts: list[int] = []  # sorted start pfns of allocated ranges
        self._sizes: dict[int, int] = {}
        self._rcaches = [_Rcache(ncpus) for _ in range(IOVA_RANGE_CACHE_MAX_SIZE)]
        self.ncpus = ncpus
        self.stats = {"rcache_hits": 0, "tree_allocs": 0, "tree_frees": 0}
        # How the last alloc_iova_fast was served, for undo_alloc_fast: (pfn, order, cpu,
        # index popped, magazine move) for a range-cache hit, (pfn,) for the tree.
        self._last: tuple[int, ...] = ()

    # ------------------------------------------------------------------ tree
    def _fits(self, lo: int, size: int) -> bool:
        i = bisect_right(self._starts, lo) - 1
        if i >= 0 and self._starts[i] + self._sizes[self._starts[i]] > lo:
            return False
        j = bisect_left(self._starts, lo)
        return j == len(self._starts) or self._starts[j] >= lo + size

    def alloc_iova(self, size: int, limit_pfn: int) -> int | None:
        """The lowest-cost top-down fit of ``size`` frames ending at or below ``limit_pfn``."""
        if size <= 0:
            raise InvalidArgument(f"IOVA size must be positive, not {size}")
        align = size if size & (size - 1) == 0 else 1  # only power-of-two sizes align
        cand = None
        if self._starts:
            # Fast path: right below the lowest range, where a top-down run continues.
            lo = (min(self._starts[0], limit_pfn + 1) - size) & ~(align - 1)
            if lo >= self.start_pfn and self._fits(lo, size):
                cand = lo
        if cand is None:
            cand = self._scan(size, align, limit_pfn)
            if cand is None:
                return None
        insort(self._starts, cand)
        self._sizes[cand] = size
        self.stats["tree_allocs"] += 1
        return cand

    def _scan(self, size: int, align: int, limit_pfn: int) -> int | None:
        hi = limit_pfn + 1  # exclusive top of the current gap
        i = bisect_left(self._starts, hi)
        # A range that starts below the limit may still cover it.
        while True:
            if i > 0:
                s = self._starts[i - 1]
                gap_lo = s + self._sizes[s]
            else:
                gap_lo = self.start_pfn
            top = min(hi, limit_pfn + 1)
            if top > gap_lo:
                lo = (top - size) & ~(align - 1)
                if lo >= gap_lo and lo >= self.start_pfn:
                    return lo
            if i == 0:
                return None
            i -= 1
            hi = self._starts[i]

    def free_iova(self, pfn: int) -> None:
        size = self._sizes.pop(pfn, None)
        if size is None:
            raise InvalidArgument(f"IOVA pfn {pfn:#x} is not allocated")
        del self._starts[bisect_left(self._starts, pfn)]
        self.stats["tree_frees"] += 1

    def size_of(self, pfn: int) -> int | None:
        return self._sizes.get(pfn)

    @property
    def allocated(self) -> int:
        """Frames held by the tree (cached ranges included: they are still allocated)."""
        return sum(self._sizes.values())

    # ------------------------------------------------------------------ fast path
    def alloc_iova_fast(self, size: int, limit_pfn: int, cpu: int = 0) -> int | None:
        """alloc_iova_fast: small sizes are rounded to a power of two and served from the
        range cache first."""
        if size < 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1):
            size = 1 << (size - 1).bit_length()
        order = (size - 1).bit_length()
        if order < IOVA_RANGE_CACHE_MAX_SIZE:
            pfn = self._rcache_get(order, limit_pfn, cpu)
            if pfn is not None:
                self.stats["rcache_hits"] += 1
                return pfn
        pfn = self.alloc_iova(size, limit_pfn)
        self._last = () if pfn is None else (pfn,)
        return pfn

    def undo_alloc_fast(self, pfn: int) -> None:
        """Take back the allocation the last :meth:`alloc_iova_fast` made (it returned
        ``pfn``), restoring the tree, the range cache and the counters exactly: what a
        caller does when the mapping that needed the IOVA fails."""
        last = self._last
        if not last or last[0] != pfn:
            raise InvalidArgument(f"IOVA pfn {pfn:#x} is not the last fast allocation")
        self._last = ()
        if len(last) == 1:
            self.free_iova(pfn)
            self.stats["tree_frees"] -= 1
            self.stats["tree_allocs"] -= 1
            return
        _, order, cpu, k, move = last
        rc = self._rcaches[order]
        c = rc.cpus[cpu]
        c.loaded.insert(k, pfn)
        if move == 1:
            c.loaded, c.prev = c.prev, c.loaded
        elif move == 2:
            rc.depot.append(c.loaded)
            c.loaded = []
        self.stats["rcache_hits"] -= 1

    def free_iova_fast(self, pfn: int, cpu: int = 0) -> None:
        size = self._sizes.get(pfn)
        if size is None:
            raise InvalidArgument(f"IOVA pfn {pfn:#x} is not allocated")
        order = (size - 1).bit_length()
        if order < IOVA_RANGE_CACHE_MAX_SIZE and size == 1 << order:
            self._rcache_put(order, pfn, cpu)
        else:
            self.free_iova(pfn)

    def _rcache_get(self, order: int, limit_pfn: int, cpu: int) -> int | None:
        rc = self._rcaches[order]
        cpu %= self.ncpus
        c = rc.cpus[cpu]
        move = 0
        if not c.loaded:
            if c.prev:
                c.loaded, c.prev = c.prev, c.loaded
                move = 1
            elif rc.depot:
                c.loaded = rc.depot.pop()
                move = 2
            else:
                return None
        # iova_magazine_pop: the most recently freed pfn that fits under the limit.
        size = 1 << order
        for k in range(len(c.loaded) - 1, -1, -1):
            if c.loaded[k] + size - 1 <= limit_pfn:
                pfn = c.loaded.pop(k)
                self._last = (pfn, order, cpu, k, move)
                return pfn
        # Nothing fits: put the magazines back, so a lookup that finds nothing moves nothing.
        if move == 1:
            c.loaded, c.prev = c.prev, c.loaded
        elif move == 2:
            rc.depot.append(c.loaded)
            c.loaded = []
        return None

    def _rcache_put(self, order: int, pfn: int, cpu: int) -> None:
        rc = self._rcaches[order]
        c = rc.cpus[cpu % self.ncpus]
        if len(c.loaded) < IOVA_MAG_SIZE:
            c.loaded.append(pfn)
            return
        if len(c.prev) < IOVA_MAG_SIZE:
            c.loaded, c.prev = c.prev, c.loaded
            c.loaded.append(pfn)
            return
        if len(rc.depot) < MAX_GLOBAL_MAGS:
            rc.depot.append(c.loaded)
            c.loaded = [pfn]
            return
        # Depot full: the loaded magazine's ranges go back to the tree.
        for p in c.loaded:
            self.free_iova(p)
        c.loaded = [pfn]

    def cached(self) -> int:
        """Pfns currently parked in the range cache."""
        n = 0
        for rc in self._rcaches:
            n += sum(len(m) for m in rc.depot)
            n += sum(len(c.loaded) + len(c.prev) for c in rc.cpus)
        return n
