"""Fault injection: make chosen physical ranges answer with an access fault or poisoned data.

The RISC-V IOMMU spec reports these as distinct causes (e.g. 257 "DDT entry load access
fault" vs 268 "DDT data corruption"); the conformance vectors inject both. The wrapper sits
between a hardware model and its memory; software keeps using the inner memory directly.
"""

from __future__ import annotations

from typing import Final

from iommusim.errors import BusError, ModelError
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["ACCESS", "CORRUPTION", "FaultInjectingMemory"]

ACCESS: Final = "access"
CORRUPTION: Final = "corruption"


class FaultInjectingMemory:
    """Wraps a memory; accesses overlapping an injected range raise :class:`BusError`.

    An access fault applies to reads and writes; corruption applies to reads only (a write
    to a poisoned line replaces the poison). Where both kinds overlap an access, the access
    fault wins.
    """

    __slots__ = ("_faults", "inner")

    def __init__(self, inner: PhysicalMemory) -> None:
        self.inner = inner
        self._faults: dict[tuple[int, int], str] = {}

    def inject(self, pa: int, size: int, kind: str) -> None:
        if kind not in (ACCESS, CORRUPTION):
            raise ModelError(f"fault kind must be 'access' or 'corruption', not {kind!r}")
        if size <= 0:
            raise ModelError(f"fault size must be positive, not {size}")
        self._faults[(pa, size)] = kind

    def clear(self, pa: int, size: int) -> None:
        self._faults.pop((pa, size), None)

    @property
    def active(self) -> bool:
        return bool(self._faults)

    def _check(self, pa: int, size: int, is_write: bool) -> None:
        found = None
        for (fpa, fsize), kind in self._faults.items():
            if fpa < pa + size and pa < fpa + fsize:
                if kind == ACCESS:
                    raise BusError(ACCESS, pa)
                if not is_write:
                    found = kind
        if found is not None:
            raise BusError(found, pa)

    def read(self, pa: int, size: int) -> bytes:
        if self._faults:
            self._check(pa, size, False)
        return self.inner.read(pa, size)

    def write(self, pa: int, data: bytes) -> None:
        if self._faults:
            self._check(pa, len(data), True)
        self.inner.write(pa, data)

    def read32(self, pa: int) -> int:
        if self._faults:
            self._check(pa, 4, False)
        return self.inner.read32(pa)

    def read64(self, pa: int) -> int:
        if self._faults:
            self._check(pa, 8, False)
        return self.inner.read64(pa)

    def write32(self, pa: int, value: int) -> None:
        if self._faults:
            self._check(pa, 4, True)
        self.inner.write32(pa, value)

    def write64(self, pa: int, value: int) -> None:
        if self._faults:
            self._check(pa, 8, True)
        self.inner.write64(pa, value)

    def cas64(self, pa: int, expected: int, new: int) -> int:
        if self._faults:
            self._check(pa, 8, True)
        return self.inner.cas64(pa, expected, new)
