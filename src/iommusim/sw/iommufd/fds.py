"""The file descriptors iommufd hands out: anon-inode files in a process's fd table.

IOMMU_FAULT_QUEUE_ALLOC and IOMMU_VEVENTQ_ALLOC return a file descriptor
(``anon_inode_getfile`` + ``get_unused_fd_flags`` + ``fd_install``, Linux 7.3
``drivers/iommu/iommufd/eventq.c``). :class:`FdTable` is the model's process fd table for them:
numbers are taken lowest free first, as ``alloc_fd`` does, from :data:`FD_BASE` (3: 0-2 are
the standard streams) below :data:`FD_LIMIT` (1024, the default ``RLIMIT_NOFILE``); a full
table is EMFILE.

Each :class:`AnonFile` is byte-exact to the syscalls: :meth:`AnonFile.read` returns the bytes
``read(2)`` would copy to the buffer, :meth:`AnonFile.write` takes the bytes ``write(2)`` would
copy from it and returns the count, and :meth:`AnonFile.poll` the ``revents`` mask. ``offset``
is the ``*ppos`` the file operation sees: ``read(2)``/``write(2)`` pass the file position,
which these files never move from 0. ``pread(2)``/``pwrite(2)`` never reach the file
operation (an anon-inode file lacks FMODE_PREAD/FMODE_PWRITE): :meth:`AnonFile.pread` and
:meth:`AnonFile.pwrite` answer as ``ksys_pread64``/``ksys_pwrite64`` do (EINVAL for a negative
position, else ESPIPE). The VFS checks ``vfs_read``/``vfs_write`` make before the file
operation come first (``fs/read_write.c``): a file without a write operation (the vEVENTQ) is
EINVAL for write, a count above ``SSIZE_MAX`` is EINVAL, and a count above ``MAX_RW_COUNT`` is
cut to it.

:meth:`AnonFile.close` is ``close(2)`` of its descriptor: the file's release runs (for an
event queue it drops the references the file held on its object and on the iommufd context).
"""

from __future__ import annotations

from typing import Final, NoReturn, Protocol

from iommusim.errors import (
    BadFileDescriptor,
    IllegalSeek,
    InvalidArgument,
    TooManyOpenFiles,
)
from iommusim.sw.core.ida import Ida

__all__ = [
    "FD_BASE",
    "FD_LIMIT",
    "MAX_RW_COUNT",
    "POLLIN",
    "POLLOUT",
    "POLLRDNORM",
    "AnonFile",
    "FdTable",
    "FileOps",
]

#: The lowest number the table hands out (0, 1 and 2 are stdin, stdout and stderr).
FD_BASE: Final = 3
#: One past the highest number: the default ``RLIMIT_NOFILE`` soft limit.
FD_LIMIT: Final = 1024

# include/uapi/asm-generic/poll.h
POLLIN: Final = 0x0001
POLLOUT: Final = 0x0004
POLLRDNORM: Final = 0x0040

_PAGE_MASK: Final = ~0xFFF
#: ``MAX_RW_COUNT`` (include/linux/fs.h): ``INT_MAX & PAGE_MASK``.
MAX_RW_COUNT: Final = ((1 << 31) - 1) & _PAGE_MASK
_SSIZE_MAX: Final = (1 << 63) - 1
_SIZE_MAX: Final = (1 << 64) - 1
_LOFF_MIN: Final = -(1 << 63)
_LOFF_MAX: Final = (1 << 63) - 1


class FileOps(Protocol):
    """``struct file_operations`` of an anon-inode file, called after the VFS checks; a
    file without a write operation answers EINVAL from ``fops_write``. ``fops_release``
    runs once, at the close."""

    def fops_read(self, count: int, ppos: int) -> bytes: ...

    def fops_write(self, data: bytes, ppos: int) -> int: ...

    def fops_poll(self) -> int: ...

    def fops_release(self) -> None: ...


def _check_count(count: int, ppos: int) -> int:
    """``rw_verify_area`` then the ``MAX_RW_COUNT`` cut, for a ``size_t`` count."""
    if not 0 <= count <= _SIZE_MAX or not _LOFF_MIN <= ppos <= _LOFF_MAX:
        raise InvalidArgument(f"count {count} / position {ppos} is not a size_t / loff_t")
    if count > _SSIZE_MAX:
        raise InvalidArgument(f"count {count:#x} is above SSIZE_MAX")
    if ppos < 0 or ppos + count > _LOFF_MAX:
        raise InvalidArgument(f"position {ppos} (+ count {count}) is out of range")
    return min(count, MAX_RW_COUNT)


class AnonFile:
    """An open anon-inode file (``anon_inode_getfile(name, fops, priv, O_RDWR)``) installed
    at :attr:`fd` of :attr:`table`."""

    __slots__ = ("fd", "name", "ops", "table")

    def __init__(self, name: str, ops: FileOps, table: FdTable, fd: int) -> None:
        self.name = name
        self.ops = ops
        self.table = table
        self.fd = fd

    def read(self, count: int, offset: int = 0) -> bytes:
        """``read(fd, buf, count)``: the bytes copied to ``buf``."""
        self.table.check_open(self)
        return self.ops.fops_read(_check_count(count, offset), offset)

    def write(self, data: bytes, offset: int = 0) -> int:
        """``write(fd, data, len(data))``: the count written."""
        self.table.check_open(self)
        n = _check_count(len(data), offset)
        return self.ops.fops_write(bytes(data[:n]), offset)

    def pread(self, count: int, offset: int) -> bytes:
        """``pread(fd, buf, count, offset)``: EINVAL for a negative offset, else ESPIPE."""
        self._positioned(offset)

    def pwrite(self, data: bytes, offset: int) -> int:
        """``pwrite(fd, data, len(data), offset)``: as :meth:`pread`."""
        self._positioned(offset)

    def _positioned(self, offset: int) -> NoReturn:
        if offset < 0:
            raise InvalidArgument(f"position {offset} is negative")
        self.table.check_open(self)
        raise IllegalSeek(f"{self.name} is not positionable (no FMODE_PREAD/FMODE_PWRITE)")

    def poll(self) -> int:
        """``poll()``'s ``revents`` for this file (POLLIN | POLLRDNORM, POLLOUT)."""
        self.table.check_open(self)
        return self.ops.fops_poll()

    def close(self) -> None:
        """``close(fd)``: EBADF when already closed."""
        self.table.close(self.fd)

    def __repr__(self) -> str:
        return f"<AnonFile fd={self.fd} {self.name}>"


class FdTable:
    """File descriptor number -> :class:`AnonFile`, lowest free number first."""

    __slots__ = ("_files", "_ida")

    def __init__(self, base: int = FD_BASE, limit: int = FD_LIMIT) -> None:
        self._ida = Ida(base, limit - 1)
        self._files: dict[int, AnonFile] = {}

    def install(self, name: str, ops: FileOps) -> AnonFile:
        """``get_unused_fd_flags`` + ``fd_install``: EMFILE, nothing changed, when every
        number is taken."""
        fd = self._ida.alloc()
        if fd is None:
            raise TooManyOpenFiles(f"all of fds {self._ida.lo}..{self._ida.hi} are open")
        f = AnonFile(name, ops, self, fd)
        self._files[fd] = f
        return f

    def __getitem__(self, fd: int) -> AnonFile:
        """The open file at ``fd``; EBADF when none is."""
        f = self._files.get(fd)
        if f is None:
            raise BadFileDescriptor(f"fd {fd} is not open")
        return f

    def __contains__(self, fd: object) -> bool:
        return fd in self._files

    def __len__(self) -> int:
        return len(self._files)

    def fds(self) -> list[int]:
        """Open numbers, ascending."""
        return sorted(self._files)

    def check_open(self, f: AnonFile) -> None:
        if self._files.get(f.fd) is not f:
            raise BadFileDescriptor(f"fd {f.fd} ({f.name}) is closed")

    def close(self, fd: int) -> None:
        """``close(fd)``: EBADF when not open; else the number is free again and the file's
        release runs."""
        f = self[fd]
        del self._files[fd]
        self._ida.free(fd)
        f.ops.fops_release()
