"""The hardware performance monitor of the RISC-V IOMMU register file.

riscv-iommu: "Performance-monitoring cycles counter (iohpmcycles)", "Performance-monitoring
event counters (iohpmctr1-31)", "Performance-monitoring event selectors (iohpmevt1-31)",
"Performance-monitoring counter inhibits (iocountinh)" and the "Standard Events list". The
logic works on the counter and selector values the register file holds; field positions come
from :data:`iommusim.bits.riscv.regs.IOHPMEVT`.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv.regs import EVENTS_WITH_IDT1, HPM_OF, IOHPMEVT, IPSR_PMIP, WALK_EVENTS
from iommusim.hw.riscv.interrupts import InterruptLogic

__all__ = ["HpmLogic"]

_EVT_EVENTID_MASK: Final = IOHPMEVT.mask("eventid")
_EVT_DMASK: Final = IOHPMEVT.mask("dmask")
_EVT_PID_SHIFT: Final = IOHPMEVT["pid_pscid"].lsb
_EVT_PID_MASK: Final = (1 << IOHPMEVT["pid_pscid"].width) - 1
_EVT_DID_SHIFT: Final = IOHPMEVT["did_gscid"].lsb
_EVT_DID_MASK: Final = (1 << IOHPMEVT["did_gscid"].width) - 1
_EVT_PV_PSCV: Final = IOHPMEVT.mask("pv_pscv")
_EVT_DV_GSCV: Final = IOHPMEVT.mask("dv_gscv")
_EVT_IDT: Final = IOHPMEVT.mask("idt")
_EVT_OF: Final = IOHPMEVT.mask("of")


class HpmLogic(InterruptLogic):
    """Event counting, overflow and the cycle counter over the register file's values; an
    overflow signals ``ipsr.pmip`` through the interrupt logic."""

    __slots__ = (
        "_by_event",
        "_ctr_mask",
        "_cyc_mask",
        "_has_hpm",
        "_num_hpm",
        "hpm_events",
        "hpm_walks",
        "iocountinh",
        "iocountovf",
        "iohpmctr",
        "iohpmcycles",
        "iohpmevt",
    )

    # State held for the register file, which sets it up.
    _has_hpm: bool
    _num_hpm: int
    _ctr_mask: int
    _cyc_mask: int
    _by_event: dict[int, tuple[int, ...]]
    hpm_events: frozenset[int]
    hpm_walks: bool
    iocountovf: int
    iocountinh: int
    iohpmcycles: int
    iohpmctr: list[int]
    iohpmevt: list[int]

    def _index_events(self) -> None:
        """Rebuild the event -> counters index after an ``iohpmevt`` write."""
        by_event: dict[int, list[int]] = {}
        for n in range(1, self._num_hpm):
            event_id = self.iohpmevt[n] & _EVT_EVENTID_MASK
            if event_id:
                by_event.setdefault(event_id, []).append(n)
        self._by_event = {e: tuple(ns) for e, ns in by_event.items()}
        self.hpm_events = frozenset(self._by_event)
        self.hpm_walks = not self.hpm_events.isdisjoint(WALK_EVENTS)

    def hpm_count(
        self,
        event_id: int,
        did: int,
        pv: bool,
        pid: int,
        gscv: bool,
        gscid: int,
        pscv: bool,
        pscid: int,
    ) -> None:
        """Count one ``event_id`` event of a transaction in every matching counter.

        riscv-iommu: "Performance-monitoring event selectors (iohpmevt1-31)", the filtering
        options table and "Performance-monitoring counter inhibits (iocountinh)".
        """
        counters = self._by_event.get(event_id)
        if counters is None:
            return
        inh = self.iocountinh
        idt_ok = event_id in EVENTS_WITH_IDT1
        for n in counters:
            if inh >> n & 1:
                continue
            evt = self.iohpmevt[n]
            if evt & _EVT_IDT and not idt_ok:
                # "When the programmed IDT setting is not supported for an event then the
                # associated counter does not increment."
                continue
            if evt & (_EVT_DV_GSCV | _EVT_PV_PSCV):
                f_pid = evt >> _EVT_PID_SHIFT & _EVT_PID_MASK
                f_did = evt >> _EVT_DID_SHIFT & _EVT_DID_MASK
                if evt & _EVT_DMASK:
                    # Mask the low bits up to and including the first 0 bit of DID_GSCID.
                    dmask = ~(f_did ^ (f_did + 1))
                else:
                    dmask = -1
                if evt & _EVT_IDT:
                    if evt & _EVT_DV_GSCV and not (gscv and (gscid ^ f_did) & dmask == 0):
                        continue
                    if evt & _EVT_PV_PSCV and not (pscv and pscid == f_pid):
                        continue
                else:
                    if evt & _EVT_DV_GSCV and (did ^ f_did) & dmask:
                        continue
                    # "If the transaction has a valid process_id, counter increments if
                    # process_id matches": a transaction without one does not count.
                    if evt & _EVT_PV_PSCV and not (pv and pid == f_pid):
                        continue
            value = self.iohpmctr[n] + 1
            if value > self._ctr_mask:
                value = 0
                self._overflow(n)
            self.iohpmctr[n] = value

    def _overflow(self, n: int) -> None:
        """Counter ``n`` (0 = iohpmcycles) wrapped: set OF; pmip on its 0 -> 1 edge only."""
        if n == 0:
            if self.iohpmcycles & HPM_OF:
                return
            self.iohpmcycles |= HPM_OF
        else:
            if self.iohpmevt[n] & _EVT_OF:
                return
            self.iohpmevt[n] |= _EVT_OF
        self.iocountovf |= 1 << n
        self._raise(IPSR_PMIP)

    def cycles_until_wrap(self) -> int | None:
        """Cycles until ``iohpmcycles`` wraps from its current value, or ``None`` when that
        wrap could raise no interrupt: no HPM, counting inhibited (iocountinh.CY) or OF
        already 1 (riscv-iommu: "iohpmcycles": "If the OF bit is already one, then no
        interrupt request is generated")."""
        if not self._has_hpm or self.iocountinh & 1 or self.iohpmcycles & HPM_OF:
            return None
        mask = self._cyc_mask
        return mask - (self.iohpmcycles & mask) + 1

    def advance_cycles(self, n: int) -> None:
        """Advance ``iohpmcycles`` by ``n`` cycles unless inhibited (iocountinh.CY).

        riscv-iommu: "Performance-monitoring cycles counter (iohpmcycles)".
        """
        if not self._has_hpm or self.iocountinh & 1 or n <= 0:
            return
        mask = self._cyc_mask
        value = (self.iohpmcycles & mask) + n
        wrapped = value > mask
        self.iohpmcycles = self.iohpmcycles & HPM_OF | value & mask
        if wrapped:
            self._overflow(0)
