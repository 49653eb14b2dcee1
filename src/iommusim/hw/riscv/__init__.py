"""RISC-V IOMMU hardware model (spec: RISC-V IOMMU Architecture Specification 20260222)."""
