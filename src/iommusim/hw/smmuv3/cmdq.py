"""The SMMUv3 command queue: fetch, decode and execution of commands (IHI 0070 4), with the
command errors of IHI 0070 7.1.

Commands are consumed in order while CR0.CMDQEN is 1, no command error is active and CMDQ_PROD
differs from CMDQ_CONS; the model consumes them synchronously on the PROD write (or when the
queue is enabled, or when software acknowledges a command error). Each 16-byte little-endian
entry is decoded with the layouts of :mod:`iommusim.bits.arm.smmuv3_queues` and becomes one
call of the translator (:class:`~iommusim.hw.smmuv3.ports.TranslatorPort`: configuration and
TLB invalidations as :class:`~iommusim.hw.smmuv3.maintenance.Tlbi` records, CMD_RESUME,
CMD_STALL_TERM) or of the downstream :class:`~iommusim.hw.smmuv3.ports.DevicePort`
(CMD_ATC_INV, CMD_PRI_RESP).

Command errors (IHI 0070 7.1): consumption stops with CMDQ_CONS.RD on the failing command,
CMDQ_CONS.ERR gives the code and GERROR.CMDQ_ERR is activated; consumption resumes from RD
when software acknowledges through GERRORN (having fixed or skipped the command).

* CERROR_ABT: the fetch of the command aborted (a memory :class:`~iommusim.errors.BusError`).
* CERROR_ATC_INV_SYNC: a CMD_SYNC whose earlier CMD_ATC_INV saw no completion (the port
  answered ``False``); that failure is reported once.
* CERROR_ILL (IHI 0070 4.1.3 "Illegal commands"): an opcode not in IHI 0070 4.1.1; a command
  of a feature the SMMU does not implement (stage 2 invalidations without IDR0.S2P, stage 1
  ones and CD invalidations without IDR0.S1P, EL2 ones without IDR0.HYP, ATC_INV without ATS,
  PRI_RESP without PRI, RESUME and STALL_TERM without the stall model, CFGI_VMS_PIDM and the
  EL3 invalidations, which a non-secure queue does not take); SSec = 1 on the non-secure queue;
  a reserved value (CMD_SYNC CS = 0b11, CMD_PRI_RESP Resp = 0b11); and a non-zero RES0 bit
  (CONSTRAINED UNPREDICTABLE between CERROR_ILL and ignoring the bit: the model reports it).

Field rules: ASID[15:8] without IDR0.ASID16 and VMID[15:8] without IDR0.VMID16 are ignored;
without IDR3.RIL the range fields (NUM, SCALE, TTL, TG) are ignored, so every TLBI is a
single-address one. CMD_PREFETCH_ADDR is a hint the model does not act on (IHI 0070 4.2.2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from iommusim.bits.arm.smmuv3_queues import (
    CERROR_ABT,
    CERROR_ATC_INV_SYNC,
    CERROR_ILL,
    CMD_ATC_INV,
    CMD_CFGI_CD,
    CMD_CFGI_CD_ALL,
    CMD_CFGI_STE,
    CMD_CFGI_STE_RANGE,
    CMD_OPCODE_MASK,
    CMD_PREFETCH_ADDR,
    CMD_PREFETCH_CONFIG,
    CMD_PRI_RESP,
    CMD_RESUME,
    CMD_STALL_TERM,
    CMD_SYNC,
    CMD_TLBI_EL2_ALL,
    CMD_TLBI_EL2_ASID,
    CMD_TLBI_EL2_VA,
    CMD_TLBI_EL2_VAA,
    CMD_TLBI_NH_ALL,
    CMD_TLBI_NH_ASID,
    CMD_TLBI_NH_VA,
    CMD_TLBI_NH_VAA,
    CMD_TLBI_NSNH_ALL,
    CMD_TLBI_S2_IPA,
    CMD_TLBI_S12_VMALL,
    CMDQ_ENTRY_BYTES,
    SYNC_CS_IRQ,
    SYNC_CS_SEV,
    Command,
)
from iommusim.bits.arm.smmuv3_regs import CMDQ_CONS, CMDQ_CONS_ERR, CR0_CMDQEN, GERROR
from iommusim.errors import BusError
from iommusim.hw.smmuv3.interrupts import Interrupts
from iommusim.hw.smmuv3.maintenance import Tlbi, TlbiScope
from iommusim.hw.smmuv3.ports import DevicePort, TranslatorPort
from iommusim.hw.smmuv3.registers import Registers
from iommusim.hw.smmuv3.ring import advance, entry_pa, is_empty, log2size
from iommusim.hw.smmuv3.transaction import Response
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["CommandQueue"]

_CMDQ_ERR: Final = GERROR.mask("cmdq_err")
_CONS_RD: Final = CMDQ_CONS.mask("rd")
_ERR_LSB: Final = CMDQ_CONS["err"].lsb

# Field extractors, one per position (commands that share a field share its position).
_SID: Final = CMD_CFGI_STE.layout["streamid"]
_LEAF: Final = CMD_CFGI_STE.layout["leaf"]
_SSV: Final = CMD_PREFETCH_CONFIG.layout["ssv"]
_SSID: Final = CMD_PREFETCH_CONFIG.layout["substreamid"]
_RANGE: Final = CMD_CFGI_STE_RANGE.layout["range"]
_VMID: Final = CMD_TLBI_NH_VA.layout["vmid"]
_ASID: Final = CMD_TLBI_NH_VA.layout["asid"]
_NUM: Final = CMD_TLBI_NH_VA.layout["num"]
_SCALE: Final = CMD_TLBI_NH_VA.layout["scale"]
_TTL: Final = CMD_TLBI_NH_VA.layout["ttl"]
_TG: Final = CMD_TLBI_NH_VA.layout["tg"]
_VA: Final = CMD_TLBI_NH_VA.layout["address"]
_IPA: Final = CMD_TLBI_S2_IPA.layout["address"]
_ATC_SIZE: Final = CMD_ATC_INV.layout["size"]
_ATC_GLOBAL: Final = CMD_ATC_INV.layout["global"]
_PRGI: Final = CMD_PRI_RESP.layout["prgi"]
_RESP: Final = CMD_PRI_RESP.layout["resp"]
_AC: Final = CMD_RESUME.layout["ac"]
_STAG: Final = CMD_RESUME.layout["stag"]
_CS: Final = CMD_SYNC.layout["cs"]
_MSIDATA: Final = CMD_SYNC.layout["msidata"]
_MSIADDR: Final = CMD_SYNC.layout["msiaddress"]
_RESERVED_CODE: Final = 0b11

#: A handler's answer for "not yet": the command stays at CONS and runs again later.
_WAIT: Final = -1
#: ITAGs outstanding at once (PCIe ATS: 5-bit ITAG).
_ITAG_MASK: Final = 0x1F
#: Runs one decoded command; returns a CERROR code, or 0 when the command completed.
_Handler = Callable[[int], int]


class CommandQueue:
    """Consumes the command queue the registers describe (IHI 0070 4, 7.1)."""

    __slots__ = (
        "_asid_mask",
        "_atc_failed",
        "_atc_pending",
        "_commands",
        "_max_lg2",
        "_next_itag",
        "_report",
        "_running",
        "_vmid_mask",
        "irq",
        "mem",
        "port",
        "regs",
        "translator",
    )

    def __init__(
        self,
        mem: PhysicalMemory,
        regs: Registers,
        irq: Interrupts,
        translator: TranslatorPort,
        port: DevicePort,
        report: Callable[[int, int, Response], Response],
    ) -> None:
        self.mem = mem
        self.regs = regs
        self.irq = irq
        self.translator = translator
        self.port = port
        self._report = report
        self._atc_failed = False
        #: ITAGs of ATS Invalidate Requests whose completion has not arrived.
        self._atc_pending: set[int] = set()
        self._next_itag = 0
        self._running = False
        p = regs.params
        self._max_lg2 = p.idr1_field("cmdqs")
        self._asid_mask = 0xFFFF if p.idr0_field("asid16") else 0xFF
        self._vmid_mask = 0xFFFF if p.idr0_field("vmid16") else 0xFF
        s1, s2 = p.idr0_field("s1p"), p.idr0_field("s2p")
        stall = int(p.idr0_field("stall_model") != 0b01)
        supported: list[tuple[Command, int, _Handler]] = [
            (CMD_PREFETCH_CONFIG, 1, self._prefetch_config),
            (CMD_PREFETCH_ADDR, 1, self._prefetch_addr),
            (CMD_CFGI_STE, 1, self._cfgi_ste),
            (CMD_CFGI_STE_RANGE, 1, self._cfgi_ste_range),
            (CMD_CFGI_CD, s1, self._cfgi_cd),
            (CMD_CFGI_CD_ALL, s1, self._cfgi_cd_all),
            (CMD_TLBI_NH_ALL, s1, self._tlbi("nh_all")),
            (CMD_TLBI_NH_ASID, s1, self._tlbi("nh_asid")),
            (CMD_TLBI_NH_VA, s1, self._tlbi("nh_va")),
            (CMD_TLBI_NH_VAA, s1, self._tlbi("nh_vaa")),
            (CMD_TLBI_EL2_ALL, p.idr0_field("hyp"), self._tlbi("el2_all")),
            (CMD_TLBI_EL2_ASID, p.idr0_field("hyp"), self._tlbi("el2_asid")),
            (CMD_TLBI_EL2_VA, p.idr0_field("hyp"), self._tlbi("el2_va")),
            (CMD_TLBI_EL2_VAA, p.idr0_field("hyp"), self._tlbi("el2_vaa")),
            (CMD_TLBI_S12_VMALL, s2, self._tlbi("s12_vmall")),
            (CMD_TLBI_S2_IPA, s2, self._tlbi("s2_ipa")),
            (CMD_TLBI_NSNH_ALL, 1, self._tlbi("nsnh_all")),
            (CMD_ATC_INV, p.idr0_field("ats"), self._atc_inv),
            (CMD_PRI_RESP, p.idr0_field("pri"), self._pri_resp),
            (CMD_RESUME, stall, self._resume),
            (CMD_STALL_TERM, stall, self._stall_term),
            (CMD_SYNC, 1, self._sync),
        ]
        ril = p.idr3_field("ril")
        # opcode -> (bits a legal command may set, bits ignored, handler)
        commands: dict[int, tuple[int, int, _Handler]] = {}
        for cmd, implemented, handler in supported:
            if not implemented:
                continue
            lay = cmd.layout
            names = {f.name for f in lay.fields}
            legal = lay.defined_mask & ~(lay.mask("ssec") if "ssec" in names else 0)
            ignored = 0
            if "tg" in names and not ril:
                ignored = lay.mask("num", "scale", "ttl", "tg")
            commands[cmd.opcode] = (legal, ignored, handler)
        self._commands = commands

    def run(self) -> int:
        """Consume commands until the queue is empty or a command fails; the number
        consumed."""
        r = self.regs
        if not r.cr0 & CR0_CMDQEN or self.irq.active_errors() & _CMDQ_ERR:
            return 0
        if self._running:
            return 0  # a completion that arrived while a command ran: the loop goes on
        self._running = True
        try:
            return self._consume()
        finally:
            self._running = False

    def _consume(self) -> int:
        r = self.regs
        lg2 = log2size(r.cmdq_base, self._max_lg2)
        done = 0
        while not is_empty(r.cmdq_prod, r.cmdq_cons, lg2):
            cons = r.cmdq_cons & _CONS_RD
            pa = entry_pa(r.cmdq_base, lg2, cons, CMDQ_ENTRY_BYTES)
            try:
                cmd = self.mem.read64(pa) | self.mem.read64(pa + 8) << 64
            except BusError:
                self._error(CERROR_ABT)
                return done
            err = self._execute(cmd)
            if err == _WAIT:
                return done  # a CMD_SYNC waits for ATC invalidation completions
            if err:
                self._error(err)
                return done
            r.cmdq_cons = (r.cmdq_cons & CMDQ_CONS_ERR) | advance(cons, lg2)
            done += 1
        return done

    def atc_timeout(self, itag: int) -> int:
        """No Invalidation Completion came for ``itag`` in time: the CMD_SYNC waiting for it
        fails with CERROR_ATC_INV_SYNC (IHI 0070 7.1). Returns the commands consumed."""
        if itag not in self._atc_pending:
            return 0
        self._atc_pending.discard(itag)
        self._atc_failed = True
        return self.run()

    def atc_completed(self, itag: int) -> int:
        """An Invalidation Completion for ``itag`` arrived; a CMD_SYNC waiting for it (and
        the commands after it) runs now. Returns the commands consumed."""
        self._atc_pending.discard(itag)
        return self.run()

    def _execute(self, cmd: int) -> int:
        entry = self._commands.get(cmd & CMD_OPCODE_MASK)
        if entry is None:
            return CERROR_ILL
        legal, ignored, handler = entry
        if cmd & ~legal:
            return CERROR_ILL
        return handler(cmd & ~ignored)

    def _error(self, code: int) -> None:
        """IHI 0070 7.1: CONS.ERR takes the code, GERROR.CMDQ_ERR activates."""
        r = self.regs
        r.cmdq_cons = (r.cmdq_cons & _CONS_RD) | code << _ERR_LSB
        self.irq.activate(_CMDQ_ERR)

    # -- IHI 0070 4.2 Prefetch, 4.3 configuration invalidation --------------------------------

    def _prefetch_config(self, cmd: int) -> int:
        self.translator.prefetch_config(_SID.get(cmd), bool(_SSV.get(cmd)), _SSID.get(cmd))
        return 0

    def _prefetch_addr(self, cmd: int) -> int:
        return 0

    def _cfgi_ste(self, cmd: int) -> int:
        self.translator.cfgi_ste(_SID.get(cmd), bool(_LEAF.get(cmd)))
        return 0

    def _cfgi_ste_range(self, cmd: int) -> int:
        self.translator.cfgi_ste_range(_SID.get(cmd), _RANGE.get(cmd))
        return 0

    def _cfgi_cd(self, cmd: int) -> int:
        self.translator.cfgi_cd(_SID.get(cmd), _SSID.get(cmd), bool(_LEAF.get(cmd)))
        return 0

    def _cfgi_cd_all(self, cmd: int) -> int:
        self.translator.cfgi_cd_all(_SID.get(cmd))
        return 0

    # -- IHI 0070 4.4 TLB invalidation --------------------------------------------------------

    def _tlbi(self, scope: TlbiScope) -> _Handler:
        """The handler of one TLBI command: fields its layout lacks read 0 here because the
        legality check has already required those bits to be 0."""
        ipa = scope == "s2_ipa"

        def run(cmd: int) -> int:
            self.translator.tlbi(
                Tlbi(
                    scope,
                    vmid=_VMID.get(cmd) & self._vmid_mask,
                    asid=_ASID.get(cmd) & self._asid_mask,
                    addr=(_IPA if ipa else _VA).get(cmd) << 12,
                    leaf=bool(_LEAF.get(cmd)),
                    tg=_TG.get(cmd),
                    num=_NUM.get(cmd),
                    scale=_SCALE.get(cmd),
                    ttl=_TTL.get(cmd),
                )
            )
            return 0

        return run

    # -- IHI 0070 4.5 ATS and PRI -------------------------------------------------------------

    def _atc_inv(self, cmd: int) -> int:
        """CMD_ATC_INV: the Invalidate Request goes out tagged; the next CMD_SYNC completes
        only once every earlier request's completion has arrived (IHI 0070 4.5, 4.7)."""
        itag = self._next_itag
        self._next_itag = (itag + 1) & _ITAG_MASK
        self._atc_pending.add(itag)
        status = self.port.atc_invalidate(
            _SID.get(cmd),
            bool(_SSV.get(cmd)),
            _SSID.get(cmd),
            _VA.get(cmd) << 12,
            _ATC_SIZE.get(cmd) + 12,
            bool(_ATC_GLOBAL.get(cmd)),
            itag,
        )
        if status != "pending":
            self._atc_pending.discard(itag)
        if status == "failed":
            self._atc_failed = True
        return 0

    def _pri_resp(self, cmd: int) -> int:
        resp = _RESP.get(cmd)
        if resp == _RESERVED_CODE:
            return CERROR_ILL
        self.port.pri_response(
            _SID.get(cmd), bool(_SSV.get(cmd)), _SSID.get(cmd), _PRGI.get(cmd), resp
        )
        return 0

    # -- IHI 0070 4.6 fault response and synchronisation --------------------------------------

    def _resume(self, cmd: int) -> int:
        """CMD_RESUME: Ac = 1 retries the stalled transaction, else it is terminated with an
        abort; a retry's own fault is reported like any transaction's. A RESUME naming no
        stalled transaction has no effect."""
        sid = _SID.get(cmd)
        stag = _STAG.get(cmd)
        out = self.translator.resume(sid, stag, bool(_AC.get(cmd)))
        if out is not None:
            self._report(sid, stag, out)
        return 0

    def _stall_term(self, cmd: int) -> int:
        sid = _SID.get(cmd)
        for stag in self.translator.stall_term(sid):
            self._report(sid, stag, Response("abort", recorded=False))
        return 0

    def _sync(self, cmd: int) -> int:
        """CMD_SYNC: every earlier command has completed (the model runs them in order and
        synchronously); an earlier ATC invalidation without completion fails the SYNC."""
        cs = _CS.get(cmd)
        if cs == _RESERVED_CODE:
            return CERROR_ILL
        if self._atc_failed:
            self._atc_failed = False
            self._atc_pending.clear()
            return CERROR_ATC_INV_SYNC
        if self._atc_pending:
            return _WAIT
        if cs == SYNC_CS_IRQ:
            self.irq.cmd_sync(_MSIADDR.get(cmd) << 2, _MSIDATA.get(cmd))
        elif cs == SYNC_CS_SEV and self.regs.params.idr0_field("sev"):
            self.irq.sev()
        return 0
