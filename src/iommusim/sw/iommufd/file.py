"""``/dev/iommu``: an open iommufd file (``drivers/iommu/iommufd/main.c``).

:meth:`IommufdFile.ioctl` frames every call as ``iommufd_fops_ioctl`` does:

1. ``_IOC_NR`` outside the iommufd range: the VFIO compatibility ioctls, with their own
   framing (:mod:`~iommusim.sw.iommufd.vfio_compat`); any other number -> ENOTTY (the
   kernel's ``-ENOIOCTLCMD`` as user space sees it).
2. ``get_user`` of the ``size`` field, the first u32 -> EFAULT when the buffer is shorter.
3. The full number must be the table's (``_IO(';', nr)``) -> ENOTTY.
4. ``size`` below the struct's ``min_size`` -> EINVAL.
5. ``copy_struct_from_user``: a longer struct than the kernel's with a non-zero tail ->
   E2BIG; ``size`` beyond the buffer -> EFAULT; a shorter struct is zero-extended.
6. The command runs; the object it created is finalized on success, aborted on failure, so
   a failed ioctl leaves no object behind. Outputs are copied back up to ``size`` bytes.

Errors raise the :class:`~iommusim.errors.ApiError` subclass carrying the kernel's errno.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from iommusim.errors import (
    ApiError,
    ArgumentTooBig,
    BadAddress,
    BadFileDescriptor,
    Busy,
    InappropriateIoctl,
    InvalidArgument,
    NoDevice,
    NotFound,
    NotPermitted,
    NotSupported,
)
from iommusim.sw.core.device import Device
from iommusim.sw.iommufd import ioas as _ioas
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.device import NO_PASID, DeviceApi, IommufdDevice, get_hw_info
from iommusim.sw.iommufd.fault import FaultHooks, fault_alloc
from iommusim.sw.iommufd.fds import FdTable
from iommusim.sw.iommufd.hw_queue import hw_queue_alloc_ioctl
from iommusim.sw.iommufd.hwpt import (
    hwpt_alloc,
    hwpt_get_dirty_bitmap,
    hwpt_invalidate,
    hwpt_set_dirty_tracking,
)
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.objects import ObjectTable, ObjType
from iommusim.sw.iommufd.pages import ACCOUNT_MM, ACCOUNT_USER
from iommusim.sw.iommufd.selftest import iommufd_test
from iommusim.sw.iommufd.selftest_uapi import IOMMU_TEST_CMD, TEST_CMD
from iommusim.sw.iommufd.ucmd import Ucmd
from iommusim.sw.iommufd.user import UserMemory
from iommusim.sw.iommufd.veventq import veventq_alloc
from iommusim.sw.iommufd.vfio_compat import vfio_ioctl
from iommusim.sw.iommufd.viommu import (
    MmapRegion,
    MmapTable,
    vdevice_alloc_ioctl,
    viommu_alloc_ioctl,
)

if TYPE_CHECKING:
    from iommusim.sw.core.iommu import IommuCore
    from iommusim.sw.drivers.mock.driver import MockIommuDriver

__all__ = ["IommufdFile", "IommufdParams"]


@dataclass(frozen=True, slots=True)
class IommufdParams:
    """The opener's credentials, as ``capable()`` would answer them."""

    #: CAP_SYS_RESOURCE: may set IOMMU_OPTION_RLIMIT_MODE.
    cap_sys_resource: bool = True
    #: CAP_IPC_LOCK: pinned pages are not charged (``IOPT_PAGES_ACCOUNT_NONE``).
    cap_ipc_lock: bool = False


#: An ioctl's handler; it returns the ioctl's value (None: 0).
Handler = Callable[["IommufdFile", Ucmd], int | None]

#: ``ARRAY_SIZE(iommufd_ioctl_ops)`` without CONFIG_IOMMUFD_TEST: one past the highest nr.
_NR_END: Final = max(uapi.ioctl_nr(r) for r in uapi.IOCTLS) + 1
#: ... and with it: IOMMU_TEST_CMD is the table's last entry.
_NR_END_TEST: Final = uapi.ioctl_nr(IOMMU_TEST_CMD) + 1


def _destroy(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_DESTROY (``iommufd_object_remove``): ENOENT for no such object, EBUSY while
    another object holds it."""
    compat = ictx.vfio_ioas is not None and ictx.vfio_ioas.id == ucmd.cmd["id"]
    ictx.objects.remove(ucmd.cmd["id"])
    if compat:  # iommufd_object_remove clears ictx->vfio_ioas
        ictx.vfio_ioas = None


def _option(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_OPTION (``iommufd_option``): only ``val64`` is copied back, on success."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise NotSupported("IOMMU_OPTION __reserved must be 0")
    if cmd["option_id"] == uapi.IOMMU_OPTION_RLIMIT_MODE:
        ictx._option_rlimit_mode(cmd)
    elif cmd["option_id"] == uapi.IOMMU_OPTION_HUGE_PAGES:
        _ioas.ioas_option(ictx, cmd)
    else:
        raise NotSupported(f"option {cmd['option_id']} is not supported")
    f = ucmd.struct.field("val64")
    ucmd.arg[f.offset : f.end] = cmd["val64"].to_bytes(f.size, "little")


#: Implemented ioctls: request -> handler. The header's other ioctls answer ENOTTY, as a
#: kernel without them would.
_OPS: Final[dict[int, Handler]] = {
    uapi.IOMMU_DESTROY: _destroy,
    uapi.IOMMU_GET_HW_INFO: get_hw_info,
    uapi.IOMMU_HWPT_ALLOC: hwpt_alloc,
    uapi.IOMMU_HW_QUEUE_ALLOC: hw_queue_alloc_ioctl,
    uapi.IOMMU_HWPT_GET_DIRTY_BITMAP: hwpt_get_dirty_bitmap,
    uapi.IOMMU_HWPT_INVALIDATE: hwpt_invalidate,
    uapi.IOMMU_HWPT_SET_DIRTY_TRACKING: hwpt_set_dirty_tracking,
    uapi.IOMMU_VDEVICE_ALLOC: vdevice_alloc_ioctl,
    uapi.IOMMU_VIOMMU_ALLOC: viommu_alloc_ioctl,
    uapi.IOMMU_FAULT_QUEUE_ALLOC: fault_alloc,
    uapi.IOMMU_IOAS_ALLOC: _ioas.ioas_alloc,
    uapi.IOMMU_IOAS_ALLOW_IOVAS: _ioas.ioas_allow_iovas,
    uapi.IOMMU_IOAS_CHANGE_PROCESS: _ioas.ioas_change_process,
    uapi.IOMMU_IOAS_COPY: _ioas.ioas_copy,
    uapi.IOMMU_IOAS_IOVA_RANGES: _ioas.ioas_iova_ranges,
    uapi.IOMMU_IOAS_MAP: _ioas.ioas_map,
    uapi.IOMMU_IOAS_MAP_FILE: _ioas.ioas_map_file,
    uapi.IOMMU_IOAS_NOIOMMU_GET_PA: _ioas.ioas_noiommu_get_pa,
    uapi.IOMMU_IOAS_UNMAP: _ioas.ioas_unmap,
    uapi.IOMMU_OPTION: _option,
    uapi.IOMMU_VFIO_IOAS: _ioas.vfio_ioas,
    uapi.IOMMU_VEVENTQ_ALLOC: veventq_alloc,
}


class IommufdFile:
    """What ``open("/dev/iommu")`` gives: an object table (``struct iommufd_ctx``) over
    the user memory ``user`` of the opening process."""

    __slots__ = (
        "_closed",
        "_devices",
        "_refs",
        "account_mode",
        "core",
        "errors",
        "fault_hooks",
        "fds",
        "ioctls",
        "mmaps",
        "objects",
        "params",
        "selftest",
        "test_memory_limit",
        "user",
        "vfio_ioas",
    )

    def __init__(
        self,
        user: UserMemory,
        params: IommufdParams | None = None,
        core: IommuCore | None = None,
        selftest: MockIommuDriver | None = None,
    ) -> None:
        self.user = user
        self.params = params or IommufdParams()
        self.objects = ObjectTable()
        #: The IOMMU core whose devices this file may be handed (None: no devices at all).
        self.core = core
        self._devices = DeviceApi(core, self.objects) if core is not None else None
        #: Regions drivers let the user mmap from this file (``ictx->mt_mmap``).
        self.mmaps = MmapTable()
        #: The mock IOMMU of a kernel with CONFIG_IOMMUFD_TEST: IOMMU_TEST_CMD is served.
        self.selftest = selftest
        #: ``iommufd_test_memory_limit`` (SET_TEMP_MEMORY_LIMIT; no effect on results).
        self.test_memory_limit = 65536
        #: ``ictx->account_mode``: per user, as /dev/iommu opens (not /dev/vfio/vfio).
        self.account_mode = ACCOUNT_USER
        #: ``ictx->vfio_ioas``: the IOAS the VFIO compatibility ioctls use (no reference).
        self.vfio_ioas: Ioas | None = None
        #: The opening process's fds for the files iommufd hands out (fault queues,
        #: vEVENTQs); see :mod:`~iommusim.sw.iommufd.fds`.
        self.fds = FdTable()
        #: How FAULT objects answer page-request groups and name devices (set by whoever
        #: wires the file to a machine; see :class:`~iommusim.sw.iommufd.fault.FaultHooks`).
        self.fault_hooks: FaultHooks | None = None
        if core is not None:
            self.fault_hooks = FaultHooks(core.iopf, self._dev_id)
        #: ioctls served, and the failed ones by errno.
        self.ioctls = 0
        self.errors: Counter[int] = Counter()
        #: References on the context (``ictx->file``): this fd's and each queue file's.
        self._refs = 1
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def ioctl(self, request: int, arg: bytearray) -> int:
        """``ioctl(fd, request, arg)``: ``arg`` is the user buffer the struct lives in
        (its length is how far user memory reaches); for the VFIO ioctls taking an
        integer it is that ``unsigned long``'s 8 little-endian bytes. Returns the ioctl's
        value (0, or VFIO_CHECK_EXTENSION's answer) or raises the errno's
        :class:`~iommusim.errors.ApiError`. :attr:`ioctls` and :attr:`errors` count them."""
        self.ioctls += 1
        try:
            return self._ioctl(request, arg)
        except ApiError as e:
            self.errors[e.errno] += 1
            raise

    def _ioctl(self, request: int, arg: bytearray) -> int:
        if self._closed:
            raise BadFileDescriptor("iommufd file is closed")
        nr = uapi.ioctl_nr(request)
        end = _NR_END_TEST if self.selftest is not None else _NR_END
        if not 0 <= request <= 0xFFFF_FFFF:
            raise InappropriateIoctl(f"ioctl {request:#x} is not an iommufd ioctl")
        if not uapi.IOMMUFD_CMD_BASE <= nr < end:
            return vfio_ioctl(self, request, arg)
        if len(arg) < 4:
            raise BadAddress("the ioctl argument has no size field")
        user_size = int.from_bytes(arg[:4], "little")
        handler = _OPS.get(request)
        struct = uapi.IOCTLS.get(request)
        if self.selftest is not None and request == IOMMU_TEST_CMD:
            handler, struct = iommufd_test, TEST_CMD
        if handler is None or struct is None:
            raise InappropriateIoctl(f"ioctl {request:#x} is not implemented")
        if user_size < struct.min_size:
            raise InvalidArgument(
                f"{struct.name}.size must be >= {struct.min_size}, not {user_size}"
            )
        # copy_struct_from_user: the tail beyond the kernel's struct is checked first
        # (check_zeroed_user stops at a non-zero byte before reaching a fault), then the
        # struct itself is copied.
        if user_size > struct.size and any(arg[struct.size : user_size]):
            raise ArgumentTooBig(f"{struct.name} bytes {struct.size}..{user_size} must be zero")
        if user_size > len(arg):
            raise BadAddress(f"{struct.name}.size {user_size} runs past the buffer")
        buf = bytes(arg[: min(user_size, struct.size)]).ljust(struct.size, b"\0")
        ucmd = Ucmd(struct, struct.decode(buf), arg, user_size)
        try:
            ret = handler(self, ucmd)
        except BaseException:
            if ucmd.new_obj is not None:
                self.objects.abort(ucmd.new_obj)
            raise
        if ucmd.new_obj is not None:
            self.objects.finalize(ucmd.new_obj)
        return ret or 0

    # ------------------------------------------------------------------ devices
    def need_core(self) -> IommuCore:
        if self.core is None:
            raise NoDevice("this iommufd serves no IOMMU core")
        return self.core

    def device_api(self) -> DeviceApi:
        if self._devices is None:
            raise NoDevice("this iommufd serves no IOMMU core")
        return self._devices

    def _dev_id(self, dev: Device) -> int:
        """The DEVICE id ``dev`` is bound as (0 when it is not)."""
        api = self._devices
        return next((i.id for i in api.bound if i.dev is dev), 0) if api is not None else 0

    def get_device(self, dev_id: int) -> IommufdDevice:
        """``iommufd_get_device``: ENOENT unless ``dev_id`` is a DEVICE."""
        obj = self.objects.get(dev_id, ObjType.DEVICE)
        if not isinstance(obj, IommufdDevice):  # pragma: no cover - the type says so
            raise NotFound(f"object {dev_id} is not a device")
        return obj

    def bind_device(self, dev: Device) -> int:
        """``iommufd_device_bind`` as VFIO's ``VFIO_DEVICE_BIND_IOMMUFD`` does it: claim
        ``dev`` (a device of :attr:`core`) for this file; returns its DEVICE id."""
        self._check_open()
        return self.device_api().bind(dev).id

    def unbind_device(self, dev_id: int) -> None:
        """``iommufd_device_unbind``: EBUSY while the device is attached."""
        self._check_open()
        self.device_api().unbind(self.get_device(dev_id))

    def attach_device(self, dev_id: int, pt_id: int, pasid: int = NO_PASID) -> int:
        """``iommufd_device_attach`` (VFIO_DEVICE_ATTACH_IOMMUFD_PT): attach to an HWPT,
        or to an IOAS through an auto domain; returns the HWPT id attached."""
        self._check_open()
        return self.device_api().attach(self.get_device(dev_id), pt_id, pasid)

    def replace_device(self, dev_id: int, pt_id: int, pasid: int = NO_PASID) -> int:
        """``iommufd_device_replace``: EINVAL when nothing is attached on ``pasid``."""
        self._check_open()
        return self.device_api().replace(self.get_device(dev_id), pt_id, pasid)

    def detach_device(self, dev_id: int, pasid: int = NO_PASID) -> None:
        """``iommufd_device_detach``: detaching what is not attached does nothing."""
        self._check_open()
        self.device_api().detach(self.get_device(dev_id), pasid)

    def mmap(self, offset: int, length: int, shared: bool = True, exec_: bool = False) -> int:
        """``mmap(fd, offset)`` of this file: the physical address the mapping shows (a
        region a driver registered); :meth:`munmap` gives it back."""
        self._check_open()
        pa = self.mmaps.map(offset, length, shared, exec_).base_pa
        self.ctx_get()  # the VMA holds the file (vma->vm_file): close() defers the release
        return pa

    def munmap(self, offset: int) -> None:
        """``munmap`` of that mapping: the region's owner and the file are let go (the
        last reference runs the release a close() deferred)."""
        region: MmapRegion | None = self.mmaps.regions.get(offset)
        if region is None:
            raise InvalidArgument(f"nothing is mapped at offset {offset:#x}")
        self.mmaps.unmap(region)
        self.ctx_put()

    def _check_open(self) -> None:
        if self._closed:
            raise BadFileDescriptor("iommufd file is closed")

    def _option_rlimit_mode(self, cmd: dict[str, int]) -> None:
        """``iommufd_option_rlimit_mode``: global; SET needs CAP_SYS_RESOURCE (EPERM) and
        an empty object table (EBUSY)."""
        if cmd["object_id"]:
            raise NotSupported("RLIMIT_MODE is global: object_id must be 0")
        if cmd["op"] == uapi.IOMMU_OPTION_OP_GET:
            cmd["val64"] = int(self.account_mode == ACCOUNT_MM)
            return
        if cmd["op"] == uapi.IOMMU_OPTION_OP_SET:
            if not self.params.cap_sys_resource:
                raise NotPermitted("setting RLIMIT_MODE needs CAP_SYS_RESOURCE")
            if len(self.objects):
                raise Busy("RLIMIT_MODE can only change while no object exists")
            if cmd["val64"] == 0:
                self.account_mode = ACCOUNT_USER
            elif cmd["val64"] == 1:
                self.account_mode = ACCOUNT_MM
            else:
                raise InvalidArgument(f"RLIMIT_MODE must be 0 or 1, not {cmd['val64']}")
            return
        raise NotSupported(f"option op {cmd['op']} is neither SET nor GET")

    def ctx_get(self) -> None:
        """``iommufd_ctx_get``: a queue file keeps the context alive."""
        self._refs += 1

    def ctx_put(self) -> None:
        """``iommufd_ctx_put``: the last reference runs ``iommufd_fops_release``."""
        self._refs -= 1
        if not self._refs:
            self.vfio_ioas = None
            if self._devices is not None:
                self._devices.release_all()
            self.objects.destroy_all()

    def close(self) -> None:
        """``close()`` of the iommufd: further ioctls are EBADF; a second close does
        nothing. The last reference on the context (this one, unless a fault-queue or
        vEVENTQ file is still open) runs ``iommufd_fops_release``: every object is
        destroyed leaf-first (those only the table holds, repeatedly), which unmaps every
        area and unpins its pages."""
        if self._closed:
            return
        self._closed = True
        self.ctx_put()

    def __enter__(self) -> IommufdFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
