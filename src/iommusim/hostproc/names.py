"""Names of the ioctls a program sends to ``/dev/iommu``, for ``--trace`` and the summary.

iommufd's own numbers come from :mod:`iommusim.sw.iommufd.uapi` and the selftest's ops from
:mod:`iommusim.sw.iommufd.selftest_uapi`; the VFIO type1 numbers the compatibility layer
serves are :mod:`iommusim.sw.iommufd.vfio_uapi`'s.
"""

from __future__ import annotations

import errno as _errno
from typing import Final

from iommusim.sw.iommufd import selftest_uapi, uapi, vfio_uapi

__all__ = ["INT_ARG_IOCTLS", "errno_name", "ioctl_name"]

_VFIO: Final = {
    vfio_uapi.VFIO_GET_API_VERSION: "VFIO_GET_API_VERSION",
    vfio_uapi.VFIO_CHECK_EXTENSION: "VFIO_CHECK_EXTENSION",
    vfio_uapi.VFIO_SET_IOMMU: "VFIO_SET_IOMMU",
    vfio_uapi.VFIO_IOMMU_GET_INFO: "VFIO_IOMMU_GET_INFO",
    vfio_uapi.VFIO_IOMMU_MAP_DMA: "VFIO_IOMMU_MAP_DMA",
    vfio_uapi.VFIO_IOMMU_UNMAP_DMA: "VFIO_IOMMU_UNMAP_DMA",
    vfio_uapi.VFIO_IOMMU_DIRTY_PAGES: "VFIO_IOMMU_DIRTY_PAGES",
}
#: The VFIO ioctls whose argument is a value, not a pointer (``ioctl(fd, req, type)``):
#: the model takes it as 8 little-endian bytes.
INT_ARG_IOCTLS: Final = frozenset(
    (vfio_uapi.VFIO_GET_API_VERSION, vfio_uapi.VFIO_CHECK_EXTENSION, vfio_uapi.VFIO_SET_IOMMU)
)

_NAMES: Final = {
    **{
        v: k
        for k, v in vars(uapi).items()
        if k.startswith("IOMMU_") and isinstance(v, int) and v in uapi.IOCTLS
    },
    **_VFIO,
    selftest_uapi.IOMMU_TEST_CMD: "IOMMU_TEST_CMD",
}
_TEST_OPS: Final = {
    v: k.removeprefix("IOMMU_TEST_OP_")
    for k, v in vars(selftest_uapi).items()
    if k.startswith("IOMMU_TEST_OP_") and isinstance(v, int)
}
_OP: Final = selftest_uapi.TEST_CMD.field("op")


def ioctl_name(request: int, arg: bytes | bytearray = b"") -> str:
    """``IOMMU_IOAS_MAP``, ``IOMMU_TEST_CMD/MD_CHECK_MAP``, or the number in hex."""
    name = _NAMES.get(request, f"ioctl {request:#x}")
    if request == selftest_uapi.IOMMU_TEST_CMD and len(arg) >= _OP.end:
        op = int.from_bytes(arg[_OP.offset : _OP.end], "little")
        name += "/" + _TEST_OPS.get(op, str(op))
    return name


def errno_name(err: int) -> str:
    return _errno.errorcode.get(err, str(err))
