"""An Arm SMMUv3 (IHI 0070): the register file and queues in front of the translator.

:class:`Smmuv3` owns the register file (:mod:`.registers`), the command queue (:mod:`.cmdq`),
the Event and PRI queues (:mod:`.eventq`) and the interrupts (:mod:`.interrupts`), and drives
a translator (:class:`~iommusim.hw.smmuv3.ports.TranslatorPort`; by default
:class:`iommusim.hw.smmuv3.translator.Smmuv3Translator`) with the register state:

* CR0.SMMUEN -> ``translator.enabled``; on its 0 -> 1 edge the SMMU latches STRTAB_BASE and
  STRTAB_BASE_CFG into ``translator.set_stream_table`` (IHI 0070 6.3 SMMU_STRTAB_BASE: the
  registers cannot change while SMMUEN is 1, so the latched copy is the registers' value).
  LOG2SIZE above IDR1.SIDSIZE takes SIDSIZE as its effective value.
* GBPA.ABORT -> ``translator.gbpa_abort``; CR2.E2H/RECINVSID/PTM -> ``e2h``,
  ``record_bad_sid``, ``ptm``.
* :meth:`Smmuv3.translate` presents a transaction and records the event its response carries
  (IHI 0070 7.3); a stalled transaction whose event cannot be recorded (queue disabled, full
  or unwritable) is terminated with an abort at once (IHI 0070 3.12.2: software could never
  learn of it to resume it).
* :meth:`Smmuv3.page_request` takes PCIe PRI Page Requests (IHI 0070 8) and
  :meth:`Smmuv3.broadcast_tlbi` the CPU side's broadcast TLB maintenance (IHI 0070 3.17),
  honoured only when IDR0.BTM is 1 and CR2.PTM is 0.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm.smmuv3_pmcg import PMCG_OFFSET
from iommusim.bits.arm.smmuv3_queues import E_PAGE_REQUEST, EVT_PAGE_REQUEST
from iommusim.bits.arm.smmuv3_regs import (
    CR0_CMDQEN,
    CR0_SMMUEN,
    CR2,
    GBPA_ABORT,
    GERROR,
    STRTAB_ADDR_MASK,
    STRTAB_BASE_CFG,
)
from iommusim.hw.smmuv3.cmdq import CommandQueue
from iommusim.hw.smmuv3.eventq import EventQueue, PriQueue
from iommusim.hw.smmuv3.interrupts import Interrupts
from iommusim.hw.smmuv3.maintenance import Tlbi
from iommusim.hw.smmuv3.params import Smmuv3Params
from iommusim.hw.smmuv3.pmcg import Pmcg
from iommusim.hw.smmuv3.ports import DevicePort, NullDevicePort, TranslatorPort
from iommusim.hw.smmuv3.registers import Registers
from iommusim.hw.smmuv3.transaction import Event, Request, Response
from iommusim.hw.smmuv3.translator import Smmuv3Translator
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["Smmuv3"]

_CMDQ_ERR: Final = GERROR.mask("cmdq_err")
_E2H: Final = CR2.mask("e2h")
_RECINVSID: Final = CR2.mask("recinvsid")
_PTM: Final = CR2.mask("ptm")
_LOG2SIZE: Final = STRTAB_BASE_CFG["log2size"]
_FMT: Final = STRTAB_BASE_CFG["fmt"]
_SPLIT: Final = STRTAB_BASE_CFG["split"]


class Smmuv3:
    """One SMMUv3 on ``mem`` with the implementation ``params``; ``translator`` replaces
    the real translator (a test fake), ``port`` is the downstream PCIe side."""

    __slots__ = (
        "cmdq",
        "completions",
        "eventq",
        "irq",
        "mem",
        "params",
        "pmcg",
        "port",
        "priq",
        "regs",
        "translator",
    )

    def __init__(
        self,
        mem: PhysicalMemory,
        params: Smmuv3Params,
        translator: TranslatorPort | None = None,
        port: DevicePort | None = None,
    ) -> None:
        self.mem = mem
        self.params = params
        self.translator: TranslatorPort = (
            translator if translator is not None else Smmuv3Translator(mem, params)
        )
        self.port: DevicePort = port if port is not None else NullDevicePort()
        #: The Performance Monitor Counter Group (IHI 0070 10), its own register page; None
        #: when the parameters give it no counters.
        self.pmcg = (
            Pmcg(self.translator.counts, params.num_counters) if params.num_counters else None
        )
        self.regs = Registers(params, self)
        self.irq = Interrupts(mem, self.regs)
        self.eventq = EventQueue(mem, self.regs, self.irq)
        self.priq = PriQueue(mem, self.regs, self.irq, self.port)
        #: Stalled transactions that ended, oldest first: ``(streamid, stag, response)`` --
        #: a CMD_RESUME's retry or abort, a CMD_STALL_TERM (IHI 0070 4.6), or a stall whose
        #: event could not be recorded. The platform completes the DMA from these.
        self.completions: list[tuple[int, int, Response]] = []
        self.cmdq = CommandQueue(
            mem, self.regs, self.irq, self.translator, self.port, self._resumed
        )
        self.translator.enabled = False
        self.gbpa_written()
        self.cr2_written()

    # -- MMIO (IHI 0070 6) ------------------------------------------------------------------

    def read_register(self, offset: int, size: int) -> int:
        """A ``size``-byte (4 or 8) read at ``offset`` from the SMMU base (pages 0 and 1; the
        PMCG page at :data:`~iommusim.bits.arm.smmuv3_pmcg.PMCG_OFFSET`)."""
        if offset >= PMCG_OFFSET:
            p = self.pmcg
            return p.read_register(offset - PMCG_OFFSET, size) if p is not None else 0
        return self.regs.read(offset, size)

    def write_register(self, offset: int, size: int, value: int) -> None:
        """A ``size``-byte write at ``offset``; its side effects run before it returns."""
        if offset >= PMCG_OFFSET:
            if self.pmcg is not None:
                self.pmcg.write_register(offset - PMCG_OFFSET, size, value)
            return
        self.regs.write(offset, size, value)

    # -- the inbound sides --------------------------------------------------------------------

    def translate(self, req: Request) -> Response:
        """Present ``req`` (IHI 0070 3.2) and record the event of its response."""
        return self._report(req.sid, self.translator.translate(req))

    def page_request(
        self,
        sid: int,
        ssv: bool,
        ssid: int,
        addr: int,
        read: bool,
        write: bool,
        exec_: bool = False,
        priv: bool = False,
        last: bool = False,
        prgi: int = 0,
    ) -> bool:
        """A PCIe PRI Page Request (IHI 0070 8.1); whether it entered the PRI queue."""
        return self.priq.page_request(sid, ssv, ssid, addr, read, write, exec_, priv, last, prgi)

    def page_request_hint(
        self,
        sid: int,
        addr: int,
        span: int,
        access: str = "r",
        priv: bool = False,
        ssv: bool = False,
        ssid: int = 0,
    ) -> bool:
        """A client's speculative page request hint (IHI 0070 7.3.19): the ``span`` pages
        (4 KiB each) from ``addr`` will soon be accessed -- ``access`` is any of ``"rwx"``,
        at privileged level when ``priv``. Recorded as E_PAGE_REQUEST, a miscellaneous event
        written asynchronously to transactions (IHI 0070 7.2); it asks for no response.
        Recorded only while SMMU_CR0.SMMUEN = 1 (F_UUT is the one event the spec permits
        with the SMMU disabled); Span is 8 bits, so a longer span is capped at 255 pages,
        and the IDs and address keep the bits their fields hold.
        Whether it was written."""
        if not self.translator.enabled:
            return False
        # Only what the record's fields carry reaches the SMMU (as for every inbound side).
        width = {f.name: (1 << f.width) - 1 for f in EVT_PAGE_REQUEST.fields}
        level = "p" if priv else "u"
        ev = Event(
            E_PAGE_REQUEST,
            sid & width["streamid"],
            ssv=ssv,
            substreamid=ssid & width["substreamid"] if ssv else 0,
            inputaddr=(addr >> 12 & width["inputaddr_pn"]) << 12,
            span=min(max(span, 0), width["span"]),
            hinted=tuple(level + a for a in "rwx" if a in access),
        )
        return self.eventq.record(ev)

    def invalidation_completion(self, sid: int, itag: int) -> int:
        """A PCIe Invalidation Completion from ``sid`` for the ATS Invalidate Request
        ``itag``: a CMD_SYNC waiting for it goes on (IHI 0070 4.7). The commands run."""
        return self.cmdq.atc_completed(itag)

    def broadcast_tlbi(self, t: Tlbi) -> bool:
        """A broadcast TLB invalidation from the CPUs (IHI 0070 3.17); whether the SMMU
        took part (IDR0.BTM = 1 and CR2.PTM = 0)."""
        if not self.params.idr0_field("btm") or self.regs.cr2 & _PTM:
            return False
        self.translator.tlbi(t._replace(broadcast=True))
        return True

    def _resumed(self, sid: int, stag: int, resp: Response) -> Response:
        out = self._report(sid, resp)
        if out.outcome != "stalled":
            self.completions.append((sid, stag, out))
        return out

    def _report(self, sid: int, resp: Response) -> Response:
        ev = resp.event
        written = ev is not None and resp.recorded and self.eventq.record(ev)
        if resp.outcome == "stalled" and not written:
            out = self.translator.resume(sid, resp.stag, False)
            return out if out is not None else resp
        return resp

    # -- RegisterHost: side effects of register writes ----------------------------------------

    def control_written(self, old: int, new: int) -> None:
        t = self.translator
        t.enabled = bool(new & CR0_SMMUEN)
        if new & ~old & CR0_SMMUEN:
            cfg = self.regs.strtab_base_cfg
            t.set_stream_table(
                self.regs.strtab_base & STRTAB_ADDR_MASK,
                min(_LOG2SIZE.get(cfg), self.params.sid_bits),
                _FMT.get(cfg),
                _SPLIT.get(cfg),
            )
        if new & ~old & CR0_CMDQEN:
            self.cmdq.run()

    def cr2_written(self) -> None:
        cr2 = self.regs.cr2
        t = self.translator
        t.e2h = bool(cr2 & _E2H)
        t.record_bad_sid = bool(cr2 & _RECINVSID)
        t.ptm = bool(cr2 & _PTM)

    def gbpa_written(self) -> None:
        self.translator.gbpa_abort = bool(self.regs.gbpa & GBPA_ABORT)

    def cmdq_doorbell(self) -> None:
        self.cmdq.run()

    def errors_acknowledged(self, acked: int) -> None:
        if acked & _CMDQ_ERR:
            self.cmdq.run()
