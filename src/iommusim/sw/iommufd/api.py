"""The Pythonic face of iommufd: one method per ioctl, named after it.

Each method builds the ioctl's struct from :mod:`~iommusim.sw.iommufd.uapi`, calls
:meth:`IommufdFile.ioctl` and decodes the outputs -- the same path as a C program's
``ioctl(fd, IOMMU_..., &cmd)``, so both faces share one implementation and one errno
contract. Arrays the kernel reads or writes through a user pointer live in a scratch
buffer in the user's memory (``scratch_va``, ``scratch_size`` bytes).
"""

from __future__ import annotations

import contextlib
from typing import Final, NamedTuple

from iommusim.errors import InvalidArgument, MessageTooLong
from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.file import IommufdFile, IommufdParams
from iommusim.sw.iommufd.iopt import IovaRange
from iommusim.sw.iommufd.user import MmUserMemory
from iommusim.sw.mm import PROT_READ, PROT_WRITE, Mm

__all__ = ["SCRATCH_SIZE", "Iommufd", "IovaRanges"]

#: Bytes of scratch user memory :meth:`Iommufd.over_mm` maps for arrays.
SCRATCH_SIZE: Final = 64 << 10
_RANGE = uapi.STRUCTS["iommu_iova_range"]
_RW: Final = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE


class IovaRanges(NamedTuple):
    """IOAS_IOVA_RANGES' answer: the usable ranges and ``out_iova_alignment``."""

    ranges: list[IovaRange]
    alignment: int


class Iommufd:
    """ioctl-named methods over an :class:`IommufdFile`."""

    __slots__ = ("file", "scratch_size", "scratch_va")

    def __init__(self, file: IommufdFile, scratch_va: int = 0, scratch_size: int = 0) -> None:
        self.file = file
        self.scratch_va = scratch_va
        self.scratch_size = scratch_size

    @classmethod
    def over_mm(cls, mm: Mm, params: IommufdParams | None = None) -> Iommufd:
        """Open iommufd for process ``mm``, with a scratch area mmapped in it."""
        va = mm.mmap(SCRATCH_SIZE, PROT_READ | PROT_WRITE)
        return cls(IommufdFile(MmUserMemory(mm), params), va, SCRATCH_SIZE)

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
