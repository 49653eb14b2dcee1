"""Attaching mock domains to mock devices and PASIDs (selftest.c: mock_domain_nop_attach,
mock_domain_set_dev_pasid_nop, mock_dev_enable_iopf / mock_dev_disable_iopf)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from iommusim.errors import ApiError
from iommusim.sw.drivers.mock import MockIommuDriver
from iommusim.sw.iommufd import selftest_uapi as su
from iommusim.sw.iommufd import uapi
from iommusim.sw.iopf.queue import IopfGroup

PASID_DEV = su.MOCK_FLAGS_DEVICE_PASID
RESERVED = su.IOMMU_TEST_PASID_RESERVED


def errno_of(e: pytest.ExceptionInfo[ApiError]) -> int:
    return e.value.errno


def test_attach_records_the_domain_in_the_device(env: Any) -> None:
    dev = env.dev()
    dom = env.core.domain_alloc_paging(dev)
    env.core.attach_device(dom, dev)
    assert env.mdev(dev).domain is dom and dom.users == 1
    env.core.detach_device(dom, dev)
    assert env.mdev(dev).domain is env.drv.blocked_domain


def test_a_dirty_tracking_domain_cannot_attach_to_a_no_dirty_device(env: Any) -> None:
    """mock_domain_nop_attach: dirty_ops && MOCK_FLAGS_DEVICE_NO_DIRTY -> -EINVAL (selftest
    iommufd_dirty_tracking.enforce_dirty)."""
    dom = env.drv.domain_alloc_paging_flags(env.dev(), uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    nodirty = env.dev(su.MOCK_FLAGS_DEVICE_NO_DIRTY)
    before = env.snapshot(dom)
    with pytest.raises(ApiError) as e:
        env.core.attach_device(dom, nodirty)
    assert errno_of(e) == errno.EINVAL
    assert env.snapshot(dom) == before
    env.core.attach_device(env.drv.domain_alloc_paging(nodirty), nodirty)  # no dirty ops: fine


def test_a_device_of_another_iommu_is_incompatible(env: Any) -> None:
    other = MockIommuDriver(env.pages, name="other")
    env.core.register(other)
    theirs = other.create_device()
    env.core.probe_device(theirs)
    dom = env.core.domain_alloc_paging(env.dev())
    before = env.snapshot(dom)
    with pytest.raises(ApiError) as e:
        dom.attach_dev(theirs, None)
    assert errno_of(e) == errno.EINVAL
    with pytest.raises(ApiError) as e:
        dom.set_dev_pasid(theirs, 5, None)
    assert errno_of(e) == errno.EINVAL
    with pytest.raises(ApiError) as e:
        env.core.attach_device(dom, theirs)
    assert errno_of(e) == errno.EINVAL
    assert env.snapshot(dom) == before


def test_domains_that_take_page_faults_hold_an_iopf_reference(env: Any) -> None:
    """mock_dev_enable_iopf on the new domain, mock_dev_disable_iopf on the old one."""
    dev = env.dev(PASID_DEV)
    faulting = env.core.domain_alloc_paging(dev)
    groups: list[IopfGroup] = []
    faulting.iopf_handler = groups.append
    plain = env.core.domain_alloc_paging(dev)
    env.core.attach_device(faulting, dev)
    assert env.mdev(dev).iopf_refcount == 1
    env.core.attach_device_pasid(faulting, dev, 7)
    assert env.mdev(dev).iopf_refcount == 2
    env.core.replace_group_domain(plain, dev.group)
    assert env.mdev(dev).iopf_refcount == 1
    env.core.detach_device_pasid(faulting, dev, 7)
    assert env.mdev(dev).iopf_refcount == 0


def test_pasid_attach_and_detach_through_the_blocking_domain(env: Any) -> None:
    dev = env.dev(PASID_DEV)
    dom = env.drv.domain_alloc_paging_flags(dev, uapi.IOMMU_HWPT_ALLOC_PASID)
    env.core.attach_device_pasid(dom, dev, 100)
    assert env.core.pasid_domain(dev, 100) is dom
    env.core.detach_device_pasid(dom, dev, 100)
    assert env.core.pasid_domain(dev, 100) is None


def test_pasid_1024_fails_every_second_non_blocking_attach(env: Any) -> None:
    """mock_domain_set_dev_pasid_nop: the first attach arms pasid_1024_fake_error, the
    second fails with -ENOMEM and disarms it, the third succeeds (selftest
    iommufd_device_pasid's replace rollback)."""
    dev = env.dev(PASID_DEV)
    a = env.core.domain_alloc_paging(dev)
    b = env.core.domain_alloc_paging(dev)
    a.set_dev_pasid(dev, RESERVED, None)
    assert env.mdev(dev).pasid_1024_fake_error
    before = env.snapshot(a, b)
    with pytest.raises(ApiError) as e:
        b.set_dev_pasid(dev, RESERVED, a)
    assert errno_of(e) == errno.ENOMEM
    after = env.snapshot(a, b)
    assert not env.mdev(dev).pasid_1024_fake_error  # the fake error's one change
    env.mdev(dev).pasid_1024_fake_error = True
    assert env.snapshot(a, b) == before
    env.mdev(dev).pasid_1024_fake_error = False
    assert env.snapshot(a, b) == after
    b.set_dev_pasid(dev, RESERVED, a)
    assert env.mdev(dev).pasid_1024_fake_error


def test_the_blocking_domain_disarms_pasid_1024(env: Any) -> None:
    dev = env.dev(PASID_DEV)
    a = env.core.domain_alloc_paging(dev)
    env.core.attach_device_pasid(a, dev, RESERVED)
    env.core.detach_device_pasid(a, dev, RESERVED)  # the core attaches the blocking domain
    assert not env.mdev(dev).pasid_1024_fake_error
    env.core.attach_device_pasid(a, dev, RESERVED)  # armed again, not failed
    assert env.core.pasid_domain(dev, RESERVED) is a


def test_the_core_rolls_back_when_pasid_1024_fails(env: Any) -> None:
    """The core's error path the fake error exists for: the failed attach leaves the PASID
    unattached (iommu_attach_device_pasid undoes with the blocking domain)."""
    dev = env.dev(PASID_DEV)
    a = env.core.domain_alloc_paging(dev)
    a.set_dev_pasid(dev, RESERVED, None)  # armed outside the core
    with pytest.raises(ApiError) as e:
        env.core.attach_device_pasid(a, dev, RESERVED)
    assert errno_of(e) == errno.ENOMEM
    assert env.core.pasid_domain(dev, RESERVED) is None and a.users == 0


def test_other_pasids_never_fail(env: Any) -> None:
    dev = env.dev(PASID_DEV)
    a = env.core.domain_alloc_paging(dev)
    for _ in range(3):
        a.set_dev_pasid(dev, 1023, None)
    assert not env.mdev(dev).pasid_1024_fake_error
