"""The mock vIOMMU and its hardware queues (``struct mock_viommu``, ``struct mock_hw_queue``,
``selftest.c``).

A mock vIOMMU of IOMMU_VIOMMU_TYPE_SELFTEST sits on a mock paging domain (its stage 2). With
user data it allocates two pages that the user may mmap through iommufd, writes the user's
``in_data`` into the first word (a loopback the selftest reads back through the mapping) and
reports ``out_data``, ``out_mmap_offset`` and ``out_mmap_length``. It invalidates the
per-device caches of its vDEVICEs and keeps up to IOMMU_TEST_HW_QUEUE_MAX queues, queue ``i``
depending on queue ``i - 1``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import (
    ApiError,
    BadAddress,
    Exists,
    InvalidArgument,
    IoError,
    NotSupported,
)
from iommusim.sw.core.userdata import copy_struct_from_user
from iommusim.sw.core.viommu import HwQueueOps, ViommuCore, ViommuOps
from iommusim.sw.drivers.mock.device import mock_dev_of
from iommusim.sw.drivers.mock.domain import MockPagingDomain
from iommusim.sw.drivers.mock.nested import MockNestedDomain, alloc_nested
from iommusim.sw.iommufd.selftest_uapi import (
    IOMMU_HW_QUEUE_TYPE_SELFTEST,
    IOMMU_TEST_HW_QUEUE_MAX,
    IOMMU_TEST_INVALIDATE_FLAG_ALL,
    IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
    MOCK_DEV_CACHE_ID_MAX,
    MOCK_DEV_CACHE_NUM,
    STRUCTS,
)
from iommusim.sw.iommufd.uapi import IOMMU_HWPT_ALLOC_PASID
from iommusim.sw.pages import PAGE_SIZE, PageAllocator

if TYPE_CHECKING:
    from iommusim.sw.core.userdata import UserData, UserDataArray
    from iommusim.sw.drivers.mock.driver import MockIommuDriver

__all__ = ["MOCK_VIOMMU_MMAP_LENGTH", "MockHwQueue", "MockViommu"]

#: The vIOMMU's mmap region: two pages (``__get_free_pages(..., 1)``).
MOCK_VIOMMU_MMAP_LENGTH: Final = 2 * PAGE_SIZE
_MMAP_ORDER: Final = 1
_INV: Final = STRUCTS["iommu_viommu_invalidate_selftest"]
_U64: Final = (1 << 64) - 1


class MockViommu(ViommuOps):
    """``struct mock_viommu``: ``s2_parent`` is the nesting parent; ``page_pa`` and
    ``mmap_offset`` are the mmap region (None without user data)."""

    def __init__(
        self,
        owner: MockIommuDriver,
        s2_parent: MockPagingDomain,
        core: ViommuCore,
        pages: PageAllocator,
        region: tuple[PhysAddr, int] | None,
    ) -> None:
        self.owner = owner
        self.s2_parent = s2_parent
        self.core = core
        self._pages = pages
        self.page_pa: PhysAddr | None = region[0] if region is not None else None
        self.mmap_offset: int | None = region[1] if region is not None else None
        self.hw_queues: list[MockHwQueue | None] = [None] * IOMMU_TEST_HW_QUEUE_MAX
        self.destroyed = False
        s2_parent.users += 1
        owner.viommus += 1

    def destroy(self) -> None:
        """``mock_viommu_destroy``: the mmap region and its pages go."""
        if self.page_pa is not None and self.mmap_offset is not None:
            self.core.destroy_mmap(self.mmap_offset)
            self._pages.free_pages(self.page_pa, _MMAP_ORDER)
        self.s2_parent.users -= 1
        self.owner.viommus -= 1
        self.destroyed = True

    def alloc_domain_nested(self, flags: int, user_data: UserData) -> MockNestedDomain:
        """``mock_viommu_alloc_domain_nested``: EOPNOTSUPP for a flag other than
        IOMMU_HWPT_ALLOC_PASID, then ``__mock_domain_alloc_nested``'s errors."""
        if flags & ~IOMMU_HWPT_ALLOC_PASID:
            raise NotSupported(f"nested flags {flags:#x} are not supported")
        return alloc_nested(self.s2_parent, user_data, self)

    def cache_invalidate(self, array: UserDataArray) -> tuple[int, ApiError | None]:
        """``mock_viommu_cache_invalidate``: an empty array of the selftest type validates
        the type; otherwise the whole array is copied first
        (``iommu_copy_struct_from_full_user_array``: EINVAL for another type or no entries,
        E2BIG for a longer entry with a non-zero tail, EFAULT; shorter entries are
        zero-extended), then each entry in order: EOPNOTSUPP for an unknown flag, EINVAL for
        a ``cache_id`` above MOCK_DEV_CACHE_ID_MAX or a ``vdev_id`` no vDEVICE has."""
        if array.entry_num == 0 and array.type == IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST:
            return 0, None
        try:
            cmds = self._copy_full_array(array)
        except ApiError as e:
            return 0, e
        for i, cmd in enumerate(cmds):
            if cmd["flags"] & ~IOMMU_TEST_INVALIDATE_FLAG_ALL:
                return i, NotSupported(f"entry {i}: flags {cmd['flags']:#x}")
            if cmd["cache_id"] > MOCK_DEV_CACHE_ID_MAX:
                return i, InvalidArgument(f"entry {i}: cache_id {cmd['cache_id']} is above 3")
            dev = self.core.find_dev(cmd["vdev_id"])
            if dev is None:
                return i, InvalidArgument(f"entry {i}: no vDEVICE with id {cmd['vdev_id']}")
            try:
                mdev = mock_dev_of(dev, self.owner)
            except ApiError as e:
                return i, e
            if cmd["flags"] & IOMMU_TEST_INVALIDATE_FLAG_ALL:
                mdev.cache[:] = [0] * MOCK_DEV_CACHE_NUM
            else:
                mdev.cache[cmd["cache_id"]] = 0
        return len(cmds), None

    @staticmethod
    def _copy_full_array(array: UserDataArray) -> list[dict[str, int]]:
        if array.type != IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST:
            raise InvalidArgument(f"invalidation type {array.type:#x} is not the selftest's")
        if not array.entry_num:
            raise InvalidArgument("the invalidation array has no entries")
        n, ln = array.entry_num, array.entry_len
        if ln == _INV.size:
            raw = array.mem.read(array.uptr, n * ln)
            return [_INV.decode(raw[i * ln : (i + 1) * ln]) for i in range(n)]
        return [
            _INV.decode(
                copy_struct_from_user(array.mem, _INV.size, (array.uptr + ln * i) & _U64, ln)
            )
            for i in range(n)
        ]

    def get_hw_queue_size(self, queue_type: int) -> int:
        """``mock_viommu_get_hw_queue_size``: non-zero for IOMMU_HW_QUEUE_TYPE_SELFTEST only
        (the model has no struct to size: 1 says "this type exists")."""
        return 1 if queue_type == IOMMU_HW_QUEUE_TYPE_SELFTEST else 0

    def hw_queue_init_phys(
        self, queue_type: int, index: int, base_pa: int, length: int, base_iova: int
    ) -> MockHwQueue:
        """``mock_hw_queue_init_phys``: EINVAL for an index from IOMMU_TEST_HW_QUEUE_MAX,
        EEXIST for a queue index already in use, EIO when queue ``index - 1`` does not exist,
        EFAULT when ``base_pa`` is not what the parent translates ``base_iova`` to (the check
        that iommufd converted the address right), then ``iommufd_hw_queue_depend``'s
        errors; queue ``index`` then depends on queue ``index - 1``."""
        if not 0 <= index < IOMMU_TEST_HW_QUEUE_MAX:
            raise InvalidArgument(f"queue index {index} is not below {IOMMU_TEST_HW_QUEUE_MAX}")
        if self.hw_queues[index] is not None:
            raise Exists(f"queue {index} exists")
        prev = self.hw_queues[index - 1] if index else None
        if index and prev is None:
            raise IoError(f"queue {index - 1} must exist before queue {index}")
        if base_pa != self.s2_parent.iova_to_phys(Iova(base_iova)):
            raise BadAddress(f"base_pa {base_pa:#x} is not where IOVA {base_iova:#x} maps")
        queue = MockHwQueue(self, index, prev)
        if prev is not None:
            self.core.hw_queue_depend(queue, prev)
        self.hw_queues[index] = queue
        return queue


class MockHwQueue(HwQueueOps):
    """``struct mock_hw_queue``: queue ``index`` of ``viommu``; ``prev`` is the queue it
    depends on."""

    def __init__(self, viommu: MockViommu, index: int, prev: MockHwQueue | None) -> None:
        self.viommu = viommu
        self.index = index
        self.prev = prev

    def destroy(self) -> None:
        """``mock_hw_queue_destroy``."""
        self.viommu.hw_queues[self.index] = None
        if self.prev is not None:
            self.viommu.core.hw_queue_undepend(self, self.prev)
