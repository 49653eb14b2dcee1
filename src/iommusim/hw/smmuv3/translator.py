"""The SMMUv3 translation procedure: from a client transaction to its output address or its
event (IHI 0070 3.3 "Data structures and translation procedure", 3.4 "Address
translation", 3.9 "Address Translation Services", 3.12 "Fault models, recording and
reporting").

:class:`Smmuv3Translator` is the part of the SMMU behind the register file: it holds the
stream table configuration software wrote (SMMU_STRTAB_BASE / _CFG), the configuration cache
(STEs and CDs, decoded once by :mod:`iommusim.hw.smmuv3.config`), the TLB
(:mod:`iommusim.hw.smmuv3.tlb`) and the stalled transactions, and answers
:meth:`~Smmuv3Translator.translate` with a :class:`~iommusim.hw.smmuv3.transaction.Response`
whose event the front end writes to the event queue. It implements
:class:`~iommusim.hw.smmuv3.maintenance.CacheMaintenance` for the command queue and BTM.

The procedure (IHI 0070 3.3.1 and 3.4), in the order the checks are made:

1. SMMU_CR0.SMMUEN = 0: SMMU_GBPA decides (abort, or bypass) -- no event (IHI 0070 3.3.1).
2. StreamID range and the stream table (linear, or 2-level through the L1STD): out of range
   or an invalid L1STD is C_BAD_STREAMID (recorded only when SMMU_CR2.RECINVSID); an abort on
   the fetch is F_STE_FETCH. STE.V = 0 or an ILLEGAL STE is C_BAD_STE.
3. STE.Config: abort (no event), bypass, stage 1 / stage 2 / nested. ATS: a Translation
   Request with STE.EATS = 0 is F_BAD_ATS_TREQ; a translated transaction with EATS = 0 is
   F_TRANSL_FORBIDDEN.
4. SubstreamIDs: SSV = 1 without stage 1 or outside S1CDMAX is C_BAD_SUBSTREAMID; SSV = 0
   with substreams follows STE.S1DSS (terminate: F_STREAM_DISABLED, bypass, or CD 0).
5. The CD (linear or 2-level CD table; under nesting each CD-table address is an IPA
   translated by stage 2 -- a stage 2 fault there is CLASS CD): an abort is F_CD_FETCH, V = 0 or
   an ILLEGAL CD is C_BAD_CD.
6. The TLB, then the walks: stage 1 (TTB0 or TTB1 by address bit 55, TBI, EPDx; under
   nesting every descriptor address through stage 2: CLASS TT) and stage 2 of the output
   (CLASS IN). Walk faults map to F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION and
   F_WALK_EABT.
7. A translation fault (those four) stalls when the faulting stage says so (CD.S, STE.S2S)
   and is otherwise terminated -- abort, or RAZ/WI when CD.A = 0 for a stage 1 fault (IHI
   0070 3.12.1); its record is suppressed by CD.R = 0 / STE.S2R = 0 unless it stalled.
   ATS Translation Requests never stall and record no translation fault: the completion
   grants no permissions (IHI 0070 3.9.1).

With ``Smmuv3CacheParams.ste_cont_entries`` the STE cache honours STE.CONT (IHI 0070 5.2): an
STE fetched with CONT = n serves all 2**n StreamIDs of its span, and a lookup matching two
entries that differ in more than CONT is F_CFG_CONFLICT (IHI 0070 7.3.18).
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm.smmuv3_queues import (
    C_BAD_CD,
    C_BAD_STE,
    C_BAD_STREAMID,
    C_BAD_SUBSTREAMID,
    CLASS_CD,
    CLASS_IN,
    CLASS_TT,
    F_ACCESS,
    F_ADDR_SIZE,
    F_BAD_ATS_TREQ,
    F_CD_FETCH,
    F_CFG_CONFLICT,
    F_PERMISSION,
    F_STE_FETCH,
    F_STREAM_DISABLED,
    F_TLB_CONFLICT,
    F_TRANSL_FORBIDDEN,
    F_TRANSLATION,
    F_UUT,
    F_WALK_EABT,
)
from iommusim.bits.arm.smmuv3_structures import (
    CDTAB_L1,
    EATS_ABORT,
    EATS_SPLIT,
    S1DSS_BYPASS,
    S1DSS_SSID0,
    S1DSS_TERMINATE,
    STE,
    STE_CONFIG_ABORT,
    STE_CONFIG_BYPASS,
    STE_CONT_IDENTICAL,
    STE_V,
    STRTAB_L1,
)
from iommusim.bits.arm.vmsa import S1_DESC
from iommusim.bits.pgformat import PERM_R, PERM_W, PERM_X, PtFormat
from iommusim.errors import BusError
from iommusim.hw.common.cache import BoundedCache, bounded_cache
from iommusim.hw.pgtable.vmsa import VmsaFault, VmsaLeaf, VmsaWalker
from iommusim.hw.smmuv3.config import Cd, Ste, cd_l2_bits, decode_cd, decode_ste
from iommusim.hw.smmuv3.maintenance import Tlbi, TranslationCounts
from iommusim.hw.smmuv3.params import Smmuv3Params
from iommusim.hw.smmuv3.tlb import GLOBAL, S2_ONLY, TlbEntry, TlbKey, match_tlbi
from iommusim.hw.smmuv3.transaction import (
    AT_ATS_REQUEST,
    AT_TRANSLATED,
    Event,
    Outcome,
    Request,
    Response,
)
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["Smmuv3Translator", "StructureRead"]

#: The walk fault kinds as IHI 0070 7.3 event numbers.
_FAULT_EVENT: Final = {
    "translation": F_TRANSLATION,
    "address_size": F_ADDR_SIZE,
    "access_flag": F_ACCESS,
    "permission": F_PERMISSION,
    "walk_eabt": F_WALK_EABT,
}
#: The faults a stall model may hold (IHI 0070 3.12.2): translation-related, not external
#: aborts and not configuration errors.
_STALLABLE: Final = frozenset((F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION))
_STE_BYTES: Final = 64
_new: Final = tuple.__new__
#: What a stage 2 walk serves, by event CLASS (the explain records' ``served`` tag).
_SERVED: Final = {CLASS_CD: "cd", CLASS_TT: "s1 table", CLASS_IN: "request"}
#: Address bits 55:0: what remains of an address once TBI drops its tag (DDI 0487 D8).
_UNTAGGED: Final = (1 << 56) - 1
#: The nG bit of a stage 1 leaf (DDI 0487 D8; the stage 1 descriptor layouts).
_NG: Final = S1_DESC[4].mask("ng")
#: SMMU_STRTAB_BASE_CFG.FMT (IHI 0070 6.3).
STRTAB_LINEAR: Final = 0b00
STRTAB_2LEVEL: Final = 0b01


class StructureRead(tuple[str, int, int]):
    """An explain record: a configuration structure read -- ``(what, pa, value)`` with
    ``what`` one of ``"l1std"``, ``"ste"``, ``"l1cd"``, ``"cd"`` and ``value`` the
    descriptor (the 512-bit image for an STE or CD)."""

    __slots__ = ()


class _Stop(Exception):
    """Internal: a transaction that ends in an event. ``stage`` is 1 or 2 for a walk fault
    (the stage whose controls decide stall, record and abort), 0 for everything else."""

    def __init__(
        self,
        etype: int,
        stage: int = 0,
        class_: int = 0,
        ipa: int = 0,
        fetch: int = 0,
        record: bool = True,
        outcome: Outcome = "abort",
    ) -> None:
        super().__init__(etype)
        self.etype = etype
        self.stage = stage
        self.class_ = class_
        self.ipa = ipa
        self.fetch = fetch
        self.record = record
        self.outcome = outcome


class _Quiet(Exception):
    """Internal: a transaction terminated without an event (STE.Config = abort)."""


class Smmuv3Translator:
    """The translation side of one SMMUv3 (see the module docstring). ``mem`` is where
    structures and tables are read (the SMMU's upstream view of memory)."""

    def __init__(self, mem: PhysicalMemory, params: Smmuv3Params) -> None:
        self.mem = mem
        self.p = params
        c = params.caches
        pol, seed = c.replacement, c.seed
        self.ste_cache: BoundedCache[int, Ste] = bounded_cache(c.ste_entries, pol, seed)
        #: STEs cached for their whole STE.CONT span, keyed ``(first StreamID, CONT)``
        #: (IHI 0070 5.2 CONT): each matches every StreamID of its span.
        self.ste_spans: BoundedCache[tuple[int, int], Ste] = bounded_cache(
            c.ste_cont_entries, pol, seed + 4
        )
        self.cd_cache: BoundedCache[tuple[int, int], Cd] = bounded_cache(
            c.cd_entries, pol, seed + 1
        )
        self.tlb: BoundedCache[TlbKey, TlbEntry] = bounded_cache(c.tlb_entries, pol, seed + 2)
        #: The walk cache: stage 2 translations of the addresses a walk reads under
        #: nesting -- stage 1 descriptors and CD tables (IHI 0070 16.2: an implementation
        #: may cache them apart from the TLB); the same keys and invalidation as the TLB's
        #: stage 2 entries.
        self.walk_cache: BoundedCache[TlbKey, TlbEntry] = bounded_cache(
            c.walk_entries, pol, seed + 3
        )
        self.counts = TranslationCounts()
        #: SMMU_CR0.SMMUEN, SMMU_GBPA.ABORT, SMMU_CR2.RECINVSID / PTM / E2H (the front end
        #: keeps them current).
        self.enabled = False
        self.gbpa_abort = False
        self.record_bad_sid = True
        self.ptm = False
        self.e2h = False
        #: The fast path's last context: ``(sid, ssv, ssid, ste, cd, vmid, tlb tag)``, or
        #: None. Every change to the configuration caches (a fetch, an invalidation) forgets
        #: it; code changing them from outside must call :meth:`forget_context`.
        self._ctx: tuple[int, bool, int, Ste, Cd | None, int, int] | None = None
        self._base = 0
        self._log2size = 0
        self._fmt = STRTAB_LINEAR
        self._split = 0
        self._walkers: dict[tuple[PtFormat, int, bool, bool, bool], VmsaWalker] = {}
        self._stalled: dict[tuple[int, int], Request] = {}
        self._next_stag = 0
        self._stall_max = max(params.idr5_field("stall_max"), 1)
        self._has_ats = bool(params.idr0_field("ats"))

    # -- configuration ----------------------------------------------------------------------

    def set_stream_table(self, base: int, log2size: int, fmt: int, split: int) -> None:
        """SMMU_STRTAB_BASE.ADDR (a byte address) and SMMU_STRTAB_BASE_CFG's LOG2SIZE, FMT and
        SPLIT (IHI 0070 6.3), as latched by the front end. LOG2SIZE above IDR1.SIDSIZE is
        capped to it (IHI 0070 6.3: "a value greater than SIDSIZE is treated as SIDSIZE")."""
        self._ctx = None
        self._base = base & ((1 << 52) - 1) & ~0x3F
        self._log2size = min(log2size, self.p.sid_bits)
        self._fmt = fmt
        self._split = split

    def _walker(self, fmt: PtFormat, oa: int, ha: bool, hd: bool, affd: bool) -> VmsaWalker:
        key = (fmt, oa, ha, hd, affd)
        w = self._walkers.get(key)
        if w is None:
            w = self._walkers[key] = VmsaWalker(fmt, self.mem, oa, ha, hd, affd)
        return w

    # -- structure fetches ----------------------------------------------------------------

    def _read(self, pa: int, nbytes: int, fault: int) -> int:
        """A little-endian structure read; an abort is the ``fault`` event (IHI 0070 7.3
        F_STE_FETCH / F_CD_FETCH, FetchAddr = ``pa``)."""
        try:
            v = 0
            for i in range(nbytes // 8):
                v |= self.mem.read64(pa + 8 * i) << (64 * i)
            return v
        except BusError:
            raise _Stop(fault, fetch=pa) from None

    def _ste(self, sid: int, trace: list[object] | None) -> Ste:
        """Steps 2 of the procedure: the STE of ``sid``, from the cache or the stream table
        (IHI 0070 3.3.2 "StreamIDs to Context Descriptors", 5.1)."""
        if trace is None:
            if self.ste_spans:
                return self._ste_matches(sid)
            if self.ste_cache.capacity:
                hit = self.ste_cache.lookup(sid)
                if hit is not None:
                    return hit
        return self._fetch_ste(sid, trace)

    def _ste_matches(self, sid: int) -> Ste:
        """The STE lookup when entries for CONT spans are cached: every entry matching
        ``sid`` -- its own and those of the spans covering it. Entries that differ in more
        than CONT are a multiple match: F_CFG_CONFLICT, the transaction aborted (IHI 0070
        5.2 CONT, 7.3.18; of the CONSTRAINED UNPREDICTABLE choices, the model reports). A
        single span entry serves a neighbour of the StreamID it was fetched for."""
        hits = [h for h in (self.ste_cache.lookup(sid),) if h is not None]
        for base, cont in [k for k in self.ste_spans if k[0] == sid >> k[1] << k[1]]:
            h = self.ste_spans.lookup((base, cont))
            if h is not None:
                hits.append(h)
        if not hits:
            return self._fetch_ste(sid, None)
        first = hits[0]
        if any((h.raw ^ first.raw) & STE_CONT_IDENTICAL for h in hits[1:]):
            raise _Stop(F_CFG_CONFLICT)
        return first

    def _fetch_ste(self, sid: int, trace: list[object] | None) -> Ste:
        """The STE of ``sid`` read from the stream table and cached."""
        split = self._split
        if sid >> self._log2size:
            raise _Stop(C_BAD_STREAMID, record=self.record_bad_sid)
        if self._fmt == STRTAB_2LEVEL:
            l1pa = self._base + (sid >> split) * 8
            l1 = self._read(l1pa, 8, F_STE_FETCH)
            if trace is not None:
                trace.append(StructureRead(("l1std", l1pa, l1)))
            span = STRTAB_L1["span"].get(l1)
            # IHI 0070 5.1: Span 0 is an invalid L2Ptr; a Span above SPLIT + 1 is treated as
            # invalid too (the level-2 table cannot hold it).
            if not span or span > split + 1 or (sid & ((1 << split) - 1)) >> (span - 1):
                raise _Stop(C_BAD_STREAMID, record=self.record_bad_sid)
            l2 = STRTAB_L1["l2ptr"].get(l1) << 6
            if l2 >> self.p.oas_bits:
                raise _Stop(C_BAD_STREAMID, record=self.record_bad_sid)
            pa = l2 + (sid & ((1 << split) - 1)) * _STE_BYTES
        else:
            pa = self._base + sid * _STE_BYTES
        self.counts.config_misses += 1
        self.counts.config_accesses += 1
        raw = self._read(pa, _STE_BYTES, F_STE_FETCH)
        if trace is not None:
            trace.append(StructureRead(("ste", pa, raw)))
        if not raw & STE_V:
            raise _Stop(C_BAD_STE)
        ste = decode_ste(raw, self.p, self.e2h, self._walker)
        if isinstance(ste, str):
            raise _Stop(C_BAD_STE)
        cont = STE["cont"].get(raw) if self.ste_spans.capacity else 0
        # IHI 0070 5.2 CONT: a span is capped by the stream table, and -- 2-level -- by the
        # level 2 table holding the STE (StreamIDs past its L1STD.Span keep failing their
        # own lookup with C_BAD_STREAMID, the first of the two permitted behaviours).
        cont = min(cont, self._log2size)
        if self._fmt == STRTAB_2LEVEL:
            cont = min(cont, span - 1)
        if cont:
            self.ste_spans.insert((sid >> cont << cont, cont), ste)
        else:
            self.ste_cache.insert(sid, ste)
        return ste

    def _cd(self, sid: int, ssid: int, ste: Ste, addr: int, trace: list[object] | None) -> Cd:
        """Step 5: the CD of ``ssid`` (IHI 0070 3.3.2, 5.3, 5.4); under nesting its
        addresses are IPAs (stage 2 faults: CLASS CD)."""
        key = (sid, ssid)
        if self.cd_cache.capacity and trace is None:
            hit = self.cd_cache.lookup(key)
            if hit is not None:
                return hit
        l2 = cd_l2_bits(ste.s1fmt) if ste.s1cdmax else 0
        if l2:
            ipa = ste.s1ctxptr + (ssid >> l2) * 8
            l1pa = self._s2_addr(ste, ipa, CLASS_CD, trace)
            l1 = self._read(l1pa, 8, F_CD_FETCH)
            if trace is not None:
                trace.append(StructureRead(("l1cd", l1pa, l1)))
            if not CDTAB_L1["v"].get(l1):
                raise _Stop(C_BAD_SUBSTREAMID)
            ipa = (CDTAB_L1["l2ptr"].get(l1) << 12) + (ssid & ((1 << l2) - 1)) * 64
        else:
            ipa = ste.s1ctxptr + ssid * 64
        pa = self._s2_addr(ste, ipa, CLASS_CD, trace)
        self.counts.config_misses += 1
        self.counts.config_accesses += 1
        raw = self._read(pa, 64, F_CD_FETCH)
        if trace is not None:
            trace.append(StructureRead(("cd", pa, raw)))
        cd = decode_cd(raw, self.p, ste, self._walker)
        if isinstance(cd, str):
            raise _Stop(C_BAD_CD)
        self.cd_cache.insert(key, cd)
        return cd

    # -- walks ----------------------------------------------------------------------------

    def _s2_addr(self, ste: Ste, ipa: int, class_: int, trace: list[object] | None) -> int:
        """A structure or table address through stage 2 (identity without it): a read."""
        if ste.s2 is None:
            return ipa
        return self._s2(ste, ipa, PERM_R, class_, trace).pa

    def _s2(
        self, ste: Ste, ipa: int, access: int, class_: int, trace: list[object] | None
    ) -> TlbEntry:
        """The stage 2 translation of ``ipa`` for ``access`` (from the TLB -- the walk cache
        for a structure or descriptor address -- or walked and cached as a stage 2 entry);
        a fault raises the stage 2 event of ``class_``."""
        w = ste.s2
        assert w is not None
        key = (ste.vmid, S2_ONLY, False, ipa >> 12)
        cache = self.tlb if class_ == CLASS_IN else self.walk_cache
        e = cache.lookup(key) if trace is None else None
        if e is not None and not access & ~e.perms:
            return TlbEntry(e.pa | (ipa & 0xFFF), e.perms, e.size_lg2, e.ipa_pn)
        served = _SERVED[class_] if trace is not None else "request"
        r = w.walk(ste.s2ttb, ipa, access, False, ste.s2endi, trace, "s2", served)
        self._count_walk(w, r)
        if isinstance(r, VmsaFault):
            raise self._walk_fault(r, 2, class_, ipa)
        size = r.size_lg2
        page = r.out & ~0xFFF
        cache.insert(key, TlbEntry(page, r.perms, size, ipa >> 12))
        return TlbEntry(r.out, r.perms, size, ipa >> 12)

    def _count_walk(self, w: VmsaWalker, r: VmsaLeaf | VmsaFault) -> None:
        """PMCG event 0x4: a walk that ends at DDI 0487 level L read L - start + 1
        descriptors (none when it stopped before the start table)."""
        self.counts.walk_accesses += max(r.level - w.start_level + 1, 0)

    @staticmethod
    def _walk_fault(r: VmsaFault, stage: int, class_: int, ipa: int) -> _Stop:
        etype = _FAULT_EVENT[r.kind]
        if stage == 1:
            return _Stop(etype, 1, fetch=r.fetch)
        return _Stop(etype, 2, class_, ipa, r.fetch)

    def _s1(
        self,
        ste: Ste,
        cd: Cd,
        va: int,
        access: int,
        priv: bool,
        trace: list[object] | None,
    ) -> VmsaLeaf:
        """Stage 1 of ``va`` (IHI 0070 3.4.1; DDI 0487 D8 "Translation table base and
        input address range"): TTB0 for bit 55 = 0 (or the single range of EL2), TTB1 for
        bit 55 = 1; the bits above the range must all equal bit 55 (bits 63:56 are ignored
        under TBI)."""
        rng = cd.range1 if cd.two_ranges and va >> 55 & 1 else cd.range0
        if rng is None:
            raise _Stop(F_TRANSLATION, 1)  # EPDx = 1: no walk for this range
        w, ttb, kept, bits, want = rng
        if (va & kept) >> bits != want:
            raise _Stop(F_TRANSLATION, 1)
        ia = va & ((1 << bits) - 1)
        xlate = None
        if ste.s2 is not None:

            def xlate(ipa: int) -> int:
                return self._s2(ste, ipa, PERM_R, CLASS_TT, trace).pa

        r = w.walk(ttb, ia, access, priv, cd.endi, trace, "s1", "request", xlate)
        if isinstance(r, VmsaLeaf):
            self.counts.walk_accesses += r.level - w.start_level + 1
            return r
        self._count_walk(w, r)
        raise self._walk_fault(r, 1, 0, 0)

    # -- the procedure --------------------------------------------------------------------

    def translate(self, req: Request, trace: list[object] | None = None) -> Response:
        """Translate one transaction (IHI 0070 3.3-3.4; the steps of the module docstring).
        ``trace`` (a list): every structure read (:class:`StructureRead`) and descriptor
        read (``PteRead`` / ``AdUpdate``) is appended -- and the caches are bypassed, so
        the explanation shows the memory the SMMU would read.

        Hot path: an untranslated transaction whose STE, CD and translation are all cached
        is answered here, with the caches' own lookups inlined; everything else -- and
        every result the caches cannot give exactly (a global entry, a tagged address, a
        missing permission) -- takes the full procedure."""
        if req.at or trace is not None or not self.enabled:
            if req.at == AT_ATS_REQUEST:
                self.counts.ats_requests += 1
            else:
                self.counts.transactions += 1
            return self._translate(req, trace)
        self.counts.transactions += 1
        sid = req.sid
        ssv = req.ssv
        addr = req.addr
        ctx = self._ctx
        if ctx is not None and ctx[0] == sid and ctx[1] == ssv and ctx[2] == req.ssid:
            # The context of the previous transaction, which this path looked up last:
            # its STE and CD are the newest entries already (nothing else touched the
            # configuration caches since -- everything that does forgets the context).
            ste, cd, vmid, tag = ctx[3], ctx[4], ctx[5], ctx[6]
        else:
            stes = self.ste_cache
            hit = stes.get(sid)
            if hit is None or self.ste_spans:
                return self._translate(req, trace)
            ste = hit
            if stes.lru:
                stes.move_to_end(sid)
            if ste.s1:
                if ssv:
                    ssid = req.ssid
                    if not ste.s1cdmax or ssid >> ste.s1cdmax:
                        return self._translate(req, trace)
                elif ste.s1cdmax and ste.s1dss != S1DSS_SSID0:
                    return self._translate(req, trace)
                else:
                    ssid = 0
                cds = self.cd_cache
                ck = (sid, ssid)
                cd = cds.get(ck)
                if cd is None or cd.tbi0 or cd.tbi1:
                    return self._translate(req, trace)
                if cds.lru:
                    cds.move_to_end(ck)
                tag = cd.tag
            elif ste.s2 is not None and not ssv:
                cd = None
                tag = S2_ONLY
            else:
                return self._translate(req, trace)
            vmid = ste.vmid
            self._ctx = (sid, ssv, req.ssid, ste, cd, vmid, tag)
        key = (vmid, tag, req.priv and cd is not None, addr >> 12)
        tlb = self.tlb
        e = tlb.get(key)
        access = PERM_X if req.instr else PERM_W if req.is_write else PERM_R
        if e is None:
            if tlb and cd is not None and tag >= 0 and (vmid, GLOBAL, req.priv, addr >> 12) in tlb:
                return self._translate(req, trace)
            try:
                return self._fill(req, ste, cd, access, None, addr >> 12, False)
            except _Stop as s:
                return self._fault(req, ste, cd, s)
        if access & ~e.perms:
            return self._translate(req, trace)
        if tlb.lru:
            tlb.move_to_end(key)
        # tuple.__new__: a NamedTuple's own constructor costs a quarter of a hit.
        return _new(
            Response,
            ("ok", e.pa | (addr & 0xFFF), e.size_lg2, e.r, e.w, e.x, req.priv, None, True, -1),
        )

    def _translate(self, req: Request, trace: list[object] | None) -> Response:
        """The full procedure (steps 1-7)."""
        self._ctx = None
        if not self.enabled:
            if req.at == AT_ATS_REQUEST:
                return Response("ur")
            if self.gbpa_abort:
                return Response("abort")
            return Response("bypass", pa=req.addr, r=True, w=True, x=True, priv=True)
        ste: Ste | None = None
        cd: Cd | None = None
        try:
            if req.at and not self._has_ats:
                # An SMMU without ATS (IDR0.ATS = 0) does not support ATS traffic: an
                # Unsupported Upstream Transaction (IHI 0070 7.3 F_UUT; which transaction
                # types are unsupported is the implementation's, this is the model's).
                raise _Stop(F_UUT, outcome="ur" if req.at == AT_ATS_REQUEST else "abort")
            ste = self._ste(req.sid, trace)
            if ste.config == STE_CONFIG_ABORT:
                raise _Quiet
            if req.at == AT_ATS_REQUEST and ste.eats == EATS_ABORT:
                raise _Stop(F_BAD_ATS_TREQ, outcome="ur")
            if req.at == AT_TRANSLATED:
                return self._translated(req, ste, trace)
            if ste.config == STE_CONFIG_BYPASS:
                if req.ssv:
                    raise _Stop(C_BAD_SUBSTREAMID)
                return Response("bypass", pa=req.addr, r=True, w=True, x=True, priv=True)
            cd = self._select_cd(req, ste, trace)
            if cd is None and ste.s2 is None:  # S1DSS = bypass on a stage 1 only stream
                return Response("bypass", pa=req.addr, r=True, w=True, x=True, priv=True)
            return self._walk(req, ste, cd, trace)
        except _Quiet:
            return Response("ur" if req.at == AT_ATS_REQUEST else "abort", recorded=False)
        except _Stop as s:
            return self._fault(req, ste, cd, s)

    def _select_cd(self, req: Request, ste: Ste, trace: list[object] | None) -> Cd | None:
        """Step 4-5: the CD a transaction uses, or None when stage 1 is bypassed."""
        if not ste.s1:
            if req.ssv:
                raise _Stop(C_BAD_SUBSTREAMID)
            return None
        if req.ssv:
            if not ste.s1cdmax or req.ssid >> ste.s1cdmax:
                raise _Stop(C_BAD_SUBSTREAMID)
            return self._cd(req.sid, req.ssid, ste, req.addr, trace)
        if ste.s1cdmax:
            if ste.s1dss == S1DSS_TERMINATE:
                raise _Stop(F_STREAM_DISABLED)
            if ste.s1dss == S1DSS_BYPASS:
                return None
        return self._cd(req.sid, 0, ste, req.addr, trace)

    def _walk(self, req: Request, ste: Ste, cd: Cd | None, trace: list[object] | None) -> Response:
        """Step 6: the TLB, then stage 1 and stage 2. An ATS Translation Request asks for
        read, and write unless PCIe NW: a page that is not writable answers with R only
        (IHI 0070 3.9.1), so its permission fault on the write is retried as a read."""
        ats = req.at == AT_ATS_REQUEST
        if ats:
            access = PERM_R if req.no_write else PERM_R | PERM_W
        else:
            access = PERM_X if req.instr else PERM_W if req.is_write else PERM_R
        try:
            return self._lookup(req, ste, cd, access, trace)
        except _Stop as s:
            if ats and s.etype == F_PERMISSION and access & PERM_W:
                return self._lookup(req, ste, cd, PERM_R, trace)
            raise

    def _lookup(
        self, req: Request, ste: Ste, cd: Cd | None, access: int, trace: list[object] | None
    ) -> Response:
        va = req.addr
        priv = req.priv
        # Split-stage ATS answers with the stage 1 output (an IPA): IHI 0070 3.9.2; such a
        # result is not a TLB entry of the stream's regime.
        split = req.at == AT_ATS_REQUEST and ste.eats == EATS_SPLIT
        tlb = self.tlb
        pn = va >> 12
        if cd is None:
            key = (ste.vmid, S2_ONLY, False, pn)
        else:
            if cd.tbi1 if cd.two_ranges and va >> 55 & 1 else cd.tbi0:
                pn = (va & _UNTAGGED) >> 12  # the tag is not part of the address
            key = (ste.vmid, cd.tag, priv, pn)
        if trace is None and not split:
            e = tlb.lookup(key)
            if e is None and cd is not None and cd.asid >= 0:
                e = tlb.lookup((ste.vmid, GLOBAL, priv, pn))
            if e is not None and not access & ~e.perms:
                return self._ok(e.pa | (va & 0xFFF), e.size_lg2, e.perms, priv)
        return self._fill(req, ste, cd, access, trace, pn, split)

    def _fill(
        self,
        req: Request,
        ste: Ste,
        cd: Cd | None,
        access: int,
        trace: list[object] | None,
        pn: int,
        split: bool,
    ) -> Response:
        """A TLB miss: the walks, and the new TLB entry (``pn``: the untagged page)."""
        va = req.addr
        priv = req.priv
        self.counts.tlb_misses += 1
        if cd is None:
            e2 = self._s2(ste, va, access, CLASS_IN, trace)
            return self._ok(e2.pa, e2.size_lg2, e2.perms, priv)
        leaf = self._s1(ste, cd, va, access, priv, trace)
        perms = leaf.perms
        out = leaf.out
        size = leaf.size_lg2
        ipa_pn = -1
        if ste.s2 is not None and not split:
            e2 = self._s2(ste, out, access, CLASS_IN, trace)
            perms &= e2.perms
            ipa_pn = out >> 12
            out = e2.pa
            size = min(size, e2.size_lg2)
        if not split:
            # nG = 0 (DDI 0487 D8 "Global and process-specific translation table entries"):
            # the entry matches every ASID.
            glob = cd.asid < 0 or not leaf.pte & _NG
            tag = GLOBAL if glob else cd.asid
            if self.tlb.capacity:
                # Both an ASID-tagged and a global entry for one page: software changed nG
                # without invalidating -- a TLB conflict (IHI 0070 7.3 F_TLB_CONFLICT; the
                # model detects this case, an implementation may detect others).
                other = (ste.vmid, GLOBAL if tag != GLOBAL else cd.asid, priv, pn)
                if cd.asid >= 0 and other in self.tlb:
                    raise _Stop(F_TLB_CONFLICT)
                entry = TlbEntry(out & ~0xFFF, perms, size, ipa_pn)
                self.tlb.insert((ste.vmid, tag, priv, pn), entry)
        return self._ok(out, size, perms, priv)

    def _translated(self, req: Request, ste: Ste, trace: list[object] | None) -> Response:
        """A transaction with an address a Translation Completion gave (PCIe AT = 0b10):
        passed through with EATS = full, translated by stage 2 only with split-stage ATS,
        F_TRANSL_FORBIDDEN with EATS = 0 (IHI 0070 3.9.2, 5.2 EATS)."""
        if ste.config == STE_CONFIG_BYPASS:
            return Response("bypass", pa=req.addr, r=True, w=True, x=True, priv=True)
        if ste.eats == EATS_ABORT:
            raise _Stop(F_TRANSL_FORBIDDEN)
        self.counts.ats_translated += 1
        if ste.eats == EATS_SPLIT and ste.s2 is not None:
            access = PERM_W if req.is_write else PERM_R
            e2 = self._s2(ste, req.addr, access, CLASS_IN, trace)
            return self._ok(e2.pa, e2.size_lg2, e2.perms, req.priv)
        return Response("ok", pa=req.addr, r=True, w=True, x=True, priv=req.priv)

    def _fault(self, req: Request, ste: Ste | None, cd: Cd | None, s: _Stop) -> Response:
        """Step 7: the event of a transaction that stopped, and what becomes of it."""
        ev = Event(
            type=s.etype,
            streamid=req.sid,
            ssv=req.ssv,
            substreamid=req.ssid if req.ssv else 0,
            pnu=req.priv,
            ind=req.instr,
            rnw=not req.is_write,
            s2=s.stage == 2,
            class_=s.class_ if s.stage == 2 else 0,
            ttrnw=s.stage == 2 and s.class_ == CLASS_TT,
            inputaddr=req.addr,
            ipa=s.ipa if s.stage == 2 else 0,
            fetchaddr=s.fetch,
        )
        ats = req.at == AT_ATS_REQUEST
        if s.etype not in _STALLABLE:
            if s.stage:  # F_WALK_EABT: always recorded, the transaction aborted
                return Response("abort", event=ev)
            return Response("ur" if ats else s.outcome, event=ev, recorded=s.record)
        if ats:
            # A translation fault on a Translation Request: a completion granting nothing,
            # no event (IHI 0070 3.9.1).
            return Response("ok", pa=0, size_lg2=12)
        if s.stage == 1:
            assert cd is not None
            stall, record, abort = cd.s, cd.r, cd.a
        else:
            assert ste is not None
            stall, record, abort = ste.s2s, ste.s2r, True
        if stall and len(self._stalled) < self._stall_max:
            stag = self._next_stag
            self._next_stag = (stag + 1) & 0xFFFF
            self._stalled[(req.sid, stag)] = req
            return Response("stalled", event=ev._replace(stall=True, stag=stag), stag=stag)
        return Response("abort" if abort else "raz_wi", event=ev, recorded=record)

    @staticmethod
    def _ok(pa: int, size_lg2: int, perms: int, priv: bool) -> Response:
        r, w, x = bool(perms & PERM_R), bool(perms & PERM_W), bool(perms & PERM_X)
        return _new(Response, ("ok", pa, size_lg2, r, w, x, priv, None, True, -1))

    # -- stalls (IHI 0070 3.12.2, 4.6) ------------------------------------------------------

    def stalled(self) -> list[tuple[int, int, Request]]:
        """The transactions held stalled: ``(streamid, stag, request)``, oldest first."""
        return [(sid, stag, r) for (sid, stag), r in self._stalled.items()]

    def resume(self, sid: int, stag: int, retry: bool) -> Response | None:
        """CMD_RESUME: retry the stalled transaction (translated afresh: it may fault and
        stall again) or terminate it with an abort; None when nothing is stalled with that
        StreamID and STAG (the command is then ignored, IHI 0070 4.6.2)."""
        req = self._stalled.pop((sid, stag), None)
        if req is None:
            return None
        if not retry:
            return Response("abort", recorded=False)
        return self.translate(req)

    def stall_term(self, sid: int) -> list[int]:
        """CMD_STALL_TERM: terminate (abort) every stalled transaction of ``sid``; their
        STAGs."""
        keys = [k for k in self._stalled if k[0] == sid]
        for k in keys:
            del self._stalled[k]
        return [stag for _, stag in keys]

    # -- CacheMaintenance (IHI 0070 4.2-4.4, 3.17) -----------------------------------------

    def prefetch_config(self, sid: int, ssv: bool, ssid: int) -> None:
        self._ctx = None
        if not self.enabled:
            return
        try:
            ste = self._ste(sid, None)
            if ste.s1 and (not ssv or ssid >> ste.s1cdmax == 0):
                self._cd(sid, ssid if ssv else 0, ste, 0, None)
        except _Stop:
            pass  # a prefetch never records an event (IHI 0070 4.2.1)

    def cfgi_ste(self, sid: int, leaf: bool) -> None:
        self._ctx = None
        self.ste_cache.pop(sid, None)
        self._drop_spans(sid, 0)
        self.cfgi_cd_all(sid)

    def cfgi_ste_range(self, sid: int, range_lg2: int) -> None:
        self._ctx = None
        if range_lg2 >= 31:
            self.ste_cache.clear()
            self.ste_spans.clear()
            self.cd_cache.clear()
            return
        base = sid >> (range_lg2 + 1)
        for s in [s for s in self.ste_cache if s >> (range_lg2 + 1) == base]:
            del self.ste_cache[s]
        self._drop_spans(base << (range_lg2 + 1), range_lg2 + 1)
        for k in [k for k in self.cd_cache if k[0] >> (range_lg2 + 1) == base]:
            del self.cd_cache[k]

    def _drop_spans(self, first: int, lg2: int) -> None:
        """Remove the span entries meeting StreamIDs ``first .. first + 2**lg2 - 1``: CONT
        does not narrow invalidation (IHI 0070 5.2), so an entry serving any of them goes."""
        last = first + (1 << lg2) - 1
        for key in [k for k in self.ste_spans if k[0] <= last and first < k[0] + (1 << k[1])]:
            del self.ste_spans[key]

    def cfgi_cd(self, sid: int, ssid: int, leaf: bool) -> None:
        self._ctx = None
        self.cd_cache.pop((sid, ssid), None)

    def cfgi_cd_all(self, sid: int) -> None:
        self._ctx = None
        for k in [k for k in self.cd_cache if k[0] == sid]:
            del self.cd_cache[k]

    def tlbi(self, t: Tlbi) -> None:
        if t.broadcast and (self.ptm or not self.p.idr0_field("btm")):
            return  # IHI 0070 3.17: broadcast maintenance reaches the SMMU only with BTM
        for cache in (self.tlb, self.walk_cache):
            for key in list(match_tlbi(cache, t)):
                del cache[key]

    def forget_context(self) -> None:
        """Forget the fast path's last context (after changing the caches from outside)."""
        self._ctx = None

    def invalidate_all(self) -> None:
        """Every cached structure and translation (reset)."""
        self._ctx = None
        self.ste_cache.clear()
        self.ste_spans.clear()
        self.cd_cache.clear()
        self.tlb.clear()
        self.walk_cache.clear()
