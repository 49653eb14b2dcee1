"""The driver operations table the core calls (after Linux ``struct iommu_ops``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device, Fault
    from iommusim.sw.core.domain import Domain
    from iommusim.sw.iopf.queue import PageFault
    from iommusim.sw.mm.mm import Mm

__all__ = ["IommuDriver"]


class IommuDriver(Protocol):
    """What an IOMMU driver gives the core.

    ``probe_device`` raises NoDevice (ENODEV) when the device is not behind this IOMMU or
    cannot be translated; ``domain_alloc_paging`` raises OutOfMemory (ENOMEM) or NoDevice.
    """

    name: str
    identity_domain: Domain
    blocked_domain: Domain
    #: Set by the core at registration: where the driver reports faults it reads.
    on_fault: Callable[[Fault], None] | None
    #: Set by the core: where the driver reports page requests (requester id, request) and
    #: page-request queue overflows.
    on_page_request: Callable[[int, PageFault], None] | None
    on_pq_overflow: Callable[[], None] | None

    def owns(self, dev: Device) -> bool: ...

    def probe_device(self, dev: Device) -> None: ...

    def release_device(self, dev: Device) -> None: ...

    def domain_alloc_paging(self, dev: Device) -> Domain: ...

    def def_domain_type(self, dev: Device) -> int | None: ...

    def domain_alloc_sva(self, dev: Device, mm: Mm) -> Domain:
        """A domain sharing ``mm``'s page table (EOPNOTSUPP when the IOMMU cannot)."""
        ...

    def page_response(self, rid: int, pasid: int | None, grpid: int, code: int) -> None:
        """Answer the device's Page Request Group ``grpid`` (iommu_ops.page_response)."""
        ...
