"""The driver's half of a vIOMMU (after Linux ``include/linux/iommufd.h``).

iommufd owns the VIOMMU, VDEVICE and HW_QUEUE objects (ids, references, the user's
ioctls); the driver behind them implements :class:`ViommuOps` (``iommufd_viommu_ops``) and
:class:`HwQueueOps`, and reaches back into iommufd through the :class:`ViommuCore` it was
given (``drivers/iommu/iommufd/driver.c``: mmap regions, vDEVICE lookups, vEVENTs, queue
dependencies). Every op a driver does not override answers EOPNOTSUPP, as a NULL op does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from iommusim.errors import ApiError, NotSupported

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device
    from iommusim.sw.core.domain import Domain
    from iommusim.sw.core.userdata import UserData, UserDataArray

__all__ = ["HwQueueOps", "ViommuCore", "ViommuOps"]


class HwQueueOps:
    """The driver's part of one ``struct iommufd_hw_queue``."""

    #: The queue object iommufd keeps for it (set by iommufd, for queue dependencies).
    handle: object = None

    def destroy(self) -> None:
        """``hw_queue->destroy``: the queue object is going away."""


class ViommuCore(Protocol):
    """What iommufd offers the driver of one vIOMMU (``drivers/iommu/iommufd/driver.c``)."""

    def alloc_mmap(self, base_pa: int, length: int) -> int:
        """``iommufd_viommu_alloc_mmap``: let the user mmap ``length`` bytes of physical
        memory from ``base_pa`` through the iommufd file; returns the mmap offset."""
        ...

    def destroy_mmap(self, offset: int) -> None:
        """``iommufd_viommu_destroy_mmap``."""

    def find_dev(self, vdev_id: int) -> Device | None:
        """``iommufd_viommu_find_dev``: the device of the vDEVICE with virtual id ``vdev_id``."""
        ...

    def get_vdev_id(self, dev: Device) -> int | None:
        """``iommufd_viommu_get_vdev_id``: ``dev``'s virtual id in this vIOMMU, if any."""
        ...

    def report_event(self, event_type: int, data: bytes) -> None:
        """``iommufd_viommu_report_event``: queue a vEVENT on the vEVENTQ of that type
        (NotSupported, EOPNOTSUPP, when there is none)."""

    def hw_queue_depend(self, dependent: HwQueueOps, depended: HwQueueOps) -> None:
        """``iommufd_hw_queue_depend``: ``depended`` cannot be destroyed (EBUSY) before
        ``dependent``."""

    def hw_queue_undepend(self, dependent: HwQueueOps, depended: HwQueueOps) -> None:
        """``iommufd_hw_queue_undepend``."""


class ViommuOps:
    """``iommufd_viommu_ops``: a driver subclasses this for its vIOMMU type."""

    def destroy(self) -> None:
        """The VIOMMU object is going away (its vDEVICEs and queues are gone already)."""

    def alloc_domain_nested(self, flags: int, user_data: UserData) -> Domain:
        raise NotSupported("this vIOMMU cannot allocate nested domains")

    def cache_invalidate(self, array: UserDataArray) -> tuple[int, ApiError | None]:
        """Handle the user's invalidation entries in order: how many were handled and the
        error that stopped it (None: all)."""
        raise NotSupported("this vIOMMU has no cache invalidation")

    def vdevice_init(self, dev: Device, virt_id: int) -> None:
        """A vDEVICE of ``dev`` with ``virt_id`` joins the vIOMMU."""

    def vdevice_destroy(self, dev: Device, virt_id: int) -> None:
        """That vDEVICE leaves."""

    def get_hw_queue_size(self, queue_type: int) -> int:
        """``get_hw_queue_size``: 0 when the vIOMMU has no queues of ``queue_type``."""
        return 0

    def hw_queue_init_phys(
        self, queue_type: int, index: int, base_pa: int, length: int, base_iova: int
    ) -> HwQueueOps:
        """``hw_queue_init_phys``: queue ``index`` of ``length`` bytes at ``base_pa``, the
        user's ``base_iova`` (``hw_queue->base_addr``) in the nesting parent."""
        raise NotSupported("this vIOMMU has no hardware queues")
