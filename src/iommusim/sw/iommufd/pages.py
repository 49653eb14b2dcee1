"""``struct iopt_pages`` (``drivers/iommu/iommufd/pages.c``): a run of pages that one or
more IOAS areas map -- of a process's memory (IOAS_MAP, ``IOPT_ADDRESS_USER``) or of a file
(IOAS_MAP_FILE, ``IOPT_ADDRESS_FILE``).

An area created by IOAS_MAP gets a new :class:`IoPages`; IOAS_COPY makes the destination's
areas reference the *same* object, so both IOASes share its pins. The kernel pins lazily:
pages are pinned while a domain holds an area over them (``iopt_area_fill_domains``) or an
access pins them (``iopt_area_add_access``), so mapping into an IOAS without domains pins
nothing. Pins are counted per page index here (one user per area filled into the IOAS's
domains, one per exact access range) and taken from the page source once per page; the
last user of a page, or the last reference to the object, unpins it.
"""

from __future__ import annotations

from typing import Final

from iommusim.errors import ModelError, NotPermitted
from iommusim.sw.iommufd.dmabuf import DmaBuf
from iommusim.sw.iommufd.user import PageSource
from iommusim.sw.pages import PAGE_SIZE

__all__ = ["ACCOUNT_MM", "ACCOUNT_NONE", "ACCOUNT_USER", "IoPages"]

#: ``enum iopt_pages_account_mode``: no accounting (CAP_IPC_LOCK), per user, per mm.
ACCOUNT_NONE: Final = 0
ACCOUNT_USER: Final = 1
ACCOUNT_MM: Final = 2


class IoPages:
    """``npages`` pages from the page-aligned address ``uptr`` of ``user``; ``writable``
    when mapped with IOMMU_IOAS_MAP_WRITEABLE (``pages->writable``).

    ``user`` is where the pages come from (a :class:`PageSource`): the process's
    :class:`UserMemory` (``uptr`` a user address), or a file (``file`` True, ``uptr`` a
    file offset: ``pages->start``; a :class:`~iommusim.sw.iommufd.memfd.MemFd`). ``owner`` is the
    process the pins are charged to (``pages->source_mm``): the mapping process, which
    IOAS_CHANGE_PROCESS changes for file pages.
    """

    __slots__ = (
        "_accesses",
        "_pins",
        "account_mode",
        "dmabuf",
        "file",
        "npages",
        "owner",
        "refs",
        "revoked",
        "uptr",
        "user",
        "writable",
    )

    def __init__(
        self,
        user: PageSource,
        uptr: int,
        npages: int,
        writable: bool,
        account_mode: int,
        *,
        file: bool = False,
        owner: PageSource | None = None,
    ) -> None:
        self.user = user
        self.uptr = uptr
        self.npages = npages
        self.writable = writable
        #: The dma-buf these pages are (``IOPT_ADDRESS_DMABUF``), and whether its exporter
        #: revoked them (``iopt_dmabuf_revoked``: no domain maps them any more).
        self.dmabuf: DmaBuf | None = None
        self.revoked = False
        self.account_mode = account_mode
        self.file = file
        self.owner: PageSource = user if owner is None else owner
        #: ``kref``: areas and in-flight COPY lists holding this object.
        self.refs = 1
        self._pins: dict[int, tuple[int, int]] = {}  # index -> (pa, users)
        #: ``access_itree``: (first, last) index range -> users of that exact range.
        self._accesses: dict[tuple[int, int], int] = {}

    @property
    def npinned(self) -> int:
        """Pages currently pinned (``pages->npinned``)."""
        return len(self._pins)

    def pinned(self) -> dict[int, tuple[int, int]]:
        """Page index -> (physical address, users) of every pinned page (a copy)."""
        return dict(self._pins)

    def accesses(self) -> dict[tuple[int, int], int]:
        """(first, last) page range -> users of every access range (a copy)."""
        return dict(self._accesses)

    def lookup(self, first: int, last: int) -> list[int]:
        """Physical addresses of pinned pages ``first..last``, taking no pin (a filled
        domain's pages, ``pages->domains_itree``)."""
        return [self._pins[i][0] for i in range(first, last + 1)]

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
            if self.dmabuf is not None:  # dma_buf_put of the attachment
                self.dmabuf.users.remove(self)

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

    # ------------------------------------------------------------------ accesses
    def add_access(self, first: int, last: int, write: bool) -> list[int]:
        """``iopt_area_add_access``: EPERM to write read-only pages; one more user of the
        exact range ``first..last``, pinning it for its first user. Returns the physical
        addresses."""
        if write and not self.writable:
            raise NotPermitted("cannot pin read-only pages for write")
        key = (first, last)
        users = self._accesses.get(key)
        if users is not None:
            self._accesses[key] = users + 1
            return self.lookup(first, last)
        pas = self.pin(first, last)
        self._accesses[key] = 1
        return pas

    def has_access(self, first: int, last: int) -> bool:
        return (first, last) in self._accesses

    def remove_access(self, first: int, last: int) -> None:
        """``iopt_area_remove_access``: one user less of the exact range; the last one
        unpins it (:meth:`has_access` says whether the range exists)."""
        key = (first, last)
        users = self._accesses[key]
        if users > 1:
            self._accesses[key] = users - 1
            return
        del self._accesses[key]
        self.unpin(first, last)

    def rw(self, start_byte: int, data: bytearray, write: bool, slow: bool) -> None:
        """``iopt_pages_rw_access``: copy ``data`` to (``write``) or from the bytes from
        ``start_byte``. EPERM to write read-only pages. The fast path copies through the
        process's memory (``copy_to_user``); the slow path -- file pages, ``slow``
        (``__IOMMUFD_ACCESS_RW_SLOW_PATH``), or a process that is gone (``mmget_not_zero``
        fails) -- pins the pages and copies through their physical memory, then unpins
        (``iopt_pages_rw_slow``). EFAULT from the source, nothing pinned after."""
        if write and not self.writable:
            raise NotPermitted("cannot write read-only pages")
        va = self.uptr + start_byte
        if not (slow or self.file or not self.user.alive()):
            self._copy(va, data, write)
            return
        first = start_byte // PAGE_SIZE
        last = (start_byte + len(data) - 1) // PAGE_SIZE
        pas = self.pin(first, last)
        try:
            phys = self.user.phys
            done = 0
            while done < len(data):
                at = start_byte + done
                n = min(len(data) - done, PAGE_SIZE - at % PAGE_SIZE)
                pa = pas[at // PAGE_SIZE - first] + at % PAGE_SIZE
                if write:
                    phys.write(pa, bytes(data[done : done + n]))
                else:
                    data[done : done + n] = phys.read(pa, n)
                done += n
        finally:
            self.unpin(first, last)

    def _copy(self, va: int, data: bytearray, write: bool) -> None:
        if write:
            self.user.write(va, bytes(data))
        else:
            data[:] = self.user.read(va, len(data))


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices as (start, count) runs of consecutive values."""
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and out[-1][0] + out[-1][1] == i:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out
