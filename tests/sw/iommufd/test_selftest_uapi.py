"""The selftest uAPI table against the real Linux 7.3 header.

The golden literals below were printed once by a C program compiled with gcc against
``drivers/iommu/iommufd/iommufd_test.h`` (and ``include/uapi/linux/iommufd.h``) of Linux 7.3:
``sizeof``, ``offsetof``, field sizes and signedness, the constants and the ioctl number. The
test does not need the kernel sources. Union members are named ``member.field`` as the C
expression ``cmd.member.field`` names them.
"""

from __future__ import annotations

import pytest

from iommusim.errors import ModelError
from iommusim.sw.iommufd import selftest_uapi as su
from iommusim.sw.iommufd import uapi

#: sizeof(struct X), printed by gcc.
GOLDEN_SIZES: dict[str, int] = {
    "iommu_test_cmd": 72,
    "iommu_test_hw_info": 8,
    "iommu_hwpt_selftest": 8,
    "iommu_hwpt_invalidate_selftest": 8,
    "iommu_viommu_selftest": 24,
    "iommu_viommu_invalidate_selftest": 12,
    "iommu_viommu_event_selftest": 4,
}

#: (struct, field, offsetof, sizeof, is_signed) of every member of struct iommu_test_cmd.
GOLDEN_CMD_FIELDS: list[tuple[str, str, int, int, bool]] = [
    ("iommu_test_cmd", "size", 0, 4, False),
    ("iommu_test_cmd", "op", 4, 4, False),
    ("iommu_test_cmd", "id", 8, 4, False),
    ("iommu_test_cmd", "__reserved", 12, 4, False),
    ("iommu_test_cmd", "add_reserved.start", 16, 8, False),
    ("iommu_test_cmd", "add_reserved.length", 24, 8, False),
    ("iommu_test_cmd", "mock_domain.out_stdev_id", 16, 4, False),
    ("iommu_test_cmd", "mock_domain.out_hwpt_id", 20, 4, False),
    ("iommu_test_cmd", "mock_domain.out_idev_id", 24, 4, False),
    ("iommu_test_cmd", "mock_domain_flags.out_stdev_id", 16, 4, False),
    ("iommu_test_cmd", "mock_domain_flags.out_hwpt_id", 20, 4, False),
    ("iommu_test_cmd", "mock_domain_flags.out_idev_id", 24, 4, False),
    ("iommu_test_cmd", "mock_domain_flags.dev_flags", 28, 4, False),
    ("iommu_test_cmd", "mock_domain_replace.pt_id", 16, 4, False),
    ("iommu_test_cmd", "check_map.iova", 16, 8, False),
    ("iommu_test_cmd", "check_map.length", 24, 8, False),
    ("iommu_test_cmd", "check_map.uptr", 32, 8, False),
    ("iommu_test_cmd", "check_refs.length", 16, 8, False),
    ("iommu_test_cmd", "check_refs.uptr", 24, 8, False),
    ("iommu_test_cmd", "check_refs.refs", 32, 4, False),
    ("iommu_test_cmd", "create_access.out_access_fd", 16, 4, False),
    ("iommu_test_cmd", "create_access.flags", 20, 4, False),
    ("iommu_test_cmd", "destroy_access_pages.access_pages_id", 16, 4, False),
    ("iommu_test_cmd", "access_pages.flags", 16, 4, False),
    ("iommu_test_cmd", "access_pages.out_access_pages_id", 20, 4, False),
    ("iommu_test_cmd", "access_pages.iova", 24, 8, False),
    ("iommu_test_cmd", "access_pages.length", 32, 8, False),
    ("iommu_test_cmd", "access_pages.uptr", 40, 8, False),
    ("iommu_test_cmd", "access_rw.iova", 16, 8, False),
    ("iommu_test_cmd", "access_rw.length", 24, 8, False),
    ("iommu_test_cmd", "access_rw.uptr", 32, 8, False),
    ("iommu_test_cmd", "access_rw.flags", 40, 4, False),
    ("iommu_test_cmd", "memory_limit.limit", 16, 4, False),
    ("iommu_test_cmd", "access_replace_ioas.ioas_id", 16, 4, False),
    ("iommu_test_cmd", "dirty.flags", 16, 4, False),
    ("iommu_test_cmd", "dirty.iova", 24, 8, False),
    ("iommu_test_cmd", "dirty.length", 32, 8, False),
    ("iommu_test_cmd", "dirty.page_size", 40, 8, False),
    ("iommu_test_cmd", "dirty.uptr", 48, 8, False),
    ("iommu_test_cmd", "dirty.out_nr_dirty", 56, 8, False),
    ("iommu_test_cmd", "check_iotlb.id", 16, 4, False),
    ("iommu_test_cmd", "check_iotlb.iotlb", 20, 4, False),
    ("iommu_test_cmd", "trigger_iopf.dev_id", 16, 4, False),
    ("iommu_test_cmd", "trigger_iopf.pasid", 20, 4, False),
    ("iommu_test_cmd", "trigger_iopf.grpid", 24, 4, False),
    ("iommu_test_cmd", "trigger_iopf.perm", 28, 4, False),
    ("iommu_test_cmd", "trigger_iopf.addr", 32, 8, False),
    ("iommu_test_cmd", "check_dev_cache.id", 16, 4, False),
    ("iommu_test_cmd", "check_dev_cache.cache", 20, 4, False),
    ("iommu_test_cmd", "trigger_vevent.dev_id", 16, 4, False),
    ("iommu_test_cmd", "pasid_attach.pasid", 16, 4, False),
    ("iommu_test_cmd", "pasid_attach.pt_id", 20, 4, False),
    ("iommu_test_cmd", "pasid_replace.pasid", 16, 4, False),
    ("iommu_test_cmd", "pasid_replace.pt_id", 20, 4, False),
    ("iommu_test_cmd", "pasid_detach.pasid", 16, 4, False),
    ("iommu_test_cmd", "pasid_check.pasid", 16, 4, False),
    ("iommu_test_cmd", "pasid_check.hwpt_id", 20, 4, False),
    ("iommu_test_cmd", "dmabuf_get.length", 16, 4, False),
    ("iommu_test_cmd", "dmabuf_get.open_flags", 20, 4, False),
    ("iommu_test_cmd", "dmabuf_revoke.dmabuf_fd", 16, 4, True),
    ("iommu_test_cmd", "dmabuf_revoke.revoked", 20, 4, False),
    ("iommu_test_cmd", "last", 64, 4, False),
]

#: The same for the driver structs.
GOLDEN_FIELDS: list[tuple[str, str, int, int, bool]] = [
    ("iommu_test_hw_info", "flags", 0, 4, False),
    ("iommu_test_hw_info", "test_reg", 4, 4, False),
    ("iommu_hwpt_selftest", "iotlb", 0, 4, False),
    ("iommu_hwpt_selftest", "pagetable_type", 4, 4, False),
    ("iommu_hwpt_invalidate_selftest", "flags", 0, 4, False),
    ("iommu_hwpt_invalidate_selftest", "iotlb_id", 4, 4, False),
    ("iommu_viommu_selftest", "in_data", 0, 4, False),
    ("iommu_viommu_selftest", "out_data", 4, 4, False),
    ("iommu_viommu_selftest", "out_mmap_offset", 8, 8, False),
    ("iommu_viommu_selftest", "out_mmap_length", 16, 8, False),
    ("iommu_viommu_invalidate_selftest", "flags", 0, 4, False),
    ("iommu_viommu_invalidate_selftest", "vdev_id", 4, 4, False),
    ("iommu_viommu_invalidate_selftest", "cache_id", 8, 4, False),
    ("iommu_viommu_event_selftest", "virt_id", 0, 4, False),
]

#: Every constant of the header (``IOMMU_TEST_CMD`` included), printed by gcc.
GOLDEN_CONSTS: dict[str, int] = {
    "IOMMU_TEST_OP_ADD_RESERVED": 0x1,
    "IOMMU_TEST_OP_MOCK_DOMAIN": 0x2,
    "IOMMU_TEST_OP_MD_CHECK_MAP": 0x3,
    "IOMMU_TEST_OP_MD_CHECK_REFS": 0x4,
    "IOMMU_TEST_OP_CREATE_ACCESS": 0x5,
    "IOMMU_TEST_OP_DESTROY_ACCESS_PAGES": 0x6,
    "IOMMU_TEST_OP_ACCESS_PAGES": 0x7,
    "IOMMU_TEST_OP_ACCESS_RW": 0x8,
    "IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT": 0x9,
    "IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE": 0xA,
    "IOMMU_TEST_OP_ACCESS_REPLACE_IOAS": 0xB,
    "IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS": 0xC,
    "IOMMU_TEST_OP_DIRTY": 0xD,
    "IOMMU_TEST_OP_MD_CHECK_IOTLB": 0xE,
    "IOMMU_TEST_OP_TRIGGER_IOPF": 0xF,
    "IOMMU_TEST_OP_DEV_CHECK_CACHE": 0x10,
    "IOMMU_TEST_OP_TRIGGER_VEVENT": 0x11,
    "IOMMU_TEST_OP_PASID_ATTACH": 0x12,
    "IOMMU_TEST_OP_PASID_REPLACE": 0x13,
    "IOMMU_TEST_OP_PASID_DETACH": 0x14,
    "IOMMU_TEST_OP_PASID_CHECK_HWPT": 0x15,
    "IOMMU_TEST_OP_DMABUF_GET": 0x16,
    "IOMMU_TEST_OP_DMABUF_REVOKE": 0x17,
    "MOCK_IOMMUPT_DEFAULT": 0,
    "MOCK_IOMMUPT_HUGE": 0x1,
    "MOCK_APERTURE_START": 0x1000000,
    "MOCK_APERTURE_LAST": 0x7FFFFFFF,
    "MOCK_PAGE_SIZE": 0x800,
    "MOCK_HUGE_PAGE_SIZE": 0x100000,
    "MOCK_FLAGS_ACCESS_WRITE": 0x1,
    "MOCK_FLAGS_ACCESS_SYZ": 0x10000,
    "MOCK_ACCESS_RW_WRITE": 0x1,
    "MOCK_ACCESS_RW_SLOW_PATH": 0x4,
    "MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES": 0x1,
    "MOCK_FLAGS_DEVICE_NO_DIRTY": 0x1,
    "MOCK_FLAGS_DEVICE_PASID": 0x4,
    "MOCK_NESTED_DOMAIN_IOTLB_ID_MAX": 0x3,
    "MOCK_NESTED_DOMAIN_IOTLB_NUM": 0x4,
    "MOCK_DEV_CACHE_ID_MAX": 0x3,
    "MOCK_DEV_CACHE_NUM": 0x4,
    "IOMMU_TEST_PASID_RESERVED": 0x400,
    "MOCK_PASID_WIDTH": 0x14,
    "IOMMU_HW_INFO_TYPE_SELFTEST": 0xFEEDBEEF,
    "IOMMU_HW_INFO_SELFTEST_REGVAL": 0xDEADBEEF,
    "IOMMU_HWPT_DATA_SELFTEST": 0xDEAD,
    "IOMMU_TEST_IOTLB_DEFAULT": 0xBADBEEF,
    "IOMMU_TEST_DEV_CACHE_DEFAULT": 0xBADDAD,
    "IOMMU_HWPT_INVALIDATE_DATA_SELFTEST": 0xDEADBEEF,
    "IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID": 0xDADBEEF,
    "IOMMU_TEST_INVALIDATE_FLAG_ALL": 0x1,
    "IOMMU_VIOMMU_TYPE_SELFTEST": 0xDEADBEEF,
    "IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST": 0xDEADBEEF,
    "IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID": 0xDADBEEF,
    "IOMMU_VEVENTQ_TYPE_SELFTEST": 0xBEEFBEEF,
    "IOMMU_HW_QUEUE_TYPE_SELFTEST": 0xDEADBEEF,
    "IOMMU_TEST_HW_QUEUE_MAX": 0x2,
    "IOMMU_TEST_CMD": 0x3BA0,
}

#: offsetofend(struct iommu_test_cmd, last): main.c's IOCTL_OP(IOMMU_TEST_CMD, ..., last).
GOLDEN_TEST_CMD_MIN_SIZE = 68


def test_every_constant_matches_the_header() -> None:
    for name, value in GOLDEN_CONSTS.items():
        assert getattr(su, name) == value, name


def test_test_ops_lists_every_op_of_the_header_in_order() -> None:
    golden = {
        k.removeprefix("IOMMU_TEST_OP_"): v
        for k, v in GOLDEN_CONSTS.items()
        if k.startswith("IOMMU_TEST_OP_")
    }
    assert dict(su.TEST_OPS) == golden
    assert list(su.TEST_OPS.values()) == sorted(golden.values())


def test_the_ioctl_number_is_io_of_iommufd_type_and_cmd_base_plus_32() -> None:
    assert GOLDEN_CONSTS["IOMMU_TEST_CMD"] == su.IOMMU_TEST_CMD
    assert uapi.ioctl_nr(su.IOMMU_TEST_CMD) == 0xA0


def test_struct_sizes_match_gcc() -> None:
    assert su.TEST_CMD.size == GOLDEN_SIZES["iommu_test_cmd"]
    for view in su.TEST_CMD_VIEWS.values():
        assert view.size == GOLDEN_SIZES["iommu_test_cmd"]
    for name, size in GOLDEN_SIZES.items():
        if name != "iommu_test_cmd":
            assert su.STRUCTS[name].size == size, name
    assert set(su.STRUCTS) == set(GOLDEN_SIZES) - {"iommu_test_cmd"}


def test_driver_struct_fields_match_gcc() -> None:
    got = [
        (s.name, f.name, f.offset, f.size, f.signed) for s in su.STRUCTS.values() for f in s.fields
    ]
    assert sorted(got) == sorted(GOLDEN_FIELDS)


def test_the_flat_test_cmd_has_every_member_field_at_its_offset() -> None:
    got = [("iommu_test_cmd", f.name, f.offset, f.size, f.signed) for f in su.TEST_CMD.fields]
    assert sorted(got) == sorted(GOLDEN_CMD_FIELDS)


def test_only_the_first_union_member_owns_its_bytes_in_the_flat_struct() -> None:
    primary = [f.name for f in su.TEST_CMD.fields if not f.alias]
    assert primary == ["size", "op", "id", "__reserved", "add_reserved.start",
                       "add_reserved.length", "last"]  # fmt: skip


def test_each_view_is_the_header_one_member_and_last() -> None:
    golden = {f: (off, size, signed) for _, f, off, size, signed in GOLDEN_CMD_FIELDS}
    header = ["size", "op", "id", "__reserved"]
    for member, view in su.TEST_CMD_VIEWS.items():
        names = [f.name for f in view.fields]
        expected = [f for f in golden if f.startswith(member + ".")]
        assert names == [*header, *expected, "last"], member
        for f in view.fields:
            assert (f.offset, f.size, f.signed) == golden[f.name]
            assert not f.alias
        assert view.ioctl == su.IOMMU_TEST_CMD
        assert view.min_size == GOLDEN_TEST_CMD_MIN_SIZE
    assert su.TEST_CMD.min_size == GOLDEN_TEST_CMD_MIN_SIZE


def test_every_op_has_the_member_iommufd_test_reads() -> None:
    """selftest.c iommufd_test: PASID_REPLACE reads pasid_attach."""
    assert set(su.TEST_OP_MEMBER) == set(su.TEST_OPS.values())
    assert su.test_cmd_view(su.IOMMU_TEST_OP_PASID_REPLACE).name == "iommu_test_cmd.pasid_attach"
    assert (
        su.test_cmd_view(su.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS)
        is su.TEST_CMD_VIEWS["mock_domain_flags"]
    )
    with pytest.raises(ModelError, match="no IOMMU_TEST_OP 99"):
        su.test_cmd_view(99)


def test_a_view_round_trips_one_op_command() -> None:
    view = su.test_cmd_view(su.IOMMU_TEST_OP_DIRTY)
    raw = view.encode(
        {"size": 72, "op": su.IOMMU_TEST_OP_DIRTY, "id": 5, "dirty.iova": 1 << 24,
         "dirty.length": 0x8000, "dirty.page_size": 0x800, "dirty.uptr": 0x1000}
    )  # fmt: skip
    assert len(raw) == 72
    assert raw[24:32] == (1 << 24).to_bytes(8, "little")
    got = view.decode(raw)
    assert got["dirty.page_size"] == 0x800 and got["dirty.out_nr_dirty"] == 0
    # The flat struct decodes the same bytes through every member at once.
    flat = su.TEST_CMD.decode(raw)
    assert flat["dirty.iova"] == 1 << 24
    assert flat["check_map.length"] == 1 << 24  # the same eight bytes, another member


def test_the_signed_dmabuf_fd_decodes_negative() -> None:
    view = su.test_cmd_view(su.IOMMU_TEST_OP_DMABUF_REVOKE)
    raw = view.encode({"dmabuf_revoke.dmabuf_fd": -1})
    assert raw[16:20] == b"\xff\xff\xff\xff"
    assert view.decode(raw)["dmabuf_revoke.dmabuf_fd"] == -1


def test_alias_fields_encode_when_the_first_member_is_not_given() -> None:
    raw = su.TEST_CMD.encode({"mock_domain.out_hwpt_id": 7})
    assert raw[20:24] == (7).to_bytes(4, "little")
    raw = su.TEST_CMD.encode({"add_reserved.start": 1, "mock_domain.out_stdev_id": 9})
    assert raw[16:24] == (1).to_bytes(8, "little")  # the first member wins its bytes
