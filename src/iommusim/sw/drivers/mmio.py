"""Register access for the IOMMU drivers: 32- and 64-bit loads and stores to an IOMMU's window."""

from __future__ import annotations

from iommusim.mem.protocol import PhysicalMemory

__all__ = ["Mmio"]


class Mmio:
    """``readl``/``readq``/``writel``/``writeq`` at ``base_pa`` + offset on the CPU's bus."""

    __slots__ = ("base_pa", "bus")

    def __init__(self, bus: PhysicalMemory, base_pa: int) -> None:
        self.bus = bus
        self.base_pa = base_pa

    def readl(self, off: int) -> int:
        return self.bus.read32(self.base_pa + off)

    def readq(self, off: int) -> int:
        return self.bus.read64(self.base_pa + off)

    def writel(self, off: int, value: int) -> None:
        self.bus.write32(self.base_pa + off, value)

    def writeq(self, off: int, value: int) -> None:
        self.bus.write64(self.base_pa + off, value)
