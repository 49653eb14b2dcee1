"""Process address spaces: the CPU side of Shared Virtual Addressing (after Linux ``mm/``).

:class:`Mm` is a process's address space -- areas (:class:`Vma`), demand-paged anonymous
memory and a RISC-V Sv39/Sv48/Sv57 page table in simulated RAM that a device bound to the
process walks through a process context. Secondary TLBs (the IOMMU, via the SVA layer) follow
its changes through :class:`MmuNotifier` callbacks.
"""

from __future__ import annotations

from iommusim.sw.mm.mm import (
    MM_FORMATS,
    MMAP_MIN_ADDR,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    Mm,
    MmStats,
)
from iommusim.sw.mm.notifier import MmuNotifier
from iommusim.sw.mm.vma import Vma, VmaList

__all__ = [
    "MMAP_MIN_ADDR",
    "MM_FORMATS",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "Mm",
    "MmStats",
    "MmuNotifier",
    "Vma",
    "VmaList",
]
