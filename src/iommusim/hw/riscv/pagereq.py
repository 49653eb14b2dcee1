"""The page-request queue's producer side (riscv-iommu: "PCIe ATS Page Request handling",
"Page-Request-Queue (PQ)").

A Page Request message is checked against the device context (Off, Bare, a DC that cannot
be located or has no PRI/ATS enabled: a fault record with TTYP 9 and, for the last request of
a group, an automatic Page Request Group Response), then written to the PQ as a
:data:`~iommusim.bits.riscv.queues.PQ_RECORD`. While the PQ is off, faulted or full the IOMMU
answers the group itself. Responses are built with :func:`iommusim.bits.pcie.prg_response_payload`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from iommusim.bits.pcie import (
    PAGE_REQUEST,
    PRG_INVALID_REQUEST,
    PRG_RESPONSE_FAILURE,
    PRG_SUCCESS,
    prg_response_payload,
)
from iommusim.bits.riscv import causes as C
from iommusim.bits.riscv.queues import PQ_RECORD, FaultRecord
from iommusim.bits.riscv.regs import MODE_BARE, MODE_OFF, PQCSR_PQMF, PQCSR_PQOF, PQCSR_PQON
from iommusim.bits.riscv.structures import DC_TC
from iommusim.hw.riscv.context import DeviceContext
from iommusim.hw.riscv.faultq import FaultQueue
from iommusim.hw.riscv.faults import TranslationFault
from iommusim.hw.riscv.queues import FULL, MEM_FAULT, produce
from iommusim.hw.riscv.regs import Registers
from iommusim.hw.riscv.transaction import Message
from iommusim.hw.riscv.translate import TranslationEngine
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["PQ_ENTRY_BYTES", "PageRequestQueue"]

#: Size of a page-request record (two doublewords).
PQ_ENTRY_BYTES: Final = 16
#: riscv-iommu: "Fault record TTYP field encodings": "PCIe message request".
TTYP_MESSAGE: Final = 9

_M64: Final = (1 << 64) - 1
_TC_DTF: Final = DC_TC.mask("dtf")
_TC_EN_ATS: Final = DC_TC.mask("en_ats")
_TC_EN_PRI: Final = DC_TC.mask("en_pri")
_TC_PRPR: Final = DC_TC.mask("prpr")
_L: Final = PAGE_REQUEST["l"]
_RW: Final = PAGE_REQUEST.mask("r", "w")
_PRGI: Final = PAGE_REQUEST["prgi"]
_PQ: Final = {f.name: f.lsb for f in PQ_RECORD.fields}


class PageRequestQueue:
    """Receives Page Requests and queues them for software (or answers them itself)."""

    __slots__ = ("_emit", "_engine", "_fq", "mem", "regs")

    def __init__(
        self,
        mem: PhysicalMemory,
        regs: Registers,
        engine: TranslationEngine,
        fq: FaultQueue,
        emit: Callable[[Message], None],
    ) -> None:
        self.mem = mem
        self.regs = regs
        self._engine = engine
        self._fq = fq
        self._emit = emit

    def request(
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
        """riscv-iommu: "PCIe ATS Page Request handling" for one message.

        Fields are taken modulo the widths the message carries (device_id 24 bits, PASID 20,
        RID 16, segment 8, payload 64), as requests are."""
        did &= 0xFFFFFF
        pid &= 0xFFFFF
        payload &= _M64
        rid &= 0xFFFF
        dseg &= 0xFF
        r = self.regs
        last = bool(_L.get(payload))
        stop_marker = last and not payload & _RW
        prgi = _PRGI.get(payload)

        def respond(code: int, with_pasid: bool) -> None:
            # Only the last request of a group is answered; a Stop Marker never is.
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
                    payload=prg_response_payload(prgi, code, rid),
                )
            )

        mode = r.ddtp & 0xF
        cause = 0
        prpr = False
        dc: DeviceContext | None = None
        if mode == MODE_OFF:
            cause = C.ALL_DISALLOWED
        elif mode == MODE_BARE:
            cause = C.TTYPE_DISALLOWED
        else:
            # A page request locates the DC too: its DDT walks count (HPM event 5).
            self._engine.hpm = (did, pv, pid, False, 0, False, 0) if r.hpm_walks else None
            try:
                dc = self._engine.device_context(did)
            except TranslationFault as f:
                cause = f.cause
            else:
                prpr = bool(dc.tc & _TC_PRPR)
                if not dc.tc & _TC_EN_PRI or not dc.tc & _TC_EN_ATS:
                    cause = C.TTYPE_DISALLOWED
        if cause:
            if dc is None or not dc.tc & _TC_DTF or cause in C.DTF_REPORTED:
                self._fq.report(FaultRecord(cause, TTYP_MESSAGE, did, pv, pid, priv, 4))
            if cause == C.TTYPE_DISALLOWED:
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
        record = did << _PQ["did"] | payload << _PQ["payload"]
        if pv:
            record |= (
                pid << _PQ["pid"]
                | 1 << _PQ["pv"]
                | int(priv) << _PQ["priv"]
                | int(exec_) << _PQ["exec"]
            )
        tail = produce(self.mem, r.pqb, r.pqh, r.pqt, record, PQ_ENTRY_BYTES, r.fctl & 1)
        if tail == FULL:
            r.pq_error(PQCSR_PQOF)
            respond(PRG_SUCCESS, prpr)
        elif tail == MEM_FAULT:
            r.pq_error(PQCSR_PQMF)
            respond(PRG_RESPONSE_FAILURE, True)
        else:
            r.pqt = tail
            r.pq_record_written()
