"""The translation engine: riscv-iommu "Process to translate an IOVA" and the walks it uses.

Hot path: plain ints, precomputed masks, dict caches keyed by tuples. A translation that must
stop raises :class:`TranslationFault` (internal); :mod:`iommusim.hw.riscv.iommu` turns it into
the fault record and the response status.

Performance-monitoring walk events (riscv-iommu: "Standard Events list", events 5-8) are
counted here, one per table entry loaded: the spec's glossary defines a walk as "A single
memory access by the IOMMU to load a table entry. Each entry load--leaf or non-leaf--is one
walk." The caller sets :attr:`TranslationEngine.hpm` to the transaction's IDs when some
counter selects a walk event; when it is ``None`` that costs one test per entry.

When ``trace`` is a list, every memory structure the walk reads is appended to it as a named
record (:class:`DdteRead`, :class:`DcRead`, :class:`PdteRead`, :class:`PcRead`,
:class:`MsiPteRead`, :class:`Misconfigured`, and the generic walker's
:class:`~iommusim.hw.pgtable.PteRead` / :class:`~iommusim.hw.pgtable.AdUpdate` tagged with
the stage and the access each walk served) for :mod:`iommusim.conformance.explain`; when it
is ``None`` that costs one test per step.

Both page-table stages are the one walker of :mod:`iommusim.hw.pgtable` over the formats of
:mod:`iommusim.bits.riscv.pgtable`; the RISC-V rules on top of it -- which permissions a leaf
must grant for the request (privilege, SUM, ATS, implicit accesses), the A/D policy and which
fault cause each failure is -- stay here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from iommusim.bits.riscv import causes as C
from iommusim.bits.riscv.pgtable import FIRST_STAGE_FORMATS, G_STAGE_FORMATS, SV39
from iommusim.bits.riscv.regs import MODE_1LVL, MODE_2LVL, MODE_3LVL, cap
from iommusim.bits.riscv.structures import DDTE, MSIPTE_BASIC, MSIPTE_MRIF, PDTE
from iommusim.errors import BusError
from iommusim.hw.common.cache import BoundedCache, bounded_cache
from iommusim.hw.pgtable.walk import AdUpdate, PteRead, Walker, swap32, swap64
from iommusim.hw.riscv.context import (
    PD_PID_BITS,
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
from iommusim.hw.riscv.iotlb import IotlbEntry, IotlbKey, superpage_shifts
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.mem.faults import ACCESS
from iommusim.mem.protocol import PhysicalMemory

if TYPE_CHECKING:
    from iommusim.hw.riscv.regs import Registers

__all__ = [
    "AT_ATS",
    "AT_TRANSLATED",
    "AT_UNTRANSLATED",
    "DcRead",
    "DdteRead",
    "HpmIds",
    "Misconfigured",
    "MsiPteRead",
    "PcRead",
    "PdteRead",
    "TraceRecord",
    "TranslationEngine",
    "swap32",
    "swap64",
]

#: The IDs HPM filters match a transaction on, as :meth:`Registers.hpm_count` takes them:
#: ``(device_id, pv, process_id, gscv, gscid, pscv, pscid)``.
HpmIds = tuple[int, bool, int, bool, int, bool, int]

AT_UNTRANSLATED: Final = 0
AT_TRANSLATED: Final = 1
AT_ATS: Final = 2

# PTE bits, derived from the format (privileged spec "Sv39": PTE layout); the 32-bit Sv32 PTE
# has them at the same positions.
P_R: Final = SV39.read_mask
P_W: Final = SV39.write_mask
P_X: Final = SV39.exec_mask
_PERMS: Final = SV39.perm_mask
_U: Final = SV39.user_mask
_A: Final = SV39.accessed_mask
_D: Final = SV39.dirty_mask
_PBMT_SHIFT: Final = SV39.memtype_shift
_PBMT_WIDTH: Final = SV39.memtype_mask >> SV39.memtype_shift
# Non-leaf DDT and PDT entries (riscv-iommu: "Non-leaf DDT entry", "Non-leaf PDT entry"): the
# PPN field, and the bits that must be zero.
_DDTE_PPN_SHIFT: Final = DDTE["ppn"].lsb
_PPN_MASK: Final = DDTE.mask("ppn") >> _DDTE_PPN_SHIFT
_DDTE_RSVD: Final = DDTE.reserved_mask
_PDTE_RSVD: Final = PDTE.reserved_mask
# MSI PTE bits that must be zero (AIA: "MSI page-table entry" basic and MRIF modes; the
# second doubleword of a basic-mode PTE is reserved whole).
_MSIPTE_BASIC_RSVD: Final = MSIPTE_BASIC.reserved_mask
_MSIPTE_MRIF_RSVD_W0: Final = MSIPTE_MRIF.reserved_mask & (1 << 64) - 1
_MSIPTE_MRIF_RSVD_W1: Final = MSIPTE_MRIF.reserved_mask >> 64

# Which access a G-stage walk serves, by ``implicit`` (0: the request's own GPA, 1: an implicit
# read of a structure, 3: the implicit write of a first-stage A/D update).
Served = Literal["request", "implicit-read", "implicit-write"]
_SERVED: Final[tuple[Served, ...]] = ("request", "implicit-read", "request", "implicit-write")
# Request bits of a leaf permission check (see TranslationEngine._grant), as bit numbers so
# that a request's bools shift into place without a branch: its access at the PTE's R/W/X
# positions, then ATS NW, ATS, its privilege, PC.ta.SUM and whether the stage updates A/D.
_QB_R: Final = SV39.pte["r"].lsb
_QB_W: Final = SV39.pte["w"].lsb
_QB_X: Final = SV39.pte["x"].lsb
_QB_NW: Final = 8
_QB_ATS: Final = 9
_QB_PRIV: Final = 10
_QB_SUM: Final = 11
_QB_HWAD: Final = 12
_Q_NW: Final = 1 << _QB_NW
_Q_ATS: Final = 1 << _QB_ATS
_Q_PRIV: Final = 1 << _QB_PRIV
_Q_SUM: Final = 1 << _QB_SUM
_Q_HWAD: Final = 1 << _QB_HWAD
# A user access without ATS that the leaf grants needs none of _grant's other rules.
_Q_SLOW: Final = _Q_ATS | _Q_PRIV


class DdteRead(NamedTuple):
    """A non-leaf device-directory entry read at ``pa`` (riscv-iommu: "Non-leaf DDT entry")."""

    level: int
    pa: int
    value: int


class DcRead(NamedTuple):
    """A device context read at ``pa`` (riscv-iommu: "Device-context fields")."""

    pa: int
    words: tuple[int, ...]


class PdteRead(NamedTuple):
    """A non-leaf process-directory entry at ``addr`` (a GPA under a G-stage), read at
    ``pa`` (riscv-iommu: "Non-leaf PDT entry")."""

    level: int
    addr: int
    pa: int
    value: int


class PcRead(NamedTuple):
    """A process context at ``addr``, read at ``pa`` (riscv-iommu: "Process-context
    fields")."""

    addr: int
    pa: int
    ta: int
    fsc: int


class MsiPteRead(NamedTuple):
    """The MSI PTE for ``gpa`` (interrupt file ``idx``) read at ``pa`` (riscv-iommu: "Process
    to translate addresses of MSIs")."""

    gpa: int
    idx: int
    pa: int
    w0: int
    w1: int


class Misconfigured(NamedTuple):
    """A context failed its configuration checks: ``structure`` is ``"dc"`` or ``"pc"``."""

    structure: Literal["dc", "pc"]
    reason: str


#: Everything a traced translation records, in the order it read it.
TraceRecord = (
    DdteRead | DcRead | PdteRead | PcRead | MsiPteRead | Misconfigured | PteRead | AdUpdate
)


def _fault(cause: int, iotval2: int, level: int) -> Exception:
    return TranslationFault(cause, iotval2)


class TranslationEngine:
    """Device-directory, process-directory, first-stage, G-stage and MSI walks."""

    def __init__(self, params: RiscvIommuParams, mem: PhysicalMemory, regs: Registers) -> None:
        self.p = params
        self.mem = mem
        self.regs = regs
        self.trace: list[TraceRecord] | None = None
        #: IDs of the transaction being processed while a walk event (5-8) is selected, for
        #: the HPM filters; ``None`` when no counter selects one (set by the caller).
        self.hpm: HpmIds | None = None
        caps = params.capabilities
        self.extended = bool(caps >> cap.MSI_FLAT & 1)
        self.svpbmt = bool(caps >> cap.SVPBMT & 1)
        self.svrsw = bool(caps >> cap.SVRSW60T59B & 1)
        # Leaf PTE bits reserved for future standard use: 58:54 always, 60:59 without
        # Svrsw60t59b, PBMT (62:61) without Svpbmt (the formats' optional fields).
        exts = [n for n, on in (("svpbmt", self.svpbmt), ("svrsw60t59b", self.svrsw)) if on]
        # One walker per format and SXL / GXL, by iosatp.MODE / iohgatp.MODE.
        self._s1_walkers: tuple[dict[int, Walker], ...] = tuple(
            {m: Walker(f, mem, _fault, exts) for m, f in by_mode.items()}
            for by_mode in FIRST_STAGE_FORMATS
        )
        self._g_walkers: tuple[dict[int, Walker], ...] = tuple(
            {m: Walker(f, mem, _fault, exts) for m, f in by_mode.items()}
            for by_mode in G_STAGE_FORMATS
        )
        # Device-ID bits above what each ddtp mode indexes: set ones fault (see device_context).
        if self.extended:
            self._did_wide = {MODE_1LVL: 0xFFFFC0, MODE_2LVL: 0xFF8000, MODE_3LVL: 0}
        else:
            self._did_wide = {MODE_1LVL: 0xFFFF80, MODE_2LVL: 0xFF0000, MODE_3LVL: 0}
        c = params.caches
        self.ddtc: BoundedCache[int, DeviceContext] = bounded_cache(
            c.ddtc_entries, c.replacement, c.seed
        )
        self.pdtc: BoundedCache[tuple[int, int], ProcessContext] = bounded_cache(
            c.pdtc_entries, c.replacement, c.seed + 1
        )
        self.iotlb: BoundedCache[IotlbKey, IotlbEntry] = bounded_cache(
            c.iotlb_entries, c.replacement, c.seed + 2
        )
        #: The probes of a superpage-entry IOTLB (:mod:`iommusim.hw.riscv.iotlb`); empty
        #: when every entry is one 4 KiB page.
        self.sp_shifts = superpage_shifts(params.bare_page_size) if c.iotlb_superpages else ()

    def superpage_lookup(self, did: int, pid: int, priv: bool, vpn: int) -> IotlbEntry | None:
        """The superpage entry whose range holds page ``vpn`` (after the exact key missed),
        made the newest under LRU; its output is ``pa | (iova & (2**size_lg2 - 1))``."""
        tlb = self.iotlb
        for sh in self.sp_shifts:
            key = (did, pid, priv, vpn >> sh << sh)
            e = tlb.get(key)
            if e is not None and e.size_lg2 - 12 == sh:
                if tlb.lru:
                    tlb.move_to_end(key)
                return e
        return None

    # ------------------------------------------------------------------ memory helpers
    def _ld64(self, pa: int, be: bool, acc_cause: int, corr_cause: int) -> int:
        try:
            v = self.mem.read64(pa)
        except BusError as e:
            raise TranslationFault(acc_cause if e.kind == ACCESS else corr_cause) from None
        return swap64(v) if be else v

    # ------------------------------------------------------------------ device context
    def device_context(self, did: int) -> DeviceContext:
        """riscv-iommu: "Process to locate the Device-context" (with the width checks)."""
        ddtp = self.regs.ddtp
        mode = ddtp & 0xF
        # riscv-iommu: "Process to translate an IOVA" step 5: device_id wider than the mode
        # (a non-zero DDI[2], or DDI[1] with one level).
        if did & self._did_wide[mode]:
            raise TranslationFault(C.TTYPE_DISALLOWED)
        # A DDTC hit is the common case: BoundedCache.lookup inlined.
        ddtc = self.ddtc
        cached = ddtc.get(did)
        if cached is not None:
            if ddtc.lru:
                ddtc.move_to_end(did)
            return cached
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
        a = (ddtp >> _DDTE_PPN_SHIFT & _PPN_MASK) << 12
        i = levels - 1
        while i > 0:
            pa = a + ddi[i] * 8
            ddte = self._ld64(pa, be, C.DDT_LOAD_FAULT, C.DDT_CORRUPTION)
            if hpm is not None:
                self.regs.hpm_count(5, *hpm)
            if trace is not None:
                trace.append(DdteRead(i, pa, ddte))
            if not ddte & 1:
                raise TranslationFault(C.DDT_INVALID)
            if ddte & _DDTE_RSVD:
                raise TranslationFault(C.DDT_MISCONFIGURED)
            i -= 1
            a = (ddte >> _DDTE_PPN_SHIFT & _PPN_MASK) << 12
        pa = a + ddi[0] * dc_size
        words = tuple(
            self._ld64(pa + 8 * k, be, C.DDT_LOAD_FAULT, C.DDT_CORRUPTION)
            for k in range(dc_size // 8)
        )
        if hpm is not None:
            self.regs.hpm_count(5, *hpm)  # the DC: one entry, whatever its size
        dc = DeviceContext(did, words)
        if trace is not None:
            trace.append(DcRead(pa, words))
        if not dc.tc & TC_V:
            raise TranslationFault(C.DDT_INVALID)
        why = dc_misconfigured(self.p, self.regs.fctl, dc)
        if why is not None:
            if trace is not None:
                trace.append(Misconfigured("dc", why))
            raise TranslationFault(C.DDT_MISCONFIGURED)
        self.ddtc.insert(did, dc)
        return dc

    # ------------------------------------------------------------------ process context
    def process_context(self, dc: DeviceContext, pid: int, acc: int) -> ProcessContext:
        """riscv-iommu: "Process to locate the Process-context"."""
        key = (dc.did, pid)
        cached = self.pdtc.lookup(key)
        if cached is not None:
            return cached
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
                spa = self.g_stage(dc, a, acc, 1, False, C.PDT_LOAD_FAULT, C.PDT_CORRUPTION)[0]
            else:
                spa = a
            if i == 0:
                break
            pdte = self._ld64(spa, be, C.PDT_LOAD_FAULT, C.PDT_CORRUPTION)
            if hpm is not None:
                self.regs.hpm_count(6, *hpm)
            if trace is not None:
                trace.append(PdteRead(i, a, spa, pdte))
            if not pdte & 1:
                raise TranslationFault(C.PDT_INVALID)
            if pdte & _PDTE_RSVD:
                raise TranslationFault(C.PDT_MISCONFIGURED)
            i -= 1
            a = (pdte >> _DDTE_PPN_SHIFT & _PPN_MASK) << 12
        ta = self._ld64(spa, be, C.PDT_LOAD_FAULT, C.PDT_CORRUPTION)
        fsc = self._ld64(spa + 8, be, C.PDT_LOAD_FAULT, C.PDT_CORRUPTION)
        if hpm is not None:
            self.regs.hpm_count(6, *hpm)
        pc = ProcessContext(ta, fsc)
        if trace is not None:
            trace.append(PcRead(a, spa, ta, fsc))
        if not ta & 1:
            raise TranslationFault(C.PDT_INVALID)
        why = pc_misconfigured(self.p, dc.sxl, pc)
        if why is not None:
            if trace is not None:
                trace.append(Misconfigured("pc", why))
            raise TranslationFault(C.PDT_MISCONFIGURED)
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
        corr_cause: int = C.PT_CORRUPTION,
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
        w = self._g_walkers[fctl >> 2 & 1].get(dc.g_mode)
        if w is None:
            # A DC checked under another fctl.GXL (written while the IOMMU was not Off,
            # UNSPECIFIED by riscv-iommu: "Features-control register (fctl)") names a mode the
            # current GXL does not have: the DC is misconfigured now ("Device-context
            # configuration checks").
            raise TranslationFault(C.DDT_MISCONFIGURED)
        gpf = C.GUEST_PAGE_FAULT[acc]
        iotval2 = (gpa & ~3) | implicit
        if gpa >> w.va_bits:
            raise TranslationFault(gpf, iotval2)
        if af_cause < 0:
            af_cause = C.ACCESS_FAULT[acc]
        be = bool(fctl & 1)
        trace = self.trace
        # HPM event 8, "Second-stage Page Table Walks": one per G-stage PTE loaded, for the
        # request's own GPA and for the implicit accesses (PDT entries, first-stage PTEs,
        # their A/D updates) alike -- each is a table-entry load, so a walk.
        count = None if self.hpm is None else self._counter(8)
        out, size_lg2, pte, pa, _, _ = w.walk(
            dc.g_ppn << 12,
            gpa,
            be,
            None,
            gpf,
            iotval2,
            af_cause,
            corr_cause,
            trace,
            "g",
            _SERVED[implicit],
            count,
        )
        if implicit:
            # Implicit accesses by the IOMMU: reads need R, the A/D write needs W; U = 1.
            if not pte & _U or not pte & P_R or (implicit == 3 and not pte & P_W):
                raise TranslationFault(gpf, iotval2)
            perms = (pte & _PERMS) | (_D if implicit == 3 else 0)
        else:
            # G-stage translation treats every access as a user access (priv = 0).
            q = reads << _QB_R | writes << _QB_W | executes << _QB_X | nw << _QB_NW
            q |= ats << _QB_ATS | dc.gade << _QB_HWAD
            if pte & _U and not q & _Q_SLOW and not q & ~pte & _PERMS:
                perms = (pte & _PERMS) | (_D if writes else 0)  # _grant's common case
            else:
                perms = self._grant(pte, q, gpf, iotval2)
        if not pte & _A or (perms & _D and not pte & _D):
            if not dc.gade:
                raise TranslationFault(gpf, iotval2)
            new = pte | _A | (perms & _D)
            w.update_ad(pa, pte, new, be, C.ACCESS_FAULT[acc], C.PT_CORRUPTION, trace, "g")
            pte = new
        if not ats and not pte & _D:
            perms &= ~P_W  # W counts as granted (for the IOTLB) only on a dirty page
        return out, size_lg2, perms & _PERMS, pte >> _PBMT_SHIFT & _PBMT_WIDTH

    def _counter(self, event: int) -> Callable[[], None] | None:
        """A per-PTE-load counter of HPM walk ``event`` for this transaction (:attr:`hpm` is
        set), or None when no counter selects it."""
        hpm = self.hpm
        if hpm is None or event not in self.regs.hpm_events:
            return None
        count = self.regs.hpm_count
        return lambda: count(event, *hpm)

    # ------------------------------------------------------------------ leaf permissions
    @staticmethod
    def _grant(pte: int, q: int, pf: int, iotval2: int) -> int:
        """The permission rules of a leaf PTE for request ``q`` (P_R/P_W/P_X for a read,
        write or execute, and the _Q_* bits; the G-stage checks its implicit accesses itself):
        raises the page fault ``pf`` on a denial,
        else returns the granted R/W/X bits, with D (bit 7) set when the access must dirty
        the page (riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates")."""
        u = pte & _U
        priv = q & _Q_PRIV
        executes = q & P_X
        if q & _Q_ATS:
            # riscv-iommu: "PCIe ATS translation request handling" and PC.ta.SUM/ENS rules:
            # supervisor execute intent to a U page is denied regardless of SUM.
            if (u and priv and (not q & _Q_SUM or executes)) or (not u and not priv):
                # A privilege denial is a page fault: no permission and no Global.
                raise TranslationFault(pf, iotval2)
            perms = pte & (P_R | P_W)
            if executes and pte & P_X and perms & P_R:
                perms |= P_X
            if not perms & P_R:
                perms = 0  # no read: nothing can be granted (X needs R for PCIe)
            nw = q & _Q_NW
            want_d = not nw and pte & P_W
            if pte & P_W and not pte & _D and (nw or not q & _Q_HWAD):
                perms &= ~P_W  # an ATS completion grants W only on a dirty page
            return perms | (_D if want_d else 0)
        if priv:
            if u and (executes or not q & _Q_SUM):
                raise TranslationFault(pf, iotval2)
        elif not u:
            raise TranslationFault(pf, iotval2)
        if q & ~pte & _PERMS:
            raise TranslationFault(pf, iotval2)
        return (pte & _PERMS) | (_D if q & P_W else 0)

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
        w = self._s1_walkers[1 if dc.sxl else 0].get(mode)
        if w is None:
            # A PC from the process-directory cache, checked against a DC with another SXL
            # (the DC changed in memory and was re-read without IODIR.INVAL_PDT): its mode is
            # not one this DC's SXL has -- the PC is misconfigured for it (riscv-iommu:
            # "Process-context configuration checks"). A DC's own iosatp mode is checked
            # with its SXL, so only a PC's can miss.
            raise TranslationFault(C.PDT_MISCONFIGURED)
        pf = C.PAGE_FAULT[acc]
        top = iova >> w.in_shift
        if top and top != w.in_top:
            raise TranslationFault(pf)
        be = dc.sbe
        trace = self.trace
        xlate: Callable[[int], int] | None = None
        if dc.g_mode:
            # Every first-stage PTE address is a GPA: an implicit read through the G-stage.
            g_stage = self.g_stage

            def xlate(gpa: int) -> int:
                return g_stage(dc, gpa, acc, 1, False)[0]

        # HPM event 7, "First-stage Page Table Walks": one per first-stage PTE loaded.
        count = None if self.hpm is None else self._counter(7)
        af = C.ACCESS_FAULT[acc]
        out, size_lg2, pte, pa, addr, g = w.walk(
            root_ppn << 12,
            iova,
            be,
            xlate,
            pf,
            0,
            af,
            C.PT_CORRUPTION,
            trace,
            "s1",
            "request",
            count,
        )
        q = reads << _QB_R | writes << _QB_W | executes << _QB_X | nw << _QB_NW
        q |= ats << _QB_ATS | dc.sade << _QB_HWAD | priv << _QB_PRIV | sum_ << _QB_SUM
        if pte & _U and not q & _Q_SLOW and not q & ~pte & _PERMS:
            perms = (pte & _PERMS) | (_D if writes else 0)  # _grant's common case
        else:
            perms = self._grant(pte, q, pf, 0)
        if not pte & _A or (perms & _D and not pte & _D):
            if not dc.sade:
                raise TranslationFault(pf)
            new = pte | _A | (perms & _D)
            if dc.g_mode:
                # The A/D write to a PTE in guest memory needs W in the G-stage: an implicit
                # write.
                pa = self.g_stage(dc, addr, acc, 3, False)[0]
            w.update_ad(pa, pte, new, be, af, C.PT_CORRUPTION, trace, "s1")
            pte = new
        if not ats and not pte & _D:
            perms &= ~P_W  # W counts as granted (for the IOTLB) only on a dirty page
        return out, size_lg2, perms & _PERMS, pte >> _PBMT_SHIFT & _PBMT_WIDTH, g

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
        w0 = self._ld64(pa, be, C.MSI_PTE_LOAD_FAULT, C.MSI_PT_CORRUPTION)
        w1 = self._ld64(pa + 8, be, C.MSI_PTE_LOAD_FAULT, C.MSI_PT_CORRUPTION)
        if self.trace is not None:
            self.trace.append(MsiPteRead(gpa, idx, pa, w0, w1))
        if not w0 & 1:
            raise TranslationFault(C.MSI_PTE_INVALID)
        m = w0 >> 1 & 3
        if m == 3:
            if w0 & _MSIPTE_BASIC_RSVD or w1:
                raise TranslationFault(C.MSI_PTE_MISCONFIGURED)
        elif m == 1:
            if not self.p.has(cap.MSI_MRIF):
                raise TranslationFault(C.MSI_PTE_MISCONFIGURED)
            if w0 & _MSIPTE_MRIF_RSVD_W0 or w1 & _MSIPTE_MRIF_RSVD_W1:
                raise TranslationFault(C.MSI_PTE_MISCONFIGURED)
        else:
            raise TranslationFault(C.MSI_PTE_MISCONFIGURED)
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
            raise TranslationFault(C.TTYPE_DISALLOWED)
        pdtv = tc & TC_PDTV
        if pv:
            if not pdtv:
                raise TranslationFault(C.TTYPE_DISALLOWED)
            if dc.fsc_mode and pid >> PD_PID_BITS[dc.fsc_mode]:
                raise TranslationFault(C.TTYPE_DISALLOWED)
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
            raise TranslationFault(C.TTYPE_DISALLOWED)
        return pc, pc.mode, pc.ppn, pc.pscid

    @staticmethod
    def t2gpa(dc: DeviceContext) -> bool:
        return bool(dc.tc & TC_T2GPA)
