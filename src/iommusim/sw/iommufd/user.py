"""User memory behind the pointers inside iommufd's ioctl structs.

The kernel reaches user memory with ``copy_from_user`` / ``copy_to_user`` (any fault is
EFAULT) and pins pages with ``pin_user_pages`` for DMA (``drivers/iommu/iommufd/pages.c``).
:class:`UserMemory` is that surface; :class:`MmUserMemory` implements it over a model
process (:class:`iommusim.sw.mm.Mm`), whose pages are demand-paged into physical memory.
"""

from __future__ import annotations

from typing import Final, Protocol

from iommusim.errors import BadAddress, InvalidArgument
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.iommufd.memfd import FdTable
from iommusim.sw.mm import PROT_READ, PROT_WRITE, Mm
from iommusim.sw.pages import PAGE_SIZE

__all__ = [
    "FileTable",
    "MmUserMemory",
    "PageSource",
    "PinnedMemory",
    "UserMemory",
]

_PAGE_MASK: Final = PAGE_SIZE - 1


class PinnedMemory(Protocol):
    """The memory pinned pages' physical addresses are in, as iommufd's CPU copies reach it
    (``kmap`` of a pinned page)."""

    def read(self, pa: int, n: int) -> bytes: ...

    def write(self, pa: int, data: bytes) -> None: ...


class PageSource(Protocol):
    """Where an :class:`~iommusim.sw.iommufd.pages.IoPages` takes its pages from: a user
    address space, or a file with offsets for addresses.

    ``read``/``write`` raise :class:`BadAddress` (EFAULT) when any byte is inaccessible,
    having changed nothing. ``pin_pages`` pins ``npages`` pages from the page-aligned
    ``va`` (faulting them in, writable when ``write``) and returns their physical
    addresses; on failure nothing stays pinned. ``unpin_pages`` drops one pin of each page.
    ``alive`` is false once the address space is gone (``mmget_not_zero`` fails: the
    process exited); ``phys`` is the memory the pinned pages' physical addresses are in.
    """

    @property
    def phys(self) -> PinnedMemory: ...

    def alive(self) -> bool: ...

    def read(self, va: int, n: int) -> bytes: ...

    def write(self, va: int, data: bytes) -> None: ...

    def pin_pages(self, va: int, npages: int, write: bool) -> list[int]: ...

    def unpin_pages(self, va: int, npages: int) -> None: ...


class FileTable(Protocol):
    """A process's open files as IOAS_MAP_FILE finds them: ``get(fd)`` is ``fget``
    (BadFileDescriptor, EBADF, when ``fd`` is not open) and gives the file's pages."""

    def get(self, fd: int) -> PageSource: ...


class UserMemory(PageSource, Protocol):
    """The user address space an iommufd file serves (pins fail with EFAULT), and the
    process's open files (``files``: the descriptors IOAS_MAP_FILE names)."""

    @property
    def files(self) -> FileTable: ...

    def pin_count(self, va: int) -> int:
        """Long-term pins of the page holding ``va``
        (``page_ref_count / GUP_PIN_COUNTING_BIAS``)."""
        ...


class MmUserMemory:
    """:class:`UserMemory` over a model process.

    Pins are counted per page here (the model's ``page->_refcount`` from
    ``pin_user_pages``): :attr:`pins` maps a page's user address to (physical address,
    pin count). A pinned page keeps the physical page it had when it was pinned.
    """

    __slots__ = ("_files", "_pins", "mm")

    def __init__(self, mm: Mm) -> None:
        self.mm = mm
        self._pins: dict[int, list[int]] = {}
        self._files = FdTable()

    @property
    def files(self) -> FdTable:
        """The process's open files."""
        return self._files

    @property
    def pins(self) -> dict[int, tuple[int, int]]:
        """Page user address -> (physical address, pin count), a copy."""
        return {va: (v[0], v[1]) for va, v in self._pins.items()}

    def pin_count(self, va: int) -> int:
        v = self._pins.get(va & ~_PAGE_MASK)
        return 0 if v is None else v[1]

    @property
    def phys(self) -> PhysicalMemory:
        return self.mm.mem

    def alive(self) -> bool:
        """A model process lives as long as its :class:`Mm`."""
        return True

    def read(self, va: int, n: int) -> bytes:
        return self.mm.read(va, n)

    def write(self, va: int, data: bytes) -> None:
        self.mm.write(va, data)

    def pin_pages(self, va: int, npages: int, write: bool) -> list[int]:
        """``pin_user_pages(FOLL_LONGTERM | (write ? FOLL_WRITE : 0))``: every page is
        checked against its area first, so an EFAULT pins (and faults in) nothing."""
        if va & _PAGE_MASK or npages <= 0:
            raise InvalidArgument(f"pin needs a page-aligned va and npages > 0, not {va:#x}")
        end = va + npages * PAGE_SIZE
        at = va
        while at < end:
            vma = self.mm.find_vma(at)
            if vma is None:
                raise BadAddress(f"cannot pin {at:#x}: not mapped")
            need = PROT_WRITE if write else PROT_READ | PROT_WRITE
            if not vma.prot & need:
                raise BadAddress(
                    f"cannot pin {at:#x}{' for write' if write else ''}: prot {vma.prot}"
                )
            at = vma.end
        out: list[int] = []
        try:
            for page in range(va, end, PAGE_SIZE):
                got = self._pins.get(page)
                if got is None:
                    # OutOfMemory from the fault is rolled back below.
                    if not self.mm.fault_in(page, write=write):  # pragma: no cover - checked
                        raise BadAddress(f"cannot fault in {page:#x}")
                    pa = self.mm.translate(page)
                    if pa is None:  # pragma: no cover - fault_in made it present
                        raise BadAddress(f"page {page:#x} is not present")
                    self._pins[page] = [pa, 1]
                    out.append(pa)
                else:
                    got[1] += 1
                    out.append(got[0])
        except BaseException:
            if out:
                self.unpin_pages(va, len(out))
            raise
        return out

    def unpin_pages(self, va: int, npages: int) -> None:
        for page in range(va, va + npages * PAGE_SIZE, PAGE_SIZE):
            got = self._pins.get(page)
            if got is None:
                raise InvalidArgument(f"page {page:#x} is not pinned")
        for page in range(va, va + npages * PAGE_SIZE, PAGE_SIZE):
            got = self._pins[page]
            got[1] -= 1
            if got[1] == 0:
                del self._pins[page]
