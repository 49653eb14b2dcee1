"""Inbound transactions past the IOTLB: riscv-iommu "Process to translate an IOVA" from the
device context to the response, and the fault record when it stops.

:meth:`Translator.walk` runs the translation on the fields of a request as plain values (the
common case builds no object); the table walks themselves are the
:class:`~iommusim.hw.riscv.translate.TranslationEngine`'s. A translation that must stop raises
:class:`~iommusim.hw.riscv.faults.TranslationFault`; :meth:`Translator.fault` and
:meth:`Translator.record` turn it into the spec's data.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv import causes as C
from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import FCTL_GXL, MODE_BARE, MODE_OFF, cap
from iommusim.bits.riscv.structures import DC_TC, MSIPTE_BASIC, MSIPTE_MRIF
from iommusim.hw.riscv import faults as F
from iommusim.hw.riscv.ats import ats_response
from iommusim.hw.riscv.context import DeviceContext
from iommusim.hw.riscv.faultq import FaultQueue
from iommusim.hw.riscv.faults import TranslationFault
from iommusim.hw.riscv.iotlb import IotlbEntry
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.hw.riscv.regs import Registers
from iommusim.hw.riscv.transaction import STATUS_CA, STATUS_SUCCESS, STATUS_UR, Request, Response
from iommusim.hw.riscv.translate import (
    AT_ATS,
    AT_TRANSLATED,
    AT_UNTRANSLATED,
    P_R,
    P_W,
    P_X,
    TranslationEngine,
)

__all__ = ["Translator"]

_ALL_PERMS: Final = P_R | P_W | P_X
_TC_DTF: Final = DC_TC.mask("dtf")
# MSI PTE fields (AIA: "MSI page-table entry"), doubleword 0 and, for MRIF mode, doubleword 1.
_MSI_M: Final = MSIPTE_BASIC["m"]
_MSI_PPN: Final = MSIPTE_BASIC["ppn"]
_MRIF_ADDR: Final = MSIPTE_MRIF["mrif_addr"]
_MRIF_NPPN_LSB: Final = MSIPTE_MRIF["nppn"].lsb - 64
_MRIF_NPPN_MASK: Final = (1 << MSIPTE_MRIF["nppn"].width) - 1
_MRIF_N10_LSB: Final = MSIPTE_MRIF["n10"].lsb - 64
_MRIF_N90_MASK: Final = (1 << MSIPTE_MRIF["n90"].width) - 1
_M_MRIF: Final = 1


def _bare_log2(params: RiscvIommuParams, s1: bool, x: bool) -> int:
    """The range size of a Bare stage: the largest page the widest supported mode of that
    stage (SXL/GXL ``x``) has, else 4 KiB (conformance FORMAT 6.4)."""
    sizes = params.bare_page_size
    if s1:
        wide = ((cap.SV57, "sv57"), (cap.SV48, "sv48"))
        narrow = (cap.SV32, "sv32") if x else (cap.SV39, "sv39")
    else:
        wide = ((cap.SV57X4, "sv57x4"), (cap.SV48X4, "sv48x4"))
        narrow = (cap.SV32X4, "sv32x4") if x else (cap.SV39X4, "sv39x4")
    for bit, name in (*wide, narrow):
        if params.has(bit):
            return sizes[name].bit_length() - 1
    return 12


class Translator:
    """The translation of one request past the IOTLB, and its fault handling."""

    __slots__ = ("_bare_log2", "_fq", "engine", "last_dc", "last_fault", "regs")

    def __init__(
        self, params: RiscvIommuParams, regs: Registers, engine: TranslationEngine, fq: FaultQueue
    ) -> None:
        self.regs = regs
        self.engine = engine
        self._fq = fq
        #: The device context of the last walk that located one (an MRIF-mode answer always
        #: comes from a walk, so its DC is here).
        self.last_dc: DeviceContext | None = None
        #: The record of the last request that faulted, whether or not it was written.
        self.last_fault: FaultRecord | None = None
        # Range sizes of Bare stages: [s1 SXL=0, s1 SXL=1, G GXL=0, G GXL=1] (FORMAT 6.4).
        self._bare_log2 = (
            _bare_log2(params, True, False),
            _bare_log2(params, True, True),
            _bare_log2(params, False, False),
            _bare_log2(params, False, True),
        )

    @property
    def bare_log2(self) -> tuple[int, int, int, int]:
        """The range sizes (log2) a Bare stage reports: first stage with SXL 0 and 1, then
        G-stage with GXL 0 and 1 (conformance FORMAT 6.4)."""
        return self._bare_log2

    def fault(self, req: Request, f: TranslationFault) -> Response:
        """The response to ``req`` stopped by ``f``, after recording the fault (riscv-iommu:
        "PCIe ATS translation request handling" for the ATS status of each cause)."""
        cause = f.cause
        at = req.at
        rec = FaultRecord(
            cause,
            req.ttyp,
            req.device_id,
            req.pid_valid,
            req.process_id,
            req.priv_req,
            req.iova,
            f.iotval2,
        )
        if at == AT_ATS and cause in F.ATS_SUCCESS_CAUSES:
            # A success that grants nothing: no record is queued, but the cause is the
            # IOMMU's own account of the request (last_fault).
            self.last_fault = rec
            return Response(STATUS_SUCCESS, priv=req.supervisor, cause=cause)
        self.report(rec)
        if at == AT_ATS and cause in F.ATS_CA_CAUSES:
            return Response(STATUS_CA, cause=cause)
        return Response(STATUS_UR, cause=cause)

    def record(
        self,
        f: TranslationFault,
        ttyp: int,
        did: int,
        pv: bool,
        pid: int,
        priv: bool,
        iova: int,
    ) -> None:
        """Record the fault ``f`` of a request given by its fields (see :meth:`report`)."""
        self.report(FaultRecord(f.cause, ttyp, did, pv, pid, priv, iova, f.iotval2))

    def report(self, rec: FaultRecord) -> None:
        """Keep ``rec`` as :attr:`last_fault` and write it unless DC.tc.DTF suppresses its
        cause (riscv-iommu: "Fault/Event-Queue (FQ)", the "Reported if DTF is 1?" column)."""
        self.last_fault = rec
        dc = self.last_dc
        if dc is None or not dc.tc & _TC_DTF or rec.cause in C.DTF_REPORTED:
            self._fq.report(rec)

    def walk(
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
        self.last_dc = None
        regs = self.regs
        mode = regs.ddtp & 0xF
        if mode == MODE_OFF:
            raise TranslationFault(C.ALL_DISALLOWED)
        if mode == MODE_BARE:
            if at != AT_UNTRANSLATED:
                raise TranslationFault(C.TTYPE_DISALLOWED)
            return iova, 0, 12
        eng = self.engine
        acc = F.ACC_EXEC if executes else (F.ACC_WRITE if writes else F.ACC_READ)
        # Performance-monitoring walk events (5-8) are counted by the engine with the IDs of
        # the transaction as far as they are known: the GSCID once the DC is located, the
        # PSCID once the PC is (so a G-stage walk for a PDT entry has no valid PSCID).
        walks = regs.hpm_walks
        eng.hpm = (did, pv, pid, False, 0, False, 0) if walks else None
        dc = eng.device_context(did)
        self.last_dc = dc
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
            return self._msi(dc, gpa, ats, executes, priv, s1perms)
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
            gsize = self._bare_log2[3 if regs.fctl & FCTL_GXL else 2]
            gperms = _ALL_PERMS
            gpbmt = 0
        size = s1size if s1size < gsize else gsize  # the smaller stage's page
        if at == AT_UNTRANSLATED and not executes and eng.iotlb.capacity:
            # IOTLB fill (riscv-iommu: "Caching in-memory data structures"): one entry per
            # 4 KiB page, tagged for IOTINVAL matching; ok bit 0 = read, bit 1 = write (dirty).
            # A superpage-entry IOTLB covers the whole range -- except for a device whose
            # MSIs are translated: its entries stay single pages, so no entry ever spans an
            # interrupt file's page (those take the MSI walk, never the IOTLB).
            vpn = iova >> 12
            out = spa & ~0xFFF
            cover = size
            if eng.sp_shifts:
                cover = 12 if dc.msiptp_mode else size
                vpn = vpn >> (cover - 12) << (cover - 12)
                out = spa & ~((1 << cover) - 1)
            eng.iotlb.insert(
                (did, pid if pv else -1, priv, vpn),
                IotlbEntry(
                    dc.gscid if dc.g_mode else -1,
                    pscid if s1mode else -1,
                    bool(g),
                    out,
                    (s1perms & gperms) >> 1 & 3,
                    s1pbmt or gpbmt,
                    cover,
                ),
            )
        if ats:
            out = gpa if eng.t2gpa(dc) else spa
            return ats_response(
                executes, priv, s1perms & gperms, out, size, g if (pv and s1mode) else 0, False
            )
        return spa, s1pbmt or gpbmt, size

    def _msi(
        self, dc: DeviceContext, gpa: int, ats: bool, executes: bool, priv: bool, s1perms: int
    ) -> Response:
        """riscv-iommu: "Process to translate addresses of MSIs", from the MSI PTE on."""
        eng = self.engine
        w0, w1 = eng.msi_pte(dc, gpa)
        mrif = _MSI_M.get(w0) == _M_MRIF
        if executes and not ats:
            raise TranslationFault(1)  # MSI pages are never executable
        if ats:
            perms = s1perms & (P_R | P_W)
            if mrif:
                return Response(
                    STATUS_SUCCESS, r=bool(perms & P_R), w=bool(perms & P_W), priv=priv, u=True
                )
            spa_base = _MSI_PPN.get(w0) << 12
            out = gpa if eng.t2gpa(dc) else spa_base | (gpa & 0xFFF)
            return ats_response(executes, priv, perms, out, 12, 0, True)
        if mrif:
            return Response(
                STATUS_SUCCESS,
                is_msi=True,
                is_mrif=True,
                mrif_addr=_MRIF_ADDR.get(w0) << 9,
                notice_ppn=w1 >> _MRIF_NPPN_LSB & _MRIF_NPPN_MASK,
                notice_nid=(w1 >> _MRIF_N10_LSB & 1) << 10 | (w1 & _MRIF_N90_MASK),
            )
        return Response(STATUS_SUCCESS, pa=(_MSI_PPN.get(w0) << 12) | (gpa & 0xFFF), is_msi=True)
