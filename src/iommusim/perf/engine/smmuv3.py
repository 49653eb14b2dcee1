"""Trace replay against an Arm SMMUv3 at compiled speed, with the scalar model's results.

:class:`Smmuv3BatchEngine` replays trace rows (:mod:`iommusim.perf.trace`: ``device_id`` is
the StreamID, ``pasid`` the SubstreamID or -1) through the kernels of
:mod:`iommusim.perf.engine.smmuv3_kernels`. They answer, for streams whose STE and CD are in
the configuration caches: TLB hits; stage 1, stage 2 and nested walks of little-endian
AArch64 tables (every granule and start level, blocks and pages, the AP / S2AP / XN
permissions, AF already set, the walk cache under nesting); STE.Config abort and bypass.
Every other row -- an STE or CD fetch (a configuration cache miss), a fault, a stall, an
event, an AF or dirty-state update, TBI, big-endian tables, a TLB conflict -- goes to the
scalar model in trace order (:meth:`Smmuv3.translate
<iommusim.hw.smmuv3.smmu.Smmuv3.translate>`, which records its event, or the translator's
own), so every result and every event is the spec's.

The engine and the scalar model share one cache state: before the scalar model runs a row
the engine writes the STE cache, CD cache, TLB and walk cache (contents and replacement
order, and the random policy's generator) back into the translator, and reads them again
after; table pages are copied into a :class:`~iommusim.perf.engine.snapshot.TableSnapshot`.
The PMCG counts the translator's :class:`~iommusim.hw.smmuv3.maintenance.TranslationCounts`
lazily (IHI 0070 10.3 events 0x1 transactions, 0x2 TLB misses, 0x4 walk accesses), so the
engine adds its rows' counts there and the counters, their overflow included, stay exactly
the scalar model's whatever is enabled.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from typing import Final, Generic, NamedTuple, TypeVar, get_args

import numpy as np
import numpy.typing as npt

from iommusim.bits.arm.smmuv3_structures import STE_CONFIG_ABORT, STE_CONFIG_BYPASS
from iommusim.bits.pgformat import PtFormat
from iommusim.errors import InvalidArgument, ModelError
from iommusim.hw.common.cache import BoundedCache, RandomCache
from iommusim.hw.pgtable.vmsa import VmsaWalker
from iommusim.hw.smmuv3.config import Cd, Ste
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.hw.smmuv3.tlb import TlbEntry, TlbKey
from iommusim.hw.smmuv3.transaction import Outcome, Request, Response
from iommusim.hw.smmuv3.translator import Smmuv3Translator
from iommusim.mem.sparse import SparseMemory
from iommusim.perf.engine.riscv import (
    JIT_AVAILABLE,
    MAX_BURST,
    EngineStats,
    _entries,
    _export_order,
    _i64,
    _linked,
    _meta,
)
from iommusim.perf.trace.format import FLAG_EXEC, FLAG_PRIV, FLAG_WRITE, Trace

if JIT_AVAILABLE:
    from iommusim.perf.engine import smmuv3_kernels as K
    from iommusim.perf.engine.kernels import M_RNG, ST_PAGE, ST_SCALAR, tlb_index
    from iommusim.perf.engine.snapshot import TableSnapshot

__all__ = ["OUTCOMES", "Smmuv3BatchEngine", "Smmuv3Results", "smmuv3_request_of"]

_I64 = npt.NDArray[np.int64]
_KT = TypeVar("_KT", bound=Hashable)
_VT = TypeVar("_VT")
#: Response outcomes by their code in :class:`Smmuv3Results` (the order of
#: :data:`~iommusim.hw.smmuv3.transaction.Outcome`).
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)
_OUTCOME_CODE: Final = {o: i for i, o in enumerate(OUTCOMES)}
_noticed = False


class Smmuv3Results(NamedTuple):
    """The answers to a chunk of rows: the output ``pa`` (the response's: 0 unless the
    transaction completed), the ``outcome`` (an index into :data:`OUTCOMES`: ``ok``,
    ``bypass``, ``abort``, ``raz_wi``, ``stalled``, ``ur``) and the ``event`` type the SMMU
    generated (IHI 0070 7.3; 0 for none)."""

    pa: npt.NDArray[np.uint64]
    outcome: npt.NDArray[np.uint8]
    event: npt.NDArray[np.uint8]


def smmuv3_request_of(sid: int, pasid: int, iova: int, flags: int) -> Request:
    """The scalar model's transaction for one trace row (IHI 0070 3.2: StreamID, SubstreamID
    when ``pasid`` >= 0, RnW, InD, PnU)."""
    return Request(
        sid,
        iova,
        is_write=bool(flags & FLAG_WRITE),
        ssv=pasid >= 0,
        ssid=pasid if pasid >= 0 else 0,
        priv=bool(flags & FLAG_PRIV),
        instr=bool(flags & FLAG_EXEC),
    )


def _fmt_row(fmt: PtFormat, oa_bits: int, ng: int) -> list[int]:
    """The kernel constants of one VMSAv8-64 format walked with output size ``oa_bits``
    (columns ``K.F_COLUMNS``): what :class:`~iommusim.hw.pgtable.vmsa.VmsaWalker` derives
    for its walk; ``ng``: the nG mask of a stage 1 leaf (0 for stage 2)."""
    if (
        fmt.pte_bytes != 8
        or fmt.levels > 4
        or fmt.level_table_values[0] >= 0
        or fmt.napot_mask
        or fmt.memtype_reserved
        or fmt.misaligned_superpage_faults
        or fmt.write_only_reserved
        or len(fmt.perm_shifts) > 4
    ):
        raise ModelError(f"{fmt.name}: not a VMSAv8-64 format the kernels walk")
    # D8 "Address size fault": output-address bits at or above the configured size.
    oa_bad = fmt.oa_mask & ~(((1 << oa_bits) - 1) >> fmt.page_shift << fmt.oa_shift)
    pad = 4 - fmt.levels
    perm_pad = [(0, 0)] * (4 - len(fmt.perm_shifts))
    shifts = [(sh, mask) for sh, mask in fmt.perm_shifts] + perm_pad
    row = [
        fmt.levels,
        fmt.va_bits,
        ~(fmt.root_alignment - 1),
        oa_bits,
        fmt.table_mask,
        fmt.leaf_mask,
        fmt.nonleaf_reserved_mask() | oa_bad,
        fmt.leaf_reserved_mask() | oa_bad,
        fmt.oa_shift,
        fmt.oa_mask >> fmt.oa_shift,
        fmt.page_shift,
        fmt.accessed_mask,
        ng,
        len(fmt.perm_table) >> 1,
        *fmt.level_table_values,
        *[0] * pad,
        *fmt.level_leaf_values,
        *[0] * pad,
        *(fmt.level_shift(i) for i in range(fmt.levels)),
        *[0] * pad,
        *(fmt.index_mask(i) for i in range(fmt.levels)),
        *[0] * pad,
        *(sh for sh, _ in shifts),
        *(mask for _, mask in shifts),
        *fmt.perm_table,
    ]
    return [_i64(v) for v in row]


class _Objects(Generic[_KT, _VT]):
    """A configuration cache (STEs or CDs) as a kernel array: the kernels find and reorder
    entries, never fill them, so the scalar model's objects are written back in the
    kernels' order."""

    def __init__(
        self,
        cache: BoundedCache[_KT, _VT],
        width: int,
        row: Callable[[_KT, _VT], tuple[int, ...]],
        lru: int,
    ) -> None:
        self.items = _entries(cache)
        self.a = _linked([row(k, v) for k, v in self.items], width, cache.capacity)
        self.m = _meta(len(self.items), cache, lru)

    def export(self, cache: BoundedCache[_KT, _VT], cn: int) -> None:
        order = _export_order(self.a, self.m, cn).tolist()
        cache.clear()
        cache.update(self.items[s] for s in order)


class _Tlb:
    """A TLB-shaped cache (the TLB, the walk cache) as kernel arrays: entries, links and the
    hash index; the scalar model's entries are kept until the kernels refill their slot."""

    def __init__(self, cache: BoundedCache[TlbKey, TlbEntry], lru: int) -> None:
        items = _entries(cache)
        #: The scalar model's (key, entry) of each slot, until the kernels refill it.
        self.items: list[tuple[TlbKey, TlbEntry] | None] = [*items]
        self.items += [None] * (max(cache.capacity, 1) - len(items))
        self.a = _linked(
            [(*k[:2], int(k[2]), k[3], e.pa, e.perms, e.size_lg2, e.ipa_pn, 0) for k, e in items],
            len(K.T_COLUMNS),
            cache.capacity,
        )
        self.m = _meta(len(items), cache, lru)
        size = 8
        while size < 2 * max(cache.capacity, 1):
            size *= 2
        self.h = np.full(size, -1, dtype=np.int64)
        tlb_index(self.a, self.h, len(items))

    def export(self, cache: BoundedCache[TlbKey, TlbEntry]) -> None:
        order = _export_order(self.a, self.m, K.T_NEXT)
        items = self.items
        for s, r in zip(order.tolist(), self.a[order].tolist(), strict=True):
            if r[K.T_FRESH]:
                key = (r[K.T_VMID], r[K.T_ASID], bool(r[K.T_PRIV]), r[K.T_PN])
                items[s] = (key, TlbEntry(r[K.T_PA], r[K.T_PERMS], r[K.T_SIZE], r[K.T_IPA]))
                self.a[s, K.T_FRESH] = 0
        cache.clear()
        cache.update(_present(items[s]) for s in order.tolist())
        if isinstance(cache, RandomCache):
            cache.state = int(self.m[M_RNG]) & ((1 << 64) - 1)


def _present(item: tuple[TlbKey, TlbEntry] | None) -> tuple[TlbKey, TlbEntry]:
    if item is None:
        raise ModelError("a TLB slot in use must hold an entry")
    return item


class Smmuv3BatchEngine:
    """Replays traces against ``smmu``: an :class:`Smmuv3` (its events recorded in its event
    queue) or an :class:`Smmuv3Translator` alone, configured by software -- registers,
    memory and caches are the model's own."""

    def __init__(self, smmu: Smmuv3 | Smmuv3Translator, max_burst: int = MAX_BURST) -> None:
        global _noticed  # noqa: PLW0603 -- one notice per process
        if max_burst < 1:
            raise InvalidArgument(f"max_burst must be >= 1, not {max_burst}")
        self.max_burst = max_burst
        self.stats = EngineStats()
        self._translate: Callable[[Request], Response] = smmu.translate
        t = smmu.translator if isinstance(smmu, Smmuv3) else smmu
        #: The translator whose caches the kernels mirror; None (a stand-in translator, or
        #: a memory the kernels cannot read): every row is the scalar model's.
        self._t = t if isinstance(t, Smmuv3Translator) else None
        mem = None if self._t is None else self._t.mem
        self._snap = (
            TableSnapshot(mem)
            if JIT_AVAILABLE and type(mem) is SparseMemory and mem.words is not None
            else None
        )
        if not JIT_AVAILABLE and not _noticed:
            _noticed = True
            print(
                "iommusim: numba is not importable; trace replay runs through the scalar model",
                file=sys.stderr,
            )
        self._fmt_index: dict[tuple[PtFormat, int], int] = {}
        # One row per format (_fmt_row), added as the cached STEs and CDs need them.
        self._fmts = np.zeros((0, 0), dtype=np.int64)
        self._counts = np.zeros(5, dtype=np.int64)
        self._page_out = np.zeros(1, dtype=np.int64)
        self._scratch = K.scratch() if JIT_AVAILABLE else ()
        self._dirty = False

    # ------------------------------------------------------------------ public
    def replay(self, rows: Trace) -> Smmuv3Results:
        """Translate ``rows`` in order; the SMMU's state afterwards is the scalar model's."""
        n = len(rows)
        out = Smmuv3Results(np.zeros(n, np.uint64), np.zeros(n, np.uint8), np.zeros(n, np.uint8))
        self.stats.rows += n
        t = self._t
        snap = self._snap
        if t is None or snap is None or not t.enabled or t.ste_spans:
            # STE.CONT span entries (IHI 0070 5.2) are matched by the scalar lookup only.
            self._scalar(rows, 0, n, out)
            return out
        sids = rows["device_id"]
        pasids = rows["pasid"]
        iovas = rows["iova"].view(np.int64)
        flags = rows["flags"]
        pa = out.pa.view(np.int64)
        self._import_caches(t)
        snap.refresh()
        i = 0
        burst = 1
        while i < n:
            j, st = K.replay(
                sids, pasids, iovas, flags, i, n, pa, out.outcome, self._fmts, self._ste.a,
                self._ste.m, self._cd.a, self._cd.m, self._tlb.a, self._tlb.h, self._tlb.m,
                self._walk.a, self._walk.h, self._walk.m, snap.pages, snap.pk, snap.pr,
                self._counts, self._page_out, *self._scratch,
            )  # fmt: skip
            self._account(t, j - i)
            if st == ST_PAGE:
                snap.add(int(self._page_out[0]))
                self.stats.snapshot_pages = len(snap)
            elif st == ST_SCALAR:
                end = min(n, j + burst)
                burst = min(2 * burst, self.max_burst) if j - i < 64 else 1
                self._export_caches(t)
                self._scalar(rows, j, end, out)
                if t.ste_spans:  # the burst cached an STE.CONT span: the rest is scalar too
                    self._scalar(rows, end, n, out)
                    return out
                self._import_caches(t)
                snap.refresh()
                j = end
            i = j
        self._export_caches(t)
        return out

    # ------------------------------------------------------------------ rows
    def _account(self, t: Smmuv3Translator, done: int) -> None:
        """Add the kernels' counts to the translator's (the PMCG's events) and the stats."""
        c = self._counts.tolist()
        for target, fields in ((t.counts, K.COUNTED), (self.stats, K.STATS)):
            for name, col in fields:
                setattr(target, name, getattr(target, name) + c[col])
        self._counts[:] = 0
        self.stats.engine_rows += done
        if done:
            self._dirty = True

    def _scalar(self, rows: Trace, start: int, stop: int, out: Smmuv3Results) -> None:
        translate = self._translate
        for i, (_, sid, pasid, iova, _, flags) in enumerate(rows[start:stop].tolist(), start):
            resp = translate(smmuv3_request_of(sid, pasid, iova, flags))
            out.pa[i] = resp.pa
            out.outcome[i] = _OUTCOME_CODE[resp.outcome]
            if resp.event is not None:
                out.event[i] = resp.event.type
        self.stats.scalar_rows += stop - start

    # ------------------------------------------------------------------ caches
    def _fmt(self, w: VmsaWalker | None, stage: int) -> int:
        """The format row of walker ``w`` of ``stage`` (-1 for None), added on first use."""
        if w is None:
            return -1
        fmt = w.w.fmt
        key = (fmt, w.oa_bits)
        row = self._fmt_index.get(key)
        if row is None:
            row = self._fmt_index[key] = len(self._fmt_index)
            ng = fmt.pte.mask("ng") if stage == 1 else 0
            new = _fmt_row(fmt, w.oa_bits, ng)
            self._fmts = np.array([*self._fmts.tolist(), new], dtype=np.int64)
        return row

    def _ste_row(self, sid: int, ste: Ste) -> tuple[int, ...]:
        if ste.config == STE_CONFIG_ABORT:
            kind = K.KIND_ABORT
        elif ste.config == STE_CONFIG_BYPASS:
            kind = K.KIND_BYPASS
        else:
            kind = K.KIND_SCALAR if ste.s2 is not None and ste.s2endi else K.KIND_XLATE
        return (
            sid, kind, int(ste.s1), ste.s1cdmax, ste.s1dss, ste.vmid, self._fmt(ste.s2, 2),
            ste.s2ttb,
        )  # fmt: skip

    def _cd_row(self, key: tuple[int, int], cd: Cd) -> tuple[int, ...]:
        ranges: list[int] = []
        for rng in (cd.range0, cd.range1):
            if rng is None:
                ranges += [-1, 0, 0, 0]
            else:
                w, ttb, _, bits, want = rng
                # The bits above the range as the kernels' arithmetic shift gives them.
                ranges += [self._fmt(w, 1), ttb, bits, _i64(want << bits) >> bits]
        ok = not (cd.tbi0 or cd.tbi1 or cd.endi)
        return (*key, cd.asid, cd.tag, int(cd.two_ranges), int(ok), *ranges)

    def _import_caches(self, t: Smmuv3Translator) -> None:
        """Read the translator's caches into the kernels' arrays."""
        lru = int(t.p.caches.replacement == "lru")
        self._ste = _Objects(t.ste_cache, len(K.S_COLUMNS), self._ste_row, lru)
        self._cd = _Objects(t.cd_cache, len(K.D_COLUMNS), self._cd_row, lru)
        self._tlb = _Tlb(t.tlb, lru)
        self._walk = _Tlb(t.walk_cache, lru)
        self._dirty = False
        self.stats.syncs += 1

    def _export_caches(self, t: Smmuv3Translator) -> None:
        """Write the kernels' caches back into the translator, in replacement order."""
        if not self._dirty:
            return
        self._ste.export(t.ste_cache, K.S_NEXT)
        self._cd.export(t.cd_cache, K.D_NEXT)
        self._tlb.export(t.tlb)
        self._walk.export(t.walk_cache)
        t.forget_context()  # the fast path's remembered STE/CD are no longer the newest
        self._dirty = False
