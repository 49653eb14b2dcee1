"""The contract between the IOMMU core and a driver (after Linux ``struct iommu_ops`` and
``struct iommu_domain_ops``), with the errno each operation may fail with.

Nothing here names an architecture: a driver for any IOMMU implements :class:`IommuDriver`,
its domains subclass :class:`~iommusim.sw.core.domain.Domain` (which answers every operation
it does not override with EOPNOTSUPP, the errno of a missing op) and so satisfy
:class:`DomainOps`, and it reports what it reads from its hardware through the
:class:`Reporter` it is given at registration. Every operation either succeeds or raises an
:class:`~iommusim.errors.ApiError` having changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import ApiError

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device, Fault
    from iommusim.sw.core.domain import Domain
    from iommusim.sw.core.userdata import UserData, UserDataArray
    from iommusim.sw.core.viommu import ViommuCore, ViommuOps
    from iommusim.sw.iopf.queue import PageFault
    from iommusim.sw.mm.mm import Mm
    from iommusim.sw.pgtable.gather import IotlbGather

__all__ = [
    "CAP_CACHE_COHERENCY",
    "CAP_DIRTY_TRACKING",
    "CAP_ENFORCE_CACHE_COHERENCY",
    "CAP_PCI_ATS_SUPPORTED",
    "DomainOps",
    "IommuDriver",
    "Reporter",
]

# enum iommu_cap (include/linux/iommu.h), the questions ``capable`` answers.
CAP_CACHE_COHERENCY: Final = 0
CAP_ENFORCE_CACHE_COHERENCY: Final = 3
CAP_DIRTY_TRACKING: Final = 5
CAP_PCI_ATS_SUPPORTED: Final = 6


class Reporter(Protocol):
    """Where a driver reports events of its IOMMU (``iommu_report_device_fault``); the core
    hands one to :meth:`IommuDriver.registered`. Reporting never fails."""

    def fault(self, fault: Fault) -> None:
        """An unrecoverable DMA fault the driver read from its fault/event queue."""

    def page_request(self, rid: int, fault: PageFault) -> None:
        """A page request of requester ``rid`` (answered later with ``page_response``)."""

    def page_requests_lost(self) -> None:
        """The page-request queue overflowed: partial groups may have lost their last
        request (the IOMMU answered it), so the core drops them."""


class DomainOps(Protocol):
    """A domain's operations (``iommu_domain_ops``).

    ``attach_dev`` and ``set_dev_pasid`` raise InvalidArgument (EINVAL) for a device whose
    IOMMU is not the domain's -- "incompatible", as Linux and iommufd after it answer -- and
    NotSupported (EOPNOTSUPP) for a domain kind that cannot be attached that way;
    ``map`` raises InvalidArgument for a range or protection the format cannot hold, Exists
    (EEXIST) for an IOVA already mapped, OutOfMemory (ENOMEM) when a table page cannot be
    allocated; ``unmap`` raises InvalidArgument when it would split a larger page; the domain
    kinds without a page table raise NotSupported for map, unmap and iova_to_phys.
    """

    type: int
    owner: object
    #: Groups and PASIDs attached to the domain; the core refuses to free it (EBUSY) while
    #: this is not 0.
    users: int
    #: Whether :meth:`set_dev_pasid` is an operation of this domain (``ops->set_dev_pasid``
    #: is not NULL); the core answers EOPNOTSUPP for a PASID attach otherwise.
    supports_pasid: bool

    def attach_dev(self, dev: Device, old: Domain | None) -> None: ...

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None: ...

    def remove_dev_pasid(self, dev: Device, pasid: int) -> None: ...

    def map(self, iova: Iova, pa: PhysAddr, size: int, prot: int) -> None: ...

    def unmap(self, iova: Iova, size: int, gather: IotlbGather) -> int: ...

    def iotlb_sync(self, gather: IotlbGather) -> None: ...

    def flush_iotlb_all(self) -> None: ...

    def iova_to_phys(self, iova: Iova) -> PhysAddr | None: ...

    def free(self) -> None: ...

    # iommufd's extras; the Domain base answers EOPNOTSUPP for each.
    #: ``domain->dirty_ops`` is set: the domain can track dirty IOVAs.
    dirty_ops: bool

    def set_dirty_tracking(self, enabled: bool) -> None: ...

    def read_and_clear_dirty(
        self, iova: int, size: int, no_clear: bool, record: Callable[[int, int], None]
    ) -> None:
        """``read_and_clear_dirty``: call ``record(iova, length)`` for every dirty leaf in
        ``[iova, iova + size)`` and clean it unless ``no_clear``."""

    def cache_invalidate_user(self, array: UserDataArray) -> tuple[int, ApiError | None]:
        """``cache_invalidate_user`` of a nested domain: handle the user's entries in order;
        returns how many were handled and the error that stopped it (None: all)."""


class IommuDriver(Protocol):
    """What an IOMMU driver gives the core (``iommu_ops``).

    ``probe_device`` raises NoDevice (ENODEV) when the device is not behind this IOMMU or
    cannot be translated; ``domain_alloc_paging`` raises OutOfMemory (ENOMEM) or NoDevice;
    ``domain_alloc_sva`` raises NotSupported (EOPNOTSUPP) when the IOMMU cannot share a CPU
    page table and NoDevice for a device without PASID support; ``page_response`` never fails
    (a response to a group that is gone is dropped, as the PCIe spec lets a device do).
    """

    name: str
    identity_domain: Domain
    blocked_domain: Domain

    def registered(self, reporter: Reporter) -> None:
        """The core registered the driver (``iommu_device_register``): from now on it
        reports faults and page requests to ``reporter``."""

    def owns(self, dev: Device) -> bool: ...

    def probe_device(self, dev: Device) -> None: ...

    def release_device(self, dev: Device) -> None: ...

    def domain_alloc_paging(self, dev: Device) -> Domain: ...

    def def_domain_type(self, dev: Device) -> int | None: ...

    def domain_alloc_sva(self, dev: Device, mm: Mm) -> Domain: ...

    def domain_alloc_paging_flags(
        self, dev: Device, flags: int = 0, user_data: UserData | None = None
    ) -> Domain:
        """A paging domain with ``flags`` of ``IOMMU_HWPT_ALLOC_*`` (NEST_PARENT: one other
        domains can nest in, the second stage; DIRTY_TRACKING; PASID) and optional
        driver-specific ``user_data``: NotSupported (EOPNOTSUPP) for a flag or data type the
        IOMMU cannot honour, OutOfMemory when its tags are exhausted."""

    def domain_alloc_nested(
        self, dev: Device, parent: Domain, flags: int, user_data: UserData
    ) -> Domain:
        """A DOMAIN_NESTED domain: a first stage the user describes in ``user_data`` (the
        driver's own struct) inside ``parent``; InvalidArgument (EINVAL) for a parent that is
        no nesting parent of this IOMMU or data the hardware would reject, NotSupported for
        flags or a data type the driver lacks."""

    #: ``ops->user_pasid_table``: the user owns the PASID table, so page faults with a PASID
    #: go to the domain on the RID.
    user_pasid_table: bool

    def capable(self, dev: Device, cap: int) -> bool:
        """``capable``: does the IOMMU have ``cap`` (``CAP_*``) for ``dev``."""

    def hw_info(self, dev: Device, requested_type: int) -> tuple[int, bytes] | None:
        """``hw_info``: the IOMMU's ``IOMMU_HW_INFO_TYPE_*`` (never NONE) and its struct's
        bytes; None for a driver without the op. ``requested_type`` is a type the user asked
        for (DEFAULT: the driver's own); NotSupported for a type it lacks."""

    def get_viommu_size(self, dev: Device, viommu_type: int) -> int:
        """``get_viommu_size``: non-zero when the driver has vIOMMUs of ``viommu_type``
        (iommufd asks before it looks at the nesting parent: EOPNOTSUPP on 0)."""

    def viommu_alloc(
        self,
        dev: Device,
        viommu_type: int,
        parent: Domain,
        user_data: UserData | None,
        core: ViommuCore,
    ) -> ViommuOps:
        """``get_viommu_size`` + ``viommu_init``: a vIOMMU of ``viommu_type`` over the
        nesting parent ``parent``; NotSupported for a type the driver lacks. ``core`` is how
        the vIOMMU reaches iommufd (mmap regions, events, its vDEVICEs)."""

    def page_response(self, rid: int, pasid: int | None, grpid: int, code: int) -> None: ...
