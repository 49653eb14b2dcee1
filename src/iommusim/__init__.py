"""iommusim: an executable, spec-accurate model of IOMMU hardware and of the software that
drives it."""

from __future__ import annotations

__version__ = "0.1.0"
