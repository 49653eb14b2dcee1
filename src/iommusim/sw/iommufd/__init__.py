"""iommufd after Linux 7.3 ``drivers/iommu/iommufd``.

- :mod:`~iommusim.sw.iommufd.uapi`: ``include/uapi/linux/iommufd.h`` as data.
- :class:`IommufdFile`: ``/dev/iommu``, ``ioctl(request, arg)`` framed as the kernel frames it.
- :class:`Iommufd`: the same ioctls as Python methods.
- :class:`ObjectTable`, :class:`Ioas`, :class:`IoPagetable`, :class:`IoPages`: the object
  model underneath; :class:`UserMemory` / :class:`MmUserMemory`: user pointers.
"""

from __future__ import annotations

from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.api import Iommufd, IovaRanges
from iommusim.sw.iommufd.file import IommufdFile, IommufdParams
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.iopt import Area, IoPagetable, IovaRange, PagesSlice
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType
from iommusim.sw.iommufd.pages import IoPages
from iommusim.sw.iommufd.user import MmUserMemory, UserMemory

__all__ = [
    "Area",
    "IoPages",
    "IoPagetable",
    "Ioas",
    "Iommufd",
    "IommufdFile",
    "IommufdObject",
    "IommufdParams",
    "IovaRange",
    "IovaRanges",
    "MmUserMemory",
    "ObjType",
    "ObjectTable",
    "PagesSlice",
    "UserMemory",
    "uapi",
]
