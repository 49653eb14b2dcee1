"""In-kernel accesses (device.c ``iommufd_access_*``, pages.c ``iopt_area_add_access``):
pins by IOVA with the kernel's errno rules, copies through the IOAS on both paths, the unmap
callback and its EDEADLOCK, attach/replace/detach. Every failed call changes nothing."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.errors import (
    AddressInUse,
    Busy,
    Deadlock,
    InvalidArgument,
    ModelError,
    NotFound,
    NotPermitted,
    Overflow,
)
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.access import ACCESS_RW_SLOW_PATH, ACCESS_RW_WRITE, Access
from iommusim.sw.iommufd.iopt import ULONG_MAX
from iommusim.sw.iommufd.objects import ObjType
from testsupport.iommufd import FakeDomain

P: Final = 0x1000
RO: Final = uapi.IOMMU_IOAS_MAP_READABLE


class Ops:
    """The selftest's ops (selftest.c ``iommufd_test_access_unmap``): items pinned, and
    the unmap callback unpins every item meeting the range (unless ``stubborn``)."""

    def __init__(self, needs_pin_pages: bool = True) -> None:
        self.needs_pin_pages = needs_pin_pages
        self.items: list[tuple[int, int]] = []
        self.calls: list[tuple[int, int]] = []
        self.stubborn = False
        self.access: Access | None = None

    def unmap(self, iova: int, length: int) -> None:
        self.calls.append((iova, length))
        if self.stubborn:
            return
        last = iova + length - 1
        assert self.access is not None
        for it in list(self.items):
            if iova <= it[0] + it[1] - 1 and it[0] <= last:
                self.items.remove(it)
                self.access.unpin_pages(*it)

    def pin(self, iova: int, length: int, write: bool = False) -> list[int]:
        assert self.access is not None
        pas = self.access.pin_pages(iova, length, write)
        self.items.append((iova, length))
        return list(pas)


def make_access(env: Any, ioas: int, needs_pin_pages: bool = True) -> tuple[Access, Ops]:
    ops = Ops(needs_pin_pages)
    access = Access.create(env.fd.file.objects, ops)
    ops.access = access
    access.attach(ioas)
    return access, ops


def snap(env: Any) -> dict[str, object]:
    s = env.snapshot()
    del s["resident"]  # pinning faults pages in; unpinning leaves them (pin_user_pages)
    s["accesses"] = [
        (a.iova, a.num_accesses, a.num_locks, a.pages.accesses(), a.prevent_access)
        for o in env.fd.file.objects
        if o.type is ObjType.IOAS
        for a in env.ioas(o.id).iopt.areas
    ]
    return s


def fails(env: Any, exc: type, code: int, call: Any) -> None:
    before = snap(env)
    with pytest.raises(exc) as info:
        call()
    assert info.value.errno == code
    assert snap(env) == before


# ---------------------------------------------------------------------- life
def test_create_attach_and_destroy(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    access, ops = make_access(env, ioas)
    assert access.type is ObjType.ACCESS and access.users == 2
    assert env.fd.file.objects.get(access.id) is access
    assert env.ioas(ioas).users == 2 and env.ioas(ioas).iopt.iova_alignment == P
    fails(env, Busy, errno.EBUSY, lambda: env.fd.destroy(access.id))  # the driver holds it
    fails(env, Busy, errno.EBUSY, lambda: env.fd.destroy(ioas))
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.attach(ioas))
    access.destroy_user()
    assert ops.calls == [(0, ULONG_MAX)]  # detaching unmaps everything
    assert env.ioas(ioas).users == 1 and env.ioas(ioas).iopt.iova_alignment == 1
    env.fd.destroy(ioas)


def test_attach_needs_an_aligned_ioas(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf + 0x800, 0x800, iova=0x10800)
    ops = Ops()
    access = Access.create(env.fd.file.objects, ops)
    fails(env, AddressInUse, errno.EADDRINUSE, lambda: access.attach(ioas))
    fails(env, NotFound, errno.ENOENT, lambda: access.attach(99))
    assert access.ioas is None
    # An access that does not pin needs no alignment.
    other = Access.create(env.fd.file.objects, Ops(needs_pin_pages=False))
    other.attach(ioas)
    assert env.ioas(ioas).iopt.iova_alignment == 1
    with pytest.raises(ModelError):
        access.detach()


def test_replace_moves_the_access(env: Any) -> None:
    a, b = env.fd.ioas_alloc(), env.fd.ioas_alloc()
    env.fd.ioas_map(a, env.buf, P, iova=0x10000)
    env.fd.ioas_map(b, env.buf + P, P, iova=0x10000)
    access, ops = make_access(env, a)
    ops.pin(0x10000, P)
    access.replace(a)  # the same IOAS: nothing happens
    assert ops.calls == []
    access.replace(b)
    assert ops.calls == [(0, ULONG_MAX)] and ops.items == []
    assert env.ioas(a).users == 1 and env.ioas(b).users == 2
    assert env.ioas(a).iopt.areas[0].num_accesses == 0
    assert ops.pin(0x10000, P) == [env.mm.translate(env.buf + P)]
    env.fd.ioas_map(a, env.buf + 0x800, 0x800, iova=0x20800)
    fails(env, AddressInUse, errno.EADDRINUSE, lambda: access.replace(a))
    fails(env, NotFound, errno.ENOENT, lambda: access.replace(77))
    access.detach()
    fails(env, NotFound, errno.ENOENT, lambda: access.replace(b))


# ---------------------------------------------------------------------- pins
def test_pin_pages_returns_the_pages_and_counts_the_areas(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)
    env.fd.ioas_map(ioas, env.buf + 0x8000, P, iova=0x12000)
    access, ops = make_access(env, ioas)
    pas = ops.pin(0x10000, 0x3000, write=True)
    want = [env.mm.translate(env.buf + o) for o in (0, P, 0x8000)]
    assert pas == want
    a1, a2 = env.ioas(ioas).iopt.areas
    assert (a1.num_accesses, a2.num_accesses) == (1, 1)
    assert all(c == 1 for _, c in env.user.pins.values()) and len(env.user.pins) == 3
    assert ops.pin(0x10000, 0x3000) == pas  # the same range again: one more user
    assert a1.pages.accesses() == {(0, 1): 2}
    access.unpin_pages(0x10000, 0x3000)
    assert len(env.user.pins) == 3
    access.unpin_pages(0x10000, 0x3000)
    assert env.user.pins == {} and a1.num_accesses == 0
    # A short range from a page's start pins the whole page; from inside a page: EINVAL.
    assert access.pin_pages(0x10000, 0x20) == [want[0]]
    access.unpin_pages(0x10000, 0x20)
    assert env.user.pins == {}
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.pin_pages(0x10010, 0x20))


def test_pin_pages_errors_change_nothing(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)
    env.fd.ioas_map(ioas, env.ro, P, iova=0x12000, flags=RO)
    env.fd.ioas_map(ioas, env.buf + 0x4000, P, iova=0x14000)
    access, ops = make_access(env, ioas)
    ops.pin(0x10000, P)
    pin = access.pin_pages
    fails(env, InvalidArgument, errno.EINVAL, lambda: pin(0x10000, 0))
    fails(env, Overflow, errno.EOVERFLOW, lambda: pin(ULONG_MAX - 1, 4))
    fails(env, NotFound, errno.ENOENT, lambda: pin(0x20000, P))  # nothing there
    fails(env, NotFound, errno.ENOENT, lambda: pin(0x10000, 0x5000))  # a hole at 0x13000
    # Write to a read-only area, after the writable ones were pinned: rolled back.
    fails(env, NotPermitted, errno.EPERM, lambda: pin(0x10000, 0x3000, True))
    assert pin(0x12000, P) == [env.mm.translate(env.ro)]  # reading it is fine
    access.unpin_pages(0x12000, P)
    pinless, _ = make_access(env, ioas, needs_pin_pages=False)
    fails(env, InvalidArgument, errno.EINVAL, lambda: pinless.pin_pages(0x10000, P))
    pinless.detach()
    fails(env, NotFound, errno.ENOENT, lambda: pinless.rw(0x10000, bytearray(4)))
    # unpin of a range never pinned so
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.unpin_pages(0x10000, 0x2000))
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.unpin_pages(0x14000, P))
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.unpin_pages(0x10000, 0))


def test_pin_pages_needs_page_aligned_pages(env: Any) -> None:
    # A 2 KiB-page domain allows areas at half pages; the access needs whole pages.
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x1000, iova=0x10000)
    env.fd.ioas_map(ioas, env.buf + 0x3800, 0x800, iova=0x11000)
    access, _ = make_access(env, ioas, needs_pin_pages=False)
    access.iova_alignment = P  # what needs_pin_pages gives, without the IOAS check
    access.ops = Ops()
    # From inside a page (the second area starts at byte 0x800 of its page).
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.pin_pages(0x11000, 0x800))


def test_pins_and_a_domain_share_the_pages(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)
    _access, ops = make_access(env, ioas)
    ops.pin(0x10000, P)
    d = FakeDomain()
    env.ioas(ioas).iopt.add_domain(d)
    assert d.pt[0x10000][0] == env.user.pins[env.buf][0] and env.user.pins[env.buf][1] == 1
    env.ioas(ioas).iopt.remove_domain(d)
    assert list(env.user.pins) == [env.buf]


# ---------------------------------------------------------------------- unmap
def test_unmap_asks_the_accesses_to_unpin_then_unmaps(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)
    env.fd.ioas_map(ioas, env.buf + 0x8000, P, iova=0x12000)
    _access, ops = make_access(env, ioas)
    _bystander, bops = make_access(env, ioas)
    ops.pin(0x10000, P)
    ops.pin(0x12000, P)
    assert env.fd.ioas_unmap(ioas, 0x10000, 0x3000) == 0x3000
    assert ops.calls == [(0x10000, 0x2000), (0x12000, P)] == bops.calls  # every access
    assert ops.items == [] and env.user.pins == {} and env.ioas(ioas).iopt.areas == []


def test_an_access_that_does_not_unpin_is_edeadlock(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    env.fd.ioas_map(ioas, env.buf + P, P, iova=0x11000)
    access, ops = make_access(env, ioas)
    ops.pin(0x11000, P)
    ops.stubborn = True
    with pytest.raises(Deadlock) as info:
        env.fd.ioas_unmap_all(ioas)
    assert info.value.errno == errno.EDEADLK
    assert len(ops.calls) == 101  # asked 101 times (tries > 100)
    area = env.ioas(ioas).iopt.areas[0]
    assert area.iova == 0x11000 and area.prevent_access  # the first area went, as the kernel
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.pin_pages(0x11000, P))
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.rw(0x11000, bytearray(4)))
    ops.stubborn = False
    assert env.fd.ioas_unmap_all(ioas) == P


def test_an_internal_access_locks_its_areas(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    access = Access.create_internal(env.fd.file.objects)
    access.attach_internal(env.ioas(ioas))
    fails(env, InvalidArgument, errno.EINVAL, lambda: access.attach_internal(env.ioas(ioas)))
    access.pin_pages(0x10000, P)
    fails(env, Busy, errno.EBUSY, lambda: env.fd.ioas_unmap_all(ioas))
    access.unpin_pages(0x10000, P)
    access.destroy_user()
    assert env.fd.ioas_unmap_all(ioas) == P


# ---------------------------------------------------------------------- rw
@pytest.mark.parametrize("slow", [0, ACCESS_RW_SLOW_PATH])
def test_rw_reads_and_writes_through_the_ioas(env: Any, slow: int) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf + 0x10, 0x1000, iova=0x10000)  # IOVA 0x10000 = buf+0x10
    env.fd.ioas_map(ioas, env.buf + 0x5000, 0x2000, iova=0x11000)
    access, _ = make_access(env, ioas, needs_pin_pages=False)
    env.user.write(env.buf + 0x10 + 0xFF0, b"0123456789abcdef")
    env.user.write(env.buf + 0x5000, b"ghij")
    out = bytearray(20)
    access.rw(0x10FF0, out, slow)
    assert bytes(out) == b"0123456789abcdefghij"
    access.rw(0x10FFE, bytearray(b"XYZW"), ACCESS_RW_WRITE | slow)
    assert env.user.read(env.buf + 0x10 + 0xFFE, 2) == b"XY"
    assert env.user.read(env.buf + 0x5000, 2) == b"ZW"
    assert env.user.pins == {}  # the slow path unpins what it pinned


def test_rw_errors(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.ro, P, iova=0x10000, flags=RO)
    env.fd.ioas_map(ioas, env.buf, P, iova=0x11000, flags=uapi.IOMMU_IOAS_MAP_WRITEABLE)
    access, _ = make_access(env, ioas, needs_pin_pages=False)
    rw = access.rw
    fails(env, InvalidArgument, errno.EINVAL, lambda: rw(0x10000, bytearray()))
    fails(env, Overflow, errno.EOVERFLOW, lambda: rw(ULONG_MAX, bytearray(2)))
    fails(env, NotFound, errno.ENOENT, lambda: rw(0x20000, bytearray(2)))
    fails(env, NotFound, errno.ENOENT, lambda: rw(0x11FFE, bytearray(4), ACCESS_RW_WRITE))
    fails(env, NotPermitted, errno.EPERM, lambda: rw(0x10000, bytearray(2), ACCESS_RW_WRITE))
    fails(env, NotPermitted, errno.EPERM, lambda: rw(0x11000, bytearray(2)))  # write-only
    for slow in (0, ACCESS_RW_SLOW_PATH):
        rw(0x11000, bytearray(b"ok"), ACCESS_RW_WRITE | slow)
        out = bytearray(2)
        rw(0x10000, out, slow)
        assert out == b"\0\0"
