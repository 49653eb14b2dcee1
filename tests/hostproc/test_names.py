"""ioctl names for the trace: iommufd's, the selftest op, VFIO's, else the number."""

from __future__ import annotations

from iommusim.hostproc.names import INT_ARG_IOCTLS, errno_name, ioctl_name
from iommusim.sw.iommufd import selftest_uapi as t
from iommusim.sw.iommufd import uapi


def test_iommufd_ioctls_are_named_from_the_uapi_table() -> None:
    assert ioctl_name(uapi.IOMMU_IOAS_MAP) == "IOMMU_IOAS_MAP"
    assert ioctl_name(uapi.IOMMU_HW_QUEUE_ALLOC) == "IOMMU_HW_QUEUE_ALLOC"


def test_the_selftest_command_carries_its_op() -> None:
    arg = t.TEST_CMD.encode({"op": t.IOMMU_TEST_OP_MD_CHECK_MAP}, size=t.TEST_CMD.size)
    assert ioctl_name(t.IOMMU_TEST_CMD, arg) == "IOMMU_TEST_CMD/MD_CHECK_MAP"


def test_vfio_and_unknown_numbers() -> None:
    assert ioctl_name(0x3B65) == "VFIO_CHECK_EXTENSION"
    assert 0x3B65 in INT_ARG_IOCTLS and uapi.IOMMU_DESTROY not in INT_ARG_IOCTLS
    assert ioctl_name(0x1234) == "ioctl 0x1234"
    assert errno_name(22) == "EINVAL"
