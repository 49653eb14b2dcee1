"""Domains: what a device's DMA is translated by (after Linux ``include/linux/iommu.h``).

A driver subclasses :class:`Domain` for each kind it provides and overrides the operations its
kind supports; the defaults answer EOPNOTSUPP, the errno the kernel gives for a missing op.
:class:`~iommusim.sw.core.ops.DomainOps` is the contract, with the errnos of each operation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import ApiError, InvalidArgument, NotSupported

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device
    from iommusim.sw.core.dma import DmaCookie
    from iommusim.sw.core.userdata import UserDataArray
    from iommusim.sw.iopf.queue import IopfGroup
    from iommusim.sw.pgtable.gather import IotlbGather
    from iommusim.sw.pgtable.radix import RadixPageTable

__all__ = [
    "DOMAIN_BLOCKED",
    "DOMAIN_DMA",
    "DOMAIN_DMA_FQ",
    "DOMAIN_IDENTITY",
    "DOMAIN_NAMES",
    "DOMAIN_NESTED",
    "DOMAIN_SVA",
    "DOMAIN_UNMANAGED",
    "Domain",
    "RadixDomain",
]

# Feature bits and types (include/linux/iommu.h).
_PAGING: Final = 1 << 0
_DMA_API: Final = 1 << 1
_PT: Final = 1 << 2
_DMA_FQ: Final = 1 << 3
_SVA: Final = 1 << 4
_NESTED: Final = 1 << 6

DOMAIN_BLOCKED: Final = 0
DOMAIN_IDENTITY: Final = _PT
DOMAIN_UNMANAGED: Final = _PAGING
DOMAIN_DMA: Final = _PAGING | _DMA_API
DOMAIN_DMA_FQ: Final = _PAGING | _DMA_API | _DMA_FQ
DOMAIN_SVA: Final = _SVA
#: A user (a VMM through iommufd) owns the first stage; it nests inside a paging domain that
#: the kernel owns (the nesting parent: the G-stage or stage 2).
DOMAIN_NESTED: Final = _NESTED

DOMAIN_NAMES: Final = {
    DOMAIN_BLOCKED: "blocked",
    DOMAIN_IDENTITY: "identity",
    DOMAIN_UNMANAGED: "unmanaged",
    DOMAIN_DMA: "dma",
    DOMAIN_DMA_FQ: "dma-fq",
    DOMAIN_SVA: "sva",
    DOMAIN_NESTED: "nested",
}


class Domain:
    """A translation context devices attach to."""

    #: Whether :meth:`set_dev_pasid` is an operation of this kind (``ops->set_dev_pasid``);
    #: a subclass that implements it says so.
    supports_pasid: bool = False
    #: ``domain->dirty_ops`` is set (:meth:`set_dirty_tracking`, :meth:`read_and_clear_dirty`).
    dirty_ops: bool = False

    def __init__(
        self,
        domain_type: int,
        owner: object,
        pgsize_bitmap: int = 0,
        aperture: tuple[int, int] = (0, 0),
    ) -> None:
        self.type = domain_type
        self.owner = owner
        self.pgsize_bitmap = pgsize_bitmap
        self.aperture_start, self.aperture_end = aperture
        #: Exclusive top of the physical addresses a mapping may target (the page-table
        #: format's output-address width); the core refuses a map beyond it up front.
        self.pa_limit = 1 << 64
        #: Set by the core once the domain is freed: every later use is refused (ENOENT).
        self.freed = False
        #: Groups and PASIDs attached (kept by the core), and domains nested in this one:
        #: freeing is EBUSY while not 0.
        self.users = 0
        self.cookie: DmaCookie | None = None
        #: Takes the page-request groups of faults on this domain and answers each once
        #: (``iommu_domain.iopf_handler``); None: page requests are answered "invalid".
        self.iopf_handler: Callable[[IopfGroup], None] | None = None

    def check_pa_range(self, pa: int, size: int) -> None:
        """EINVAL unless ``[pa, pa + size)`` lies below :attr:`pa_limit` (the output-address
        width of the domain's leaves): checked before anything is allocated or written."""
        if pa < 0 or pa + size > self.pa_limit:
            raise InvalidArgument(
                f"physical range {pa:#x}+{size:#x} must lie below {self.pa_limit:#x}"
            )

    @property
    def is_paging(self) -> bool:
        return bool(self.type & _PAGING)

    @property
    def name(self) -> str:
        return DOMAIN_NAMES.get(self.type, f"type {self.type:#x}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ------------------------------------------------------------------ ops
    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        """Make ``dev`` translate through this domain (``old`` is what it leaves)."""
        raise NotSupported(f"{self.name} domain cannot be attached")

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None:
        """Make ``dev``'s requests tagged with ``pasid`` translate through this domain."""
        raise NotSupported(f"{self.name} domain cannot be attached to a PASID")

    def remove_dev_pasid(self, dev: Device, pasid: int) -> None:
        """Stop translating ``dev``'s ``pasid`` through this domain (it then blocks)."""
        raise NotSupported(f"{self.name} domain cannot be detached from a PASID")

    def map(self, iova: Iova, pa: PhysAddr, size: int, prot: int) -> None:
        raise NotSupported(f"{self.name} domain has no map")

    def unmap(self, iova: Iova, size: int, gather: IotlbGather) -> int:
        raise NotSupported(f"{self.name} domain has no unmap")

    def iotlb_sync(self, gather: IotlbGather) -> None:
        """Invalidate what ``gather`` collected (and wait for it)."""

    def flush_iotlb_all(self) -> None:
        """Invalidate every IOTLB entry of this domain (and wait for it)."""

    def iova_to_phys(self, iova: Iova) -> PhysAddr | None:
        raise NotSupported(f"{self.name} domain has no iova_to_phys")

    def release_table_pages(self, freelist: list[int]) -> None:
        """Free page-table pages an unmap unlinked, once the IOTLB no longer needs them."""
        if freelist:
            raise NotSupported(f"{self.name} domain has no page-table pages")

    def free(self) -> None:
        """Release the domain's resources (it is attached to nothing)."""

    # ------------------------------------------------------------------ iommufd's extras
    def set_dirty_tracking(self, enabled: bool) -> None:
        raise NotSupported(f"{self.name} domain has no dirty tracking")

    def read_and_clear_dirty(
        self, iova: int, size: int, no_clear: bool, record: Callable[[int, int], None]
    ) -> None:
        raise NotSupported(f"{self.name} domain has no dirty tracking")

    def cache_invalidate_user(self, array: UserDataArray) -> tuple[int, ApiError | None]:
        raise NotSupported(f"{self.name} domain has no user cache invalidation")


class RadixDomain(Domain):
    """A paging domain whose mappings live in ``pgtable``, a radix table writer of
    :mod:`iommusim.sw.pgtable` (io-pgtable's ``map_pages`` / ``unmap_pages`` /
    ``iova_to_phys``, which every driver's paging domain forwards to)."""

    pgtable: RadixPageTable

    def map(self, iova: Iova, pa: PhysAddr, size: int, prot: int) -> None:
        self.pgtable.map(iova, pa, size, prot)

    def unmap(self, iova: Iova, size: int, gather: IotlbGather) -> int:
        return self.pgtable.unmap(iova, size, gather)

    def iova_to_phys(self, iova: Iova) -> PhysAddr | None:
        pa = self.pgtable.iova_to_phys(iova)
        return None if pa is None else PhysAddr(pa)
