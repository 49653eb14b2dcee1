"""``struct iopt_pages`` (``drivers/iommu/iommufd/pages.c``): a run of user pages that one
or more IOAS areas map.

An area created by IOAS_MAP gets a new :class:`IoPages`; IOAS_COPY makes the destination's
areas reference the *same* object, so both IOASes share its pins. The kernel pins lazily:
pages are pinned when a domain is filled or an access pins them (``iopt_area_fill_domains``
does nothing for an IOAS without domains), so mapping pins nothing by itself. Pins are
counted per page index here and taken from the :class:`UserMemory` once per page; the
last reference going away drops every pin still held.
"""

from __future__ import annotations

from typing import Final

from iommusim.errors import ModelError
from iommusim.sw.iommufd.user import UserMemory
from iommusim.sw.pages import PAGE_SIZE

__all__ = ["ACCOUNT_MM", "ACCOUNT_NONE", "ACCOUNT_USER", "IoPages"]

#: ``enum iopt_pages_account_mode``: no accounting (CAP_IPC_LOCK), per user, per mm.
ACCOUNT_NONE: Final = 0
ACCOUNT_USER: Final = 1
ACCOUNT_MM: Final = 2


class IoPages:
    """``npages`` user pages from the page-aligned ``uptr``; ``writable`` when mapped with
    IOMMU_IOAS_MAP_WRITEABLE (``pages->writable``)."""

    __slots__ = ("_pins", "account_mode", "npages", "refs", "uptr", "user", "writable")

    def __init__(
        self, user: UserMemory, uptr: int, npages: int, writable: bool, account_mode: int
    ) -> None:
        self.user = user
        self.uptr = uptr
        self.npages = npages
        self.writable = writable
        self.account_mode = account_mode
        #: ``kref``: areas and in-flight COPY lists holding this object.
        self.refs = 1
        self._pins: dict[int, tuple[int, int]] = {}  # index -> (pa, users)

    @property
    def npinned(self) -> int:
        """Pages currently pinned (``pages->npinned``)."""
        return len(self._pins)

    def pinned(self) -> dict[int, tuple[int, int]]:
        """Page index -> (physical address, users) of every pinned page (a copy)."""
        return dict(self._pins)

    def get(self) -> None:
        if self.refs <= 0:
            raise ModelError("iopt_pages used after its last reference")
        self.refs += 1

    def put(self) -> None:
        """Drop a reference; the last one unpins every page still pinned."""
        if self.refs <= 0:
            raise ModelError("iopt_pages put after its last reference")
        self.refs -= 1
        if self.refs == 0:
            for index in sorted(self._pins):
                self.user.unpin_pages(self.uptr + index * PAGE_SIZE, 1)
            self._pins.clear()

    def pin(self, first: int, last: int) -> list[int]:
        """One more user of pages ``first..last`` (indices); the first user of a page pins
        it in user memory. Returns the physical addresses. All or nothing: an EFAULT from
        user memory leaves every count as it was."""
        if not 0 <= first <= last < self.npages:
            raise ModelError(f"page range {first}..{last} outside {self.npages} pages")
        missing = [i for i in range(first, last + 1) if i not in self._pins]
        fresh: dict[int, int] = {}
        # Pin runs of missing pages; roll back what was pinned if a later run fails.
        try:
            for start, n in _runs(missing):
                pas = self.user.pin_pages(self.uptr + start * PAGE_SIZE, n, self.writable)
                fresh.update(zip(range(start, start + n), pas, strict=True))
        except BaseException:
            for start, n in _runs(sorted(fresh)):
                self.user.unpin_pages(self.uptr + start * PAGE_SIZE, n)
            raise
        out: list[int] = []
        for i in range(first, last + 1):
            if i in fresh:
                self._pins[i] = (fresh[i], 1)
            else:
                pa, users = self._pins[i]
                self._pins[i] = (pa, users + 1)
            out.append(self._pins[i][0])
        return out

    def unpin(self, first: int, last: int) -> None:
        """Drop one user of pages ``first..last``; the last user unpins the page."""
        if any(i not in self._pins for i in range(first, last + 1)):
            raise ModelError(f"pages {first}..{last} are not all pinned")
        for i in range(first, last + 1):
            pa, users = self._pins[i]
            if users == 1:
                del self._pins[i]
                self.user.unpin_pages(self.uptr + i * PAGE_SIZE, 1)
            else:
                self._pins[i] = (pa, users - 1)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices as (start, count) runs of consecutive values."""
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and out[-1][0] + out[-1][1] == i:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out
