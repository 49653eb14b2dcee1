"""The public surface of iommusim.sw.iommufd (STYLE: re-exported from the package and
pinned by a test)."""

from __future__ import annotations

from iommusim.sw import iommufd


def test_public_names() -> None:
    assert sorted(iommufd.__all__) == [
        "Access",
        "AccessOps",
        "AnonFile",
        "Area",
        "FdTable",
        "HwInfo",
        "HwQueue",
        "Hwpt",
        "HwptNested",
        "HwptPaging",
        "IoPages",
        "IoPagetable",
        "Ioas",
        "Iommufd",
        "IommufdDevice",
        "IommufdFault",
        "IommufdFile",
        "IommufdObject",
        "IommufdParams",
        "IovaRange",
        "IovaRanges",
        "MemFd",
        "MmUserMemory",
        "ObjType",
        "ObjectTable",
        "PagesSlice",
        "ResvRegion",
        "UserMemory",
        "Vdevice",
        "Veventq",
        "Viommu",
        "open_selftest",
        "selftest_uapi",
        "uapi",
        "uapi_riscv",
        "vfio_uapi",
    ]
    for name in iommufd.__all__:
        assert getattr(iommufd, name) is not None
