"""The server behind the preload library's ``/dev/iommu``.

One :class:`Server` is one kernel with CONFIG_IOMMUFD_TEST (:func:`open_selftest`: an IOMMU
core with the mock IOMMU registered) for the programs that connect to its socket. Each
``open("/dev/iommu")`` is a connection and a fresh :class:`IommufdFile` over that kernel's
core and mock driver; each file iommufd hands out is a connection too (see
:mod:`~iommusim.hostproc.fdtable`). The server is single-threaded: one call at a time, in
the order the program makes them, so the model stays deterministic.

Serving a call (``preload.c`` forwards it):

- ``ioctl``: the argument struct is read from the caller's memory -- its first u32 (``size``,
  or VFIO's ``argsz``), then up to ``size`` bytes, ending at the first page that cannot be
  read, which is how far the model's buffer reaches -- the model runs it with ``ictx.user``
  set to the caller's memory (``current->mm``), and the bytes it changed are written back.
  The VFIO ioctls that take a value get it as 8 little-endian bytes.
- ``mmap``: the model's physical pages of the region are copied into the program's fresh
  shared mapping; ``munmap`` of that mapping gives the region back.
- ``read``/``write``/``poll`` on a file: the model's file operations, data copied from or to
  the caller's buffer.
- EOF on a connection is the last close: ``close()`` of the iommufd, or a file's release.
  EOFs are taken before every call, so a program's ``close()`` is complete before its next
  call is served.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import selectors
import socket
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from iommusim.errors import ApiError, BadAddress, IoError, IommusimError, TooManyOpenFiles
from iommusim.hostproc import protocol as p
from iommusim.hostproc.fdtable import HostFdTable
from iommusim.hostproc.memory import FILE_SHIFT, SLOT_SHIFT, HostUserMemory, Mirror
from iommusim.hostproc.names import INT_ARG_IOCTLS, errno_name, ioctl_name
from iommusim.mem import SparseMemory
from iommusim.sw.iommufd.file import IommufdFile
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.pages import ACCOUNT_MM, IoPages
from iommusim.sw.iommufd.selftest import open_selftest
from iommusim.sw.pages import PageAllocator

__all__ = ["POOL_BASE", "Server", "Stats"]

#: Mirror slots of processes (see :mod:`~iommusim.hostproc.memory`); the next slot holds
#: shared files' pages, the last one the kernel's own (the mock vIOMMU's).
_SLOTS: Final = 14
_FILES_BASE: Final = _SLOTS << SLOT_SHIFT
POOL_BASE: Final = (_SLOTS + 1) << SLOT_SHIFT
_POOL_SIZE: Final = 64 << 20
#: The most bytes of an ioctl argument read (a ``size`` beyond reads as a fault there).
_ARG_MAX: Final = 1 << 20
#: Bytes read at least: the kernel copies its fixed struct (iommufd's ``min_size``, VFIO's
#: ``minsz``) before it looks at ``size``/``argsz``, so a small ``argsz`` is EINVAL, not EFAULT.
_ARG_MIN: Final = 256
_MAP_SHARED: Final = 0x01
_PROT_EXEC: Final = 0x4
#: ``DEFAULT_POLLMASK``: what poll says of a file without a poll operation (the iommufd).
_DEFAULT_POLLMASK: Final = 0x0001 | 0x0004 | 0x0040 | 0x0100
_CALL_NAMES: Final = {
    p.OP_MMAP: "mmap",
    p.OP_MUNMAP: "munmap",
    p.OP_READ: "read",
    p.OP_WRITE: "write",
    p.OP_POLL: "poll",
}


@dataclass
class Stats:
    """Calls served: ioctls, and failed ioctls by errno name."""

    ioctls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: Calls the model failed with an exception that is not an errno (a model bug), each
    #: answered EIO.
    model_errors: int = 0

    def summary(self) -> str:
        failed = sum(self.errors.values())
        line = f"iommusim: {self.ioctls} ioctls served, {failed} failed"
        if failed:
            line += ": " + ", ".join(f"{k} {n}" for k, n in sorted(self.errors.items()))
        if self.model_errors:
            line += f"; {self.model_errors} model errors (answered EIO)"
        return line


class _Conn:
    """A connection: an iommufd (``file``), or a file iommufd handed out (its socket
    ``name`` is its key in the fd table)."""

    __slots__ = ("file", "name", "sock")

    def __init__(self, sock: socket.socket, name: bytes) -> None:
        self.sock = sock
        self.name = name
        self.file: IommufdFile | None = None

    def callback(self, rep: bytes) -> p.Request:
        """Send a call-back and take the program's reply; EIO when the program is gone."""
        try:
            self.sock.send(rep)
            req = p.parse_request(self.sock.recv(1 << 16))
        except OSError as e:
            raise IoError(f"the program is gone: {e}") from e
        if req is None or req.op != p.OP_REPLY:
            raise IoError("the program broke the call-back protocol")
        return req


def _name(addr: str | bytes) -> bytes:
    """A socket's address as the program's ``getsockname`` gives its ``sun_path``."""
    return addr.encode() if isinstance(addr, str) else addr


class _Callbacks:
    """:class:`~iommusim.hostproc.fdtable.Caller` over the connection being served."""

    __slots__ = ("conn", "server")

    def __init__(self, server: Server, conn: _Conn) -> None:
        self.server = server
        self.conn = conn

    def install(self) -> tuple[int, bytes]:
        srv = self.server
        srv._token += 1
        token = srv._token
        # get_unused_fd_flags(O_CLOEXEC), as eventq.c and selftest.c ask for.
        fd = self.conn.callback(p.answer(0, op=p.REP_INSTALL, a=token, b=1)).a
        if fd >= 1 << 63:
            err = (1 << 64) - fd
            if err == _errno.EMFILE:
                raise TooManyOpenFiles("the program has no free fd")
            raise IoError(f"the program could not open a file socket: {errno_name(err)}")
        while True:
            conn = srv._accept()
            if conn is not None and conn.name in srv._tokens.pop(token, ()):
                return fd, conn.name

    def lookup(self, fd: int) -> bytes:
        return self.conn.callback(p.answer(0, op=p.REP_LOOKUP, a=fd & ((1 << 64) - 1))).payload

    def close_fd(self, fd: int) -> None:
        # The server's end of that socket sees EOF later; the file is released by then.
        self.conn.callback(p.answer(0, op=p.REP_CLOSE, a=fd & ((1 << 64) - 1)))


class Server:
    """A CONFIG_IOMMUFD_TEST kernel's ``/dev/iommu`` at the socket ``path``; ``trace``
    receives one line per ioctl (name, result)."""

    def __init__(self, path: str, trace: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.trace = trace
        self.stats = Stats()
        self.mem = SparseMemory()
        self.mirror = Mirror(self.mem, _FILES_BASE, 1 << (SLOT_SHIFT - FILE_SHIFT))
        self.pages = PageAllocator(self.mem, POOL_BASE, _POOL_SIZE)
        self.fds = HostFdTable()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(64)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self._conns: dict[int, _Conn] = {}
        self._users: dict[int, HostUserMemory] = {}
        self._kernel: IommufdFile | None = None
        self._token = 0
        #: token -> socket names announced with it (OP_FILE before the REPLY is read).
        self._tokens: dict[int, set[bytes]] = {}

    # ------------------------------------------------------------------ processes
    def user(self, pid: int) -> HostUserMemory:
        """The memory of process ``pid`` (its mirror slot reused from a dead process)."""
        got = self._users.get(pid)
        if got is not None:
            return got
        for old, u in list(self._users.items()):
            if not u.pinned_pages and not u.alive():
                del self._users[old]
        used = {u.base >> SLOT_SHIFT for u in self._users.values()}
        free = [s for s in range(_SLOTS) if s not in used]
        if not free:
            raise TooManyOpenFiles(f"more than {_SLOTS} processes use /dev/iommu at once")
        got = HostUserMemory(pid, self.mirror, free[0] << SLOT_SHIFT)
        self._users[pid] = got
        return got

    def _open(self, pid: int) -> IommufdFile:
        """``iommufd_fops_open``: a new context over the kernel's core and mock driver."""
        user = self.user(pid)
        if self._kernel is None:
            # The kernel: its core and mock driver (the context itself serves no one).
            self._kernel = open_selftest(user, self.pages)
        f = IommufdFile(user, None, self._kernel.core, selftest=self._kernel.selftest)
        f.fds = self.fds
        return f

    def accounting(self, pid: int) -> tuple[int, int]:
        """``mm->pinned_vm`` and ``mm->locked_vm`` as the model's iommufd keeps them for
        process ``pid`` (``iopt_pages_update_pinned``): every pinned page of the IOAS pages it
        is charged for (``pages->source_mm``), and of those, the ones charged per mm
        (IOPT_PAGES_ACCOUNT_MM). Each pages object counts its own pins, as the kernel's."""
        seen: dict[int, IoPages] = {}
        for conn in self._conns.values():
            if conn.file is None:
                continue
            for obj in conn.file.objects:
                if isinstance(obj, Ioas):
                    for area in obj.iopt.areas:
                        seen[id(area.pages)] = area.pages
        mine = [
            pg
            for pg in seen.values()
            if isinstance(pg.owner, HostUserMemory) and pg.owner.pid == pid
        ]
        pinned = sum(pg.npinned for pg in mine)
        locked = sum(pg.npinned for pg in mine if pg.account_mode == ACCOUNT_MM)
        return pinned, locked

    # ------------------------------------------------------------------ connections
    def _accept(self) -> _Conn | None:
        """Accept one connection and take its first record (OPEN or FILE)."""
        sock, addr = self.listener.accept()
        conn = _Conn(sock, _name(addr))
        try:
            req = p.parse_request(sock.recv(1 << 16))
        except OSError:
            req = None
        if req is None:
            sock.close()
            return None
        if req.op == p.OP_STATUS:
            pinned, locked = self.accounting(req.a)
            with contextlib.suppress(OSError):
                sock.send(p.answer(0, 0, p.REP_DONE, pinned, locked))
            sock.close()
            return None
        if req.op == p.OP_FILE:
            self._tokens.setdefault(req.a, set()).add(conn.name)
        elif req.op == p.OP_OPEN:
            try:
                conn.file = self._open(req.pid)
            except ApiError as e:
                with contextlib.suppress(OSError):
                    sock.send(p.answer(-1, e.errno))
                sock.close()
                return None
            try:
                sock.send(p.answer(0))
            except OSError:
                sock.close()
                conn.file.close()
                return None
        else:
            sock.close()
            return None
        self._conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ)
        return conn

    def _drop(self, conn: _Conn) -> None:
        """EOF: the program's last reference to the connection's file is gone."""
        self.sel.unregister(conn.sock)
        del self._conns[conn.sock.fileno()]
        conn.sock.close()
        try:
            if conn.file is not None:
                conn.file.close()
            f = self.fds.by_name(conn.name)
            if f is not None:
                self.fds.release(f)
        except IommusimError:
            self._model_error("release")

    def _take_eofs(self) -> None:
        for key, _ in self.sel.select(0):
            conn = self._conns.get(key.fd)
            if conn is None:
                continue
            try:
                peek = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                peek = b""
            if not peek:
                self._drop(conn)

    def serve_once(self, timeout: float | None = None) -> bool:
        """Serve what is ready (waiting up to ``timeout``); False when nothing was."""
        events = self.sel.select(timeout)
        for key, _ in events:
            if key.fileobj is self.listener:
                self._accept()
                continue
            conn = self._conns.get(key.fd)
            if conn is None:
                continue
            try:
                # An event may be stale: its fd was dropped and reused during this round.
                msg = conn.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                msg = b""
            if not msg:
                self._drop(conn)
                continue
            self._take_eofs()
            req = p.parse_request(msg)
            if req is not None:
                try:
                    rep = self._serve(conn, req)
                except IommusimError:
                    self._model_error(f"request {req.op}")
                    rep = p.answer(-1, _errno.EIO)
                try:
                    conn.sock.send(rep)
                except OSError:  # the program died in its call: its close follows
                    self._drop(conn)
        return bool(events)

    def _model_error(self, what: str) -> None:
        """A model bug: reported with its traceback, the program answered EIO."""
        self.stats.model_errors += 1
        print(f"iommusim: model error in {what}:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        self.sel.unregister(self.listener)
        self.listener.close()
        self.sel.close()

    def register(self, fileobj: int, events: int = selectors.EVENT_READ) -> None:
        """Wake :meth:`serve_once` on ``fileobj`` too (the runner's child pidfd)."""
        self.sel.register(fileobj, events)

    def unregister(self, fileobj: int) -> None:
        self.sel.unregister(fileobj)

    # ------------------------------------------------------------------ calls
    def _serve(self, conn: _Conn, req: p.Request) -> bytes:
        self.fds.caller = _Callbacks(self, conn)
        try:
            user = self.user(req.pid)
            user.begin_call()
            if req.op == p.OP_IOCTL:
                return self._ioctl(conn, user, req)
            ret = self._call(conn, user, req)
        except ApiError as e:
            self._trace_call(conn, req, f"-1 {errno_name(e.errno)}")
            return p.answer(-1, e.errno)
        finally:
            self.fds.caller = None
        self._trace_call(conn, req, str(ret))
        return p.answer(ret)

    def _trace_call(self, conn: _Conn, req: p.Request, result: str) -> None:
        if self.trace is None:
            return
        anon = self.fds.by_name(conn.name)
        what = "iommufd" if conn.file is not None else anon.name if anon else "released file"
        self.trace(f"[{req.pid}] {_CALL_NAMES.get(req.op, str(req.op))}({what}) = {result}")

    def _ioctl(self, conn: _Conn, user: HostUserMemory, req: p.Request) -> bytes:
        request, ptr = req.a, req.b
        if request in INT_ARG_IOCTLS:
            arg = bytearray(ptr.to_bytes(8, "little"))
            ptr = -1
        else:
            head = user.read_upto(ptr, 4)
            size = int.from_bytes(head, "little") if len(head) == 4 else 0
            want = max(_ARG_MIN, min(size, _ARG_MAX))
            arg = bytearray(user.read_upto(ptr, want) if head else b"")
        before = bytes(arg)
        ret, err = 0, 0
        try:
            if conn.file is None:
                # An anon-inode file without an ioctl operation (vfs_ioctl: -ENOTTY).
                err = _errno.ENOTTY
            else:
                conn.file.user = user  # copy_from_user works on current->mm
                ret = conn.file.ioctl(request, arg)
        except ApiError as e:
            err = e.errno
        except IommusimError:
            self._model_error(ioctl_name(request, before))
            err = _errno.EIO
        if ptr >= 0 and arg != before:
            try:
                _write_changes(user, ptr, before, arg)
            except BadAddress as e:
                err = err or e.errno
        self.stats.ioctls += 1
        if err:
            self.stats.errors[errno_name(err)] += 1
        if self.trace is not None:
            result = f"-1 {errno_name(err)}" if err else str(ret)
            self.trace(f"[{req.pid}] {ioctl_name(request, before)} = {result}")
        return p.answer(-1, err) if err else p.answer(ret)

    def _call(self, conn: _Conn, user: HostUserMemory, req: p.Request) -> int:
        f, anon = conn.file, self.fds.by_name(conn.name)
        if req.op == p.OP_MMAP:
            if f is None:
                raise _NoMmap("this file has no mmap operation")
            f.user = user
            base = f.mmap(req.a, req.b, bool(req.d & _MAP_SHARED), bool(req.c & _PROT_EXEC))
            user.write(int.from_bytes(req.payload[:8], "little"), self.mem.read(base, req.b))
            return 0
        if req.op == p.OP_MUNMAP:
            if f is not None:
                f.munmap(req.a)
            return 0
        if req.op == p.OP_POLL:
            return anon.poll() if anon is not None else _DEFAULT_POLLMASK
        if req.op in (p.OP_READ, p.OP_WRITE):
            if anon is None:
                # The iommufd has neither read nor write (vfs_read/vfs_write: EINVAL).
                raise _NoReadWrite("the iommufd has no read or write operation")
            if req.op == p.OP_READ:
                data = anon.read(req.a)
                user.write(req.b, data)
                return len(data)
            return anon.write(user.read_upto(req.b, min(req.a, _ARG_MAX)))
        raise _NoReadWrite(f"unknown request {req.op}")


class _NoMmap(ApiError):
    errno = _errno.ENODEV


class _NoReadWrite(ApiError):
    errno = _errno.EINVAL


def _write_changes(user: HostUserMemory, ptr: int, before: bytes, after: bytearray) -> None:
    """``copy_to_user`` of the bytes the model changed, run by run."""
    i, n = 0, len(after)
    while i < n:
        if after[i] == before[i]:
            i += 1
            continue
        j = i
        while j < n and after[j] != before[j]:
            j += 1
        user.write(ptr + i, bytes(after[i:j]))
        i = j
