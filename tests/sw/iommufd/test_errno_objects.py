"""Every errno of the object ioctls beyond the IOAS (device, HWPT, vIOMMU, vDEVICE, vEVENTQ,
fault queue, HW queue, dirty tracking, GET_HW_INFO, HWPT_INVALIDATE), provoked once each on a
selftest kernel, with everything a failed call could touch checked unchanged afterwards: the
object table (ids, types, users), IOAS areas and pins, open fds, mmap regions and the IOMMU
core's groups. Each case cites the kernel function whose check decides it."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest

from iommusim.errors import ApiError
from iommusim.sw.iommufd import selftest_uapi as t
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.selftest_uapi import STRUCTS as TS
from testsupport.selftest import PAGE, SelftestEnv

START: Final = t.MOCK_APERTURE_START
PARENT: Final = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
NESTED: Final = bytes(TS["iommu_hwpt_selftest"].encode(iotlb=t.IOMMU_TEST_IOTLB_DEFAULT))
SELF: Final = t.IOMMU_HWPT_DATA_SELFTEST


@dataclass
class World:
    """A selftest file with one of everything: an IOAS with a mapped page, a mock device on
    it (auto HWPT), a nesting parent, a vIOMMU with a vDEVICE, a nested HWPT, a fault queue
    and a vEVENTQ."""

    env: SelftestEnv
    ioas: int
    stdev: int
    dev: int
    auto: int
    parent: int
    viommu: int
    vdev: int
    nested: int
    fault: int
    veventq: int


def _world() -> World:
    env = SelftestEnv()
    fd = env.fd
    ioas = fd.ioas_alloc()
    fd.ioas_map(ioas, env.buffer, PAGE * 4, iova=START)
    m = env.mock_domain(ioas)
    parent = fd.hwpt_alloc(m.idev_id, ioas, flags=PARENT)
    viommu = fd.viommu_alloc(m.idev_id, parent, t.IOMMU_VIOMMU_TYPE_SELFTEST)
    vdev = fd.vdevice_alloc(viommu, m.idev_id, 0x10)
    nested = fd.hwpt_alloc(m.idev_id, parent, data_type=SELF, data=NESTED)
    fault, _ = fd.fault_queue_alloc()
    veventq, _ = fd.veventq_alloc(viommu, t.IOMMU_VEVENTQ_TYPE_SELFTEST, 4)
    return World(
        env, ioas, m.stdev_id, m.idev_id, m.hwpt_id, parent, viommu, vdev, nested, fault, veventq
    )


def _snapshot(w: World) -> object:
    f = w.env.file
    areas = [
        (o.id, [(a.iova, a.last, a.pages.npinned) for a in o.iopt.areas])
        for o in f.objects
        if isinstance(o, Ioas)
    ]
    core = f.core
    assert core is not None
    groups = [(g.id, g.domain, g.owner, len(g.devices), dict(g.pasid_array)) for g in core.groups]
    return (
        [(o.id, o.type, o.users) for o in f.objects],
        len(f.objects),
        areas,
        w.env.file.user.pins,  # type: ignore[attr-defined]
        f.fds.fds(),
        sorted(f.mmaps.regions),
        groups,
    )


Case = Callable[[World], object]

CASES: Final[list[tuple[str, int, Case]]] = [
    # iommufd_hwpt_alloc
    (
        "hwpt_alloc __reserved",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_ALLOC, dev_id=w.dev, pt_id=w.ioas, __reserved=1),
    ),
    (
        "hwpt_alloc data_len without type",
        errno.EINVAL,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_ALLOC, dev_id=w.dev, pt_id=w.ioas, data_len=8),
    ),
    ("hwpt_alloc no device", errno.ENOENT, lambda w: w.env.fd.hwpt_alloc(w.ioas, w.ioas)),
    ("hwpt_alloc pt_id nothing", errno.EINVAL, lambda w: w.env.fd.hwpt_alloc(w.dev, 999)),
    ("hwpt_alloc pt_id a device", errno.EINVAL, lambda w: w.env.fd.hwpt_alloc(w.dev, w.dev)),
    (
        "hwpt_alloc unknown flag",
        errno.EOPNOTSUPP,
        lambda w: w.env.fd.hwpt_alloc(w.dev, w.ioas, flags=1 << 12),
    ),
    (
        "hwpt_alloc parent with fault",
        errno.EOPNOTSUPP,
        lambda w: w.env.fd.hwpt_alloc(w.dev, w.ioas, flags=PARENT, fault_id=w.fault),
    ),
    (
        "hwpt_alloc fault_id not a fault",
        errno.ENOENT,
        lambda w: w.env.fd.hwpt_alloc(w.dev, w.ioas, fault_id=w.ioas),
    ),
    (
        "nested on an auto domain",
        errno.EINVAL,
        lambda w: w.env.fd.hwpt_alloc(w.dev, w.auto, data_type=SELF, data=NESTED),
    ),
    (
        "nested on nested",
        errno.EINVAL,
        lambda w: w.env.fd.hwpt_alloc(w.dev, w.nested, data_type=SELF, data=NESTED),
    ),
    (
        "nested bad flag",
        errno.EOPNOTSUPP,
        lambda w: w.env.fd.hwpt_alloc(w.dev, w.parent, flags=PARENT, data_type=SELF, data=NESTED),
    ),
    (
        "nested wrong data type",
        errno.EOPNOTSUPP,
        lambda w: w.env.fd.hwpt_alloc(w.dev, w.parent, data_type=0xBEEF, data=NESTED),
    ),
    (
        "nested short data",
        errno.EINVAL,
        lambda w: w.env.fd.hwpt_alloc(w.dev, w.parent, data_type=SELF, data=NESTED[:2]),
    ),
    (
        "nested data at NULL",
        errno.EFAULT,
        lambda w: w.env.raw(
            uapi.IOMMU_HWPT_ALLOC,
            dev_id=w.dev,
            pt_id=w.parent,
            data_type=SELF,
            data_len=len(NESTED),
            data_uptr=0,
        ),
    ),
    # iommufd_get_hw_info
    (
        "hw_info flags",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(uapi.IOMMU_GET_HW_INFO, dev_id=w.dev, flags=2),
    ),
    (
        "hw_info reserved",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(uapi.IOMMU_GET_HW_INFO, dev_id=w.dev, **{"__reserved[1]": 1}),
    ),
    ("hw_info no device", errno.ENOENT, lambda w: w.env.fd.get_hw_info(w.ioas)),
    ("hw_info wrong type", errno.EOPNOTSUPP, lambda w: w.env.fd.get_hw_info(w.dev, in_type=7)),
    (
        "hw_info buffer at NULL",
        errno.EFAULT,
        lambda w: w.env.raw(uapi.IOMMU_GET_HW_INFO, dev_id=w.dev, data_len=8, data_uptr=0),
    ),
    # iommufd_hwpt_invalidate
    (
        "invalidate __reserved",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_INVALIDATE, hwpt_id=w.nested, __reserved=1),
    ),
    (
        "invalidate no array",
        errno.EINVAL,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_INVALIDATE, hwpt_id=w.nested, entry_num=1, entry_len=8),
    ),
    (
        "invalidate entry above a page",
        errno.EINVAL,
        lambda w: w.env.raw(
            uapi.IOMMU_HWPT_INVALIDATE,
            hwpt_id=w.nested,
            entry_num=1,
            entry_len=PAGE + 1,
            data_uptr=w.env.buffer,
        ),
    ),
    (
        "invalidate no object",
        errno.ENOENT,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_INVALIDATE, hwpt_id=999),
    ),
    (
        "invalidate a paging HWPT",
        errno.EINVAL,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_INVALIDATE, hwpt_id=w.parent),
    ),
    # iommufd_viommu_alloc_ioctl
    (
        "viommu flags",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(
            uapi.IOMMU_VIOMMU_ALLOC,
            flags=1,
            dev_id=w.dev,
            hwpt_id=w.parent,
            type=t.IOMMU_VIOMMU_TYPE_SELFTEST,
        ),
    ),
    ("viommu default type", errno.EOPNOTSUPP, lambda w: w.env.fd.viommu_alloc(w.dev, w.parent, 0)),
    (
        "viommu no device",
        errno.ENOENT,
        lambda w: w.env.fd.viommu_alloc(w.ioas, w.parent, t.IOMMU_VIOMMU_TYPE_SELFTEST),
    ),
    ("viommu unknown type", errno.EOPNOTSUPP, lambda w: w.env.fd.viommu_alloc(w.dev, w.parent, 9)),
    (
        "viommu hwpt not paging",
        errno.ENOENT,
        lambda w: w.env.fd.viommu_alloc(w.dev, w.nested, t.IOMMU_VIOMMU_TYPE_SELFTEST),
    ),
    (
        "viommu not a nest parent",
        errno.EINVAL,
        lambda w: w.env.fd.viommu_alloc(w.dev, w.auto, t.IOMMU_VIOMMU_TYPE_SELFTEST),
    ),
    # iommufd_vdevice_alloc_ioctl
    ("vdevice no viommu", errno.ENOENT, lambda w: w.env.fd.vdevice_alloc(w.ioas, w.dev, 1)),
    ("vdevice no device", errno.ENOENT, lambda w: w.env.fd.vdevice_alloc(w.viommu, w.ioas, 1)),
    ("vdevice device has one", errno.EEXIST, lambda w: w.env.fd.vdevice_alloc(w.viommu, w.dev, 1)),
    # iommufd_veventq_alloc
    ("veventq default type", errno.EOPNOTSUPP, lambda w: w.env.fd.veventq_alloc(w.viommu, 0, 4)),
    (
        "veventq depth 0",
        errno.EINVAL,
        lambda w: w.env.fd.veventq_alloc(w.viommu, t.IOMMU_VEVENTQ_TYPE_SELFTEST, 0),
    ),
    (
        "veventq no viommu",
        errno.ENOENT,
        lambda w: w.env.fd.veventq_alloc(w.ioas, t.IOMMU_VEVENTQ_TYPE_SELFTEST, 4),
    ),
    (
        "veventq type taken",
        errno.EEXIST,
        lambda w: w.env.fd.veventq_alloc(w.viommu, t.IOMMU_VEVENTQ_TYPE_SELFTEST, 4),
    ),
    # iommufd_fault_alloc
    ("fault flags", errno.EOPNOTSUPP, lambda w: w.env.raw(uapi.IOMMU_FAULT_QUEUE_ALLOC, flags=1)),
    # iommufd_hw_queue_alloc_ioctl
    (
        "hw_queue default type",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(uapi.IOMMU_HW_QUEUE_ALLOC, viommu_id=w.viommu, length=PAGE),
    ),
    (
        "hw_queue length 0",
        errno.EINVAL,
        lambda w: w.env.raw(
            uapi.IOMMU_HW_QUEUE_ALLOC, viommu_id=w.viommu, type=t.IOMMU_HW_QUEUE_TYPE_SELFTEST
        ),
    ),
    (
        "hw_queue wraps",
        errno.EOVERFLOW,
        lambda w: w.env.raw(
            uapi.IOMMU_HW_QUEUE_ALLOC,
            viommu_id=w.viommu,
            type=t.IOMMU_HW_QUEUE_TYPE_SELFTEST,
            nesting_parent_iova=2**64 - PAGE,
            length=2 * PAGE,
        ),
    ),
    (
        "hw_queue no viommu",
        errno.ENOENT,
        lambda w: w.env.raw(
            uapi.IOMMU_HW_QUEUE_ALLOC,
            viommu_id=w.ioas,
            type=t.IOMMU_HW_QUEUE_TYPE_SELFTEST,
            length=PAGE,
        ),
    ),
    (
        "hw_queue not mapped",
        errno.ENOENT,
        lambda w: w.env.raw(
            uapi.IOMMU_HW_QUEUE_ALLOC,
            viommu_id=w.viommu,
            type=t.IOMMU_HW_QUEUE_TYPE_SELFTEST,
            nesting_parent_iova=0x1000_0000,
            length=PAGE,
        ),
    ),
    # iommufd_hwpt_set_dirty_tracking / iommufd_hwpt_get_dirty_bitmap
    (
        "set dirty flags",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, hwpt_id=w.auto, flags=2),
    ),
    (
        "set dirty not paging",
        errno.ENOENT,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, hwpt_id=w.nested, flags=1),
    ),
    (
        "set dirty no dirty ops",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, hwpt_id=w.auto, flags=1),
    ),
    (
        "get dirty flags",
        errno.EOPNOTSUPP,
        lambda w: w.env.raw(uapi.IOMMU_HWPT_GET_DIRTY_BITMAP, hwpt_id=w.auto, flags=4),
    ),
    (
        "get dirty page_size 0",
        errno.EINVAL,
        lambda w: w.env.raw(
            uapi.IOMMU_HWPT_GET_DIRTY_BITMAP,
            hwpt_id=w.auto,
            iova=START,
            length=PAGE,
            data=w.env.buffer,
        ),
    ),
    # IOMMU_DESTROY of held objects
    ("destroy a used viommu", errno.EBUSY, lambda w: w.env.fd.destroy(w.viommu)),
    ("destroy a used parent", errno.EBUSY, lambda w: w.env.fd.destroy(w.parent)),
    ("destroy a bound device", errno.EBUSY, lambda w: w.env.fd.destroy(w.dev)),
    ("destroy an attached auto HWPT", errno.EBUSY, lambda w: w.env.fd.destroy(w.auto)),
]


@pytest.mark.parametrize(
    ("code", "call"), [(c, f) for _, c, f in CASES], ids=[n for n, _, _ in CASES]
)
def test_each_errno_changes_nothing(code: int, call: Case) -> None:
    w = _world()
    before = _snapshot(w)
    with pytest.raises(ApiError) as e:
        call(w)
    assert e.value.errno == code, errno.errorcode.get(e.value.errno)
    assert _snapshot(w) == before


def test_the_world_closes_to_nothing() -> None:
    w = _world()
    for fd in w.env.file.fds.fds():
        w.env.file.fds.close(fd)
    core = w.env.file.core
    w.env.fd.close()
    assert len(w.env.file.objects) == 0
    assert not w.env.file.user.pins  # type: ignore[attr-defined]
    assert core is not None and core.groups == [] and core.devices == {}
