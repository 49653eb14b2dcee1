"""The table pages a batch engine's kernels read: copies of memory pages in one int64 array.

The kernels cannot follow a ``dict`` of page views, so :class:`TableSnapshot` copies each
table page they ask for (:data:`~iommusim.perf.engine.kernels.ST_PAGE`) into a row of
``pages`` and indexes it by page number in an open-addressing hash table (``pk``: page
numbers, ``pr``: rows; :func:`~iommusim.perf.engine.kernels.page_find`). Row 0 is the zero
page: a page memory does not hold reads as zeros (it is recorded as absent until memory
grows). :meth:`TableSnapshot.refresh` brings the copies up to date with memory -- before each
replay and after every row the scalar model ran, which may write memory (A/D or AF updates,
event and fault records).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from iommusim.mem.sparse import SparseMemory
from iommusim.perf.engine.kernels import page_find

__all__ = ["TableSnapshot"]

_I64 = npt.NDArray[np.int64]
#: 64-bit words per 4 KiB page.
_WORDS: Final = 512


class TableSnapshot:
    """Copies of the pages of ``mem`` (a :class:`SparseMemory` with word views) the kernels
    have asked for; ``pages``, ``pk`` and ``pr`` are the kernels' arrays (replaced when they
    grow)."""

    def __init__(self, mem: SparseMemory) -> None:
        self.mem = mem
        self.pages = np.zeros((64, _WORDS), dtype=np.int64)
        self.pk = np.full(256, -1, dtype=np.int64)
        self.pr = np.zeros(256, dtype=np.int64)
        # Zero-copy views of the memory's pages, one per row from 1.
        self._views: list[_I64] = []
        self._absent = 0
        self._mem_pages = -1

    def __len__(self) -> int:
        """Memory pages held (the zero page not counted)."""
        return len(self._views)

    def refresh(self) -> None:
        """Re-copy the pages memory changed; when memory has new pages, forget the ones
        recorded as absent so that the walks ask for them again."""
        mem = self.mem
        if len(mem) != self._mem_pages:
            self._mem_pages = len(mem)
            if self._absent:
                keep = (self.pk >= 0) & (self.pr > 0)
                self._index(self.pk[keep].tolist(), self.pr[keep].tolist(), len(self.pk))
                self._absent = 0
        pages = self.pages
        for row, view in enumerate(self._views, start=1):
            if not np.array_equal(pages[row], view):
                pages[row] = view

    def add(self, pn: int) -> None:
        """Copy page ``pn`` in (or record it as absent: the zero page)."""
        words = self.mem.words
        page = None if words is None else words.get(pn)
        if page is None:
            row = 0
            self._absent += 1
        else:
            view = np.frombuffer(page, dtype=np.int64)
            self._views.append(view)
            row = len(self._views)
            if row == len(self.pages):
                grown = np.zeros((2 * row, _WORDS), dtype=np.int64)
                grown[:row] = self.pages
                self.pages = grown
            self.pages[row] = view
        if 2 * (len(self._views) + self._absent + 1) > len(self.pk):
            used = self.pk >= 0
            self._index(self.pk[used].tolist(), self.pr[used].tolist(), 2 * len(self.pk))
        h = page_find(self.pk, pn)
        self.pk[h] = pn
        self.pr[h] = row

    def _index(self, pns: list[int], rows: list[int], size: int) -> None:
        """A fresh hash table of ``size`` slots holding ``pns`` at ``rows``."""
        self.pk = np.full(size, -1, dtype=np.int64)
        self.pr = np.zeros(size, dtype=np.int64)
        for pn, row in zip(pns, rows, strict=True):
            h = page_find(self.pk, pn)
            self.pk[h] = pn
            self.pr[h] = row
