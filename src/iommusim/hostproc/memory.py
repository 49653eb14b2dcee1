"""User memory of a real host process, for an iommufd the model serves.

:class:`ProcessMemory` copies to and from another process with ``process_vm_readv`` /
``process_vm_writev`` -- the ``copy_from_user`` / ``copy_to_user`` of the ioctl that process
issued. Faults are per page: a copy stops at the first page the process cannot read (or
write), as the kernel's copy stops at the faulting page; the permission check is the
kernel's own (no ``FOLL_FORCE``: a read-only mapping cannot be written).

:class:`HostUserMemory` adds the pins iommufd takes (``pin_user_pages``). The model needs a
physical page in *its* memory for every pinned user page; a host process's page frames are
out of reach (``/proc/PID/pagemap`` hides them from unprivileged users), so pinned pages are
*mirrored* (:class:`Mirror`, one per server): a private page ``va`` of a process is
model-physical page ``base + va``, ``base`` the process's slot (``slot << 47``, below the
mock's 51-bit output addresses); a page of a shared mapping (``MAP_SHARED`` anonymous memory,
a memfd, a shared file) is its file's page, ``file base + offset``, whichever process maps it
at whatever address. The semantics:

- Identity: a pinned page keeps its physical address for as long as it stays pinned --
  through copy-on-write after a read-only pin (the kernel's "unshare") -- and a temporary
  pin of a pinned page returns the same address, so ``MD_CHECK_MAP``'s comparison of the
  domain's pages with the user VA's holds; two mappings of one shared page are one page.
  Runs contiguous in the process (or in the file) are contiguous in the mirror: every
  mapping behaves as if backed by huge pages aligned as its addresses (offsets) are.
- Contents: a page's bytes are copied into the mirror when its first pin is taken (the
  snapshot a device would DMA from); CPU-side copies iommufd makes later (ACCESS_RW, the
  access ``rw`` fast and slow paths) read and write the process itself, so they see every
  later write of the program, as the kernel's ``copy_to_user``/``kmap`` of the pinned page
  does. Device DMA into the mirror is not copied back to the process.
- Shared memory outlives its mapper: a pinned page of a shared mapping keeps its backing
  file open from ``/proc/PID/map_files``, and a copy the process can no longer serve (it has
  exited, as in the selftest's ``fork_gone``) goes to that file -- the same pages the kernel
  would copy from, which every other process sharing them sees.
- Pins: counted per physical page across processes; ``pin_count`` is the ``MD_CHECK_REFS``
  count. A write pin of a page the process cannot write is EFAULT (checked by rewriting the
  page's own bytes, which breaks copy-on-write as ``FOLL_WRITE`` does), and so is a pin of an
  unmapped page.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Final, NamedTuple

from iommusim.errors import BadAddress, InvalidArgument
from iommusim.hostproc.files import HostFiles
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PAGE_SIZE

__all__ = ["FILE_SHIFT", "SLOT_SHIFT", "HostUserMemory", "Mirror", "ProcessMemory"]

_MASK: Final = PAGE_SIZE - 1
#: Bits of user address below each process's mirror slot (x86-64/arm64 48-bit VA: 47 user).
SLOT_SHIFT: Final = 47
#: Bytes of each shared file's range in the mirror (64 GiB).
FILE_SHIFT: Final = 36
#: ``UIO_MAXIOV``: the most iovecs one call takes.
_IOV_MAX: Final = 1024


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


_libc = ctypes.CDLL(None, use_errno=True)
_vm_readv = _libc.process_vm_readv
_vm_writev = _libc.process_vm_writev
for _f in (_vm_readv, _vm_writev):
    _f.restype = ctypes.c_ssize_t
    _f.argtypes = (
        ctypes.c_int,
        ctypes.POINTER(_Iovec),
        ctypes.c_ulong,
        ctypes.POINTER(_Iovec),
        ctypes.c_ulong,
        ctypes.c_ulong,
    )


class ProcessMemory:
    """The address space of process ``pid``."""

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _transfer(self, va: int, buf: ctypes.Array[ctypes.c_char], write: bool) -> int:
        """Copy ``len(buf)`` bytes at ``va``; returns how many were copied before the first
        page that faulted."""
        n = len(buf)
        if va < 0 or va + n > 1 << 64:
            return 0
        done = 0
        call = _vm_writev if write else _vm_readv
        base = ctypes.addressof(buf)
        while done < n:
            # One remote iovec per page: a fault ends the copy at that page, exactly.
            pieces: list[tuple[int, int]] = []
            at = va + done
            while at < va + n and len(pieces) < _IOV_MAX:
                end = min(va + n, (at & ~_MASK) + PAGE_SIZE)
                pieces.append((at, end - at))
                at = end
            remote = (_Iovec * len(pieces))(*[_Iovec(a, m) for a, m in pieces])
            want = at - (va + done)
            local = _Iovec(base + done, want)
            got: int = call(self.pid, ctypes.byref(local), 1, remote, len(pieces), 0)
            if got <= 0:
                return done
            done += got
            if got < want:
                return done
        return done

    def read_upto(self, va: int, n: int) -> bytes:
        """The bytes at ``va`` up to ``n``, ending at the first page that cannot be read."""
        if not n:
            return b""
        buf = ctypes.create_string_buffer(n)
        got = self._transfer(va, buf, False)
        return buf.raw[:got]

    def read(self, va: int, n: int) -> bytes:
        """``copy_from_user``: EFAULT unless every byte can be read."""
        got = self.read_upto(va, n)
        if len(got) != n:
            raise BadAddress(f"pid {self.pid}: cannot read {n} bytes at {va:#x}")
        return got

    def write(self, va: int, data: bytes) -> None:
        """``copy_to_user``: EFAULT unless every byte can be written (the bytes before the
        faulting page are written, as the kernel's copy leaves them)."""
        if not data:
            return
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        if self._transfer(va, buf, True) != len(data):
            raise BadAddress(f"pid {self.pid}: cannot write {len(data)} bytes at {va:#x}")

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - a process of another user
            return True
        return True


class Mirror:
    """The model-physical pages host user pages are mirrored at (see the module docstring):
    ``mem`` from each process's slot, shared files' pages from ``file_base`` on, and the
    pins of every mirrored page."""

    __slots__ = ("_files", "file_base", "file_limit", "mem", "pins")

    def __init__(self, mem: PhysicalMemory, file_base: int, nfiles: int) -> None:
        self.mem = mem
        self.file_base = file_base
        self.file_limit = nfiles
        #: Physical address -> pins, over every process.
        self.pins: dict[int, int] = {}
        self._files: dict[tuple[str, int], int] = {}  # (device, inode) -> file index

    def file_pa(self, dev: str, inode: int, offset: int) -> int | None:
        """The page at ``offset`` of file (``dev``, ``inode``); None past the ranges."""
        index = self._files.setdefault((dev, inode), len(self._files))
        if index >= self.file_limit or offset >> FILE_SHIFT:
            return None
        return self.file_base + (index << FILE_SHIFT) + offset


class _Vma(NamedTuple):
    """A line of ``/proc/PID/maps``."""

    lo: int
    hi: int
    writable: bool
    shared: bool
    offset: int
    dev: str
    inode: int
    entry: str  # its name in /proc/PID/map_files


class _Backing:
    """An open backing file of a shared mapping, used by ``pages`` pinned pages."""

    __slots__ = ("fd", "pages")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pages = 0


class _PinnedView:
    """The :class:`~iommusim.sw.iommufd.user.PinnedMemory` of one process: a pinned page's
    bytes as iommufd's CPU copies see them (``kmap`` of the pinned page) -- the process's own
    page while it can serve the copy (or the shared file behind it), the mirror else."""

    __slots__ = ("_user",)

    def __init__(self, user: HostUserMemory) -> None:
        self._user = user

    def _pieces(self, pa: int, n: int) -> list[tuple[int, int, int | None]]:
        """(pa, length, va or None) page by page."""
        by_pa = {p: va for va, (p, _) in self._user._pins.items()}
        out: list[tuple[int, int, int | None]] = []
        at = pa
        while at < pa + n:
            page = at & ~_MASK
            chunk = min(pa + n - at, page + PAGE_SIZE - at)
            va = by_pa.get(page)
            out.append((at, chunk, None if va is None else va + (at - page)))
            at += chunk
        return out

    def read(self, pa: int, n: int) -> bytes:
        u = self._user
        out = bytearray()
        for at, chunk, va in self._pieces(pa, n):
            data = u.mirror.mem.read(at, chunk)
            if va is not None:
                # Gone with its process: the mirror's snapshot is what is left.
                with contextlib.suppress(BadAddress):
                    data = u.read(va, chunk)
            out += data
        return bytes(out)

    def write(self, pa: int, data: bytes) -> None:
        u = self._user
        done = 0
        for at, chunk, va in self._pieces(pa, len(data)):
            piece = data[done : done + chunk]
            u.mirror.mem.write(at, piece)
            if va is not None:
                with contextlib.suppress(BadAddress):
                    u.write(va, piece)
            done += chunk


class HostUserMemory(ProcessMemory):
    """:class:`~iommusim.sw.iommufd.user.UserMemory` of process ``pid``, its pinned private
    pages mirrored from physical address ``base`` of ``mirror`` (see the module
    docstring)."""

    __slots__ = ("_backed", "_calls", "_fdtable", "_files", "_maps", "_pins", "base", "mirror")

    def __init__(self, pid: int, mirror: Mirror, base: int) -> None:
        super().__init__(pid)
        self.mirror = mirror
        self.base = base
        self._pins: dict[int, tuple[int, int]] = {}  # page va -> (pa, this process's pins)
        self._files: dict[str, _Backing] = {}  # map_files entry -> its open file
        self._backed: dict[int, tuple[str, int]] = {}  # pinned page va -> (entry, offset)
        self._maps: list[_Vma] | None = None  # /proc/PID/maps during one call
        self._calls = False
        self._fdtable = HostFiles(pid, mirror)

    @property
    def phys(self) -> _PinnedView:
        return _PinnedView(self)

    @property
    def files(self) -> HostFiles:
        """The program's own descriptors, for IOAS_MAP_FILE (:mod:`~iommusim.hostproc.files`)."""
        return self._fdtable

    def begin_call(self) -> None:
        """A call of the process begins: its mappings are read once for the call (they
        cannot change while the process waits in the syscall). Without it, every lookup
        reads them afresh."""
        self._calls = True
        self._maps = None

    def _read_maps(self) -> list[_Vma]:
        out = []
        try:
            with open(f"/proc/{self.pid}/maps", encoding="ascii", errors="replace") as f:
                for line in f:
                    rng, perms, off, dev, inode = line.split()[:5]
                    lo, hi = (int(x, 16) for x in rng.split("-"))
                    shared = perms[3] == "s"
                    out.append(
                        _Vma(lo, hi, perms[1] == "w", shared, int(off, 16), dev, int(inode), rng)
                    )
        except OSError:
            return []
        return out

    def _vmas(self, va: int, end: int) -> list[_Vma]:
        """The mappings overlapping ``[va, end)``."""
        maps = self._maps if self._maps is not None else self._read_maps()
        if self._calls:
            self._maps = maps
        return [v for v in maps if v.lo < end and va < v.hi]

    def _pa(self, page: int, vmas: list[_Vma]) -> int:
        """Where ``page`` is mirrored: its pinned address, its shared file's, or its own."""
        got = self._pins.get(page)
        if got is not None:
            return got[0]
        for v in vmas:
            if v.lo <= page < v.hi and v.shared and v.inode:
                pa = self.mirror.file_pa(v.dev, v.inode, v.offset + page - v.lo)
                if pa is not None:
                    return pa
        return self.base + page

    def _back(self, va: int, npages: int, vmas: list[_Vma]) -> None:
        """Keep the backing files of the newly pinned shared pages in ``[va, +npages)``."""
        end = va + npages * PAGE_SIZE
        for v in vmas:
            if not v.shared:
                continue
            backing = self._files.get(v.entry)
            if backing is None:
                try:
                    fd = os.open(
                        f"/proc/{self.pid}/map_files/{v.entry}", os.O_RDWR if v.writable else 0
                    )
                except OSError:  # no CAP_SYS_ADMIN: the process itself serves every copy
                    continue
                backing = self._files[v.entry] = _Backing(fd)
            for page in range(max(va, v.lo), min(end, v.hi), PAGE_SIZE):
                if page not in self._backed and self._pins[page][1] == 1:
                    self._backed[page] = (v.entry, v.offset + page - v.lo)
                    backing.pages += 1

    def _unback(self, page: int) -> None:
        got = self._backed.pop(page, None)
        if got is not None:
            backing = self._files[got[0]]
            backing.pages -= 1
            if not backing.pages:
                os.close(backing.fd)
                del self._files[got[0]]

    def _backed_copy(self, va: int, data: bytearray, done: int, write: bool) -> int:
        """Go on with a copy the process stopped at ``va + done`` through the backing
        files of pinned shared pages; returns how far it got."""
        while done < len(data):
            at = va + done
            got = self._backed.get(at & ~_MASK)
            if got is None:
                return done
            n = min(len(data) - done, PAGE_SIZE - (at & _MASK))
            fd, off = self._files[got[0]].fd, got[1] + (at & _MASK)
            if write:
                os.pwrite(fd, data[done : done + n], off)
            else:
                chunk = os.pread(fd, n, off)
                if len(chunk) != n:
                    return done
                data[done : done + n] = chunk
            done += n
        return done

    def read(self, va: int, n: int) -> bytes:
        got = self.read_upto(va, n)
        if len(got) == n:
            return got
        buf = bytearray(got) + bytes(n - len(got))
        if not self._backed or self._backed_copy(va, buf, len(got), False) != n:
            raise BadAddress(f"pid {self.pid}: cannot read {n} bytes at {va:#x}")
        return bytes(buf)

    def write(self, va: int, data: bytes) -> None:
        try:
            super().write(va, data)
        except BadAddress:
            if not self._backed or self._backed_copy(va, bytearray(data), 0, True) != len(data):
                raise

    @property
    def pinned_pages(self) -> int:
        return len(self._pins)

    def pin_count(self, va: int) -> int:
        """The pins of the page ``va`` maps, by any process."""
        page = va & ~_MASK
        pa = self._pa(page, [] if page in self._pins else self._vmas(page, page + PAGE_SIZE))
        return self.mirror.pins.get(pa, 0)

    def pin_pages(self, va: int, npages: int, write: bool) -> list[int]:
        """``pin_user_pages``: EFAULT, nothing pinned, unless every page is mapped (and
        writable for ``write``); the first pin of a page snapshots it into the mirror."""
        if va & _MASK or npages <= 0:
            raise InvalidArgument(f"pin needs a page-aligned va and npages > 0, not {va:#x}")
        data = self.read(va, npages * PAGE_SIZE)
        if write:
            self.write(va, data)
        end = va + npages * PAGE_SIZE
        vmas = self._vmas(va, end)
        out = []
        for i, page in enumerate(range(va, end, PAGE_SIZE)):
            pa = self._pa(page, vmas)
            pins = self.mirror.pins.get(pa, 0)
            if not pins:
                self.mirror.mem.write(pa, data[i * PAGE_SIZE : (i + 1) * PAGE_SIZE])
            self.mirror.pins[pa] = pins + 1
            self._pins[page] = (pa, self._pins.get(page, (pa, 0))[1] + 1)
            out.append(pa)
        self._back(va, npages, vmas)
        return out

    def unpin_pages(self, va: int, npages: int) -> None:
        pages = range(va, va + npages * PAGE_SIZE, PAGE_SIZE)
        if any(p not in self._pins for p in pages):
            raise InvalidArgument(f"pages {va:#x} + {npages} are not all pinned")
        for p in pages:
            pa, mine = self._pins[p]
            self.mirror.pins[pa] -= 1
            if not self.mirror.pins[pa]:
                del self.mirror.pins[pa]
            if mine == 1:
                del self._pins[p]
                self._unback(p)
            else:
                self._pins[p] = (pa, mine - 1)
