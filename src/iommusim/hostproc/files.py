"""The host program's own files for IOMMU_IOAS_MAP_FILE (a memfd, or any file it has open).

IOAS_MAP_FILE names a descriptor of the calling process. :class:`HostFiles` resolves it
through ``/proc/PID/fd/N`` (EBADF when the program has no such descriptor) to a
:class:`HostFileSource`: the file read and written by offset (``pread``/``pwrite``), whose
pinned pages are the mirror's pages of that file -- the same model-physical pages the
program's shared mappings of the file are mirrored at (:meth:`Mirror.file_pa`, keyed by the
device and inode ``/proc/PID/maps`` shows), so a mapping and a MAP_FILE of one memfd are one
page to the IOMMU. A page's bytes are copied into the mirror when its first pin is taken; the
CPU copies iommufd makes later read the file itself (:attr:`HostFileSource.phys`). A pin past
the end of the file is EINVAL, as ``memfd_pin_folios`` refuses it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from iommusim.errors import BadFileDescriptor, InvalidArgument
from iommusim.sw.pages import PAGE_SIZE

if TYPE_CHECKING:
    from iommusim.hostproc.memory import Mirror

__all__ = ["HostFileSource", "HostFiles"]

_MASK: Final = PAGE_SIZE - 1


def _dev(st_dev: int) -> str:
    """The device as ``/proc/PID/maps`` prints it (``show_map_vma``: ``%02x:%02x``)."""
    return f"{os.major(st_dev):02x}:{os.minor(st_dev):02x}"


class _FileView:
    """The pinned pages of one file as iommufd's CPU copies see them: the file itself."""

    __slots__ = ("_src",)

    def __init__(self, src: HostFileSource) -> None:
        self._src = src

    def _offset(self, pa: int) -> int:
        page = pa & ~_MASK
        for off, (p, _) in self._src.pins.items():
            if p == page:
                return off + (pa - page)
        raise InvalidArgument(f"{pa:#x} is no pinned page of the file")

    def read(self, pa: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            at = pa + len(out)
            chunk = min(n - len(out), PAGE_SIZE - (at & _MASK))
            out += self._src.read(self._offset(at), chunk)
        return bytes(out)

    def write(self, pa: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            at = pa + done
            chunk = min(len(data) - done, PAGE_SIZE - (at & _MASK))
            self._src.write(self._offset(at), data[done : done + chunk])
            done += chunk


class HostFileSource:
    """A :class:`~iommusim.sw.iommufd.user.PageSource` over an open host file."""

    __slots__ = ("dev", "fd", "inode", "mirror", "pins")

    def __init__(self, path: str, mirror: Mirror) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR)
        except PermissionError:
            self.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self.fd)
        self.dev = _dev(st.st_dev)
        self.inode = st.st_ino
        self.mirror = mirror
        #: Page offset -> (mirror address, pins taken through this source).
        self.pins: dict[int, tuple[int, int]] = {}

    def __del__(self) -> None:
        os.close(self.fd)

    @property
    def phys(self) -> _FileView:
        return _FileView(self)

    def alive(self) -> bool:
        return True

    def read(self, va: int, n: int) -> bytes:
        return os.pread(self.fd, n, va).ljust(n, b"\0")

    def write(self, va: int, data: bytes) -> None:
        os.pwrite(self.fd, data, va)

    def pin_pages(self, va: int, npages: int, write: bool) -> list[int]:
        """The file's pages from offset ``va``: EINVAL past its end (or past the mirror's
        file range); the first pin of a page copies it into the mirror."""
        end = va + npages * PAGE_SIZE
        if va & _MASK or npages <= 0 or end > os.fstat(self.fd).st_size:
            raise InvalidArgument(f"pages {va:#x}+{npages} are not all in the file")
        out: list[int] = []
        for off in range(va, end, PAGE_SIZE):
            pa = self.mirror.file_pa(self.dev, self.inode, off)
            if pa is None:
                raise InvalidArgument(f"file offset {off:#x} is beyond the mirror's range")
            out.append(pa)
        for off, pa in zip(range(va, end, PAGE_SIZE), out, strict=True):
            pins = self.mirror.pins.get(pa, 0)
            if not pins:
                self.mirror.mem.write(pa, self.read(off, PAGE_SIZE))
            self.mirror.pins[pa] = pins + 1
            self.pins[off] = (pa, self.pins.get(off, (pa, 0))[1] + 1)
        return out

    def unpin_pages(self, va: int, npages: int) -> None:
        for off in range(va, va + npages * PAGE_SIZE, PAGE_SIZE):
            pa, mine = self.pins[off]
            self.mirror.pins[pa] -= 1
            if not self.mirror.pins[pa]:
                del self.mirror.pins[pa]
            if mine == 1:
                del self.pins[off]
            else:
                self.pins[off] = (pa, mine - 1)


class HostFiles:
    """The descriptors of process ``pid`` that IOAS_MAP_FILE may name."""

    __slots__ = ("mirror", "pid")

    def __init__(self, pid: int, mirror: Mirror) -> None:
        self.pid = pid
        self.mirror = mirror

    def get(self, fd: int) -> HostFileSource:
        """``fget``: EBADF when the program has no descriptor ``fd``."""
        path = f"/proc/{self.pid}/fd/{fd}"
        if fd < 0 or not os.path.exists(path):
            raise BadFileDescriptor(f"pid {self.pid} has no fd {fd}")
        return HostFileSource(path, self.mirror)
