"""The interrupt sink: where MSIs land and from where the software's handlers run.

Modelled on an AIA IMSIC interrupt file: a 32-bit little-endian write of value ``n`` to the
``seteipnum`` word (offset 0) of the window makes interrupt identity ``n`` pending. The sink
delivers a pending identity to its registered handler ``irq_latency_ns`` later on the virtual
clock, so handlers run between operations, never inside a hardware walk. Identities with no
handler are counted as spurious, as an interrupt controller would drop them.
"""

from __future__ import annotations

from collections.abc import Callable

from iommusim.errors import BusError, Busy, InvalidArgument
from iommusim.sim.clock import VirtualClock

__all__ = ["InterruptSink"]

_SETEIPNUM = 0


class InterruptSink:
    """An MSI target window (region-relative addresses) plus a handler table."""

    def __init__(self, clock: VirtualClock, latency_ns: int, num_ids: int = 2048) -> None:
        self._clock = clock
        self._latency = latency_ns
        self.num_ids = num_ids
        self._handlers: dict[int, Callable[[], None]] = {}
        self._pending: set[int] = set()
        self.received: dict[int, int] = {}
        self.spurious = 0

    # ------------------------------------------------------------------ software side
    def request_irq(self, identity: int, handler: Callable[[], None]) -> None:
        """Install ``handler`` for ``identity`` (EINVAL if out of range, EBUSY-like reuse)."""
        if not 0 < identity < self.num_ids:
            raise InvalidArgument(
                f"interrupt identity must be in [1, {self.num_ids - 1}], not {identity}"
            )
        if identity in self._handlers:
            raise Busy(f"interrupt identity {identity} already has a handler")
        self._handlers[identity] = handler

    def free_irq(self, identity: int) -> None:
        self._handlers.pop(identity, None)

    # ------------------------------------------------------------------ bus side
    def raise_identity(self, identity: int) -> None:
        """Make ``identity`` pending; a second MSI while pending merges, as in an IMSIC."""
        self.received[identity] = self.received.get(identity, 0) + 1
        if identity in self._pending:
            return
        self._pending.add(identity)
        self._clock.call_after(self._latency, lambda: self._deliver(identity))

    def _deliver(self, identity: int) -> None:
        self._pending.discard(identity)
        handler = self._handlers.get(identity)
        if handler is None:
            self.spurious += 1
            return
        handler()

    def read(self, pa: int, size: int) -> bytes:
        # seteipnum reads as zero (AIA: "reads of seteipnum_le return zero").
        if size != 4 or pa % 4:
            raise BusError("access", pa)
        return bytes(4)

    def write(self, pa: int, data: bytes) -> None:
        if len(data) != 4 or pa % 4:
            raise BusError("access", pa)
        if pa == _SETEIPNUM:
            identity = int.from_bytes(data, "little")
            if 0 < identity < self.num_ids:
                self.raise_identity(identity)

    def read32(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 4), "little")

    def read64(self, pa: int) -> int:
        raise BusError("access", pa)

    def write32(self, pa: int, value: int) -> None:
        self.write(pa, value.to_bytes(4, "little"))

    def write64(self, pa: int, value: int) -> None:
        raise BusError("access", pa)

    def cas64(self, pa: int, expected: int, new: int) -> int:
        raise BusError("access", pa)
