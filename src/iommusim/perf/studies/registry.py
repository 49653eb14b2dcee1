"""The studies ``iommusim study NAME`` runs, by name."""

from __future__ import annotations

from typing import Final

from iommusim.perf.studies.ats import ATS
from iommusim.perf.studies.invalidation import INVALIDATION
from iommusim.perf.studies.iotlb_reach import IOTLB_REACH
from iommusim.perf.studies.nested import NESTED
from iommusim.perf.studies.nested_smmuv3 import NESTED_SMMUV3
from iommusim.perf.studies.sweep import Study

__all__ = ["STUDIES"]

STUDIES: Final[dict[str, Study]] = {
    s.name: s for s in (IOTLB_REACH, INVALIDATION, NESTED, NESTED_SMMUV3, ATS)
}
