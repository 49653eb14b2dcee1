"""The RISC-V IOMMU: registers, translation, fault queue, command queue, page requests.

Faults are data (DESIGN rule 3): :meth:`RiscvIommu.translate` never raises for any request
or memory image; it returns a :class:`Response` and writes the fault record the spec asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Final

from iommusim.bits.riscv.regs import (
    CQCSR_CMD_ILL,
    CQCSR_CMD_TO,
    CQCSR_CQMF,
    CQCSR_CQON,
    CQCSR_FENCE_W_IP,
    FQCSR_FQMF,
    FQCSR_FQOF,
    FQCSR_FQON,
    MODE_BARE,
    MODE_OFF,
    OFF_IOCOUNTINH,
    OFF_IOHPMCYCLES,
    PQCSR_PQMF,
    PQCSR_PQOF,
    PQCSR_PQON,
    cap,
)
from iommusim.errors import BusError, ModelError
from iommusim.hw.riscv import faults as F
from iommusim.hw.riscv.context import DeviceContext
from iommusim.hw.riscv.faults import TranslationFault
from iommusim.hw.riscv.mrif import MrifOutcome
from iommusim.hw.riscv.mrif import deliver as deliver_mrif
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.hw.riscv.regs import Registers, WireObserver
from iommusim.hw.riscv.transaction import (
    STATUS_CA,
    STATUS_SUCCESS,
    STATUS_UR,
    Message,
    Request,
    Response,
)
from iommusim.hw.riscv.translate import (
    AT_ATS,
    AT_TRANSLATED,
    AT_UNTRANSLATED,
    P_R,
    P_W,
    P_X,
    TranslationEngine,
    swap32,
    swap64,
)
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sim.clock import Event, VirtualClock

__all__ = ["RiscvIommu"]

_PPN_MASK: Final = (1 << 44) - 1
_ALL_PERMS: Final = P_R | P_W | P_X
_TC_DTF: Final = 1 << 4
_TC_EN_ATS: Final = 1 << 1
_TC_EN_PRI: Final = 1 << 2
_TC_PRPR: Final = 1 << 6

# riscv-iommu: "IOMMU command opcodes".
OP_IOTINVAL: Final = 1
OP_IOFENCE: Final = 2
OP_IODIR: Final = 3
OP_ATS: Final = 4

# PCIe Page Request Group Response codes.
PRG_SUCCESS: Final = 0
PRG_INVALID_REQUEST: Final = 1
PRG_RESPONSE_FAILURE: Final = 0xF


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
        if params.ats_inval_timeout_ns is not None and clock is None:
            raise ModelError("ats_inval_timeout_ns needs a clock: pass clock= or set it to None")
        self.params = params
        self.mem = mem
        self.port = port
        self.clock = clock
        self._timed_out: set[int] = set()  # itags whose invalidation timed out, unreported
        self._inval_timers: dict[int, Event] = {}
        self._cyc_at = 0  # the clock's cycle count when iohpmcycles was last brought up to it
        self._cyc_event: Event | None = None
        self.regs = Registers(params, self)
        self.engine = TranslationEngine(params, mem, self.regs)
        self.wired: list[int] = []
        self._next_itag = 0
        self._pending_inval: dict[int, int] = {}  # itag -> completions still expected
        self._completions: dict[int, int] = {}  # itag -> completions needed (cc)
        self._received: dict[int, int] = {}  # itag -> completions received
        self._last_dc: DeviceContext | None = None
        # Range sizes of Bare stages: [s1 SXL=0, s1 SXL=1, G GXL=0, G GXL=1] (FORMAT 6.4).
        self._bare_log2 = (
            self._bare_log2_of(True, False),
            self._bare_log2_of(True, True),
            self._bare_log2_of(False, False),
            self._bare_log2_of(False, True),
        )
        if clock is not None:
            self._cyc_at = self._clock_cycles()
            self._arm_cycle_overflow()

    # ------------------------------------------------------------------ registers
    def read_register(self, offset: int, size: int) -> int:
        if self.clock is not None:
            self._sync_cycles()
        return self.regs.read(offset, size)

    def write_register(self, offset: int, size: int, value: int) -> None:
        if self.clock is None:
            self.regs.write(offset, size, value)
            return
        # Count the cycles up to this write under the old iocountinh/iohpmcycles first.
        self._sync_cycles()
        self.regs.write(offset, size, value)
        if offset < OFF_IOHPMCYCLES + 8 and offset + size > OFF_IOCOUNTINH:
            self._arm_cycle_overflow()

    # ------------------------------------------------------------------ time
    def tick(self, cycles: int) -> None:
        """Advance ``iohpmcycles`` by ``cycles`` IOMMU clock cycles (riscv-iommu:
        "Performance-monitoring cycles counter (iohpmcycles)"), for an IOMMU without a clock;
        an IOMMU with a clock counts as the clock advances."""
        if self.clock is not None:
            raise ModelError("tick() is for an IOMMU without a clock; advance its clock instead")
        if cycles < 0:
            raise ModelError(f"cycles must be non-negative, not {cycles}")
        self.regs.advance_cycles(cycles)

    def _clock_cycles(self) -> int:
        clock = self.clock
        return 0 if clock is None else clock.now * self.params.clock_hz // 1_000_000_000

    def _sync_cycles(self) -> None:
        """Bring iohpmcycles up to the clock (lazily: on register access and at its wrap)."""
        now = self._clock_cycles()
        delta = now - self._cyc_at
        if delta:
            self._cyc_at = now
            self.regs.advance_cycles(delta)

    def _arm_cycle_overflow(self) -> None:
        """Keep one clock event at the instant iohpmcycles wraps, when that wrap would set OF
        and pmip, so the interrupt is raised on time without any register access."""
        if self._cyc_event is not None:
            self._cyc_event.cancel()
            self._cyc_event = None
        clock = self.clock
        left = self.regs.cycles_until_wrap()
        if clock is None or left is None:
            return
        target = self._cyc_at + left
        when = -(-target * 1_000_000_000 // self.params.clock_hz)  # first ns at >= target
        self._cyc_event = clock.call_at(max(when, clock.now), self._on_cycle_wrap)

    def _on_cycle_wrap(self) -> None:
        self._cyc_event = None
        self._sync_cycles()
        self._arm_cycle_overflow()

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
        # An MRIF-mode answer always comes from a walk, which left its DC in _last_dc.
        dc = self._last_dc
        return resp, deliver_mrif(
            self, req, resp, data, size, dc is not None and bool(dc.tc & _TC_DTF)
        )

    # RegisterHost ---------------------------------------------------------
    def send_msi(self, addr: int, data: int) -> None:
        """Write an IOMMU-generated MSI (riscv-iommu: "MSI configuration table")."""
        be = self.regs.fctl & 1
        try:
            self.mem.write32(addr, swap32(data) if be else data)
        except BusError:
            self.report_fault(F.MSI_WRITE_FAULT, 0, 0, False, 0, False, addr, 0)

    def wired_interrupt(self, vector: int) -> None:
        self.wired.append(vector)

    def debug_translate(self) -> None:
        """riscv-iommu: "Debug support": a translation requested through tr_req_ctl."""
        r = self.regs
        ctl = r.tr_req_ctl
        nw = bool(ctl >> 3 & 1)
        req = Request(
            device_id=ctl >> 40 & 0xFFFFFF,
            iova=r.tr_req_iova & ~0xFFF,
            is_write=not nw,
            at=AT_UNTRANSLATED,
            pid_valid=bool(ctl >> 32 & 1),
            process_id=ctl >> 12 & 0xFFFFF,
            priv_req=bool(ctl >> 1 & 1),
            exec_req=bool(ctl >> 2 & 1) and nw,
        )
        resp = self.translate(req)
        if resp.ok and resp.is_mrif:
            # An MRIF-mode MSI PTE stops a debug translation with cause 260.
            resp = self._fault(req, TranslationFault(F.TTYPE_DISALLOWED), self._last_dc)
        if not resp.ok:
            r.tr_response = 1
        else:
            r.tr_response = (resp.pa >> 12 & _PPN_MASK) << 10 | resp.pbmt << 7
        r.tr_req_ctl &= ~1

    # ------------------------------------------------------------------ fault queue
    def report_fault(
        self,
        cause: int,
        ttyp: int,
        did: int,
        pv: bool,
        pid: int,
        priv: bool,
        iotval: int,
        iotval2: int,
    ) -> None:
        """Write a fault record (riscv-iommu: "Fault/Event-Queue (FQ)")."""
        r = self.regs
        csr = r.fqcsr
        if not csr & FQCSR_FQON or csr & (FQCSR_FQMF | FQCSR_FQOF):
            return
        size = 1 << ((r.fqb & 0x1F) + 1)
        tail = r.fqt
        if (tail + 1) & (size - 1) == r.fqh:
            r.fq_error(FQCSR_FQOF)
            return
        # Each field keeps its width (FQ record: DID 24 bits, PID 20 bits), whatever the
        # caller's integers: a record never spills into its neighbours or past 64 bits.
        w0 = (
            cause & 0xFFF
            | ((pid & 0xFFFFF) if pv else 0) << 12
            | int(pv) << 32
            | int(pv and priv) << 33
            | (ttyp & 0x3F) << 34
            | (did & 0xFFFFFF) << 40
        )
        words = (w0, 0, iotval & ((1 << 64) - 1), iotval2 & ((1 << 64) - 1))
        base = ((r.fqb >> 10 & _PPN_MASK) << 12) + tail * 32
        be = r.fctl & 1
        data = b"".join(w.to_bytes(8, "big" if be else "little") for w in words)
        try:
            self.mem.write(base, data)
        except BusError:
            r.fq_error(FQCSR_FQMF)
            return
        r.fqt = (tail + 1) & (size - 1)
        r.fq_record_written()

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
            hit = self.engine.iotlb.lookup(
                (
                    req.device_id,
                    req.process_id if req.pid_valid else -1,
                    req.pid_valid and req.priv_req,
                    req.iova >> 12,
                )
            )
            if (
                hit is not None
                and hit[4] & (2 if req.is_write else 1)
                and (regs.ddtp & 0xF) > MODE_BARE
            ):
                return Response(
                    STATUS_SUCCESS, pa=hit[3] | (req.iova & 0xFFF), pbmt=hit[5], size_lg2=hit[6]
                )
        if req.device_id >> 24 or req.iova >> 64 or req.process_id >> 20:
            req = _on_the_wire(req)
        try:
            out = self._translate(
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
            return self._fault(req, f, self._last_dc)
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
        recorded exactly as by :meth:`translate`), or ``-1`` for an MSI to an MRIF-mode
        interrupt file (no memory address; use :meth:`translate` for its fields). No object is
        built for an IOTLB hit, an ordinary walk or a fault.
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
            if hit is not None:
                if tlb.lru:  # _Lru.lookup, inlined
                    tlb.move_to_end(key)
                if hit[4] & (2 if is_write else 1) and (regs.ddtp & 0xF) > MODE_BARE:
                    return hit[3] | (iova & 0xFFF)  # type: ignore[no-any-return]
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
            out = self._translate(
                device_id, iova, AT_UNTRANSLATED, pv, pid, sup, not is_write, is_write, False, True
            )
        except TranslationFault as f:
            # TTYP: untranslated write (3) or read (2).
            self._record_fault(
                f, self._last_dc, 3 if is_write else 2, device_id, pv, pid, sup, iova
            )
            return -f.cause
        if type(out) is tuple:
            return out[0]
        return -1 if out.is_mrif else out.pa  # type: ignore[union-attr]

    def _fault(self, req: Request, f: TranslationFault, dc: DeviceContext | None) -> Response:
        cause = f.cause
        at = req.at
        if at == AT_ATS and cause in F.ATS_SUCCESS_CAUSES:
            return Response(STATUS_SUCCESS, priv=req.supervisor, cause=cause)
        self._record_fault(
            f, dc, req.ttyp, req.device_id, req.pid_valid, req.process_id, req.priv_req, req.iova
        )
        if at == AT_ATS and cause in F.ATS_CA_CAUSES:
            return Response(STATUS_CA, cause=cause)
        return Response(STATUS_UR, cause=cause)

    def _record_fault(
        self,
        f: TranslationFault,
        dc: DeviceContext | None,
        ttyp: int,
        did: int,
        pv: bool,
        pid: int,
        priv: bool,
        iova: int,
    ) -> None:
        """Write the fault record unless DC.tc.DTF suppresses this cause (riscv-iommu:
        "Fault/Event-Queue (FQ)", the "Reported if DTF is 1?" column)."""
        if dc is None or not dc.tc & _TC_DTF or f.cause in F.DTF_REPORTED:
            self.report_fault(f.cause, ttyp, did, pv, pid, priv, iova, f.iotval2)

    def _bare_log2_of(self, s1: bool, x: bool) -> int:
        p = self.params
        sizes = p.bare_page_size
        if s1:
            for bit, name in ((cap.SV57, "sv57"), (cap.SV48, "sv48")):
                if p.has(bit):
                    return sizes[name].bit_length() - 1
            if not x and p.has(cap.SV39):
                return sizes["sv39"].bit_length() - 1
            if x and p.has(cap.SV32):
                return sizes["sv32"].bit_length() - 1
            return 12
        for bit, name in ((cap.SV57X4, "sv57x4"), (cap.SV48X4, "sv48x4")):
            if p.has(bit):
                return sizes[name].bit_length() - 1
        if not x and p.has(cap.SV39X4):
            return sizes["sv39x4"].bit_length() - 1
        if x and p.has(cap.SV32X4):
            return sizes["sv32x4"].bit_length() - 1
        return 12

    def _translate(
        self,
        did: int,
        iova: int,
        at: int,
        pv: bool,
        pid: int,
        priv: bool,
        reads: bool,
        writes: bool,
        executes: bool,
        nw: bool,
    ) -> tuple[int, int, int] | Response:
        """The translation proper, on the fields of a :class:`Request` as plain values
        (``priv`` is its effective privilege, ``Request.supervisor``; ``reads``, ``writes``,
        ``executes`` as its properties; ``nw`` the ATS NW flag): a ``(pa, pbmt, size_lg2)``
        tuple for an ordinary success (the common case builds no Response), a
        :class:`Response` for MSI and ATS results; raises :class:`TranslationFault` to stop."""
        self._last_dc = None
        regs = self.regs
        mode = regs.ddtp & 0xF
        if mode == MODE_OFF:
            raise TranslationFault(F.ALL_DISALLOWED)
        if mode == MODE_BARE:
            if at != AT_UNTRANSLATED:
                raise TranslationFault(F.TTYPE_DISALLOWED)
            return iova, 0, 12
        eng = self.engine
        acc = F.ACC_EXEC if executes else (F.ACC_WRITE if writes else F.ACC_READ)
        # Performance-monitoring walk events (5-8) are counted by the engine with the IDs of
        # the transaction as far as they are known: the GSCID once the DC is located, the
        # PSCID once the PC is (so a G-stage walk for a PDT entry has no valid PSCID).
        walks = regs.hpm_walks
        eng.hpm = (did, pv, pid, False, 0, False, 0) if walks else None
        dc = eng.device_context(did)
        self._last_dc = dc
        if walks:
            eng.hpm = (did, pv, pid, dc.g_mode != 0, dc.gscid, False, 0)
        pc, s1mode, s1ppn, pscid = eng.locate(dc, pv, pid, priv, at, acc)
        ats = at == AT_ATS
        if at == AT_TRANSLATED and not eng.t2gpa(dc):
            return iova, 0, 12
        # Steps 17-19 of "Process to translate an IOVA" follow: the IOTLB did not supply this
        # translation (translate() answers hits; ATS and execute requests are never cached).
        if walks or 4 in regs.hpm_events:
            ids = (did, pv, pid, dc.g_mode != 0, dc.gscid, s1mode != 0, pscid)
            eng.hpm = ids if walks else None
            # HPM event 4, "TLB miss" (riscv-iommu: "Standard Events list"; glossary, TLB: "On
            # a TLB miss, a page table walk is performed"), counted once per translation.
            regs.hpm_count(4, *ids)
        if s1mode and at != AT_TRANSLATED:
            sum_ = pc.sum if pc is not None else False
            gpa, s1size, s1perms, s1pbmt, g = eng.first_stage(
                dc, s1mode, s1ppn, iova, acc, priv, sum_, ats, reads, writes, executes, nw
            )
        else:
            gpa = iova
            s1size = self._bare_log2[0 + dc.sxl]
            s1perms = _ALL_PERMS
            s1pbmt = 0
            g = 0
        # An ATS request whose first-stage leaf grants none of the requested permissions
        # still walks the G-stage to its end (riscv-iommu: "PCIe ATS translation request
        # handling": the permissions are formed once "the translation could be successfully
        # completed"; a G-stage fault still decides the status).
        # MSI address translation (riscv-iommu: "Process to translate addresses of MSIs").
        if dc.msiptp_mode and eng.msi_match(dc, gpa):
            w0, w1 = eng.msi_pte(dc, gpa)
            mrif = (w0 >> 1 & 3) == 1
            if executes and not ats:
                raise TranslationFault(1)  # MSI pages are never executable
            if ats:
                perms = s1perms & (P_R | P_W)
                if mrif:
                    return Response(
                        STATUS_SUCCESS, r=bool(perms & P_R), w=bool(perms & P_W), priv=priv, u=True
                    )
                spa_base = (w0 >> 10 & _PPN_MASK) << 12
                out = gpa if eng.t2gpa(dc) else spa_base | (gpa & 0xFFF)
                return self._ats_response(executes, priv, perms, out, 12, 0, True)
            if mrif:
                return Response(
                    STATUS_SUCCESS,
                    is_msi=True,
                    is_mrif=True,
                    mrif_addr=(w0 >> 7 & ((1 << 47) - 1)) << 9,
                    notice_ppn=w1 >> 10 & _PPN_MASK,
                    notice_nid=(w1 >> 60 & 1) << 10 | (w1 & 0x3FF),
                )
            return Response(
                STATUS_SUCCESS, pa=((w0 >> 10 & _PPN_MASK) << 12) | (gpa & 0xFFF), is_msi=True
            )
        if dc.g_mode:
            # An ATS completion whose first stage denies W grants no W, so the G-stage leaf
            # is not dirtied for it (riscv-iommu: "IOMMU updating of PTE accessed (A) and
            # dirty (D) updates": the privileged spec's rules). NW only matters for ATS.
            spa, gsize, gperms, gpbmt = eng.g_stage(
                dc,
                gpa,
                acc,
                0,
                ats,
                reads=reads,
                writes=writes,
                executes=executes,
                nw=nw or not s1perms & P_W,
            )
        else:
            spa = gpa
            gsize = self._bare_log2[2 + (regs.fctl >> 2 & 1)]
            gperms = _ALL_PERMS
            gpbmt = 0
        size = s1size if s1size < gsize else gsize  # the smaller stage's page
        if at == AT_UNTRANSLATED and not executes and eng.iotlb.capacity:
            # IOTLB fill (riscv-iommu: "Caching in-memory data structures"): one entry per
            # 4 KiB page, tagged for IOTINVAL matching; ok bit 0 = read, bit 1 = write (dirty).
            ok = (s1perms & gperms) >> 1 & 3
            eng.iotlb.insert(
                (did, pid if pv else -1, priv, iova >> 12),
                (
                    dc.gscid if dc.g_mode else -1,
                    pscid if s1mode else -1,
                    bool(g),
                    spa & ~0xFFF,
                    ok,
                    s1pbmt or gpbmt,
                    size,
                    gpa >> 12,
                ),
            )
        if ats:
            out = gpa if eng.t2gpa(dc) else spa
            return self._ats_response(
                executes, priv, s1perms & gperms, out, size, g if (pv and s1mode) else 0, False
            )
        return spa, s1pbmt or gpbmt, size

    def _ats_response(
        self, executes: bool, priv: bool, perms: int, addr: int, size_lg2: int, g: int, msi: bool
    ) -> Response:
        """riscv-iommu: "PCIe ATS translation request handling": completion fields
        (``executes`` and ``priv`` as the request's, see :meth:`_translate`).

        ``perms`` are what both stages grant: a denied permission is 0, the others as the
        page tables say; X only with R and an execute request. ``g`` is the first-stage
        Global bit (0 without PASID, with a Bare first stage or for an MSI). Global is "set
        to the value determined from the first-stage page tables if translation could be
        successfully completed and the request had a PASID present. In all other cases ...
        set to 0". A permission denial is a translation that "could be successfully
        completed" (the spec's words for it), so it keeps the first-stage G even when it
        grants nothing (public vector ats-000001 step 29 pins that); a translation that
        could not be completed -- a fault in either stage -- is answered by :meth:`_fault`
        with G = 0. Priv is the request's (0 without PASID); N, CXL.io and AMA are 0."""
        r = bool(perms & P_R)
        w = bool(perms & P_W)
        x = bool(perms & P_X) and r and executes
        base = addr & ~((1 << size_lg2) - 1)
        if size_lg2 > 12:
            ppn = base >> 12 | ((1 << (size_lg2 - 13)) - 1)
            s = True
        else:
            ppn = base >> 12
            s = False
        return Response(
            STATUS_SUCCESS,
            r=r,
            w=w,
            exe=x,
            priv=priv,
            g=bool(g),
            ppn=ppn,
            s=s,
            size_lg2=size_lg2,
            pa=addr,
            is_msi=msi,
        )

    # ------------------------------------------------------------------ command queue
    def process_commands(self, max_commands: int | None = None) -> int:
        """Fetch and execute commands from cqh while the queue can make progress
        (riscv-iommu: "Command-Queue (CQ)"). Returns the number executed."""
        r = self.regs
        done = 0
        while max_commands is None or done < max_commands:
            csr = r.cqcsr
            if not csr & CQCSR_CQON or csr & (CQCSR_CQMF | CQCSR_CMD_ILL | CQCSR_CMD_TO):
                break
            if r.cqh == r.cqt:
                break
            size = 1 << ((r.cqb & 0x1F) + 1)
            pa = ((r.cqb >> 10 & _PPN_MASK) << 12) + r.cqh * 16
            be = r.fctl & 1
            try:
                w0 = self.mem.read64(pa)
                w1 = self.mem.read64(pa + 8)
            except BusError:
                r.cq_error(CQCSR_CQMF)
                break
            if be:
                w0, w1 = swap64(w0), swap64(w1)
            if not self._execute(w0, w1):
                break
            r.cqh = (r.cqh + 1) & (size - 1)
            done += 1
        return done

    def _illegal(self) -> bool:
        self.regs.cq_error(CQCSR_CMD_ILL)
        return False

    def _execute(self, w0: int, w1: int) -> bool:
        """Execute one command; False if the queue must stop at it (cqh not advanced)."""
        from iommusim.bits.riscv.queues import CMD_ATS, CMD_IODIR, CMD_IOFENCE, CMD_IOTINVAL

        p = self.params
        cmd = w0 | w1 << 64
        opcode = w0 & 0x7F
        func3 = w0 >> 7 & 7
        if opcode == OP_IOTINVAL:
            rsvd = CMD_IOTINVAL.reserved_mask
            if not p.has(cap.NL):
                rsvd |= CMD_IOTINVAL.mask("nl")
            if not p.has(cap.S):
                rsvd |= CMD_IOTINVAL.mask("s")
            if func3 > 1 or cmd & rsvd or (func3 == 1 and w0 >> 32 & 1):
                return self._illegal()
            self._iotinval(func3, w0, w1)
            return True
        if opcode == OP_IOFENCE:
            rsvd = CMD_IOFENCE.reserved_mask
            if not self.regs.fctl >> 1 & 1:
                rsvd |= CMD_IOFENCE.mask("wsi")
            if func3 != 0 or cmd & rsvd:
                return self._illegal()
            return self._iofence(w0, w1)
        if opcode == OP_IODIR:
            rsvd = CMD_IODIR.reserved_mask
            if func3 == 0:
                rsvd |= CMD_IODIR.mask("pid")
            if func3 > 1 or cmd & rsvd or (func3 == 1 and not w0 >> 33 & 1):
                return self._illegal()
            self._iodir(func3, w0)
            return True
        if opcode == OP_ATS:
            if not p.has(cap.ATS) or func3 > 1 or cmd & CMD_ATS.reserved_mask:
                return self._illegal()
            rid = w0 >> 40 & 0xFFFF
            dsv = bool(w0 >> 33 & 1)
            pv = bool(w0 >> 32 & 1)
            msg_kind = "ats_inval_req" if func3 == 0 else "prgr"
            itag = -1
            if func3 == 0:
                itag = self._next_itag
                self._next_itag += 1
                self._pending_inval[itag] = 1
                self._arm_inval_timeout(itag)
            self._emit(
                Message(
                    msg_kind,
                    rid=rid,
                    dsv=dsv,
                    dseg=w0 >> 56 & 0xFF if dsv else 0,
                    pv=pv,
                    pid=w0 >> 12 & 0xFFFFF if pv else 0,
                    payload=w1,
                    itag=itag,
                )
            )
            return True
        return self._illegal()

    def _emit(self, msg: Message) -> None:
        if self.port is not None:
            self.port(msg)

    def _iofence(self, w0: int, w1: int) -> bool:
        """riscv-iommu: "IOMMU Command-queue Fence commands" (IOFENCE.C)."""
        if self._pending_inval:
            return False  # waits for outstanding ATS invalidation completions
        if self._timed_out:
            # "If the IOFENCE.C times out waiting on completion of previous commands that are
            # specified to have a timeout, then the cmd_to bit in cqcsr is set ... The cqh holds
            # the index of the IOFENCE.C that timed out"; once software clears cmd_to the fence
            # runs again and completes.
            self._timed_out.clear()
            self.regs.cq_error(CQCSR_CMD_TO)
            return False
        if w0 >> 10 & 1:
            addr = (w1 & ((1 << 62) - 1)) << 2  # ADDR[63:2] in bits 127:64
            data = w0 >> 32
            try:
                self.mem.write32(addr, swap32(data) if self.regs.fctl & 1 else data)
            except BusError:
                self.regs.cq_error(CQCSR_CQMF)
                return False
        pr = bool(w0 >> 12 & 1)
        pw = bool(w0 >> 13 & 1)
        if pr or pw:
            self._emit(Message("sync", pr=pr, pw=pw))
        if w0 >> 11 & 1:
            self.regs.cq_error(CQCSR_FENCE_W_IP)
        return True

    def _iodir(self, func3: int, w0: int) -> None:
        """riscv-iommu: "IOMMU directory cache invalidation commands"."""
        eng = self.engine
        dv = w0 >> 33 & 1
        did = w0 >> 40 & 0xFFFFFF
        if func3 == 0:
            if not dv:
                eng.ddtc.clear()
                eng.pdtc.clear()
                eng.iotlb.clear()
            else:
                eng.ddtc.pop(did, None)
                for cache in (eng.pdtc, eng.iotlb):
                    for key in [k for k in cache if k[0] == did]:
                        del cache[key]
        else:
            pid = w0 >> 12 & 0xFFFFF
            eng.pdtc.pop((did, pid), None)
            # The IOTLB is keyed by device and process: drop what the old PC produced.
            for key in [k for k in eng.iotlb if k[0] == did and k[1] == pid]:
                del eng.iotlb[key]

    def _iotinval(self, func3: int, w0: int, w1: int) -> None:
        """riscv-iommu: "IOMMU Page-Table cache invalidation commands" (with the NL and S
        extensions). IOTLB entries are per 4 KiB page and tagged with the GSCID (-1 for host
        address spaces), the PSCID (-1 for a Bare first stage), the Global bit, the range of
        the translation and the GPA; invalidating more than asked is allowed, never less."""
        tlb = self.engine.iotlb
        av = w0 >> 10 & 1
        pscv = w0 >> 32 & 1
        gv = w0 >> 33 & 1
        pscid = w0 >> 12 & 0xFFFFF
        gscid = w0 >> 44 & 0xFFFF
        addr_pn = w1 >> 10 & ((1 << 52) - 1)
        span = 1
        if av and w1 >> 9 & 1 and self.params.has(cap.S):
            # NAPOT range: the first 0 bit of ADDR at position X gives 2^(X+1) pages.
            x = ((addr_pn ^ (addr_pn + 1)) + 1).bit_length() - 2
            span = 1 << (x + 1)
            addr_pn &= ~(span - 1)
        doomed = []
        for key, e in tlb.items():
            etag, ptag, glob, _pa, _ok, _pbmt, size_lg2, _gpn = e
            if func3 == 1:  # GVMA: entries derived from G-stage tables
                # Entries are not indexed by GPA range: a GSCID match suffices (a superset of
                # the addressed entries, as the spec's note on IOTINVAL.GVMA allows).
                if etag < 0 or (gv and etag != gscid):
                    continue
            else:  # VMA
                if (etag >= 0) != bool(gv) or (gv and etag != gscid):
                    continue
                if pscv and (glob or ptag != pscid):
                    continue
                if av:
                    shift = size_lg2 - 12
                    vpn = key[3] >> shift
                    if not addr_pn >> shift <= vpn <= (addr_pn + span - 1) >> shift:
                        continue
            doomed.append(key)
        for key in doomed:
            del tlb[key]

    def ats_inval_completion(self, itags: list[int], cc: int) -> None:
        """A PCIe "Invalidation Completion" for the given ITAGs arrived (cc = 0 means 8)."""
        for t in itags:
            left = self._pending_inval.get(t)
            if left is None:
                continue
            # First completion fixes how many completions the request needs (cc).
            need = self._completions.setdefault(t, cc or 8)
            got = self._received.get(t, 0) + 1
            self._received[t] = got
            if got >= need:
                del self._pending_inval[t], self._completions[t], self._received[t]
                timer = self._inval_timers.pop(t, None)
                if timer is not None:
                    timer.cancel()

    @property
    def invalidations_outstanding(self) -> int:
        """ATS.INVAL requests still waiting for their completions (an IOFENCE.C behind them
        stalls the command queue; run :meth:`process_commands` again once this reaches 0)."""
        return len(self._pending_inval)

    def _arm_inval_timeout(self, itag: int) -> None:
        """riscv-iommu: "IOMMU PCIe ATS commands": ATS.INVAL "completes when an Invalidation
        Completion response message is received from the device or a protocol-defined timeout
        occurs while waiting for a response"."""
        timeout = self.params.ats_inval_timeout_ns
        if timeout is not None and self.clock is not None:
            self._inval_timers[itag] = self.clock.call_after(
                timeout, lambda: self._inval_timed_out(itag)
            )

    def _inval_timed_out(self, itag: int) -> None:
        self._inval_timers.pop(itag, None)
        if self._pending_inval.pop(itag, None) is not None:
            self._completions.pop(itag, None)
            self._received.pop(itag, None)
            self._timed_out.add(itag)  # "reported when a subsequent IOFENCE.C is executed"

    # ------------------------------------------------------------------ page requests
    def page_request(
        self,
        did: int,
        pv: bool,
        pid: int,
        priv: bool,
        exec_: bool,
        payload: int,
        rid: int,
        dsv: bool,
        dseg: int,
    ) -> None:
        """riscv-iommu: "PCIe ATS Page Request handling".

        Fields are taken modulo the widths the message carries (device_id 24 bits, PASID 20,
        RID 16, segment 8, payload 64), as :func:`_on_the_wire` does for requests."""
        did &= 0xFFFFFF
        pid &= 0xFFFFF
        payload &= _M64
        rid &= 0xFFFF
        dseg &= 0xFF
        r = self.regs
        last = bool(payload >> 2 & 1)
        stop_marker = last and not payload & 3
        prgi = payload >> 3 & 0x1FF

        def respond(code: int, with_pasid: bool) -> None:
            if not last or stop_marker:
                return
            self._emit(
                Message(
                    "prgr",
                    rid=rid,
                    dsv=dsv,
                    dseg=dseg if dsv else 0,
                    pv=with_pasid and pv,
                    pid=pid if (with_pasid and pv) else 0,
                    payload=(rid & 0xFFFF) << 48 | code << 44 | prgi << 32,
                )
            )

        ttyp = 9
        mode = r.ddtp & 0xF
        cause = 0
        prpr = False
        dc: DeviceContext | None = None
        if mode == MODE_OFF:
            cause = F.ALL_DISALLOWED
        elif mode == MODE_BARE:
            cause = F.TTYPE_DISALLOWED
        else:
            # A page request locates the DC too: its DDT walks count (HPM event 5).
            self.engine.hpm = (did, pv, pid, False, 0, False, 0) if r.hpm_walks else None
            try:
                dc = self.engine.device_context(did)
            except TranslationFault as f:
                cause = f.cause
            else:
                prpr = bool(dc.tc & _TC_PRPR)
                if not dc.tc & _TC_EN_PRI or not dc.tc & _TC_EN_ATS:
                    cause = F.TTYPE_DISALLOWED
        if cause:
            if dc is None or not dc.tc & _TC_DTF or cause in F.DTF_REPORTED:
                self.report_fault(cause, ttyp, did, pv, pid, priv, 4, 0)
            if cause == F.TTYPE_DISALLOWED:
                respond(PRG_INVALID_REQUEST, prpr)
            else:
                respond(PRG_RESPONSE_FAILURE, True)
            return
        csr = r.pqcsr
        if not csr & PQCSR_PQON or csr & PQCSR_PQMF:
            respond(PRG_RESPONSE_FAILURE, True)
            return
        if csr & PQCSR_PQOF:
            respond(PRG_SUCCESS, prpr)
            return
        size = 1 << ((r.pqb & 0x1F) + 1)
        tail = r.pqt
        if (tail + 1) & (size - 1) == r.pqh:
            r.pq_error(PQCSR_PQOF)
            respond(PRG_SUCCESS, prpr)
            return
        w0 = (pid << 12 | 1 << 32 | int(priv) << 33 | int(exec_) << 34 if pv else 0) | did << 40
        be = r.fctl & 1
        data = b"".join(w.to_bytes(8, "big" if be else "little") for w in (w0, payload))
        try:
            self.mem.write(((r.pqb >> 10 & _PPN_MASK) << 12) + tail * 16, data)
        except BusError:
            r.pq_error(PQCSR_PQMF)
            respond(PRG_RESPONSE_FAILURE, True)
            return
        r.pqt = (tail + 1) & (size - 1)
        r.pq_record_written()
