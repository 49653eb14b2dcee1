"""IOMMU drivers: they program the hardware only through MMIO and physical memory."""
