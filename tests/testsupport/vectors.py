"""Where the test suite's conformance vectors live: in the repository, so that ``make test``
needs nothing beside it (a copy of the public set of ``riscv-iommu-vector/1`` vectors)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["VECTORS"]

VECTORS: Final = Path(__file__).resolve().parents[1] / "conformance" / "vectors" / "riscv-iommu"
