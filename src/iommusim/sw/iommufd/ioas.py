"""The IOAS object and its ioctls (``drivers/iommu/iommufd/ioas.c``).

Each handler follows the kernel function of the same name: the checks in the kernel's
order (so the same bad struct gives the same errno), then the change, then the copy of the
outputs back to user space. Errors raise before anything changes, except the kernel's
area-by-area unmap (:meth:`IoPagetable.unmap_range`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iommusim.errors import (
    BadFileDescriptor,
    InvalidArgument,
    MessageTooLong,
    NoDevice,
    NotFound,
    NotSupported,
    Overflow,
)
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.dmabuf import DmaBuf
from iommusim.sw.iommufd.iopt import SIZE_MAX, ULONG_MAX, IoPagetable, IovaRange, PagesSlice
from iommusim.sw.iommufd.objects import IommufdObject, ObjType
from iommusim.sw.iommufd.pages import ACCOUNT_MM, ACCOUNT_NONE, ACCOUNT_USER, IoPages
from iommusim.sw.iommufd.ucmd import Ucmd
from iommusim.sw.pages import PAGE_SIZE
from iommusim.sw.prot import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE

if TYPE_CHECKING:
    from iommusim.sw.iommufd.file import IommufdFile
    from iommusim.sw.iommufd.hwpt import HwptPaging

__all__ = [
    "Ioas",
    "ioas_alloc",
    "ioas_allow_iovas",
    "ioas_change_process",
    "ioas_copy",
    "ioas_iova_ranges",
    "ioas_map",
    "ioas_map_file",
    "ioas_noiommu_get_pa",
    "ioas_option",
    "ioas_unmap",
    "map_user_pages",
    "vfio_ioas",
]

_MAP_FLAGS = (
    uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_WRITEABLE | uapi.IOMMU_IOAS_MAP_READABLE
)
_RW = uapi.IOMMU_IOAS_MAP_WRITEABLE | uapi.IOMMU_IOAS_MAP_READABLE
_RANGE = uapi.STRUCTS["iommu_iova_range"]
U64_MAX = (1 << 64) - 1


class Ioas(IommufdObject):
    """``struct iommufd_ioas``: an IOVA space (:attr:`iopt`) HWPTs are built on."""

    __slots__ = ("hwpt_list", "iopt")
    type = ObjType.IOAS

    def __init__(self) -> None:
        super().__init__()
        self.iopt = IoPagetable()
        #: Paging HWPTs whose domains are in :attr:`iopt`, oldest first (``hwpt_list``).
        self.hwpt_list: list[HwptPaging] = []

    def destroy(self) -> None:
        """``iommufd_ioas_destroy``: unmap every area (dropping its pages and their
        pins), then the table's reserved and allowed ranges."""
        self.iopt.unmap_all()
        self.iopt.reserved.clear()
        self.iopt.allowed = []


def _get_ioas(ictx: IommufdFile, oid: int) -> Ioas:
    obj = ictx.objects.get(oid, ObjType.IOAS)
    if not isinstance(obj, Ioas):  # pragma: no cover - the type says so
        raise NotFound(f"object {oid} is not an IOAS")
    return obj


def _conv_prot(flags: int) -> int:
    """``conv_iommu_prot``: IOMMU_CACHE always (iommufd requires coherent DMA)."""
    prot = IOMMU_CACHE
    if flags & uapi.IOMMU_IOAS_MAP_WRITEABLE:
        prot |= IOMMU_WRITE
    if flags & uapi.IOMMU_IOAS_MAP_READABLE:
        prot |= IOMMU_READ
    return prot


def ioas_alloc(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_ALLOC: EOPNOTSUPP for any flag; the IOAS is published after the id is
    copied back."""
    cmd = ucmd.cmd
    if cmd["flags"]:
        raise NotSupported(f"IOAS_ALLOC flags must be 0, not {cmd['flags']:#x}")
    ioas = Ioas()
    ictx.objects.reserve(ioas)
    ucmd.new_obj = ioas
    cmd["out_ioas_id"] = ioas.id
    ucmd.respond()


def ioas_iova_ranges(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_IOVA_RANGES: write up to ``num_iovas`` ranges to ``allowed_iovas``,
    set ``num_iovas`` to the total; EMSGSIZE (after writing the struct back) when the
    array was too small."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise NotSupported("IOAS_IOVA_RANGES __reserved must be 0")
    ioas = _get_ioas(ictx, cmd["ioas_id"])
    max_iovas = cmd["num_iovas"]
    ptr = cmd["allowed_iovas"]
    cmd["num_iovas"] = 0
    cmd["out_iova_alignment"] = ioas.iopt.iova_alignment
    for r in ioas.iopt.iova_ranges():
        if cmd["num_iovas"] < max_iovas:
            at = (ptr + cmd["num_iovas"] * _RANGE.size) & U64_MAX
            ictx.user.write(at, bytes(_RANGE.encode(start=r.start, last=r.last)))
        cmd["num_iovas"] += 1
    ucmd.respond()
    if cmd["num_iovas"] > max_iovas:
        raise MessageTooLong(f"{cmd['num_iovas']} ranges do not fit in {max_iovas}")


def ioas_allow_iovas(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_ALLOW_IOVAS: replace the ranges auto-IOVA may use. Each range needs
    start < last and no overlap with another (EINVAL), none may be reserved (EADDRINUSE);
    the list is read whole before anything changes."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise NotSupported("IOAS_ALLOW_IOVAS __reserved must be 0")
    ioas = _get_ioas(ictx, cmd["ioas_id"])
    loaded: list[IovaRange] = []
    for i in range(cmd["num_iovas"]):
        at = (cmd["allowed_iovas"] + i * _RANGE.size) & U64_MAX
        d = _RANGE.decode(ictx.user.read(at, _RANGE.size))
        r = IovaRange(d["start"], d["last"])
        if r.start >= r.last:
            raise InvalidArgument(f"allowed range {r.start:#x}..{r.last:#x} is empty")
        if any(o.start <= r.last and r.start <= o.last for o in loaded):
            raise InvalidArgument(f"allowed range {r.start:#x}..{r.last:#x} overlaps another")
        loaded.append(r)
    ioas.iopt.set_allowed(loaded)


def _check_map_flags(flags: int, reserved: int = 0) -> None:
    if flags & ~_MAP_FLAGS or reserved:
        raise NotSupported(f"map flags {flags:#x} / __reserved {reserved:#x} not supported")


def _check_map(cmd: dict[str, int]) -> None:
    """The checks IOAS_MAP and IOAS_MAP_FILE share, before the IOAS is looked up."""
    if cmd["iova"] >= ULONG_MAX or cmd["length"] >= ULONG_MAX:
        raise Overflow("iova and length must be below ULONG_MAX")
    if not cmd["flags"] & _RW:
        raise InvalidArgument("the map needs READABLE or WRITEABLE")


def _map_common(
    ictx: IommufdFile,
    ioas: Ioas,
    pages: IoPages,
    start_byte: int,
    length: int,
    iova: int | None,
    prot: int,
) -> int:
    """``iopt_map_common``: charge per mm in RLIMIT_MODE, map at ``iova`` (allocated when
    None), drop the caller's reference on ``pages``; the IOVA."""
    if ictx.account_mode == ACCOUNT_MM and pages.account_mode == ACCOUNT_USER:
        pages.account_mode = ACCOUNT_MM
    try:
        return ioas.iopt.map_pages([PagesSlice(pages, start_byte, length)], length, iova, prot)
    finally:
        pages.put()  # the area took its own reference


def _alloc_pages(length: int, start_byte: int) -> int:
    """``iopt_alloc_pages``: EINVAL for length 0 or past SIZE_MAX; the page count."""
    if length > SIZE_MAX - PAGE_SIZE or length == 0:
        raise InvalidArgument(f"length {length:#x} is invalid")
    return -(-(length + start_byte) // PAGE_SIZE)


def _fixed(cmd: dict[str, int], key: str = "iova") -> int | None:
    return cmd[key] if cmd["flags"] & uapi.IOMMU_IOAS_MAP_FIXED_IOVA else None


def map_user_pages(
    ictx: IommufdFile, ioas: Ioas, iova: int | None, uptr: int, length: int, prot: int
) -> int:
    """``iopt_map_user_pages``: map ``length`` bytes of user memory from ``uptr`` at
    ``iova`` (allocated when None) with ``prot``; the IOVA. IOAS_MAP and the VFIO
    compatibility's MAP_DMA."""
    if uptr + length > ULONG_MAX:
        raise Overflow(f"user_va {uptr:#x} + length {length:#x} overflows")
    uptr_down = uptr & ~(PAGE_SIZE - 1)
    start_byte = uptr - uptr_down
    npages = _alloc_pages(length, start_byte)
    account = ACCOUNT_NONE if ictx.params.cap_ipc_lock else ACCOUNT_USER
    pages = IoPages(ictx.user, uptr_down, npages, bool(prot & IOMMU_WRITE), account)
    return _map_common(ictx, ioas, pages, start_byte, length, iova, prot)


def ioas_map(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_MAP (``iommufd_ioas_map`` -> ``iopt_map_user_pages``)."""
    cmd = ucmd.cmd
    _check_map_flags(cmd["flags"], cmd["__reserved"])
    _check_map(cmd)
    ioas = _get_ioas(ictx, cmd["ioas_id"])
    cmd["iova"] = map_user_pages(
        ictx, ioas, _fixed(cmd), cmd["user_va"], cmd["length"], _conv_prot(cmd["flags"])
    )
    ucmd.respond()


def ioas_map_file(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_MAP_FILE (``iommufd_ioas_map_file`` -> ``iopt_map_file_pages``): map
    ``length`` bytes of the file ``fd`` of the calling process (its
    :attr:`UserMemory.files`) from byte ``start``. EOPNOTSUPP for unknown flags, EOVERFLOW
    for iova or length at ULONG_MAX, EINVAL without READABLE/WRITEABLE, ENOENT for no IOAS,
    EINVAL for length 0, EOVERFLOW when ``start + length`` overflows; a dma-buf (an fd of
    this file's table) maps its memory (EINVAL past its end, ENODEV while revoked);
    otherwise EBADF for an fd not open; then IOAS_MAP's errors. The pages are pinned when a
    domain or an access needs them: past the end of the file that is EINVAL."""
    cmd = ucmd.cmd
    _check_map_flags(cmd["flags"])
    _check_map(cmd)
    ioas = _get_ioas(ictx, cmd["ioas_id"])
    start, length = cmd["start"], cmd["length"]
    if not length:
        raise InvalidArgument("length must not be 0")
    if start + length - 1 > ULONG_MAX:
        raise Overflow(f"start {start:#x} + length {length:#x} overflows")
    start_byte = start % PAGE_SIZE
    if cmd["fd"] < 0:
        raise BadFileDescriptor(f"fd {cmd['fd']} is not open")
    writable = bool(cmd["flags"] & uapi.IOMMU_IOAS_MAP_WRITEABLE)
    dmabuf = ictx.fds[cmd["fd"]].ops if cmd["fd"] in ictx.fds else None
    if isinstance(dmabuf, DmaBuf):  # dma_buf_get succeeded: iopt_alloc_dmabuf_pages
        source = dmabuf.source(start, length)
        npages = _alloc_pages(length, start_byte)
        pages = IoPages(source, start - start_byte, npages, writable, ACCOUNT_NONE, file=True)
        pages.dmabuf = dmabuf
        dmabuf.users.append(pages)
    else:
        file = ictx.user.files.get(cmd["fd"])
        npages = _alloc_pages(length, start_byte)
        account = ACCOUNT_NONE if ictx.params.cap_ipc_lock else ACCOUNT_USER
        pages = IoPages(
            file, start - start_byte, npages, writable, account, file=True, owner=ictx.user
        )
    cmd["iova"] = _map_common(
        ictx, ioas, pages, start_byte, length, _fixed(cmd), _conv_prot(cmd["flags"])
    )
    ucmd.respond()


def ioas_copy(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_COPY: map the pages behind a source range into the destination; the
    new areas share the source's :class:`IoPages` (and so its pins)."""
    cmd = ucmd.cmd
    _check_map_flags(cmd["flags"])
    if max(cmd["length"], cmd["src_iova"], cmd["dst_iova"]) >= ULONG_MAX:
        raise Overflow("length, src_iova and dst_iova must be below ULONG_MAX")
    if not cmd["flags"] & _RW:
        raise InvalidArgument("IOAS_COPY needs READABLE or WRITEABLE")
    src = _get_ioas(ictx, cmd["src_ioas_id"])
    slices = src.iopt.get_pages(cmd["src_iova"], cmd["length"])
    dst = _get_ioas(ictx, cmd["dst_ioas_id"])
    fixed = bool(cmd["flags"] & uapi.IOMMU_IOAS_MAP_FIXED_IOVA)
    cmd["dst_iova"] = dst.iopt.map_pages(
        slices, cmd["length"], cmd["dst_iova"] if fixed else None, _conv_prot(cmd["flags"])
    )
    ucmd.respond()


def ioas_unmap(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_UNMAP: iova 0 with length U64_MAX unmaps everything (success when
    empty); otherwise the range must hold whole areas (ENOENT for an area sticking out or
    nothing mapped). ``length`` is set to the bytes unmapped on success."""
    cmd = ucmd.cmd
    ioas = _get_ioas(ictx, cmd["ioas_id"])
    if cmd["iova"] == 0 and cmd["length"] == U64_MAX:
        unmapped, err = ioas.iopt.unmap_all()
        if err is not None:
            raise err
    else:
        if cmd["iova"] >= ULONG_MAX or cmd["length"] >= ULONG_MAX:
            raise Overflow("iova and length must be below ULONG_MAX")
        unmapped, err = ioas.iopt.unmap_iova(cmd["iova"], cmd["length"])
        if err is not None:
            raise err
        if not unmapped:
            raise NotFound(f"nothing mapped in {cmd['iova']:#x}+{cmd['length']:#x}")
    cmd["length"] = unmapped
    ucmd.respond()


def ioas_option(ictx: IommufdFile, cmd: dict[str, int]) -> None:
    """``iommufd_ioas_option``: IOMMU_OPTION_HUGE_PAGES of IOAS ``object_id``."""
    if cmd["__reserved"]:
        raise NotSupported("IOMMU_OPTION __reserved must be 0")
    ioas = _get_ioas(ictx, cmd["object_id"])
    if cmd["option_id"] != uapi.IOMMU_OPTION_HUGE_PAGES:  # pragma: no cover - dispatched
        raise NotSupported(f"option {cmd['option_id']} is not an IOAS option")
    if cmd["op"] == uapi.IOMMU_OPTION_OP_GET:
        cmd["val64"] = int(not ioas.iopt.disable_large_pages)
        return
    if cmd["op"] == uapi.IOMMU_OPTION_OP_SET:
        if cmd["val64"] not in (0, 1):
            raise InvalidArgument(f"HUGE_PAGES must be 0 or 1, not {cmd['val64']}")
        ioas.iopt.set_large_pages(bool(cmd["val64"]))
        return
    raise NotSupported(f"option op {cmd['op']} is neither SET nor GET")


def ioas_change_process(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_CHANGE_PROCESS: charge every IOAS's pages to the calling process
    (``pages->source_mm``: :attr:`IoPages.owner`). Only IOAS_MAP_FILE pages can move: any
    area of user memory is EINVAL, nothing changed; with no area there is nothing to do."""
    if ucmd.cmd["__reserved"]:
        raise NotSupported("IOAS_CHANGE_PROCESS __reserved must be 0")
    areas = [a for obj in ictx.objects if isinstance(obj, Ioas) for a in obj.iopt.areas]
    for area in areas:
        if not area.pages.file:
            raise InvalidArgument(f"area at {area.iova:#x} maps user memory, not a file")
    for area in areas:
        area.pages.owner = ictx.user


def ioas_noiommu_get_pa(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_IOAS_NOIOMMU_GET_PA: the model is a kernel without CONFIG_IOMMUFD_NOIOMMU,
    whose stub returns EOPNOTSUPP."""
    raise NotSupported("IOAS_NOIOMMU_GET_PA needs CONFIG_IOMMUFD_NOIOMMU")


def vfio_ioas(ictx: IommufdFile, ucmd: Ucmd) -> None:
    """IOMMU_VFIO_IOAS (``vfio_compat.c``): GET the compatibility IOAS (ENODEV when
    none), SET it to an IOAS, CLEAR it. It holds no reference: destroying that IOAS
    clears it."""
    cmd = ucmd.cmd
    if cmd["__reserved"]:
        raise NotSupported("VFIO_IOAS __reserved must be 0")
    if cmd["op"] == uapi.IOMMU_VFIO_IOAS_GET:
        if ictx.vfio_ioas is None:
            raise NoDevice("no VFIO compatibility IOAS is set")
        cmd["ioas_id"] = ictx.vfio_ioas.id
        ucmd.respond()
    elif cmd["op"] == uapi.IOMMU_VFIO_IOAS_SET:
        ictx.vfio_ioas = _get_ioas(ictx, cmd["ioas_id"])
    elif cmd["op"] == uapi.IOMMU_VFIO_IOAS_CLEAR:
        ictx.vfio_ioas = None
    else:
        raise NotSupported(f"VFIO_IOAS op {cmd['op']} is not GET, SET or CLEAR")
