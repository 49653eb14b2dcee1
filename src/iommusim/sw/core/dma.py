"""The DMA API over an IOMMU domain (Linux ``dma-iommu.c``: ``iommu_dma_map_page`` and
``__iommu_dma_unmap``).

A device whose default domain is a DMA domain gets IOVAs from the domain's
:class:`~iommusim.sw.core.iova.IovaAllocator`; unmapping clears the PTEs and then either syncs
the IOTLB at once (strict, ``IOMMU_DOMAIN_DMA``) or queues the IOVA on the flush queue
(lazy, ``IOMMU_DOMAIN_DMA_FQ``). A device in an identity domain uses physical addresses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import InvalidArgument, NoSpace
from iommusim.sw.core.fq import FlushQueue, FqEntry
from iommusim.sw.core.iova import IovaAllocator
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

if TYPE_CHECKING:
    from iommusim.sw.core.domain import Domain

__all__ = [
    "DMA_BIDIRECTIONAL",
    "DMA_FROM_DEVICE",
    "DMA_TO_DEVICE",
    "DmaCookie",
    "dma_info_to_prot",
]

DMA_BIDIRECTIONAL: Final = 0
DMA_TO_DEVICE: Final = 1
DMA_FROM_DEVICE: Final = 2


def dma_info_to_prot(direction: int) -> int:
    """dma_info_to_prot: the device reads what goes to it and writes what comes from it."""
    if direction == DMA_BIDIRECTIONAL:
        return IOMMU_READ | IOMMU_WRITE
    if direction == DMA_TO_DEVICE:
        return IOMMU_READ
    if direction == DMA_FROM_DEVICE:
        return IOMMU_WRITE
    raise InvalidArgument(f"DMA direction must be 0, 1 or 2, not {direction}")


class DmaCookie:
    """The DMA-API state of a DMA domain: the IOVA allocator and, in lazy mode, the queue."""

    def __init__(self, domain: Domain, fq: FlushQueue | None, ncpus: int) -> None:
        granule = domain.pgsize_bitmap & -domain.pgsize_bitmap
        self.domain = domain
        self.iovad = IovaAllocator(granule, 1, ncpus)
        self.fq = fq
        self.limit_pfn = domain.aperture_end >> self.iovad.shift
        self.stats = {"maps": 0, "unmaps": 0, "map_failures": 0}
        self._mapped: dict[int, int] = {}  # IOVA pfn -> bytes mapped there (granule-rounded)

    def map(self, pa: PhysAddr, size: int, direction: int, cpu: int = 0) -> Iova:
        """iommu_dma_map_page: IOVA for ``size`` bytes at ``pa`` (any alignment)."""
        if size <= 0:
            raise InvalidArgument(f"DMA size must be positive, not {size}")
        prot = dma_info_to_prot(direction)
        shift = self.iovad.shift
        gran = 1 << shift
        offset = pa & (gran - 1)
        length = (offset + size + gran - 1) & ~(gran - 1)
        # Everything that does not depend on the IOVA is checked before one is allocated:
        # the physical range must be one the domain's leaves can hold.
        self.domain.check_pa_range(pa - offset, length)
        pages = length >> shift
        if pages > self.limit_pfn:
            self.stats["map_failures"] += 1
            raise NoSpace(f"IOVA space exhausted mapping {size} bytes")
        pfn = self.iovad.alloc_iova_fast(pages, self.limit_pfn, cpu)
        if pfn is None:
            self.stats["map_failures"] += 1
            raise NoSpace(f"IOVA space exhausted mapping {size} bytes")
        iova = Iova(pfn << shift)
        try:
            self.domain.map(iova, PhysAddr(pa - offset), length, prot)
        except BaseException:
            # Give the IOVA back exactly where it came from (the range cache or the tree),
            # so a failed map leaves the allocator as it was.
            self.iovad.undo_alloc_fast(pfn)
            self.stats["map_failures"] += 1
            raise
        self._mapped[pfn] = length
        self.stats["maps"] += 1
        return Iova(iova + offset)

    def unmap(self, dma_addr: Iova, size: int, cpu: int = 0) -> None:
        """__iommu_dma_unmap + iommu_dma_free_iova."""
        shift = self.iovad.shift
        gran = 1 << shift
        pfn = dma_addr >> shift
        held = self.iovad.size_of(pfn) if dma_addr >= 0 else None
        length = ((dma_addr & (gran - 1)) + size + gran - 1) & ~(gran - 1)
        # The size must be the one given to dma_map (rounded to the granule): anything else
        # would leave part of the buffer mapped under a freed IOVA, or clear someone else's.
        if held is None or size <= 0 or self._mapped.get(pfn) != length:
            raise InvalidArgument(f"dma_unmap of {dma_addr:#x}+{size:#x} matches no mapping")
        gather = IotlbGather()
        self.domain.unmap(Iova(pfn << shift), length, gather)
        del self._mapped[pfn]
        self.stats["unmaps"] += 1
        if self.fq is not None:
            self.fq.queue(pfn, held, gather.freelist, cpu)
            return
        self.domain.iotlb_sync(gather)
        self.domain.release_table_pages(gather.freelist)
        self.iovad.free_iova_fast(pfn, cpu)

    def release(self, entry: FqEntry, cpu: int) -> None:
        """What the flush queue calls once an entry's flush has completed."""
        self.domain.release_table_pages(list(entry.freelist))
        self.iovad.free_iova_fast(entry.iova_pfn, cpu)
