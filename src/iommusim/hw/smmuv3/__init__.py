"""The Arm SMMUv3 hardware model (IHI 0070): :class:`Smmuv3` -- the register file, queues
and interrupts (:mod:`.smmu`) over the translation procedure (:mod:`.translator`) -- with
its parameters and presets (:mod:`.params`), transactions, outcomes and event records
(:mod:`.transaction`) and the maintenance interface (:mod:`.maintenance`)."""

from __future__ import annotations

from iommusim.hw.smmuv3.maintenance import Tlbi, TranslationCounts
from iommusim.hw.smmuv3.params import PRESETS, Smmuv3CacheParams, Smmuv3Params
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.hw.smmuv3.transaction import (
    AT_ATS_REQUEST,
    AT_TRANSLATED,
    AT_UNTRANSLATED,
    Event,
    Request,
    Response,
)
from iommusim.hw.smmuv3.translator import Smmuv3Translator

__all__ = [
    "AT_ATS_REQUEST",
    "AT_TRANSLATED",
    "AT_UNTRANSLATED",
    "PRESETS",
    "Event",
    "Request",
    "Response",
    "Smmuv3",
    "Smmuv3CacheParams",
    "Smmuv3Params",
    "Smmuv3Translator",
    "Tlbi",
    "TranslationCounts",
]
