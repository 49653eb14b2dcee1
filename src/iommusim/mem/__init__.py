"""Physical memory: the protocol, backends and wrappers."""

from __future__ import annotations

from iommusim.mem.addrmap import AddressMap, Region
from iommusim.mem.faults import ACCESS, CORRUPTION, FaultInjectingMemory
from iommusim.mem.flat import FlatMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.mem.sparse import SparseMemory
from iommusim.mem.trace import MemAccess, TracingMemory

__all__ = [
    "ACCESS",
    "CORRUPTION",
    "AddressMap",
    "FaultInjectingMemory",
    "FlatMemory",
    "MemAccess",
    "PhysicalMemory",
    "Region",
    "SparseMemory",
    "TracingMemory",
]
