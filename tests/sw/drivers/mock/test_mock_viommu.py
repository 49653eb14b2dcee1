"""The mock vIOMMU: allocation with its mmap region, nested domains on it, per-device cache
invalidation and hardware queues (selftest.c: mock_get_viommu_size, mock_viommu_init,
mock_viommu_destroy, mock_viommu_alloc_domain_nested, mock_viommu_cache_invalidate,
mock_viommu_get_hw_queue_size, mock_hw_queue_init_phys, mock_hw_queue_destroy,
mock_domain_nop_attach's vDEVICE lookup)."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import ApiError, Busy, NoSuchAddress
from iommusim.sw.core.userdata import UserData
from iommusim.sw.drivers.mock import MockIommuDriver, MockPagingDomain, MockViommu
from iommusim.sw.iommufd import selftest_uapi as su
from iommusim.sw.iommufd import uapi
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

VDATA = su.STRUCTS["iommu_viommu_selftest"]
HWPT = su.STRUCTS["iommu_hwpt_selftest"]
VINV = su.STRUCTS["iommu_viommu_invalidate_selftest"]
VTYPE: Final = su.IOMMU_VIOMMU_TYPE_SELFTEST
INV_TYPE: Final = su.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST
QTYPE: Final = su.IOMMU_HW_QUEUE_TYPE_SELFTEST
CACHE: Final = su.IOMMU_TEST_DEV_CACHE_DEFAULT
ALL: Final = su.IOMMU_TEST_INVALIDATE_FLAG_ALL
QUEUE_IOVA: Final = 0x100_0000
QUEUE_PA: Final = 0x4000_0000


def errno_of(e: pytest.ExceptionInfo[ApiError]) -> int:
    return e.value.errno


def s2(env: Any) -> MockPagingDomain:
    dom = env.drv.domain_alloc_paging_flags(env.dev(), uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    dom.map(Iova(QUEUE_IOVA), PhysAddr(QUEUE_PA), 0x4000, IOMMU_READ | IOMMU_WRITE)
    return dom  # type: ignore[no-any-return]


def viommu(env: Any, parent: MockPagingDomain | None = None, data: bool = False) -> MockViommu:
    p = parent if parent is not None else s2(env)
    ud = env.user_data(VTYPE, VDATA.encode(in_data=0x1234)) if data else None
    return env.drv.viommu_alloc(env.dev(), VTYPE, p, ud, env.vcore)  # type: ignore[no-any-return]


def vinv(flags: int = 0, vdev_id: int = 0, cache_id: int = 0) -> bytes:
    return bytes(VINV.encode(flags=flags, vdev_id=vdev_id, cache_id=cache_id))


# ------------------------------------------------------------------ allocation
def test_a_viommu_without_data_has_no_mmap_region(env: Any) -> None:
    free = env.pages.nr_free
    p = s2(env)
    v = viommu(env, p)
    assert v.s2_parent is p and p.users == 1 and env.drv.viommus == 1
    assert v.page_pa is None and env.vcore.mmaps == {} and env.pages.nr_free == free
    v.destroy()
    assert p.users == 0 and env.drv.viommus == 0


def test_the_user_data_loops_back_through_the_page_and_out_data(env: Any) -> None:
    """mock_viommu_init: *page = in_data; out_data = in_data; out_mmap_length = 2 pages."""
    free = env.pages.nr_free
    v = viommu(env, data=True)
    out = VDATA.decode(env.user.read(env.UVA, VDATA.size))
    assert out == {
        "in_data": 0x1234,
        "out_data": 0x1234,
        "out_mmap_offset": 0x1000,
        "out_mmap_length": 0x2000,
    }
    assert v.page_pa is not None and env.vcore.mmaps == {0x1000: (v.page_pa, 0x2000)}
    assert env.mem.read32(v.page_pa) == 0x1234
    assert env.pages.nr_free == free - 2
    v.destroy()
    assert env.vcore.mmaps == {} and env.pages.nr_free == free


def test_the_first_version_of_the_data_is_enough(env: Any) -> None:
    """iommu_copy_struct_from_user(..., out_data): 8 bytes; out_mmap_* are not written."""
    ud = env.user_data(VTYPE, VDATA.encode(in_data=7)[:8])
    env.drv.viommu_alloc(env.dev(), VTYPE, s2(env), ud, env.vcore)
    assert env.user.read(env.UVA, 16) == (7).to_bytes(4, "little") * 2 + bytes(8)


def _alloc_error_cases(env: Any) -> list[tuple[str, int, object, UserData | None, int]]:
    """(name, type, parent, data, errno) in mock_viommu_init's order."""
    good = VDATA.encode(in_data=1)
    p = s2(env)
    other = MockIommuDriver(env.pages, name="other")
    return [
        ("type", 0xBAD, p, None, errno.EOPNOTSUPP),
        ("blocking parent", VTYPE, env.drv.blocked_domain, None, errno.EINVAL),
        ("another IOMMU's parent", VTYPE, other.domain_alloc_paging(other.create_device()),
         None, errno.EINVAL),
        ("data type", VTYPE, p, env.user_data(0xBAD, good), errno.EINVAL),
        ("too short", VTYPE, p, env.user_data(VTYPE, good[:4]), errno.EINVAL),
        ("too long", VTYPE, p, env.user_data(VTYPE, good + bytes(8)), errno.EINVAL),
        ("unreadable", VTYPE, p, UserData(VTYPE, 0x10, 24, env.user), errno.EFAULT),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(7))
def test_every_viommu_allocation_error_changes_nothing(env: Any, case: int) -> None:
    dev = env.dev()
    cases = _alloc_error_cases(env)
    name, vtype, p, data, err = cases[case]
    domains = [c[2] for c in cases]
    before = env.snapshot(*domains)
    with pytest.raises(ApiError) as e:
        env.drv.viommu_alloc(dev, vtype, p, data, env.vcore)
    assert errno_of(e) == err, name
    assert env.snapshot(*domains) == before


def test_no_free_pages_is_enomem_and_changes_nothing(env: Any) -> None:
    p = s2(env)
    hog = [env.pages.alloc_page() for _ in range(env.pages.nr_free)]
    assert hog
    ud = env.user_data(VTYPE, VDATA.encode(in_data=1))
    dev = env.dev()
    before = env.snapshot(p)
    with pytest.raises(ApiError) as e:
        env.drv.viommu_alloc(dev, VTYPE, p, ud, env.vcore)
    assert errno_of(e) == errno.ENOMEM
    assert env.snapshot(p) == before


def test_a_failed_mmap_gives_the_pages_back(env: Any) -> None:
    p = s2(env)
    ud = env.user_data(VTYPE, VDATA.encode(in_data=1))
    env.vcore.fail_mmap = NoSuchAddress("no room")
    dev = env.dev()
    before = env.snapshot(p)
    with pytest.raises(ApiError) as e:
        env.drv.viommu_alloc(dev, VTYPE, p, ud, env.vcore)
    assert errno_of(e) == errno.ENXIO
    assert env.snapshot(p) == before


def test_a_failed_copy_back_destroys_the_mmap_and_the_pages(env: Any) -> None:
    """mock_viommu_init: err_destroy_mmap."""
    p = s2(env)
    ud = env.user_data(VTYPE, VDATA.encode(in_data=1))
    env.user.readonly = (env.UVA, VDATA.size)
    dev = env.dev()
    before = env.snapshot(p)
    with pytest.raises(ApiError) as e:
        env.drv.viommu_alloc(dev, VTYPE, p, ud, env.vcore)
    assert errno_of(e) == errno.EFAULT
    assert env.snapshot(p) == before


# ------------------------------------------------------------------ nested domains
def test_viommu_nested_domains_need_a_vdevice_to_attach(env: Any) -> None:
    """mock_domain_nop_attach: iommufd_viommu_get_vdev_id fails -> -ENOENT."""
    v = viommu(env)
    data = env.user_data(0xDEAD, HWPT.encode(iotlb=9))
    dom = v.alloc_domain_nested(uapi.IOMMU_HWPT_ALLOC_PASID, data)
    assert dom.viommu is v and dom.parent is v.s2_parent and dom.iotlb == [9] * 4
    dev = env.dev()
    before = env.snapshot(dom)
    with pytest.raises(ApiError) as e:
        env.core.attach_device(dom, dev)
    assert errno_of(e) == errno.ENOENT
    assert env.snapshot(dom) == before
    env.vcore.vdevs[5] = dev
    env.core.attach_device(dom, dev)
    assert (env.mdev(dev).viommu, env.mdev(dev).vdev_id) == (v, 5)
    env.core.detach_device(dom, dev)
    assert (env.mdev(dev).viommu, env.mdev(dev).vdev_id) == (None, 0)


def test_viommu_nested_flags_other_than_pasid_are_eopnotsupp(env: Any) -> None:
    v = viommu(env)
    data = env.user_data(0xDEAD, HWPT.encode(iotlb=9))
    with pytest.raises(ApiError) as e:
        v.alloc_domain_nested(uapi.IOMMU_HWPT_ALLOC_NEST_PARENT, data)
    assert errno_of(e) == errno.EOPNOTSUPP
    with pytest.raises(ApiError) as e:
        v.alloc_domain_nested(0, env.user_data(0xBEEF, HWPT.encode()))
    assert errno_of(e) == errno.EOPNOTSUPP
    assert v.s2_parent.users == 1  # only the vIOMMU's own hold


# ------------------------------------------------------------------ cache invalidation
def _two_vdevs(env: Any) -> tuple[MockViommu, Any, Any]:
    v = viommu(env)
    a, b = env.dev(), env.dev()
    env.vcore.vdevs.update({1: a, 2: b})
    return v, env.mdev(a), env.mdev(b)


def test_entries_clear_one_cache_entry_or_all_of_a_device(env: Any) -> None:
    v, a, b = _two_vdevs(env)
    entries = [vinv(vdev_id=1, cache_id=3), vinv(ALL, vdev_id=2, cache_id=0)]
    assert v.cache_invalidate(env.array(INV_TYPE, entries)) == (2, None)
    assert a.cache == [CACHE, CACHE, CACHE, 0] and b.cache == [0] * 4


def test_an_empty_array_of_the_selftest_type_only_validates_the_type(env: Any) -> None:
    v, _, _ = _two_vdevs(env)
    assert v.cache_invalidate(env.array(INV_TYPE, [])) == (0, None)
    done, e = v.cache_invalidate(env.array(0xBAD, []))
    assert done == 0 and e is not None and e.errno == errno.EINVAL


@pytest.mark.parametrize(
    ("bad", "err"),
    [
        (vinv(flags=2, vdev_id=1), errno.EOPNOTSUPP),
        (vinv(vdev_id=1, cache_id=4), errno.EINVAL),
        (vinv(vdev_id=9), errno.EINVAL),  # no vDEVICE with that id
    ],
)
def test_a_bad_entry_stops_after_the_entries_before_it(env: Any, bad: bytes, err: int) -> None:
    v, a, _ = _two_vdevs(env)
    done, e = v.cache_invalidate(env.array(INV_TYPE, [vinv(vdev_id=1), bad, vinv(ALL, 1)]))
    assert done == 1 and e is not None and e.errno == err
    assert a.cache == [0, CACHE, CACHE, CACHE]


def test_the_whole_array_is_copied_before_any_entry_is_handled(env: Any) -> None:
    """iommu_copy_struct_from_full_user_array: a fault in entry 1 fails entry 0 too."""
    v, _, _ = _two_vdevs(env)
    at = env.UVA + 0x4000 - VINV.size
    env.put(vinv(vdev_id=1), at)
    array = type(env.array(INV_TYPE, []))(INV_TYPE, at, VINV.size, 2, env.user)
    before = env.snapshot()
    done, e = v.cache_invalidate(array)
    assert done == 0 and e is not None and e.errno == errno.EFAULT
    assert env.snapshot() == before


def test_shorter_entries_are_zero_extended_and_longer_need_a_zero_tail(env: Any) -> None:
    """copy_struct_from_user per entry when entry_len differs from the struct."""
    v, a, _ = _two_vdevs(env)
    assert v.cache_invalidate(env.array(INV_TYPE, [vinv(vdev_id=1)[:8]], 8)) == (1, None)
    assert a.cache[0] == 0  # cache_id zero-extended to 0
    assert v.cache_invalidate(env.array(INV_TYPE, [vinv(vdev_id=1, cache_id=1)], 16)) == (
        1,
        None,
    )
    assert a.cache[1] == 0
    long = vinv(vdev_id=1, cache_id=2) + b"\x01" + bytes(3)
    array = env.array(INV_TYPE, [long], 16)
    before = env.snapshot()
    done, e = v.cache_invalidate(array)
    assert done == 0 and e is not None and e.errno == errno.E2BIG
    assert env.snapshot() == before


# ------------------------------------------------------------------ hardware queues
def test_only_the_selftest_queue_type_has_a_size(env: Any) -> None:
    v = viommu(env)
    assert v.get_hw_queue_size(QTYPE) > 0
    assert v.get_hw_queue_size(0) == 0


def test_queue_1_depends_on_queue_0(env: Any) -> None:
    """mock_hw_queue_init_phys / mock_hw_queue_destroy; iommufd_hw_queue_depend."""
    v = viommu(env)
    q0 = v.hw_queue_init_phys(QTYPE, 0, QUEUE_PA, 0x1000, QUEUE_IOVA)
    q1 = v.hw_queue_init_phys(QTYPE, 1, QUEUE_PA + 0x1000, 0x1000, QUEUE_IOVA + 0x1000)
    assert v.hw_queues == [q0, q1] and q1.prev is q0 and q0.prev is None
    assert env.vcore.depends == [(q1, q0)]
    q1.destroy()
    assert v.hw_queues == [q0, None] and env.vcore.depends == []
    q0.destroy()
    assert v.hw_queues == [None, None]


@pytest.mark.parametrize(
    ("index", "pa", "iova", "err"),
    [
        (2, QUEUE_PA, QUEUE_IOVA, errno.EINVAL),  # IOMMU_TEST_HW_QUEUE_MAX
        (-1, QUEUE_PA, QUEUE_IOVA, errno.EINVAL),
        (0, QUEUE_PA, QUEUE_IOVA, errno.EEXIST),
        (0, QUEUE_PA + 0x1000, QUEUE_IOVA, errno.EEXIST),  # EEXIST comes before EFAULT
    ],
)
def test_queue_index_errors_change_nothing(
    env: Any, index: int, pa: int, iova: int, err: int
) -> None:
    v = viommu(env)
    v.hw_queue_init_phys(QTYPE, 0, QUEUE_PA, 0x1000, QUEUE_IOVA)
    queues = list(v.hw_queues)
    before = env.snapshot()
    with pytest.raises(ApiError) as e:
        v.hw_queue_init_phys(QTYPE, index, pa, 0x1000, iova)
    assert errno_of(e) == err
    assert v.hw_queues == queues and env.snapshot() == before


def test_queue_1_without_queue_0_is_eio(env: Any) -> None:
    v = viommu(env)
    with pytest.raises(ApiError) as e:
        v.hw_queue_init_phys(QTYPE, 1, QUEUE_PA, 0x1000, QUEUE_IOVA)
    assert errno_of(e) == errno.EIO
    assert v.hw_queues == [None, None]


@pytest.mark.parametrize("iova", [QUEUE_IOVA + 0x1000, 0x900_0000])  # another page; unmapped
def test_a_base_pa_the_parent_does_not_map_there_is_efault(env: Any, iova: int) -> None:
    """ "Test to catch a kernel bug if the core converted the physical address incorrectly"."""
    v = viommu(env)
    with pytest.raises(ApiError) as e:
        v.hw_queue_init_phys(QTYPE, 0, QUEUE_PA, 0x1000, iova)
    assert errno_of(e) == errno.EFAULT
    assert v.hw_queues == [None, None]


def test_a_failed_dependency_leaves_the_slot_free(env: Any) -> None:
    v = viommu(env)
    v.hw_queue_init_phys(QTYPE, 0, QUEUE_PA, 0x1000, QUEUE_IOVA)
    env.vcore.fail_depend = Busy("queue 0 is going away")
    with pytest.raises(ApiError) as e:
        v.hw_queue_init_phys(QTYPE, 1, QUEUE_PA + 0x1000, 0x1000, QUEUE_IOVA + 0x1000)
    assert errno_of(e) == errno.EBUSY
    assert v.hw_queues[1] is None and env.vcore.depends == []


def test_a_vdevice_of_a_device_that_is_not_a_mock_one_is_einval(env: Any) -> None:
    """The kernel's container_of would misread it; the model refuses it."""
    v = viommu(env)
    env.vcore.vdevs[3] = MockIommuDriver(env.pages, name="other").create_device()
    array = env.array(INV_TYPE, [vinv(vdev_id=3)])
    before = env.snapshot()
    done, e = v.cache_invalidate(array)
    assert done == 0 and e is not None and e.errno == errno.EINVAL
    assert env.snapshot() == before
