"""Shared Virtual Addressing: PASIDs, binding devices to processes, the SVA fault handler."""

from iommusim.sw.sva.sva import IOMMU_FIRST_GLOBAL_PASID, Sva, SvaHandle, SvaStats

__all__ = ["IOMMU_FIRST_GLOBAL_PASID", "Sva", "SvaHandle", "SvaStats"]
