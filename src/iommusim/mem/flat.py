"""Dense RAM covering one physical range, backed by a numpy ``uint8`` array.

Where :class:`~iommusim.mem.sparse.SparseMemory` covers the whole address space page by page,
:class:`FlatMemory` models one contiguous region (a DRAM bank, an on-chip SRAM) and answers any
access that does not lie wholly inside it with ``BusError("access", pa)``, the way a bus
reports an unmapped address. Aligned 4- and 8-byte accesses, the hardware models' hot path, go
through little-endian word views of the same buffer, so they neither slice nor copy.

An access is checked in full before any byte changes, so a failing write leaves memory as it
was (no partial writes).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from iommusim.errors import BusError, ModelError

__all__ = ["FlatMemory"]

_ACCESS: Final = "access"
_MASK32: Final = 0xFFFF_FFFF
_MASK64: Final = 0xFFFF_FFFF_FFFF_FFFF
_ADDR_LIMIT: Final = 1 << 64


class FlatMemory:
    """RAM for physical addresses ``[base_pa, base_pa + size_bytes)``; zero-filled."""

    __slots__ = ("_buf", "_u32", "_u64", "base_pa", "end_pa", "size_bytes")

    def __init__(self, base_pa: int, size_bytes: int) -> None:
        if base_pa < 0:
            raise ModelError(f"base_pa must be non-negative, not {base_pa:#x}")
        if size_bytes <= 0:
            raise ModelError(f"size_bytes must be positive, not {size_bytes}")
        if base_pa + size_bytes > _ADDR_LIMIT:
            raise ModelError(
                f"region must end within the 64-bit address space, not at {base_pa + size_bytes:#x}"
            )
        self.base_pa: Final = base_pa
        self.size_bytes: Final = size_bytes
        self.end_pa: Final = base_pa + size_bytes
        self._buf: npt.NDArray[np.uint8] = np.zeros(size_bytes, dtype=np.uint8)
        # Word views share the buffer; they cover the largest prefix that is a whole number
        # of words. Explicit '<' keeps them little-endian on any host.
        self._u32: npt.NDArray[np.uint32] = self._buf[: size_bytes & ~3].view("<u4")
        self._u64: npt.NDArray[np.uint64] = self._buf[: size_bytes & ~7].view("<u8")

    def __repr__(self) -> str:
        return f"FlatMemory(base_pa={self.base_pa:#x}, size_bytes={self.size_bytes:#x})"

    def _offset(self, pa: int, size: int) -> int:
        """Offset of ``pa`` in the buffer, or ``BusError`` if ``[pa, pa+size)`` is not inside."""
        off = pa - self.base_pa
        if off < 0 or off + size > self.size_bytes:
            raise BusError(_ACCESS, pa)
        return off

    def contains(self, pa: int, size: int = 1) -> bool:
        """Whether the whole access ``[pa, pa + size)`` lies inside this memory."""
        return self.base_pa <= pa and pa + size <= self.end_pa

    # -- bytes -------------------------------------------------------------------------
    def read(self, pa: int, size: int) -> bytes:
        if size < 0:
            raise ModelError(f"read size must be non-negative, not {size}")
        off = self._offset(pa, size)
        return self._buf[off : off + size].tobytes()

    def view(self, pa: int, size: int) -> memoryview:
        """A read-only, zero-copy view of ``size`` bytes at ``pa`` (valid until the next write)."""
        if size < 0:
            raise ModelError(f"view size must be non-negative, not {size}")
        off = self._offset(pa, size)
        return self._buf.data[off : off + size].toreadonly()

    def write(self, pa: int, data: bytes) -> None:
        n = len(data)
        off = self._offset(pa, n)
        if n:
            self._buf[off : off + n] = np.frombuffer(data, dtype=np.uint8)

    # -- words -------------------------------------------------------------------------
    def read32(self, pa: int) -> int:
        off = self._offset(pa, 4)
        if off & 3 == 0:
            return int(self._u32[off >> 2])
        return int.from_bytes(self._buf[off : off + 4].tobytes(), "little")

    def read64(self, pa: int) -> int:
        off = self._offset(pa, 8)
        if off & 7 == 0:
            return int(self._u64[off >> 3])
        return int.from_bytes(self._buf[off : off + 8].tobytes(), "little")

    def write32(self, pa: int, value: int) -> None:
        off = self._offset(pa, 4)
        value &= _MASK32
        if off & 3 == 0:
            self._u32[off >> 2] = value
        else:
            self._buf[off : off + 4] = np.frombuffer(value.to_bytes(4, "little"), dtype=np.uint8)

    def write64(self, pa: int, value: int) -> None:
        off = self._offset(pa, 8)
        value &= _MASK64
        if off & 7 == 0:
            self._u64[off >> 3] = value
        else:
            self._buf[off : off + 8] = np.frombuffer(value.to_bytes(8, "little"), dtype=np.uint8)

    def cas64(self, pa: int, expected: int, new: int) -> int:
        # The model is single-threaded, so read-compare-write is atomic with respect to
        # every other agent; the bounds check happens once, before either half.
        old = self.read64(pa)
        if old == expected:
            self.write64(pa, new)
        return old

    # -- inspection --------------------------------------------------------------------
    def __len__(self) -> int:
        """Size of the region in bytes."""
        return self.size_bytes
