"""The Pythonic face of iommufd: one method per ioctl, named after it.

Each method builds the ioctl's struct from :mod:`~iommusim.sw.iommufd.uapi`, calls
:meth:`IommufdFile.ioctl` and decodes the outputs -- the same path as a C program's
``ioctl(fd, IOMMU_..., &cmd)``, so both faces share one implementation and one errno
contract. Arrays the kernel reads or writes through a user pointer live in a scratch
buffer in the user's memory (``scratch_va``, ``scratch_size`` bytes).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final, NamedTuple

from iommusim.errors import ApiError, InvalidArgument, MessageTooLong
from iommusim.sw.core.device import Device
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd import vfio_uapi as vfio
from iommusim.sw.iommufd.file import IommufdFile, IommufdParams
from iommusim.sw.iommufd.iopt import IovaRange
from iommusim.sw.iommufd.user import MmUserMemory
from iommusim.sw.iommufd.vfio_compat import int_arg
from iommusim.sw.mm import PROT_READ, PROT_WRITE, Mm

if TYPE_CHECKING:
    from iommusim.sw.core.iommu import IommuCore

__all__ = ["SCRATCH_SIZE", "HwInfo", "Iommufd", "IovaRanges", "VfioIommuInfo"]

#: Bytes of scratch user memory :meth:`Iommufd.over_mm` maps for arrays.
SCRATCH_SIZE: Final = 64 << 10
_RANGE = uapi.STRUCTS["iommu_iova_range"]
_RW: Final = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE


class HwInfo(NamedTuple):
    """GET_HW_INFO's answer: the driver's type and struct (as much as fitted), the driver's
    full length, ``out_capabilities`` and ``out_max_pasid_log2``."""

    data_type: int
    data: bytes
    data_len: int
    capabilities: int
    max_pasid_log2: int


class IovaRanges(NamedTuple):
    """IOAS_IOVA_RANGES' answer: the usable ranges and ``out_iova_alignment``."""

    ranges: list[IovaRange]
    alignment: int


class VfioIommuInfo(NamedTuple):
    """VFIO_IOMMU_GET_INFO's answer: page sizes and the capabilities' contents."""

    iova_pgsizes: int
    iova_ranges: list[IovaRange]
    dma_avail: int


_VFIO_INFO = vfio.VFIO_STRUCTS["vfio_iommu_type1_info"]
_VFIO_CAP = vfio.VFIO_STRUCTS["vfio_info_cap_header"]
_VFIO_RANGE = vfio.VFIO_STRUCTS["vfio_iova_range"]


class Iommufd:
    """ioctl-named methods over an :class:`IommufdFile`."""

    __slots__ = ("file", "scratch_size", "scratch_va")

    def __init__(self, file: IommufdFile, scratch_va: int = 0, scratch_size: int = 0) -> None:
        self.file = file
        self.scratch_va = scratch_va
        self.scratch_size = scratch_size

    @classmethod
    def over_mm(
        cls, mm: Mm, params: IommufdParams | None = None, core: IommuCore | None = None
    ) -> Iommufd:
        """Open iommufd for process ``mm`` (serving the devices of ``core``), with a scratch
        area mmapped in it."""
        va = mm.mmap(SCRATCH_SIZE, PROT_READ | PROT_WRITE)
        return cls(IommufdFile(MmUserMemory(mm), params, core), va, SCRATCH_SIZE)

    def scratch_read(self, n: int, at: int = 0) -> bytes:
        """``n`` bytes of the scratch buffer from offset ``at`` (what the kernel wrote back
        through a user pointer of the last call)."""
        return self.file.user.read(self._scratch(at + n) + at, n)

    def _put(self, data: bytes, at: int = 0) -> int:
        """Place ``data`` in the scratch buffer at offset ``at``; its user address."""
        va = self._scratch(at + len(data)) + at
        if data:
            self.file.user.write(va, data)
        return va

    def _call(self, request: int, **fields: int) -> dict[str, int]:
        s = uapi.IOCTLS[request]
        arg = s.encode(fields, size=s.size)
        self.file.ioctl(request, arg)
        return s.decode(arg)

    def _scratch(self, nbytes: int) -> int:
        if nbytes > self.scratch_size:
            raise InvalidArgument(
                f"{nbytes} bytes of arrays need a scratch buffer that large, "
                f"not {self.scratch_size}"
            )
        return self.scratch_va

    # ------------------------------------------------------------------ objects
    def destroy(self, object_id: int) -> None:
        self._call(uapi.IOMMU_DESTROY, id=object_id)

    def close(self) -> None:
        self.file.close()

    # ------------------------------------------------------------------ IOAS
    def ioas_alloc(self) -> int:
        return self._call(uapi.IOMMU_IOAS_ALLOC)["out_ioas_id"]

    def ioas_iova_ranges(self, ioas_id: int) -> IovaRanges:
        """Ask for the count first (EMSGSIZE with ``num_iovas`` set), as a C caller
        would, then for the ranges."""
        s = uapi.IOCTLS[uapi.IOMMU_IOAS_IOVA_RANGES]
        arg = s.encode(size=s.size, ioas_id=ioas_id)
        with contextlib.suppress(MessageTooLong):
            self.file.ioctl(uapi.IOMMU_IOAS_IOVA_RANGES, arg)
        out = s.decode(arg)
        n = out["num_iovas"]
        if n == 0:
            return IovaRanges([], out["out_iova_alignment"])
        va = self._scratch(n * _RANGE.size)
        out = self._call(
            uapi.IOMMU_IOAS_IOVA_RANGES, ioas_id=ioas_id, num_iovas=n, allowed_iovas=va
        )
        raw = self.file.user.read(va, n * _RANGE.size)
        ranges = []
        for i in range(n):
            d = _RANGE.decode(raw[i * _RANGE.size : (i + 1) * _RANGE.size])
            ranges.append(IovaRange(d["start"], d["last"]))
        return IovaRanges(ranges, out["out_iova_alignment"])

    def ioas_allow_iovas(self, ioas_id: int, ranges: list[IovaRange]) -> None:
        va = self._scratch(len(ranges) * _RANGE.size)
        data = b"".join(bytes(_RANGE.encode(start=r.start, last=r.last)) for r in ranges)
        if data:
            self.file.user.write(va, data)
        self._call(
            uapi.IOMMU_IOAS_ALLOW_IOVAS,
            ioas_id=ioas_id,
            num_iovas=len(ranges),
            allowed_iovas=va,
        )

    def _map(self, request: int, iova: int | None, flags: int, **fields: int) -> int:
        """IOAS_MAP or IOAS_MAP_FILE: a given ``iova`` adds IOMMU_IOAS_MAP_FIXED_IOVA;
        returns the IOVA."""
        if iova is not None:
            flags |= uapi.IOMMU_IOAS_MAP_FIXED_IOVA
        return self._call(request, flags=flags, iova=iova or 0, **fields)["iova"]

    def ioas_map(
        self, ioas_id: int, user_va: int, length: int, iova: int | None = None, flags: int = _RW
    ) -> int:
        """Map and return the IOVA; a given ``iova`` adds IOMMU_IOAS_MAP_FIXED_IOVA."""
        return self._map(
            uapi.IOMMU_IOAS_MAP, iova, flags, ioas_id=ioas_id, user_va=user_va, length=length
        )

    def ioas_map_file(
        self,
        ioas_id: int,
        fd: int,
        start: int,
        length: int,
        iova: int | None = None,
        flags: int = _RW,
    ) -> int:
        """Map ``length`` bytes of file ``fd`` from ``start``; return the IOVA."""
        return self._map(
            uapi.IOMMU_IOAS_MAP_FILE,
            iova,
            flags,
            ioas_id=ioas_id,
            fd=fd,
            start=start,
            length=length,
        )

    def ioas_copy(
        self,
        dst_ioas_id: int,
        src_ioas_id: int,
        src_iova: int,
        length: int,
        dst_iova: int | None = None,
        flags: int = _RW,
    ) -> int:
        if dst_iova is not None:
            flags |= uapi.IOMMU_IOAS_MAP_FIXED_IOVA
        out = self._call(
            uapi.IOMMU_IOAS_COPY,
            flags=flags,
            dst_ioas_id=dst_ioas_id,
            src_ioas_id=src_ioas_id,
            length=length,
            dst_iova=dst_iova or 0,
            src_iova=src_iova,
        )
        return out["dst_iova"]

    def ioas_unmap(self, ioas_id: int, iova: int, length: int) -> int:
        """Unmap and return the bytes unmapped."""
        out = self._call(uapi.IOMMU_IOAS_UNMAP, ioas_id=ioas_id, iova=iova, length=length)
        return out["length"]

    def ioas_unmap_all(self, ioas_id: int) -> int:
        return self.ioas_unmap(ioas_id, 0, (1 << 64) - 1)

    # ------------------------------------------------------------------ devices and HWPTs
    def bind(self, dev: Device) -> int:
        """VFIO_DEVICE_BIND_IOMMUFD: the DEVICE id of ``dev``."""
        return self.file.bind_device(dev)

    def attach(self, dev_id: int, pt_id: int, pasid: int = 0) -> int:
        """VFIO_DEVICE_ATTACH_IOMMUFD_PT: the HWPT id attached (an auto one for an IOAS)."""
        return self.file.attach_device(dev_id, pt_id, pasid)

    def hwpt_alloc(
        self,
        dev_id: int,
        pt_id: int,
        flags: int = 0,
        data_type: int = uapi.IOMMU_HWPT_DATA_NONE,
        data: bytes = b"",
        fault_id: int = 0,
    ) -> int:
        """IOMMU_HWPT_ALLOC: a paging HWPT on an IOAS, or a nested one on a paging HWPT or
        vIOMMU with the driver's ``data``; FAULT_ID_VALID is added for a ``fault_id``."""
        if fault_id:
            flags |= uapi.IOMMU_HWPT_FAULT_ID_VALID
        out = self._call(
            uapi.IOMMU_HWPT_ALLOC,
            flags=flags,
            dev_id=dev_id,
            pt_id=pt_id,
            data_type=data_type,
            data_len=len(data),
            data_uptr=self._put(data) if data else 0,
            fault_id=fault_id,
        )
        return out["out_hwpt_id"]

    def get_hw_info(self, dev_id: int, data_len: int = 256, in_type: int | None = None) -> HwInfo:
        """IOMMU_GET_HW_INFO with a ``data_len``-byte buffer (INPUT_TYPE when ``in_type``)."""
        va = self._scratch(data_len)
        out = self._call(
            uapi.IOMMU_GET_HW_INFO,
            flags=0 if in_type is None else uapi.IOMMU_HW_INFO_FLAG_INPUT_TYPE,
            dev_id=dev_id,
            data_len=data_len,
            data_uptr=va,
            in_data_type=in_type or 0,
        )
        n = min(out["data_len"], data_len)
        return HwInfo(
            out["out_data_type"],
            self.file.user.read(va, n) if n else b"",
            out["data_len"],
            out["out_capabilities"],
            out["out_max_pasid_log2"],
        )

    def hwpt_invalidate(
        self, hwpt_id: int, data_type: int, entries: list[bytes]
    ) -> tuple[int, ApiError | None]:
        """IOMMU_HWPT_INVALIDATE of equal-length ``entries``: how many were handled and the
        error that stopped the driver (None: all of them)."""
        entry_len = len(entries[0]) if entries else 0
        s = uapi.IOCTLS[uapi.IOMMU_HWPT_INVALIDATE]
        arg = s.encode(
            size=s.size,
            hwpt_id=hwpt_id,
            data_uptr=self._put(b"".join(entries)) if entries else 0,
            data_type=data_type,
            entry_len=entry_len,
            entry_num=len(entries),
        )
        err: ApiError | None = None
        try:
            self.file.ioctl(uapi.IOMMU_HWPT_INVALIDATE, arg)
        except ApiError as e:
            err = e
        return s.decode(arg)["entry_num"], err

    def set_dirty_tracking(self, hwpt_id: int, enable: bool) -> None:
        """IOMMU_HWPT_SET_DIRTY_TRACKING of a paging HWPT."""
        flags = uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE if enable else 0
        self._call(uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, hwpt_id=hwpt_id, flags=flags)

    def get_dirty_bitmap(
        self, hwpt_id: int, iova: int, length: int, page_size: int, flags: int = 0
    ) -> list[int]:
        """IOMMU_HWPT_GET_DIRTY_BITMAP over ``[iova, iova + length)``: the indexes (in
        ``page_size`` units from ``iova``) of the dirty pages; the bitmap is read and cleared
        unless ``flags`` has NO_CLEAR."""
        nbits = length // page_size
        nbytes = -(-nbits // 64) * 8
        va = self._put(bytes(nbytes))
        self._call(
            uapi.IOMMU_HWPT_GET_DIRTY_BITMAP,
            hwpt_id=hwpt_id,
            flags=flags,
            iova=iova,
            length=length,
            page_size=page_size,
            data=va,
        )
        bits = int.from_bytes(self.file.user.read(va, nbytes), "little")
        return [i for i in range(nbits) if bits >> i & 1]

    def viommu_alloc(self, dev_id: int, hwpt_id: int, viommu_type: int, data: bytes = b"") -> int:
        """IOMMU_VIOMMU_ALLOC over the nesting parent ``hwpt_id``; ``data`` is the driver's
        struct, which it may write back (read it with :meth:`scratch_read`)."""
        va = self._put(data) if data else 0
        out = self._call(
            uapi.IOMMU_VIOMMU_ALLOC,
            type=viommu_type,
            dev_id=dev_id,
            hwpt_id=hwpt_id,
            data_len=len(data),
            data_uptr=va,
        )
        return out["out_viommu_id"]

    def vdevice_alloc(self, viommu_id: int, dev_id: int, virt_id: int) -> int:
        out = self._call(
            uapi.IOMMU_VDEVICE_ALLOC, viommu_id=viommu_id, dev_id=dev_id, virt_id=virt_id
        )
        return out["out_vdevice_id"]

    # ------------------------------------------------------------------ event queues
    def fault_queue_alloc(self) -> tuple[int, int]:
        """IOMMU_FAULT_QUEUE_ALLOC: (fault id, fd); the fd is ``file.fds[fd]``."""
        out = self._call(uapi.IOMMU_FAULT_QUEUE_ALLOC)
        return out["out_fault_id"], out["out_fault_fd"]

    def veventq_alloc(self, viommu_id: int, veventq_type: int, depth: int) -> tuple[int, int]:
        """IOMMU_VEVENTQ_ALLOC: (vEVENTQ id, fd)."""
        out = self._call(
            uapi.IOMMU_VEVENTQ_ALLOC,
            viommu_id=viommu_id,
            type=veventq_type,
            veventq_depth=depth,
        )
        return out["out_veventq_id"], out["out_veventq_fd"]

    # ------------------------------------------------------------------ VFIO type1
    def vfio_check_extension(self, ext: int) -> int:
        return self.file.ioctl(vfio.VFIO_CHECK_EXTENSION, int_arg(ext))

    def vfio_set_iommu(self, iommu_type: int) -> None:
        self.file.ioctl(vfio.VFIO_SET_IOMMU, int_arg(iommu_type))

    def vfio_iommu_get_info(self) -> VfioIommuInfo:
        """Ask for the chain's size first, then for the chain, and walk it."""
        arg = _VFIO_INFO.encode(argsz=_VFIO_INFO.size)
        self.file.ioctl(vfio.VFIO_IOMMU_GET_INFO, arg)
        arg = arg.ljust(_VFIO_INFO.decode(arg)["argsz"], b"\0")
        self.file.ioctl(vfio.VFIO_IOMMU_GET_INFO, arg)
        info = _VFIO_INFO.decode(arg)
        ranges: list[IovaRange] = []
        avail = 0
        at = info["cap_offset"]
        while at:
            cap = _VFIO_CAP.decode(arg[at:])
            if cap["id"] == vfio.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                n = int.from_bytes(arg[at + 8 : at + 12], "little")
                for i in range(n):
                    r = _VFIO_RANGE.decode(arg[at + 16 + i * _VFIO_RANGE.size :])
                    ranges.append(IovaRange(r["start"], r["end"]))
            elif cap["id"] == vfio.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                avail = int.from_bytes(arg[at + 8 : at + 12], "little")
            at = cap["next"]
        return VfioIommuInfo(info["iova_pgsizes"], ranges, avail)

    def vfio_map_dma(
        self,
        vaddr: int,
        iova: int,
        size: int,
        flags: int = vfio.VFIO_DMA_MAP_FLAG_READ | vfio.VFIO_DMA_MAP_FLAG_WRITE,
    ) -> None:
        s = vfio.VFIO_STRUCTS["vfio_iommu_type1_dma_map"]
        arg = s.encode(argsz=s.size, flags=flags, vaddr=vaddr, iova=iova, size=size)
        self.file.ioctl(vfio.VFIO_IOMMU_MAP_DMA, arg)

    def vfio_unmap_dma(self, iova: int, size: int, flags: int = 0) -> int:
        """Unmap and return the bytes unmapped."""
        s = vfio.VFIO_STRUCTS["vfio_iommu_type1_dma_unmap"]
        arg = s.encode(argsz=s.size, flags=flags, iova=iova, size=size)
        self.file.ioctl(vfio.VFIO_IOMMU_UNMAP_DMA, arg)
        return s.decode(arg)["size"]

    # ------------------------------------------------------------------ options
    def option_get(self, option_id: int, object_id: int = 0) -> int:
        out = self._call(
            uapi.IOMMU_OPTION,
            option_id=option_id,
            op=uapi.IOMMU_OPTION_OP_GET,
            object_id=object_id,
        )
        return out["val64"]

    def option_set(self, option_id: int, val64: int, object_id: int = 0) -> None:
        self._call(
            uapi.IOMMU_OPTION,
            option_id=option_id,
            op=uapi.IOMMU_OPTION_OP_SET,
            object_id=object_id,
            val64=val64,
        )
