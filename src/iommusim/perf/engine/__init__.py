"""The compiled batch engine: trace replay at compiled speed with the scalar model's results."""

from iommusim.perf.engine.riscv import (
    JIT_AVAILABLE,
    MAX_BURST,
    BatchEngine,
    EngineStats,
    Results,
    request_of,
)

__all__ = ["JIT_AVAILABLE", "MAX_BURST", "BatchEngine", "EngineStats", "Results", "request_of"]
