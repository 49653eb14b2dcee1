"""The iommufd selftest's user API of Linux 7.3 (``drivers/iommu/iommufd/iommufd_test.h``)
as data, built with the same :class:`~iommusim.sw.iommufd.uapi.Struct` machinery as
:mod:`~iommusim.sw.iommufd.uapi`.

``struct iommu_test_cmd`` is a header (``size``, ``op``, ``id``, ``__reserved``), an
anonymous union of one struct per test op at offset 16, and ``last``. It is exposed two ways,
with the same field names -- each union member's fields are named ``<member>.<field>``
(``mock_domain.out_stdev_id``, ``dirty.out_nr_dirty``):

- :data:`TEST_CMD`: the whole struct, every member flattened; the first member
  (``add_reserved``) owns its bytes and every other member's fields are ``alias`` fields
  at the same offsets (decoded, and encoded only when no field of the first member is given);
- :data:`TEST_CMD_VIEWS` / :func:`test_cmd_view`: one struct per union member -- the header,
  that member and ``last`` -- for decoding and encoding one op's command without the others.

:data:`TEST_OP_MEMBER` says which member each ``IOMMU_TEST_OP_*`` reads (``iommufd_test``'s
dispatch in ``selftest.c``). Every value is little-endian, as the model's user space is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from iommusim.errors import ModelError

# The header's struct builder is private to uapi (the table there is its only other user);
# one layout rule for both headers beats a copy.
from iommusim.sw.iommufd.uapi import IOMMUFD_CMD_BASE, IOMMUFD_TYPE, Field, Struct, _fields

__all__ = [
    "IOMMU_HWPT_DATA_SELFTEST",
    "IOMMU_HWPT_INVALIDATE_DATA_SELFTEST",
    "IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID",
    "IOMMU_HW_INFO_SELFTEST_REGVAL",
    "IOMMU_HW_INFO_TYPE_SELFTEST",
    "IOMMU_HW_QUEUE_TYPE_SELFTEST",
    "IOMMU_TEST_CMD",
    "IOMMU_TEST_DEV_CACHE_DEFAULT",
    "IOMMU_TEST_HW_QUEUE_MAX",
    "IOMMU_TEST_INVALIDATE_FLAG_ALL",
    "IOMMU_TEST_IOTLB_DEFAULT",
    "IOMMU_TEST_OP_ACCESS_PAGES",
    "IOMMU_TEST_OP_ACCESS_REPLACE_IOAS",
    "IOMMU_TEST_OP_ACCESS_RW",
    "IOMMU_TEST_OP_ADD_RESERVED",
    "IOMMU_TEST_OP_CREATE_ACCESS",
    "IOMMU_TEST_OP_DESTROY_ACCESS_PAGES",
    "IOMMU_TEST_OP_DEV_CHECK_CACHE",
    "IOMMU_TEST_OP_DIRTY",
    "IOMMU_TEST_OP_DMABUF_GET",
    "IOMMU_TEST_OP_DMABUF_REVOKE",
    "IOMMU_TEST_OP_MD_CHECK_IOTLB",
    "IOMMU_TEST_OP_MD_CHECK_MAP",
    "IOMMU_TEST_OP_MD_CHECK_REFS",
    "IOMMU_TEST_OP_MOCK_DOMAIN",
    "IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS",
    "IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE",
    "IOMMU_TEST_OP_PASID_ATTACH",
    "IOMMU_TEST_OP_PASID_CHECK_HWPT",
    "IOMMU_TEST_OP_PASID_DETACH",
    "IOMMU_TEST_OP_PASID_REPLACE",
    "IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT",
    "IOMMU_TEST_OP_TRIGGER_IOPF",
    "IOMMU_TEST_OP_TRIGGER_VEVENT",
    "IOMMU_TEST_PASID_RESERVED",
    "IOMMU_VEVENTQ_TYPE_SELFTEST",
    "IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST",
    "IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID",
    "IOMMU_VIOMMU_TYPE_SELFTEST",
    "MOCK_ACCESS_RW_SLOW_PATH",
    "MOCK_ACCESS_RW_WRITE",
    "MOCK_APERTURE_LAST",
    "MOCK_APERTURE_START",
    "MOCK_DEV_CACHE_ID_MAX",
    "MOCK_DEV_CACHE_NUM",
    "MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES",
    "MOCK_FLAGS_ACCESS_SYZ",
    "MOCK_FLAGS_ACCESS_WRITE",
    "MOCK_FLAGS_DEVICE_NO_DIRTY",
    "MOCK_FLAGS_DEVICE_PASID",
    "MOCK_HUGE_PAGE_SIZE",
    "MOCK_IOMMUPT_DEFAULT",
    "MOCK_IOMMUPT_HUGE",
    "MOCK_NESTED_DOMAIN_IOTLB_ID_MAX",
    "MOCK_NESTED_DOMAIN_IOTLB_NUM",
    "MOCK_PAGE_SIZE",
    "MOCK_PASID_WIDTH",
    "STRUCTS",
    "TEST_CMD",
    "TEST_CMD_VIEWS",
    "TEST_OPS",
    "TEST_OP_MEMBER",
    "test_cmd_view",
]

# ------------------------------------------------------------------ the test ops
IOMMU_TEST_OP_ADD_RESERVED: Final = 1
IOMMU_TEST_OP_MOCK_DOMAIN: Final = 2
IOMMU_TEST_OP_MD_CHECK_MAP: Final = 3
IOMMU_TEST_OP_MD_CHECK_REFS: Final = 4
IOMMU_TEST_OP_CREATE_ACCESS: Final = 5
IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: Final = 6
IOMMU_TEST_OP_ACCESS_PAGES: Final = 7
IOMMU_TEST_OP_ACCESS_RW: Final = 8
IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: Final = 9
IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: Final = 10
IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: Final = 11
IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: Final = 12
IOMMU_TEST_OP_DIRTY: Final = 13
IOMMU_TEST_OP_MD_CHECK_IOTLB: Final = 14
IOMMU_TEST_OP_TRIGGER_IOPF: Final = 15
IOMMU_TEST_OP_DEV_CHECK_CACHE: Final = 16
IOMMU_TEST_OP_TRIGGER_VEVENT: Final = 17
IOMMU_TEST_OP_PASID_ATTACH: Final = 18
IOMMU_TEST_OP_PASID_REPLACE: Final = 19
IOMMU_TEST_OP_PASID_DETACH: Final = 20
IOMMU_TEST_OP_PASID_CHECK_HWPT: Final = 21
IOMMU_TEST_OP_DMABUF_GET: Final = 22
IOMMU_TEST_OP_DMABUF_REVOKE: Final = 23

#: ``IOMMU_TEST_OP_*`` name -> value, in the header's order.
TEST_OPS: Final[Mapping[str, int]] = {
    name.removeprefix("IOMMU_TEST_OP_"): value
    for name, value in dict(globals()).items()
    if name.startswith("IOMMU_TEST_OP_")
}

# ------------------------------------------------------------------ MOCK_* constants
MOCK_IOMMUPT_DEFAULT: Final = 0
MOCK_IOMMUPT_HUGE: Final = 1

# True of MOCK_IOMMUPT_DEFAULT domains.
MOCK_APERTURE_START: Final = 1 << 24
MOCK_APERTURE_LAST: Final = (1 << 31) - 1
MOCK_PAGE_SIZE: Final = 2048
MOCK_HUGE_PAGE_SIZE: Final = 512 * MOCK_PAGE_SIZE

MOCK_FLAGS_ACCESS_WRITE: Final = 1 << 0
MOCK_FLAGS_ACCESS_SYZ: Final = 1 << 16

MOCK_ACCESS_RW_WRITE: Final = 1 << 0
MOCK_ACCESS_RW_SLOW_PATH: Final = 1 << 2

MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: Final = 1 << 0

MOCK_FLAGS_DEVICE_NO_DIRTY: Final = 1 << 0
MOCK_FLAGS_DEVICE_PASID: Final = 1 << 2

MOCK_NESTED_DOMAIN_IOTLB_ID_MAX: Final = 3
MOCK_NESTED_DOMAIN_IOTLB_NUM: Final = 4

MOCK_DEV_CACHE_ID_MAX: Final = 3
MOCK_DEV_CACHE_NUM: Final = 4

#: Reserved for the special PASID replace test (``mock_domain_set_dev_pasid_nop``).
IOMMU_TEST_PASID_RESERVED: Final = 1024

#: Mock device / IOMMU PASID width.
MOCK_PASID_WIDTH: Final = 20

# ------------------------------------------------------------------ types of driver data
IOMMU_HW_INFO_TYPE_SELFTEST: Final = 0xFEEDBEEF
IOMMU_HW_INFO_SELFTEST_REGVAL: Final = 0xDEADBEEF

#: Not equal to any value of ``enum iommu_hwpt_data_type``.
IOMMU_HWPT_DATA_SELFTEST: Final = 0xDEAD
IOMMU_TEST_IOTLB_DEFAULT: Final = 0xBADBEEF
IOMMU_TEST_DEV_CACHE_DEFAULT: Final = 0xBADDAD

IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: Final = 0xDEADBEEF
IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: Final = 0xDADBEEF
IOMMU_TEST_INVALIDATE_FLAG_ALL: Final = 1 << 0

IOMMU_VIOMMU_TYPE_SELFTEST: Final = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: Final = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID: Final = 0xDADBEEF

IOMMU_VEVENTQ_TYPE_SELFTEST: Final = 0xBEEFBEEF

IOMMU_HW_QUEUE_TYPE_SELFTEST: Final = 0xDEADBEEF
IOMMU_TEST_HW_QUEUE_MAX: Final = 2

#: ``_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)``.
IOMMU_TEST_CMD: Final = (IOMMUFD_TYPE << 8) | (IOMMUFD_CMD_BASE + 32)

# ------------------------------------------------------------------ struct iommu_test_cmd
_U32 = "u32"
_U64 = "u64"

_HEADER: Final = (("size", _U32), ("op", _U32), ("id", _U32), ("__reserved", _U32))
_UNION_OFFSET: Final = 16

#: The union's members, in the header's order (the first one owns the bytes in TEST_CMD).
_MEMBERS: Final[tuple[tuple[str, tuple[tuple[str, str], ...]], ...]] = (
    ("add_reserved", (("start", _U64), ("length", _U64))),
    ("mock_domain", (("out_stdev_id", _U32), ("out_hwpt_id", _U32), ("out_idev_id", _U32))),
    (
        "mock_domain_flags",
        (("out_stdev_id", _U32), ("out_hwpt_id", _U32), ("out_idev_id", _U32), ("dev_flags", _U32)),
    ),
    ("mock_domain_replace", (("pt_id", _U32),)),
    ("check_map", (("iova", _U64), ("length", _U64), ("uptr", _U64))),
    ("check_refs", (("length", _U64), ("uptr", _U64), ("refs", _U32))),
    ("create_access", (("out_access_fd", _U32), ("flags", _U32))),
    ("destroy_access_pages", (("access_pages_id", _U32),)),
    (
        "access_pages",
        (
            ("flags", _U32),
            ("out_access_pages_id", _U32),
            ("iova", _U64),
            ("length", _U64),
            ("uptr", _U64),
        ),
    ),
    ("access_rw", (("iova", _U64), ("length", _U64), ("uptr", _U64), ("flags", _U32))),
    ("memory_limit", (("limit", _U32),)),
    ("access_replace_ioas", (("ioas_id", _U32),)),
    (
        "dirty",
        (
            ("flags", _U32),
            ("iova", _U64),
            ("length", _U64),
            ("page_size", _U64),
            ("uptr", _U64),
            ("out_nr_dirty", _U64),
        ),
    ),
    ("check_iotlb", (("id", _U32), ("iotlb", _U32))),
    (
        "trigger_iopf",
        (("dev_id", _U32), ("pasid", _U32), ("grpid", _U32), ("perm", _U32), ("addr", _U64)),
    ),
    ("check_dev_cache", (("id", _U32), ("cache", _U32))),
    ("trigger_vevent", (("dev_id", _U32),)),
    ("pasid_attach", (("pasid", _U32), ("pt_id", _U32))),
    ("pasid_replace", (("pasid", _U32), ("pt_id", _U32))),
    ("pasid_detach", (("pasid", _U32),)),
    ("pasid_check", (("pasid", _U32), ("hwpt_id", _U32))),
    ("dmabuf_get", (("length", _U32), ("open_flags", _U32))),
    ("dmabuf_revoke", (("dmabuf_fd", "s32"), ("revoked", _U32))),
)


def _member_fields(member: str, spec: tuple[tuple[str, str], ...]) -> tuple[tuple[Field, ...], int]:
    """``member``'s fields at the union's offset, named ``member.field``, and its size."""
    fields, size = _fields(*spec)
    placed = tuple(
        Field(f"{member}.{f.name}", _UNION_OFFSET + f.offset, f.size, f.signed) for f in fields
    )
    return placed, size


def _build() -> tuple[Struct, Mapping[str, Struct]]:
    header, _ = _fields(*_HEADER)
    members: dict[str, tuple[tuple[Field, ...], int]] = {}
    for name, spec in _MEMBERS:
        members[name] = _member_fields(name, spec)
    union_size = max(size for _, size in members.values())
    last_off = _UNION_OFFSET + ((union_size + 7) & ~7)  # the union aligns to its u64s
    last = Field("last", last_off, 4)
    size = (last.end + 7) & ~7
    min_size = last.end  # IOCTL_OP(IOMMU_TEST_CMD, ..., struct iommu_test_cmd, last)
    views = {
        name: Struct(f"iommu_test_cmd.{name}", size, (*header, *fs, last), IOMMU_TEST_CMD, min_size)
        for name, (fs, _) in members.items()
    }
    flat: list[Field] = list(header)
    for i, (fs, _) in enumerate(members.values()):
        flat.extend(
            f if i == 0 else Field(f.name, f.offset, f.size, f.signed, alias=True) for f in fs
        )
    flat.append(last)
    return Struct("iommu_test_cmd", size, tuple(flat), IOMMU_TEST_CMD, min_size), views


_BUILT: Final = _build()
#: ``struct iommu_test_cmd``, every union member flattened (see the module docstring).
TEST_CMD: Final[Struct] = _BUILT[0]
#: union member name -> the header, that member and ``last``.
TEST_CMD_VIEWS: Final[Mapping[str, Struct]] = _BUILT[1]

#: ``IOMMU_TEST_OP_*`` -> the union member ``iommufd_test`` reads for it.
TEST_OP_MEMBER: Final[Mapping[int, str]] = {
    IOMMU_TEST_OP_ADD_RESERVED: "add_reserved",
    IOMMU_TEST_OP_MOCK_DOMAIN: "mock_domain",
    IOMMU_TEST_OP_MD_CHECK_MAP: "check_map",
    IOMMU_TEST_OP_MD_CHECK_REFS: "check_refs",
    IOMMU_TEST_OP_CREATE_ACCESS: "create_access",
    IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: "destroy_access_pages",
    IOMMU_TEST_OP_ACCESS_PAGES: "access_pages",
    IOMMU_TEST_OP_ACCESS_RW: "access_rw",
    IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: "memory_limit",
    IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: "mock_domain_replace",
    IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: "access_replace_ioas",
    IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: "mock_domain_flags",
    IOMMU_TEST_OP_DIRTY: "dirty",
    IOMMU_TEST_OP_MD_CHECK_IOTLB: "check_iotlb",
    IOMMU_TEST_OP_TRIGGER_IOPF: "trigger_iopf",
    IOMMU_TEST_OP_DEV_CHECK_CACHE: "check_dev_cache",
    IOMMU_TEST_OP_TRIGGER_VEVENT: "trigger_vevent",
    # PASID_REPLACE reads pasid_attach in iommufd_test_pasid_replace (same layout).
    IOMMU_TEST_OP_PASID_ATTACH: "pasid_attach",
    IOMMU_TEST_OP_PASID_REPLACE: "pasid_attach",
    IOMMU_TEST_OP_PASID_DETACH: "pasid_detach",
    IOMMU_TEST_OP_PASID_CHECK_HWPT: "pasid_check",
    IOMMU_TEST_OP_DMABUF_GET: "dmabuf_get",
    IOMMU_TEST_OP_DMABUF_REVOKE: "dmabuf_revoke",
}


def test_cmd_view(op: int) -> Struct:
    """The view of ``struct iommu_test_cmd`` that test op ``op`` reads and writes; an op
    the header does not define is a :class:`ModelError` (``iommufd_test`` answers it with
    EOPNOTSUPP before reading any member)."""
    member = TEST_OP_MEMBER.get(op)
    if member is None:
        raise ModelError(f"no IOMMU_TEST_OP {op}")
    return TEST_CMD_VIEWS[member]


# ------------------------------------------------------------------ the drivers' structs
def _s(name: str, *spec: tuple[str, str]) -> Struct:
    fields, size = _fields(*spec)
    return Struct(name, size, fields)


#: The selftest's driver structs, by C name (hw_info, HWPT, invalidation, vIOMMU, vEVENT).
STRUCTS: Final[Mapping[str, Struct]] = {
    s.name: s
    for s in (
        _s("iommu_test_hw_info", ("flags", _U32), ("test_reg", _U32)),
        _s("iommu_hwpt_selftest", ("iotlb", _U32), ("pagetable_type", _U32)),
        _s("iommu_hwpt_invalidate_selftest", ("flags", _U32), ("iotlb_id", _U32)),
        _s(
            "iommu_viommu_selftest",
            ("in_data", _U32),
            ("out_data", _U32),
            ("out_mmap_offset", _U64),
            ("out_mmap_length", _U64),
        ),
        _s(
            "iommu_viommu_invalidate_selftest",
            ("flags", _U32),
            ("vdev_id", _U32),
            ("cache_id", _U32),
        ),
        _s("iommu_viommu_event_selftest", ("virt_id", _U32)),
    )
}
