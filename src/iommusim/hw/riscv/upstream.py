"""The RISC-V IOMMU behind the PCIe upstream port (:mod:`iommusim.hw.common.upstream`).

:class:`RiscvUpstreamPort` adapts :class:`~iommusim.hw.riscv.iommu.RiscvIommu` to the
endpoint's view: memory requests are translated (riscv-iommu: "Process to translate an IOVA";
the IOMMU's fast path, :meth:`RiscvIommu.translate_pa`) and then carried out on the memory
behind the IOMMU; ATS Translation Requests become ``at = 2`` requests ("PCIe ATS translation
request handling"); Page Requests enter the PQ ("PCIe ATS Page Request handling") and
Invalidation Completions retire ATS.INVAL commands ("IOMMU PCIe ATS commands").

Completion Status (riscv-iommu: "Aborting transactions", "Reliability, Availability, and
Serviceability"): a request that faulted is answered UR, or CA when corrupted data or a
data-path error aborted it; an address no memory decodes is UR with no IOMMU fault; ATS
completions keep the IOMMU's own UR/CA choice. The register doorbell is ``cqt``: a write there
lets the IOMMU run its command queue ("Command-Queue (CQ)").
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.pcie import CPL_CA, CPL_SC, CPL_UR
from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import OFF_CQT, REGISTERS_SIZE
from iommusim.errors import BusError
from iommusim.hw.common.upstream import InvalidateRequest, PrgResponse, TranslationCompletion
from iommusim.hw.riscv.faults import CORRUPTION_CAUSES
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.mrif import MRIF_FAULT, MRIF_UNSUPPORTED
from iommusim.hw.riscv.transaction import STATUS_CA, Message, Request
from iommusim.hw.riscv.translate import AT_ATS, AT_TRANSLATED
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["KIND", "RiscvUpstreamPort"]

#: The IOMMU kind this adapter serves (the platform's and the kernel's registry key).
KIND: Final = "riscv"
_MRIF: Final = -1  # translate_pa's answer for an MSI to an MRIF-mode interrupt file


class RiscvUpstreamPort:
    """An endpoint's upstream port into ``iommu``; ``mem`` is what translated requests reach
    (the platform's bus)."""

    kind: Final = KIND
    #: Size of the register window the platform maps.
    registers_size: Final = REGISTERS_SIZE

    __slots__ = ("_fault", "iommu", "mem")

    def __init__(self, iommu: RiscvIommu, mem: PhysicalMemory) -> None:
        self.iommu = iommu
        self.mem = mem
        self._fault: FaultRecord | None = None

    @property
    def last_fault(self) -> FaultRecord | None:
        return self._fault

    def _failed(self, cause: int) -> int:
        self._fault = self.iommu.last_fault
        return CPL_CA if cause in CORRUPTION_CAUSES else CPL_UR

    def _unmapped(self) -> int:
        self._fault = None
        return CPL_UR

    def _translated(self, rid: int, addr: int, is_write: bool) -> int:
        """The PA of a Translated request, or ``-status`` (riscv-iommu: "Process to translate
        an IOVA", steps 7-8: passed through, or with DC.tc.T2GPA translated as a GPA)."""
        out = self.iommu.translate(Request(rid, addr, is_write, at=AT_TRANSLATED))
        if out.ok:
            return out.pa
        self._fault = self.iommu.last_fault if out.cause else None
        return -(CPL_CA if out.status == STATUS_CA else CPL_UR)

    # ------------------------------------------------------------------ memory requests
    def memory_read(
        self, rid: int, pasid: int, priv: bool, addr: int, size: int, translated: bool
    ) -> bytes | int:
        if translated:
            pa = self._translated(rid, addr, False)
            if pa < 0:
                return -pa
        else:
            pa = self.iommu.translate_pa(rid, addr, False, pasid, priv)
            if pa == _MRIF:
                # AIA: "MSI PTE, MRIF mode": a read of an interrupt file returns zeros.
                return bytes(size)
            if pa < 0:
                return self._failed(-pa)
        try:
            return self.mem.read(pa, size)
        except BusError:
            return self._unmapped()

    def memory_write(
        self, rid: int, pasid: int, priv: bool, addr: int, data: bytes, translated: bool
    ) -> int:
        if translated:
            pa = self._translated(rid, addr, True)
            if pa < 0:
                return -pa
        else:
            pa = self.iommu.translate_pa(rid, addr, True, pasid, priv)
            if pa == _MRIF:
                return self._mrif_write(rid, pasid, priv, addr, data)
            if pa < 0:
                return self._failed(-pa)
        try:
            self.mem.write(pa, data)
        except BusError:
            return self._unmapped()
        return CPL_SC

    def _mrif_write(self, rid: int, pasid: int, priv: bool, addr: int, data: bytes) -> int:
        """A write to an MRIF-mode interrupt-file page: the IOMMU itself records it as an
        interrupt (:mod:`iommusim.hw.riscv.mrif`), given the data."""
        pv = pasid >= 0
        req = Request(rid, addr, True, 0, pv, pasid if pv else 0, priv)
        _, out = self.iommu.device_write(req, int.from_bytes(data, "little"), len(data))
        if out is None or out.status == MRIF_UNSUPPORTED:
            return self._unmapped()
        if out.status == MRIF_FAULT:
            return self._failed(out.cause)
        return CPL_SC

    # ------------------------------------------------------------------ ATS and PRI
    def translation_request(
        self, rid: int, pasid: int, priv: bool, addr: int, no_write: bool
    ) -> TranslationCompletion:
        pv = pasid >= 0
        resp = self.iommu.translate(
            Request(
                rid,
                addr & ~0xFFF,
                at=AT_ATS,
                pid_valid=pv,
                process_id=pasid if pv else 0,
                priv_req=priv,
                no_write=no_write,
            )
        )
        fault = self.iommu.last_fault if resp.cause else None
        self._fault = fault
        status = CPL_SC if resp.ok else (CPL_CA if resp.status == STATUS_CA else CPL_UR)
        return TranslationCompletion(
            status, resp.r, resp.w, resp.u, resp.exe, resp.priv, resp.g, resp.ppn, resp.s, fault
        )

    def page_request(self, rid: int, pasid: int, priv: bool, payload: int) -> None:
        # The device_id of a PCIe function is its segment over its 16-bit RID (DSV when the
        # segment is not 0).
        pv = pasid >= 0
        self.iommu.page_request(
            rid, pv, pasid if pv else 0, priv, False, payload, rid & 0xFFFF, rid > 0xFFFF, rid >> 16
        )

    def invalidation_completion(self, rid: int, itag: int, cc: int) -> None:
        self.iommu.ats_inval_completion([itag], cc)

    # ------------------------------------------------------------------ downstream, doorbell
    @staticmethod
    def downstream(msg: Message) -> InvalidateRequest | PrgResponse | None:
        """The device-bound PCIe message ``msg`` carries, routed to the requester id it names
        (segment over RID with DSV, else segment 0), or ``None`` for a message to no device
        (an IOFENCE.C sync request to the IO bridge)."""
        if msg.kind not in ("ats_inval_req", "prgr"):
            return None
        rid = msg.dseg << 16 | msg.rid if msg.dsv else msg.rid
        pasid = msg.pid if msg.pv else -1
        if msg.kind == "prgr":
            return PrgResponse(rid, pasid, msg.payload)
        return InvalidateRequest(rid, pasid, msg.payload, msg.itag)

    @staticmethod
    def is_doorbell(offset: int) -> bool:
        """Whether a register write at ``offset`` asks the IOMMU to work: ``cqt``."""
        return offset == OFF_CQT

    def run_commands(self) -> int:
        """Let the IOMMU execute what it can of its command queue; returns how many ran."""
        return self.iommu.process_commands()
