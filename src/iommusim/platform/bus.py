"""Adapters that put devices on the physical address map.

:class:`RegisterWindow` exposes a device's register file as a memory region (4- and 8-byte
naturally aligned accesses, as the RISC-V IOMMU's "Memory-mapped register interface" allows);
:class:`CostedMemory` charges every access that passes through it to a ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from iommusim.errors import BusError
from iommusim.mem.protocol import PhysicalMemory
from iommusim.platform.costs import Ledger

__all__ = ["CostedMemory", "RegisterDevice", "RegisterWindow"]


class RegisterDevice(Protocol):
    def read_register(self, offset: int, size: int) -> int: ...

    def write_register(self, offset: int, size: int, value: int) -> None: ...


class RegisterWindow:
    """A device's registers as a region of the address map (region-relative addresses).

    ``after_write(offset)`` runs after every write; the platform uses it to let the device
    react to a doorbell (the IOMMU consumes its command queue when ``cqt`` moves).
    """

    __slots__ = ("_after_write", "_cost", "_dev", "_ledger")

    def __init__(
        self,
        dev: RegisterDevice,
        ledger: Ledger,
        cost_ns: int,
        after_write: Callable[[int], None] | None = None,
    ) -> None:
        self._dev = dev
        self._ledger = ledger
        self._cost = cost_ns
        self._after_write = after_write

    def _check(self, pa: int, size: int) -> None:
        if size not in (4, 8) or pa % size:
            raise BusError("access", pa)

    def read(self, pa: int, size: int) -> bytes:
        self._check(pa, size)
        self._ledger.charge("mmio", self._cost)
        return self._dev.read_register(pa, size).to_bytes(size, "little")

    def write(self, pa: int, data: bytes) -> None:
        self._check(pa, len(data))
        self._ledger.charge("mmio", self._cost)
        self._dev.write_register(pa, len(data), int.from_bytes(data, "little"))
        if self._after_write is not None:
            self._after_write(pa)

    def read32(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 4), "little")

    def read64(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 8), "little")

    def write32(self, pa: int, value: int) -> None:
        self.write(pa, value.to_bytes(4, "little"))

    def write64(self, pa: int, value: int) -> None:
        self.write(pa, value.to_bytes(8, "little"))

    def cas64(self, pa: int, expected: int, new: int) -> int:
        # Registers are not memory: an atomic to them completes with an access fault.
        raise BusError("access", pa)


class CostedMemory:
    """Forwards to ``inner``, charging ``category`` once per access."""

    __slots__ = ("_category", "_cost", "_inner", "_ledger")

    def __init__(self, inner: PhysicalMemory, ledger: Ledger, category: str, cost_ns: int) -> None:
        self._inner = inner
        self._ledger = ledger
        self._category = category
        self._cost = cost_ns

    def read(self, pa: int, size: int) -> bytes:
        self._ledger.charge(self._category, self._cost)
        return self._inner.read(pa, size)

    def write(self, pa: int, data: bytes) -> None:
        self._ledger.charge(self._category, self._cost)
        self._inner.write(pa, data)

    def read32(self, pa: int) -> int:
        self._ledger.charge(self._category, self._cost)
        return self._inner.read32(pa)

    def read64(self, pa: int) -> int:
        self._ledger.charge(self._category, self._cost)
        return self._inner.read64(pa)

    def write32(self, pa: int, value: int) -> None:
        self._ledger.charge(self._category, self._cost)
        self._inner.write32(pa, value)

    def write64(self, pa: int, value: int) -> None:
        self._ledger.charge(self._category, self._cost)
        self._inner.write64(pa, value)

    def cas64(self, pa: int, expected: int, new: int) -> int:
        self._ledger.charge(self._category, self._cost)
        return self._inner.cas64(pa, expected, new)
