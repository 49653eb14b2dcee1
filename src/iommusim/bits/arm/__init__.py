"""Arm SMMUv3 spec tables (IHI 0070), one module per kind: the register file
(:mod:`.smmuv3_regs`) and its PMCG page (:mod:`.smmuv3_pmcg`), the in-memory configuration
structures (:mod:`.smmuv3_structures`) and the queue formats (:mod:`.smmuv3_queues`); the
VMSAv8-64 translation-table formats (DDI 0487 D8) as :class:`~iommusim.bits.pgformat.PtFormat`
instances (:mod:`.vmsa`)."""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm.smmuv3_pmcg import CFGR as PMCG_CFGR
from iommusim.bits.arm.smmuv3_pmcg import CR as PMCG_CR
from iommusim.bits.arm.smmuv3_pmcg import EVTYPER as PMCG_EVTYPER
from iommusim.bits.arm.smmuv3_queues import (
    COMMANDS,
    EVT_COMMON,
    EVT_FAULT,
    EVT_FETCH,
    EVT_WALK_EABT,
    PRIQ_ENTRY,
)
from iommusim.bits.arm.smmuv3_regs import REGISTERS
from iommusim.bits.arm.smmuv3_structures import CD, CDTAB_L1, STE, STRTAB_L1
from iommusim.bits.fields import Layout

__all__ = ["ALL_LAYOUTS"]

#: Every SMMUv3 layout once, for the table-wide tests (the MSI configuration layouts are shared
#: by three registers each).
ALL_LAYOUTS: Final[tuple[Layout, ...]] = tuple(
    dict.fromkeys(
        (
            STRTAB_L1,
            STE,
            CDTAB_L1,
            CD,
            *(c.layout for c in COMMANDS),
            EVT_COMMON,
            EVT_FAULT,
            EVT_WALK_EABT,
            EVT_FETCH,
            PRIQ_ENTRY,
            *(r.layout for r in REGISTERS),
            PMCG_CFGR,
            PMCG_CR,
            PMCG_EVTYPER,
        )
    )
)
