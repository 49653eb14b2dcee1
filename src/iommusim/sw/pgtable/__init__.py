"""Page-table writers for the formats the IOMMU models walk (after Linux io-pgtable).

:class:`RiscvPageTable` writes RISC-V Sv39/48/57 first-stage and Sv39x4/48x4/57x4 G-stage
tables; unmaps report what to invalidate through an :class:`IotlbGather`.
"""

from __future__ import annotations

from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.pgtable.riscv import (
    FORMATS,
    SV39,
    SV39X4,
    SV48,
    SV48X4,
    SV57,
    SV57X4,
    RiscvPageTable,
    RiscvPtFormat,
)

__all__ = [
    "FORMATS",
    "SV39",
    "SV39X4",
    "SV48",
    "SV48X4",
    "SV57",
    "SV57X4",
    "IotlbGather",
    "RiscvPageTable",
    "RiscvPtFormat",
]
