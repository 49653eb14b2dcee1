"""The physical-memory protocol every backend and wrapper implements.

Addresses are byte physical addresses (plain ints). Multi-byte integer accessors are
little-endian; a hardware model that needs big-endian structures byte-swaps itself, because
endianness is a property of the structure (``fctl.BE``, ``DC.tc.SBE``), not of the memory.

A backend may raise :class:`iommusim.errors.BusError` from any access to report an access
fault or poisoned data (see :mod:`iommusim.mem.faults`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["PhysicalMemory"]


@runtime_checkable
class PhysicalMemory(Protocol):
    """Byte-addressed physical memory."""

    def read(self, pa: int, size: int) -> bytes:
        """Return ``size`` bytes starting at ``pa``."""
        ...

    def write(self, pa: int, data: bytes) -> None:
        """Store ``data`` starting at ``pa``."""
        ...

    def read32(self, pa: int) -> int:
        """Little-endian 32-bit load."""
        ...

    def read64(self, pa: int) -> int:
        """Little-endian 64-bit load."""
        ...

    def write32(self, pa: int, value: int) -> None:
        """Little-endian 32-bit store."""
        ...

    def write64(self, pa: int, value: int) -> None:
        """Little-endian 64-bit store."""
        ...

    def cas64(self, pa: int, expected: int, new: int) -> int:
        """Atomic 64-bit compare-and-swap: store ``new`` if the word equals ``expected``.

        Returns the value found (so the swap happened iff the result equals ``expected``).
        """
        ...
