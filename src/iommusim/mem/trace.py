"""Record every physical-memory access a component makes.

:class:`TracingMemory` wraps any :class:`~iommusim.mem.protocol.PhysicalMemory` and reports
each access as a :class:`MemAccess` to a sink: a list (the record is appended) or any callable.
The explainer uses it to show which table entries a translation loaded, in order; tests use it
to pin the spec's access order (e.g. the device-context load before the process-context load,
or the A/D update as a compare-and-swap).

An access that fails with :class:`~iommusim.errors.BusError` is recorded too, with ``fault``
set to the error's kind and ``value`` 0, and the error is then re-raised unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from iommusim.errors import BusError
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["AccessKind", "MemAccess", "TracingMemory"]

AccessKind = Literal["r", "w", "cas"]

_READ: Final = "r"
_WRITE: Final = "w"
_CAS: Final = "cas"


@dataclass(frozen=True, slots=True)
class MemAccess:
    """One access as the memory saw it.

    ``value`` is the data as a little-endian integer of ``size`` bytes: the data read for
    ``"r"``, the data stored for ``"w"``, and the word found for ``"cas"`` (the swap happened
    iff ``value == expected``, in which case ``new`` was stored).
    """

    kind: AccessKind
    pa: int
    size: int
    value: int
    expected: int | None = None
    new: int | None = None
    fault: str | None = None

    @property
    def swapped(self) -> bool:
        """For ``"cas"``: whether the new value was stored."""
        return self.kind == _CAS and self.fault is None and self.value == self.expected

    def __str__(self) -> str:
        width = 2 * self.size
        head = f"{self.kind:<3} {self.pa:#018x} [{self.size}]"
        if self.fault is not None:
            return f"{head} -> {self.fault} fault"
        if self.kind == _CAS:
            outcome = "swapped" if self.swapped else "kept"
            return (
                f"{head} found {self.value:#0{width + 2}x} expected {self.expected:#0{width + 2}x}"
                f" new {self.new:#0{width + 2}x} ({outcome})"
            )
        return f"{head} {self.value:#0{width + 2}x}"


Sink = list[MemAccess] | Callable[[MemAccess], None]


class TracingMemory:
    """Forwards every access to ``inner`` and reports it to ``sink``."""

    __slots__ = ("_emit", "inner", "sink")

    def __init__(self, inner: PhysicalMemory, sink: Sink) -> None:
        self.inner = inner
        self.sink = sink
        self._emit: Callable[[MemAccess], None] = sink.append if isinstance(sink, list) else sink

    def read(self, pa: int, size: int) -> bytes:
        try:
            data = self.inner.read(pa, size)
        except BusError as e:
            self._emit(MemAccess(_READ, pa, size, 0, fault=e.kind))
            raise
        self._emit(MemAccess(_READ, pa, size, int.from_bytes(data, "little")))
        return data

    def write(self, pa: int, data: bytes) -> None:
        size = len(data)
        value = int.from_bytes(data, "little")
        try:
            self.inner.write(pa, data)
        except BusError as e:
            self._emit(MemAccess(_WRITE, pa, size, value, fault=e.kind))
            raise
        self._emit(MemAccess(_WRITE, pa, size, value))

    def _load(self, pa: int, size: int, load: Callable[[int], int]) -> int:
        try:
            value = load(pa)
        except BusError as e:
            self._emit(MemAccess(_READ, pa, size, 0, fault=e.kind))
            raise
        self._emit(MemAccess(_READ, pa, size, value))
        return value

    def _store(self, pa: int, size: int, value: int, store: Callable[[int, int], None]) -> None:
        value &= (1 << (8 * size)) - 1
        try:
            store(pa, value)
        except BusError as e:
            self._emit(MemAccess(_WRITE, pa, size, value, fault=e.kind))
            raise
        self._emit(MemAccess(_WRITE, pa, size, value))

    def read32(self, pa: int) -> int:
        return self._load(pa, 4, self.inner.read32)

    def read64(self, pa: int) -> int:
        return self._load(pa, 8, self.inner.read64)

    def write32(self, pa: int, value: int) -> None:
        self._store(pa, 4, value, self.inner.write32)

    def write64(self, pa: int, value: int) -> None:
        self._store(pa, 8, value, self.inner.write64)

    def cas64(self, pa: int, expected: int, new: int) -> int:
        try:
            old = self.inner.cas64(pa, expected, new)
        except BusError as e:
            self._emit(MemAccess(_CAS, pa, 8, 0, expected=expected, new=new, fault=e.kind))
            raise
        self._emit(MemAccess(_CAS, pa, 8, old, expected=expected, new=new))
        return old
