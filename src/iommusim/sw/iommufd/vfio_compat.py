"""The VFIO type1 container ioctls on an iommufd (Linux 7.3
``drivers/iommu/iommufd/vfio_compat.c``): what a VFIO user sees when /dev/vfio/vfio is
iommufd. They act on the compatibility IOAS (``ictx->vfio_ioas``: set by IOMMU_VFIO_IOAS, or
created by :func:`vfio_compat_ioas_create` when VFIO attaches a group); without one they are
ENODEV.

``iommufd_fops_ioctl`` hands every number outside the iommufd range to
:func:`vfio_ioctl`, which answers by the full number, ENOTTY for any other. These ioctls
have VFIO's framing, not iommufd's size rule: a struct starts with ``argsz`` (and ``flags``),
the kernel copies a fixed ``minsz`` prefix (EFAULT when the buffer is shorter) and checks
``argsz >= minsz`` (EINVAL).

An integer argument (VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU: ``ioctl(fd, request, type)``) is
the ``unsigned long`` itself, passed to :meth:`~iommusim.sw.iommufd.IommufdFile.ioctl` as its
8 little-endian bytes (:func:`int_arg` builds them); VFIO_GET_API_VERSION ignores ``arg``.
The return value is the ioctl's: 0, or VFIO_CHECK_EXTENSION's 0 / 1.

The model is a kernel without CONFIG_VFIO_NOIOMMU: no device can be a no-IOMMU one, so
``no_iommu_mode`` is never set; VFIO_NOIOMMU_IOMMU is not an extension (0) and not an IOMMU
type SET_IOMMU takes (EINVAL). VFIO_IOMMU_DIRTY_PAGES is ENOTTY (7.3's compatibility does
not provide it: dirty tracking is iommufd's HWPT interface).

=====================  ==========================================================
VFIO_GET_API_VERSION   VFIO_API_VERSION (0)
VFIO_CHECK_EXTENSION   1 for TYPE1, TYPE1v2, UNMAP_ALL; DMA_CC_IOMMU: ENODEV without
                       a compat IOAS, else 1 unless an HWPT on it does not enforce
                       coherency; 0 for every other
VFIO_SET_IOMMU         EINVAL but TYPE1 / TYPE1v2, ENODEV; TYPE1 disables large pages
                       (EINVAL, EADDRINUSE from that)
VFIO_IOMMU_GET_INFO    EFAULT, EINVAL, ENODEV; the DMA_AVAIL and IOVA_RANGE caps
VFIO_IOMMU_MAP_DMA     EFAULT, EINVAL (flags), ENODEV, then IOAS_MAP's errnos
VFIO_IOMMU_UNMAP_DMA   EFAULT, EINVAL (flags, UNMAP_ALL with iova/size), ENODEV, then
                       the unmap's; an empty range is success
VFIO_IOMMU_DIRTY_PAGES ENOTTY
=====================  ==========================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from iommusim.errors import (
    BadAddress,
    InappropriateIoctl,
    InvalidArgument,
    ModelError,
    NoDevice,
    Overflow,
)
from iommusim.sw.core.domain import Domain
from iommusim.sw.iommufd import vfio_uapi as v
from iommusim.sw.iommufd.ioas import Ioas, map_user_pages
from iommusim.sw.iommufd.iopt import ULONG_MAX
from iommusim.sw.iommufd.objects import ObjType
from iommusim.sw.pages import PAGE_SIZE
from iommusim.sw.prot import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE

if TYPE_CHECKING:
    from iommusim.sw.iommufd.file import IommufdFile

__all__ = [
    "CoherencyHwpt",
    "int_arg",
    "vfio_compat_ioas_create",
    "vfio_compat_ioas_get_id",
    "vfio_ioctl",
]

_INFO: Final = v.VFIO_STRUCTS["vfio_iommu_type1_info"]
_MAP: Final = v.VFIO_STRUCTS["vfio_iommu_type1_dma_map"]
_UNMAP: Final = v.VFIO_STRUCTS["vfio_iommu_type1_dma_unmap"]
_CAP_IOVA: Final = v.VFIO_STRUCTS["vfio_iommu_type1_info_cap_iova_range"]
_CAP_DMA: Final = v.VFIO_STRUCTS["vfio_iommu_type1_info_dma_avail"]
_RANGE: Final = v.VFIO_STRUCTS["vfio_iova_range"]
_U32_MAX: Final = (1 << 32) - 1
_PAGE_MASK: Final = ULONG_MAX & ~(PAGE_SIZE - 1)


@runtime_checkable
class CoherencyHwpt(Protocol):
    """What VFIO_DMA_CC_IOMMU reads of an HWPT_PAGING object (``hwpt_paging->ioas``,
    ``->enforce_cache_coherency``)."""

    ioas: Ioas
    enforce_cache_coherency: bool


def int_arg(value: int) -> bytearray:
    """The ``arg`` bytes of an ioctl whose argument is an ``unsigned long``."""
    return bytearray(value.to_bytes(8, "little"))


def _int(arg: bytearray) -> int:
    if len(arg) != 8:
        raise ModelError(f"an unsigned long ioctl argument is 8 bytes, not {len(arg)}")
    return int.from_bytes(arg, "little")


def _copy_in(arg: bytearray, minsz: int) -> bytes:
    """``copy_from_user(&s, arg, minsz)``, the rest of the struct zero."""
    if len(arg) < minsz:
        raise BadAddress(f"the ioctl argument has {len(arg)} bytes, not {minsz}")
    return bytes(arg[:minsz])


def _copy_out(arg: bytearray, off: int, data: bytes | bytearray) -> None:
    """``copy_to_user(arg + off, data)``: EFAULT, nothing written, past the buffer."""
    if off + len(data) > len(arg):
        raise BadAddress(f"{len(data)} bytes at offset {off} run past the ioctl argument")
    arg[off : off + len(data)] = data


def _compat_ioas(ictx: IommufdFile) -> Ioas:
    """``get_compat_ioas``: ENODEV without a compatibility IOAS."""
    if ictx.vfio_ioas is None:
        raise NoDevice("no VFIO compatibility IOAS: attach a group or IOMMU_VFIO_IOAS SET")
    return ictx.vfio_ioas


# ------------------------------------------------------------------ the compat IOAS
def vfio_compat_ioas_get_id(ictx: IommufdFile) -> int:
    """``iommufd_vfio_compat_ioas_get_id``: ENODEV without one."""
    return _compat_ioas(ictx).id


def vfio_compat_ioas_create(ictx: IommufdFile) -> None:
    """``iommufd_vfio_compat_ioas_create`` (VFIO attaching a group to the container): make
    a compatibility IOAS, a user-visible object, unless one is set already."""
    ioas = Ioas()
    ictx.objects.reserve(ioas)
    if ictx.vfio_ioas is not None:
        ictx.objects.abort(ioas)
        return
    ictx.vfio_ioas = ioas
    ictx.objects.finalize(ioas)


# ------------------------------------------------------------------ integer ioctls
def _check_extension(ictx: IommufdFile, ext: int) -> int:
    """``iommufd_vfio_check_extension``."""
    if ext in (v.VFIO_TYPE1_IOMMU, v.VFIO_TYPE1v2_IOMMU, v.VFIO_UNMAP_ALL):
        return 1
    if ext == v.VFIO_DMA_CC_IOMMU:
        ioas = _compat_ioas(ictx)
        for obj in ictx.objects:
            if (
                obj.type is ObjType.HWPT_PAGING
                and isinstance(obj, CoherencyHwpt)
                and obj.ioas is ioas
                and not obj.enforce_cache_coherency
            ):
                return 0
        return 1
    # NOIOMMU without CONFIG_VFIO_NOIOMMU, the reserved nesting type, UPDATE_VADDR ("hard
    # to see how this could be implemented safely") and everything else.
    return 0


def _set_iommu(ictx: IommufdFile, iommu_type: int) -> int:
    """``iommufd_vfio_set_iommu``: type1 is type1v2 with large pages disabled, so that any
    range can be unmapped."""
    if iommu_type not in (v.VFIO_TYPE1_IOMMU, v.VFIO_TYPE1v2_IOMMU):
        raise InvalidArgument(f"VFIO_SET_IOMMU takes TYPE1 or TYPE1v2, not {iommu_type}")
    ioas = _compat_ioas(ictx)
    if iommu_type == v.VFIO_TYPE1_IOMMU:
        ioas.iopt.set_large_pages(False)
    return 0


# ------------------------------------------------------------------ GET_INFO
def _pagesizes(ioas: Ioas) -> int:
    """``iommufd_get_pagesizes``: the page sizes every domain of the IOAS has, sub-page
    sizes folded into PAGE_SIZE (``vfio_update_pgsize_bitmap``), at least the IOVA
    alignment."""
    bitmap = ULONG_MAX
    for domain in ioas.iopt.domains:
        if isinstance(domain, Domain):
            bitmap &= domain.pgsize_bitmap
    if bitmap & ~_PAGE_MASK:
        bitmap = (bitmap & _PAGE_MASK) | PAGE_SIZE
    return max(bitmap, ioas.iopt.iova_alignment)


def _fill_cap_dma_avail(ioas: Ioas, arg: bytearray, cur: int, avail: int) -> int:
    """``iommufd_fill_cap_dma_avail``: iommufd's limit is the memory cgroup's, so U32_MAX."""
    cap = _CAP_DMA.encode(
        {"header.id": v.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, "header.version": 1},
        avail=_U32_MAX,
    )
    if avail >= _CAP_DMA.size:
        _copy_out(arg, cur, cap)
    return _CAP_DMA.size


def _fill_cap_iova(ioas: Ioas, arg: bytearray, cur: int, avail: int) -> int:
    """``iommufd_fill_cap_iova``: the holes of the reserved ranges, each written while it
    fits, the header once all of them fit."""
    ranges = ioas.iopt.iova_ranges()
    for i, r in enumerate(ranges):
        if avail >= _CAP_IOVA.size + (i + 1) * _RANGE.size:
            _copy_out(
                arg,
                cur + _CAP_IOVA.size + i * _RANGE.size,
                _RANGE.encode(start=r.start, end=r.last),
            )
    size = _CAP_IOVA.size + len(ranges) * _RANGE.size
    if avail >= size:
        cap = _CAP_IOVA.encode(
            {"header.id": v.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, "header.version": 1},
            nr_iovas=len(ranges),
        )
        _copy_out(arg, cur, cap)
    return size


_FILL_FNS: Final = (_fill_cap_dma_avail, _fill_cap_iova)


def _iommu_get_info(ictx: IommufdFile, arg: bytearray) -> int:
    """``iommufd_vfio_iommu_get_info``: the info struct (up to ``argsz`` of it) and, as far
    as ``argsz`` reaches, the capability chain after it; ``argsz`` comes back as the size
    the whole chain needs, ``cap_offset`` is set only when it all fitted."""
    minsz = _INFO.offsetofend("iova_pgsizes")
    info = _INFO.decode(_copy_in(arg, minsz).ljust(_INFO.size, b"\0"))
    argsz = info["argsz"]
    if argsz < minsz:
        raise InvalidArgument(f"vfio_iommu_type1_info.argsz must be >= {minsz}, not {argsz}")
    minsz = min(argsz, _INFO.size)
    ioas = _compat_ioas(ictx)
    info["flags"] = v.VFIO_IOMMU_INFO_PGSIZES
    info["iova_pgsizes"] = _pagesizes(ioas)
    info["cap_offset"] = 0
    total = _INFO.size
    last_cap: int | None = None
    for fill in _FILL_FNS:
        if argsz > total:
            cap_size = fill(ioas, arg, total, argsz - total)
        else:
            cap_size = fill(ioas, arg, 0, 0)
        cap_size = (cap_size + 7) & ~7
        if last_cap is not None and argsz >= total:
            _copy_out(arg, last_cap + 4, total.to_bytes(4, "little"))  # last_cap->next
        last_cap = total
        total += cap_size
    if argsz >= total:
        info["cap_offset"] = _INFO.size
    info["argsz"] = total
    info["flags"] |= v.VFIO_IOMMU_INFO_CAPS
    _copy_out(arg, 0, _INFO.encode(info)[:minsz])
    return 0


# ------------------------------------------------------------------ MAP / UNMAP
def _map_dma(ictx: IommufdFile, arg: bytearray) -> int:
    """``iommufd_vfio_map_dma``: always at the given IOVA, with the rlimit accounting of
    the file (/dev/vfio/vfio opens count per mm)."""
    minsz = _MAP.offsetofend("size")
    m = _MAP.decode(_copy_in(arg, minsz))
    rw = v.VFIO_DMA_MAP_FLAG_READ | v.VFIO_DMA_MAP_FLAG_WRITE
    if m["argsz"] < minsz or m["flags"] & ~rw:
        raise InvalidArgument(
            f"vfio_iommu_type1_dma_map needs argsz >= {minsz} and flags in {rw:#x}, not "
            f"{m['argsz']} / {m['flags']:#x}"
        )
    prot = IOMMU_CACHE
    if m["flags"] & v.VFIO_DMA_MAP_FLAG_READ:
        prot |= IOMMU_READ
    if m["flags"] & v.VFIO_DMA_MAP_FLAG_WRITE:
        prot |= IOMMU_WRITE
    ioas = _compat_ioas(ictx)
    map_user_pages(ictx, ioas, m["iova"], m["vaddr"], m["size"], prot)
    return 0


def _unmap_dma(ictx: IommufdFile, arg: bytearray) -> int:
    """``iommufd_vfio_unmap_dma``: UNMAP_ALL (iova and size 0) or a range, which in type1
    mode (large pages disabled) is first cut out of the areas it starts and ends in. An
    empty range is success. ``size`` comes back as the bytes unmapped, also when the unmap
    stopped with an error."""
    minsz = _UNMAP.offsetofend("size")
    u = _UNMAP.decode(_copy_in(arg, minsz))
    if u["argsz"] < minsz or u["flags"] & ~v.VFIO_DMA_UNMAP_FLAG_ALL:
        raise InvalidArgument(
            f"vfio_iommu_type1_dma_unmap needs argsz >= {minsz} and flags in "
            f"{v.VFIO_DMA_UNMAP_FLAG_ALL:#x}, not {u['argsz']} / {u['flags']:#x}"
        )
    ioas = _compat_ioas(ictx)
    iopt = ioas.iopt
    if u["flags"] & v.VFIO_DMA_UNMAP_FLAG_ALL:
        if u["iova"] or u["size"]:
            raise InvalidArgument("VFIO_DMA_UNMAP_FLAG_ALL needs iova and size 0")
        unmapped, err = iopt.unmap_all()
    else:
        if iopt.disable_large_pages:
            last = (u["iova"] + u["size"] - 1) & ULONG_MAX
            iopt.cut_iova([last, u["iova"] - 1] if u["iova"] else [last])
        try:
            unmapped, err = iopt.unmap_iova(u["iova"], u["size"])
        except (InvalidArgument, Overflow) as e:
            unmapped, err = 0, e  # checked before anything changed; size still written
    u["size"] = unmapped
    _copy_out(arg, 0, _UNMAP.encode(u))
    if err is not None:
        raise err
    return 0


# ------------------------------------------------------------------ dispatch
def vfio_ioctl(ictx: IommufdFile, request: int, arg: bytearray) -> int:
    """``iommufd_vfio_ioctl``: the VFIO container ioctls by full number; ENOTTY (the
    kernel's -ENOIOCTLCMD) for every other, VFIO_IOMMU_DIRTY_PAGES included."""
    if request == v.VFIO_GET_API_VERSION:
        return v.VFIO_API_VERSION
    if request == v.VFIO_SET_IOMMU:
        return _set_iommu(ictx, _int(arg))
    if request == v.VFIO_CHECK_EXTENSION:
        return _check_extension(ictx, _int(arg))
    if request == v.VFIO_IOMMU_GET_INFO:
        return _iommu_get_info(ictx, arg)
    if request == v.VFIO_IOMMU_MAP_DMA:
        return _map_dma(ictx, arg)
    if request == v.VFIO_IOMMU_UNMAP_DMA:
        return _unmap_dma(ictx, arg)
    raise InappropriateIoctl(f"ioctl {request:#x} is neither iommufd's nor VFIO's")
