"""The iommufd uAPI table against the real Linux 7.3 header.

The golden literals below were printed by a C program compiled with gcc against
``include/uapi/linux/iommufd.h`` of Debian's ``linux-source-7.3`` (7.3.4): ``sizeof``,
``offsetof``, field sizes and signedness, the ioctl numbers, and ``offsetofend`` of the last
field named by each ``IOCTL_OP`` entry of ``drivers/iommu/iommufd/main.c``. The test does not
need the kernel sources.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import ModelError
from iommusim.sw.iommufd import uapi

#: sizeof(struct X), printed by gcc against Linux 7.3 include/uapi/linux/iommufd.h.
GOLDEN_SIZES: dict[str, int] = {
    "iommu_destroy": 8,
    "iommu_ioas_alloc": 12,
    "iommu_iova_range": 16,
    "iommu_ioas_iova_ranges": 32,
    "iommu_ioas_allow_iovas": 24,
    "iommu_ioas_map": 40,
    "iommu_ioas_noiommu_get_pa": 40,
    "iommu_ioas_map_file": 40,
    "iommu_ioas_copy": 40,
    "iommu_ioas_unmap": 24,
    "iommu_option": 24,
    "iommu_vfio_ioas": 12,
    "iommu_hwpt_vtd_s1": 24,
    "iommu_hwpt_arm_smmuv3": 16,
    "iommu_hwpt_amd_guest": 32,
    "iommu_hwpt_alloc": 48,
    "iommu_hw_info_vtd": 24,
    "iommu_hw_info_arm_smmuv3": 40,
    "iommu_hw_info_tegra241_cmdqv": 8,
    "iommu_hw_info_amd": 16,
    "iommu_hw_info": 40,
    "iommu_hwpt_set_dirty_tracking": 16,
    "iommu_hwpt_get_dirty_bitmap": 48,
    "iommu_hwpt_vtd_s1_invalidate": 24,
    "iommu_viommu_arm_smmuv3_invalidate": 16,
    "iommu_hwpt_invalidate": 32,
    "iommu_hwpt_pgfault": 40,
    "iommu_hwpt_page_response": 8,
    "iommu_fault_alloc": 16,
    "iommu_viommu_tegra241_cmdqv": 16,
    "iommu_viommu_alloc": 40,
    "iommu_vdevice_alloc": 24,
    "iommu_ioas_change_process": 8,
    "iommufd_vevent_header": 8,
    "iommu_vevent_arm_smmuv3": 32,
    "iommu_vevent_tegra241_cmdqv": 16,
    "iommu_veventq_alloc": 32,
    "iommu_hw_queue_alloc": 40,
}

#: (offsetof, sizeof, is_signed) of every field, printed by the same program.
GOLDEN_FIELDS: dict[str, list[tuple[str, int, int, bool]]] = {
    "iommu_destroy": [
        ("size", 0, 4, False),
        ("id", 4, 4, False),
    ],
    "iommu_ioas_alloc": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("out_ioas_id", 8, 4, False),
    ],
    "iommu_iova_range": [
        ("start", 0, 8, False),
        ("last", 8, 8, False),
    ],
    "iommu_ioas_iova_ranges": [
        ("size", 0, 4, False),
        ("ioas_id", 4, 4, False),
        ("num_iovas", 8, 4, False),
        ("__reserved", 12, 4, False),
        ("allowed_iovas", 16, 8, False),
        ("out_iova_alignment", 24, 8, False),
    ],
    "iommu_ioas_allow_iovas": [
        ("size", 0, 4, False),
        ("ioas_id", 4, 4, False),
        ("num_iovas", 8, 4, False),
        ("__reserved", 12, 4, False),
        ("allowed_iovas", 16, 8, False),
    ],
    "iommu_ioas_map": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("ioas_id", 8, 4, False),
        ("__reserved", 12, 4, False),
        ("user_va", 16, 8, False),
        ("length", 24, 8, False),
        ("iova", 32, 8, False),
    ],
    "iommu_ioas_noiommu_get_pa": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("ioas_id", 8, 4, False),
        ("__reserved", 12, 4, False),
        ("iova", 16, 8, False),
        ("length", 24, 8, False),
        ("out_phys", 32, 8, False),
    ],
    "iommu_ioas_map_file": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("ioas_id", 8, 4, False),
        ("fd", 12, 4, True),
        ("start", 16, 8, False),
        ("length", 24, 8, False),
        ("iova", 32, 8, False),
    ],
    "iommu_ioas_copy": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("dst_ioas_id", 8, 4, False),
        ("src_ioas_id", 12, 4, False),
        ("length", 16, 8, False),
        ("dst_iova", 24, 8, False),
        ("src_iova", 32, 8, False),
    ],
    "iommu_ioas_unmap": [
        ("size", 0, 4, False),
        ("ioas_id", 4, 4, False),
        ("iova", 8, 8, False),
        ("length", 16, 8, False),
    ],
    "iommu_option": [
        ("size", 0, 4, False),
        ("option_id", 4, 4, False),
        ("op", 8, 2, False),
        ("__reserved", 10, 2, False),
        ("object_id", 12, 4, False),
        ("val64", 16, 8, False),
    ],
    "iommu_vfio_ioas": [
        ("size", 0, 4, False),
        ("ioas_id", 4, 4, False),
        ("op", 8, 2, False),
        ("__reserved", 10, 2, False),
    ],
    "iommu_hwpt_vtd_s1": [
        ("flags", 0, 8, False),
        ("pgtbl_addr", 8, 8, False),
        ("addr_width", 16, 4, False),
        ("__reserved", 20, 4, False),
    ],
    "iommu_hwpt_arm_smmuv3": [
        ("ste[0]", 0, 8, False),
        ("ste[1]", 8, 8, False),
    ],
    "iommu_hwpt_amd_guest": [
        ("dte[0]", 0, 8, False),
        ("dte[1]", 8, 8, False),
        ("dte[2]", 16, 8, False),
        ("dte[3]", 24, 8, False),
    ],
    "iommu_hwpt_alloc": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("dev_id", 8, 4, False),
        ("pt_id", 12, 4, False),
        ("out_hwpt_id", 16, 4, False),
        ("__reserved", 20, 4, False),
        ("data_type", 24, 4, False),
        ("data_len", 28, 4, False),
        ("data_uptr", 32, 8, False),
        ("fault_id", 40, 4, False),
        ("__reserved2", 44, 4, False),
    ],
    "iommu_hw_info_vtd": [
        ("flags", 0, 4, False),
        ("__reserved", 4, 4, False),
        ("cap_reg", 8, 8, False),
        ("ecap_reg", 16, 8, False),
    ],
    "iommu_hw_info_arm_smmuv3": [
        ("flags", 0, 4, False),
        ("__reserved", 4, 4, False),
        ("idr[0]", 8, 4, False),
        ("idr[1]", 12, 4, False),
        ("idr[2]", 16, 4, False),
        ("idr[3]", 20, 4, False),
        ("idr[4]", 24, 4, False),
        ("idr[5]", 28, 4, False),
        ("iidr", 32, 4, False),
        ("aidr", 36, 4, False),
    ],
    "iommu_hw_info_tegra241_cmdqv": [
        ("flags", 0, 4, False),
        ("version", 4, 1, False),
        ("log2vcmdqs", 5, 1, False),
        ("log2vsids", 6, 1, False),
        ("__reserved", 7, 1, False),
    ],
    "iommu_hw_info_amd": [
        ("efr", 0, 8, False),
        ("efr2", 8, 8, False),
    ],
    "iommu_hw_info": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("dev_id", 8, 4, False),
        ("data_len", 12, 4, False),
        ("data_uptr", 16, 8, False),
        ("in_data_type", 24, 4, False),
        ("out_data_type", 24, 4, False),
        ("out_max_pasid_log2", 28, 1, False),
        ("__reserved[0]", 29, 1, False),
        ("__reserved[1]", 30, 1, False),
        ("__reserved[2]", 31, 1, False),
        ("out_capabilities", 32, 8, False),
    ],
    "iommu_hwpt_set_dirty_tracking": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("hwpt_id", 8, 4, False),
        ("__reserved", 12, 4, False),
    ],
    "iommu_hwpt_get_dirty_bitmap": [
        ("size", 0, 4, False),
        ("hwpt_id", 4, 4, False),
        ("flags", 8, 4, False),
        ("__reserved", 12, 4, False),
        ("iova", 16, 8, False),
        ("length", 24, 8, False),
        ("page_size", 32, 8, False),
        ("data", 40, 8, False),
    ],
    "iommu_hwpt_vtd_s1_invalidate": [
        ("addr", 0, 8, False),
        ("npages", 8, 8, False),
        ("flags", 16, 4, False),
        ("__reserved", 20, 4, False),
    ],
    "iommu_viommu_arm_smmuv3_invalidate": [
        ("cmd[0]", 0, 8, False),
        ("cmd[1]", 8, 8, False),
    ],
    "iommu_hwpt_invalidate": [
        ("size", 0, 4, False),
        ("hwpt_id", 4, 4, False),
        ("data_uptr", 8, 8, False),
        ("data_type", 16, 4, False),
        ("entry_len", 20, 4, False),
        ("entry_num", 24, 4, False),
        ("__reserved", 28, 4, False),
    ],
    "iommu_hwpt_pgfault": [
        ("flags", 0, 4, False),
        ("dev_id", 4, 4, False),
        ("pasid", 8, 4, False),
        ("grpid", 12, 4, False),
        ("perm", 16, 4, False),
        ("__reserved", 20, 4, False),
        ("addr", 24, 8, False),
        ("length", 32, 4, False),
        ("cookie", 36, 4, False),
    ],
    "iommu_hwpt_page_response": [
        ("cookie", 0, 4, False),
        ("code", 4, 4, False),
    ],
    "iommu_fault_alloc": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("out_fault_id", 8, 4, False),
        ("out_fault_fd", 12, 4, False),
    ],
    "iommu_viommu_tegra241_cmdqv": [
        ("out_vintf_mmap_offset", 0, 8, False),
        ("out_vintf_mmap_length", 8, 8, False),
    ],
    "iommu_viommu_alloc": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("type", 8, 4, False),
        ("dev_id", 12, 4, False),
        ("hwpt_id", 16, 4, False),
        ("out_viommu_id", 20, 4, False),
        ("data_len", 24, 4, False),
        ("__reserved", 28, 4, False),
        ("data_uptr", 32, 8, False),
    ],
    "iommu_vdevice_alloc": [
        ("size", 0, 4, False),
        ("viommu_id", 4, 4, False),
        ("dev_id", 8, 4, False),
        ("out_vdevice_id", 12, 4, False),
        ("virt_id", 16, 8, False),
    ],
    "iommu_ioas_change_process": [
        ("size", 0, 4, False),
        ("__reserved", 4, 4, False),
    ],
    "iommufd_vevent_header": [
        ("flags", 0, 4, False),
        ("sequence", 4, 4, False),
    ],
    "iommu_vevent_arm_smmuv3": [
        ("evt[0]", 0, 8, False),
        ("evt[1]", 8, 8, False),
        ("evt[2]", 16, 8, False),
        ("evt[3]", 24, 8, False),
    ],
    "iommu_vevent_tegra241_cmdqv": [
        ("lvcmdq_err_map[0]", 0, 8, False),
        ("lvcmdq_err_map[1]", 8, 8, False),
    ],
    "iommu_veventq_alloc": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("viommu_id", 8, 4, False),
        ("type", 12, 4, False),
        ("veventq_depth", 16, 4, False),
        ("out_veventq_id", 20, 4, False),
        ("out_veventq_fd", 24, 4, False),
        ("__reserved", 28, 4, False),
    ],
    "iommu_hw_queue_alloc": [
        ("size", 0, 4, False),
        ("flags", 4, 4, False),
        ("viommu_id", 8, 4, False),
        ("type", 12, 4, False),
        ("index", 16, 4, False),
        ("out_hw_queue_id", 20, 4, False),
        ("nesting_parent_iova", 24, 8, False),
        ("length", 32, 8, False),
    ],
}

#: ioctl -> (struct, number, sizeof, offsetofend(struct, last)) from main.c's IOCTL_OP table.
GOLDEN_IOCTLS: dict[str, tuple[str, int, int, int]] = {
    "IOMMU_DESTROY": ("iommu_destroy", 0x3B80, 8, 8),
    "IOMMU_FAULT_QUEUE_ALLOC": ("iommu_fault_alloc", 0x3B8E, 16, 16),
    "IOMMU_GET_HW_INFO": ("iommu_hw_info", 0x3B8A, 40, 32),
    "IOMMU_HW_QUEUE_ALLOC": ("iommu_hw_queue_alloc", 0x3B94, 40, 40),
    "IOMMU_HWPT_ALLOC": ("iommu_hwpt_alloc", 0x3B89, 48, 24),
    "IOMMU_HWPT_GET_DIRTY_BITMAP": ("iommu_hwpt_get_dirty_bitmap", 0x3B8C, 48, 48),
    "IOMMU_HWPT_INVALIDATE": ("iommu_hwpt_invalidate", 0x3B8D, 32, 32),
    "IOMMU_HWPT_SET_DIRTY_TRACKING": ("iommu_hwpt_set_dirty_tracking", 0x3B8B, 16, 16),
    "IOMMU_IOAS_ALLOC": ("iommu_ioas_alloc", 0x3B81, 12, 12),
    "IOMMU_IOAS_ALLOW_IOVAS": ("iommu_ioas_allow_iovas", 0x3B82, 24, 24),
    "IOMMU_IOAS_CHANGE_PROCESS": ("iommu_ioas_change_process", 0x3B92, 8, 8),
    "IOMMU_IOAS_COPY": ("iommu_ioas_copy", 0x3B83, 40, 40),
    "IOMMU_IOAS_IOVA_RANGES": ("iommu_ioas_iova_ranges", 0x3B84, 32, 32),
    "IOMMU_IOAS_MAP": ("iommu_ioas_map", 0x3B85, 40, 40),
    "IOMMU_IOAS_MAP_FILE": ("iommu_ioas_map_file", 0x3B8F, 40, 40),
    "IOMMU_IOAS_NOIOMMU_GET_PA": ("iommu_ioas_noiommu_get_pa", 0x3B95, 40, 40),
    "IOMMU_IOAS_UNMAP": ("iommu_ioas_unmap", 0x3B86, 24, 24),
    "IOMMU_OPTION": ("iommu_option", 0x3B87, 24, 24),
    "IOMMU_VDEVICE_ALLOC": ("iommu_vdevice_alloc", 0x3B91, 24, 24),
    "IOMMU_VEVENTQ_ALLOC": ("iommu_veventq_alloc", 0x3B93, 32, 28),
    "IOMMU_VFIO_IOAS": ("iommu_vfio_ioas", 0x3B88, 12, 12),
    "IOMMU_VIOMMU_ALLOC": ("iommu_viommu_alloc", 0x3B90, 40, 24),
}


def test_every_struct_of_the_header_is_in_the_table_and_nothing_else() -> None:
    assert set(uapi.STRUCTS) == set(GOLDEN_SIZES)


@pytest.mark.parametrize("name", sorted(GOLDEN_SIZES))
def test_struct_size_matches_the_header(name: str) -> None:
    assert uapi.STRUCTS[name].size == GOLDEN_SIZES[name]


@pytest.mark.parametrize("name", sorted(GOLDEN_FIELDS))
def test_field_offsets_sizes_and_signedness_match_the_header(name: str) -> None:
    got = [(f.name, f.offset, f.size, f.signed) for f in uapi.STRUCTS[name].fields]
    assert got == GOLDEN_FIELDS[name]


@pytest.mark.parametrize("ioctl", sorted(GOLDEN_IOCTLS))
def test_ioctl_number_size_and_min_size_match_main_c(ioctl: str) -> None:
    sname, number, size, min_size = GOLDEN_IOCTLS[ioctl]
    assert getattr(uapi, ioctl) == number
    s = uapi.struct_by_ioctl(number)
    assert s is not None
    assert (s.name, s.size, s.min_size) == (sname, size, min_size)


def test_ioctl_map_holds_exactly_the_header_ioctls() -> None:
    assert {s.name for s in uapi.IOCTLS.values()} == {v[0] for v in GOLDEN_IOCTLS.values()}
    assert uapi.struct_by_ioctl(0x3B80 | 0x7F) is None


def test_flag_constants_of_the_header() -> None:
    # enum iommufd_ioas_map_flags and enum iommufd_option, as the header spells them.
    assert (
        uapi.IOMMU_IOAS_MAP_FIXED_IOVA,
        uapi.IOMMU_IOAS_MAP_WRITEABLE,
        uapi.IOMMU_IOAS_MAP_READABLE,
    ) == (1, 2, 4)
    assert (uapi.IOMMU_OPTION_RLIMIT_MODE, uapi.IOMMU_OPTION_HUGE_PAGES) == (0, 1)
    assert (uapi.IOMMU_OPTION_OP_SET, uapi.IOMMU_OPTION_OP_GET) == (0, 1)
    assert uapi.IOMMU_HWPT_ALLOC_PASID == 8
    assert uapi.IOMMU_HW_INFO_TYPE_AMD == 4


def test_encode_places_fields_little_endian_at_their_offsets() -> None:
    s = uapi.STRUCTS["iommu_ioas_map"]
    b = s.encode(size=40, flags=6, ioas_id=3, user_va=0x1122334455667788, length=0x2000)
    assert bytes(b) == (
        (40).to_bytes(4, "little")
        + (6).to_bytes(4, "little")
        + (3).to_bytes(4, "little")
        + bytes(4)
        + (0x1122334455667788).to_bytes(8, "little")
        + (0x2000).to_bytes(8, "little")
        + bytes(8)
    )


def test_signed_field_decodes_negative() -> None:
    s = uapi.STRUCTS["iommu_ioas_map_file"]
    assert s.decode(s.encode(fd=-1))["fd"] == -1


def test_union_alias_is_decoded_and_the_primary_wins_on_encode() -> None:
    s = uapi.STRUCTS["iommu_hw_info"]
    d = s.decode(s.encode(in_data_type=2))
    assert d["in_data_type"] == d["out_data_type"] == 2
    assert s.decode(s.encode(out_data_type=3))["in_data_type"] == 3
    assert s.decode(s.encode(in_data_type=1, out_data_type=3))["out_data_type"] == 1


def test_encode_refuses_unknown_fields_and_values_that_do_not_fit() -> None:
    s = uapi.STRUCTS["iommu_destroy"]
    with pytest.raises(ModelError, match="has no field 'nope'"):
        s.encode(nope=1)
    with pytest.raises(ModelError, match="must fit 32 unsigned bits, not -1"):
        s.encode(id=-1)
    with pytest.raises(ModelError, match="needs 8 bytes, not 4"):
        s.decode(bytes(4))


_names = st.sampled_from(sorted(uapi.STRUCTS))


@settings(max_examples=300, deadline=None)
@given(name=_names, data=st.data())
def test_decode_then_encode_gives_back_the_bytes(name: str, data: st.DataObject) -> None:
    s = uapi.STRUCTS[name]
    # Padding bytes are not fields: zero them, then every byte must round-trip.
    raw = bytearray(data.draw(st.binary(min_size=s.size, max_size=s.size)))
    covered = {i for f in s.fields for i in range(f.offset, f.end)}
    for i in range(s.size):
        if i not in covered:
            raw[i] = 0
    assert s.encode(s.decode(raw)) == raw


@settings(max_examples=300, deadline=None)
@given(name=_names, data=st.data())
def test_encode_then_decode_gives_back_the_fields(name: str, data: st.DataObject) -> None:
    s = uapi.STRUCTS[name]
    values = {}
    for f in s.fields:
        if f.alias:
            continue
        bits = f.size * 8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if f.signed else (0, (1 << bits) - 1)
        values[f.name] = data.draw(st.integers(lo, hi))
    got = s.decode(s.encode(values))
    assert {k: v for k, v in got.items() if k in values} == values
