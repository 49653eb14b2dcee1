"""HW_QUEUE objects (``drivers/iommu/iommufd/viommu.c``): a queue in guest memory that the
vIOMMU's hardware reads directly (a command queue a guest drives without trapping).

The queue lives at ``nesting_parent_iova`` of the vIOMMU's parent IOAS; iommufd pins it
through an internal access (whose pins lock the area: IOAS_UNMAP of it is EBUSY), checks the
pages are physically contiguous, and hands the driver the physical base.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Final, cast

from iommusim.errors import BadAddress, InvalidArgument, NotSupported, OutOfRange, Overflow
from iommusim.sw.core.viommu import HwQueueOps
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.access import Access
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType
from iommusim.sw.iommufd.viommu import Viommu
from iommusim.sw.pages import PAGE_SIZE

if TYPE_CHECKING:
    from iommusim.sw.iommufd.file import IommufdFile
    from iommusim.sw.iommufd.ucmd import Ucmd

__all__ = ["HwQueue", "hw_queue_alloc_ioctl"]

_U64: Final = (1 << 64) - 1


class HwQueue(IommufdObject):
    """``struct iommufd_hw_queue``."""

    __slots__ = ("access", "base_addr", "length", "ops", "queue_type", "viommu")
    type = ObjType.HW_QUEUE

    def __init__(self, viommu: Viommu, queue_type: int, base_addr: int, length: int) -> None:
        super().__init__()
        self.viommu = viommu
        self.queue_type = queue_type
        self.base_addr = base_addr
        self.length = length
        self.access: Access | None = None
        self.ops: HwQueueOps | None = None

    def destroy(self) -> None:
        """``iommufd_hw_queue_destroy``: the driver's part, then the pinning access, then
        the reference on the vIOMMU."""
        if self.ops is not None:
            self.ops.destroy()
            self.ops = None
        if self.access is not None:
            _release(self.access, self.base_addr, self.length)
            self.access = None
        self.viommu.users -= 1


def _span(base: int, length: int) -> tuple[int, int]:
    """The page-aligned IOVA and length that cover ``[base, base + length)``; ERANGE when
    the rounding overflows ``size_t``."""
    aligned = base & ~(PAGE_SIZE - 1)
    total = base - aligned + length + PAGE_SIZE - 1
    if total > _U64:
        raise OutOfRange(f"queue {base:#x}+{length:#x} does not fit size_t")
    return aligned, total // PAGE_SIZE * PAGE_SIZE


def _release(access: Access, base: int, length: int) -> None:
    """``iommufd_hw_queue_destroy_access``."""
    aligned, span = _span(base, length)
    access.unpin_pages(aligned, span)
    access.detach()
    access.destroy_user()


def _pin(objects: ObjectTable, viommu: Viommu, base: int, length: int) -> tuple[Access, int]:
    """``iommufd_hw_queue_alloc_phys``: an internal access on the parent's IOAS pinning the
    queue; EFAULT when its pages are not physically contiguous. Undone on failure."""
    aligned, span = _span(base, length)
    access = Access.create_internal(objects)
    try:
        access.attach_internal(viommu.hwpt.ioas)
        try:
            pas = access.pin_pages(aligned, span)
            try:
                if any(b != a + PAGE_SIZE for a, b in itertools.pairwise(pas)):
                    raise BadAddress("the queue's pages are not physically contiguous")
            except BaseException:
                access.unpin_pages(aligned, span)
                raise
        except BaseException:
            access.detach()
            raise
    except BaseException:
        access.destroy_user()
        raise
    return access, pas[0] + (base - aligned)


def hw_queue_alloc_ioctl(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_HW_QUEUE_ALLOC: EOPNOTSUPP for flags, the DEFAULT type or a vIOMMU without
    queues of the type; EINVAL for length 0; EOVERFLOW when the queue wraps the IOVA space;
    ENOENT for no vIOMMU; the pin's errors (ENOENT unmapped, EFAULT not contiguous); then
    the driver's ``hw_queue_init_phys``."""
    cmd = ucmd.cmd
    if cmd["flags"] or cmd["type"] == uapi.IOMMU_HW_QUEUE_TYPE_DEFAULT:
        raise NotSupported(f"HW_QUEUE_ALLOC flags {cmd['flags']:#x} / type {cmd['type']}")
    if not cmd["length"]:
        raise InvalidArgument("HW_QUEUE_ALLOC length must not be 0")
    base, length = cmd["nesting_parent_iova"], cmd["length"]
    if base + length - 1 > _U64:
        raise Overflow(f"queue {base:#x}+{length:#x} wraps the IOVA space")
    viommu = cast("Viommu", ictx.objects.get(cmd["viommu_id"], ObjType.VIOMMU))
    ops = viommu.ops
    if ops is None or not ops.get_hw_queue_size(cmd["type"]):
        raise NotSupported(f"vIOMMU {viommu.id} has no queues of type {cmd['type']}")
    q = HwQueue(viommu, cmd["type"], base, length)
    ictx.objects.reserve(q)
    ucmd.new_obj = q
    viommu.users += 1  # before the pin, so the abort's destroy can drop it
    q.access, base_pa = _pin(ictx.objects, viommu, base, length)
    q.ops = ops.hw_queue_init_phys(cmd["type"], cmd["index"], base_pa, length, base)
    q.ops.handle = q
    cmd["out_hw_queue_id"] = q.id
    ucmd.respond()
