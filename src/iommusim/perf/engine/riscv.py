"""Trace replay against a RISC-V IOMMU at compiled speed, with the scalar model's results.

:class:`BatchEngine` replays trace rows (:mod:`iommusim.perf.trace`) through the kernels of
:mod:`iommusim.perf.engine.kernels`, which answer IOTLB hits and walks of well-formed tables
whose device and process contexts are cached. Every other row -- a fault, an A/D update, an
MSI, a DDT or PDT walk (a DDTC or PDTC miss), an execute request, big-endian tables, Sv32 --
goes to the scalar model (:meth:`RiscvIommu.translate`) in trace order, so every result and
every fault record is the spec's.

The engine and the scalar model share one cache state: before the scalar model runs a row
the engine writes its IOTLB, DDTC and PDTC (contents and replacement order) back into the
model, and reads them again after. Table pages are copied into a snapshot on first use; the
snapshot is checked against memory before each replay and after every scalar run (which may
write memory: A/D updates, fault records, MSIs). The performance counters the engine's rows
count (riscv-iommu: "Standard Events list": 1 untranslated requests, 4 TLB misses, 7 and 8
first- and second-stage PTE loads) are added to ``iohpmctr``; a counter with an ID filter, or
one that could wrap, sends the rows to the scalar model instead.

After a scalar run the engine resumes; when it stops again within a few rows, the scalar
model takes twice as many rows next time (up to :data:`MAX_BURST`), so a trace full of faults
costs about what the scalar model alone costs.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from iommusim.bits.pgformat import PtFormat
from iommusim.bits.riscv.pgtable import FIRST_STAGE_FORMATS, G_STAGE_FORMATS, SV39
from iommusim.bits.riscv.regs import (
    EVENTS_WITH_IDT1,
    FCTL_BE,
    FCTL_GXL,
    IOHPMEVT,
    MODE_1LVL,
    MODE_2LVL,
    MODE_3LVL,
    cap,
)
from iommusim.errors import InvalidArgument, ModelError
from iommusim.hw.common.cache import BoundedCache, RandomCache
from iommusim.hw.riscv.context import TC_DPE, TC_PDTV, TC_SBE, TC_SXL
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.iotlb import IotlbEntry, IotlbKey
from iommusim.hw.riscv.transaction import Request
from iommusim.mem.sparse import SparseMemory
from iommusim.perf.trace.format import FLAG_EXEC, FLAG_PRIV, FLAG_WRITE, Trace

__all__ = ["JIT_AVAILABLE", "MAX_BURST", "BatchEngine", "EngineStats", "Results", "request_of"]


def _jit_importable() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


#: Whether the compiled kernels are available (numba importable); without them every row
#: runs through the scalar model.
JIT_AVAILABLE: Final = _jit_importable()
if JIT_AVAILABLE:
    from iommusim.perf.engine import kernels as K
    from iommusim.perf.engine.snapshot import TableSnapshot

#: The most rows the scalar model runs in one go between two engine runs, by default.
MAX_BURST: Final = 4096

_I64 = npt.NDArray[np.int64]
_KT = TypeVar("_KT", bound=Hashable)
_VT = TypeVar("_VT")
_MASK64: Final = (1 << 64) - 1
_EVT_EVENTID: Final = IOHPMEVT.mask("eventid")
_EVT_FILTERS: Final = IOHPMEVT.mask("dv_gscv", "pv_pscv")
_EVT_IDT: Final = IOHPMEVT.mask("idt")
# The most each event can count for one row: a Sv57 walk whose five PTE addresses and whose
# output each take a Sv57x4 walk of five loads.
_MAX_PER_ROW: Final = {1: 1, 4: 1, 7: 5, 8: 30}
_noticed = False


def _i64(v: int) -> int:
    """``v`` (a 64-bit pattern) as a two's-complement int64."""
    v &= _MASK64
    return v - (1 << 64) if v >> 63 else v


def _fmt_row(f: PtFormat, exts: list[str]) -> list[int]:
    """The kernel constants of one 8-byte RISC-V format (columns ``K.FMT_COLUMNS``)."""
    if len(set(f.level_table_values)) != 1 or len(set(f.level_leaf_values)) != 1:
        raise ModelError(f"{f.name}: per-level entry types must be RISC-V's, one for all levels")
    mt_rsvd = sum(1 << v for v in f.memtype_reserved)
    shifts = [f.level_shift(i) for i in range(f.levels)] + [0] * (5 - f.levels)
    imasks = [f.index_mask(i) for i in range(f.levels)] + [0] * (5 - f.levels)
    row = [
        f.levels,
        f.va_bits,
        f.table_mask,
        f.level_table_values[0],
        f.leaf_mask,
        f.level_leaf_values[0],
        f.nonleaf_reserved_mask(exts),
        f.read_mask | f.write_mask,
        f.write_mask if f.write_only_reserved else -1,
        f.leaf_reserved_mask(exts),
        f.memtype_mask,
        f.memtype_shift,
        mt_rsvd,
        f.napot_mask,
        int(f.misaligned_superpage_faults),
        f.global_mask,
        f.oa_shift,
        f.oa_mask >> f.oa_shift,
        f.page_shift,
        *shifts,
        *imasks,
    ]
    return [_i64(v) for v in row]


class Results(NamedTuple):
    """The answers to a chunk of rows: ``pa`` (0 when faulted or an MRIF), ``cause`` (0 for a
    success, else the fault cause; the response was "unsupported request"), ``pbmt`` and
    ``msi`` (0 no MSI, 1 a flat MSI translation, 2 an MRIF-mode MSI)."""

    pa: npt.NDArray[np.uint64]
    cause: npt.NDArray[np.uint16]
    pbmt: npt.NDArray[np.uint8]
    msi: npt.NDArray[np.uint8]


@dataclass(slots=True)
class EngineStats:
    """What the engine did: rows answered by the kernels and by the scalar model, the
    kernels' IOTLB hits and walks, table pages in the snapshot, cache synchronisations."""

    rows: int = 0
    engine_rows: int = 0
    scalar_rows: int = 0
    iotlb_hits: int = 0
    walks: int = 0
    snapshot_pages: int = 0
    syncs: int = 0


def request_of(did: int, pasid: int, iova: int, flags: int) -> Request:
    """The scalar model's request for one trace row."""
    return Request(
        did,
        iova,
        is_write=bool(flags & FLAG_WRITE),
        pid_valid=pasid >= 0,
        process_id=pasid if pasid >= 0 else 0,
        priv_req=bool(flags & FLAG_PRIV),
        exec_req=bool(flags & FLAG_EXEC),
    )


class BatchEngine:
    """Replays traces against ``iommu`` (a RISC-V IOMMU configured by software: its
    registers, memory and caches are the model's own)."""

    def __init__(self, iommu: RiscvIommu, max_burst: int = MAX_BURST) -> None:
        global _noticed  # noqa: PLW0603 -- one notice per process
        if max_burst < 1:
            raise InvalidArgument(f"max_burst must be >= 1, not {max_burst}")
        self.iommu = iommu
        self.max_burst = max_burst
        self.stats = EngineStats()
        if not JIT_AVAILABLE and not _noticed:
            _noticed = True
            print(
                "iommusim: numba is not importable; trace replay runs through the scalar model",
                file=sys.stderr,
            )
        p = iommu.params
        exts = [
            n for n, b in (("svpbmt", cap.SVPBMT), ("svrsw60t59b", cap.SVRSW60T59B)) if p.has(b)
        ]
        fmts = [FIRST_STAGE_FORMATS[0][m] for m in (8, 9, 10)]
        fmts += [G_STAGE_FORMATS[0][m] for m in (8, 9, 10)]
        self._fmts = np.array([_fmt_row(f, exts) for f in fmts], dtype=np.int64)
        # riscv-iommu: "Process to translate an IOVA" step 5: device_id bits above what each
        # ddtp mode indexes (extended 64-byte or base 32-byte device contexts).
        if p.has(cap.MSI_FLAT):
            self._did_wide = {MODE_1LVL: 0xFFFFC0, MODE_2LVL: 0xFF8000, MODE_3LVL: 0}
        else:
            self._did_wide = {MODE_1LVL: 0xFFFF80, MODE_2LVL: 0xFF0000, MODE_3LVL: 0}
        bare = iommu.translator.bare_log2
        self._k = np.array(
            [
                0,
                bare[0],
                bare[2],
                SV39.read_mask,
                SV39.write_mask,
                SV39.exec_mask,
                SV39.user_mask,
                SV39.accessed_mask,
                SV39.dirty_mask,
                TC_PDTV,
                TC_DPE,
                TC_SBE,
                TC_SXL,
                sum(1 << sh for sh in iommu.engine.sp_shifts),
            ],
            dtype=np.int64,
        )
        self._ctr_mask = (1 << p.hpmctr_bits) - 1
        self._counts = np.zeros(6, dtype=np.int64)
        self._scratch = K.scratch() if JIT_AVAILABLE else ()
        self._page_out = np.zeros(1, dtype=np.int64)
        self._dirty = False
        mem = iommu.mem
        #: The table pages the kernels read (None: the memory offers no word views, or no
        #: JIT -- every row is the scalar model's).
        self._snap = (
            TableSnapshot(mem)
            if JIT_AVAILABLE and type(mem) is SparseMemory and mem.words is not None
            else None
        )

    # ------------------------------------------------------------------ public
    def replay(self, rows: Trace) -> Results:
        """Translate ``rows`` in order; the IOMMU's state afterwards is the scalar model's."""
        n = len(rows)
        out = Results(
            np.zeros(n, np.uint64),
            np.zeros(n, np.uint16),
            np.zeros(n, np.uint8),
            np.zeros(n, np.uint8),
        )
        self.stats.rows += n
        hpm = self._hpm_counters()
        if not JIT_AVAILABLE or hpm is None or not self._eligible():
            self._scalar(rows, 0, n, out)
            return out
        dids = rows["device_id"]
        pasids = rows["pasid"]
        iovas = rows["iova"].view(np.int64)
        flags = rows["flags"]
        pa = out.pa.view(np.int64)
        snap = self._snap
        assert snap is not None  # _eligible
        self._import_caches()
        snap.refresh()
        i = 0
        burst = 1
        while i < n:
            stop = min(n, i + self._hpm_headroom(hpm))
            if stop == i:
                self._scalar_run(rows, i, i + 1, out)
                i += 1
                continue
            j, st = K.replay(
                dids, pasids, iovas, flags, i, stop, pa, out.pbmt, self._k, self._fmts,
                self._tl, self._th, self._tm, self._dc, self._dm, self._pc, self._pm,
                snap.pages, snap.pk, snap.pr, self._counts, self._page_out, *self._scratch,
            )  # fmt: skip
            self._account(j - i, hpm)
            if st == K.ST_PAGE:
                snap.add(int(self._page_out[0]))
                self.stats.snapshot_pages = len(snap)
            elif st == K.ST_SCALAR:
                end = min(n, j + burst)
                burst = min(2 * burst, self.max_burst) if j - i < 64 else 1
                self._scalar_run(rows, j, end, out)
                j = end
            i = j
        self._export_caches()
        return out

    # ------------------------------------------------------------------ eligibility, HPM
    def _eligible(self) -> bool:
        """Whether the kernels can answer anything under the current registers and memory."""
        regs = self.iommu.regs
        mode = regs.ddtp & 0xF
        if self._snap is None:
            return False
        if mode not in self._did_wide or regs.fctl & (FCTL_BE | FCTL_GXL):
            return False
        self._k[K.K_DID_WIDE] = self._did_wide[mode]
        return True

    def _hpm_counters(self) -> dict[int, list[int]] | None:
        """The counters each event the kernels count increments, or None when a counter
        filters by ID (riscv-iommu: "iohpmevt1-31" filtering options): the scalar model's."""
        regs = self.iommu.regs
        by_event: dict[int, list[int]] = {1: [], 4: [], 7: [], 8: []}
        for n in range(1, max(self.iommu.params.num_hpm, 1)):
            evt = regs.iohpmevt[n]
            event = evt & _EVT_EVENTID
            if event not in by_event or regs.iocountinh >> n & 1:
                continue
            if evt & _EVT_FILTERS:
                return None
            if evt & _EVT_IDT and event not in EVENTS_WITH_IDT1:
                continue  # an unsupported IDT setting: the counter does not increment
            by_event[event].append(n)
        return by_event

    def _hpm_headroom(self, hpm: dict[int, list[int]]) -> int:
        """Rows the kernels may run before a counter could wrap (the wrap is the scalar
        model's: OF, iocountovf and the interrupt)."""
        rows = 1 << 62
        ctr = self.iommu.regs.iohpmctr
        for event, counters in hpm.items():
            for n in counters:
                rows = min(rows, (self._ctr_mask - ctr[n]) // _MAX_PER_ROW[event])
        return rows

    def _account(self, done: int, hpm: dict[int, list[int]]) -> None:
        c = self._counts
        ctr = self.iommu.regs.iohpmctr
        for event, col in ((1, K.C_EV1), (4, K.C_EV4), (7, K.C_EV7), (8, K.C_EV8)):
            for n in hpm[event]:
                ctr[n] += int(c[col])
        st = self.stats
        st.engine_rows += done
        st.iotlb_hits += int(c[K.C_HITS])
        st.walks += int(c[K.C_WALKS])
        c[:] = 0
        if done:
            self._dirty = True

    # ------------------------------------------------------------------ scalar rows
    def _scalar_run(self, rows: Trace, start: int, stop: int, out: Results) -> None:
        """Rows ``start..stop-1`` through the scalar model, from the engine's cache state."""
        self._export_caches()
        self._scalar(rows, start, stop, out)
        self._import_caches()
        if self._snap is not None:
            self._snap.refresh()

    def _scalar(self, rows: Trace, start: int, stop: int, out: Results) -> None:
        translate = self.iommu.translate
        part = rows[start:stop]
        cols = zip(
            part["device_id"].tolist(),
            part["pasid"].tolist(),
            part["iova"].tolist(),
            part["flags"].tolist(),
            strict=True,
        )
        for i, (did, pasid, iova, flags) in enumerate(cols, start):
            resp = translate(request_of(did, pasid, iova, flags))
            if resp.ok:
                out.pa[i] = resp.pa
                out.pbmt[i] = resp.pbmt
                out.msi[i] = 2 if resp.is_mrif else int(resp.is_msi)
            else:
                out.cause[i] = resp.cause
        self.stats.scalar_rows += stop - start

    # ------------------------------------------------------------------ caches
    def _import_caches(self) -> None:
        """Read the scalar model's DDTC, PDTC and IOTLB into the kernels' arrays."""
        eng = self.iommu.engine
        caches = self.iommu.params.caches
        lru = int(caches.replacement == "lru")
        dcs = [dc for _, dc in _entries(eng.ddtc)]
        self._dc_objs = dcs
        self._dc = _linked(
            [
                (d.did, d.tc, d.fsc_mode, d.fsc_ppn, d.g_mode, d.g_ppn, d.gscid, d.pscid,
                 d.msiptp_mode, d.msi_mask, d.msi_pattern)
                for d in dcs
            ],
            len(K.D_COLUMNS),
            eng.ddtc.capacity,
        )  # fmt: skip
        self._dm = _meta(len(dcs), eng.ddtc, lru)
        pcs = _entries(eng.pdtc)
        self._pc_objs = pcs
        self._pc = _linked(
            [(did, pid, p.ens, p.sum, p.mode, p.ppn, p.pscid) for (did, pid), p in pcs],
            len(K.P_COLUMNS),
            eng.pdtc.capacity,
        )
        self._pm = _meta(len(pcs), eng.pdtc, lru)
        tlb = _entries(eng.iotlb)
        #: The scalar model's (key, entry) of each IOTLB slot, until the kernels refill it.
        self._tl_items: list[tuple[IotlbKey, IotlbEntry] | None] = tlb + [None] * (
            max(eng.iotlb.capacity, 1) - len(tlb)
        )
        self._tl = _linked(
            [
                (key[0], key[1], int(key[2]), key[3], e.gscid, e.pscid, int(e.glob), e.pa,
                 e.ok, e.pbmt, e.size_lg2, 0)
                for key, e in tlb
            ],
            len(K.T_COLUMNS),
            eng.iotlb.capacity,
        )  # fmt: skip
        self._tm = _meta(len(tlb), eng.iotlb, lru)
        size = 8
        while size < 2 * max(caches.iotlb_entries, 1):
            size *= 2
        self._th = np.full(size, -1, dtype=np.int64)
        K.tlb_index(self._tl, self._th, len(tlb))
        self._dirty = False
        self.stats.syncs += 1

    def _export_caches(self) -> None:
        """Write the kernels' caches back into the scalar model, in replacement order."""
        if not self._dirty:
            return
        eng = self.iommu.engine
        d_order = _export_order(self._dc, self._dm, K.D_NEXT).tolist()
        eng.ddtc.clear()
        eng.ddtc.update((self._dc_objs[s].did, self._dc_objs[s]) for s in d_order)
        p_order = _export_order(self._pc, self._pm, K.P_NEXT).tolist()
        eng.pdtc.clear()
        eng.pdtc.update(self._pc_objs[s] for s in p_order)
        t_order = _export_order(self._tl, self._tm, K.T_NEXT)
        items = self._tl_items
        rows = self._tl[t_order].tolist()
        for s, r in zip(t_order.tolist(), rows, strict=True):
            if r[K.T_FRESH]:
                items[s] = (
                    (r[K.T_DID], r[K.T_PID], bool(r[K.T_PRIV]), r[K.T_VPN]),
                    IotlbEntry(
                        r[K.T_GSCID], r[K.T_PSCID], bool(r[K.T_GLOB]), r[K.T_PA], r[K.T_OK],
                        r[K.T_PBMT], r[K.T_SIZE],
                    ),
                )  # fmt: skip
                self._tl[s, K.T_FRESH] = 0
        eng.iotlb.clear()
        eng.iotlb.update(_present(items[s]) for s in t_order.tolist())
        if isinstance(eng.iotlb, RandomCache):
            eng.iotlb.state = int(self._tm[K.M_RNG]) & _MASK64
        self._dirty = False


def _linked(rows: list[tuple[int, ...]], width: int, capacity: int) -> _I64:
    """A cache's kernel array: ``rows`` from the oldest entry to the newest, linked in that
    order (the last two columns), room for ``capacity`` entries."""
    a = np.zeros((max(capacity, 1), width), dtype=np.int64)
    n = len(rows)
    if n:
        a[:n, : width - 2] = np.array([[_i64(v) for v in r] for r in rows], dtype=np.int64)
        a[:n, width - 2] = np.arange(-1, n - 1)
        a[:n, width - 1] = np.arange(1, n + 1)
        a[n - 1, width - 1] = -1
    return a


def _present(item: tuple[IotlbKey, IotlbEntry] | None) -> tuple[IotlbKey, IotlbEntry]:
    if item is None:
        raise ModelError("an IOTLB slot in use must hold an entry")
    return item


def _entries(cache: BoundedCache[_KT, _VT]) -> list[tuple[_KT, _VT]]:
    """A cache's entries in the kernels' slot order: a random cache's slots, else from the
    oldest entry to the newest."""
    if isinstance(cache, RandomCache):
        return [(key, cache[key]) for key in cache.slots]
    return list(cache.items())


def _export_order(a: _I64, m: _I64, cn: int) -> _I64:
    """The slots in the order the scalar cache is rebuilt from: slot order for random
    replacement (a rebuilt random cache's slots are its insertion order), else age order."""
    if m[K.M_RANDOM]:
        return np.arange(m[K.M_COUNT], dtype=np.int64)
    return K.order(a, m, cn)


def _meta(n: int, cache: BoundedCache[_KT, _VT], lru: int) -> _I64:
    rand, state = (1, _i64(cache.state)) if isinstance(cache, RandomCache) else (0, 0)
    return np.array([0 if n else -1, n - 1, n, cache.capacity, lru, rand, state], np.int64)
