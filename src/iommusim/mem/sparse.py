"""Sparse physical memory covering the whole 64-bit physical address space.

Pages (4 KiB ``bytearray``) are allocated on first write; memory never written reads as
zero. Aligned 4- and 8-byte accesses, the hardware models' hot path, touch one page.

:attr:`SparseMemory.words` views every page as 64-bit words, so a page-table walker can load
an aligned little-endian doubleword with one dict lookup and one index (DESIGN "Performance":
memory read through word views), without a call or a slice per access.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

__all__ = ["SparseMemory"]

_PAGE_SHIFT = 12
_PAGE_SIZE = 1 << _PAGE_SHIFT
_PAGE_MASK = _PAGE_SIZE - 1
_ADDR_MASK = (1 << 64) - 1
_ZERO_PAGE = bytes(_PAGE_SIZE)
# A native-order word view is little-endian only on a little-endian host.
_LE_HOST = sys.byteorder == "little"


class SparseMemory:
    """Whole-address-space RAM with pages allocated on first write."""

    __slots__ = ("_pages", "words")

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}
        #: Page number -> that page as little-endian 64-bit words (a ``memoryview`` cast to
        #: ``"Q"``, sharing the page's storage), for fast aligned reads: the doubleword at an
        #: 8-aligned ``pa`` is ``words[pa >> 12][(pa & 0xFFF) >> 3]``; a page missing here
        #: reads as zero. Read-only for users: write through the methods. ``None`` on a
        #: big-endian host, where callers use :meth:`read64`.
        self.words: dict[int, memoryview] | None = {} if _LE_HOST else None

    # -- bytes -------------------------------------------------------------------------
    def read(self, pa: int, size: int) -> bytes:
        pa &= _ADDR_MASK
        off = pa & _PAGE_MASK
        if off + size <= _PAGE_SIZE:
            page = self._pages.get(pa >> _PAGE_SHIFT)
            if page is None:
                return bytes(size)
            return bytes(page[off : off + size])
        out = bytearray()
        while size:
            off = pa & _PAGE_MASK
            n = min(size, _PAGE_SIZE - off)
            page = self._pages.get(pa >> _PAGE_SHIFT)
            out += _ZERO_PAGE[:n] if page is None else page[off : off + n]
            pa = (pa + n) & _ADDR_MASK
            size -= n
        return bytes(out)

    def write(self, pa: int, data: bytes) -> None:
        pa &= _ADDR_MASK
        view = memoryview(data)
        while view:
            off = pa & _PAGE_MASK
            n = min(len(view), _PAGE_SIZE - off)
            pn = pa >> _PAGE_SHIFT
            page = self._pages.get(pn)
            if page is None:
                page = self._pages[pn] = bytearray(_PAGE_SIZE)
                if self.words is not None:
                    # Pages never change size, so exporting their buffer is safe.
                    self.words[pn] = memoryview(page).cast("Q")
            page[off : off + n] = view[:n]
            view = view[n:]
            pa = (pa + n) & _ADDR_MASK

    # -- words -------------------------------------------------------------------------
    def read64(self, pa: int) -> int:
        off = pa & _PAGE_MASK
        if off <= _PAGE_SIZE - 8:
            page = self._pages.get(pa >> _PAGE_SHIFT)
            if page is None:
                return 0
            return int.from_bytes(page[off : off + 8], "little")
        return int.from_bytes(self.read(pa, 8), "little")

    def read32(self, pa: int) -> int:
        off = pa & _PAGE_MASK
        if off <= _PAGE_SIZE - 4:
            page = self._pages.get(pa >> _PAGE_SHIFT)
            if page is None:
                return 0
            return int.from_bytes(page[off : off + 4], "little")
        return int.from_bytes(self.read(pa, 4), "little")

    def write64(self, pa: int, value: int) -> None:
        self.write(pa, (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little"))

    def write32(self, pa: int, value: int) -> None:
        self.write(pa, (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    def cas64(self, pa: int, expected: int, new: int) -> int:
        old = self.read64(pa)
        if old == expected:
            self.write64(pa, new)
        return old

    # -- inspection --------------------------------------------------------------------
    def pages(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(page_pa, contents)`` for every allocated page, in address order."""
        for pn in sorted(self._pages):
            yield pn << _PAGE_SHIFT, bytes(self._pages[pn])

    def __len__(self) -> int:
        """Number of allocated pages."""
        return len(self._pages)
