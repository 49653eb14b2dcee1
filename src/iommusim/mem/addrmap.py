"""A physical address map: memories placed at non-overlapping ranges, dispatched by address.

Like amaranth-soc's memory maps, regions are checked for overlap when added and the map can
be frozen once the machine is built, after which its layout cannot change. An access that
does not fall inside a region is answered with ``BusError("access", pa)``, as a bus answers an
unmapped address.

Each region forwards accesses to its memory at ``target_pa + (pa - base_pa)``. By default
``target_pa == base_pa`` (the memory sees the same physical address, which is what
:class:`~iommusim.mem.flat.FlatMemory` expects); passing ``target_pa=0`` gives the memory
region-relative addresses.

Byte reads and writes may span adjacent regions; the whole access is checked against the map
before any byte is stored, so a write that runs into a hole changes nothing. Word loads and
stores that span two regions are split the same way. A ``cas64`` must lie within one region,
since an atomic cannot be split across two targets.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Final

from iommusim.errors import BusError, ModelError
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["AddressMap", "Region"]

_ACCESS: Final = "access"
_ADDR_LIMIT: Final = 1 << 64


@dataclass(frozen=True, slots=True)
class Region:
    """``size_bytes`` bytes at ``base_pa``, served by ``memory`` from ``target_pa`` on."""

    name: str
    base_pa: int
    size_bytes: int
    memory: PhysicalMemory
    target_pa: int

    @property
    def end_pa(self) -> int:
        return self.base_pa + self.size_bytes

    def __str__(self) -> str:
        return f"{self.name!r} [{self.base_pa:#x}, {self.end_pa:#x})"


class AddressMap:
    """A set of non-overlapping regions implementing the physical-memory protocol."""

    __slots__ = ("_bases", "_frozen", "_last", "_regions")

    def __init__(self) -> None:
        self._regions: list[Region] = []  # sorted by base_pa
        self._bases: list[int] = []
        self._frozen = False
        self._last: Region | None = None

    # -- building ----------------------------------------------------------------------
    def add(
        self,
        base_pa: int,
        size_bytes: int,
        memory: PhysicalMemory,
        *,
        name: str | None = None,
        target_pa: int | None = None,
    ) -> Region:
        """Place ``memory`` at ``[base_pa, base_pa + size_bytes)`` and return the region."""
        if self._frozen:
            raise ModelError("address map must not be changed once frozen")
        if base_pa < 0:
            raise ModelError(f"region base must be non-negative, not {base_pa:#x}")
        if size_bytes <= 0:
            raise ModelError(f"region size must be positive, not {size_bytes}")
        if base_pa + size_bytes > _ADDR_LIMIT:
            raise ModelError(
                f"region must end within the 64-bit address space, not at {base_pa + size_bytes:#x}"
            )
        if not isinstance(memory, PhysicalMemory):
            raise ModelError(
                f"region memory must implement PhysicalMemory, not {type(memory).__name__}"
            )
        region = Region(
            name=name if name is not None else f"region{len(self._regions)}",
            base_pa=base_pa,
            size_bytes=size_bytes,
            memory=memory,
            target_pa=base_pa if target_pa is None else target_pa,
        )
        for other in self._regions:
            if region.base_pa < other.end_pa and other.base_pa < region.end_pa:
                raise ModelError(f"region {region} must not overlap {other}")
        i = bisect_right(self._bases, base_pa)
        self._regions.insert(i, region)
        self._bases.insert(i, base_pa)
        return region

    def freeze(self) -> None:
        """Forbid further changes to the layout."""
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def regions(self) -> tuple[Region, ...]:
        """The regions, in address order."""
        return tuple(self._regions)

    def region_at(self, pa: int) -> Region | None:
        """The region containing byte ``pa``, or ``None``."""
        last = self._last
        if last is not None and last.base_pa <= pa < last.base_pa + last.size_bytes:
            return last
        i = bisect_right(self._bases, pa) - 1
        if i < 0:
            return None
        region = self._regions[i]
        if pa >= region.base_pa + region.size_bytes:
            return None
        self._last = region
        return region

    def _find(self, pa: int, size: int) -> Region | None:
        """The region holding all of ``[pa, pa + size)``, or ``None`` if no single one does."""
        region = self.region_at(pa)
        if region is None or pa + size > region.base_pa + region.size_bytes:
            return None
        return region

    def _pieces(self, pa: int, size: int) -> list[tuple[Region, int, int]]:
        """Split an access into ``(region, pa, length)`` pieces, or ``BusError`` on a hole."""
        pieces: list[tuple[Region, int, int]] = []
        cur, remaining = pa, size
        while remaining > 0:
            region = self.region_at(cur)
            if region is None:
                # Report the first byte of the access, as every backend does.
                raise BusError(_ACCESS, pa)
            n = min(remaining, region.end_pa - cur)
            pieces.append((region, cur, n))
            cur += n
            remaining -= n
        return pieces

    def __len__(self) -> int:
        return len(self._regions)

    # -- bytes -------------------------------------------------------------------------
    def read(self, pa: int, size: int) -> bytes:
        if size < 0:
            raise ModelError(f"read size must be non-negative, not {size}")
        region = self._find(pa, size)
        if region is not None:
            return region.memory.read(pa - region.base_pa + region.target_pa, size)
        if size == 0:
            raise BusError(_ACCESS, pa)
        return b"".join(
            r.memory.read(p - r.base_pa + r.target_pa, n) for r, p, n in self._pieces(pa, size)
        )

    def write(self, pa: int, data: bytes) -> None:
        size = len(data)
        region = self._find(pa, size)
        if region is not None:
            region.memory.write(pa - region.base_pa + region.target_pa, data)
            return
        if size == 0:
            raise BusError(_ACCESS, pa)
        view = memoryview(data)
        pos = 0
        for r, p, n in self._pieces(pa, size):  # all pieces are mapped before any store
            r.memory.write(p - r.base_pa + r.target_pa, bytes(view[pos : pos + n]))
            pos += n

    # -- words -------------------------------------------------------------------------
    def read32(self, pa: int) -> int:
        region = self._find(pa, 4)
        if region is not None:
            return region.memory.read32(pa - region.base_pa + region.target_pa)
        return int.from_bytes(self.read(pa, 4), "little")

    def read64(self, pa: int) -> int:
        region = self._find(pa, 8)
        if region is not None:
            return region.memory.read64(pa - region.base_pa + region.target_pa)
        return int.from_bytes(self.read(pa, 8), "little")

    def write32(self, pa: int, value: int) -> None:
        region = self._find(pa, 4)
        if region is not None:
            region.memory.write32(pa - region.base_pa + region.target_pa, value)
        else:
            self.write(pa, (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    def write64(self, pa: int, value: int) -> None:
        region = self._find(pa, 8)
        if region is not None:
            region.memory.write64(pa - region.base_pa + region.target_pa, value)
        else:
            self.write(pa, (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little"))

    def cas64(self, pa: int, expected: int, new: int) -> int:
        region = self._find(pa, 8)
        if region is None:
            raise BusError(_ACCESS, pa)
        return region.memory.cas64(pa - region.base_pa + region.target_pa, expected, new)
