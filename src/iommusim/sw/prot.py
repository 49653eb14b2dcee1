"""Map protection bits of the IOMMU API (Linux ``include/linux/iommu.h``).

Plain ints, combined with ``|``: ``map(iova, pa, size, IOMMU_READ | IOMMU_WRITE)``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "IOMMU_CACHE",
    "IOMMU_MMIO",
    "IOMMU_NOEXEC",
    "IOMMU_PRIV",
    "IOMMU_PROT_MASK",
    "IOMMU_READ",
    "IOMMU_WRITE",
]

#: The device may read.
IOMMU_READ: Final = 1 << 0
#: The device may write.
IOMMU_WRITE: Final = 1 << 1
#: DMA is cache coherent.
IOMMU_CACHE: Final = 1 << 2
#: The device may not fetch instructions.
IOMMU_NOEXEC: Final = 1 << 3
#: The mapping is MMIO (device memory).
IOMMU_MMIO: Final = 1 << 4
#: Privileged (supervisor) accesses only.
IOMMU_PRIV: Final = 1 << 5
#: Every defined bit.
IOMMU_PROT_MASK: Final = (
    IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE | IOMMU_NOEXEC | IOMMU_MMIO | IOMMU_PRIV
)
