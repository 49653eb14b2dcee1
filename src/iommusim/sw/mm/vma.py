"""Virtual memory areas of a process address space (after Linux ``struct vm_area_struct``
and the maple tree that holds them).

A :class:`VmaList` keeps the areas sorted, disjoint and non-empty, and always merged: two
areas that touch and have the same protection are one area (Linux merges compatible areas in
``vma_merge``: anonymous private ones, or shared mappings of the same file at contiguous
offsets). Removing or re-protecting part of an area splits it (Linux ``split_vma``).

The list is bookkeeping only: it neither validates protections nor touches page tables; the
:class:`~iommusim.sw.mm.Mm` does both. Misuse (inserting over an existing area, changing the
protection of a range not fully covered) is a :class:`ModelError`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from iommusim.errors import ModelError

__all__ = ["MappedFile", "Vma", "VmaList"]


class MappedFile(Protocol):
    """A file whose pages a shared mapping shows (``MAP_SHARED`` of a memfd): ``page`` is
    the physical page at byte ``offset`` (page-aligned), allocated on first use;
    :class:`~iommusim.errors.BadAddress` beyond the end of the file (SIGBUS)."""

    def page(self, offset: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Vma:
    """One area ``[start, end)`` with the ``PROT_*`` bits ``prot``; a shared mapping of
    ``file`` from byte ``pgoff`` of it, or anonymous memory when ``file`` is None."""

    start: int
    end: int
    prot: int
    file: MappedFile | None = None
    pgoff: int = 0

    def joins(self, other: Vma) -> bool:
        """``other`` starts where this ends and continues it (same prot and backing)."""
        return (
            self.end == other.start
            and self.prot == other.prot
            and self.file is other.file
            and (self.file is None or self.pgoff + self.size == other.pgoff)
        )

    def piece(self, start: int, end: int) -> Vma:
        """``[start, end)`` of this area, with its backing offset (0 for anonymous)."""
        if self.file is None:
            return Vma(start, end, self.prot)
        return Vma(start, end, self.prot, self.file, self.pgoff + start - self.start)

    @property
    def size(self) -> int:
        return self.end - self.start

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, int) and self.start <= addr < self.end

    def __repr__(self) -> str:
        return f"Vma({self.start:#x}-{self.end:#x}, prot={self.prot})"


class VmaList:
    """Sorted, disjoint, merged areas."""

    __slots__ = ("_starts", "_vmas")

    def __init__(self) -> None:
        self._vmas: list[Vma] = []
        self._starts: list[int] = []  # parallel to _vmas, for bisect

    def __iter__(self) -> Iterator[Vma]:
        return iter(list(self._vmas))

    def __len__(self) -> int:
        return len(self._vmas)

    def __bool__(self) -> bool:
        return bool(self._vmas)

    # ------------------------------------------------------------------ queries
    def find(self, addr: int) -> Vma | None:
        """The area containing ``addr`` (Linux ``vma_lookup``, not ``find_vma``)."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._vmas[i].end:
            return self._vmas[i]
        return None

    def _first_ending_after(self, addr: int) -> int:
        """Index of the first area with ``end > addr``."""
        i = bisect_right(self._starts, addr) - 1
        if i < 0 or self._vmas[i].end <= addr:
            i += 1
        return i

    def overlapping(self, start: int, end: int) -> list[Vma]:
        """The areas meeting ``[start, end)``, whole (not clipped), in address order."""
        out: list[Vma] = []
        i = self._first_ending_after(start)
        while i < len(self._vmas) and self._vmas[i].start < end:
            out.append(self._vmas[i])
            i += 1
        return out

    def is_free(self, start: int, end: int) -> bool:
        """No area meets ``[start, end)``."""
        i = self._first_ending_after(start)
        return i >= len(self._vmas) or self._vmas[i].start >= end

    def covered(self, start: int, end: int) -> bool:
        """Every byte of ``[start, end)`` lies in some area."""
        at = start
        for vma in self.overlapping(start, end):
            if vma.start > at:
                return False
            at = vma.end
        return at >= end

    def gap_top_down(self, length: int, low: int, high: int) -> int | None:
        """Start of the highest free range of ``length`` bytes inside ``[low, high)``, or None
        (Linux ``unmapped_area_topdown``)."""
        hi = high
        i = bisect_right(self._starts, high) - 1  # last area starting at or below high
        while True:
            lo = self._vmas[i].end if i >= 0 else low
            top = min(hi, high)
            if top - max(lo, low) >= length:
                return top - length
            if i < 0 or lo <= low:
                return None
            hi = self._vmas[i].start
            i -= 1

    def gap_bottom_up(self, length: int, low: int, high: int) -> int | None:
        """Start of the lowest free range of ``length`` bytes inside ``[low, high)``, or None
        (Linux ``unmapped_area``)."""
        at = low
        for vma in self.overlapping(low, high):
            if vma.start - at >= length:
                return at
            at = max(at, vma.end)
        return at if high - at >= length else None

    # ------------------------------------------------------------------ changes
    def insert(
        self, start: int, end: int, prot: int, file: MappedFile | None = None, pgoff: int = 0
    ) -> Vma:
        """Add ``[start, end)`` (of ``file`` from ``pgoff`` when given), merged with touching
        areas it continues; return the area that now holds it."""
        if start >= end:
            raise ModelError(f"empty area {start:#x}-{end:#x}")
        if not self.is_free(start, end):
            raise ModelError(f"area {start:#x}-{end:#x} overlaps an existing area")
        i = bisect_right(self._starts, start)
        vmas = self._vmas
        lo, hi = i, i
        vma = Vma(start, end, prot, file, pgoff)
        if i > 0 and vmas[i - 1].joins(vma):
            vma = vmas[i - 1].piece(vmas[i - 1].start, end)
            lo = i - 1
        if i < len(vmas) and vma.joins(vmas[i]):
            vma = vma.piece(vma.start, vmas[i].end)
            hi = i + 1
        vmas[lo:hi] = [vma]
        self._starts[lo:hi] = [vma.start]
        return vma

    def remove(self, start: int, end: int) -> list[Vma]:
        """Remove ``[start, end)`` from every area, splitting those that cross its ends; return
        the removed pieces (clipped to the range) in address order. Holes are fine."""
        hit = self.overlapping(start, end)
        if not hit:
            return []
        i = self._first_ending_after(start)
        keep: list[Vma] = []
        removed: list[Vma] = []
        for vma in hit:
            if vma.start < start:
                keep.append(vma.piece(vma.start, start))
            removed.append(vma.piece(max(vma.start, start), min(vma.end, end)))
            if vma.end > end:
                keep.append(vma.piece(end, vma.end))
        self._vmas[i : i + len(hit)] = keep
        self._starts[i : i + len(hit)] = [v.start for v in keep]
        return removed

    def set_prot(self, start: int, end: int, prot: int) -> list[Vma]:
        """Give ``[start, end)``, which must be fully covered, the protection ``prot``
        (splitting and merging as needed); return the pieces with their old protections."""
        if start >= end or not self.covered(start, end):
            raise ModelError(f"range {start:#x}-{end:#x} is not covered by areas")
        old = self.remove(start, end)
        for piece in old:
            self.insert(piece.start, piece.end, prot, piece.file, piece.pgoff)
        return old

    def check(self) -> None:
        """Raise :class:`ModelError` unless the list is sorted, disjoint, non-empty per area
        and merged (for tests)."""
        prev: Vma | None = None
        for vma in self._vmas:
            if vma.start >= vma.end:
                raise ModelError(f"empty {vma!r}")
            if prev is not None:
                if prev.end > vma.start:
                    raise ModelError(f"{prev!r} overlaps {vma!r}")
                if prev.joins(vma):
                    raise ModelError(f"{prev!r} and {vma!r} should have merged")
            prev = vma
        if self._starts != [v.start for v in self._vmas]:
            raise ModelError("area start index is stale")

    def __repr__(self) -> str:
        return f"VmaList({', '.join(map(repr, self._vmas))})"
