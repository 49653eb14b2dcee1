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

Devices come from the drivers that hand them to user space: :meth:`IommufdFile.bind_device`
(VFIO's cdev bind), ``attach_device``/``replace_device``/``detach_device`` (VFIO's attach),
and the selftest's MOCK_DOMAIN (:mod:`~iommusim.sw.iommufd.selftest`, a CONFIG_IOMMUFD_TEST
kernel: :func:`~iommusim.sw.iommufd.selftest.open_selftest`). The RISC-V IOMMU has no types in
Linux 7.3's uAPI; the model's own (hw_info, nested data, invalidation entries) are in
:mod:`~iommusim.sw.iommufd.uapi_riscv`; its dirty tracking (DIRTY_TRACKING HWPTs) uses the
hardware's D-bit updates (tc.SADE for a first stage, tc.GADE for a nesting parent).

Status of the header's ioctls (Linux 7.3):

=============================  ===================================================
IOMMU_DESTROY                  done (ENOENT, EBUSY; tombstones stay ENOENT)
IOMMU_IOAS_ALLOC               done (EOPNOTSUPP)
IOMMU_IOAS_IOVA_RANGES         done (EOPNOTSUPP, ENOENT, EFAULT, EMSGSIZE)
IOMMU_IOAS_ALLOW_IOVAS         done (EOPNOTSUPP, ENOENT, EFAULT, EINVAL, EADDRINUSE)
IOMMU_IOAS_MAP                 done (EOPNOTSUPP, EOVERFLOW, EINVAL, ENOENT, EEXIST,
                               ENOSPC, EPERM); pins when a domain or an access needs pages
IOMMU_IOAS_MAP_FILE            done over model memfds and dma-bufs (EBADF; EINVAL past the
                               end; ENODEV for a revoked dma-buf)
IOMMU_IOAS_COPY                done (EOPNOTSUPP, EOVERFLOW, EINVAL, ENOENT, EEXIST, EPERM)
IOMMU_IOAS_UNMAP               done (ENOENT, EOVERFLOW, EINVAL; EBUSY for locked areas,
                               EDEADLOCK for an access that does not unpin)
IOMMU_OPTION                   done (EOPNOTSUPP, EPERM, EBUSY, EINVAL, ENOENT, EADDRINUSE)
IOMMU_VFIO_IOAS                done (EOPNOTSUPP, ENODEV, ENOENT)
IOMMU_HWPT_ALLOC               done: paging (NEST_PARENT, DIRTY_TRACKING, FAULT_ID_VALID,
                               PASID), nested on a paging HWPT or a vIOMMU
IOMMU_GET_HW_INFO              done (EOPNOTSUPP, ENOENT, EFAULT)
IOMMU_HWPT_SET_DIRTY_TRACKING  done (EOPNOTSUPP, ENOENT)
IOMMU_HWPT_GET_DIRTY_BITMAP    done (EOPNOTSUPP, ENOENT, EOVERFLOW, EINVAL, EFAULT)
IOMMU_HWPT_INVALIDATE          done (EOPNOTSUPP, EINVAL, ENOENT; entry_num written back)
IOMMU_FAULT_QUEUE_ALLOC        done, with read/write/poll of the fault fd
IOMMU_VIOMMU_ALLOC             done (EOPNOTSUPP, ENOENT, EINVAL), mmap regions
IOMMU_VDEVICE_ALLOC            done (EINVAL, ENOENT, EEXIST), tombstone on unbind
IOMMU_IOAS_CHANGE_PROCESS      done (EOPNOTSUPP, EINVAL for user-memory areas)
IOMMU_VEVENTQ_ALLOC            done (EOPNOTSUPP, EINVAL, ENOENT, EEXIST), read/poll
IOMMU_HW_QUEUE_ALLOC           done (EOPNOTSUPP, EINVAL, EOVERFLOW, ENOENT, EFAULT,
                               ERANGE, EBUSY on unmap of its area)
IOMMU_IOAS_NOIOMMU_GET_PA      EOPNOTSUPP (a kernel without CONFIG_IOMMUFD_NOIOMMU)
IOMMU_TEST_CMD                 done with the mock driver (every op; MOCK_FLAGS_ACCESS_SYZ,
                               syzkaller's IOVA encoding, is EOPNOTSUPP)
VFIO type1 compatibility       done (GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU,
                               IOMMU_GET_INFO, MAP_DMA, UNMAP_DMA; DIRTY_PAGES ENOTTY)
=============================  ===================================================
"""

from __future__ import annotations

from iommusim.sw.iommufd import selftest_uapi, uapi, uapi_riscv, vfio_uapi
from iommusim.sw.iommufd.access import Access, AccessOps
from iommusim.sw.iommufd.api import HwInfo, Iommufd, IovaRanges
from iommusim.sw.iommufd.device import IommufdDevice
from iommusim.sw.iommufd.fault import IommufdFault
from iommusim.sw.iommufd.fds import AnonFile
from iommusim.sw.iommufd.file import IommufdFile, IommufdParams
from iommusim.sw.iommufd.hw_queue import HwQueue
from iommusim.sw.iommufd.hwpt import Hwpt, HwptNested, HwptPaging
from iommusim.sw.iommufd.ioas import Ioas
from iommusim.sw.iommufd.iopt import Area, IoPagetable, IovaRange, PagesSlice, ResvRegion
from iommusim.sw.iommufd.memfd import FdTable, MemFd
from iommusim.sw.iommufd.objects import IommufdObject, ObjectTable, ObjType
from iommusim.sw.iommufd.pages import IoPages
from iommusim.sw.iommufd.selftest import open_selftest
from iommusim.sw.iommufd.user import MmUserMemory, UserMemory
from iommusim.sw.iommufd.veventq import Veventq
from iommusim.sw.iommufd.viommu import Vdevice, Viommu

__all__ = [
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
