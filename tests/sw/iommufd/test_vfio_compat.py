"""The VFIO type1 container ioctls on iommufd (Linux 7.3 ``vfio_compat.c``), after the
selftest's ``vfio_compat_mock_domain`` fixture (tools/testing/selftests/iommu/iommufd.c):
SET_IOMMU for type1 and type1v2, GET_INFO's capability chain at every argsz, MAP_DMA and
UNMAP_DMA with its flags, and every errno with the state unchanged."""

from __future__ import annotations

import errno
import random
from typing import Any, Final

import pytest

from iommusim.errors import (
    AddressInUse,
    ApiError,
    BadAddress,
    Busy,
    Exists,
    InappropriateIoctl,
    InvalidArgument,
    ModelError,
    NoDevice,
    NotFound,
    Overflow,
)
from iommusim.sw.core.domain import DOMAIN_UNMANAGED, Domain
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd import vfio_uapi as v
from iommusim.sw.iommufd.iopt import ULONG_MAX
from iommusim.sw.iommufd.objects import IommufdObject, ObjType
from iommusim.sw.iommufd.vfio_compat import (
    int_arg,
    vfio_compat_ioas_create,
    vfio_compat_ioas_get_id,
)
from iommusim.sw.prot import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE

INFO = v.VFIO_STRUCTS["vfio_iommu_type1_info"]
MAP = v.VFIO_STRUCTS["vfio_iommu_type1_dma_map"]
UNMAP = v.VFIO_STRUCTS["vfio_iommu_type1_dma_unmap"]
RW: Final = v.VFIO_DMA_MAP_FLAG_READ | v.VFIO_DMA_MAP_FLAG_WRITE
IOVA: Final = 0x10_0000
PAGE: Final = 0x1000
BUFSZ: Final = 4096
#: ``env.buf`` (conftest maps it there) and the page after the one mapped first.
BUF: Final = 0x4000_0000
NEXT: Final = BUF + 0x1000


def compat(env: Any, version: int = v.VFIO_TYPE1v2_IOMMU) -> int:
    """The selftest's fixture: an IOAS set as the compat IOAS, then SET_IOMMU."""
    ioas_id = env.fd.ioas_alloc()
    env.ioctl(uapi.IOMMU_VFIO_IOAS, ioas_id=ioas_id, op=uapi.IOMMU_VFIO_IOAS_SET)
    assert ioctl(env, v.VFIO_SET_IOMMU, int_arg(version)) == 0
    return int(ioas_id)


def ioctl(env: Any, request: int, arg: bytearray) -> int:
    return int(env.fd.file.ioctl(request, arg))


def buffer(struct_bytes: bytes | bytearray, size: int = BUFSZ) -> bytearray:
    """The struct at the start of a buffer filled with 0xAA (the selftest's
    ``ioctl_check_buf``)."""
    return bytearray(struct_bytes) + bytearray(b"\xaa" * (size - len(struct_bytes)))


def map_arg(vaddr: int, iova: int, size: int, flags: int = RW, argsz: int = 32) -> bytearray:
    return MAP.encode(argsz=argsz, flags=flags, vaddr=vaddr, iova=iova, size=size)


def unmap_arg(iova: int, size: int, flags: int = 0, argsz: int = 24) -> bytearray:
    return UNMAP.encode(argsz=argsz, flags=flags, iova=iova, size=size)


def areas(env: Any, ioas_id: int) -> list[tuple[int, int]]:
    return [(a.iova, a.last) for a in env.ioas(ioas_id).iopt.areas]


# ------------------------------------------------------------------ the header as data
def test_struct_layouts_are_the_headers() -> None:
    """Sizes and offsets as gcc lays out Linux 7.3 ``include/uapi/linux/vfio.h``."""
    hdr = [("header.id", 0), ("header.version", 2), ("header.next", 4)]
    golden = {
        "vfio_iommu_type1_info": (
            24,
            [("argsz", 0), ("flags", 4), ("iova_pgsizes", 8), ("cap_offset", 16), ("pad", 20)],
        ),
        "vfio_info_cap_header": (8, [("id", 0), ("version", 2), ("next", 4)]),
        "vfio_iova_range": (16, [("start", 0), ("end", 8)]),
        "vfio_iommu_type1_info_cap_iova_range": (
            16,
            [*hdr, ("nr_iovas", 8), ("reserved", 12)],
        ),
        "vfio_iommu_type1_info_cap_migration": (
            32,
            [*hdr, ("flags", 8), ("pgsize_bitmap", 16), ("max_dirty_bitmap_size", 24)],
        ),
        "vfio_iommu_type1_info_dma_avail": (
            12,
            [*hdr, ("avail", 8)],
        ),
        "vfio_iommu_type1_dma_map": (
            32,
            [("argsz", 0), ("flags", 4), ("vaddr", 8), ("iova", 16), ("size", 24)],
        ),
        "vfio_iommu_type1_dma_unmap": (
            24,
            [("argsz", 0), ("flags", 4), ("iova", 8), ("size", 16)],
        ),
        "vfio_iommu_type1_dirty_bitmap": (8, [("argsz", 0), ("flags", 4)]),
    }
    assert set(v.VFIO_STRUCTS) == set(golden)
    for name, (size, fields) in golden.items():
        s = v.VFIO_STRUCTS[name]
        assert s.size == size, name
        assert [(f.name, f.offset) for f in s.fields] == fields, name


def test_ioctl_numbers_are_the_headers() -> None:
    assert (
        v.VFIO_GET_API_VERSION,
        v.VFIO_CHECK_EXTENSION,
        v.VFIO_SET_IOMMU,
        v.VFIO_IOMMU_GET_INFO,
        v.VFIO_IOMMU_MAP_DMA,
        v.VFIO_IOMMU_UNMAP_DMA,
        v.VFIO_IOMMU_DIRTY_PAGES,
    ) == (0x3B64, 0x3B65, 0x3B66, 0x3B70, 0x3B71, 0x3B72, 0x3B75)


# ------------------------------------------------------------------ integer ioctls
def test_api_version_ignores_its_argument(env: Any) -> None:
    assert ioctl(env, v.VFIO_GET_API_VERSION, bytearray()) == v.VFIO_API_VERSION == 0


@pytest.mark.parametrize(
    ("ext", "answer"),
    [
        (v.VFIO_TYPE1_IOMMU, 1),
        (v.VFIO_TYPE1v2_IOMMU, 1),
        (v.VFIO_UNMAP_ALL, 1),
        (v.VFIO_NOIOMMU_IOMMU, 0),  # no CONFIG_VFIO_NOIOMMU
        (v.VFIO_RESERVED_TYPE1_NESTING_IOMMU, 0),
        (v.VFIO_UPDATE_VADDR, 0),
        (v.VFIO_SPAPR_TCE_IOMMU, 0),
        (v.VFIO_EEH, 0),
        (0, 0),
        (1 << 32 | v.VFIO_TYPE1_IOMMU, 0),  # the whole unsigned long counts
    ],
)
def test_check_extension(env: Any, ext: int, answer: int) -> None:
    assert ioctl(env, v.VFIO_CHECK_EXTENSION, int_arg(ext)) == answer


class StandInHwpt(IommufdObject):
    type = ObjType.HWPT_PAGING

    def __init__(self, ioas: object, coherent: bool) -> None:
        super().__init__()
        self.ioas = ioas
        self.enforce_cache_coherency = coherent


def test_dma_cc_iommu_needs_the_compat_ioas_and_coherent_hwpts(env: Any) -> None:
    cc = int_arg(v.VFIO_DMA_CC_IOMMU)
    env.fails(NoDevice, errno.ENODEV, lambda: ioctl(env, v.VFIO_CHECK_EXTENSION, cc))
    ioas_id = compat(env)
    assert ioctl(env, v.VFIO_CHECK_EXTENSION, cc) == 1
    objs = env.fd.file.objects
    for hwpt in (StandInHwpt(env.ioas(ioas_id), True), StandInHwpt(object(), False)):
        objs.reserve(hwpt)
        objs.finalize(hwpt)
    assert ioctl(env, v.VFIO_CHECK_EXTENSION, cc) == 1
    incoherent = StandInHwpt(env.ioas(ioas_id), False)
    objs.reserve(incoherent)
    objs.finalize(incoherent)
    assert ioctl(env, v.VFIO_CHECK_EXTENSION, cc) == 0


def test_an_integer_argument_is_eight_bytes(env: Any) -> None:
    with pytest.raises(ModelError):
        ioctl(env, v.VFIO_CHECK_EXTENSION, bytearray(4))


@pytest.mark.parametrize(
    "iommu_type",
    [v.VFIO_NOIOMMU_IOMMU, v.VFIO_SPAPR_TCE_IOMMU, 0, 1 << 32 | v.VFIO_TYPE1_IOMMU],
)
def test_set_iommu_of_another_type_is_einval(env: Any, iommu_type: int) -> None:
    compat(env)
    env.fails(
        InvalidArgument,
        errno.EINVAL,
        lambda: ioctl(env, v.VFIO_SET_IOMMU, int_arg(iommu_type)),
    )


def test_set_iommu_without_a_compat_ioas_is_enodev(env: Any) -> None:
    arg = int_arg(v.VFIO_TYPE1v2_IOMMU)
    env.fails(NoDevice, errno.ENODEV, lambda: ioctl(env, v.VFIO_SET_IOMMU, arg))


@pytest.mark.parametrize(("version", "huge"), [(v.VFIO_TYPE1v2_IOMMU, 1), (v.VFIO_TYPE1_IOMMU, 0)])
def test_type1_disables_huge_pages(env: Any, version: int, huge: int) -> None:
    """The selftest's ``option_huge_pages``."""
    ioas_id = compat(env, version)
    assert env.fd.option_get(uapi.IOMMU_OPTION_HUGE_PAGES, ioas_id) == huge


def test_type1_over_a_misaligned_area_is_eaddrinuse(env: Any) -> None:
    ioas_id = compat(env)
    env.fd.ioas_map(ioas_id, env.buf + 0x800, 0x800, iova=IOVA + 0x800)
    arg = int_arg(v.VFIO_TYPE1_IOMMU)
    env.fails(AddressInUse, errno.EADDRINUSE, lambda: ioctl(env, v.VFIO_SET_IOMMU, arg))


# ------------------------------------------------------------------ GET_INFO
def test_get_info_pre_cap_abi(env: Any) -> None:
    """argsz up to ``cap_offset``: only those 16 bytes are written."""
    compat(env)
    arg = buffer(INFO.encode(argsz=INFO.offsetofend("iova_pgsizes"))[:16])
    assert ioctl(env, v.VFIO_IOMMU_GET_INFO, arg) == 0
    info = INFO.decode(arg[:24])
    assert info["flags"] == v.VFIO_IOMMU_INFO_PGSIZES | v.VFIO_IOMMU_INFO_CAPS
    assert info["iova_pgsizes"] == 0xFFFF_FFFF_FFFF_F000
    assert info["argsz"] == 24 + 16 + 32
    assert arg[16:] == b"\xaa" * (BUFSZ - 16)


def test_get_info_reports_the_chain_size_and_writes_nothing_past_argsz(env: Any) -> None:
    """The selftest's ``get_info``: every argsz below the chain's size."""
    compat(env)
    arg = buffer(INFO.encode(argsz=24))
    ioctl(env, v.VFIO_IOMMU_GET_INFO, arg)
    info = INFO.decode(arg)
    assert info["cap_offset"] == 0 and info["argsz"] == 72
    for argsz in range(24, 72):
        arg = buffer(INFO.encode(argsz=argsz))
        assert ioctl(env, v.VFIO_IOMMU_GET_INFO, arg) == 0
        info = INFO.decode(arg)
        assert info["flags"] == v.VFIO_IOMMU_INFO_PGSIZES | v.VFIO_IOMMU_INFO_CAPS
        assert info["cap_offset"] == 0 and info["argsz"] == 72
        assert arg[argsz:] == b"\xaa" * (BUFSZ - argsz), argsz


def test_get_info_with_room_for_the_chain(env: Any) -> None:
    compat(env)
    arg = buffer(INFO.encode(argsz=72))
    ioctl(env, v.VFIO_IOMMU_GET_INFO, arg)
    info = INFO.decode(arg)
    assert info["cap_offset"] == 24 and info["argsz"] == 72
    # DMA_AVAIL (12 bytes, padded to 16) then IOVA_RANGE with the one range.
    assert arg[24:72] == bytes.fromhex(
        "0300" "0100" "28000000" "ffffffff" "aaaaaaaa"
        "0100" "0100" "00000000" "01000000" "00000000"
        "0000000000000000" "ffffffffffffffff"
    )  # fmt: skip
    assert arg[72:] == b"\xaa" * (BUFSZ - 72)


def test_get_info_ranges_are_the_holes_of_the_reserved_ranges(env: Any) -> None:
    ioas_id = compat(env)
    env.ioas(ioas_id).iopt.reserve_iova(0, 0xFFFF, "aperture")
    env.ioas(ioas_id).iopt.reserve_iova(0x1_0000_0000, ULONG_MAX, "aperture")
    env.ioas(ioas_id).iopt.reserve_iova(0x8000_0000, 0x8FFF_FFFF, "msi")
    arg = buffer(INFO.encode(argsz=24))
    ioctl(env, v.VFIO_IOMMU_GET_INFO, arg)
    total = INFO.decode(arg)["argsz"]
    assert total == 24 + 16 + 16 + 2 * 16
    arg = buffer(INFO.encode(argsz=total))
    ioctl(env, v.VFIO_IOMMU_GET_INFO, arg)
    cap = v.VFIO_STRUCTS["vfio_iommu_type1_info_cap_iova_range"].decode(arg[40:56])
    assert cap["nr_iovas"] == 2 and cap["header.next"] == 0
    rng = v.VFIO_STRUCTS["vfio_iova_range"]
    assert [rng.decode(arg[56 + 16 * i :]) for i in range(2)] == [
        {"start": 0x1_0000, "end": 0x7FFF_FFFF},
        {"start": 0x9000_0000, "end": 0xFFFF_FFFF},
    ]


def test_get_info_page_sizes_fold_sub_pages_and_follow_the_domains(env: Any) -> None:
    ioas_id = compat(env)
    iopt = env.ioas(ioas_id).iopt
    iopt.domains.append(Domain(DOMAIN_UNMANAGED, None, pgsize_bitmap=0x20_1800))
    iopt.domains.append(Domain(DOMAIN_UNMANAGED, None, pgsize_bitmap=0x4020_1000))
    arg = buffer(INFO.encode(argsz=24))
    ioctl(env, v.VFIO_IOMMU_GET_INFO, arg)
    assert INFO.decode(arg)["iova_pgsizes"] == 0x20_1000


@pytest.mark.parametrize(
    ("arg", "exc", "code"),
    [
        (bytearray(15), BadAddress, errno.EFAULT),
        (INFO.encode(argsz=15), InvalidArgument, errno.EINVAL),
        (INFO.encode(argsz=16)[:16], None, 0),  # fits exactly: no fault
        (INFO.encode(argsz=72), BadAddress, errno.EFAULT),  # argsz past the buffer
    ],
)
def test_get_info_errnos(env: Any, arg: bytearray, exc: type[ApiError] | None, code: int) -> None:
    compat(env)
    if exc is None:
        assert ioctl(env, v.VFIO_IOMMU_GET_INFO, arg) == 0
    else:
        env.fails(exc, code, lambda: ioctl(env, v.VFIO_IOMMU_GET_INFO, arg))


def test_get_info_without_a_compat_ioas_is_enodev(env: Any) -> None:
    arg = buffer(INFO.encode(argsz=24))
    env.fails(NoDevice, errno.ENODEV, lambda: ioctl(env, v.VFIO_IOMMU_GET_INFO, arg))
    assert arg == buffer(INFO.encode(argsz=24))


# ------------------------------------------------------------------ MAP_DMA / UNMAP_DMA
def test_map_and_unmap_as_the_selftest(env: Any) -> None:
    """The selftest's ``map``."""
    ioas_id = compat(env)
    size = 0x10_0000
    assert ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, size)) == 0
    (area,) = env.ioas(ioas_id).iopt.areas
    assert (area.iova, area.length) == (IOVA, size)
    assert area.prot == IOMMU_CACHE | IOMMU_READ | IOMMU_WRITE
    arg = unmap_arg(IOVA, size)
    assert ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, arg) == 0
    assert UNMAP.decode(arg)["size"] == size and areas(env, ioas_id) == []
    # Unmap of empty is success.
    assert ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, arg) == 0
    assert UNMAP.decode(arg)["size"] == 0
    # UNMAP_FLAG_ALL requires 0 iova/size.
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, size))
    bad = unmap_arg(IOVA, size, v.VFIO_DMA_UNMAP_FLAG_ALL)
    env.fails(InvalidArgument, errno.EINVAL, lambda: ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, bad))
    assert bad == unmap_arg(IOVA, size, v.VFIO_DMA_UNMAP_FLAG_ALL)  # not written back
    arg = unmap_arg(0, 0, v.VFIO_DMA_UNMAP_FLAG_ALL)
    assert ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, arg) == 0
    assert UNMAP.decode(arg)["size"] == size
    # Small pages, unmapped in a shuffled order.
    npages = size // PAGE
    for i in range(npages):
        m = map_arg(env.buf + i * PAGE, IOVA + i * PAGE, PAGE)
        assert ioctl(env, v.VFIO_IOMMU_MAP_DMA, m) == 0
    order = list(range(npages))
    random.Random(5).shuffle(order)
    for i in order:
        assert ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, unmap_arg(IOVA + i * PAGE, PAGE)) == 0
    assert areas(env, ioas_id) == []


@pytest.mark.parametrize("version", [v.VFIO_TYPE1v2_IOMMU, v.VFIO_TYPE1_IOMMU])
def test_type1_cuts_larger_mappings_type1v2_refuses(env: Any, version: int) -> None:
    """The selftest's ``huge_map``: 16 pieces of one mapping, in a shuffled order."""
    ioas_id = compat(env, version)
    size = 0x10_0000
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, size))
    piece = size // 16
    order = list(range(16))
    random.Random(7).shuffle(order)
    for i in order:
        arg = unmap_arg(IOVA + i * piece, piece)
        if version == v.VFIO_TYPE1_IOMMU:
            assert ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, arg) == 0
            assert UNMAP.decode(arg)["size"] == piece
        else:
            env.fails(NotFound, errno.ENOENT, lambda a=arg: ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, a))
            assert UNMAP.decode(arg)["size"] == 0
    if version == v.VFIO_TYPE1_IOMMU:
        assert areas(env, ioas_id) == []
        assert env.user.pins == {}
    else:
        assert areas(env, ioas_id) == [(IOVA, IOVA + size - 1)]


def test_type1_cut_keeps_the_pages_shared_and_translations_intact(env: Any) -> None:
    ioas_id = compat(env, v.VFIO_TYPE1_IOMMU)
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, 4 * PAGE))
    ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, unmap_arg(IOVA + PAGE, PAGE))
    got = env.ioas(ioas_id).iopt.areas
    assert [(a.iova, a.last, a.start_byte) for a in got] == [
        (IOVA, IOVA + PAGE - 1, 0),
        (IOVA + 2 * PAGE, IOVA + 4 * PAGE - 1, 2 * PAGE),
    ]
    assert got[0].pages is got[1].pages and got[0].pages.refs == 2


def test_a_cut_is_refused_where_the_kernel_refuses_a_split(env: Any) -> None:
    """``iopt_area_split``: EINVAL while an access uses the area, or while domains hold it
    and large pages are enabled (type1v2); a cut at an area's edge is nothing."""
    ioas_id = compat(env)
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, 4 * PAGE))
    iopt = env.ioas(ioas_id).iopt
    iopt.cut_iova([IOVA - 1, IOVA + 4 * PAGE - 1])
    assert areas(env, ioas_id) == [(IOVA, IOVA + 4 * PAGE - 1)]
    iopt.domains.append(Domain(DOMAIN_UNMANAGED, None, pgsize_bitmap=PAGE))
    with pytest.raises(InvalidArgument, match="large pages"):
        iopt.cut_iova([IOVA + PAGE - 1])
    iopt.domains.clear()
    iopt.areas[0].num_accesses = 1
    with pytest.raises(InvalidArgument, match="access"):
        iopt.cut_iova([IOVA + PAGE - 1])
    assert areas(env, ioas_id) == [(IOVA, IOVA + 4 * PAGE - 1)]


def test_type1_cut_at_a_misaligned_point_is_einval(env: Any) -> None:
    compat(env, v.VFIO_TYPE1_IOMMU)
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, 4 * PAGE))
    arg = unmap_arg(IOVA + 0x800, PAGE)
    env.fails(InvalidArgument, errno.EINVAL, lambda: ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, arg))
    assert arg == unmap_arg(IOVA + 0x800, PAGE)


@pytest.mark.parametrize(
    ("arg", "exc", "code"),
    [
        (bytearray(31), BadAddress, errno.EFAULT),
        (map_arg(NEXT, IOVA, PAGE, argsz=31), InvalidArgument, errno.EINVAL),
        (map_arg(NEXT, IOVA, PAGE, flags=v.VFIO_DMA_MAP_FLAG_VADDR), InvalidArgument, errno.EINVAL),
        (map_arg(NEXT, IOVA, PAGE, flags=1 << 7), InvalidArgument, errno.EINVAL),
        (map_arg(NEXT, IOVA, 0), InvalidArgument, errno.EINVAL),
        (map_arg(0, IOVA, ULONG_MAX), InvalidArgument, errno.EINVAL),
        (map_arg(1, IOVA, ULONG_MAX), Overflow, errno.EOVERFLOW),
        (map_arg(NEXT, IOVA + 0x10, PAGE), Exists, errno.EEXIST),  # over the existing area
    ],
)
def test_map_dma_errnos(env: Any, arg: bytearray, exc: type[ApiError], code: int) -> None:
    compat(env)
    assert env.buf == BUF
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, PAGE))
    env.fails(exc, code, lambda: ioctl(env, v.VFIO_IOMMU_MAP_DMA, arg))


def test_map_dma_of_read_only_memory_pins_nothing_yet(env: Any) -> None:
    ioas_id = compat(env)
    arg = map_arg(env.ro, IOVA, PAGE)
    # Pinning is lazy without domains: the map succeeds, a pin for write would fail.
    assert ioctl(env, v.VFIO_IOMMU_MAP_DMA, arg) == 0
    assert areas(env, ioas_id) == [(IOVA, IOVA + PAGE - 1)]


def test_map_dma_without_read_or_write_maps_cache_only(env: Any) -> None:
    """The compat map takes any subset of READ | WRITE (IOAS_MAP needs one)."""
    ioas_id = compat(env)
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, PAGE, flags=0))
    assert env.ioas(ioas_id).iopt.areas[0].prot == IOMMU_CACHE


@pytest.mark.parametrize(
    ("arg", "exc", "code", "size_back"),
    [
        (bytearray(23), BadAddress, errno.EFAULT, None),
        (unmap_arg(IOVA, PAGE, argsz=23), InvalidArgument, errno.EINVAL, None),
        (
            unmap_arg(IOVA, PAGE, v.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP),
            InvalidArgument,
            errno.EINVAL,
            None,
        ),
        (unmap_arg(IOVA, PAGE, v.VFIO_DMA_UNMAP_FLAG_VADDR), InvalidArgument, errno.EINVAL, None),
        (unmap_arg(0, 1, v.VFIO_DMA_UNMAP_FLAG_ALL), InvalidArgument, errno.EINVAL, None),
        # iopt_unmap_iova's own checks: the size comes back as 0.
        (unmap_arg(IOVA, 0), InvalidArgument, errno.EINVAL, 0),
        (unmap_arg(ULONG_MAX, 2), Overflow, errno.EOVERFLOW, 0),
        (unmap_arg(IOVA, PAGE // 2), NotFound, errno.ENOENT, 0),  # inside the area
    ],
)
def test_unmap_dma_errnos(
    env: Any, arg: bytearray, exc: type[ApiError], code: int, size_back: int | None
) -> None:
    compat(env)
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, PAGE))
    before = bytes(arg)
    env.fails(exc, code, lambda: ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, arg))
    if size_back is None:
        assert bytes(arg) == before
    else:
        assert UNMAP.decode(arg)["size"] == size_back


def test_unmap_of_a_locked_area_is_ebusy_with_the_bytes_unmapped_before_it(env: Any) -> None:
    ioas_id = compat(env)
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf, IOVA, PAGE))
    ioctl(env, v.VFIO_IOMMU_MAP_DMA, map_arg(env.buf + PAGE, IOVA + PAGE, PAGE))
    env.ioas(ioas_id).iopt.areas[1].num_locks = 1
    arg = unmap_arg(IOVA, 2 * PAGE)
    with pytest.raises(Busy):
        ioctl(env, v.VFIO_IOMMU_UNMAP_DMA, arg)
    assert UNMAP.decode(arg)["size"] == PAGE and areas(env, ioas_id) == [
        (IOVA + PAGE, IOVA + 2 * PAGE - 1)
    ]


@pytest.mark.parametrize("request_", [v.VFIO_IOMMU_MAP_DMA, v.VFIO_IOMMU_UNMAP_DMA])
def test_map_and_unmap_without_a_compat_ioas_are_enodev(env: Any, request_: int) -> None:
    arg = map_arg(env.buf, IOVA, PAGE) if request_ == v.VFIO_IOMMU_MAP_DMA else unmap_arg(0, 0)
    env.fails(NoDevice, errno.ENODEV, lambda: ioctl(env, request_, arg))


@pytest.mark.parametrize(
    "request_",
    [
        v.VFIO_IOMMU_DIRTY_PAGES,  # 7.3's compatibility does not provide it
        0x3B00 | 103,  # VFIO_GROUP_GET_STATUS: a group fd's ioctl
        0x3B00 | 115,  # VFIO_IOMMU_ENABLE (SPAPR)
        0x5600 | 100,  # right nr, another type byte
    ],
)
def test_other_vfio_numbers_are_enotty(env: Any, request_: int) -> None:
    compat(env)
    env.fails(InappropriateIoctl, errno.ENOTTY, lambda: ioctl(env, request_, bytearray(64)))


# ------------------------------------------------------------------ the compat IOAS
def test_compat_ioas_create_makes_one_user_visible_ioas(env: Any) -> None:
    f = env.fd.file
    env.fails(NoDevice, errno.ENODEV, lambda: vfio_compat_ioas_get_id(f))
    vfio_compat_ioas_create(f)
    ioas_id = vfio_compat_ioas_get_id(f)
    assert ioas_id == 1 and f.objects.get(1, ObjType.IOAS) is f.vfio_ioas
    _, out = env.ioctl(uapi.IOMMU_VFIO_IOAS, op=uapi.IOMMU_VFIO_IOAS_GET)
    assert out["ioas_id"] == 1
    # A second create keeps the one there; the id it reserved is free again.
    vfio_compat_ioas_create(f)
    assert vfio_compat_ioas_get_id(f) == 1 and len(f.objects) == 1
    assert env.fd.ioas_alloc() == 2
    # Destroying it clears the compat IOAS.
    env.fd.destroy(1)
    env.fails(NoDevice, errno.ENODEV, lambda: vfio_compat_ioas_get_id(f))


def test_compat_ioas_create_keeps_a_set_one(env: Any) -> None:
    ioas_id = compat(env)
    vfio_compat_ioas_create(env.fd.file)
    assert vfio_compat_ioas_get_id(env.fd.file) == ioas_id and len(env.fd.file.objects) == 1


def test_the_pythonic_face(env: Any) -> None:
    fd = env.fd
    ioas_id = fd.ioas_alloc()
    env.ioctl(uapi.IOMMU_VFIO_IOAS, ioas_id=ioas_id, op=uapi.IOMMU_VFIO_IOAS_SET)
    assert fd.vfio_check_extension(v.VFIO_TYPE1v2_IOMMU) == 1
    fd.vfio_set_iommu(v.VFIO_TYPE1v2_IOMMU)
    info = fd.vfio_iommu_get_info()
    assert info.iova_pgsizes == 0xFFFF_FFFF_FFFF_F000 and info.dma_avail == 0xFFFF_FFFF
    assert [(r.start, r.last) for r in info.iova_ranges] == [(0, ULONG_MAX)]
    fd.vfio_map_dma(env.buf, IOVA, 2 * PAGE)
    assert areas(env, ioas_id) == [(IOVA, IOVA + 2 * PAGE - 1)]
    assert fd.vfio_unmap_dma(IOVA, 2 * PAGE) == 2 * PAGE
    fd.vfio_map_dma(env.buf, IOVA, PAGE)
    assert fd.vfio_unmap_dma(0, 0, v.VFIO_DMA_UNMAP_FLAG_ALL) == PAGE
