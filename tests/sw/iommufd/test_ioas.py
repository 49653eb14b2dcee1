"""The IOAS ioctls against the kernel's semantics (drivers/iommu/iommufd/ioas.c,
io_pagetable.c, pages.c of Linux 7.3): every errno path the kernel has for them, each with
the state checked unchanged after (``env.fails``)."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.errors import (
    AddressInUse,
    BadAddress,
    Busy,
    Deadlock,
    Exists,
    InvalidArgument,
    MessageTooLong,
    NoDevice,
    NoSpace,
    NotFound,
    NotPermitted,
    NotSupported,
    Overflow,
)
from iommusim.sw.iommufd import IommufdParams, IovaRange, uapi
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType
from iommusim.sw.iommufd.pages import ACCOUNT_MM, ACCOUNT_NONE, ACCOUNT_USER
from iommusim.sw.prot import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE
from testsupport.iommufd import FakeDomain

U64: Final = (1 << 64) - 1
P: Final = 0x1000
RW: Final = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
RO: Final = uapi.IOMMU_IOAS_MAP_READABLE
FIXED: Final = uapi.IOMMU_IOAS_MAP_FIXED_IOVA
MAP, COPY, UNMAP = uapi.IOMMU_IOAS_MAP, uapi.IOMMU_IOAS_COPY, uapi.IOMMU_IOAS_UNMAP
RANGES, ALLOW, OPTION = (
    uapi.IOMMU_IOAS_IOVA_RANGES,
    uapi.IOMMU_IOAS_ALLOW_IOVAS,
    uapi.IOMMU_OPTION,
)


class Holder(IommufdObject):
    """An object holding a reference on an IOAS, as an HWPT_PAGING does."""

    __slots__ = ("target",)
    type = ObjType.HWPT_PAGING

    def __init__(self, target: IommufdObject) -> None:
        super().__init__()
        self.target = target
        ObjectTable.inc_users(target)

    def destroy(self) -> None:
        ObjectTable.dec_users(self.target)


def hold(env: Any, ioas_id: int) -> Holder:
    t = env.fd.file.objects
    h = Holder(t.get(ioas_id))
    t.reserve(h)
    t.finalize(h)
    return h


def areas(env: Any, ioas_id: int) -> list[tuple[int, int]]:
    return [(a.iova, a.length) for a in env.ioas(ioas_id).iopt.areas]


def write_ranges(env: Any, ranges: list[tuple[int, int]]) -> int:
    s = uapi.STRUCTS["iommu_iova_range"]
    va = env.fd.scratch_va
    env.user.write(va, b"".join(bytes(s.encode(start=a, last=b)) for a, b in ranges))
    return va


# ---------------------------------------------------------------------- IOAS_ALLOC / DESTROY
def test_ioas_alloc_returns_ids_from_one(env: Any) -> None:
    assert [env.fd.ioas_alloc() for _ in range(3)] == [1, 2, 3]
    assert [o.type for o in env.fd.file.objects] == [ObjType.IOAS] * 3


def test_ioas_alloc_with_flags_is_eopnotsupp_and_allocates_nothing(env: Any) -> None:
    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(uapi.IOMMU_IOAS_ALLOC, flags=1))
    assert env.fd.ioas_alloc() == 1


def test_destroy_unknown_id_is_enoent(env: Any) -> None:
    env.fd.ioas_alloc()
    env.fails(NotFound, errno.ENOENT, lambda: env.fd.destroy(2))
    env.fails(NotFound, errno.ENOENT, lambda: env.fd.destroy(0))


def test_destroy_of_a_used_ioas_is_ebusy_until_the_user_is_destroyed(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    h = hold(env, ioas)
    env.fails(Busy, errno.EBUSY, lambda: env.fd.destroy(ioas))
    env.fd.destroy(h.id)
    env.fd.destroy(ioas)
    assert len(env.fd.file.objects) == 0


def test_a_destroyed_ioas_is_gone_and_its_id_is_reused(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x2000)
    env.fd.destroy(ioas)
    env.fails(NotFound, errno.ENOENT, lambda: env.fd.ioas_map(ioas, env.buf, P))
    assert env.fd.ioas_alloc() == ioas
    assert areas(env, ioas) == []


def test_ioas_lookups_refuse_other_object_types(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    h = hold(env, ioas)
    env.fails(NotFound, errno.ENOENT, lambda: env.fd.ioas_map(h.id, env.buf, P))
    env.fails(NotFound, errno.ENOENT, lambda: env.fd.ioas_iova_ranges(h.id))


# ---------------------------------------------------------------------- IOAS_IOVA_RANGES
def test_iova_ranges_of_a_new_ioas_is_the_whole_space(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    r = env.fd.ioas_iova_ranges(ioas)
    assert r.ranges == [IovaRange(0, U64)] and r.alignment == 1


def test_iova_ranges_reports_the_holes_between_reserved_ranges(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.ioas(ioas).iopt.reserve_iova(0x10000, 0x1FFFF, "msi")
    env.ioas(ioas).iopt.reserve_iova(0x20000, 0x2FFFF, "dev")  # touching: one used span
    assert env.fd.ioas_iova_ranges(ioas).ranges == [
        IovaRange(0, 0xFFFF),
        IovaRange(0x30000, U64),
    ]


def test_iova_ranges_with_too_small_an_array_is_emsgsize_with_the_count_written(
    env: Any,
) -> None:
    ioas = env.fd.ioas_alloc()
    env.ioas(ioas).iopt.reserve_iova(0x10000, 0x1FFFF, "msi")
    s = uapi.STRUCTS["iommu_ioas_iova_ranges"]
    va = env.fd.scratch_va
    env.user.write(va, b"\xff" * 48)
    arg = s.encode(size=s.size, ioas_id=ioas, num_iovas=1, allowed_iovas=va)
    env.fails(MessageTooLong, errno.EMSGSIZE, lambda: env.fd.file.ioctl(RANGES, arg))
    out = s.decode(arg)
    assert out["num_iovas"] == 2 and out["out_iova_alignment"] == 1
    rs = uapi.STRUCTS["iommu_iova_range"]
    assert rs.decode(env.user.read(va, 16)) == {"start": 0, "last": 0xFFFF}
    assert env.user.read(va + 16, 16) == b"\xff" * 16  # only num_iovas entries written


def test_iova_ranges_errors(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(RANGES, ioas_id=ioas, __reserved=1))
    env.fails(NotFound, errno.ENOENT, lambda: env.ioctl(RANGES, ioas_id=9))
    env.fails(
        BadAddress,
        errno.EFAULT,
        lambda: env.ioctl(RANGES, ioas_id=ioas, num_iovas=1, allowed_iovas=0x1000),
    )


# ---------------------------------------------------------------------- IOAS_ALLOW_IOVAS
def test_allow_iovas_steers_auto_iova_and_an_empty_list_lifts_it(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x100000, 0x1FFFFF)])
    assert env.fd.ioas_map(ioas, env.buf, P) == 0x100000
    env.fd.ioas_allow_iovas(ioas, [])
    assert env.fd.ioas_map(ioas, env.buf, P) == P


def test_allow_iovas_does_not_restrict_a_fixed_iova(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x100000, 0x1FFFFF)])
    assert env.fd.ioas_map(ioas, env.buf, P, iova=0x5000) == 0x5000


def test_allow_iovas_errors(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x1000, 0x1FFF)])

    def allow(ranges: list[tuple[int, int]], **kw: int) -> object:
        va = write_ranges(env, ranges)
        fields = {"ioas_id": ioas, "num_iovas": len(ranges), "allowed_iovas": va} | kw
        return env.ioctl(ALLOW, **fields)

    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: allow([], __reserved=1))
    env.fails(NotFound, errno.ENOENT, lambda: allow([(0, 0x10)], ioas_id=5))
    env.fails(BadAddress, errno.EFAULT, lambda: allow([], num_iovas=1, allowed_iovas=8))
    # EFAULT on the second entry: the first (valid) is not applied either.
    last = env.fd.scratch_va + env.fd.scratch_size - 16
    env.user.write(last, bytes(uapi.STRUCTS["iommu_iova_range"].encode(start=0x9000, last=0x9FFF)))
    env.fails(
        BadAddress,
        errno.EFAULT,
        lambda: env.ioctl(ALLOW, ioas_id=ioas, num_iovas=2, allowed_iovas=last),
    )
    env.fails(InvalidArgument, errno.EINVAL, lambda: allow([(0x5000, 0x5000)]))
    env.fails(InvalidArgument, errno.EINVAL, lambda: allow([(0x6000, 0x5000)]))
    env.fails(InvalidArgument, errno.EINVAL, lambda: allow([(0x5000, 0x8FFF), (0x8000, 0x9FFF)]))
    env.ioas(ioas).iopt.reserve_iova(0x100000, 0x1FFFFF, "msi")
    env.fails(AddressInUse, errno.EADDRINUSE, lambda: allow([(0x180000, 0x2FFFFF)]))
    assert env.ioas(ioas).iopt.allowed == [IovaRange(0x1000, 0x1FFF)]


def test_reserving_over_an_area_or_an_allowed_range_is_eaddrinuse(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x100000, 0x1FFFFF)])
    iopt = env.ioas(ioas).iopt
    with pytest.raises(AddressInUse):
        iopt.reserve_iova(0x10000, 0x10FFF, "x")
    with pytest.raises(AddressInUse):
        iopt.reserve_iova(0x1FF000, 0x200FFF, "x")
    assert iopt.reserved == []
    iopt.reserve_iova(0x20000, 0x2FFFF, "x")
    iopt.remove_reserved("x")
    assert iopt.reserved == []


# ---------------------------------------------------------------------- IOAS_MAP
def test_map_fixed_records_the_area_and_pins_nothing_without_a_domain(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    assert env.fd.ioas_map(ioas, env.buf + 0x3000, 0x2000, iova=0x80000) == 0x80000
    (a,) = env.ioas(ioas).iopt.areas
    assert (a.iova, a.last, a.start_byte, a.prot) == (
        0x80000,
        0x81FFF,
        0,
        IOMMU_CACHE | IOMMU_READ | IOMMU_WRITE,
    )
    assert (a.pages.uptr, a.pages.npages, a.pages.writable) == (env.buf + 0x3000, 2, True)
    # io_pagetable.c: without a domain the pages are only referenced, not pinned.
    assert env.user.pins == {} and a.pages.npinned == 0


def test_map_read_only_has_read_prot_and_read_only_pages(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.ro, P, flags=RO)
    (a,) = env.ioas(ioas).iopt.areas
    assert a.prot == IOMMU_CACHE | IOMMU_READ and not a.pages.writable


def test_map_writes_the_chosen_iova_back(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    _, out = env.ioctl(MAP, flags=RW, ioas_id=ioas, user_va=env.buf, length=0x4000)
    assert out["iova"] == 0x4000


def test_auto_iova_alignment_follows_length_and_user_address(env: Any) -> None:
    # iopt_alloc_iova: alignment = min(roundup_pow_of_two(length), lowest bit of addr),
    # capped at HPAGE_SIZE, first fit from PAGE_SIZE (never IOVA 0).
    ioas = env.fd.ioas_alloc()
    m = env.fd.ioas_map
    assert m(ioas, env.buf, P) == 0x1000
    assert m(ioas, env.buf, 0x3000) == 0x4000  # aligned to 0x4000
    assert m(ioas, env.buf, P) == 0x2000  # the hole below it
    assert m(ioas, env.buf, 2 << 20) == 0x200000
    assert m(ioas, env.buf, 4 << 20) == 0x400000  # alignment capped at 2 MiB
    assert m(ioas, env.buf + 0x3000, 0x4000) == 0x7000  # addr's lowest bit: 0x1000
    assert m(ioas, env.buf + 0x234, 0x100) == 0x3234  # the page offset is kept


def test_auto_iova_skips_reserved_ranges(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.ioas(ioas).iopt.reserve_iova(0x1000, 0x1FFF, "msi")
    assert env.fd.ioas_map(ioas, env.buf, P) == 0x2000


def test_auto_iova_fills_an_allowed_range_exactly(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x10000, 0x10FFF)])
    assert env.fd.ioas_map(ioas, env.buf, P) == 0x10000
    env.fails(NoSpace, errno.ENOSPC, lambda: env.fd.ioas_map(ioas, env.buf, P))


def test_map_errors_in_the_kernel_order(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)

    def m(**kw: int) -> object:
        fields = {"flags": RW, "ioas_id": ioas, "user_va": env.buf, "length": P} | kw
        return env.ioctl(MAP, **fields)

    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: m(flags=RW | 8))
    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: m(__reserved=1))
    env.fails(Overflow, errno.EOVERFLOW, lambda: m(flags=RW | FIXED, iova=U64))
    env.fails(Overflow, errno.EOVERFLOW, lambda: m(length=U64))
    env.fails(InvalidArgument, errno.EINVAL, lambda: m(flags=FIXED, iova=0x20000))
    env.fails(NotFound, errno.ENOENT, lambda: m(ioas_id=ioas + 1))
    env.fails(Overflow, errno.EOVERFLOW, lambda: m(user_va=U64 - 0x10))
    env.fails(InvalidArgument, errno.EINVAL, lambda: m(length=0))
    env.fails(InvalidArgument, errno.EINVAL, lambda: m(user_va=0, length=U64 - 1))
    env.fails(Exists, errno.EEXIST, lambda: m(flags=RW | FIXED, iova=0x10000))
    env.fails(Exists, errno.EEXIST, lambda: m(flags=RW | FIXED, iova=0xF800, length=0x1000))
    env.fails(Exists, errno.EEXIST, lambda: m(flags=RW | FIXED, iova=0x11FFF, length=1))
    env.fails(
        Overflow, errno.EOVERFLOW, lambda: m(flags=RW | FIXED, iova=U64 - 0xFFF, length=0x2000)
    )
    env.fails(Overflow, errno.EOVERFLOW, lambda: m(user_va=0, length=(1 << 63) - 1))
    env.ioas(ioas).iopt.reserve_iova(0x40000, 0x4FFFF, "msi")
    env.fails(
        InvalidArgument, errno.EINVAL, lambda: m(flags=RW | FIXED, iova=0x4F000, length=0x2000)
    )
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x100000, 0x101FFF)])
    env.fails(NoSpace, errno.ENOSPC, lambda: m(length=0x3000))


def test_map_alignment_errors_with_large_pages_disabled(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.option_set(uapi.IOMMU_OPTION_HUGE_PAGES, 0, ioas)  # iova_alignment = PAGE_SIZE

    def m(**kw: int) -> object:
        fields = {"flags": RW | FIXED, "ioas_id": ioas, "user_va": env.buf, "length": P} | kw
        return env.ioctl(MAP, **fields)

    env.fails(InvalidArgument, errno.EINVAL, lambda: m(iova=0x10800))
    env.fails(InvalidArgument, errno.EINVAL, lambda: m(iova=0x10000, length=0x800))
    env.fails(InvalidArgument, errno.EINVAL, lambda: m(iova=0x10000, user_va=env.buf + 0x10))
    env.fails(InvalidArgument, errno.EINVAL, lambda: m(flags=RW, user_va=env.buf + 0x10))
    assert env.fd.ioas_map(ioas, env.buf, P, iova=0x10000) == 0x10000


def test_map_does_not_touch_user_memory(env: Any) -> None:
    # The kernel validates the user range only when pinning (for a domain or an access).
    ioas = env.fd.ioas_alloc()
    before = env.mm.resident
    assert env.fd.ioas_map(ioas, 0x7000_0000, 0x10000) == 0x10000
    assert env.mm.resident == before


# ---------------------------------------------------------------------- IOAS_COPY
@pytest.fixture
def two(env: Any) -> tuple[int, int]:
    src, dst = env.fd.ioas_alloc(), env.fd.ioas_alloc()
    env.fd.ioas_map(src, env.buf, 0x4000, iova=0x10000)
    env.fd.ioas_map(src, env.ro, 0x2000, iova=0x50000, flags=RO)
    return src, dst


def test_copy_shares_the_source_pages(env: Any, two: tuple[int, int]) -> None:
    src, dst = two
    assert env.fd.ioas_copy(dst, src, 0x11000, 0x2000, dst_iova=0x90000) == 0x90000
    (s, _), (d,) = env.ioas(src).iopt.areas, env.ioas(dst).iopt.areas
    assert d.pages is s.pages and s.pages.refs == 2
    assert (d.iova, d.length, d.start_byte) == (0x90000, 0x2000, 0x1000)


def test_copy_auto_iova_uses_the_source_address_alignment(env: Any, two: tuple[int, int]) -> None:
    src, dst = two
    assert env.fd.ioas_copy(dst, src, 0x10000, 0x4000) == 0x4000


def test_copy_over_contiguous_areas_makes_one_area_per_source_area(
    env: Any, two: tuple[int, int]
) -> None:
    src, dst = two
    env.fd.ioas_map(src, env.buf + 0x8000, 0x2000, iova=0x14000)
    env.fd.ioas_copy(dst, src, 0x12000, 0x3000, dst_iova=0x20000)
    assert areas(env, dst) == [(0x20000, 0x2000), (0x22000, 0x1000)]
    a, b = env.ioas(dst).iopt.areas
    assert (a.start_byte, b.start_byte) == (0x2000, 0)


def test_copy_survives_the_source_unmap(env: Any, two: tuple[int, int]) -> None:
    src, dst = two
    env.fd.ioas_copy(dst, src, 0x10000, 0x4000, dst_iova=0x10000)
    pages = env.ioas(dst).iopt.areas[0].pages
    env.fd.ioas_unmap(src, 0x10000, 0x4000)
    assert pages.refs == 1 and areas(env, dst) == [(0x10000, 0x4000)]


def test_copy_errors_in_the_kernel_order(env: Any, two: tuple[int, int]) -> None:
    src, dst = two
    env.fd.ioas_map(dst, env.buf, P, iova=0x30000)

    def c(**kw: int) -> object:
        fields = {
            "flags": RW | FIXED,
            "dst_ioas_id": dst,
            "src_ioas_id": src,
            "length": 0x1000,
            "dst_iova": 0x20000,
            "src_iova": 0x10000,
        } | kw
        return env.ioctl(COPY, **fields)

    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: c(flags=RW | 0x10))
    env.fails(Overflow, errno.EOVERFLOW, lambda: c(length=U64))
    env.fails(Overflow, errno.EOVERFLOW, lambda: c(src_iova=U64))
    env.fails(Overflow, errno.EOVERFLOW, lambda: c(dst_iova=U64))
    env.fails(InvalidArgument, errno.EINVAL, lambda: c(flags=FIXED))
    env.fails(NotFound, errno.ENOENT, lambda: c(src_ioas_id=9))
    env.fails(InvalidArgument, errno.EINVAL, lambda: c(length=0))
    env.fails(Overflow, errno.EOVERFLOW, lambda: c(src_iova=U64 - 1, length=3))
    env.fails(NotFound, errno.ENOENT, lambda: c(src_iova=0x20000))  # nothing there
    env.fails(NotFound, errno.ENOENT, lambda: c(src_iova=0xF000, length=0x2000))  # starts in a hole
    env.fails(NotFound, errno.ENOENT, lambda: c(src_iova=0x13000, length=0x2000))  # runs past
    env.fails(NotFound, errno.ENOENT, lambda: c(dst_ioas_id=9))
    env.fails(Exists, errno.EEXIST, lambda: c(dst_iova=0x30000))
    env.fails(NotPermitted, errno.EPERM, lambda: c(src_iova=0x50000))  # read-only pages
    assert env.fd.ioas_copy(dst, src, 0x50000, 0x1000, dst_iova=0x60000, flags=RO) == 0x60000


def test_copy_within_one_ioas(env: Any, two: tuple[int, int]) -> None:
    src, _ = two
    assert env.fd.ioas_copy(src, src, 0x10000, 0x1000, dst_iova=0x70000) == 0x70000
    a = env.ioas(src).iopt.areas
    assert a[0].pages is a[-1].pages


# ---------------------------------------------------------------------- IOAS_UNMAP
def test_unmap_returns_the_bytes_unmapped(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x12000)
    env.fd.ioas_map(ioas, env.buf, P, iova=0x20000)
    _, out = env.ioctl(UNMAP, ioas_id=ioas, iova=0x8000, length=0x10000)
    assert out["length"] == 0x3000
    assert areas(env, ioas) == [(0x20000, P)]


def test_unmap_all_and_of_an_empty_ioas(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    assert env.fd.ioas_unmap_all(ioas) == 0
    env.fd.ioas_map(ioas, env.buf, P)
    env.fd.ioas_map(ioas, env.buf, 0x4000)
    assert env.fd.ioas_unmap_all(ioas) == 0x5000
    assert areas(env, ioas) == []


def test_unmap_errors(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)

    def u(**kw: int) -> object:
        return env.ioctl(UNMAP, **({"ioas_id": ioas, "iova": 0x10000, "length": 0x2000} | kw))

    env.fails(NotFound, errno.ENOENT, lambda: u(ioas_id=4))
    env.fails(NotFound, errno.ENOENT, lambda: u(ioas_id=4, iova=0, length=U64))
    env.fails(Overflow, errno.EOVERFLOW, lambda: u(iova=U64, length=1))
    env.fails(Overflow, errno.EOVERFLOW, lambda: u(iova=1, length=U64))
    env.fails(InvalidArgument, errno.EINVAL, lambda: u(length=0))
    env.fails(InvalidArgument, errno.EINVAL, lambda: u(iova=0, length=0))
    env.fails(Overflow, errno.EOVERFLOW, lambda: u(iova=U64 - 1, length=3))
    env.fails(NotFound, errno.ENOENT, lambda: u(iova=0x20000, length=P))  # nothing mapped
    env.fails(NotFound, errno.ENOENT, lambda: u(iova=0x11000, length=P))  # inside an area
    env.fails(NotFound, errno.ENOENT, lambda: u(iova=0x10000, length=P))  # area sticks out
    env.fails(NotFound, errno.ENOENT, lambda: u(iova=0x11000, length=0x8000))
    assert areas(env, ioas) == [(0x10000, 0x2000)]


def test_unmap_stops_at_an_area_sticking_out_after_unmapping_the_ones_before(env: Any) -> None:
    # iopt_unmap_iova_range: areas go one by one; the kernel does not restore them.
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x11000)
    with pytest.raises(NotFound):
        env.ioctl(UNMAP, ioas_id=ioas, iova=0x10000, length=0x2000)
    assert areas(env, ioas) == [(0x11000, 0x2000)]


def test_unmap_drops_the_pages_reference(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    pages = env.ioas(ioas).iopt.areas[0].pages
    env.fd.ioas_unmap(ioas, 0x10000, P)
    assert pages.refs == 0


# ---------------------------------------------------------------------- IOMMU_OPTION
def test_rlimit_mode_get_set(env: Any) -> None:
    o = uapi.IOMMU_OPTION_RLIMIT_MODE
    assert env.fd.option_get(o) == 0
    env.fd.option_set(o, 1)
    assert env.fd.option_get(o) == 1 and env.fd.file.account_mode == ACCOUNT_MM
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P)
    assert env.ioas(ioas).iopt.areas[0].pages.account_mode == ACCOUNT_MM


def test_rlimit_mode_errors(env: Any, make: Any) -> None:
    o = uapi.IOMMU_OPTION_RLIMIT_MODE
    SET, GET = uapi.IOMMU_OPTION_OP_SET, uapi.IOMMU_OPTION_OP_GET
    env.fails(
        NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(OPTION, option_id=o, op=GET, __reserved=1)
    )
    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(OPTION, option_id=7, op=GET))
    env.fails(
        NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(OPTION, option_id=o, op=GET, object_id=1)
    )
    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(OPTION, option_id=o, op=2))
    env.fails(
        InvalidArgument, errno.EINVAL, lambda: env.ioctl(OPTION, option_id=o, op=SET, val64=2)
    )
    env.fd.ioas_alloc()
    env.fails(Busy, errno.EBUSY, lambda: env.ioctl(OPTION, option_id=o, op=SET, val64=1))
    weak = make(IommufdParams(cap_sys_resource=False))
    weak.fails(NotPermitted, errno.EPERM, lambda: weak.ioctl(OPTION, option_id=o, op=SET, val64=1))
    assert weak.fd.option_get(o) == 0


def test_option_writes_back_only_val64_and_only_on_success(env: Any) -> None:
    s = uapi.STRUCTS["iommu_option"]
    arg = s.encode(size=24, option_id=uapi.IOMMU_OPTION_RLIMIT_MODE, op=1, val64=77)
    before = bytes(arg)
    env.fd.file.ioctl(OPTION, arg)
    assert arg[:16] == before[:16] and s.decode(arg)["val64"] == 0
    bad = s.encode(size=24, option_id=uapi.IOMMU_OPTION_RLIMIT_MODE, op=0, val64=5)
    with pytest.raises(InvalidArgument):
        env.fd.file.ioctl(OPTION, bad)
    assert s.decode(bad)["val64"] == 5


def test_huge_pages_get_set_changes_the_iova_alignment(env: Any) -> None:
    o = uapi.IOMMU_OPTION_HUGE_PAGES
    ioas = env.fd.ioas_alloc()
    assert env.fd.option_get(o, ioas) == 1
    env.fd.option_set(o, 0, ioas)
    env.fd.option_set(o, 0, ioas)  # already disabled: nothing to do
    assert env.fd.option_get(o, ioas) == 0
    assert env.fd.ioas_iova_ranges(ioas).alignment == P
    env.fd.option_set(o, 1, ioas)
    assert env.fd.ioas_iova_ranges(ioas).alignment == 1


def test_huge_pages_errors(env: Any) -> None:
    o = uapi.IOMMU_OPTION_HUGE_PAGES
    SET = uapi.IOMMU_OPTION_OP_SET
    ioas = env.fd.ioas_alloc()
    env.fails(NotFound, errno.ENOENT, lambda: env.ioctl(OPTION, option_id=o, op=SET, object_id=9))
    env.fails(
        InvalidArgument,
        errno.EINVAL,
        lambda: env.ioctl(OPTION, option_id=o, op=SET, object_id=ioas, val64=2),
    )
    env.fails(
        NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(OPTION, option_id=o, op=3, object_id=ioas)
    )
    env.fd.ioas_map(ioas, env.buf, 0x800, iova=0x10000)  # not page-sized
    env.fails(AddressInUse, errno.EADDRINUSE, lambda: env.fd.option_set(o, 0, ioas))
    env.fd.ioas_unmap_all(ioas)
    env.fd.ioas_map(ioas, env.buf + 0x10, P, iova=0x10000)  # not page-aligned in the pages
    env.fails(AddressInUse, errno.EADDRINUSE, lambda: env.fd.option_set(o, 0, ioas))
    assert env.fd.option_get(o, ioas) == 1


def test_cap_ipc_lock_maps_unaccounted_pages(make: Any) -> None:
    e = make(IommufdParams(cap_ipc_lock=True))
    ioas = e.fd.ioas_alloc()
    e.fd.ioas_map(ioas, e.buf, P)
    assert e.ioas(ioas).iopt.areas[0].pages.account_mode == ACCOUNT_NONE


def test_default_account_mode_is_per_user(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P)
    assert env.ioas(ioas).iopt.areas[0].pages.account_mode == ACCOUNT_USER


# ---------------------------------------------------------------------- pins and close
def test_pins_are_counted_in_the_process_and_shared_by_copy(env: Any) -> None:
    src, dst = env.fd.ioas_alloc(), env.fd.ioas_alloc()
    env.fd.ioas_map(src, env.buf, 0x2000, iova=0x10000)
    env.fd.ioas_copy(dst, src, 0x10000, 0x2000, dst_iova=0x10000)
    a, b = env.ioas(src).iopt.areas[0], env.ioas(dst).iopt.areas[0]
    # What a domain fill or an access does (pages.c: iopt_area_fill_domains).
    pas = a.pages.pin(a.first_index, a.last_index)
    assert pas == [env.mm.translate(env.buf), env.mm.translate(env.buf + P)]
    assert b.pages.pin(b.first_index, b.last_index) == pas
    assert env.user.pins == {env.buf: (pas[0], 1), env.buf + P: (pas[1], 1)}
    assert a.pages.pinned() == {0: (pas[0], 2), 1: (pas[1], 2)}
    env.fd.ioas_unmap_all(src)
    assert env.user.pin_count(env.buf) == 1  # dst still holds the pages
    env.fd.close()
    assert env.user.pins == {} and len(env.fd.file.objects) == 0
    assert env.mm.translate(env.buf) == pas[0]  # unpinned, not freed


def test_a_pin_that_faults_pins_nothing(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf + (1 << 20) - P, 0x2000)  # runs off the buffer
    env.fd.ioas_map(ioas, env.ro, P, flags=RW)  # writeable pages of a read-only area
    a, b = env.ioas(ioas).iopt.areas
    for area in (a, b):
        with pytest.raises(BadAddress):
            area.pages.pin(area.first_index, area.last_index)
        assert area.pages.npinned == 0
    assert env.user.pins == {}
    a.pages.pin(0, 0)
    a.pages.unpin(0, 0)
    assert env.user.pins == {}


def test_close_destroys_leaf_first_and_releases_everything(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P)
    hold(env, ioas)
    area = env.ioas(ioas).iopt.areas[0]
    area.pages.pin(0, 0)
    env.fd.close()
    assert len(env.fd.file.objects) == 0 and env.user.pins == {} and area.pages.refs == 0


# ---------------------------------------------------------------------- VFIO_IOAS and others
VFIO_IOAS: Final = uapi.IOMMU_VFIO_IOAS


def test_vfio_ioas_get_set_clear(env: Any) -> None:
    a, b = env.fd.ioas_alloc(), env.fd.ioas_alloc()
    G, S, C = uapi.IOMMU_VFIO_IOAS_GET, uapi.IOMMU_VFIO_IOAS_SET, uapi.IOMMU_VFIO_IOAS_CLEAR
    env.fails(NoDevice, errno.ENODEV, lambda: env.ioctl(VFIO_IOAS, op=G))
    env.ioctl(VFIO_IOAS, op=S, ioas_id=b)
    assert env.ioctl(VFIO_IOAS, op=G)[1]["ioas_id"] == b
    assert env.fd.file.objects.get(b).users == 1  # the compat pointer holds no reference
    env.ioctl(VFIO_IOAS, op=C)
    env.fails(NoDevice, errno.ENODEV, lambda: env.ioctl(VFIO_IOAS, op=G))
    env.ioctl(VFIO_IOAS, op=S, ioas_id=a)
    env.fd.destroy(a)  # iommufd_object_remove clears it
    env.fails(NoDevice, errno.ENODEV, lambda: env.ioctl(VFIO_IOAS, op=G))


def test_vfio_ioas_errors(env: Any) -> None:
    a = env.fd.ioas_alloc()
    h = hold(env, a)
    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(VFIO_IOAS, op=0, __reserved=1))
    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(VFIO_IOAS, op=3))
    env.fails(NotFound, errno.ENOENT, lambda: env.ioctl(VFIO_IOAS, op=1, ioas_id=9))
    env.fails(NotFound, errno.ENOENT, lambda: env.ioctl(VFIO_IOAS, op=1, ioas_id=h.id))
    assert env.fd.file.vfio_ioas is None


def test_a_failed_destroy_keeps_the_vfio_ioas(env: Any) -> None:
    a = env.fd.ioas_alloc()
    hold(env, a)
    env.ioctl(VFIO_IOAS, op=uapi.IOMMU_VFIO_IOAS_SET, ioas_id=a)
    env.fails(Busy, errno.EBUSY, lambda: env.fd.destroy(a))
    assert env.fd.file.vfio_ioas is env.ioas(a)


def test_change_process_with_only_user_memory_areas(env: Any) -> None:
    CP = uapi.IOMMU_IOAS_CHANGE_PROCESS
    a = env.fd.ioas_alloc()
    assert env.ioctl(CP)[0] == 0  # nothing to move
    env.fails(NotSupported, errno.EOPNOTSUPP, lambda: env.ioctl(CP, __reserved=1))
    env.fd.ioas_map(a, env.buf, P)
    env.fails(InvalidArgument, errno.EINVAL, lambda: env.ioctl(CP))


def test_noiommu_get_pa_is_not_configured(env: Any) -> None:
    a = env.fd.ioas_alloc()
    env.fails(
        NotSupported,
        errno.EOPNOTSUPP,
        lambda: env.ioctl(uapi.IOMMU_IOAS_NOIOMMU_GET_PA, ioas_id=a, length=P),
    )


# ---------------------------------------------------------------------- hooks for HWPT/ACCESS
def test_unmap_of_a_locked_area_is_ebusy(env: Any) -> None:
    # io_pagetable.c: area->num_locks (an HWPT_PAGING lock) blocks unmap; pinned accesses
    # are asked to unpin, and an area still pinned after 100 asks is EDEADLOCK (WARN_ON).
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    area = env.ioas(ioas).iopt.areas[0]
    area.num_locks = 1
    env.fails(Busy, errno.EBUSY, lambda: env.fd.ioas_unmap(ioas, 0x10000, P))
    area.num_locks, area.num_accesses = 0, 1
    env.fails(Deadlock, errno.EDEADLK, lambda: env.fd.ioas_unmap_all(ioas))
    assert area.prevent_access


def test_disabling_large_pages_with_a_domain_and_areas_is_einval(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    iopt = env.ioas(ioas).iopt
    iopt.add_domain(FakeDomain())
    env.fd.option_set(uapi.IOMMU_OPTION_HUGE_PAGES, 0, ioas)  # no areas yet: fine
    env.fd.option_set(uapi.IOMMU_OPTION_HUGE_PAGES, 1, ioas)
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    env.fails(
        InvalidArgument,
        errno.EINVAL,
        lambda: env.fd.option_set(uapi.IOMMU_OPTION_HUGE_PAGES, 0, ioas),
    )
