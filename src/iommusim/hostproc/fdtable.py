"""The host process's fd table, as the model's :class:`~iommusim.sw.iommufd.fds.FdTable`.

The files iommufd hands out (fault queues, vEVENTQs, selftest accesses) are fds of the real
program: a socket per file, connected to the server. Their numbers are the program's own --
:meth:`HostFdTable.install` has the program open the socket at its lowest free fd, as
``get_unused_fd_flags`` would -- and a number an ioctl names is looked up in the program's
table at that moment (which socket is it?), so ``dup``, ``close`` and ``fork`` by the
program mean what they mean to the kernel. The file's release runs when the server sees the
last reference to the socket go (EOF), or when the model itself closes the fd.

One table serves the whole server: names are unique across processes, and a lookup asks the
process whose ioctl is being served (:attr:`HostFdTable.caller`).
"""

from __future__ import annotations

from typing import Protocol

from iommusim.errors import BadFileDescriptor, ModelError
from iommusim.sw.iommufd.fds import AnonFile, FdTable, FileOps

__all__ = ["Caller", "HostFdTable"]


class Caller(Protocol):
    """The program whose call is being served, as the fd table needs it."""

    def install(self) -> tuple[int, bytes]:
        """Open a file socket at the program's lowest free fd: (fd, socket name)."""
        ...

    def lookup(self, fd: int) -> bytes:
        """The name of the socket at ``fd``; empty when ``fd`` is not one of ours."""
        ...

    def close_fd(self, fd: int) -> None:
        """Close ``fd`` in the program."""
        ...


class HostFdTable(FdTable):
    """Socket name -> :class:`AnonFile`; numbers are the caller's."""

    __slots__ = ("_by_name", "caller")

    def __init__(self) -> None:
        super().__init__()
        self._by_name: dict[bytes, AnonFile] = {}
        #: Set by the server around each call it serves.
        self.caller: Caller | None = None

    def _caller(self) -> Caller:
        if self.caller is None:
            raise ModelError("the host fd table is used outside a call")
        return self.caller

    def install(self, name: str, ops: FileOps) -> AnonFile:
        """The program opens the file's socket (EMFILE when it cannot)."""
        fd, sockname = self._caller().install()
        f = AnonFile(name, ops, self, fd)
        self._by_name[sockname] = f
        return f

    def by_name(self, sockname: bytes) -> AnonFile | None:
        return self._by_name.get(sockname)

    def __getitem__(self, fd: int) -> AnonFile:
        f = self._by_name.get(self._caller().lookup(fd))
        if f is None:
            raise BadFileDescriptor(f"fd {fd} is not an iommufd file of the program")
        f.fd = fd
        return f

    def __contains__(self, fd: object) -> bool:
        return isinstance(fd, int) and self._by_name.get(self._caller().lookup(fd)) is not None

    def __len__(self) -> int:
        return len(self._by_name)

    def fds(self) -> list[int]:
        """The numbers the files were installed at (or last looked up by)."""
        return sorted(f.fd for f in self._by_name.values())

    def check_open(self, f: AnonFile) -> None:
        if f not in self._by_name.values():
            raise BadFileDescriptor(f"fd {f.fd} ({f.name}) is closed")

    def close(self, fd: int) -> None:
        """The model closes ``fd`` (undoing an install): the program closes it, the file's
        release runs."""
        f = self[fd]
        self._caller().close_fd(fd)
        self.release(f)

    def release(self, f: AnonFile) -> None:
        """The last reference to ``f``'s socket is gone: its release runs once."""
        for k, v in list(self._by_name.items()):
            if v is f:
                del self._by_name[k]
                f.ops.fops_release()
