"""The translation engine: riscv-iommu "Process to translate an IOVA" and the walks it uses.

Hot path: plain ints, precomputed masks, dict caches keyed by tuples. A translation that must
stop raises :class:`TranslationFault` (internal); :mod:`iommusim.hw.riscv.iommu` turns it into
the fault record and the response status.

Performance-monitoring walk events (riscv-iommu: "Standard Events list", events 5-8) are
counted here, one per table entry loaded: the spec's glossary defines a walk as "A single
memory access by the IOMMU to load a table entry. Each entry load--leaf or non-leaf--is one
walk." The caller sets :attr:`TranslationEngine.hpm` to the transaction's IDs when some
counter selects a walk event; when it is ``None`` that costs one test per entry.

When ``trace`` is a list, every memory structure the walk reads is appended to it as a tuple
``(kind, ...)`` for :mod:`iommusim.conformance.explain`; when it is ``None`` that costs one test
per step.

Page-table walks load 8-byte PTEs straight from :attr:`SparseMemory.words` when the engine's
memory is exactly a :class:`SparseMemory` (which never faults); any other memory (a
fault-injecting or tracing wrapper, a subclass) is read through the protocol and sees every
access.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

from iommusim.bits.riscv.regs import MODE_1LVL, MODE_2LVL, MODE_3LVL, cap
from iommusim.errors import BusError
from iommusim.hw.riscv import faults as F
from iommusim.hw.riscv.context import (
    G_MODES_GXL0,
    G_MODES_GXL1,
    PD_PID_BITS,
    S1_MODES_SXL0,
    S1_MODES_SXL1,
    TC_DPE,
    TC_EN_ATS,
    TC_PDTV,
    TC_T2GPA,
    TC_V,
    DeviceContext,
    ProcessContext,
    dc_misconfigured,
    pc_misconfigured,
)
from iommusim.hw.riscv.faults import TranslationFault
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.mem.faults import ACCESS
from iommusim.mem.protocol import PhysicalMemory
from iommusim.mem.sparse import SparseMemory

__all__ = ["AT_ATS", "AT_TRANSLATED", "AT_UNTRANSLATED", "HpmIds", "TranslationEngine", "swap64"]

#: The IDs HPM filters match a transaction on, as :meth:`Registers.hpm_count` takes them:
#: ``(device_id, pv, process_id, gscv, gscid, pscv, pscid)``.
HpmIds = tuple[int, bool, int, bool, int, bool, int]

AT_UNTRANSLATED: Final = 0
AT_TRANSLATED: Final = 1
AT_ATS: Final = 2

# Permission bits as in a PTE.
P_R: Final = 1 << 1
P_W: Final = 1 << 2
P_X: Final = 1 << 3
_V: Final = 1 << 0
_U: Final = 1 << 4
_G: Final = 1 << 5
_A: Final = 1 << 6
_D: Final = 1 << 7
_N: Final = 1 << 63
_PBMT_SHIFT: Final = 61
_PPN_MASK: Final = (1 << 44) - 1
_NONLEAF_RSVD: Final = _D | _A | _U | _N | (3 << _PBMT_SHIFT)
_M64: Final = (1 << 64) - 1


def swap64(v: int) -> int:
    """Byte-swap a doubleword (big-endian structures, fctl.BE / DC.tc.SBE)."""
    return int.from_bytes(v.to_bytes(8, "little"), "big")


def swap32(v: int) -> int:
    return int.from_bytes(v.to_bytes(4, "little"), "big")


class _Lru(OrderedDict[Any, Any]):
    """A bounded mapping evicting the least recently used (or oldest, for FIFO) entry."""

    def __init__(self, capacity: int, lru: bool) -> None:
        super().__init__()
        self.capacity = capacity
        self.lru = lru

    def lookup(self, key: Any) -> Any:
        v = self.get(key)
        if v is not None and self.lru:
            self.move_to_end(key)
        return v

    def insert(self, key: Any, value: Any) -> None:
        if self.capacity <= 0:
            return
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.capacity:
            self.popitem(last=False)


class TranslationEngine:
    """Device-directory, process-directory, first-stage, G-stage and MSI walks."""

    def __init__(self, params: RiscvIommuParams, mem: PhysicalMemory, regs: Any) -> None:
        self.p = params
        self.mem = mem
        self.regs = regs
        self.trace: list[tuple[Any, ...]] | None = None
        #: IDs of the transaction being processed while a walk event (5-8) is selected, for
        #: the HPM filters; ``None`` when no counter selects one (set by the caller).
        self.hpm: HpmIds | None = None
        caps = params.capabilities
        self.extended = bool(caps >> cap.MSI_FLAT & 1)
        self.svpbmt = bool(caps >> cap.SVPBMT & 1)
        self.svrsw = bool(caps >> cap.SVRSW60T59B & 1)
        # Leaf PTE bits reserved for future standard use: 58:54 always, 60:59 without
        # Svrsw60t59b; PBMT (62:61) without Svpbmt is checked separately.
        self.pte_rsvd = (0x1F << 54) | (0 if self.svrsw else 3 << 59)
        if not self.svpbmt:
            self.pte_rsvd |= 3 << _PBMT_SHIFT
        # Device-ID bits above what each ddtp mode indexes: set ones fault (see device_context).
        if self.extended:
            self._did_wide = {MODE_1LVL: 0xFFFFC0, MODE_2LVL: 0xFF8000, MODE_3LVL: 0}
        else:
            self._did_wide = {MODE_1LVL: 0xFFFF80, MODE_2LVL: 0xFF0000, MODE_3LVL: 0}
        c = params.caches
        self.ddtc: _Lru = _Lru(c.ddtc_entries, c.replacement == "lru")
        self.pdtc: _Lru = _Lru(c.pdtc_entries, c.replacement == "lru")
        self.iotlb: _Lru = _Lru(c.iotlb_entries, c.replacement == "lru")

    # ------------------------------------------------------------------ memory helpers
    def _ld64(self, pa: int, be: bool, acc_cause: int, corr_cause: int) -> int:
        try:
            v = self.mem.read64(pa)
        except BusError as e:
            raise TranslationFault(acc_cause if e.kind == ACCESS else corr_cause) from None
        return swap64(v) if be else v

    def _load_pte(self, pa: int, ptesz: int, af_cause: int, corr_cause: int) -> int:
        """A PTE load through the memory protocol (little-endian: the caller swaps)."""
        try:
            return self.mem.read64(pa) if ptesz == 8 else self.mem.read32(pa)
        except BusError as e:
            raise TranslationFault(af_cause if e.kind == ACCESS else corr_cause) from None

    # ------------------------------------------------------------------ device context
    def device_context(self, did: int) -> DeviceContext:
        """riscv-iommu: "Process to locate the Device-context" (with the width checks)."""
        ddtp = self.regs.ddtp
        mode = ddtp & 0xF
        # riscv-iommu: "Process to translate an IOVA" step 5: device_id wider than the mode
        # (a non-zero DDI[2], or DDI[1] with one level).
        if did & self._did_wide[mode]:
            raise TranslationFault(F.TTYPE_DISALLOWED)
        # A DDTC hit is the common case: _Lru.lookup inlined.
        ddtc = self.ddtc
        cached = ddtc.get(did)
        if cached is not None:
            if ddtc.lru:
                ddtc.move_to_end(did)
            return cached  # type: ignore[no-any-return]
        if self.extended:
            ddi = (did & 0x3F, did >> 6 & 0x1FF, did >> 15 & 0x1FF)
            dc_size = 64
        else:
            ddi = (did & 0x7F, did >> 7 & 0x1FF, did >> 16 & 0xFF)
            dc_size = 32
        be = bool(self.regs.fctl & 1)
        trace = self.trace
        # HPM event 5, "Device Directory Walks": one per DDT entry (non-leaf DDTE or DC)
        # loaded on a DDTC miss.
        hpm = self.hpm
        if hpm is not None and 5 not in self.regs.hpm_events:
            hpm = None
        levels = {MODE_1LVL: 1, MODE_2LVL: 2, MODE_3LVL: 3}[mode]
        a = (ddtp >> 10 & _PPN_MASK) << 12
        i = levels - 1
        while i > 0:
            pa = a + ddi[i] * 8
            ddte = self._ld64(pa, be, F.DDT_LOAD_FAULT, F.DDT_CORRUPTION)
            if hpm is not None:
                self.regs.hpm_count(5, *hpm)
            if trace is not None:
                trace.append(("ddte", i, pa, ddte))
            if not ddte & 1:
                raise TranslationFault(F.DDT_INVALID)
            if ddte & 0xFFC0_0000_0000_03FE:
                raise TranslationFault(F.DDT_MISCONFIGURED)
            i -= 1
            a = (ddte >> 10 & _PPN_MASK) << 12
        pa = a + ddi[0] * dc_size
        words = tuple(
            self._ld64(pa + 8 * k, be, F.DDT_LOAD_FAULT, F.DDT_CORRUPTION)
            for k in range(dc_size // 8)
        )
        if hpm is not None:
            self.regs.hpm_count(5, *hpm)  # the DC: one entry, whatever its size
        dc = DeviceContext(did, words)
        if trace is not None:
            trace.append(("dc", pa, words))
        if not dc.tc & TC_V:
            raise TranslationFault(F.DDT_INVALID)
        why = dc_misconfigured(self.p, self.regs.fctl, dc)
        if why is not None:
            if trace is not None:
                trace.append(("misconfigured", "dc", why))
            raise TranslationFault(F.DDT_MISCONFIGURED)
        self.ddtc.insert(did, dc)
        return dc

    # ------------------------------------------------------------------ process context
    def process_context(self, dc: DeviceContext, pid: int, acc: int) -> ProcessContext:
        """riscv-iommu: "Process to locate the Process-context"."""
        key = (dc.did, pid)
        cached = self.pdtc.lookup(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        mode = dc.fsc_mode
        levels = {1: 1, 2: 2, 3: 3}[mode]
        pdi = (pid & 0xFF, pid >> 8 & 0x1FF, pid >> 17 & 0x7)
        be = dc.sbe
        trace = self.trace
        # HPM event 6, "Process Directory Walks": one per PDT entry (non-leaf PDTE or PC)
        # loaded on a PDTC miss; the G-stage walks translating their addresses count as 8.
        hpm = self.hpm
        if hpm is not None and 6 not in self.regs.hpm_events:
            hpm = None
        a = dc.fsc_ppn << 12
        i = levels - 1
        while True:
            a = a + (pdi[i] * 8 if i else pdi[0] * 16)
            if dc.g_mode:
                # PDT accesses are implicit reads translated by the G-stage; its access
                # faults are reported as 265 and corruption as 269.
                spa = self.g_stage(dc, a, acc, 1, False, F.PDT_LOAD_FAULT, F.PDT_CORRUPTION)[0]
            else:
                spa = a
            if i == 0:
                break
            pdte = self._ld64(spa, be, F.PDT_LOAD_FAULT, F.PDT_CORRUPTION)
            if hpm is not None:
                self.regs.hpm_count(6, *hpm)
            if trace is not None:
                trace.append(("pdte", i, a, spa, pdte))
            if not pdte & 1:
                raise TranslationFault(F.PDT_INVALID)
            if pdte & 0xFFC0_0000_0000_03FE:
                raise TranslationFault(F.PDT_MISCONFIGURED)
            i -= 1
            a = (pdte >> 10 & _PPN_MASK) << 12
        ta = self._ld64(spa, be, F.PDT_LOAD_FAULT, F.PDT_CORRUPTION)
        fsc = self._ld64(spa + 8, be, F.PDT_LOAD_FAULT, F.PDT_CORRUPTION)
        if hpm is not None:
            self.regs.hpm_count(6, *hpm)
        pc = ProcessContext(ta, fsc)
        if trace is not None:
            trace.append(("pc", a, spa, ta, fsc))
        if not ta & 1:
            raise TranslationFault(F.PDT_INVALID)
        why = pc_misconfigured(self.p, dc.sxl, pc)
        if why is not None:
            if trace is not None:
                trace.append(("misconfigured", "pc", why))
            raise TranslationFault(F.PDT_MISCONFIGURED)
        self.pdtc.insert(key, pc)
        return pc

    # ------------------------------------------------------------------ G-stage
    def g_stage(
        self,
        dc: DeviceContext,
        gpa: int,
        acc: int,
        implicit: int,
        ats: bool,
        af_cause: int = -1,
        corr_cause: int = F.PT_CORRUPTION,
        reads: bool = True,
        writes: bool = False,
        executes: bool = False,
        nw: bool = True,
    ) -> tuple[int, int, int, int]:
        """Second-stage translation of ``gpa`` (privileged spec "Two-Stage Address
        Translation", G-stage). ``implicit`` is 0 for the request's own access, 1 for an
        implicit read and 3 for an implicit write (iotval2 bits 1:0 of a guest-page fault).

        Returns ``(spa, size_lg2, perms, pbmt)``; ``perms`` are the granted R/W/X bits (only
        meaningful for ATS; otherwise a missing permission faults).
        """
        fctl = self.regs.fctl
        try:
            levels, bits, ptesz, gpabits = (G_MODES_GXL1 if fctl & 4 else G_MODES_GXL0)[dc.g_mode]
        except KeyError:
            # A DC checked under another fctl.GXL (written while the IOMMU was not Off,
            # UNSPECIFIED by riscv-iommu: "Features-control register (fctl)") names a mode the
            # current GXL does not have: the DC is misconfigured now ("Device-context
            # configuration checks"). try/except costs nothing when no exception is raised.
            raise TranslationFault(F.DDT_MISCONFIGURED) from None
        gpf = F.GUEST_PAGE_FAULT[acc]
        iotval2 = (gpa & ~3) | implicit
        if gpa >> gpabits:
            raise TranslationFault(gpf, iotval2)
        if af_cause < 0:
            af_cause = F.ACCESS_FAULT[acc]
        mem = self.mem
        # Word loads only from exactly a SparseMemory: a wrapper or subclass sees every access.
        words = mem.words if ptesz == 8 and type(mem) is SparseMemory else None
        be = fctl & 1
        trace = self.trace
        rsvd = self.pte_rsvd if ptesz == 8 else 0
        nonleaf_bad = _NONLEAF_RSVD | rsvd
        ppn_mask = _PPN_MASK if ptesz == 8 else 0x3FFFFF
        # HPM event 8, "Second-stage Page Table Walks": one per G-stage PTE loaded, for the
        # request's own GPA and for the implicit accesses (PDT entries, first-stage PTEs,
        # their A/D updates) alike -- each is a table-entry load, so a walk.
        hpm = self.hpm
        if hpm is not None and 8 not in self.regs.hpm_events:
            hpm = None
        a = dc.g_ppn << 12
        i = levels - 1
        shift = 12 + i * bits
        # The root table is 4 times larger: its index has 2 more bits.
        idx_mask = (4 << bits) - 1
        while True:
            pa = a + (gpa >> shift & idx_mask) * ptesz
            if words is not None:
                page = words.get(pa >> 12)
                pte = page[(pa & 0xFFF) >> 3] if page is not None else 0
            else:
                pte = self._load_pte(pa, ptesz, af_cause, corr_cause)
            if hpm is not None:
                self.regs.hpm_count(8, *hpm)
            if be:
                pte = swap64(pte) if ptesz == 8 else swap32(pte)
            if trace is not None:
                trace.append(("pte", "g", i, gpa, pa, pte, ptesz))
            # Every malformed PTE is the same guest-page fault, so the checks are merged:
            # V with R = W = X = 0 points to the next level.
            if pte & 0xF == _V:
                if pte & nonleaf_bad:
                    raise TranslationFault(gpf, iotval2)
                i -= 1
                if i < 0:
                    raise TranslationFault(gpf, iotval2)
                shift -= bits
                idx_mask = (1 << bits) - 1
                a = (pte >> 10 & ppn_mask) << 12
                continue
            if not pte & _V or (pte & 6) == P_W or pte & rsvd:
                raise TranslationFault(gpf, iotval2)
            break  # R or X: a leaf
        return self._leaf(
            pte,
            pa,
            i,
            bits,
            ptesz,
            gpa,
            gpf,
            iotval2,
            ats,
            dc.gade,
            False,
            True,
            implicit,
            reads,
            writes,
            executes,
            nw,
            None,
            0,
        )[:4]

    # ------------------------------------------------------------------ leaf processing
    def _leaf(
        self,
        pte: int,
        pa: int,
        i: int,
        bits: int,
        ptesz: int,
        va: int,
        pf: int,
        iotval2: int,
        ats: bool,
        hwad: bool,
        priv: bool,
        sum_: bool,
        implicit: int,
        reads: bool,
        writes: bool,
        executes: bool,
        nw: bool,
        dc: DeviceContext | None,
        pte_gpa: int,
    ) -> tuple[int, int, int, int, int]:
        """Permission, superpage, NAPOT, PBMT and A/D rules of a leaf PTE.

        For the G-stage ``priv`` is False and ``sum_`` unused (the U bit is checked as for a
        user access). ``dc``/``pte_gpa`` are given for a first-stage PTE whose page needs a
        G-stage translation for an implicit A/D write.
        Returns ``(pa, size_lg2, perms, pbmt, global)``.
        """
        pbmt = pte >> _PBMT_SHIFT & 3
        if pbmt == 3:
            raise TranslationFault(pf, iotval2)
        if ptesz == 8:
            ppn = pte >> 10 & _PPN_MASK
        else:
            ppn = pte >> 10 & 0x3FFFFF
        size_lg2 = 12 + i * bits
        if pte & _N:
            # Svnapot: only 64 KiB NAPOT leaves at level 0 are defined.
            if i != 0 or ppn & 0xF != 8:
                raise TranslationFault(pf, iotval2)
            out = ((ppn & ~0xF) << 12) | (va & 0xFFFF)
        else:
            if ppn & ((1 << (i * bits)) - 1):
                raise TranslationFault(pf, iotval2)  # misaligned superpage
            mask = (1 << size_lg2) - 1
            out = ((ppn << 12) & ~mask) | (va & mask)
        u = pte & _U
        if implicit:
            # Implicit accesses by the IOMMU: reads need R, the A/D write needs W; U = 1.
            if not u or not pte & P_R or (implicit == 3 and not pte & P_W):
                raise TranslationFault(pf, iotval2)
            want_d = implicit == 3
            perms = pte & 0xE
        elif ats:
            # riscv-iommu: "PCIe ATS translation request handling" and PC.ta.SUM/ENS rules:
            # supervisor execute intent to a U page is denied regardless of SUM.
            if (u and priv and (not sum_ or executes)) or (not u and not priv):
                # A privilege denial is a page fault: no permission and no Global.
                raise TranslationFault(pf, iotval2)
            perms = pte & (P_R | P_W)
            if executes and pte & P_X and perms & P_R:
                perms |= P_X
            if not perms & P_R:
                perms = 0  # no read: nothing can be granted (X needs R for PCIe)
            want_d = not nw and bool(pte & P_W)
            if pte & P_W and not pte & _D and (nw or not hwad):
                perms &= ~P_W  # an ATS completion grants W only on a dirty page
        else:
            if priv:
                if u and (executes or not sum_):
                    raise TranslationFault(pf, iotval2)
            elif not u:
                raise TranslationFault(pf, iotval2)
            if (
                (reads and not pte & P_R)
                or (writes and not pte & P_W)
                or (executes and not pte & P_X)
            ):
                raise TranslationFault(pf, iotval2)
            want_d = writes
            perms = pte & 0xE
        if not pte & _A or (want_d and not pte & _D):
            if not hwad:
                raise TranslationFault(pf, iotval2)
            new = pte | _A | (_D if want_d else 0)
            self._update_ad(pa, pte, new, ptesz, dc, pte_gpa, pf)
            pte = new
        if not ats and not pte & _D:
            perms &= ~P_W  # W counts as granted (for the IOTLB) only on a dirty page
        return out, size_lg2, perms, pbmt, pte & _G

    def _update_ad(
        self,
        pa: int,
        old: int,
        new: int,
        ptesz: int,
        dc: DeviceContext | None,
        pte_gpa: int,
        pf: int,
    ) -> None:
        """Atomic A/D update (riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D)
        updates"): a compare-and-swap on memory; first-stage PTEs in guest memory need W in
        the G-stage (an implicit write)."""
        acc = F.GUEST_PAGE_FAULT.index(pf) if pf in F.GUEST_PAGE_FAULT else F.PAGE_FAULT.index(pf)
        if dc is not None and dc.g_mode:
            pa = self.g_stage(dc, pte_gpa, acc, 3, False)[0]
            be = dc.sbe
        elif dc is not None:
            be = dc.sbe
        else:
            be = bool(self.regs.fctl & 1)
        af = F.ACCESS_FAULT[acc]
        try:
            if ptesz == 8:
                exp, val = (swap64(old), swap64(new)) if be else (old, new)
                self.mem.cas64(pa, exp, val)
            else:
                # 32-bit PTE: compare-and-swap within its doubleword.
                base = pa & ~7
                sh = (pa & 4) * 8
                word = self.mem.read64(base)
                cur = word >> sh & 0xFFFF_FFFF
                exp32, val32 = (swap32(old), swap32(new)) if be else (old, new)
                if cur == exp32:
                    self.mem.cas64(base, word, (word & ~(0xFFFF_FFFF << sh)) | val32 << sh)
        except BusError as e:
            raise TranslationFault(af if e.kind == ACCESS else F.PT_CORRUPTION) from None
        if self.trace is not None:
            self.trace.append(("ad", pa, old, new))

    # ------------------------------------------------------------------ first stage
    def first_stage(
        self,
        dc: DeviceContext,
        mode: int,
        root_ppn: int,
        iova: int,
        acc: int,
        priv: bool,
        sum_: bool,
        ats: bool,
        reads: bool,
        writes: bool,
        executes: bool,
        nw: bool,
    ) -> tuple[int, int, int, int, int]:
        """First-stage (VS or single-stage) walk. Returns ``(gpa, size_lg2, perms, pbmt, g)``."""
        try:
            levels, bits, ptesz, vabits = (S1_MODES_SXL1 if dc.sxl else S1_MODES_SXL0)[mode]
        except KeyError:
            # A PC from the process-directory cache, checked against a DC with another SXL
            # (the DC changed in memory and was re-read without IODIR.INVAL_PDT): its mode is
            # not one this DC's SXL has -- the PC is misconfigured for it (riscv-iommu:
            # "Process-context configuration checks"). A DC's own iosatp mode is checked
            # with its SXL, so only a PC's can miss.
            raise TranslationFault(F.PDT_MISCONFIGURED) from None
        pf = F.PAGE_FAULT[acc]
        if ptesz == 4:
            if iova >> 32:
                raise TranslationFault(pf)
        else:
            top = iova >> (vabits - 1)
            if top and top != (1 << (65 - vabits)) - 1:
                raise TranslationFault(pf)
        mem = self.mem
        # Word loads only from exactly a SparseMemory: a wrapper or subclass sees every access.
        words = mem.words if ptesz == 8 and type(mem) is SparseMemory else None
        be = dc.sbe
        gmode = dc.g_mode
        trace = self.trace
        rsvd = self.pte_rsvd if ptesz == 8 else 0
        nonleaf_bad = _NONLEAF_RSVD | rsvd
        ppn_mask = _PPN_MASK if ptesz == 8 else 0x3FFFFF
        # HPM event 7, "First-stage Page Table Walks": one per first-stage PTE loaded.
        hpm = self.hpm
        if hpm is not None and 7 not in self.regs.hpm_events:
            hpm = None
        a = root_ppn << 12
        i = levels - 1
        shift = 12 + i * bits
        vmask = (1 << bits) - 1
        g = 0
        while True:
            gpa = a + (iova >> shift & vmask) * ptesz
            pa = self.g_stage(dc, gpa, acc, 1, False)[0] if gmode else gpa
            if words is not None:
                page = words.get(pa >> 12)
                pte = page[(pa & 0xFFF) >> 3] if page is not None else 0
            else:
                pte = self._load_pte(pa, ptesz, F.ACCESS_FAULT[acc], F.PT_CORRUPTION)
            if hpm is not None:
                self.regs.hpm_count(7, *hpm)
            if be:
                pte = swap64(pte) if ptesz == 8 else swap32(pte)
            if trace is not None:
                trace.append(("pte", "s1", i, gpa, pa, pte, ptesz))
            # Every malformed PTE is the same page fault, so the checks are merged: V with
            # R = W = X = 0 points to the next level.
            if pte & 0xF == _V:
                if pte & nonleaf_bad:
                    raise TranslationFault(pf)
                g |= pte & _G
                i -= 1
                if i < 0:
                    raise TranslationFault(pf)
                shift -= bits
                a = (pte >> 10 & ppn_mask) << 12
                continue
            if not pte & _V or (pte & 6) == P_W or pte & rsvd:
                raise TranslationFault(pf)
            break  # R or X: a leaf
        out, size_lg2, perms, pbmt, lg = self._leaf(
            pte,
            pa,
            i,
            bits,
            ptesz,
            iova,
            pf,
            0,
            ats,
            dc.sade,
            priv,
            sum_,
            0,
            reads,
            writes,
            executes,
            nw,
            dc,
            gpa,
        )
        return out, size_lg2, perms, pbmt, g | lg

    # ------------------------------------------------------------------ MSI
    def msi_match(self, dc: DeviceContext, gpa: int) -> bool:
        """riscv-iommu: "MSI address mask and pattern": is ``gpa`` a virtual interrupt file?"""
        nm = ~dc.msi_mask
        return (gpa >> 12) & nm == dc.msi_pattern & nm

    def msi_pte(self, dc: DeviceContext, gpa: int) -> tuple[int, int]:
        """riscv-iommu: "Process to translate addresses of MSIs": read and check the MSI PTE.

        Returns both doublewords of a valid basic (M = 3) or MRIF (M = 1) PTE.
        """
        mask = dc.msi_mask
        x = gpa >> 12
        idx = 0
        k = 0
        while mask:
            low = mask & -mask
            if x & low:
                idx |= 1 << k
            k += 1
            mask ^= low
        pa = (dc.msiptp_ppn << 12) | (idx * 16)
        be = bool(self.regs.fctl & 1)
        w0 = self._ld64(pa, be, F.MSI_PTE_LOAD_FAULT, F.MSI_PT_CORRUPTION)
        w1 = self._ld64(pa + 8, be, F.MSI_PTE_LOAD_FAULT, F.MSI_PT_CORRUPTION)
        if self.trace is not None:
            self.trace.append(("msipte", gpa, idx, pa, w0, w1))
        if not w0 & 1:
            raise TranslationFault(F.MSI_PTE_INVALID)
        m = w0 >> 1 & 3
        if m == 3:
            if w0 & (0x7F << 3 | 0x1FF << 54) or w1:
                raise TranslationFault(F.MSI_PTE_MISCONFIGURED)
        elif m == 1:
            if not self.p.has(cap.MSI_MRIF):
                raise TranslationFault(F.MSI_PTE_MISCONFIGURED)
            if w0 & (0xF << 3 | 0x1FF << 54) or w1 & (0x3F << 54 | 0x7 << 61):
                raise TranslationFault(F.MSI_PTE_MISCONFIGURED)
        else:
            raise TranslationFault(F.MSI_PTE_MISCONFIGURED)
        return w0, w1

    # ------------------------------------------------------------------ whole process
    def locate(
        self, dc: DeviceContext, pv: bool, pid: int, priv: bool, at: int, acc: int
    ) -> tuple[ProcessContext | None, int, int, int]:
        """Steps 7-16 of "Process to translate an IOVA" once the DC is located.

        Returns ``(pc, s1_mode, s1_ppn, pscid)``; s1_mode 0 means a Bare first stage.
        Off and Bare ``ddtp`` modes are handled by the caller.
        """
        tc = dc.tc
        if at != AT_UNTRANSLATED and not tc & TC_EN_ATS:
            raise TranslationFault(F.TTYPE_DISALLOWED)
        pdtv = tc & TC_PDTV
        if pv:
            if not pdtv:
                raise TranslationFault(F.TTYPE_DISALLOWED)
            if dc.fsc_mode and pid >> PD_PID_BITS[dc.fsc_mode]:
                raise TranslationFault(F.TTYPE_DISALLOWED)
        if at == AT_TRANSLATED:
            return None, 0, 0, 0
        if not pdtv:
            return None, dc.fsc_mode, dc.fsc_ppn, dc.pscid
        if not pv:
            if not tc & TC_DPE:
                return None, 0, 0, 0
            pid = 0
        if dc.fsc_mode == 0:
            return None, 0, 0, 0
        pc = self.process_context(dc, pid, acc)
        if priv and not pc.ens:
            raise TranslationFault(F.TTYPE_DISALLOWED)
        return pc, pc.mode, pc.ppn, pc.pscid

    @staticmethod
    def t2gpa(dc: DeviceContext) -> bool:
        return bool(dc.tc & TC_T2GPA)
