"""The VFIO type1 container API of Linux 7.3 (``include/uapi/linux/vfio.h``) as data: the
ioctl numbers, flags and extension types iommufd's VFIO compatibility answers, and the
structs it reads and writes, as :class:`~iommusim.sw.iommufd.uapi.Struct` tables (offsets and
sizes of the x86-64 / arm64 / riscv64 ABI, little-endian). Nested structs are flattened with
dotted names (``header.id``); a flexible array member is not a field (its offset is the
struct's size).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from iommusim.sw.iommufd.uapi import Field, Struct

__all__ = ["VFIO_STRUCTS"]

#: ``VFIO_TYPE`` (``';'``, the same type byte as iommufd's) and ``VFIO_BASE``.
VFIO_TYPE: Final = 0x3B
VFIO_BASE: Final = 100
VFIO_API_VERSION: Final = 0


def _io(nr: int) -> int:
    return (VFIO_TYPE << 8) | (VFIO_BASE + nr)


VFIO_GET_API_VERSION: Final = _io(0)
VFIO_CHECK_EXTENSION: Final = _io(1)
VFIO_SET_IOMMU: Final = _io(2)
VFIO_IOMMU_GET_INFO: Final = _io(12)
VFIO_IOMMU_MAP_DMA: Final = _io(13)
VFIO_IOMMU_UNMAP_DMA: Final = _io(14)
VFIO_IOMMU_DIRTY_PAGES: Final = _io(17)

# Extensions (VFIO_CHECK_EXTENSION) and IOMMU types (VFIO_SET_IOMMU).
VFIO_TYPE1_IOMMU: Final = 1
VFIO_SPAPR_TCE_IOMMU: Final = 2
VFIO_TYPE1v2_IOMMU: Final = 3
VFIO_DMA_CC_IOMMU: Final = 4
VFIO_EEH: Final = 5
#: ``__VFIO_RESERVED_TYPE1_NESTING_IOMMU``.
VFIO_RESERVED_TYPE1_NESTING_IOMMU: Final = 6
VFIO_SPAPR_TCE_v2_IOMMU: Final = 7
VFIO_NOIOMMU_IOMMU: Final = 8
VFIO_UNMAP_ALL: Final = 9
VFIO_UPDATE_VADDR: Final = 10

VFIO_IOMMU_INFO_PGSIZES: Final = 1 << 0
VFIO_IOMMU_INFO_CAPS: Final = 1 << 1
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: Final = 1
VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: Final = 2
VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: Final = 3

VFIO_DMA_MAP_FLAG_READ: Final = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE: Final = 1 << 1
VFIO_DMA_MAP_FLAG_VADDR: Final = 1 << 2

VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: Final = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL: Final = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR: Final = 1 << 2

VFIO_IOMMU_DIRTY_PAGES_FLAG_START: Final = 1 << 0
VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: Final = 1 << 1
VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: Final = 1 << 2


def _struct(name: str, size: int, *fields: tuple[str, int, int]) -> Struct:
    return Struct(name, size, tuple(Field(n, off, sz) for n, off, sz in fields))


_HEADER = (("header.id", 0, 2), ("header.version", 2, 2), ("header.next", 4, 4))

_TABLE: Final = (
    _struct(
        "vfio_iommu_type1_info",
        24,
        ("argsz", 0, 4),
        ("flags", 4, 4),
        ("iova_pgsizes", 8, 8),
        ("cap_offset", 16, 4),
        ("pad", 20, 4),
    ),
    _struct("vfio_info_cap_header", 8, ("id", 0, 2), ("version", 2, 2), ("next", 4, 4)),
    _struct("vfio_iova_range", 16, ("start", 0, 8), ("end", 8, 8)),
    # ... followed by struct vfio_iova_range iova_ranges[nr_iovas].
    _struct(
        "vfio_iommu_type1_info_cap_iova_range",
        16,
        *_HEADER,
        ("nr_iovas", 8, 4),
        ("reserved", 12, 4),
    ),
    _struct(
        "vfio_iommu_type1_info_cap_migration",
        32,
        *_HEADER,
        ("flags", 8, 4),
        ("pgsize_bitmap", 16, 8),
        ("max_dirty_bitmap_size", 24, 8),
    ),
    _struct("vfio_iommu_type1_info_dma_avail", 12, *_HEADER, ("avail", 8, 4)),
    _struct(
        "vfio_iommu_type1_dma_map",
        32,
        ("argsz", 0, 4),
        ("flags", 4, 4),
        ("vaddr", 8, 8),
        ("iova", 16, 8),
        ("size", 24, 8),
    ),
    # ... followed by __u8 data[].
    _struct(
        "vfio_iommu_type1_dma_unmap",
        24,
        ("argsz", 0, 4),
        ("flags", 4, 4),
        ("iova", 8, 8),
        ("size", 16, 8),
    ),
    _struct("vfio_iommu_type1_dirty_bitmap", 8, ("argsz", 0, 4), ("flags", 4, 4)),
)

#: struct name -> :class:`~iommusim.sw.iommufd.uapi.Struct`.
VFIO_STRUCTS: Final[Mapping[str, Struct]] = {s.name: s for s in _TABLE}
