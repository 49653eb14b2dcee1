"""The mock IOMMU's devices, default domain, capabilities, hw_info and paging allocation
(selftest.c: mock_dev_create, mock_probe_device, mock_ops, mock_domain_capable,
mock_domain_hw_info, mock_domain_alloc_paging_flags, mock_domain_alloc_pgtable)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from iommusim.errors import ApiError
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_UNMANAGED
from iommusim.sw.core.ops import (
    CAP_CACHE_COHERENCY,
    CAP_DIRTY_TRACKING,
    CAP_ENFORCE_CACHE_COHERENCY,
)
from iommusim.sw.drivers.mock import (
    MOCK_DEFAULT_PGSIZE_BITMAP,
    MOCK_HUGE_PGSIZE_BITMAP,
    MockIommuDriver,
    MockPagingDomain,
)
from iommusim.sw.iommufd import selftest_uapi as su
from iommusim.sw.iommufd import uapi
from iommusim.sw.mm.mm import Mm

HWPT = su.STRUCTS["iommu_hwpt_selftest"]


def errno_of(exc: pytest.ExceptionInfo[ApiError]) -> int:
    return exc.value.errno


# ------------------------------------------------------------------ devices
def test_mock_devices_get_unique_ids_as_names_and_requester_ids(env: Any) -> None:
    """mock_dev_create: ida_alloc(&mock_dev_ida), dev_set_name("iommufd_mock%u")."""
    a, b = env.dev(), env.dev(su.MOCK_FLAGS_DEVICE_PASID)
    assert (a.name, a.rid, b.name, b.rid) == ("iommufd_mock0", 0, "iommufd_mock1", 1)
    assert a.pasid_bits == 0 and b.pasid_bits == su.MOCK_PASID_WIDTH == 20
    assert env.mdev(a).cache == [su.IOMMU_TEST_DEV_CACHE_DEFAULT] * 4
    assert env.mdev(b).flags == su.MOCK_FLAGS_DEVICE_PASID


def test_unknown_device_flags_are_einval_and_take_no_id(env: Any) -> None:
    with pytest.raises(ApiError) as e:
        env.drv.create_device(1 << 1)
    assert errno_of(e) == errno.EINVAL
    assert env.drv.create_device().rid == 0


def test_a_destroyed_device_gives_its_id_back(env: Any) -> None:
    """mock_dev_release: ida_free."""
    dev = env.dev()
    env.dev()
    with pytest.raises(ApiError) as e:
        env.drv.destroy_device(dev)  # still probed
    assert errno_of(e) == errno.EINVAL
    env.core.release_device(dev)
    env.drv.destroy_device(dev)
    assert env.drv.create_device().rid == 0
    with pytest.raises(ApiError) as e:
        env.drv.destroy_device(dev)
    assert errno_of(e) == errno.EINVAL


@pytest.mark.parametrize("mode", ["strict", "lazy", "passthrough"])
def test_the_default_domain_is_the_blocking_domain(make_env: Any, mode: str) -> None:
    """mock_ops.default_domain = &mock_blocking_domain, whatever the DMA mode."""
    env = make_env(mode)
    dev = env.dev()
    assert dev.group is not None
    assert dev.group.default_domain is env.drv.blocked_domain
    assert dev.group.domain is env.drv.blocked_domain
    assert env.drv.blocked_domain.type == DOMAIN_BLOCKED
    assert env.mdev(dev).domain is env.drv.blocked_domain
    assert dev.iommu is env.drv


def test_only_mock_devices_of_this_driver_probe(env: Any) -> None:
    """mock_probe_device: -ENODEV off the mock bus."""
    with pytest.raises(ApiError) as e:
        env.core.probe_device(Device("nic", 0x10))
    assert errno_of(e) == errno.ENODEV
    other = MockIommuDriver(env.pages, name="other")
    with pytest.raises(ApiError) as e:
        env.core.probe_device(other.create_device())
    assert errno_of(e) == errno.ENODEV
    assert not env.drv.owns(Device("nic", 0x10))


def test_release_leaves_the_device_on_the_blocking_domain(env: Any) -> None:
    dev = env.dev()
    env.core.release_device(dev)
    assert dev.iommu is None and env.mdev(dev).domain is env.drv.blocked_domain


# ------------------------------------------------------------------ capabilities
def test_capable_answers_coherency_and_dirty_tracking_unless_no_dirty(env: Any) -> None:
    """mock_domain_capable."""
    dev, nodirty = env.dev(), env.dev(su.MOCK_FLAGS_DEVICE_NO_DIRTY)
    assert env.drv.capable(dev, CAP_CACHE_COHERENCY)
    assert env.drv.capable(dev, CAP_DIRTY_TRACKING)
    assert not env.drv.capable(nodirty, CAP_DIRTY_TRACKING)
    assert not env.drv.capable(dev, CAP_ENFORCE_CACHE_COHERENCY)


@pytest.mark.parametrize("requested", [uapi.IOMMU_HW_INFO_TYPE_DEFAULT, 0xFEEDBEEF])
def test_hw_info_is_the_selftest_struct(env: Any, requested: int) -> None:
    """mock_domain_hw_info: type SELFTEST, test_reg = IOMMU_HW_INFO_SELFTEST_REGVAL."""
    kind, data = env.drv.hw_info(env.dev(), requested)
    assert kind == 0xFEEDBEEF
    assert data == (0).to_bytes(4, "little") + (0xDEADBEEF).to_bytes(4, "little")


def test_hw_info_of_another_type_is_eopnotsupp(env: Any) -> None:
    with pytest.raises(ApiError) as e:
        env.drv.hw_info(env.dev(), uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD)
    assert errno_of(e) == errno.EOPNOTSUPP


def test_the_mock_has_no_sva_and_no_identity_domain(env: Any) -> None:
    dev = env.dev()
    assert env.drv.user_pasid_table
    with pytest.raises(ApiError) as e:
        env.drv.domain_alloc_sva(dev, Mm.__new__(Mm))
    assert errno_of(e) == errno.EOPNOTSUPP
    with pytest.raises(ApiError) as e:
        env.core.attach_device(env.drv.identity_domain, dev)
    assert errno_of(e) == errno.EOPNOTSUPP
    assert env.mdev(dev).domain is env.drv.blocked_domain


# ------------------------------------------------------------------ paging allocation
def test_a_paging_domain_without_data_is_the_default_table(env: Any) -> None:
    """mock_domain_alloc_pgtable, MOCK_IOMMUPT_DEFAULT: 2 KiB pages (amdv1 mock, every
    power of two from 2 KiB), the aperture overridden to the MOCK aperture."""
    dom = env.core.domain_alloc_paging(env.dev())
    assert isinstance(dom, MockPagingDomain)
    assert dom.type == DOMAIN_UNMANAGED and dom.owner is env.drv
    assert dom.pgsize_bitmap == MOCK_DEFAULT_PGSIZE_BITMAP
    assert dom.pgsize_bitmap & -dom.pgsize_bitmap == su.MOCK_PAGE_SIZE
    assert dom.pgsize_bitmap.bit_length() == 38
    assert (dom.aperture_start, dom.aperture_end) == (1 << 24, (1 << 31) - 1)
    assert not dom.dirty_ops and not dom.dirty_tracking


def test_huge_tables_take_huge_and_cpu_pages_over_the_whole_table(env: Any) -> None:
    """MOCK_IOMMUPT_HUGE: pgsize_bitmap = MOCK_HUGE_PAGE_SIZE | PAGE_SIZE, real aperture."""
    data = env.user_data(0xDEAD, HWPT.encode(iotlb=0, pagetable_type=su.MOCK_IOMMUPT_HUGE))
    dom = env.drv.domain_alloc_paging_flags(env.dev(), 0, data)
    assert dom.pgsize_bitmap == MOCK_HUGE_PGSIZE_BITMAP == (1 << 20) | 4096
    assert (dom.aperture_start, dom.aperture_end) == (0, (1 << 38) - 1)


@pytest.mark.parametrize(
    "flags",
    [0, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT, uapi.IOMMU_HWPT_ALLOC_PASID],
)
def test_the_accepted_flags_allocate(env: Any, flags: int) -> None:
    dom = env.drv.domain_alloc_paging_flags(env.dev(), flags)
    assert not dom.dirty_ops


def test_dirty_tracking_gives_dirty_ops(env: Any) -> None:
    dom = env.drv.domain_alloc_paging_flags(env.dev(), uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert dom.dirty_ops and not dom.dirty_tracking


def test_a_data_struct_of_its_first_version_is_zero_extended(env: Any) -> None:
    """iommu_copy_struct_from_user(..., iotlb): 4 bytes are enough; pagetable_type is 0."""
    data = env.user_data(0xDEAD, HWPT.encode(iotlb=5)[:4])
    dom = env.drv.domain_alloc_paging_flags(env.dev(), 0, data)
    assert dom.pagetable_type == su.MOCK_IOMMUPT_DEFAULT


def _paging_error_cases(env: Any) -> list[tuple[str, int, object, int]]:
    """(name, flags, user data, errno) in mock_domain_alloc_paging_flags' order."""
    good = HWPT.encode(iotlb=0, pagetable_type=0)
    return [
        ("unknown flag", uapi.IOMMU_HWPT_FAULT_ID_VALID, None, errno.EOPNOTSUPP),
        ("unknown data type", 0, env.user_data(uapi.IOMMU_HWPT_DATA_VTD_S1, good),
         errno.EOPNOTSUPP),
        ("type NONE is refused by the copy", 0, env.user_data(uapi.IOMMU_HWPT_DATA_NONE, good),
         errno.EINVAL),
        ("too short", 0, env.user_data(0xDEAD, good[:3]), errno.EINVAL),
        ("too long", 0, env.user_data(0xDEAD, good + bytes(8)), errno.EINVAL),
        ("unreadable", 0, type(env.user_data(0xDEAD, good))(0xDEAD, 0x1000, 8, env.user),
         errno.EFAULT),
        ("unknown table", 0, env.user_data(0xDEAD, HWPT.encode(pagetable_type=2)),
         errno.EOPNOTSUPP),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(7))
def test_every_paging_allocation_error_changes_nothing(env: Any, case: int) -> None:
    dev = env.dev()
    name, flags, data, err = _paging_error_cases(env)[case]
    before = env.snapshot()
    with pytest.raises(ApiError) as e:
        env.drv.domain_alloc_paging_flags(dev, flags, data)  # type: ignore[arg-type]
    assert errno_of(e) == err, name
    assert env.snapshot() == before


def test_dirty_tracking_on_a_no_dirty_device_is_eopnotsupp(env: Any) -> None:
    """selftest iommufd_dirty_tracking.enforce_dirty: HWPT_ALLOC with DIRTY_TRACKING on a
    device that cannot track is EOPNOTSUPP."""
    dev = env.dev(su.MOCK_FLAGS_DEVICE_NO_DIRTY)
    with pytest.raises(ApiError) as e:
        env.drv.domain_alloc_paging_flags(dev, uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert errno_of(e) == errno.EOPNOTSUPP


def test_allocating_for_another_drivers_device_is_einval(env: Any) -> None:
    other = MockIommuDriver(env.pages, name="other")
    with pytest.raises(ApiError) as e:
        env.drv.domain_alloc_paging_flags(other.create_device())
    assert errno_of(e) == errno.EINVAL


def test_user_data_pointer_is_read_where_it_points(env: Any) -> None:
    data = env.user_data(0xDEAD, HWPT.encode(pagetable_type=1), at=env.UVA + 0x100)
    assert env.drv.domain_alloc_paging_flags(env.dev(), 0, data).pagetable_type == 1
