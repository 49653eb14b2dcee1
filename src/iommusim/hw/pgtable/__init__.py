"""Hardware page-table walkers driven by :class:`~iommusim.bits.pgformat.PtFormat`
descriptors: one radix walk serves every format and stage (DESIGN rule 4)."""

from __future__ import annotations

from iommusim.hw.pgtable.walk import (
    AdUpdate,
    FaultFactory,
    PteRead,
    TraceSink,
    Walker,
    swap32,
    swap64,
)

__all__ = ["AdUpdate", "FaultFactory", "PteRead", "TraceSink", "Walker", "swap32", "swap64"]
