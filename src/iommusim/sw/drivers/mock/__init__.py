"""The iommufd selftest's mock IOMMU driver, after Linux 7.3
``drivers/iommu/iommufd/selftest.c``.

- :mod:`~iommusim.sw.drivers.mock.driver`: :class:`MockIommuDriver` (``mock_ops``), its
  devices and allocations;
- :mod:`~iommusim.sw.drivers.mock.device`: :class:`MockDev` (``struct mock_dev``);
- :mod:`~iommusim.sw.drivers.mock.pgtable`: :class:`MockPageTable`, the paging domains' table;
- :mod:`~iommusim.sw.drivers.mock.domain`: the blocking and paging domains;
- :mod:`~iommusim.sw.drivers.mock.nested`: the nested domain with its mock IOTLB;
- :mod:`~iommusim.sw.drivers.mock.viommu`: :class:`MockViommu` and :class:`MockHwQueue`;
- :mod:`~iommusim.sw.drivers.mock.testops`: the driver side of the IOMMU_TEST_CMD ops.
"""

from __future__ import annotations

from iommusim.sw.drivers.mock import testops
from iommusim.sw.drivers.mock.device import MOCK_DEV_KEY, MockDev, is_mock_dev
from iommusim.sw.drivers.mock.domain import (
    MOCK_DEFAULT_PGSIZE_BITMAP,
    MOCK_HUGE_PGSIZE_BITMAP,
    MockBlockedDomain,
    MockDomain,
    MockPagingDomain,
)
from iommusim.sw.drivers.mock.driver import MockIommuDriver, PageResponse
from iommusim.sw.drivers.mock.nested import MockNestedDomain
from iommusim.sw.drivers.mock.pgtable import MockLeaf, MockPageTable
from iommusim.sw.drivers.mock.viommu import MOCK_VIOMMU_MMAP_LENGTH, MockHwQueue, MockViommu

__all__ = [
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
