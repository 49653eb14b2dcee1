"""The public surface of iommusim.sw.drivers.mock (STYLE: re-exported from the package and
pinned by a test)."""

from __future__ import annotations

from typing import Any

from iommusim.sw.core.device import Device
from iommusim.sw.drivers import mock


def test_public_names() -> None:
    assert sorted(mock.__all__) == [
        "MOCK_DEFAULT_PGSIZE_BITMAP",
        "MOCK_DEV_KEY",
        "MOCK_HUGE_PGSIZE_BITMAP",
        "MOCK_VIOMMU_MMAP_LENGTH",
        "MockBlockedDomain",
        "MockDev",
        "MockDomain",
        "MockHwQueue",
        "MockIommuDriver",
        "MockLeaf",
        "MockNestedDomain",
        "MockPageTable",
        "MockPagingDomain",
        "MockViommu",
        "PageResponse",
        "is_mock_dev",
        "testops",
    ]
    for name in mock.__all__:
        assert getattr(mock, name) is not None


def test_is_mock_dev_tells_mock_devices_of_any_mock_iommu(env: Any) -> None:
    """iommufd_selftest_is_mock_dev: dev->release == mock_dev_release."""
    assert mock.is_mock_dev(env.drv.create_device())
    assert not mock.is_mock_dev(Device("nic", 0x10))
