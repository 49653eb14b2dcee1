"""``/dev/iommu``: an open iommufd file (``drivers/iommu/iommufd/main.c``).

:meth:`IommufdFile.ioctl` frames every call as ``iommufd_fops_ioctl`` does:

1. ``_IOC_NR`` outside the iommufd range: the VFIO compatibility ioctls, none of which this
   model implements yet -> ENOTTY (the kernel's ``-ENOIOCTLCMD`` as user space sees it).
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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from iommusim.errors import (
    ArgumentTooBig,
    BadAddress,
    BadFileDescriptor,
    Busy,
    InappropriateIoctl,
    InvalidArgument,
    NotPermitted,
    NotSupported,
)
from iommusim.sw.iommufd import ioas as _ioas
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.objects import ObjectTable
from iommusim.sw.iommufd.pages import ACCOUNT_MM, ACCOUNT_USER
from iommusim.sw.iommufd.ucmd import Ucmd
from iommusim.sw.iommufd.user import UserMemory

__all__ = ["IommufdFile", "IommufdParams"]


@dataclass(frozen=True, slots=True)
class IommufdParams:
    """The opener's credentials, as ``capable()`` would answer them."""

    #: CAP_SYS_RESOURCE: may set IOMMU_OPTION_RLIMIT_MODE.
    cap_sys_resource: bool = True
    #: CAP_IPC_LOCK: pinned pages are not charged (``IOPT_PAGES_ACCOUNT_NONE``).
    cap_ipc_lock: bool = False


Handler = Callable[["IommufdFile", Ucmd], None]

#: ``ARRAY_SIZE(iommufd_ioctl_ops)`` without CONFIG_IOMMUFD_TEST: one past the highest nr.
_NR_END: Final = max(uapi.ioctl_nr(r) for r in uapi.IOCTLS) + 1


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
}


class IommufdFile:
    """What ``open("/dev/iommu")`` gives: an object table (``struct iommufd_ctx``) over
    the user memory ``user`` of the opening process."""

    __slots__ = ("_closed", "account_mode", "objects", "params", "user", "vfio_ioas")

    def __init__(self, user: UserMemory, params: IommufdParams | None = None) -> None:
        self.user = user
        self.params = params or IommufdParams()
        self.objects = ObjectTable()
        #: ``ictx->account_mode``: per user, as /dev/iommu opens (not /dev/vfio/vfio).
        self.account_mode = ACCOUNT_USER
        #: ``ictx->vfio_ioas``: the IOAS the VFIO compatibility ioctls use (no reference).
        self.vfio_ioas: Ioas | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def ioctl(self, request: int, arg: bytearray) -> int:
        """``ioctl(fd, request, arg)``: ``arg`` is the user buffer the struct lives in
        (its length is how far user memory reaches). Returns 0 or raises the errno's
        :class:`~iommusim.errors.ApiError`."""
        if self._closed:
            raise BadFileDescriptor("iommufd file is closed")
        nr = uapi.ioctl_nr(request)
        if not 0 <= request <= 0xFFFF_FFFF or not uapi.IOMMUFD_CMD_BASE <= nr < _NR_END:
            raise InappropriateIoctl(f"ioctl {request:#x} is not an iommufd ioctl")
        if len(arg) < 4:
            raise BadAddress("the ioctl argument has no size field")
        user_size = int.from_bytes(arg[:4], "little")
        handler = _OPS.get(request)
        struct = uapi.IOCTLS.get(request)
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
            handler(self, ucmd)
        except BaseException:
            if ucmd.new_obj is not None:
                self.objects.abort(ucmd.new_obj)
            raise
        if ucmd.new_obj is not None:
            self.objects.finalize(ucmd.new_obj)
        return 0

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

    def close(self) -> None:
        """``iommufd_fops_release``: destroy every object leaf-first (those only the
        table holds, repeatedly), which unmaps every area and unpins its pages. Further
        ioctls are EBADF; a second close does nothing."""
        if self._closed:
            return
        self.vfio_ioas = None
        self.objects.destroy_all()
        self._closed = True

    def __enter__(self) -> IommufdFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
