"""iommufd after Linux 7.3 ``drivers/iommu/iommufd``: the kernel's uAPI as data
(:mod:`~iommusim.sw.iommufd.uapi`), the object table, the IOAS and its io_pagetable."""

from __future__ import annotations
