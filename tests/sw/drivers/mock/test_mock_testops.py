"""The driver side of IOMMU_TEST_CMD (selftest.c: get_md_pagetable, get_md_pagetable_nested,
iommufd_test_md_check_pa, iommufd_test_md_check_iotlb, iommufd_test_dev_check_cache,
iommufd_test_dirty, iommufd_test_trigger_iopf, iommufd_test_trigger_vevent)."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import ApiError, BadAddress
from iommusim.sw.drivers.mock import MockIommuDriver, MockPagingDomain
from iommusim.sw.drivers.mock import testops as ops
from iommusim.sw.iommufd import selftest_uapi as su
from iommusim.sw.iommufd import uapi
from iommusim.sw.iopf.queue import PERM_READ, PERM_WRITE, RESP_INVALID, IopfGroup
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

RW: Final = IOMMU_READ | IOMMU_WRITE
BASE: Final = su.MOCK_APERTURE_START
K2: Final = su.MOCK_PAGE_SIZE
K4: Final = 4096
UPTR: Final = 0x7000_0000
#: The user buffer's pages are backed at these physical pages, in this order (not contiguous).
BACKING: Final = (0x4000_3000, 0x4000_1000, 0x4000_8000)
HWPT = su.STRUCTS["iommu_hwpt_selftest"]
EVENT = su.STRUCTS["iommu_viommu_event_selftest"]


def errno_of(e: pytest.ExceptionInfo[ApiError]) -> int:
    return e.value.errno


def user_pa(va: int) -> int:
    """get_user_pages_fast over the fake buffer: EFAULT outside it."""
    i = (va - UPTR) // K4
    if not 0 <= i < len(BACKING) or va < UPTR:
        raise BadAddress(f"user VA {va:#x} is not mapped")
    return BACKING[i] + va % K4


def mapped(env: Any, dirty: bool = False) -> MockPagingDomain:
    """A default-table domain mapping the user buffer page by page from BASE (as iommufd's
    io_pagetable would map pinned pages)."""
    flags = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING if dirty else 0
    dom = env.drv.domain_alloc_paging_flags(env.dev(), flags)
    for i, pa in enumerate(BACKING):
        dom.map(Iova(BASE + i * K4), PhysAddr(pa), K4, RW)
    return dom  # type: ignore[no-any-return]


def nested(env: Any, parent: MockPagingDomain) -> Any:
    return env.drv.domain_alloc_nested(
        env.dev(), parent, 0, env.user_data(0xDEAD, HWPT.encode(iotlb=su.IOMMU_TEST_IOTLB_DEFAULT))
    )


# ------------------------------------------------------------------ MD_CHECK_MAP
def test_check_map_passes_when_every_2k_page_maps_the_buffer(env: Any) -> None:
    dom = mapped(env)
    ops.md_check_map(env.drv, dom, BASE, 3 * K4, UPTR, user_pa)
    ops.md_check_map(env.drv, dom, BASE + K2, K4, UPTR + K2, user_pa)  # half pages: 2 KiB steps


@pytest.mark.parametrize(
    ("iova", "length", "uptr", "err"),
    [
        (BASE + 0x100, K2, UPTR, errno.EINVAL),
        (BASE, 0x100, UPTR, errno.EINVAL),
        (BASE, K2, UPTR + 0x100, errno.EINVAL),
        (BASE, K4, (1 << 64) - K4, errno.EINVAL),  # uptr + length overflows
        (BASE + K4, K4, UPTR, errno.EINVAL),  # maps BACKING[1], not BACKING[0]
        (BASE + 3 * K4, K2, UPTR, errno.EINVAL),  # not mapped
        (BASE + 2 * K4, 2 * K4, UPTR + 2 * K4, errno.EFAULT),  # the buffer ends first
    ],
)
def test_check_map_errors(env: Any, iova: int, length: int, uptr: int, err: int) -> None:
    dom = mapped(env)
    before = env.snapshot(dom)
    with pytest.raises(ApiError) as e:
        ops.md_check_map(env.drv, dom, iova, length, uptr, user_pa)
    assert errno_of(e) == err
    assert env.snapshot(dom) == before


def test_the_md_ops_want_a_mock_domain_of_the_right_kind(env: Any) -> None:
    """get_md_pagetable / get_md_pagetable_nested: -EINVAL for another domain."""
    dom = mapped(env)
    other = MockIommuDriver(env.pages, name="other")
    theirs = other.domain_alloc_paging(other.create_device())
    for wrong in (nested(env, dom), env.drv.blocked_domain, theirs):
        with pytest.raises(ApiError) as e:
            ops.md_check_map(env.drv, wrong, BASE, K2, UPTR, user_pa)
        assert errno_of(e) == errno.EINVAL
    for wrong in (dom, env.drv.blocked_domain):
        with pytest.raises(ApiError) as e:
            ops.md_check_iotlb(env.drv, wrong, 0, su.IOMMU_TEST_IOTLB_DEFAULT)
        assert errno_of(e) == errno.EINVAL


# ------------------------------------------------------------------ MD_CHECK_IOTLB
def test_check_iotlb_compares_one_entry(env: Any) -> None:
    dom = nested(env, mapped(env))
    for i in range(4):
        ops.md_check_iotlb(env.drv, dom, i, su.IOMMU_TEST_IOTLB_DEFAULT)
    dom.iotlb[2] = 0
    ops.md_check_iotlb(env.drv, dom, 2, 0)
    for iotlb_id, value in ((2, su.IOMMU_TEST_IOTLB_DEFAULT), (4, su.IOMMU_TEST_IOTLB_DEFAULT)):
        with pytest.raises(ApiError) as e:
            ops.md_check_iotlb(env.drv, dom, iotlb_id, value)
        assert errno_of(e) == errno.EINVAL


# ------------------------------------------------------------------ DEV_CHECK_CACHE
def test_check_cache_compares_one_entry_of_a_mock_device(env: Any) -> None:
    dev = env.dev()
    ops.dev_check_cache(env.drv, dev, 3, su.IOMMU_TEST_DEV_CACHE_DEFAULT)
    env.mdev(dev).cache[1] = 0
    ops.dev_check_cache(env.drv, dev, 1, 0)
    other = MockIommuDriver(env.pages, name="other").create_device()
    for d, cache_id, value in (
        (dev, 1, su.IOMMU_TEST_DEV_CACHE_DEFAULT),
        (dev, 4, su.IOMMU_TEST_DEV_CACHE_DEFAULT),
        (other, 0, su.IOMMU_TEST_DEV_CACHE_DEFAULT),
    ):
        with pytest.raises(ApiError) as e:
            ops.dev_check_cache(env.drv, d, cache_id, value)
        assert errno_of(e) == errno.EINVAL


# ------------------------------------------------------------------ DIRTY
@pytest.mark.parametrize(
    ("iova", "length", "page_size", "uptr", "err"),
    [
        (BASE, K4, 0, UPTR, errno.EINVAL),
        (BASE, 0, K2, UPTR, errno.EINVAL),
        (BASE + 1, K4, K2, UPTR, errno.EINVAL),
        (BASE, K4 + 1, K2, UPTR, errno.EINVAL),
        (BASE, K4, K2, 0, errno.EINVAL),
        (0, ((16 << 20) * 8 + 1) * K2, K2, UPTR, errno.EOVERFLOW),
    ],
)
def test_dirty_argument_errors(iova: int, length: int, page_size: int, uptr: int, err: int) -> None:
    with pytest.raises(ApiError) as e:
        ops.dirty_check_args(iova, length, page_size, uptr)
    assert errno_of(e) == err


def test_dirty_takes_up_to_16_mib_of_bitmap() -> None:
    assert ops.dirty_check_args(0, (16 << 20) * 8 * K2, K2, UPTR) == (16 << 20) * 8
    assert ops.dirty_check_args(BASE, 3 * K4, K2, UPTR) == 6


def test_dirty_marks_the_leaves_like_the_selftest_expects(env: Any) -> None:
    """_test_mock_dirty_bitmaps: every other PTE set in 2 KiB bits; a 4 KiB leaf then reads
    back as npte = 2 dirty bits."""
    dom = mapped(env, dirty=True)
    dom.set_dirty_tracking(True)
    nbits = ops.dirty_check_args(BASE, 3 * K4, K2, UPTR)
    bitmap = bytes([0b0001_0001])  # bits 0 and 4: PTEs 0 and 2
    count = ops.dirty_set(env.drv, dom, BASE, K2, nbits, lambda n: bitmap[:n])
    assert count == 2
    seen: list[tuple[int, int]] = []
    dom.read_and_clear_dirty(BASE, 3 * K4, False, lambda i, n: seen.append((i, n)))
    assert seen == [(BASE, K4), (BASE + 2 * K4, K4)]


def test_dirty_counts_bits_over_unmapped_iovas_too(env: Any) -> None:
    dom = mapped(env, dirty=True)
    dom.set_dirty_tracking(True)
    assert ops.dirty_set(env.drv, dom, BASE + 0x10000, K2, 8, lambda n: b"\xff"[:n]) == 8
    assert all(not lf.dirty for _, lf in dom.pt.leaves())


def test_dirty_needs_tracking_on_and_a_readable_bitmap(env: Any) -> None:
    dom = mapped(env, dirty=True)
    before = env.snapshot(dom)
    with pytest.raises(ApiError) as e:
        ops.dirty_set(env.drv, dom, BASE, K2, 6, lambda n: b"\xff")
    assert errno_of(e) == errno.EINVAL
    assert env.snapshot(dom) == before
    dom.set_dirty_tracking(True)
    before = env.snapshot(dom)

    def fault(n: int) -> bytes:
        raise BadAddress("bitmap")

    with pytest.raises(ApiError) as e:
        ops.dirty_set(env.drv, dom, BASE, K2, 6, fault)
    assert errno_of(e) == errno.EFAULT
    assert env.snapshot(dom) == before
    with pytest.raises(ApiError) as e:
        ops.dirty_set(env.drv, env.drv.blocked_domain, BASE, K2, 6, lambda n: b"\xff")
    assert errno_of(e) == errno.EINVAL


# ------------------------------------------------------------------ TRIGGER_IOPF
def test_a_triggered_page_fault_reaches_the_domains_handler(env: Any) -> None:
    """iommufd_test_trigger_iopf: a last page request, PASID valid unless 0."""
    dev = env.dev(su.MOCK_FLAGS_DEVICE_PASID)
    dom = env.core.domain_alloc_paging(dev)
    groups: list[IopfGroup] = []
    dom.iopf_handler = groups.append
    env.core.attach_device(dom, dev)
    ops.trigger_iopf(env.drv, dev, 0, 0x55, PERM_READ | PERM_WRITE, 0xDEAD_0000)
    assert len(groups) == 1
    fault = groups[0].last
    assert (fault.pasid, fault.grpid, fault.perm, fault.addr, fault.last) == (
        None,
        0x55,
        PERM_READ | PERM_WRITE,
        0xDEAD_0000,
        True,
    )
    env.core.iopf.respond(groups[0], 0)
    assert [(r.rid, r.grpid, r.code) for r in env.drv.page_responses] == [(dev.rid, 0x55, 0)]


def test_a_page_fault_nobody_handles_is_answered_invalid(env: Any) -> None:
    """mock_domain_page_response does nothing; the driver keeps it for tests."""
    dev = env.dev(su.MOCK_FLAGS_DEVICE_PASID)
    ops.trigger_iopf(env.drv, dev, 7, 3, PERM_READ, 0x1000)
    assert [(r.pasid, r.grpid, r.code) for r in env.drv.page_responses] == [(7, 3, RESP_INVALID)]


def test_page_faults_are_only_triggered_on_mock_devices(env: Any) -> None:
    other = MockIommuDriver(env.pages, name="other").create_device()
    before = env.snapshot()
    with pytest.raises(ApiError) as e:
        ops.trigger_iopf(env.drv, other, 0, 0, 0, 0)
    assert errno_of(e) == errno.EINVAL
    assert env.snapshot() == before


# ------------------------------------------------------------------ TRIGGER_VEVENT
def test_a_vevent_carries_the_virtual_id(env: Any) -> None:
    parent = env.drv.domain_alloc_paging_flags(env.dev(), uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    v = env.drv.viommu_alloc(env.dev(), su.IOMMU_VIOMMU_TYPE_SELFTEST, parent, None, env.vcore)
    dom = v.alloc_domain_nested(0, env.user_data(0xDEAD, HWPT.encode(iotlb=0)))
    dev = env.dev()
    with pytest.raises(ApiError) as e:
        ops.trigger_vevent(env.drv, dev)  # not attached through the vIOMMU
    assert errno_of(e) == errno.ENOENT
    env.vcore.vdevs[0x42] = dev
    env.core.attach_device(dom, dev)
    ops.trigger_vevent(env.drv, dev)
    assert env.vcore.events == [(su.IOMMU_VEVENTQ_TYPE_SELFTEST, bytes(EVENT.encode(virt_id=0x42)))]


def test_a_vdevice_with_virtual_id_0_has_no_vevents(env: Any) -> None:
    """iommufd_test_trigger_vevent: !mdev->vdev_id -> -ENOENT."""
    parent = env.drv.domain_alloc_paging_flags(env.dev(), uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    v = env.drv.viommu_alloc(env.dev(), su.IOMMU_VIOMMU_TYPE_SELFTEST, parent, None, env.vcore)
    dom = v.alloc_domain_nested(0, env.user_data(0xDEAD, HWPT.encode(iotlb=0)))
    dev = env.dev()
    env.vcore.vdevs[0] = dev
    env.core.attach_device(dom, dev)
    with pytest.raises(ApiError) as e:
        ops.trigger_vevent(env.drv, dev)
    assert errno_of(e) == errno.ENOENT
    assert env.vcore.events == []


def test_page_faults_need_a_registered_driver(env: Any) -> None:
    drv = MockIommuDriver(env.pages, name="unregistered")
    with pytest.raises(ApiError) as e:
        ops.trigger_iopf(drv, drv.create_device(), 0, 0, 0, 0)
    assert errno_of(e) == errno.ENODEV
    assert drv.page_responses == []
