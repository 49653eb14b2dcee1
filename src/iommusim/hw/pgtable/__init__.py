"""Hardware page-table walkers driven by :class:`~iommusim.bits.pgformat.PtFormat`
descriptors: one radix walk serves every format and stage (DESIGN rule 4); ``vmsa`` wraps it
for VMSAv8-64 regimes (faults as records)."""

from __future__ import annotations

from iommusim.hw.pgtable.vmsa import VmsaFault, VmsaFaultKind, VmsaLeaf, VmsaWalker
from iommusim.hw.pgtable.walk import (
    AdUpdate,
    FaultFactory,
    PteRead,
    TraceSink,
    Walker,
    swap32,
    swap64,
)

__all__ = [
    "AdUpdate",
    "FaultFactory",
    "PteRead",
    "TraceSink",
    "VmsaFault",
    "VmsaFaultKind",
    "VmsaLeaf",
    "VmsaWalker",
    "Walker",
    "swap32",
    "swap64",
]
