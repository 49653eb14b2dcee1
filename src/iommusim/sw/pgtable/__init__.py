"""Page-table writers for the formats the IOMMU models walk (after Linux io-pgtable).

:class:`RadixPageTable` is the one radix writer, driven by a
:class:`~iommusim.bits.pgformat.PtFormat` descriptor and an architecture's :class:`LeafCodec`,
reporting IOTLB maintenance through :class:`FlushOps` callbacks (:class:`GatherFlush` by
default) and unmaps through an :class:`IotlbGather`. :class:`RiscvPageTable` is its RISC-V
instance: Sv39/48/57 first-stage and Sv39x4/48x4/57x4 G-stage tables, with
:func:`riscv_atp` for the ``iosatp`` / ``iohgatp`` that points at one; :class:`ArmLpaePageTable`
its VMSAv8-64 instance (after Linux io-pgtable-arm): stage 1 and stage 2 tables for an SMMUv3.
"""

from __future__ import annotations

from iommusim.sw.pgtable.arm_lpae import (
    ARM64_MM_FORMATS,
    ArmLpaeLeafCodec,
    ArmLpaeMmFormat,
    ArmLpaePageTable,
    arm_lpae_format,
)
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.pgtable.radix import FlushOps, GatherFlush, LeafCodec, RadixPageTable
from iommusim.sw.pgtable.riscv import (
    FORMATS,
    SV39,
    SV39X4,
    SV48,
    SV48X4,
    SV57,
    SV57X4,
    RiscvLeafCodec,
    RiscvPageTable,
    RiscvPtFormat,
    riscv_atp,
)

__all__ = [
    "ARM64_MM_FORMATS",
    "FORMATS",
    "SV39",
    "SV39X4",
    "SV48",
    "SV48X4",
    "SV57",
    "SV57X4",
    "ArmLpaeLeafCodec",
    "ArmLpaeMmFormat",
    "ArmLpaePageTable",
    "FlushOps",
    "GatherFlush",
    "IotlbGather",
    "LeafCodec",
    "RadixPageTable",
    "RiscvLeafCodec",
    "RiscvPageTable",
    "RiscvPtFormat",
    "arm_lpae_format",
    "riscv_atp",
]
