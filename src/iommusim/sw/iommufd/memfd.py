"""A memfd-like file (``memfd_create``, shmem) and a process's table of open files.

A :class:`MemFd` owns pages of physical memory, by file offset, allocated (zeroed) on first
use: the process maps them with ``Mm.mmap(..., file=memfd)`` (``MAP_SHARED``: the mapping's
pages are the file's) and iommufd pins them by offset for IOMMU_IOAS_MAP_FILE
(``memfd_pin_folios``). Its surface is the one :class:`~iommusim.sw.iommufd.pages.IoPages`
takes pages from -- ``read``/``write``/``pin_pages``/``unpin_pages`` -- with file offsets as
addresses.

The fd registry: every model process's user memory has an :class:`FdTable`
(``MmUserMemory.files``); ``install`` gives the lowest free descriptor from 3 (0-2 are the
standard streams of a real process) and an ioctl's ``fd`` field names a file in the table
of the process that issues it (``fget``: EBADF for a descriptor not open).
"""

from __future__ import annotations

from typing import Final

from iommusim.errors import BadAddress, BadFileDescriptor, InvalidArgument, OutOfMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PAGE_SIZE, PageAllocator

__all__ = ["FIRST_FD", "FdTable", "MemFd"]

#: The lowest descriptor :meth:`FdTable.install` hands out.
FIRST_FD: Final = 3
_MASK: Final = PAGE_SIZE - 1


class MemFd:
    """A shmem file of ``size`` bytes whose pages come from ``alloc`` in ``mem``.

    ``pins`` counts the pins of each page (by page-aligned offset). Truncation drops the
    pages beyond the new size; a pinned one leaves the file at once and goes back to the
    allocator with its last unpin (the pin holds the folio, as in Linux).
    """

    __slots__ = ("_orphans", "_pages", "alloc", "mem", "name", "pins", "size")

    def __init__(
        self, mem: PhysicalMemory, alloc: PageAllocator, size: int = 0, name: str = "memfd"
    ) -> None:
        if size < 0:
            raise InvalidArgument(f"size must be >= 0, not {size}")
        self.mem = mem
        self.alloc = alloc
        self.name = name
        self.size = size
        self._pages: dict[int, int] = {}  # page offset -> pa
        self.pins: dict[int, int] = {}  # page offset -> pin count
        self._orphans: dict[int, tuple[int, int]] = {}  # pa -> (former offset, pins)

    def __repr__(self) -> str:
        return f"MemFd({self.name!r}, {self.size:#x} bytes, {len(self._pages)} pages)"

    @property
    def resident(self) -> dict[int, int]:
        """Page offset -> physical address of every page the file holds (a copy)."""
        return dict(self._pages)

    # ------------------------------------------------------------------ size
    def truncate(self, size: int) -> None:
        """``ftruncate``: growing adds holes; shrinking drops the pages past ``size``."""
        if size < 0:
            raise InvalidArgument(f"size must be >= 0, not {size}")
        self.size = size
        for off in [o for o in self._pages if o >= size]:
            pa = self._pages.pop(off)
            pins = self.pins.pop(off, 0)
            if pins:
                self._orphans[pa] = (off, pins)
            else:
                self.alloc.free_page(pa)

    # ------------------------------------------------------------------ pages
    def page(self, offset: int) -> int:
        """The physical page at page-aligned ``offset``, allocated zeroed on first use
        (:class:`~iommusim.sw.mm.vma.MappedFile`); BadAddress at or beyond the end."""
        if offset < 0 or offset >= self.size:
            raise BadAddress(f"offset {offset:#x} is beyond {self.name}'s {self.size:#x} bytes")
        pa = self._pages.get(offset & ~_MASK)
        if pa is None:
            pa = self.alloc.alloc_page()
            self._pages[offset & ~_MASK] = pa
        return pa

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise BadAddress(f"{self.name}: {offset:#x}+{n:#x} is beyond {self.size:#x} bytes")

    @property
    def phys(self) -> PhysicalMemory:
        return self.mem

    def alive(self) -> bool:
        """A file's pages are the file's: they never go with a process."""
        return True

    def read(self, offset: int, n: int) -> bytes:
        """``pread``: holes read as zeros, nothing allocated; BadAddress past the end."""
        self._check(offset, n)
        out = bytearray()
        end = offset + n
        while offset < end:
            chunk = min(end, (offset & ~_MASK) + PAGE_SIZE) - offset
            pa = self._pages.get(offset & ~_MASK)
            out += bytes(chunk) if pa is None else self.mem.read(pa + (offset & _MASK), chunk)
            offset += chunk
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        """``pwrite`` inside the file (it does not grow); BadAddress past the end,
        OutOfMemory when its holes cannot be filled -- nothing written then."""
        self._check(offset, len(data))
        end = offset + len(data)
        holes = {o for o in range(offset & ~_MASK, end, PAGE_SIZE) if o not in self._pages}
        if len(holes) > self.alloc.nr_free:
            raise OutOfMemory(f"{self.name}: {len(holes)} pages needed")
        at = offset
        while at < end:
            chunk = min(end, (at & ~_MASK) + PAGE_SIZE) - at
            self.mem.write(
                self.page(at & ~_MASK) + (at & _MASK), data[at - offset : at - offset + chunk]
            )
            at += chunk

    def pin_pages(self, offset: int, npages: int, write: bool) -> list[int]:
        """``memfd_pin_folios``: pin ``npages`` pages from page-aligned ``offset``,
        allocating holes. EINVAL when a page starts at or past the end of the file,
        OutOfMemory when the holes cannot be filled; nothing pinned then."""
        if offset & _MASK or npages <= 0:
            raise InvalidArgument(f"pin needs a page-aligned offset and npages > 0: {offset:#x}")
        offs = range(offset, offset + npages * PAGE_SIZE, PAGE_SIZE)
        if offs[-1] >= self.size:
            raise InvalidArgument(f"{self.name}: page {offs[-1]:#x} is beyond {self.size:#x}")
        holes = sum(1 for o in offs if o not in self._pages)
        if holes > self.alloc.nr_free:
            raise OutOfMemory(f"{self.name}: {holes} pages needed")
        out = []
        for o in offs:
            out.append(self.page(o))
            self.pins[o] = self.pins.get(o, 0) + 1
        return out

    def unpin_pages(self, offset: int, npages: int) -> None:
        """Drop one pin of each page (a page truncated away is freed with its last)."""
        for o in range(offset, offset + npages * PAGE_SIZE, PAGE_SIZE):
            if o in self.pins:
                self.pins[o] -= 1
                if not self.pins[o]:
                    del self.pins[o]
                continue
            pa = next((p for p, (off, _) in self._orphans.items() if off == o), None)
            if pa is None:
                raise InvalidArgument(f"{self.name}: page {o:#x} is not pinned")
            off, pins = self._orphans[pa]
            if pins == 1:
                del self._orphans[pa]
                self.alloc.free_page(pa)
            else:
                self._orphans[pa] = (off, pins - 1)


class FdTable:
    """A process's open files: descriptor -> :class:`MemFd`."""

    __slots__ = ("_files",)

    def __init__(self) -> None:
        self._files: dict[int, MemFd] = {}

    def install(self, file: MemFd) -> int:
        """``fd_install``: the lowest free descriptor from :data:`FIRST_FD`."""
        fd = FIRST_FD
        while fd in self._files:
            fd += 1
        self._files[fd] = file
        return fd

    def get(self, fd: int) -> MemFd:
        """``fget``: EBADF for a descriptor that is not open."""
        got = self._files.get(fd)
        if got is None:
            raise BadFileDescriptor(f"fd {fd} is not open")
        return got

    def close(self, fd: int) -> None:
        """``close``: EBADF for a descriptor that is not open. Pins keep the file's
        pages (an IOAS area holds the file, as ``get_file``)."""
        self.get(fd)
        del self._files[fd]
