"""The DEVICE object and attachment (``drivers/iommu/iommufd/device.c``).

A driver that hands a device to user space (VFIO's cdev, the selftest's mock domain) binds
it: iommufd claims DMA ownership of its group in the IOMMU core (the group moves to the
blocking domain) and publishes a DEVICE object. Attaching a device, or one PASID of it, to an
HWPT -- or to an IOAS, which picks or makes an *auto* paging HWPT -- goes through the core
once per group and PASID (``igroup->pasid_attach``); every device of the group attaches
individually, and each attachment holds a reference on the HWPT and on the DEVICE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from iommusim.errors import Busy, InvalidArgument, NoDevice, NotSupported
from iommusim.sw.core.device import Device, Group
from iommusim.sw.core.ops import (
    CAP_CACHE_COHERENCY,
    CAP_DIRTY_TRACKING,
    CAP_ENFORCE_CACHE_COHERENCY,
    CAP_PCI_ATS_SUPPORTED,
)
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.fault import IommufdFault
from iommusim.sw.iommufd.hwpt import Hwpt, HwptPaging, hwpt_paging_alloc
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType

if TYPE_CHECKING:
    from iommusim.sw.core.iommu import IommuCore
    from iommusim.sw.iommufd.file import IommufdFile
    from iommusim.sw.iommufd.ucmd import Ucmd

__all__ = ["NO_PASID", "Attach", "DeviceApi", "IommufdDevice", "IommufdGroup", "get_hw_info"]

#: ``IOMMU_NO_PASID``: the requester id itself.
NO_PASID = 0


@dataclass(eq=False)
class Attach:
    """``struct iommufd_attach``: one HWPT on one PASID of a group, and its devices."""

    hwpt: Hwpt | None = None
    devices: dict[int, IommufdDevice] = field(default_factory=dict)


@dataclass(eq=False)
class IommufdGroup:
    """``struct iommufd_group``: iommufd's per-context state of a core group."""

    group: Group
    refs: int = 1
    pasid_attach: dict[int, Attach] = field(default_factory=dict)


class IommufdDevice(IommufdObject):
    """``struct iommufd_device``: a bound device."""

    __slots__ = (
        "core",
        "destroying",
        "dev",
        "enforce_cache_coherency",
        "igroup",
        "objects",
        "vdev",
    )
    type = ObjType.DEVICE

    def __init__(self, core: IommuCore, objects: ObjectTable, dev: Device) -> None:
        super().__init__()
        self.core = core
        self.objects = objects
        self.dev = dev
        self.igroup: IommufdGroup | None = None
        self.enforce_cache_coherency = False
        #: The device is being unbound: no new vDEVICE may refer to it.
        self.destroying = False
        #: Its vDEVICE, if any (``idev->vdev``).
        self.vdev: IommufdObject | None = None

    def destroy(self) -> None:
        """``iommufd_device_destroy``: give DMA ownership back (the group returns to its
        default domain once its last device goes)."""
        if self.igroup is None:
            return
        self.core.release_dma_owner(self.dev)
        self.igroup.refs -= 1
        self.igroup = None

    # ------------------------------------------------------------------ helpers
    def _igroup(self) -> IommufdGroup:
        if self.igroup is None:  # pragma: no cover - a published device is bound
            raise NoDevice(f"{self.dev.name} is not bound")
        return self.igroup

    def attached_hwpt(self, pasid: int = NO_PASID) -> Hwpt | None:
        attach = self._igroup().pasid_attach.get(pasid)
        if attach is None or self.id not in attach.devices:
            return None
        return attach.hwpt

    def _pasid_compat(self, hwpt: Hwpt, pasid: int) -> None:
        """``iommufd_hwpt_pasid_compat``: a RID HWPT that is not PASID-compatible excludes
        PASID attachments, and a PASID needs a PASID-compatible HWPT."""
        ig = self._igroup()
        if pasid == NO_PASID:
            if not hwpt.pasid_compat and any(p != NO_PASID for p in ig.pasid_attach):
                raise InvalidArgument("the group has PASIDs attached: the HWPT must allow them")
            return
        if not hwpt.pasid_compat:
            raise InvalidArgument(f"HWPT {hwpt.id} was not allocated for PASIDs")
        rid = ig.pasid_attach.get(NO_PASID)
        if rid is not None and rid.hwpt is not None and not rid.hwpt.pasid_compat:
            raise InvalidArgument("the RID's HWPT does not allow PASIDs")

    # ------------------------------------------------------------------ attach
    def attach_hwpt(self, hwpt: Hwpt, pasid: int = NO_PASID) -> None:
        """``iommufd_hw_pagetable_attach``: EBUSY when this device is attached on ``pasid``
        already, EINVAL when the group is on another HWPT there; the first device of the
        group attaches it in the core. Nothing changes on failure."""
        ig = self._igroup()
        attach = ig.pasid_attach.get(pasid)
        first = attach is None
        if attach is not None:
            if self.id in attach.devices:
                raise Busy(f"{self.dev.name} is already attached on PASID {pasid}")
            if attach.hwpt is not hwpt:
                raise InvalidArgument(f"the group is attached to another HWPT on PASID {pasid}")
        if first:
            self._pasid_compat(hwpt, pasid)
            domain = hwpt.domain
            if domain is None:  # pragma: no cover - a published HWPT has its domain
                raise InvalidArgument(f"HWPT {hwpt.id} has no domain")
            if pasid == NO_PASID:
                self.core.attach_group(domain, ig.group)
            else:
                self.core.attach_device_pasid(domain, self.dev, pasid)
            attach = Attach(hwpt)
            ig.pasid_attach[pasid] = attach
        assert attach is not None
        attach.devices[self.id] = self
        hwpt.users += 1

    def detach_hwpt(self, hwpt: Hwpt, pasid: int = NO_PASID) -> None:
        """``iommufd_hw_pagetable_detach`` for an attachment known to exist: the last device
        of the group detaches it in the core (the RID goes back to blocking) and answers
        the HWPT's pending page faults of that attachment "invalid"."""
        ig = self._igroup()
        attach = ig.pasid_attach[pasid]
        del attach.devices[self.id]
        if not attach.devices:
            domain = hwpt.domain
            if domain is not None:
                if pasid == NO_PASID:
                    self.core.detach_group(domain, ig.group)
                else:
                    self.core.detach_device_pasid(domain, self.dev, pasid)
                _auto_respond(hwpt, self.dev, pasid)
            del ig.pasid_attach[pasid]
        hwpt.users -= 1

    def replace_hwpt(self, hwpt: Hwpt, pasid: int = NO_PASID) -> Hwpt | None:
        """``iommufd_device_do_replace``: move the group's attachment on ``pasid`` to
        ``hwpt``; EINVAL when there is none or this device is not in it. Returns the old
        HWPT (its references moved to the new one), None when it is the same."""
        ig = self._igroup()
        attach = ig.pasid_attach.get(pasid)
        if attach is None or self.id not in attach.devices:
            raise InvalidArgument(f"{self.dev.name} is not attached on PASID {pasid}")
        old = attach.hwpt
        if old is hwpt or old is None:
            return None
        self._pasid_compat(hwpt, pasid)
        domain = hwpt.domain
        if domain is None:  # pragma: no cover - a published HWPT has its domain
            raise InvalidArgument(f"HWPT {hwpt.id} has no domain")
        if pasid == NO_PASID:
            self.core.replace_group_domain(domain, ig.group)
        else:
            self.core.replace_device_pasid(domain, self.dev, pasid)
        _auto_respond(old, self.dev, pasid)
        attach.hwpt = hwpt
        n = len(attach.devices)
        hwpt.users += n
        old.users -= n
        return old


def _auto_respond(hwpt: Hwpt, dev: Device, pasid: int) -> None:
    """``iommufd_auto_response_faults``: the page faults of an attachment that goes away
    are answered "invalid"."""
    if isinstance(hwpt.fault, IommufdFault) and hwpt.domain is not None:
        hwpt.fault.auto_respond(hwpt.domain, dev, None if pasid == NO_PASID else pasid)


# ---------------------------------------------------------------------- the context's API
class DeviceApi:
    """The in-kernel device API of one iommufd context (``iommufd_device_bind``, attach,
    replace, detach, unbind), used by the drivers that hand devices to user space."""

    __slots__ = ("_groups", "bound", "core", "objects", "owned")

    def __init__(self, core: IommuCore, objects: ObjectTable) -> None:
        self.core = core
        self.objects = objects
        self._groups: dict[int, IommufdGroup] = {}
        #: Devices bound through :meth:`bind` and not yet unbound.
        self.bound: list[IommufdDevice] = []
        #: Of those, the ones an object of the file unbinds (the selftest's mock devices).
        self.owned: list[IommufdDevice] = []

    def bind(self, dev: Device, release_on_close: bool = True) -> IommufdDevice:
        """``iommufd_device_bind``: EINVAL for an IOMMU without coherent DMA, ENODEV for a
        device the core has not probed, EBUSY when another user owns its group.
        ``release_on_close``: the binding driver is outside the file (VFIO), so closing the
        file detaches and unbinds it; the selftest's own objects unbind theirs."""
        idev = IommufdDevice(self.core, self.objects, dev)
        self.objects.reserve(idev)
        try:
            if dev.iommu is None or not dev.iommu.capable(dev, CAP_CACHE_COHERENCY):
                raise InvalidArgument(f"{dev.name}'s IOMMU cannot make DMA coherent")
            group = dev.group
            if group is None or self.core.devices.get(dev.name) is not dev:
                raise NoDevice(f"{dev.name} is not probed")
            self.core.claim_dma_owner(dev, self.objects)
            ig = self._groups.get(id(group))
            if ig is None or ig.refs == 0:
                ig = self._groups[id(group)] = IommufdGroup(group)
            else:
                ig.refs += 1
            idev.igroup = ig
            idev.enforce_cache_coherency = dev.iommu.capable(dev, CAP_ENFORCE_CACHE_COHERENCY)
        except BaseException:
            self.objects.abort(idev)
            raise
        self.objects.finalize(idev)
        idev.users += 1  # the binding driver's reference, until unbind
        self.bound.append(idev)
        if not release_on_close:
            self.owned.append(idev)
        return idev

    def unbind(self, idev: IommufdDevice) -> None:
        """``iommufd_device_unbind``: EBUSY while attached (a caller bug in the kernel).
        ``iommufd_device_pre_destroy`` first: a vDEVICE still naming the device is destroyed
        and leaves a tombstone (dropping the reference it held), and no new one may name
        the device meanwhile."""
        held = 2 + (1 if idev.vdev is not None else 0)
        if idev.users != held:
            raise Busy(f"device {idev.id} is still attached")
        idev.destroying = True
        if idev.vdev is not None and idev.vdev.id:
            self.objects.tombstone(idev.vdev.id)
        idev.users -= 1
        self.bound.remove(idev)
        if idev in self.owned:
            self.owned.remove(idev)
        self.objects.remove(idev.id)

    def release_all(self) -> None:
        """What closing every device's VFIO file does before the iommufd goes: detach each
        bound device from everything, then unbind it."""
        for idev in [i for i in self.bound if i not in self.owned]:
            ig = idev.igroup
            if ig is not None:
                for pasid in sorted(ig.pasid_attach, reverse=True):
                    self.detach(idev, pasid)
            self.unbind(idev)

    def _put_hwpt(self, hwpt: Hwpt | None) -> None:
        """``iommufd_hw_pagetable_put``: an auto domain dies with its last attachment."""
        if isinstance(hwpt, HwptPaging) and hwpt.auto_domain and hwpt.users == 1:
            self.objects.remove(hwpt.id)

    def _auto_get_domain(self, idev: IommufdDevice, pasid: int, ioas: Ioas, replace: bool) -> int:
        """``iommufd_device_auto_get_domain``: the first auto HWPT of ``ioas`` the device
        accepts (EINVAL: incompatible, try the next), else a new one."""
        for hwpt in list(ioas.hwpt_list):
            if not hwpt.auto_domain:
                continue
            try:
                if replace:
                    self._put_hwpt(idev.replace_hwpt(hwpt, pasid))
                else:
                    idev.attach_hwpt(hwpt, pasid)
            except InvalidArgument:
                continue
            return hwpt.id
        new = hwpt_paging_alloc(
            self.objects,
            self.core,
            ioas,
            idev,
            0,
            None,
            None if replace else (lambda h: idev.attach_hwpt(h, pasid)),
        )
        try:
            old = idev.replace_hwpt(new, pasid) if replace else None
        except BaseException:
            self.objects.abort(new)
            raise
        new.auto_domain = True
        self.objects.finalize(new)
        self._put_hwpt(old)
        return new.id

    def _change_pt(self, idev: IommufdDevice, pasid: int, pt_id: int, replace: bool) -> int:
        """``iommufd_device_change_pt``: ``pt_id`` names an HWPT or an IOAS (ENOENT for
        nothing, EINVAL for any other object)."""
        obj = self.objects.get(pt_id)
        if isinstance(obj, Hwpt):
            if replace:
                self._put_hwpt(idev.replace_hwpt(obj, pasid))
            else:
                idev.attach_hwpt(obj, pasid)
            return pt_id
        if isinstance(obj, Ioas):
            return self._auto_get_domain(idev, pasid, obj, replace)
        raise InvalidArgument(f"object {pt_id} is neither an HWPT nor an IOAS")

    def attach(self, idev: IommufdDevice, pt_id: int, pasid: int = NO_PASID) -> int:
        """``iommufd_device_attach``: returns the HWPT id actually attached."""
        out = self._change_pt(idev, pasid, pt_id, replace=False)
        idev.users += 1
        return out

    def replace(self, idev: IommufdDevice, pt_id: int, pasid: int = NO_PASID) -> int:
        """``iommufd_device_replace``."""
        return self._change_pt(idev, pasid, pt_id, replace=True)

    def detach(self, idev: IommufdDevice, pasid: int = NO_PASID) -> None:
        """``iommufd_device_detach``: nothing attached on ``pasid`` is no error."""
        hwpt = idev.attached_hwpt(pasid)
        if hwpt is None:
            return
        idev.detach_hwpt(hwpt, pasid)
        self._put_hwpt(hwpt)
        idev.users -= 1


# ---------------------------------------------------------------------- IOMMU_GET_HW_INFO
def get_hw_info(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """``iommufd_get_hw_info``: EOPNOTSUPP for unknown flags or reserved bytes; the driver's
    struct copied into ``data_len`` bytes at ``data_uptr`` (zero-filled beyond it), then
    ``data_len`` set to the driver's length, the type, capabilities and PASID width."""
    cmd = ucmd.cmd
    if cmd["flags"] & ~uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE:
        raise NotSupported(f"GET_HW_INFO flags {cmd['flags']:#x}")
    if any(cmd[f"__reserved[{i}]"] for i in range(3)):
        raise NotSupported("GET_HW_INFO __reserved must be 0")
    if not cmd["flags"] & uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE:
        cmd["in_data_type"] = uapi.IOMMU_HW_INFO_TYPE_DEFAULT
    idev = ictx.get_device(cmd["dev_id"])
    dev = idev.dev
    driver = dev.iommu
    if driver is None:  # pragma: no cover - a bound device is behind an IOMMU
        raise NotSupported(f"{dev.name} has no IOMMU")
    info = driver.hw_info(dev, cmd["in_data_type"])
    if info is None:
        out_type, data = uapi.IOMMU_HW_INFO_TYPE_NONE, b""
    else:
        out_type, data = info
        if out_type == uapi.IOMMU_HW_INFO_TYPE_NONE:
            raise NotSupported(f"{driver.name}'s hw_info reported no type")
    n = cmd["data_len"]
    if n:
        ictx.user.write(cmd["data_uptr"], data[:n].ljust(n, b"\0"))
    cmd["in_data_type"] = out_type  # the union's out_data_type
    cmd["data_len"] = len(data)
    caps = 0
    if driver.capable(dev, CAP_DIRTY_TRACKING):
        caps |= uapi.IOMMU_HW_CAP_DIRTY_TRACKING
    if not driver.capable(dev, CAP_PCI_ATS_SUPPORTED):
        caps |= uapi.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED
    cmd["out_capabilities"] = caps
    cmd["out_max_pasid_log2"] = dev.pasid_bits if dev.max_pasids else 0
    ucmd.respond()
