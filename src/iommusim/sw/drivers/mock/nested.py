"""The mock IOMMU's nested domains (``struct mock_iommu_domain_nested``, ``selftest.c``).

A nested domain has no page table of its own: it carries ``iotlb[4]``, a stand-in for an
IOTLB the user invalidates through HWPT_INVALIDATE, seeded with the ``iotlb`` value of the
user's ``struct iommu_hwpt_selftest`` and checked by IOMMU_TEST_OP_MD_CHECK_IOTLB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.errors import ApiError, InvalidArgument, NotSupported
from iommusim.sw.core.domain import DOMAIN_NESTED
from iommusim.sw.drivers.mock.domain import MockDomain, MockPagingDomain
from iommusim.sw.iommufd.selftest_uapi import (
    IOMMU_HWPT_DATA_SELFTEST,
    IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
    IOMMU_TEST_INVALIDATE_FLAG_ALL,
    MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
    MOCK_NESTED_DOMAIN_IOTLB_NUM,
    STRUCTS,
)

if TYPE_CHECKING:
    from iommusim.sw.core.userdata import UserData, UserDataArray
    from iommusim.sw.drivers.mock.viommu import MockViommu

__all__ = ["MockNestedDomain", "alloc_nested"]

_HWPT: Final = STRUCTS["iommu_hwpt_selftest"]
_INV: Final = STRUCTS["iommu_hwpt_invalidate_selftest"]


class MockNestedDomain(MockDomain):
    """A DOMAIN_NESTED domain inside the mock paging domain ``parent`` (which it keeps busy
    while it lives); ``viommu`` is set for one allocated through a vIOMMU."""

    def __init__(self, parent: MockPagingDomain, iotlb: int, viommu: MockViommu | None) -> None:
        super().__init__(DOMAIN_NESTED, parent.owner)
        self.parent = parent
        self.viommu = viommu
        self.iotlb = [iotlb] * MOCK_NESTED_DOMAIN_IOTLB_NUM
        parent.users += 1

    def _viommu(self) -> MockViommu | None:
        return self.viommu

    def free(self) -> None:
        """``mock_domain_free_nested``."""
        self.parent.users -= 1

    def cache_invalidate_user(self, array: UserDataArray) -> tuple[int, ApiError | None]:
        """``mock_domain_cache_invalidate_user``: EINVAL for an array type other than
        IOMMU_HWPT_INVALIDATE_DATA_SELFTEST; then per entry, in order, the copy's errors
        (EINVAL, E2BIG, EFAULT), EOPNOTSUPP for an unknown flag, EINVAL for an ``iotlb_id``
        above MOCK_NESTED_DOMAIN_IOTLB_ID_MAX. Entries before the failing one stay done."""
        if array.type != IOMMU_HWPT_INVALIDATE_DATA_SELFTEST:
            return 0, InvalidArgument(f"invalidation type {array.type:#x} is not the selftest's")
        for i in range(array.entry_num):
            try:
                raw = array.copy_entry(
                    IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, i, _INV.size, _INV.offsetofend("iotlb_id")
                )
            except ApiError as e:
                return i, e
            inv = _INV.decode(raw)
            if inv["flags"] & ~IOMMU_TEST_INVALIDATE_FLAG_ALL:
                return i, NotSupported(f"entry {i}: flags {inv['flags']:#x}")
            if inv["iotlb_id"] > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX:
                return i, InvalidArgument(f"entry {i}: iotlb_id {inv['iotlb_id']} is above 3")
            if inv["flags"] & IOMMU_TEST_INVALIDATE_FLAG_ALL:
                self.iotlb = [0] * MOCK_NESTED_DOMAIN_IOTLB_NUM
            else:
                self.iotlb[inv["iotlb_id"]] = 0
        return array.entry_num, None


def alloc_nested(
    parent: MockPagingDomain, user_data: UserData, viommu: MockViommu | None
) -> MockNestedDomain:
    """``__mock_domain_alloc_nested``: EOPNOTSUPP for a data type other than
    IOMMU_HWPT_DATA_SELFTEST, the copy's errors (EINVAL, E2BIG, EFAULT) for its struct."""
    if user_data.type != IOMMU_HWPT_DATA_SELFTEST:
        raise NotSupported(f"nested data type {user_data.type:#x} is not the selftest's")
    raw = user_data.copy_from(IOMMU_HWPT_DATA_SELFTEST, _HWPT.size, _HWPT.offsetofend("iotlb"))
    return MockNestedDomain(parent, _HWPT.decode(raw)["iotlb"], viommu)
