"""An iommufd opened by a model process, and a snapshot of everything an ioctl may change.

``env`` is an :class:`Env`: the process (``mm``), its user memory with pin counts
(``user``), the open file and its Pythonic face (``fd``), and a 1 MiB read-write buffer
(``buf``) plus a 64 KiB read-only one (``ro``) to map. ``env.snapshot()`` captures the
object table (ids, types, users), every IOAS's areas (IOVA, pages object, start byte, prot),
allowed and reserved ranges, alignment, large-page setting, the pages' references and pins,
the account mode and the user's pin counts: a failed ioctl must leave all of it unchanged.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest

from iommusim.errors import ApiError
from iommusim.mem import SparseMemory
from iommusim.sw.iommufd import Ioas, Iommufd, IommufdParams, MmUserMemory, uapi
from iommusim.sw.mm import PROT_READ, PROT_WRITE, Mm
from iommusim.sw.pages import PageAllocator

POOL: Final = 0x8000_0000
BUF_SIZE: Final = 1 << 20


@dataclass
class Env:
    mm: Mm
    fd: Iommufd
    buf: int
    ro: int

    @property
    def user(self) -> MmUserMemory:
        u = self.fd.file.user
        assert isinstance(u, MmUserMemory)
        return u

    def ioctl(self, request: int, **fields: int) -> tuple[int, dict[str, int]]:
        """Raw ioctl with a struct of the kernel's size; returns (rc, decoded buffer)."""
        s = uapi.IOCTLS[request]
        arg = s.encode(fields, size=s.size)
        rc = self.fd.file.ioctl(request, arg)
        return rc, s.decode(arg)

    def ioas(self, ioas_id: int) -> Ioas:
        obj = self.fd.file.objects.get(ioas_id)
        assert isinstance(obj, Ioas)
        return obj

    def snapshot(self) -> dict[str, object]:
        f = self.fd.file
        objs = [(o.id, o.type, o.users) for o in f.objects]
        ioases = {}
        for o in f.objects:
            if isinstance(o, Ioas):
                t = o.iopt
                ioases[o.id] = (
                    [
                        (a.iova, a.last, id(a.pages), a.start_byte, a.prot, a.pages.refs)
                        for a in t.areas
                    ],
                    [(a.pages.npinned, sorted(a.pages.pinned().items())) for a in t.areas],
                    list(t.allowed),
                    [r for r, _ in t.reserved],
                    t.iova_alignment,
                    t.disable_large_pages,
                )
        return {
            "objects": objs,
            "nobjects": len(f.objects),
            "ioas": ioases,
            "account": f.account_mode,
            "pins": self.user.pins,
            "resident": self.mm.resident,
        }

    def fails(self, exc: type[ApiError], code: int, call: Callable[[], object]) -> ApiError:
        """``call`` raises ``exc`` carrying ``code`` and changes nothing snapshot() sees."""
        before = self.snapshot()
        with pytest.raises(exc) as info:
            call()
        assert info.value.errno == code, errno.errorcode.get(info.value.errno)
        assert self.snapshot() == before
        return info.value


def make_env(params: IommufdParams | None = None) -> Env:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 1024 * 0x1000)
    mm = Mm(mem, pages, "sv48")
    fd = Iommufd.over_mm(mm, params)
    # A 2 MiB-aligned buffer, so the auto-IOVA alignment follows the length.
    buf = mm.mmap(BUF_SIZE, PROT_READ | PROT_WRITE, addr=0x4000_0000, fixed=True)
    ro = mm.mmap(0x10000, PROT_READ, addr=0x5000_0000, fixed=True)
    return Env(mm, fd, buf, ro)


@pytest.fixture
def env() -> Env:
    return make_env()


@pytest.fixture
def make() -> Callable[..., Env]:
    return make_env
