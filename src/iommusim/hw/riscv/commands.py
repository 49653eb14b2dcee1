"""Command-queue processing: fetch, decode and execute (riscv-iommu: "Command-Queue (CQ)").

Commands are decoded with the layouts of :mod:`iommusim.bits.riscv.queues` (``CMD_*``): a
command is one 128-bit ``int`` and each operand a field of its layout. A command with a set
reserved bit, an unknown opcode or function, or an operand the capabilities do not allow is
illegal: ``cqcsr.cmd_ill`` is set and ``cqh`` stays at it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from iommusim.bits.riscv.queues import (
    CMD_ATS,
    CMD_IODIR,
    CMD_IOFENCE,
    CMD_IOTINVAL,
    OP_ATS,
    OP_IODIR,
    OP_IOFENCE,
    OP_IOTINVAL,
)
from iommusim.bits.riscv.regs import (
    CQCSR_CMD_ILL,
    CQCSR_CMD_TO,
    CQCSR_CQMF,
    CQCSR_CQON,
    CQCSR_FENCE_W_IP,
    FCTL_BE,
    FCTL_WSI,
    cap,
)
from iommusim.errors import BusError
from iommusim.hw.riscv.ats import InvalidationTracker
from iommusim.hw.riscv.iotlb import match_gvma, match_vma
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.hw.riscv.queues import advance, consume
from iommusim.hw.riscv.regs import Registers
from iommusim.hw.riscv.transaction import Message
from iommusim.hw.riscv.translate import TranslationEngine, swap32
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["CQ_ENTRY_BYTES", "CommandQueue"]

#: Size of a command (two doublewords).
CQ_ENTRY_BYTES: Final = 16


# Every command format shares opcode and func3.
_OPCODE: Final = CMD_IOTINVAL["opcode"]
_FUNC3: Final = CMD_IOTINVAL["func3"]

_INV_AV: Final = CMD_IOTINVAL["av"]
_INV_PSCID: Final = CMD_IOTINVAL["pscid"]
_INV_PSCV: Final = CMD_IOTINVAL["pscv"]
_INV_GV: Final = CMD_IOTINVAL["gv"]
_INV_GSCID: Final = CMD_IOTINVAL["gscid"]
_INV_S: Final = CMD_IOTINVAL["s"]
_INV_ADDR: Final = CMD_IOTINVAL["addr"]

_FENCE_AV: Final = CMD_IOFENCE["av"]
_FENCE_WSI: Final = CMD_IOFENCE["wsi"]
_FENCE_PR: Final = CMD_IOFENCE["pr"]
_FENCE_PW: Final = CMD_IOFENCE["pw"]
_FENCE_DATA: Final = CMD_IOFENCE["data"]
_FENCE_ADDR: Final = CMD_IOFENCE["addr"]

_DIR_PID: Final = CMD_IODIR["pid"]
_DIR_DV: Final = CMD_IODIR["dv"]
_DIR_DID: Final = CMD_IODIR["did"]

_ATS_PID: Final = CMD_ATS["pid"]
_ATS_PV: Final = CMD_ATS["pv"]
_ATS_DSV: Final = CMD_ATS["dsv"]
_ATS_RID: Final = CMD_ATS["rid"]
_ATS_DSEG: Final = CMD_ATS["dseg"]
_ATS_PAYLOAD: Final = CMD_ATS["payload"]


class CommandQueue:
    """The IOMMU as the CQ's consumer, executing what software queued."""

    __slots__ = (
        "_ats_ok",
        "_emit",
        "_engine",
        "_inval_rsvd",
        "_params",
        "_tracker",
        "mem",
        "regs",
    )

    def __init__(
        self,
        params: RiscvIommuParams,
        mem: PhysicalMemory,
        regs: Registers,
        engine: TranslationEngine,
        tracker: InvalidationTracker,
        emit: Callable[[Message], None],
    ) -> None:
        self._params = params
        self.mem = mem
        self.regs = regs
        self._engine = engine
        self._tracker = tracker
        self._emit = emit
        rsvd = CMD_IOTINVAL.reserved_mask
        if not params.has(cap.NL):
            rsvd |= CMD_IOTINVAL.mask("nl")
        if not params.has(cap.S):
            rsvd |= CMD_IOTINVAL.mask("s")
        self._inval_rsvd = rsvd
        self._ats_ok = params.has(cap.ATS)

    def process(self, max_commands: int | None = None) -> int:
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
            cmd = consume(self.mem, r.cqb, r.cqh, CQ_ENTRY_BYTES, r.fctl & FCTL_BE)
            if cmd is None:
                r.cq_error(CQCSR_CQMF)
                break
            if not self._execute(cmd):
                break
            r.cqh = advance(r.cqb, r.cqh)
            done += 1
        return done

    def _illegal(self) -> bool:
        self.regs.cq_error(CQCSR_CMD_ILL)
        return False

    def _execute(self, cmd: int) -> bool:
        """Execute one command; False if the queue must stop at it (cqh not advanced)."""
        opcode = _OPCODE.get(cmd)
        func3 = _FUNC3.get(cmd)
        if opcode == OP_IOTINVAL:
            # IOTINVAL.GVMA has no PSCID operand: PSCV must be 0.
            if func3 > 1 or cmd & self._inval_rsvd or (func3 == 1 and _INV_PSCV.get(cmd)):
                return self._illegal()
            self._iotinval(func3, cmd)
            return True
        if opcode == OP_IOFENCE:
            rsvd = CMD_IOFENCE.reserved_mask
            if not self.regs.fctl & FCTL_WSI:
                rsvd |= _FENCE_WSI.mask
            if func3 != 0 or cmd & rsvd:
                return self._illegal()
            return self._iofence(cmd)
        if opcode == OP_IODIR:
            rsvd = CMD_IODIR.reserved_mask
            if func3 == 0:
                rsvd |= _DIR_PID.mask
            # IODIR.INVAL_PDT names one device: DV must be 1.
            if func3 > 1 or cmd & rsvd or (func3 == 1 and not _DIR_DV.get(cmd)):
                return self._illegal()
            self._iodir(func3, cmd)
            return True
        if opcode == OP_ATS:
            if not self._ats_ok or func3 > 1 or cmd & CMD_ATS.reserved_mask:
                return self._illegal()
            self._ats(func3, cmd)
            return True
        return self._illegal()

    def _ats(self, func3: int, cmd: int) -> None:
        """riscv-iommu: "IOMMU PCIe ATS commands": ATS.INVAL (func3 0) and ATS.PRGR (1) send
        their PAYLOAD as the message body, to RID (in segment DSEG with DSV) and PASID PID
        (with PV)."""
        dsv = bool(_ATS_DSV.get(cmd))
        pv = bool(_ATS_PV.get(cmd))
        self._emit(
            Message(
                "ats_inval_req" if func3 == 0 else "prgr",
                rid=_ATS_RID.get(cmd),
                dsv=dsv,
                dseg=_ATS_DSEG.get(cmd) if dsv else 0,
                pv=pv,
                pid=_ATS_PID.get(cmd) if pv else 0,
                payload=_ATS_PAYLOAD.get(cmd),
                # The request is pending before its message goes out, so a completion the
                # device sends at once retires it.
                itag=self._tracker.start() if func3 == 0 else -1,
            )
        )

    def _iofence(self, cmd: int) -> bool:
        """riscv-iommu: "IOMMU Command-queue Fence commands" (IOFENCE.C)."""
        tracker = self._tracker
        if tracker.outstanding:
            return False  # waits for outstanding ATS invalidation completions
        if tracker.take_timeouts():
            # "If the IOFENCE.C times out waiting on completion of previous commands that are
            # specified to have a timeout, then the cmd_to bit in cqcsr is set ... The cqh holds
            # the index of the IOFENCE.C that timed out"; once software clears cmd_to the fence
            # runs again and completes.
            self.regs.cq_error(CQCSR_CMD_TO)
            return False
        if _FENCE_AV.get(cmd):
            addr = _FENCE_ADDR.get(cmd) << 2  # ADDR[63:2]
            data = _FENCE_DATA.get(cmd)
            try:
                self.mem.write32(addr, swap32(data) if self.regs.fctl & FCTL_BE else data)
            except BusError:
                self.regs.cq_error(CQCSR_CQMF)
                return False
        pr = bool(_FENCE_PR.get(cmd))
        pw = bool(_FENCE_PW.get(cmd))
        if pr or pw:
            self._emit(Message("sync", pr=pr, pw=pw))
        if _FENCE_WSI.get(cmd):
            self.regs.cq_error(CQCSR_FENCE_W_IP)
        return True

    def _iodir(self, func3: int, cmd: int) -> None:
        """riscv-iommu: "IOMMU directory cache invalidation commands"."""
        eng = self._engine
        did = _DIR_DID.get(cmd)
        if func3 == 0:  # IODIR.INVAL_DDT
            if not _DIR_DV.get(cmd):
                eng.ddtc.clear()
                eng.pdtc.clear()
                eng.iotlb.clear()
            else:
                eng.ddtc.pop(did, None)
                for pkey in [k for k in eng.pdtc if k[0] == did]:
                    del eng.pdtc[pkey]
                for tkey in [k for k in eng.iotlb if k[0] == did]:
                    del eng.iotlb[tkey]
        else:  # IODIR.INVAL_PDT
            pid = _DIR_PID.get(cmd)
            eng.pdtc.pop((did, pid), None)
            # The IOTLB is keyed by device and process: drop what the old PC produced.
            for key in [k for k in eng.iotlb if k[0] == did and k[1] == pid]:
                del eng.iotlb[key]

    def _iotinval(self, func3: int, cmd: int) -> None:
        """riscv-iommu: "IOMMU Page-Table cache invalidation commands" (with the NL and S
        extensions); the matching is :mod:`iommusim.hw.riscv.iotlb`'s."""
        tlb = self._engine.iotlb
        gv = bool(_INV_GV.get(cmd))
        gscid = _INV_GSCID.get(cmd)
        if func3 == 1:  # GVMA: entries derived from G-stage tables
            doomed = list(match_gvma(tlb, gv, gscid))
        else:
            av = bool(_INV_AV.get(cmd))
            addr_pn = _INV_ADDR.get(cmd)
            span = 1
            if av and _INV_S.get(cmd) and self._params.has(cap.S):
                # NAPOT range: the first 0 bit of ADDR at position X gives 2^(X+1) pages.
                x = ((addr_pn ^ (addr_pn + 1)) + 1).bit_length() - 2
                span = 1 << (x + 1)
                addr_pn &= ~(span - 1)
            doomed = list(
                match_vma(
                    tlb,
                    gv,
                    gscid,
                    bool(_INV_PSCV.get(cmd)),
                    _INV_PSCID.get(cmd),
                    av,
                    addr_pn,
                    span,
                )
            )
        for key in doomed:
            del tlb[key]
