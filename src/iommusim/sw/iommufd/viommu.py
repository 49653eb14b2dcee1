"""VIOMMU and VDEVICE objects (``drivers/iommu/iommufd/viommu.c``, ``driver.c``).

A vIOMMU is the security namespace of one guest's IOMMU on one physical IOMMU: it holds the
nesting-parent HWPT (the stage the host owns), the guest's virtual device ids (a vDEVICE per
assigned device, ``virt_id`` -> device), its event queues and hardware queues. The driver's
part is a :class:`~iommusim.sw.core.viommu.ViommuOps`; :class:`Viommu` is also the
:class:`~iommusim.sw.core.viommu.ViommuCore` that driver reaches iommufd through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, cast

from iommusim.errors import (
    Exists,
    InvalidArgument,
    NoSuchAddress,
    NotFound,
    NotPermitted,
    NotSupported,
)
from iommusim.sw.core.device import Device
from iommusim.sw.core.userdata import UserData
from iommusim.sw.core.viommu import HwQueueOps, ViommuOps
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType
from iommusim.sw.pages import PAGE_SIZE

if TYPE_CHECKING:
    from iommusim.sw.iommufd.device import IommufdDevice
    from iommusim.sw.iommufd.file import IommufdFile
    from iommusim.sw.iommufd.hwpt import HwptPaging
    from iommusim.sw.iommufd.ucmd import Ucmd

__all__ = [
    "EventSink",
    "MmapRegion",
    "MmapTable",
    "Vdevice",
    "Viommu",
    "vdevice_alloc",
    "viommu_alloc",
]

_ULONG_MAX: Final = (1 << 64) - 1


class EventSink(Protocol):
    """A vEVENTQ as the vIOMMU sees it."""

    def report(self, data: bytes) -> None: ...


@dataclass(slots=True)
class MmapRegion:
    """``struct iommufd_mmap``: ``length`` bytes of physical memory from ``base_pa`` the user
    may mmap at ``offset`` of the iommufd file; each live mapping holds a reference on the
    owner."""

    owner: IommufdObject
    base_pa: int
    length: int
    offset: int


class MmapTable:
    """``ictx->mt_mmap``: offsets allocated first-fit from PAGE_SIZE (the first page is
    skipped so that 0 never names a region)."""

    __slots__ = ("regions",)

    def __init__(self) -> None:
        self.regions: dict[int, MmapRegion] = {}

    def alloc(self, owner: IommufdObject, base_pa: int, length: int) -> int:
        """``_iommufd_alloc_mmap``: EINVAL for an unaligned address or length."""
        if base_pa % PAGE_SIZE or not length or length % PAGE_SIZE:
            raise InvalidArgument(f"mmap region {base_pa:#x}+{length:#x} is not page aligned")
        at = PAGE_SIZE
        for off in sorted(self.regions):
            if off - at >= length:
                break
            at = max(at, off + self.regions[off].length)
        self.regions[at] = MmapRegion(owner, base_pa, length, at)
        return at

    def erase(self, offset: int) -> None:
        del self.regions[offset]

    def map(self, offset: int, length: int, shared: bool, exec_: bool) -> MmapRegion:
        """``iommufd_fops_mmap``: EINVAL for an unaligned length or a private mapping,
        EPERM for an executable one, ENXIO unless offset and length are exactly a
        region's. Takes a reference on the owner (dropped by :meth:`unmap`)."""
        if length % PAGE_SIZE:
            raise InvalidArgument(f"mmap length {length:#x} is not page aligned")
        if not shared:
            raise InvalidArgument("iommufd regions can only be mapped shared")
        if exec_:
            raise NotPermitted("iommufd regions cannot be mapped executable")
        region = self.regions.get(offset)
        if region is None or region.length != length:
            raise NoSuchAddress(f"no mmap region of {length:#x} bytes at offset {offset:#x}")
        region.owner.users += 1
        return region

    @staticmethod
    def unmap(region: MmapRegion) -> None:
        region.owner.users -= 1


class Vdevice(IommufdObject):
    """``struct iommufd_vdevice``: ``idev`` as ``virt_id`` in ``viommu``."""

    __slots__ = ("idev", "viommu", "virt_id")
    type = ObjType.VDEVICE

    def __init__(self, viommu: Viommu, idev: IommufdDevice, virt_id: int) -> None:
        super().__init__()
        self.viommu = viommu
        self.idev = idev
        self.virt_id = virt_id

    def destroy(self) -> None:
        """``iommufd_vdevice_destroy``."""
        v = self.viommu
        if v.vdevs.get(self.virt_id) is self:
            del v.vdevs[self.virt_id]
            if v.ops is not None:
                v.ops.vdevice_destroy(self.idev.dev, self.virt_id)
        v.users -= 1
        self.idev.users -= 1
        self.idev.vdev = None


class Viommu(IommufdObject):
    """``struct iommufd_viommu``."""

    __slots__ = (
        "_mmaps",
        "hwpt",
        "iommu",
        "ops",
        "vdevs",
        "veventqs",
        "viommu_type",
    )
    type = ObjType.VIOMMU

    def __init__(self, hwpt: HwptPaging, iommu: object, viommu_type: int, mmaps: MmapTable):
        super().__init__()
        self.hwpt = hwpt
        hwpt.users += 1
        self.iommu = iommu
        self.viommu_type = viommu_type
        self.ops: ViommuOps | None = None
        self.vdevs: dict[int, Vdevice] = {}
        #: vEVENTQ type -> queue (one per type).
        self.veventqs: dict[int, EventSink] = {}
        self._mmaps = mmaps

    def destroy(self) -> None:
        """``iommufd_viommu_destroy``."""
        if self.ops is not None:
            self.ops.destroy()
        for off, r in list(self._mmaps.regions.items()):
            if r.owner is self:
                self._mmaps.erase(off)
        self.hwpt.users -= 1
        self.vdevs.clear()

    # ------------------------------------------------------------------ ViommuCore
    def alloc_mmap(self, base_pa: int, length: int) -> int:
        return self._mmaps.alloc(self, base_pa, length)

    def destroy_mmap(self, offset: int) -> None:
        self._mmaps.erase(offset)

    def find_dev(self, vdev_id: int) -> Device | None:
        v = self.vdevs.get(vdev_id)
        return None if v is None else v.idev.dev

    def get_vdev_id(self, dev: Device) -> int | None:
        return next((k for k, v in self.vdevs.items() if v.idev.dev is dev), None)

    def report_event(self, event_type: int, data: bytes) -> None:
        """``iommufd_viommu_report_event``: EOPNOTSUPP when the vIOMMU has no vEVENTQ of
        ``event_type``."""
        q = self.veventqs.get(event_type)
        if q is None:
            raise NotSupported(f"vIOMMU {self.id} has no vEVENTQ of type {event_type:#x}")
        q.report(data)

    def hw_queue_depend(self, dependent: HwQueueOps, depended: HwQueueOps) -> None:
        if isinstance(depended.handle, IommufdObject):
            depended.handle.users += 1

    def hw_queue_undepend(self, dependent: HwQueueOps, depended: HwQueueOps) -> None:
        if isinstance(depended.handle, IommufdObject):
            depended.handle.users -= 1


def viommu_alloc(
    objects: ObjectTable,
    mmaps: MmapTable,
    idev: IommufdDevice,
    hwpt: HwptPaging,
    viommu_type: int,
    user_data: UserData | None,
) -> Viommu:
    """``iommufd_viommu_alloc_ioctl`` after its lookups: EINVAL for a parent that is no
    nesting parent; the driver's EOPNOTSUPP for a type it lacks. Aborted on failure."""
    dev = idev.dev
    if dev.iommu is None:
        raise NotSupported(f"{dev.name} has no IOMMU")
    if not hwpt.nest_parent or hwpt.domain is None:
        raise InvalidArgument(f"HWPT {hwpt.id} is not a nesting parent")
    v = Viommu(hwpt, dev.iommu, viommu_type, mmaps)
    objects.reserve(v)
    try:
        v.ops = dev.iommu.viommu_alloc(dev, viommu_type, hwpt.domain, user_data, v)
    except BaseException:
        objects.abort(v)
        raise
    return v


def vdevice_alloc(
    objects: ObjectTable, viommu: Viommu, idev: IommufdDevice, virt_id: int
) -> Vdevice:
    """``iommufd_vdevice_alloc_ioctl`` after its lookups: EINVAL for a virt_id beyond
    ULONG_MAX or a device behind another IOMMU, ENOENT for a device being unbound, EEXIST
    when the device has a vDEVICE or the virt_id is taken. Aborted on failure."""
    if virt_id > _ULONG_MAX:
        raise InvalidArgument(f"virt_id {virt_id:#x} is beyond ULONG_MAX")
    if idev.dev.iommu is not viommu.iommu:
        raise InvalidArgument(f"{idev.dev.name} is behind another IOMMU than the vIOMMU")
    if idev.destroying:
        raise NotFound(f"device {idev.id} is being unbound")
    if idev.vdev is not None:
        raise Exists(f"device {idev.id} already has a vDEVICE")
    if virt_id in viommu.vdevs:
        raise Exists(f"virt_id {virt_id:#x} is taken in vIOMMU {viommu.id}")
    vdev = Vdevice(viommu, idev, virt_id)
    objects.reserve(vdev)
    viommu.users += 1
    idev.users += 1  # the lookup's reference stays with the vDEVICE until pre_destroy
    idev.vdev = vdev
    try:
        if viommu.ops is not None:
            viommu.ops.vdevice_init(idev.dev, virt_id)
    except BaseException:
        objects.abort(vdev)
        raise
    viommu.vdevs[virt_id] = vdev
    return vdev


# ---------------------------------------------------------------------- ioctls
def viommu_alloc_ioctl(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_VIOMMU_ALLOC: EOPNOTSUPP for flags or the DEFAULT type, ENOENT for a device or
    paging HWPT that is not there, EINVAL for an HWPT that is no nesting parent."""
    cmd = ucmd.cmd
    if cmd["flags"] or cmd["type"] == uapi.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise NotSupported(f"VIOMMU_ALLOC flags {cmd['flags']:#x} / type {cmd['type']}")
    idev = ictx.get_device(cmd["dev_id"])
    drv = idev.dev.iommu
    if drv is None or not drv.get_viommu_size(idev.dev, cmd["type"]):
        raise NotSupported(f"{idev.dev.name}'s IOMMU has no vIOMMU type {cmd['type']:#x}")
    hwpt = cast("HwptPaging", ictx.objects.get(cmd["hwpt_id"], ObjType.HWPT_PAGING))
    data = UserData(cmd["type"], cmd["data_uptr"], cmd["data_len"], ictx.user)
    v = viommu_alloc(
        ictx.objects, ictx.mmaps, idev, hwpt, cmd["type"], data if cmd["data_len"] else None
    )
    ucmd.new_obj = v
    cmd["out_viommu_id"] = v.id
    ucmd.respond()


def vdevice_alloc_ioctl(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_VDEVICE_ALLOC."""
    cmd = ucmd.cmd
    if cmd["virt_id"] > _ULONG_MAX:  # pragma: no cover - a u64 cannot exceed it
        raise InvalidArgument("virt_id is beyond ULONG_MAX")
    viommu = cast("Viommu", ictx.objects.get(cmd["viommu_id"], ObjType.VIOMMU))
    idev = ictx.get_device(cmd["dev_id"])
    vdev = vdevice_alloc(ictx.objects, viommu, idev, cmd["virt_id"])
    ucmd.new_obj = vdev
    cmd["out_vdevice_id"] = vdev.id
    ucmd.respond()
