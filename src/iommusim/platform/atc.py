"""A device's Address Translation Cache (ATC): what PCIe ATS lets an endpoint remember.

The ATC holds the answers of ATS Translation Requests (riscv-iommu: "PCIe ATS translation
request handling") per 4 KiB untranslated page, tagged with the PASID (-1 without one) and
the privilege of the request, with least-recently-used replacement. Nothing but an
Invalidate Request (riscv-iommu: "IOMMU PCIe ATS commands", ``ATS.INVAL``), disabling ATS or
an eviction removes an entry, so a driver that forgets to invalidate sees the device keep
using a stale translation -- the bug class this model exists to show.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, NamedTuple

from iommusim.errors import InvalidArgument

__all__ = ["Atc", "AtcEntry"]


class AtcEntry(NamedTuple):
    """The translated address of one 4 KiB page and the permissions its completion granted."""

    pa_page_base: int
    r: bool
    w: bool

    def allows(self, write: bool) -> bool:
        """Whether the entry serves an access of that direction."""
        return self.w if write else self.r


_PAGE_LG2: Final = 12


class Atc:
    """An LRU cache of ``entries`` translations keyed by ``(pid, priv, vpn)``.

    ``pid`` is the PASID or -1 for requests without one; ``vpn`` is the untranslated address
    shifted right by 12. A completion with a larger translation range is cached only for the
    page that was asked for, so every entry covers exactly one 4 KiB page.
    """

    __slots__ = ("_map", "capacity", "evictions")

    def __init__(self, entries: int) -> None:
        if entries < 1:
            raise InvalidArgument(f"ATC entries must be at least 1, not {entries}")
        self.capacity = entries
        self.evictions = 0
        self._map: OrderedDict[tuple[int, bool, int], AtcEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._map)

    def lookup(self, pid: int, vpn: int, priv: bool = False) -> AtcEntry | None:
        """The entry for the page (marking it most recently used), or ``None``."""
        key = (pid, priv, vpn)
        hit = self._map.get(key)
        if hit is not None:
            self._map.move_to_end(key)
        return hit

    def peek(self, pid: int, vpn: int, priv: bool = False) -> AtcEntry | None:
        """Like :meth:`lookup` but leaves the replacement order alone."""
        return self._map.get((pid, priv, vpn))

    def insert(
        self, pid: int, vpn: int, pa_page_base: int, r: bool, w: bool, priv: bool = False
    ) -> None:
        """Cache a translation, replacing the page's old entry or the least recently used."""
        key = (pid, priv, vpn)
        m = self._map
        if key in m:
            m.move_to_end(key)
        elif len(m) >= self.capacity:
            m.popitem(last=False)
            self.evictions += 1
        m[key] = AtcEntry(pa_page_base, r, w)

    def invalidate(self, pasid: int | None, start: int, size: int) -> int:
        """Drop the entries for pages in ``[start, start + size)``; returns how many.

        ``pasid`` selects the entries of that PASID only. ``None`` (an Invalidate Request
        without a PASID) drops the matching addresses of every PASID as well as those cached
        without one: that over-invalidates, which PCIe allows -- a device may always drop more
        than it is asked to, never less. Entries of both privilege levels are dropped.
        """
        first = start >> _PAGE_LG2
        last = (start + size - 1) >> _PAGE_LG2
        doomed = [
            k for k in self._map if first <= k[2] <= last and (pasid is None or k[0] == pasid)
        ]
        for k in doomed:
            del self._map[k]
        return len(doomed)

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        n = len(self._map)
        self._map.clear()
        return n
