"""The iommufd user API of Linux 7.3 (``include/uapi/linux/iommufd.h``) as data.

One table, :data:`STRUCTS`, describes every struct of the header: each field's offset, size
and signedness, the struct's total size, and for the ioctl argument structs the ioctl number
and ``min_size`` -- ``offsetofend`` of the last field the struct had when it was introduced,
as ``drivers/iommu/iommufd/main.c``'s ``IOCTL_OP`` table records it. The same table drives
:meth:`Struct.decode` (bytes -> field dict) and :meth:`Struct.encode` (field dict -> bytes).

Arrays are flattened into one field per element, named ``name[i]``; the union in
``struct iommu_hw_info`` gives two fields at one offset, the second marked ``alias`` (decoded,
never encoded). Every value is little-endian, as the model's user space is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from iommusim.errors import ModelError

__all__ = [
    "IOCTLS",
    "IOMMUFD_TYPE",
    "STRUCTS",
    "Field",
    "Struct",
    "build_struct",
    "ioctl_nr",
    "struct_by_ioctl",
]

# ------------------------------------------------------------------ ioctl numbers
#: The ioctl type byte of iommufd (``IOMMUFD_TYPE``, ``';'``).
IOMMUFD_TYPE: Final = 0x3B
IOMMUFD_CMD_BASE: Final = 0x80


def _io(nr: int) -> int:
    """``_IO(IOMMUFD_TYPE, nr)``: direction none, size 0 (the size lives in the struct)."""
    return (IOMMUFD_TYPE << 8) | nr


def ioctl_nr(request: int) -> int:
    """``_IOC_NR(request)``: the command number in the low byte."""
    return request & 0xFF


IOMMU_DESTROY: Final = _io(0x80)
IOMMU_IOAS_ALLOC: Final = _io(0x81)
IOMMU_IOAS_ALLOW_IOVAS: Final = _io(0x82)
IOMMU_IOAS_COPY: Final = _io(0x83)
IOMMU_IOAS_IOVA_RANGES: Final = _io(0x84)
IOMMU_IOAS_MAP: Final = _io(0x85)
IOMMU_IOAS_UNMAP: Final = _io(0x86)
IOMMU_OPTION: Final = _io(0x87)
IOMMU_VFIO_IOAS: Final = _io(0x88)
IOMMU_HWPT_ALLOC: Final = _io(0x89)
IOMMU_GET_HW_INFO: Final = _io(0x8A)
IOMMU_HWPT_SET_DIRTY_TRACKING: Final = _io(0x8B)
IOMMU_HWPT_GET_DIRTY_BITMAP: Final = _io(0x8C)
IOMMU_HWPT_INVALIDATE: Final = _io(0x8D)
IOMMU_FAULT_QUEUE_ALLOC: Final = _io(0x8E)
IOMMU_IOAS_MAP_FILE: Final = _io(0x8F)
IOMMU_VIOMMU_ALLOC: Final = _io(0x90)
IOMMU_VDEVICE_ALLOC: Final = _io(0x91)
IOMMU_IOAS_CHANGE_PROCESS: Final = _io(0x92)
IOMMU_VEVENTQ_ALLOC: Final = _io(0x93)
IOMMU_HW_QUEUE_ALLOC: Final = _io(0x94)
IOMMU_IOAS_NOIOMMU_GET_PA: Final = _io(0x95)

# ------------------------------------------------------------------ enums and flags
IOMMU_IOAS_MAP_FIXED_IOVA: Final = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE: Final = 1 << 1
IOMMU_IOAS_MAP_READABLE: Final = 1 << 2

IOMMU_OPTION_RLIMIT_MODE: Final = 0
IOMMU_OPTION_HUGE_PAGES: Final = 1
IOMMU_OPTION_OP_SET: Final = 0
IOMMU_OPTION_OP_GET: Final = 1

IOMMU_VFIO_IOAS_GET: Final = 0
IOMMU_VFIO_IOAS_SET: Final = 1
IOMMU_VFIO_IOAS_CLEAR: Final = 2

IOMMU_HWPT_ALLOC_NEST_PARENT: Final = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING: Final = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID: Final = 1 << 2
IOMMU_HWPT_ALLOC_PASID: Final = 1 << 3

IOMMU_VTD_S1_SRE: Final = 1 << 0
IOMMU_VTD_S1_EAFE: Final = 1 << 1
IOMMU_VTD_S1_WPE: Final = 1 << 2

IOMMU_HWPT_DATA_NONE: Final = 0
IOMMU_HWPT_DATA_VTD_S1: Final = 1
IOMMU_HWPT_DATA_ARM_SMMUV3: Final = 2
IOMMU_HWPT_DATA_AMD_GUEST: Final = 3

IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: Final = 1 << 0
IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI: Final = 1 << 0

IOMMU_HW_INFO_TYPE_NONE: Final = 0
IOMMU_HW_INFO_TYPE_DEFAULT: Final = 0
IOMMU_HW_INFO_TYPE_INTEL_VTD: Final = 1
IOMMU_HW_INFO_TYPE_ARM_SMMUV3: Final = 2
IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: Final = 3
IOMMU_HW_INFO_TYPE_AMD: Final = 4

IOMMU_HW_CAP_DIRTY_TRACKING: Final = 1 << 0
IOMMU_HW_CAP_PCI_PASID_EXEC: Final = 1 << 1
IOMMU_HW_CAP_PCI_PASID_PRIV: Final = 1 << 2
IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: Final = 1 << 3

IOMMU_HW_INFO_FLAG_INPUT_TYPE: Final = 1 << 0

IOMMU_HWPT_DIRTY_TRACKING_ENABLE: Final = 1
IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: Final = 1

IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: Final = 0
IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: Final = 1
IOMMU_VTD_INV_FLAGS_LEAF: Final = 1 << 0

IOMMU_PGFAULT_FLAGS_PASID_VALID: Final = 1 << 0
IOMMU_PGFAULT_FLAGS_LAST_PAGE: Final = 1 << 1
IOMMU_PGFAULT_PERM_READ: Final = 1 << 0
IOMMU_PGFAULT_PERM_WRITE: Final = 1 << 1
IOMMU_PGFAULT_PERM_EXEC: Final = 1 << 2
IOMMU_PGFAULT_PERM_PRIV: Final = 1 << 3
IOMMUFD_PAGE_RESP_SUCCESS: Final = 0
IOMMUFD_PAGE_RESP_INVALID: Final = 1

IOMMU_VIOMMU_TYPE_DEFAULT: Final = 0
IOMMU_VIOMMU_TYPE_ARM_SMMUV3: Final = 1
IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: Final = 2

IOMMU_VEVENTQ_FLAG_LOST_EVENTS: Final = 1 << 0
IOMMU_VEVENTQ_TYPE_DEFAULT: Final = 0
IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: Final = 1
IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: Final = 2

IOMMU_HW_QUEUE_TYPE_DEFAULT: Final = 0
IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV: Final = 1


# ------------------------------------------------------------------ the table
@dataclass(frozen=True, slots=True)
class Field:
    """One scalar of a struct: ``size`` bytes at ``offset``; ``alias`` for the second member
    of a union (decoded, not encoded)."""

    name: str
    offset: int
    size: int
    signed: bool = False
    alias: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True, slots=True)
class Struct:
    """A struct of the header; ``ioctl`` and ``min_size`` are set for ioctl arguments."""

    name: str
    size: int
    fields: tuple[Field, ...]
    ioctl: int | None = None
    min_size: int = 0

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise ModelError(f"struct {self.name} has no field {name!r}")

    def offsetofend(self, name: str) -> int:
        return self.field(name).end

    def decode(self, data: bytes | bytearray | memoryview) -> dict[str, int]:
        """Every field of the first :attr:`size` bytes of ``data``."""
        if len(data) < self.size:
            raise ModelError(f"struct {self.name} needs {self.size} bytes, not {len(data)}")
        view = bytes(data[: self.size])
        return {
            f.name: int.from_bytes(view[f.offset : f.end], "little", signed=f.signed)
            for f in self.fields
        }

    def encode(self, values: Mapping[str, int] | None = None, **kw: int) -> bytearray:
        """:attr:`size` bytes with the given fields set and every other byte zero.

        A value that does not fit its field, or a name the struct does not have, is a
        :class:`ModelError` (a bug in the caller, not user input)."""
        merged = dict(values or {})
        merged.update(kw)
        out = bytearray(self.size)
        known = {f.name: f for f in self.fields}
        for name in merged:
            if name not in known:
                raise ModelError(f"struct {self.name} has no field {name!r}")
        for f in self.fields:
            if f.name not in merged or (f.alias and _primary_given(self, f, merged)):
                continue
            v = merged[f.name]
            try:
                out[f.offset : f.end] = v.to_bytes(f.size, "little", signed=f.signed)
            except OverflowError:
                raise ModelError(
                    f"{self.name}.{f.name} must fit {f.size * 8} "
                    f"{'signed' if f.signed else 'unsigned'} bits, not {v}"
                ) from None
        return out


def _primary_given(s: Struct, alias: Field, values: Mapping[str, int]) -> bool:
    return any(f.name in values and not f.alias and f.offset == alias.offset for f in s.fields)


def _fields(*spec: tuple[str, str]) -> tuple[tuple[Field, ...], int]:
    """Lay fields out with C's natural alignment (every type here aligns to its size;
    ``__aligned_u64`` to 8 on every ABI). ``spec`` is ``(name, type)``; a type ``"u32*6"``
    is an array. Returns the fields and the padded struct size."""
    out: list[Field] = []
    off = 0
    align = 1
    for name, ctype in spec:
        base, _, count_s = ctype.partition("*")
        count = int(count_s) if count_s else 1
        signed = base.startswith("s")
        size = int(base[1:]) // 8
        align = max(align, size)
        off = (off + size - 1) & ~(size - 1)
        if count == 1:
            out.append(Field(name, off, size, signed))
        else:
            out.extend(Field(f"{name}[{i}]", off + i * size, size, signed) for i in range(count))
        off += size * count
    return tuple(out), (off + align - 1) & ~(align - 1)


def build_struct(
    name: str, *spec: tuple[str, str], ioctl: int | None = None, last: str = ""
) -> Struct:
    """A struct laid out as C lays out ``spec`` (see :func:`_fields`); an ioctl argument gets
    ``min_size`` = offsetofend of ``last``, its last field at introduction."""
    fields, size = _fields(*spec)
    s = Struct(name, size, fields, ioctl)
    if ioctl is None:
        return s
    return Struct(name, size, fields, ioctl, s.offsetofend(last))


_U32 = "u32"
_U64 = "u64"

#: Every struct of ``include/uapi/linux/iommufd.h`` (Linux 7.3), by its C name.
_TABLE: tuple[Struct, ...] = (
    build_struct("iommu_destroy", ("size", _U32), ("id", _U32), ioctl=IOMMU_DESTROY, last="id"),
    build_struct(
        "iommu_ioas_alloc",
        ("size", _U32),
        ("flags", _U32),
        ("out_ioas_id", _U32),
        ioctl=IOMMU_IOAS_ALLOC,
        last="out_ioas_id",
    ),
    build_struct("iommu_iova_range", ("start", _U64), ("last", _U64)),
    build_struct(
        "iommu_ioas_iova_ranges",
        ("size", _U32),
        ("ioas_id", _U32),
        ("num_iovas", _U32),
        ("__reserved", _U32),
        ("allowed_iovas", _U64),
        ("out_iova_alignment", _U64),
        ioctl=IOMMU_IOAS_IOVA_RANGES,
        last="out_iova_alignment",
    ),
    build_struct(
        "iommu_ioas_allow_iovas",
        ("size", _U32),
        ("ioas_id", _U32),
        ("num_iovas", _U32),
        ("__reserved", _U32),
        ("allowed_iovas", _U64),
        ioctl=IOMMU_IOAS_ALLOW_IOVAS,
        last="allowed_iovas",
    ),
    build_struct(
        "iommu_ioas_map",
        ("size", _U32),
        ("flags", _U32),
        ("ioas_id", _U32),
        ("__reserved", _U32),
        ("user_va", _U64),
        ("length", _U64),
        ("iova", _U64),
        ioctl=IOMMU_IOAS_MAP,
        last="iova",
    ),
    build_struct(
        "iommu_ioas_noiommu_get_pa",
        ("size", _U32),
        ("flags", _U32),
        ("ioas_id", _U32),
        ("__reserved", _U32),
        ("iova", _U64),
        ("length", _U64),
        ("out_phys", _U64),
        ioctl=IOMMU_IOAS_NOIOMMU_GET_PA,
        last="out_phys",
    ),
    build_struct(
        "iommu_ioas_map_file",
        ("size", _U32),
        ("flags", _U32),
        ("ioas_id", _U32),
        ("fd", "s32"),
        ("start", _U64),
        ("length", _U64),
        ("iova", _U64),
        ioctl=IOMMU_IOAS_MAP_FILE,
        last="iova",
    ),
    build_struct(
        "iommu_ioas_copy",
        ("size", _U32),
        ("flags", _U32),
        ("dst_ioas_id", _U32),
        ("src_ioas_id", _U32),
        ("length", _U64),
        ("dst_iova", _U64),
        ("src_iova", _U64),
        ioctl=IOMMU_IOAS_COPY,
        last="src_iova",
    ),
    build_struct(
        "iommu_ioas_unmap",
        ("size", _U32),
        ("ioas_id", _U32),
        ("iova", _U64),
        ("length", _U64),
        ioctl=IOMMU_IOAS_UNMAP,
        last="length",
    ),
    build_struct(
        "iommu_option",
        ("size", _U32),
        ("option_id", _U32),
        ("op", "u16"),
        ("__reserved", "u16"),
        ("object_id", _U32),
        ("val64", _U64),
        ioctl=IOMMU_OPTION,
        last="val64",
    ),
    build_struct(
        "iommu_vfio_ioas",
        ("size", _U32),
        ("ioas_id", _U32),
        ("op", "u16"),
        ("__reserved", "u16"),
        ioctl=IOMMU_VFIO_IOAS,
        last="__reserved",
    ),
    build_struct(
        "iommu_hwpt_vtd_s1",
        ("flags", _U64),
        ("pgtbl_addr", _U64),
        ("addr_width", _U32),
        ("__reserved", _U32),
    ),
    build_struct("iommu_hwpt_arm_smmuv3", ("ste", "u64*2")),
    build_struct("iommu_hwpt_amd_guest", ("dte", "u64*4")),
    build_struct(
        "iommu_hwpt_alloc",
        ("size", _U32),
        ("flags", _U32),
        ("dev_id", _U32),
        ("pt_id", _U32),
        ("out_hwpt_id", _U32),
        ("__reserved", _U32),
        ("data_type", _U32),
        ("data_len", _U32),
        ("data_uptr", _U64),
        ("fault_id", _U32),
        ("__reserved2", _U32),
        ioctl=IOMMU_HWPT_ALLOC,
        last="__reserved",
    ),
    build_struct(
        "iommu_hw_info_vtd",
        ("flags", _U32),
        ("__reserved", _U32),
        ("cap_reg", _U64),
        ("ecap_reg", _U64),
    ),
    build_struct(
        "iommu_hw_info_arm_smmuv3",
        ("flags", _U32),
        ("__reserved", _U32),
        ("idr", "u32*6"),
        ("iidr", _U32),
        ("aidr", _U32),
    ),
    build_struct(
        "iommu_hw_info_tegra241_cmdqv",
        ("flags", _U32),
        ("version", "u8"),
        ("log2vcmdqs", "u8"),
        ("log2vsids", "u8"),
        ("__reserved", "u8"),
    ),
    build_struct("iommu_hw_info_amd", ("efr", _U64), ("efr2", _U64)),
    build_struct(
        "iommu_hw_info",
        ("size", _U32),
        ("flags", _U32),
        ("dev_id", _U32),
        ("data_len", _U32),
        ("data_uptr", _U64),
        ("in_data_type", _U32),
        ("out_max_pasid_log2", "u8"),
        ("__reserved", "u8*3"),
        ("out_capabilities", _U64),
        ioctl=IOMMU_GET_HW_INFO,
        last="__reserved[2]",
    ),
    build_struct(
        "iommu_hwpt_set_dirty_tracking",
        ("size", _U32),
        ("flags", _U32),
        ("hwpt_id", _U32),
        ("__reserved", _U32),
        ioctl=IOMMU_HWPT_SET_DIRTY_TRACKING,
        last="__reserved",
    ),
    build_struct(
        "iommu_hwpt_get_dirty_bitmap",
        ("size", _U32),
        ("hwpt_id", _U32),
        ("flags", _U32),
        ("__reserved", _U32),
        ("iova", _U64),
        ("length", _U64),
        ("page_size", _U64),
        ("data", _U64),
        ioctl=IOMMU_HWPT_GET_DIRTY_BITMAP,
        last="data",
    ),
    build_struct(
        "iommu_hwpt_vtd_s1_invalidate",
        ("addr", _U64),
        ("npages", _U64),
        ("flags", _U32),
        ("__reserved", _U32),
    ),
    build_struct("iommu_viommu_arm_smmuv3_invalidate", ("cmd", "u64*2")),
    build_struct(
        "iommu_hwpt_invalidate",
        ("size", _U32),
        ("hwpt_id", _U32),
        ("data_uptr", _U64),
        ("data_type", _U32),
        ("entry_len", _U32),
        ("entry_num", _U32),
        ("__reserved", _U32),
        ioctl=IOMMU_HWPT_INVALIDATE,
        last="__reserved",
    ),
    build_struct(
        "iommu_hwpt_pgfault",
        ("flags", _U32),
        ("dev_id", _U32),
        ("pasid", _U32),
        ("grpid", _U32),
        ("perm", _U32),
        ("__reserved", _U32),
        ("addr", _U64),
        ("length", _U32),
        ("cookie", _U32),
    ),
    build_struct("iommu_hwpt_page_response", ("cookie", _U32), ("code", _U32)),
    build_struct(
        "iommu_fault_alloc",
        ("size", _U32),
        ("flags", _U32),
        ("out_fault_id", _U32),
        ("out_fault_fd", _U32),
        ioctl=IOMMU_FAULT_QUEUE_ALLOC,
        last="out_fault_fd",
    ),
    build_struct(
        "iommu_viommu_tegra241_cmdqv",
        ("out_vintf_mmap_offset", _U64),
        ("out_vintf_mmap_length", _U64),
    ),
    build_struct(
        "iommu_viommu_alloc",
        ("size", _U32),
        ("flags", _U32),
        ("type", _U32),
        ("dev_id", _U32),
        ("hwpt_id", _U32),
        ("out_viommu_id", _U32),
        ("data_len", _U32),
        ("__reserved", _U32),
        ("data_uptr", _U64),
        ioctl=IOMMU_VIOMMU_ALLOC,
        last="out_viommu_id",
    ),
    build_struct(
        "iommu_vdevice_alloc",
        ("size", _U32),
        ("viommu_id", _U32),
        ("dev_id", _U32),
        ("out_vdevice_id", _U32),
        ("virt_id", _U64),
        ioctl=IOMMU_VDEVICE_ALLOC,
        last="virt_id",
    ),
    build_struct(
        "iommu_ioas_change_process",
        ("size", _U32),
        ("__reserved", _U32),
        ioctl=IOMMU_IOAS_CHANGE_PROCESS,
        last="__reserved",
    ),
    build_struct("iommufd_vevent_header", ("flags", _U32), ("sequence", _U32)),
    build_struct("iommu_vevent_arm_smmuv3", ("evt", "u64*4")),
    build_struct("iommu_vevent_tegra241_cmdqv", ("lvcmdq_err_map", "u64*2")),
    build_struct(
        "iommu_veventq_alloc",
        ("size", _U32),
        ("flags", _U32),
        ("viommu_id", _U32),
        ("type", _U32),
        ("veventq_depth", _U32),
        ("out_veventq_id", _U32),
        ("out_veventq_fd", _U32),
        ("__reserved", _U32),
        ioctl=IOMMU_VEVENTQ_ALLOC,
        last="out_veventq_fd",
    ),
    build_struct(
        "iommu_hw_queue_alloc",
        ("size", _U32),
        ("flags", _U32),
        ("viommu_id", _U32),
        ("type", _U32),
        ("index", _U32),
        ("out_hw_queue_id", _U32),
        ("nesting_parent_iova", _U64),
        ("length", _U64),
        ioctl=IOMMU_HW_QUEUE_ALLOC,
        last="length",
    ),
)


def _with_union(s: Struct) -> Struct:
    """``struct iommu_hw_info``'s anonymous union: ``out_data_type`` shares
    ``in_data_type``'s four bytes."""
    if s.name != "iommu_hw_info":
        return s
    f = s.field("in_data_type")
    fields = list(s.fields)
    fields.insert(fields.index(f) + 1, Field("out_data_type", f.offset, f.size, alias=True))
    return Struct(s.name, s.size, tuple(fields), s.ioctl, s.min_size)


#: struct name -> :class:`Struct`.
STRUCTS: Final[Mapping[str, Struct]] = {s.name: _with_union(s) for s in _TABLE}

#: ioctl number -> argument struct, for every iommufd ioctl of the header.
IOCTLS: Final[Mapping[int, Struct]] = {s.ioctl: s for s in STRUCTS.values() if s.ioctl is not None}


def struct_by_ioctl(request: int) -> Struct | None:
    """The argument struct of ioctl ``request``, or None for a number iommufd does not
    define."""
    return IOCTLS.get(request)
