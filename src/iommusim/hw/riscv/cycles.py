"""The IOMMU's cycle count against virtual time (riscv-iommu: "Performance-monitoring cycles
counter (iohpmcycles)").

With a clock, ``iohpmcycles`` counts ``params.clock_hz`` cycles per second of virtual time,
brought up to date lazily (on register access and at its wrap); while the wrap can raise an
overflow interrupt (OF = 0, not inhibited) one event stands on the clock at that instant, so
the interrupt is raised on time without any register access.
"""

from __future__ import annotations

from iommusim.hw.riscv.regs import Registers
from iommusim.sim.clock import Event, VirtualClock

__all__ = ["CycleCounter"]


class CycleCounter:
    """Keeps ``regs.iohpmcycles`` in step with ``clock``."""

    __slots__ = ("_at", "_clock", "_event", "_hz", "_regs")

    def __init__(self, regs: Registers, clock: VirtualClock, clock_hz: int) -> None:
        self._regs = regs
        self._clock = clock
        self._hz = clock_hz
        self._event: Event | None = None
        self._at = self._cycles()  # the clock's cycle count when iohpmcycles was last synced
        self.arm()

    def _cycles(self) -> int:
        return self._clock.now * self._hz // 1_000_000_000

    def sync(self) -> None:
        """Bring iohpmcycles up to the clock."""
        now = self._cycles()
        delta = now - self._at
        if delta:
            self._at = now
            self._regs.advance_cycles(delta)

    def arm(self) -> None:
        """Keep one clock event at the instant iohpmcycles wraps, when that wrap would set OF
        and pmip (call after anything that may change when, or whether, it wraps)."""
        if self._event is not None:
            self._event.cancel()
            self._event = None
        left = self._regs.cycles_until_wrap()
        if left is None:
            return
        clock = self._clock
        target = self._at + left
        when = -(-target * 1_000_000_000 // self._hz)  # first ns at >= target
        self._event = clock.call_at(max(when, clock.now), self._on_wrap)

    def _on_wrap(self) -> None:
        self._event = None
        self.sync()
        self.arm()
