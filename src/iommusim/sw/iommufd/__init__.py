"""iommufd after Linux 7.3 ``drivers/iommu/iommufd``.

- :mod:`~iommusim.sw.iommufd.uapi`: ``include/uapi/linux/iommufd.h`` as data.
- :class:`IommufdFile`: ``/dev/iommu``, ``ioctl(request, arg)`` framed as the kernel frames it.
- :class:`Iommufd`: the same ioctls as Python methods.
- :class:`ObjectTable`, :class:`Ioas`, :class:`IoPagetable`, :class:`IoPages`: the object
  model underneath; :class:`UserMemory` / :class:`MmUserMemory`: user pointers.
- :class:`IoPagetable` holds the domains of the HWPT_PAGINGs on an IOAS
  (``add_domain``/``remove_domain``), device reserved regions and accesses;
  :class:`Access` (:mod:`~iommusim.sw.iommufd.access`): in-kernel users of an IOAS;
  :mod:`~iommusim.sw.iommufd.dirty`: dirty tracking over an IOAS; :class:`MemFd` /
  :class:`FdTable` (:mod:`~iommusim.sw.iommufd.memfd`): files for IOAS_MAP_FILE.

Status of the header's ioctls:

=============================  ===================================================
IOMMU_DESTROY                  done (ENOENT, EBUSY)
IOMMU_IOAS_ALLOC               done (EOPNOTSUPP)
IOMMU_IOAS_IOVA_RANGES         done (EOPNOTSUPP, ENOENT, EFAULT, EMSGSIZE)
IOMMU_IOAS_ALLOW_IOVAS         done (EOPNOTSUPP, ENOENT, EFAULT, EINVAL, EADDRINUSE)
IOMMU_IOAS_MAP                 done (EOPNOTSUPP, EOVERFLOW, EINVAL, ENOENT, EEXIST,
                               ENOSPC); pins when a domain or an access needs the pages
IOMMU_IOAS_MAP_FILE            done (the same, EBADF; EINVAL past the file's end on pin)
IOMMU_IOAS_COPY                done (EOPNOTSUPP, EOVERFLOW, EINVAL, ENOENT, EEXIST, EPERM)
IOMMU_IOAS_UNMAP               done (ENOENT, EOVERFLOW, EINVAL; EBUSY for locked areas,
                               EDEADLOCK for an access that does not unpin)
IOMMU_OPTION                   done (EOPNOTSUPP, EPERM, EBUSY, EINVAL, ENOENT, EADDRINUSE)
IOMMU_VFIO_IOAS                done (EOPNOTSUPP, ENODEV, ENOENT)
IOMMU_IOAS_CHANGE_PROCESS      done (EOPNOTSUPP, EINVAL for user-memory areas)
IOMMU_IOAS_NOIOMMU_GET_PA      EOPNOTSUPP (a kernel without CONFIG_IOMMUFD_NOIOMMU)
HWPT_*,                        ENOTTY: not modelled yet
GET_HW_INFO, FAULT_QUEUE_ALLOC,
VIOMMU/VDEVICE/VEVENTQ/HW_QUEUE
VFIO type1 compat, TEST_CMD    ENOTTY: not modelled yet
=============================  ===================================================
"""

from __future__ import annotations

from iommusim.sw.iommufd import uapi
from iommusim.sw.iommufd.access import Access, AccessOps
from iommusim.sw.iommufd.api import Iommufd, IovaRanges
from iommusim.sw.iommufd.file import IommufdFile, IommufdParams
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.iopt import Area, IoPagetable, IovaRange, PagesSlice, ResvRegion
from iommusim.sw.iommufd.memfd import FdTable, MemFd
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType
from iommusim.sw.iommufd.pages import IoPages
from iommusim.sw.iommufd.user import MmUserMemory, UserMemory

__all__ = [
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
