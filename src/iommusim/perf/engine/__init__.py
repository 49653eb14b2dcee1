"""The compiled batch engine: trace replay at compiled speed with the scalar model's results."""

from iommusim.perf.engine.riscv import (
    JIT_AVAILABLE,
    MAX_BURST,
    BatchEngine,
    EngineStats,
    Results,
    request_of,
)
from iommusim.perf.engine.smmuv3 import (
    OUTCOMES,
    Smmuv3BatchEngine,
    Smmuv3Results,
    smmuv3_request_of,
)

__all__ = [
    "JIT_AVAILABLE",
    "MAX_BURST",
    "OUTCOMES",
    "BatchEngine",
    "EngineStats",
    "Results",
    "Smmuv3BatchEngine",
    "Smmuv3Results",
    "request_of",
    "smmuv3_request_of",
]
