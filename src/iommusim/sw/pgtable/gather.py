"""What an unmap leaves for the IOTLB invalidation (Linux ``struct iommu_iotlb_gather``).

Page-table writers record the IOVA range they cleared and the table pages they unlinked; the
driver's ``iotlb_sync`` invalidates the range -- the whole address space when ``freelist`` is
not empty, since non-leaf entries may be cached (riscv-iommu: "IOMMU Page-Table cache
invalidation commands"; Linux RISC-V driver ``riscv_iommu_iotlb_sync``) -- and only then frees
the table pages: until the invalidation completes a walker may still be reading them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["IotlbGather"]

_ULONG_MAX: Final = (1 << 64) - 1


class IotlbGather:
    """Range touched by unmaps (``start``..``end`` inclusive), the smallest leaf size seen
    (``pgsize``, 0 for none) and the unlinked table pages (``freelist`` of PAs).

    Linux syncs the IOTLB whenever the page size changes (``iommu_iotlb_gather_add_page``);
    a page-table writer cannot sync, so ``pgsize`` keeps the smallest size: stepping through
    ``start..end`` by it reaches every cleared leaf.
    """

    __slots__ = ("end", "freelist", "pgsize", "start")

    def __init__(self) -> None:
        self.start = _ULONG_MAX
        self.end = 0
        self.pgsize = 0
        self.freelist: list[int] = []

    def reset(self) -> None:
        """Back to empty (``iommu_iotlb_gather_init``); the freelist is a new list."""
        self.start = _ULONG_MAX
        self.end = 0
        self.pgsize = 0
        self.freelist = []

    @property
    def empty(self) -> bool:
        """Nothing gathered: no range and no table pages."""
        return self.start > self.end and not self.freelist

    @property
    def size(self) -> int:
        """Bytes from ``start`` to ``end`` inclusive (0 when no range)."""
        return 0 if self.start > self.end else self.end - self.start + 1

    def add_range(self, iova: int, size: int) -> None:
        """Extend the range to cover ``[iova, iova + size)`` (``iommu_iotlb_gather_add_range``)."""
        end = iova + size - 1
        self.start = min(self.start, iova)
        self.end = max(self.end, end)

    def add_page(self, iova: int, size: int) -> None:
        """Record one cleared leaf of ``size`` bytes at ``iova``."""
        self.add_range(iova, size)
        if not self.pgsize or size < self.pgsize:
            self.pgsize = size

    def is_disjoint(self, iova: int, size: int) -> bool:
        """True when ``[iova, iova + size)`` neither overlaps nor touches the gathered range
        (``iommu_iotlb_gather_is_disjoint``)."""
        if self.start > self.end:
            return False
        return iova + size < self.start or iova > self.end + 1

    def __repr__(self) -> str:
        if self.start > self.end:
            rng = "empty"
        else:
            rng = f"{self.start:#x}..{self.end:#x}"
        return f"IotlbGather({rng}, pgsize={self.pgsize:#x}, freelist={len(self.freelist)})"
