"""Address kinds on the public signatures (typing only: each is an ``int`` at run time).

A physical address, an I/O virtual address (what a device puts on the bus and the IOMMU
translates) and a guest-physical address (the output of a guest's first stage, the input of
the G-stage or stage 2) are all integers, and mixing them up is the classic IOMMU-driver bug;
``NewType`` lets mypy tell them apart at no run-time cost.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["Gpa", "Iova", "PhysAddr"]

PhysAddr = NewType("PhysAddr", int)
Iova = NewType("Iova", int)
Gpa = NewType("Gpa", int)
