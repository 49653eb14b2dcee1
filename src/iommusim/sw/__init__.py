"""The operating-system software that drives the IOMMU models, after Linux.

It touches hardware only through MMIO and physical memory (DESIGN rule 2): page allocator,
page-table writers, the IOMMU core, drivers and iommufd.
"""
