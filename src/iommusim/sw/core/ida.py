"""An id allocator handing out the lowest free id of a range (after Linux ``ida``)."""

from __future__ import annotations

import heapq

from iommusim.errors import InvalidArgument

__all__ = ["Ida"]


class Ida:
    """Ids in ``[lo, hi]``; :meth:`alloc` returns the lowest free one or None."""

    __slots__ = ("_freed", "_next", "_used", "hi", "lo")

    def __init__(self, lo: int, hi: int) -> None:
        if lo > hi:
            raise InvalidArgument(f"id range must not be empty, not [{lo}, {hi}]")
        self.lo = lo
        self.hi = hi
        self._next = lo
        self._freed: list[int] = []
        self._used: set[int] = set()

    def alloc(self, hi: int | None = None) -> int | None:
        """The lowest free id, or None when none is free at or below ``hi`` (default: the
        range's end), like ``ida_alloc_range(lo, hi)``."""
        limit = self.hi if hi is None else min(hi, self.hi)
        if self._freed and self._freed[0] <= limit:
            i = heapq.heappop(self._freed)
        elif self._next <= limit:
            i = self._next
            self._next += 1
        else:
            return None
        self._used.add(i)
        return i

    def claim(self, i: int) -> bool:
        """Allocate exactly ``i`` if it is free (and in range); whether it was."""
        if not self.lo <= i <= self.hi or i in self._used:
            return False
        if i >= self._next:
            for j in range(self._next, i):
                heapq.heappush(self._freed, j)
            self._next = i + 1
        else:
            self._freed.remove(i)
            heapq.heapify(self._freed)
        self._used.add(i)
        return True

    def free(self, i: int) -> None:
        if i not in self._used:
            raise InvalidArgument(f"id {i} is not allocated")
        self._used.remove(i)
        heapq.heappush(self._freed, i)

    def __contains__(self, i: object) -> bool:
        return i in self._used

    def __len__(self) -> int:
        return len(self._used)
