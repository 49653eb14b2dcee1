"""Arm spec tables (SMMUv3, IHI 0070; VMSAv8-64 translation tables, DDI 0487 D8)."""
