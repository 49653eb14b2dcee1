"""A RISC-V IOMMU driver structured like Linux ``drivers/iommu/riscv/iommu.c``."""

from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver

__all__ = ["RiscvIommuDriver"]
