"""The IOMMU core, after Linux ``drivers/iommu/iommu.c`` and ``dma-iommu.c``."""
