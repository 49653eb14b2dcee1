"""The RISC-V IOMMU: a composition of its parts, and the inbound request entry points.

Faults are data (DESIGN rule 3): :meth:`RiscvIommu.translate` never raises for any request
or memory image; it returns a :class:`Response` and writes the fault record the spec asks for.

The parts, one module each: the register file (:mod:`~iommusim.hw.riscv.regs`), the table
walks (:mod:`~iommusim.hw.riscv.translate`) and the request path past the IOTLB
(:mod:`~iommusim.hw.riscv.requests`), the fault queue (:mod:`~iommusim.hw.riscv.faultq`), the
command queue (:mod:`~iommusim.hw.riscv.commands`), ATS (:mod:`~iommusim.hw.riscv.ats`), the
page-request queue (:mod:`~iommusim.hw.riscv.pagereq`) and the cycle counter against virtual
time (:mod:`~iommusim.hw.riscv.cycles`); the queues share the ring arithmetic of
:mod:`~iommusim.hw.riscv.queues`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Final

from iommusim.bits.riscv import causes as C
from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import (
    FCTL_BE,
    MODE_BARE,
    OFF_IOCOUNTINH,
    OFF_IOHPMCYCLES,
    TR_REQ_CTL,
    TR_REQ_CTL_GO,
    TR_REQ_IOVA,
    TR_RESPONSE,
)
from iommusim.bits.riscv.structures import DC_TC
from iommusim.errors import BusError, ModelError
from iommusim.hw.riscv.ats import InvalidationTracker
from iommusim.hw.riscv.commands import CommandQueue
from iommusim.hw.riscv.cycles import CycleCounter
from iommusim.hw.riscv.faultq import FaultQueue
from iommusim.hw.riscv.faults import TranslationFault
from iommusim.hw.riscv.mrif import MrifOutcome
from iommusim.hw.riscv.mrif import deliver as deliver_mrif
from iommusim.hw.riscv.pagereq import PageRequestQueue
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.hw.riscv.regs import Registers, WireObserver
from iommusim.hw.riscv.requests import Translator
from iommusim.hw.riscv.transaction import STATUS_SUCCESS, Message, Request, Response
from iommusim.hw.riscv.translate import (
    AT_ATS,
    AT_TRANSLATED,
    AT_UNTRANSLATED,
    TranslationEngine,
    swap32,
)
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sim.clock import VirtualClock

__all__ = ["RiscvIommu"]

_PPN_MASK: Final = (1 << TR_RESPONSE["ppn"].width) - 1
_TC_DTF: Final = DC_TC.mask("dtf")
_M64: Final = (1 << 64) - 1


def _on_the_wire(req: Request) -> Request:
    """``req`` as the bus delivers it: a 24-bit device_id, a 20-bit process_id and a 64-bit
    address (riscv-iommu: "Process to translate an IOVA": "device_id", "process_id", "IOVA";
    PCIe carries no more bits). Wider or negative values are taken modulo those widths, the
    bus-level answer for a request no device could send (like a register write's value)."""
    return replace(
        req,
        device_id=req.device_id & 0xFFFFFF,
        iova=req.iova & _M64,
        process_id=req.process_id & 0xFFFFF,
    )


class RiscvIommu:
    """A RISC-V IOMMU over a physical memory.

    ``mem`` is the IOMMU's own port to memory (wrap it in
    :class:`iommusim.mem.FaultInjectingMemory` to inject faults). Outbound messages (ATS
    invalidations, page-request-group responses, IOFENCE.C sync requests) go to ``port``.

    With a ``clock``, ``iohpmcycles`` counts the IOMMU's cycles (``params.clock_hz``) as
    virtual time passes and ATS.INVAL commands time out after ``params.ats_inval_timeout_ns``;
    without one no time passes (advance ``iohpmcycles`` with :meth:`tick`). While
    ``iohpmcycles`` can raise an overflow interrupt (OF = 0, not inhibited) an event stands on
    the clock at its wrap, so ``clock.run_all()`` runs up to that time.
    """

    def __init__(
        self,
        mem: PhysicalMemory,
        params: RiscvIommuParams,
        port: Callable[[Message], None] | None = None,
        *,
        clock: VirtualClock | None = None,
    ) -> None:
        self.params = params
        self.mem = mem
        self.port = port
        self.clock = clock
        self._ats = InvalidationTracker(clock, params.ats_inval_timeout_ns)
        self.regs = Registers(params, self)
        self.engine = TranslationEngine(params, mem, self.regs)
        self.wired: list[int] = []
        self.fq = FaultQueue(mem, self.regs)
        self.translator = Translator(params, self.regs, self.engine, self.fq)
        self._walk = self.translator.walk
        self.cq = CommandQueue(params, mem, self.regs, self.engine, self._ats, self._emit)
        self.pq = PageRequestQueue(mem, self.regs, self.engine, self.fq, self._emit)
        #: riscv-iommu: "PCIe ATS Page Request handling": a Page Request message arrived
        #: (:meth:`PageRequestQueue.request <iommusim.hw.riscv.pagereq.PageRequestQueue.request>`).
        self.page_request = self.pq.request
        self._cycles = None if clock is None else CycleCounter(self.regs, clock, params.clock_hz)

    # ------------------------------------------------------------------ registers
    def read_register(self, offset: int, size: int) -> int:
        if self._cycles is not None:
            self._cycles.sync()
        return self.regs.read(offset, size)

    def write_register(self, offset: int, size: int, value: int) -> None:
        cycles = self._cycles
        if cycles is None:
            self.regs.write(offset, size, value)
            return
        # Count the cycles up to this write under the old iocountinh/iohpmcycles first.
        cycles.sync()
        self.regs.write(offset, size, value)
        if offset < OFF_IOHPMCYCLES + 8 and offset + size > OFF_IOCOUNTINH:
            cycles.arm()

    def tick(self, cycles: int) -> None:
        """Advance ``iohpmcycles`` by ``cycles`` IOMMU clock cycles (riscv-iommu:
        "Performance-monitoring cycles counter (iohpmcycles)"), for an IOMMU without a clock;
        an IOMMU with a clock counts as the clock advances."""
        if self.clock is not None:
            raise ModelError("tick() is for an IOMMU without a clock; advance its clock instead")
        if cycles < 0:
            raise ModelError(f"cycles must be non-negative, not {cycles}")
        self.regs.advance_cycles(cycles)

    # ------------------------------------------------------------------ wired interrupts
    def add_wire_observer(self, observer: WireObserver) -> None:
        """Call ``observer(vector, level)`` whenever an interrupt wire changes level
        (riscv-iommu: "ipsr": with fctl.WSI = 1 "the interrupt-pending bit drives the wire
        selected by the corresponding icvec field")."""
        self.regs.add_wire_observer(observer)

    def remove_wire_observer(self, observer: WireObserver) -> None:
        self.regs.remove_wire_observer(observer)

    def wire_level(self, vector: int) -> bool:
        """Whether the interrupt wire of ``vector`` is asserted."""
        return self.regs.wire_level(vector)

    # RegisterHost ---------------------------------------------------------
    def send_msi(self, addr: int, data: int) -> None:
        """Write an IOMMU-generated MSI (riscv-iommu: "MSI configuration table")."""
        try:
            self.mem.write32(addr, swap32(data) if self.regs.fctl & FCTL_BE else data)
        except BusError:
            self.fq.report(FaultRecord(C.MSI_WRITE_FAULT, 0, 0, False, 0, False, addr))

    def wired_interrupt(self, vector: int) -> None:
        self.wired.append(vector)

    def debug_translate(self) -> None:
        """riscv-iommu: "Debug support": a translation requested through tr_req_ctl."""
        r = self.regs
        ctl = TR_REQ_CTL.decode(r.tr_req_ctl)
        nw = bool(ctl["nw"])
        req = Request(
            device_id=ctl["did"],
            iova=r.tr_req_iova & TR_REQ_IOVA.mask("vpn"),
            is_write=not nw,
            at=AT_UNTRANSLATED,
            pid_valid=bool(ctl["pv"]),
            process_id=ctl["pid"],
            priv_req=bool(ctl["priv"]),
            exec_req=bool(ctl["exe"]) and nw,
        )
        resp = self.translate(req)
        if resp.ok and resp.is_mrif:
            # An MRIF-mode MSI PTE stops a debug translation with cause 260.
            resp = self.translator.fault(req, TranslationFault(C.TTYPE_DISALLOWED))
        if not resp.ok:
            r.tr_response = TR_RESPONSE.encode(fault=1)
        else:
            r.tr_response = TR_RESPONSE.encode(ppn=resp.pa >> 12 & _PPN_MASK, pbmt=resp.pbmt)
        r.tr_req_ctl &= ~TR_REQ_CTL_GO

    # ------------------------------------------------------------------ faults
    def report_fault(self, record: FaultRecord) -> None:
        """Write a fault record (riscv-iommu: "Fault/Event-Queue (FQ)")."""
        self.fq.report(record)

    @property
    def last_fault(self) -> FaultRecord | None:
        """The record of the last request that faulted, whether or not the fault queue took
        it (DC.tc.DTF, a queue that is off or full)."""
        return self.translator.last_fault

    # ------------------------------------------------------------------ device writes
    def device_write(
        self, req: Request, data: int, size: int = 4
    ) -> tuple[Response, MrifOutcome | None]:
        """A device's write of ``size`` bytes carrying ``data`` (the bytes as a little-endian
        integer), as a platform bus presents it: translated as :meth:`translate` does; when it
        lands on an MRIF-mode MSI PTE the IOMMU itself sets the interrupt-pending bit in the
        MRIF and sends the notice MSI (:mod:`iommusim.hw.riscv.mrif`), and the second item says
        what happened. Otherwise the second item is ``None`` and the bus performs the write at
        ``response.pa`` (or drops it when the response is not a success)."""
        if not req.is_write or req.at == AT_ATS:
            raise ModelError("device_write needs an untranslated or translated write request")
        resp = self.translate(req)
        if not (resp.ok and resp.is_mrif):
            return resp, None
        # An MRIF-mode answer always comes from a walk, which left its DC in last_dc.
        dc = self.translator.last_dc
        out = deliver_mrif(self, req, resp, data, size, dc is not None and bool(dc.tc & _TC_DTF))
        if out.record is not None:
            self.translator.last_fault = out.record
        return resp, out

    # ------------------------------------------------------------------ translation
    def translate(self, req: Request) -> Response:
        """riscv-iommu: "Process to translate an IOVA" for one request."""
        regs = self.regs
        at = req.at
        counted = regs.hpm_events
        if counted:
            # HPM events 1-3 (riscv-iommu: "Standard Events list"): every request of the type
            # counts -- an IOTLB hit, a walk or a fault alike. They support IDT = 0 only, so
            # the device_id and process_id are the only IDs their filters use.
            event = 1 if at == AT_UNTRANSLATED else (2 if at == AT_TRANSLATED else 3)
            if event in counted:
                regs.hpm_count(
                    event, req.device_id, req.pid_valid, req.process_id, False, 0, False, 0
                )
        if at == AT_UNTRANSLATED and not req.exec_req:
            eng = self.engine
            key = (
                req.device_id,
                req.process_id if req.pid_valid else -1,
                req.pid_valid and req.priv_req,
                req.iova >> 12,
            )
            hit = eng.iotlb.lookup(key)
            off = 0xFFF
            if hit is None and eng.sp_shifts:
                hit = eng.superpage_lookup(*key)
                off = (1 << hit.size_lg2) - 1 if hit is not None else 0
            if (
                hit is not None
                and hit.ok & (2 if req.is_write else 1)
                and (regs.ddtp & 0xF) > MODE_BARE
            ):
                return Response(
                    STATUS_SUCCESS,
                    pa=hit.pa | (req.iova & off),
                    pbmt=hit.pbmt,
                    size_lg2=hit.size_lg2,
                )
        if req.device_id >> 24 or req.iova >> 64 or req.process_id >> 20:
            req = _on_the_wire(req)
        try:
            out = self._walk(
                req.device_id,
                req.iova,
                req.at,
                req.pid_valid,
                req.process_id,
                req.supervisor,
                req.reads,
                req.writes,
                req.executes,
                req.no_write,
            )
        except TranslationFault as f:
            return self.translator.fault(req, f)
        if type(out) is tuple:
            return Response(STATUS_SUCCESS, pa=out[0], pbmt=out[1], size_lg2=out[2])
        return out  # type: ignore[return-value]

    def translate_pa(
        self,
        device_id: int,
        iova: int,
        is_write: bool = False,
        process_id: int = -1,
        priv: bool = False,
    ) -> int:
        """The DMA fast path: an untranslated read or write, answered as a plain int.

        Returns the physical address, or ``-cause`` when the request faulted (the fault is
        recorded exactly as by :meth:`translate`, and is :attr:`last_fault`), or ``-1`` for an
        MSI to an MRIF-mode interrupt file (no memory address; use :meth:`translate` for its
        fields). No object is built for an IOTLB hit, an ordinary walk or a fault.
        """
        regs = self.regs
        if 1 in regs.hpm_events:
            # HPM event 1, "Untranslated requests": hit, walk or fault alike (see translate).
            regs.hpm_count(
                1,
                device_id,
                process_id >= 0,
                process_id if process_id >= 0 else 0,
                False,
                0,
                False,
                0,
            )
        tlb = self.engine.iotlb
        if tlb:  # an empty (or disabled) IOTLB cannot hit: no key to build
            key = (device_id, process_id, priv, iova >> 12)
            hit = tlb.get(key)
            off = 0xFFF
            if hit is not None:
                if tlb.lru:  # BoundedCache.lookup, inlined
                    tlb.move_to_end(key)
            elif self.engine.sp_shifts:
                hit = self.engine.superpage_lookup(*key)
                off = (1 << hit.size_lg2) - 1 if hit is not None else 0
            if (
                hit is not None
                and hit.ok & (2 if is_write else 1)
                and (regs.ddtp & 0xF) > MODE_BARE
            ):
                return hit.pa | (iova & off)
        # The fields of Request(device_id, iova, is_write, pid_valid=pv, process_id=pid,
        # priv_req=sup), derived here as plain values: it reads unless it writes, never
        # executes; NW is irrelevant to an untranslated request.
        pv = process_id >= 0
        pid = process_id if pv else 0
        sup = priv and pv
        if device_id >> 24 or iova >> 64 or pid >> 20:
            # Only the bus's bits reach the IOMMU (see _on_the_wire); checked after the IOTLB,
            # which holds no entry for a value outside them.
            device_id &= 0xFFFFFF
            iova &= _M64
            pid &= 0xFFFFF
        try:
            out = self._walk(
                device_id, iova, AT_UNTRANSLATED, pv, pid, sup, not is_write, is_write, False, True
            )
        except TranslationFault as f:
            # TTYP: untranslated write (3) or read (2).
            self.translator.record(f, 3 if is_write else 2, device_id, pv, pid, sup, iova)
            return -f.cause
        if type(out) is tuple:
            return out[0]
        return -1 if out.is_mrif else out.pa  # type: ignore[union-attr]

    # ------------------------------------------------------------------ command queue, ATS
    def process_commands(self, max_commands: int | None = None) -> int:
        """Fetch and execute commands from cqh while the queue can make progress
        (riscv-iommu: "Command-Queue (CQ)"). Returns the number executed."""
        return self.cq.process(max_commands)

    def _emit(self, msg: Message) -> None:
        if self.port is not None:
            self.port(msg)

    def ats_inval_completion(self, itags: list[int], cc: int) -> None:
        """A PCIe "Invalidation Completion" for the given ITAGs arrived (cc = 0 means 8)."""
        self._ats.completion(itags, cc)

    @property
    def invalidations_outstanding(self) -> int:
        """ATS.INVAL requests still waiting for their completions (an IOFENCE.C behind them
        stalls the command queue; run :meth:`process_commands` again once this reaches 0)."""
        return self._ats.outstanding
