"""The kernel's page allocator: 4 KiB pages and naturally aligned blocks of 2^order pages.

A binary buddy allocator (after Linux ``mm/page_alloc.c``) over one RAM range
``[base, base + size)`` of a :class:`~iommusim.mem.PhysicalMemory`. Blocks are aligned to their
own size in *physical* address terms, which is what the hardware needs: a G-stage root table
is 16 KiB aligned (riscv-iommu: "Device-context fields", ``iohgatp``), a queue buffer is
aligned to its size or 4 KiB, whichever is larger (riscv-iommu: "Command-queue base (cqb)").

Deterministic: among the free blocks of an order the lowest address is handed out first.
Every block is zeroed through the memory before it is returned, as ``__GFP_ZERO`` does.

Errors (``ApiError``, with the kernel's errno): exhaustion is :class:`OutOfMemory` (ENOMEM);
freeing a page that is not allocated (double free), outside the range, misaligned or with the
wrong order is :class:`InvalidArgument` (EINVAL). A failed call changes nothing.
"""

from __future__ import annotations

import heapq
from typing import Final

from iommusim.addr import PhysAddr
from iommusim.errors import InvalidArgument, ModelError, OutOfMemory
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["MAX_ORDER", "PAGE_SHIFT", "PAGE_SIZE", "PageAllocator"]

PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
#: Default largest block: 2^10 pages = 4 MiB (Linux MAX_PAGE_ORDER).
MAX_ORDER: Final = 10


class PageAllocator:
    """Buddy allocator over ``[base, base + size)`` of ``mem``.

    ``max_order`` bounds :meth:`alloc_pages`; it also bounds how far free buddies merge.
    """

    __slots__ = (
        "_allocated",
        "_end",
        "_free",
        "_heap",
        "_nr_free",
        "base",
        "max_order",
        "mem",
        "size",
    )

    def __init__(
        self, mem: PhysicalMemory, base: int, size: int, *, max_order: int = MAX_ORDER
    ) -> None:
        if base < 0 or base & (PAGE_SIZE - 1):
            raise InvalidArgument(f"base must be a 4 KiB aligned address, not {base:#x}")
        if size <= 0 or size & (PAGE_SIZE - 1):
            raise InvalidArgument(f"size must be a positive multiple of 4 KiB, not {size:#x}")
        if not 0 <= max_order <= 40:
            raise InvalidArgument(f"max_order must be in 0..40, not {max_order}")
        self.mem = mem
        self.base = base
        self.size = size
        self.max_order = max_order
        self._end = base + size
        # Per order: the set of free block addresses, and a min-heap over (a superset of)
        # them for lowest-address-first allocation; stale heap entries are skipped on pop.
        self._free: list[set[int]] = [set() for _ in range(max_order + 1)]
        self._heap: list[list[int]] = [[] for _ in range(max_order + 1)]
        self._allocated: dict[int, int] = {}  # block pa -> order
        self._nr_free = size >> PAGE_SHIFT
        pa = base
        while pa < self._end:
            order = max_order
            while order and (
                pa & ((PAGE_SIZE << order) - 1) or pa + (PAGE_SIZE << order) > self._end
            ):
                order -= 1
            self._push(pa, order)
            pa += PAGE_SIZE << order

    # ------------------------------------------------------------------ counters
    @property
    def nr_total(self) -> int:
        """Pages in the range."""
        return self.size >> PAGE_SHIFT

    @property
    def nr_free(self) -> int:
        """Pages not allocated."""
        return self._nr_free

    @property
    def nr_allocated(self) -> int:
        """Pages allocated (in blocks of any order)."""
        return self.nr_total - self._nr_free

    def owns(self, pa: int) -> bool:
        """True when ``pa`` lies in the allocator's range."""
        return self.base <= pa < self._end

    def order_of(self, pa: int) -> int | None:
        """Order of the allocated block starting at ``pa``, or None if none starts there."""
        return self._allocated.get(pa)

    # ------------------------------------------------------------------ allocation
    def alloc_page(self) -> PhysAddr:
        """Physical address of a zeroed 4 KiB page; :class:`OutOfMemory` when exhausted."""
        return self.alloc_pages(0)

    def alloc_pages(self, order: int) -> PhysAddr:
        """Physical address of a zeroed block of ``2**order`` pages, aligned to its size."""
        if not 0 <= order <= self.max_order:
            raise InvalidArgument(f"order must be in 0..{self.max_order}, not {order}")
        o = order
        pa = -1
        while o <= self.max_order:
            pa = self._pop(o)
            if pa >= 0:
                break
            o += 1
        if pa < 0:
            raise OutOfMemory(
                f"no free block of order {order} ({self._nr_free} of {self.nr_total} pages free)"
            )
        while o > order:
            o -= 1
            self._push(pa + (PAGE_SIZE << o), o)
        self._allocated[pa] = order
        self._nr_free -= 1 << order
        self.mem.write(pa, bytes(PAGE_SIZE << order))
        return PhysAddr(pa)

    def free_page(self, pa: int) -> None:
        """Return a page from :meth:`alloc_page`."""
        self.free_pages(pa, 0)

    def free_pages(self, pa: int, order: int) -> None:
        """Return a block from :meth:`alloc_pages` with the same ``order``."""
        if not self.owns(pa) or pa & (PAGE_SIZE - 1):
            raise InvalidArgument(
                f"pa must be a 4 KiB aligned address in "
                f"[{self.base:#x}, {self._end:#x}), not {pa:#x}"
            )
        got = self._allocated.get(pa)
        if got is None:
            raise InvalidArgument(f"{pa:#x} is not allocated (double free?)")
        if got != order:
            raise InvalidArgument(f"{pa:#x} was allocated with order {got}, not {order}")
        del self._allocated[pa]
        self._nr_free += 1 << order
        # Merge with the buddy while it is free (Linux __free_one_page).
        while order < self.max_order:
            buddy = pa ^ (PAGE_SIZE << order)
            free = self._free[order]
            if buddy not in free:
                break
            free.remove(buddy)
            pa &= ~(PAGE_SIZE << order)
            order += 1
        self._push(pa, order)

    # ------------------------------------------------------------------ free lists
    def _push(self, pa: int, order: int) -> None:
        free = self._free[order]
        free.add(pa)
        heap = self._heap[order]
        if len(heap) > 2 * len(free) + 64:
            heap[:] = sorted(free)  # drop stale entries; a sorted list is a heap
        else:
            heapq.heappush(heap, pa)

    def _pop(self, order: int) -> int:
        free = self._free[order]
        if not free:
            return -1
        heap = self._heap[order]
        while heap:
            pa = heapq.heappop(heap)
            if pa in free:
                free.remove(pa)
                return pa
        raise ModelError("page allocator free lists are inconsistent")  # pragma: no cover
