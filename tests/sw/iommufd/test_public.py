"""The public surface of iommusim.sw.iommufd (STYLE: re-exported from the package and
pinned by a test)."""

from __future__ import annotations

from iommusim.sw import iommufd


def test_public_names() -> None:
    assert sorted(iommufd.__all__) == [
        "Access",
        "AccessOps",
        "Area",
        "FdTable",
        "IoPages",
        "IoPagetable",
        "Ioas",
        "Iommufd",
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
        "uapi",
    ]
    for name in iommufd.__all__:
        assert getattr(iommufd, name) is not None
