"""Conformance vectors (format ``riscv-iommu-vector/1``): replay, fill and check."""
