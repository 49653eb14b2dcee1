"""The no-domain cases of the kernel's own selftest (Linux 7.3
tools/testing/selftests/iommu/iommufd.c, fixtures ``iommufd`` and ``iommufd_ioas`` variant
``no_domain``), restated against the model: same calls, same expected results. The test
op ADD_RESERVED is :meth:`IoPagetable.reserve_iova` here (the mock driver comes later)."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.errors import ApiError
from iommusim.sw.iommufd import IovaRange, uapi

P: Final = 0x1000
BUFFER_SIZE: Final = 16 * P
U64: Final = (1 << 64) - 1
MOCK_APERTURE_START: Final = 1 << 24
RW: Final = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
FIXED: Final = uapi.IOMMU_IOAS_MAP_FIXED_IOVA


def err(call: Any) -> int:
    try:
        call()
    except ApiError as e:
        return e.errno
    return 0


@pytest.fixture
def ioas(env: Any) -> int:
    return int(env.fd.ioas_alloc())


def test_cmd_fail(env: Any) -> None:
    assert err(lambda: env.fd.destroy(0)) == errno.ENOENT
    assert err(lambda: env.fd.file.ioctl(uapi.IOMMU_DESTROY, bytearray())) == errno.EFAULT
    cmd = uapi.STRUCTS["iommu_destroy"].encode(size=8)
    assert err(lambda: env.fd.file.ioctl(0x3B00 | 0x7F, cmd)) == errno.ENOTTY


LENGTH_CASES = [
    ("iommu_destroy", uapi.IOMMU_DESTROY, "id"),
    ("iommu_ioas_alloc", uapi.IOMMU_IOAS_ALLOC, "out_ioas_id"),
    ("iommu_ioas_iova_ranges", uapi.IOMMU_IOAS_IOVA_RANGES, "out_iova_alignment"),
    ("iommu_ioas_allow_iovas", uapi.IOMMU_IOAS_ALLOW_IOVAS, "allowed_iovas"),
    ("iommu_ioas_map", uapi.IOMMU_IOAS_MAP, "iova"),
    ("iommu_ioas_copy", uapi.IOMMU_IOAS_COPY, "src_iova"),
    ("iommu_ioas_unmap", uapi.IOMMU_IOAS_UNMAP, "length"),
    ("iommu_option", uapi.IOMMU_OPTION, "val64"),
    ("iommu_vfio_ioas", uapi.IOMMU_VFIO_IOAS, "__reserved"),
    ("iommu_ioas_change_process", uapi.IOMMU_IOAS_CHANGE_PROCESS, "__reserved"),
]


@pytest.mark.parametrize(("name", "request_", "last"), LENGTH_CASES)
def test_cmd_length(env: Any, name: str, request_: int, last: str) -> None:
    s = uapi.STRUCTS[name]
    min_size = s.offsetofend(last)
    arg = s.encode(size=min_size - 1) + b"\xff"  # struct followed by an 0xff byte
    assert err(lambda: env.fd.file.ioctl(request_, arg)) == errno.EINVAL
    arg[:4] = (s.size + 1).to_bytes(4, "little")
    assert err(lambda: env.fd.file.ioctl(request_, arg)) == errno.E2BIG
    arg[:4] = s.size.to_bytes(4, "little")
    first = err(lambda: env.fd.file.ioctl(request_, arg))
    arg[:4] = (s.size + 1).to_bytes(4, "little")
    arg[s.size] = 0
    assert err(lambda: env.fd.file.ioctl(request_, arg)) == first


def test_cmd_ex_fail(env: Any) -> None:
    s = uapi.STRUCTS["iommu_destroy"]
    arg = s.encode(size=16) + bytes(8)
    assert err(lambda: env.fd.file.ioctl(uapi.IOMMU_DESTROY, arg)) == errno.ENOENT
    arg[8] = 1
    assert err(lambda: env.fd.file.ioctl(uapi.IOMMU_DESTROY, arg)) == errno.E2BIG
    arg[:4] = (8).to_bytes(4, "little")
    assert err(lambda: env.fd.file.ioctl(uapi.IOMMU_DESTROY, arg)) == errno.ENOENT
    arg[:4] = (7).to_bytes(4, "little")
    assert err(lambda: env.fd.file.ioctl(uapi.IOMMU_DESTROY, arg)) == errno.EINVAL


def test_global_options(env: Any) -> None:
    o, h = uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_HUGE_PAGES
    SET, GET = uapi.IOMMU_OPTION_OP_SET, uapi.IOMMU_OPTION_OP_GET
    assert env.ioctl(uapi.IOMMU_OPTION, option_id=o, op=GET, val64=1)[1]["val64"] == 0
    env.ioctl(uapi.IOMMU_OPTION, option_id=o, op=SET, val64=1)
    assert err(lambda: env.ioctl(uapi.IOMMU_OPTION, option_id=o, op=SET, val64=2)) == errno.EINVAL
    assert env.fd.option_get(o) == 1
    env.fd.option_set(o, 0)
    assert err(lambda: env.ioctl(uapi.IOMMU_OPTION, option_id=h, op=GET)) == errno.ENOENT
    assert err(lambda: env.ioctl(uapi.IOMMU_OPTION, option_id=h, op=SET)) == errno.ENOENT


def test_ioas_destroy(env: Any, ioas: int) -> None:
    env.fd.destroy(ioas)


def test_ioas_area_destroy(env: Any, ioas: int) -> None:
    env.fd.ioas_map(ioas, env.buf, P, iova=0)
    env.fd.destroy(ioas)


def test_ioas_area_auto_destroy(env: Any, ioas: int) -> None:
    for i in range(10):
        env.fd.ioas_map(ioas, env.buf, P, iova=i * P)
    env.fd.close()


def test_area(env: Any, ioas: int) -> None:
    def unmap(iova: int, length: int) -> int:
        return err(lambda: env.fd.ioas_unmap(ioas, iova, length))

    def map_fixed(length: int, iova: int) -> int:
        return err(lambda: env.fd.ioas_map(ioas, env.buf, length, iova=iova))

    for i in range(10):
        assert unmap(i * P, P) == errno.ENOENT
    for i in range(10):
        assert map_fixed(P, i * P) == 0
    for i in range(10):
        assert unmap(i * P, P) == 0
    assert map_fixed(2 * P, 16 * P) == 0
    assert unmap(16 * P, P) == errno.ENOENT
    assert unmap(17 * P, P) == errno.ENOENT
    for length, at in [(2, 16), (1, 16), (1, 17), (2, 15), (3, 15)]:
        assert map_fixed(length * P, at * P) == errno.EEXIST
    assert unmap(0, U64) == 0
    assert unmap(0, U64) == 0


def test_unmap_fully_contained_areas(env: Any, ioas: int) -> None:
    base = 4 * P
    for i in range(4):
        env.fd.ioas_map(ioas, env.buf, 8 * P, iova=base + i * 16 * P)
    assert err(lambda: env.fd.ioas_unmap(ioas, base - 4 * P, 8 * P)) == errno.ENOENT
    assert err(lambda: env.fd.ioas_unmap(ioas, base + 3 * 16 * P + 4 * P, 8 * P)) == errno.ENOENT
    assert env.fd.ioas_unmap(ioas, base - 4 * P, 3 * 16 * P + 8 * P + 4 * P) == 32 * P


def test_area_auto_iova(env: Any, ioas: int) -> None:
    iovas = [env.fd.ioas_map(ioas, env.buf, P) for _ in range(10)]
    for iova in iovas:
        env.fd.ioas_unmap(ioas, iova, P)
    lengths = [P * (i + 1) for i in range(10)]
    iovas = [env.fd.ioas_map(ioas, 1 << 31, n) for n in lengths]
    for iova, n in zip(iovas, lengths, strict=True):
        assert iova % (n & -n) == 0
        env.fd.ioas_unmap(ioas, iova, n)
    start, length = 4 * P, 100 * P
    env.ioas(ioas).iopt.reserve_iova(start, start + length - 1, "test")
    iovas = [env.fd.ioas_map(ioas, env.buf, n) for n in lengths]
    for iova, n in zip(iovas, lengths, strict=True):
        assert iova % (n & -n) == 0
        assert not start < iova < start + length
        env.fd.ioas_unmap(ioas, iova, n)
    assert err(lambda: env.fd.ioas_allow_iovas(ioas, [IovaRange(P, 600 * P)])) == errno.EADDRINUSE
    allowed = IovaRange(200 * P, 600 * P - 1)
    env.fd.ioas_allow_iovas(ioas, [allowed])
    for n in lengths:
        iova = env.fd.ioas_map(ioas, env.buf, n)
        assert iova % (n & -n) == 0
        assert allowed.start <= iova and iova + n <= allowed.last + 1


def test_reserved_overflow(env: Any, ioas: int) -> None:
    env.ioas(ioas).iopt.reserve_iova(6, 6 + 0xFFFFFFFFFFFF8001 - 1, "test")
    assert err(lambda: env.fd.ioas_map(ioas, env.buf, 0x5000)) == errno.ENOSPC


def test_area_allowed(env: Any, ioas: int) -> None:
    iopt = env.ioas(ioas).iopt
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0, 600 * P)])
    assert err(lambda: iopt.reserve_iova(P, 2 * P - 1, "test")) == errno.EADDRINUSE
    env.fd.ioas_allow_iovas(ioas, [])
    iopt.reserve_iova(P, 2 * P - 1, "test")
    assert err(lambda: env.fd.ioas_allow_iovas(ioas, [IovaRange(0, 600 * P)])) == errno.EADDRINUSE


def test_copy_area(env: Any, ioas: int) -> None:
    flags = FIXED | uapi.IOMMU_IOAS_MAP_WRITEABLE
    env.fd.ioas_map(ioas, env.buf, P, iova=0)
    env.ioctl(
        uapi.IOMMU_IOAS_COPY,
        flags=flags,
        dst_ioas_id=ioas,
        src_ioas_id=ioas,
        length=P,
        src_iova=0,
        dst_iova=P,
    )
    dst = env.fd.ioas_alloc()
    env.ioctl(uapi.IOMMU_IOAS_COPY, flags=flags, dst_ioas_id=dst, src_ioas_id=ioas, length=P)


def test_iova_ranges(env: Any, ioas: int) -> None:
    s, rs = uapi.STRUCTS["iommu_ioas_iova_ranges"], uapi.STRUCTS["iommu_iova_range"]
    va = env.fd.scratch_va

    def call(num: int) -> tuple[int, dict[str, int]]:
        arg = s.encode(size=s.size, ioas_id=ioas, num_iovas=num, allowed_iovas=va)
        e = err(lambda: env.fd.file.ioctl(uapi.IOMMU_IOAS_IOVA_RANGES, arg))
        return e, s.decode(arg)

    def rng(i: int) -> tuple[int, int]:
        d = rs.decode(env.user.read(va + 16 * i, 16))
        return d["start"], d["last"]

    e, out = call(BUFFER_SIZE // 16)
    assert (e, out["num_iovas"], rng(0), out["out_iova_alignment"]) == (0, 1, (0, U64), 1)
    env.user.write(va, bytes(BUFFER_SIZE))
    e, out = call(0)
    assert (e, out["num_iovas"], rng(0)) == (errno.EMSGSIZE, 1, (0, 0))
    env.ioas(ioas).iopt.reserve_iova(P, 2 * P - 1, "test")
    e, out = call(BUFFER_SIZE // 16)
    assert (e, out["num_iovas"], rng(0), rng(1)) == (0, 2, (0, P - 1), (2 * P, U64))
    env.user.write(va, bytes(BUFFER_SIZE))
    e, out = call(1)
    assert (e, out["num_iovas"], rng(0), rng(1)) == (errno.EMSGSIZE, 2, (0, P - 1), (0, 0))


def test_ioas_option_huge_pages(env: Any, ioas: int) -> None:
    h = uapi.IOMMU_OPTION_HUGE_PAGES
    SET, GET = uapi.IOMMU_OPTION_OP_SET, uapi.IOMMU_OPTION_OP_GET
    assert (
        env.ioctl(uapi.IOMMU_OPTION, option_id=h, op=GET, val64=3, object_id=ioas)[1]["val64"] == 1
    )
    env.ioctl(uapi.IOMMU_OPTION, option_id=h, op=SET, val64=0, object_id=ioas)
    assert (
        env.ioctl(uapi.IOMMU_OPTION, option_id=h, op=GET, val64=3, object_id=ioas)[1]["val64"] == 0
    )
    bad = err(lambda: env.ioctl(uapi.IOMMU_OPTION, option_id=h, op=SET, val64=2, object_id=ioas))
    assert bad == errno.EINVAL
    env.ioctl(uapi.IOMMU_OPTION, option_id=h, op=SET, val64=1, object_id=ioas)


def test_ioas_iova_alloc(env: Any, ioas: int) -> None:
    for length in range(1, 2 * P):
        iova = env.fd.ioas_map(ioas, env.buf, length)
        env.fd.ioas_unmap(ioas, iova, length)


def test_ioas_align_change(env: Any, ioas: int) -> None:
    h = uapi.IOMMU_OPTION_HUGE_PAGES
    env.fd.ioas_map(ioas, env.buf, P, iova=MOCK_APERTURE_START)
    env.fd.option_set(h, 0, ioas)
    misaligned = err(
        lambda: env.fd.ioas_map(ioas, env.buf + 0x800, P, iova=MOCK_APERTURE_START + P)
    )
    assert misaligned == errno.EINVAL
    env.fd.option_set(h, 0, ioas)
    env.fd.option_set(h, 1, ioas)
    env.fd.ioas_map(ioas, env.buf + 0x800, P, iova=MOCK_APERTURE_START + P)
    assert err(lambda: env.fd.option_set(h, 0, ioas)) == errno.EADDRINUSE
    env.fd.ioas_unmap(ioas, MOCK_APERTURE_START + P, P)
    env.fd.ioas_unmap(ioas, MOCK_APERTURE_START, P)


def test_copy_sweep(env: Any, ioas: int) -> None:
    dst = env.fd.ioas_alloc()
    last_iova = MOCK_APERTURE_START + BUFFER_SIZE - 2
    env.fd.ioas_map(ioas, env.buf, last_iova - MOCK_APERTURE_START + 1, iova=MOCK_APERTURE_START)
    flags = FIXED | uapi.IOMMU_IOAS_MAP_WRITEABLE
    length = 0x800  # MOCK_PAGE_SIZE
    for iova in range(MOCK_APERTURE_START - P, last_iova + 1, 511):

        def copy(iova: int = iova) -> object:
            return env.ioctl(
                uapi.IOMMU_IOAS_COPY,
                flags=flags,
                dst_ioas_id=dst,
                src_ioas_id=ioas,
                length=length,
                src_iova=iova,
                dst_iova=MOCK_APERTURE_START,
            )

        if iova < MOCK_APERTURE_START or iova + length - 1 > last_iova:
            assert err(copy) == errno.ENOENT
        else:
            assert err(copy) == 0
            env.fd.ioas_unmap(dst, MOCK_APERTURE_START, length)
    env.fd.destroy(dst)
