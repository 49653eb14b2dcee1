"""Hardware page tables: HWPT_PAGING and HWPT_NESTED (``drivers/iommu/iommufd/hw_pagetable.c``).

An HWPT wraps one IOMMU-core domain. A paging HWPT is built on an IOAS: its domain is filled
with every area of the IOAS (``iopt_table_add_domain``) and follows its maps and unmaps; an
*auto* paging HWPT is one iommufd made itself when a device was attached to an IOAS, and it
is destroyed when its last device leaves. A nested HWPT holds a first stage the user owns,
inside a paging HWPT allocated with NEST_PARENT (or inside a vIOMMU's parent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from iommusim.errors import InvalidArgument, NotFound, NotSupported
from iommusim.sw.core.domain import DOMAIN_NESTED, Domain
from iommusim.sw.core.ops import CAP_DIRTY_TRACKING
from iommusim.sw.core.userdata import UserData, UserDataArray
from iommusim.sw.iommufd import dirty, uapi
from iommusim.sw.iommufd.fault import IommufdFault
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType
from iommusim.sw.iommufd.viommu import Viommu
from iommusim.sw.pages import PAGE_SIZE

if TYPE_CHECKING:
    from iommusim.sw.core.iommu import IommuCore
    from iommusim.sw.iommufd.device import IommufdDevice
    from iommusim.sw.iommufd.file import IommufdFile
    from iommusim.sw.iommufd.ucmd import Ucmd

__all__ = [
    "Hwpt",
    "HwptNested",
    "HwptPaging",
    "get_hwpt_paging",
    "hwpt_alloc",
    "hwpt_get_dirty_bitmap",
    "hwpt_invalidate",
    "hwpt_nested_alloc",
    "hwpt_paging_alloc",
    "hwpt_set_dirty_tracking",
]

_PAGING_FLAGS = (
    uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
    | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
    | uapi.IOMMU_HWPT_FAULT_ID_VALID
    | uapi.IOMMU_HWPT_ALLOC_PASID
)
_NESTED_FLAGS = uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID


class Hwpt(IommufdObject):
    """``struct iommufd_hw_pagetable``: the domain, PASID compatibility, the fault queue."""

    __slots__ = ("core", "domain", "fault", "pasid_compat")

    def __init__(self, core: IommuCore, pasid_compat: bool) -> None:
        super().__init__()
        self.core = core
        self.domain: Domain | None = None
        self.pasid_compat = pasid_compat
        #: The FAULT object page faults on this HWPT go to (IOMMU_HWPT_FAULT_ID_VALID).
        self.fault: IommufdFault | None = None

    def _free(self) -> None:
        """``__iommufd_hwpt_destroy``."""
        if self.domain is not None:
            self.core.domain_free(self.domain)
            self.domain = None
        if self.fault is not None:
            self.fault.users -= 1
            self.fault = None


class HwptPaging(Hwpt):
    """``struct iommufd_hwpt_paging`` on :attr:`ioas`."""

    __slots__ = ("auto_domain", "enforce_cache_coherency", "ioas", "nest_parent", "on_ioas")
    type = ObjType.HWPT_PAGING

    def __init__(self, core: IommuCore, ioas: Ioas, flags: int) -> None:
        super().__init__(core, bool(flags & uapi.IOMMU_HWPT_ALLOC_PASID))
        self.ioas = ioas
        ioas.users += 1
        self.nest_parent = bool(flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
        self.auto_domain = False
        self.enforce_cache_coherency = False
        #: The domain is in the IOAS (``hwpt_item`` on ``ioas->hwpt_list``).
        self.on_ioas = False

    def destroy(self) -> None:
        """``iommufd_hwpt_paging_destroy``: out of the IOAS, free the domain, let go of
        the IOAS."""
        if self.on_ioas and self.domain is not None:
            self.ioas.hwpt_list.remove(self)
            self.ioas.iopt.remove_domain(self.domain)
            self.on_ioas = False
        self._free()
        self.ioas.users -= 1


class HwptNested(Hwpt):
    """``struct iommufd_hwpt_nested``: inside :attr:`parent`, from :attr:`viommu` if any."""

    __slots__ = ("parent", "viommu")
    type = ObjType.HWPT_NESTED

    def __init__(
        self, core: IommuCore, parent: HwptPaging, viommu: Viommu | None, flags: int
    ) -> None:
        super().__init__(core, bool(flags & uapi.IOMMU_HWPT_ALLOC_PASID))
        self.parent = parent
        self.viommu = viommu
        (viommu if viommu is not None else parent).users += 1

    def destroy(self) -> None:
        """``iommufd_hwpt_nested_destroy``."""
        self._free()
        (self.viommu if self.viommu is not None else self.parent).users -= 1


def hwpt_paging_alloc(
    objects: ObjectTable,
    core: IommuCore,
    ioas: Ioas,
    idev: IommufdDevice,
    flags: int,
    user_data: UserData | None,
    attach: Callable[[Hwpt], None] | None,
) -> HwptPaging:
    """``iommufd_hwpt_paging_alloc``: a paging HWPT reserved in the table, which the caller
    finalizes (or aborts, when its own later step fails). ``attach`` is the immediate attach
    of an auto domain, done before the domain joins the IOAS, as the kernel does. On any
    failure here the object is aborted: nothing attached, the domain freed, the id free."""
    dev = idev.dev
    if dev.iommu is None:
        raise InvalidArgument(f"{dev.name} has no IOMMU")
    if flags & ~_PAGING_FLAGS:
        raise NotSupported(f"HWPT_ALLOC flags {flags:#x} are not supported")
    if flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not dev.iommu.capable(
        dev, CAP_DIRTY_TRACKING
    ):
        raise NotSupported(f"{dev.name}'s IOMMU cannot track dirty pages")
    if flags & uapi.IOMMU_HWPT_FAULT_ID_VALID and flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT:
        raise NotSupported("a nesting parent cannot take page faults")
    hwpt = HwptPaging(core, ioas, flags)
    objects.reserve(hwpt)
    try:
        hwpt.domain = core.domain_alloc_paging_flags(
            dev, flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID, user_data
        )
        if attach is not None:
            attach(hwpt)
        try:
            ioas.iopt.add_domain(hwpt.domain)
        except BaseException:
            if attach is not None:
                idev.detach_hwpt(hwpt)
            raise
    except BaseException:
        objects.abort(hwpt)
        raise
    ioas.hwpt_list.append(hwpt)
    hwpt.on_ioas = True
    return hwpt


def hwpt_nested_alloc(
    objects: ObjectTable,
    core: IommuCore,
    parent: HwptPaging,
    idev: IommufdDevice,
    flags: int,
    user_data: UserData,
) -> HwptNested:
    """``iommufd_hwpt_nested_alloc``: EOPNOTSUPP for flags beyond FAULT_ID_VALID|PASID or
    no data, EINVAL for a parent that is an auto domain, no nesting parent or another
    IOMMU's."""
    dev = idev.dev
    if flags & ~_NESTED_FLAGS or not user_data.len:
        raise NotSupported(f"nested HWPT flags {flags:#x} / data length {user_data.len}")
    if dev.iommu is None:
        raise InvalidArgument(f"{dev.name} has no IOMMU")
    pdom = parent.domain
    if parent.auto_domain or not parent.nest_parent or pdom is None or pdom.owner is not dev.iommu:
        raise InvalidArgument(f"HWPT {parent.id} cannot be a nesting parent for {dev.name}")
    hwpt = HwptNested(core, parent, None, flags)
    objects.reserve(hwpt)
    try:
        hwpt.domain = dev.iommu.domain_alloc_nested(
            dev, pdom, flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID, user_data
        )
        _check_nested(hwpt)
    except BaseException:
        objects.abort(hwpt)
        raise
    return hwpt


def viommu_alloc_hwpt_nested(
    objects: ObjectTable, core: IommuCore, viommu: Viommu, flags: int, user_data: UserData
) -> HwptNested:
    """``iommufd_viommu_alloc_hwpt_nested``: EOPNOTSUPP for flags beyond FAULT_ID_VALID|PASID
    or no data; the vIOMMU's ``alloc_domain_nested`` inside its parent."""
    if flags & ~_NESTED_FLAGS or not user_data.len:
        raise NotSupported(f"nested HWPT flags {flags:#x} / data length {user_data.len}")
    if viommu.ops is None:  # pragma: no cover - a published vIOMMU has its ops
        raise NotSupported(f"vIOMMU {viommu.id} has no ops")
    hwpt = HwptNested(core, viommu.hwpt, viommu, flags)
    objects.reserve(hwpt)
    try:
        hwpt.domain = viommu.ops.alloc_domain_nested(
            flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID, user_data
        )
        _check_nested(hwpt)
    except BaseException:
        objects.abort(hwpt)
        raise
    return hwpt


def _check_nested(hwpt: Hwpt) -> None:
    if hwpt.domain is not None and hwpt.domain.type != DOMAIN_NESTED:
        raise NotSupported(f"{hwpt.domain!r} is not a nested domain")


def get_hwpt_paging(objects_get: Callable[[int, ObjType], IommufdObject], oid: int) -> HwptPaging:
    obj = objects_get(oid, ObjType.HWPT_PAGING)
    if not isinstance(obj, HwptPaging):  # pragma: no cover - the type says so
        raise NotFound(f"object {oid} is not a paging HWPT")
    return obj


# ---------------------------------------------------------------------- ioctls
def hwpt_alloc(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_HWPT_ALLOC (``iommufd_hwpt_alloc``): ``pt_id`` an IOAS -> HWPT_PAGING, a
    paging HWPT -> HWPT_NESTED inside it, a vIOMMU -> HWPT_NESTED on the vIOMMU; any other
    id (none included) is EINVAL."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise NotSupported("HWPT_ALLOC __reserved must be 0")
    none = cmd["data_type"] == uapi.IOMMU_HWPT_DATA_NONE
    if none == bool(cmd["data_len"]):
        raise InvalidArgument("HWPT_ALLOC data_len must be 0 exactly when data_type is NONE")
    user_data = UserData(cmd["data_type"], cmd["data_uptr"], cmd["data_len"], ictx.user)
    idev = ictx.get_device(cmd["dev_id"])
    try:
        pt = ictx.objects.get(cmd["pt_id"])
    except NotFound:
        raise InvalidArgument(f"no object {cmd['pt_id']} to build an HWPT on") from None
    core = ictx.need_core()
    hwpt: Hwpt
    if isinstance(pt, Ioas):
        hwpt = hwpt_paging_alloc(
            ictx.objects, core, pt, idev, cmd["flags"], user_data if cmd["data_len"] else None, None
        )
    elif isinstance(pt, HwptPaging):
        hwpt = hwpt_nested_alloc(ictx.objects, core, pt, idev, cmd["flags"], user_data)
    elif isinstance(pt, Viommu):
        if idev.dev.iommu is not pt.iommu:
            raise InvalidArgument(f"{idev.dev.name} is behind another IOMMU than the vIOMMU")
        hwpt = viommu_alloc_hwpt_nested(ictx.objects, core, pt, cmd["flags"], user_data)
    else:
        raise InvalidArgument(f"object {cmd['pt_id']} cannot hold an HWPT")
    ucmd.new_obj = hwpt
    if cmd["flags"] & uapi.IOMMU_HWPT_FAULT_ID_VALID:
        fault = ictx.objects.get(cmd["fault_id"], ObjType.FAULT)
        if not isinstance(fault, IommufdFault):  # pragma: no cover - the type says so
            raise NotFound(f"object {cmd['fault_id']} is not a fault queue")
        hwpt.fault = fault
        fault.users += 1
        if hwpt.domain is not None:
            hwpt.domain.iopf_handler = fault.iopf_handler
    cmd["out_hwpt_id"] = hwpt.id
    ucmd.respond()


#: ``IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX``.
ENTRY_NUM_MAX = 1 << 19


def hwpt_invalidate(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_HWPT_INVALIDATE (``iommufd_hwpt_invalidate``): a nested HWPT's
    ``cache_invalidate_user`` or a vIOMMU's ``cache_invalidate``; EINVAL for any other
    object. ``entry_num`` is always written back with the entries handled."""
    cmd = ucmd.cmd
    done = 0
    try:
        if cmd["__reserved"]:
            raise NotSupported("HWPT_INVALIDATE __reserved must be 0")
        n = cmd["entry_num"]
        if n and (
            not cmd["data_uptr"]
            or not cmd["entry_len"]
            or cmd["entry_len"] > PAGE_SIZE
            or n > ENTRY_NUM_MAX
        ):
            raise InvalidArgument("HWPT_INVALIDATE needs data_uptr and 0 < entry_len <= 4096")
        array = UserDataArray(cmd["data_type"], cmd["data_uptr"], cmd["entry_len"], n, ictx.user)
        pt = ictx.objects.get(cmd["hwpt_id"])
        if isinstance(pt, HwptNested) and pt.domain is not None:
            done, err = pt.domain.cache_invalidate_user(array)
        elif isinstance(pt, Viommu) and pt.ops is not None:
            done, err = pt.ops.cache_invalidate(array)
        else:
            raise InvalidArgument(f"object {cmd['hwpt_id']} has no user-invalidated caches")
        if err is not None:
            raise err
    finally:
        cmd["entry_num"] = done
        ucmd.respond()


def hwpt_set_dirty_tracking(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_HWPT_SET_DIRTY_TRACKING: EOPNOTSUPP for unknown flags, ENOENT for no paging
    HWPT, then :func:`~iommusim.sw.iommufd.dirty.set_dirty_tracking`."""
    cmd = ucmd.cmd
    if cmd["flags"] & ~uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE:
        raise NotSupported(f"SET_DIRTY_TRACKING flags {cmd['flags']:#x}")
    hwpt = get_hwpt_paging(ictx.objects.get, cmd["hwpt_id"])
    if hwpt.domain is None:  # pragma: no cover - a published HWPT has its domain
        raise NotFound(f"HWPT {hwpt.id} has no domain")
    enable = bool(cmd["flags"] & uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
    dirty.set_dirty_tracking(hwpt.ioas.iopt, hwpt.domain, enable)


def hwpt_get_dirty_bitmap(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_HWPT_GET_DIRTY_BITMAP: EOPNOTSUPP for unknown flags or reserved bits, ENOENT
    for no paging HWPT, then
    :func:`~iommusim.sw.iommufd.dirty.read_and_clear_dirty_data`."""
    cmd = ucmd.cmd
    if cmd["flags"] & ~uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR or cmd["__reserved"]:
        raise NotSupported(f"GET_DIRTY_BITMAP flags {cmd['flags']:#x} / __reserved")
    hwpt = get_hwpt_paging(ictx.objects.get, cmd["hwpt_id"])
    if hwpt.domain is None:  # pragma: no cover - a published HWPT has its domain
        raise NotFound(f"HWPT {hwpt.id} has no domain")
    dirty.read_and_clear_dirty_data(
        hwpt.ioas.iopt,
        hwpt.domain,
        cmd["flags"],
        cmd["iova"],
        cmd["length"],
        cmd["page_size"],
        cmd["data"],
        ictx.user,
    )
