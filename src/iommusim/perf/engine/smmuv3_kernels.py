"""The compiled kernels of the SMMUv3 batch engine (numba ``@njit`` over int64 arrays).

:func:`replay` answers trace rows as :meth:`Smmuv3Translator.translate
<iommusim.hw.smmuv3.translator.Smmuv3Translator.translate>` does, until it meets one it cannot
answer exactly: it returns that row's index and why it stopped (:data:`ST_SCALAR`: the scalar
model must run it; :data:`ST_PAGE`: a table page the snapshot does not hold yet).

A row is answered in two phases. The first only reads: the STE and the CD from the
configuration caches (a miss is a structure fetch: the scalar model's), the TLB, then the
walks and every check the procedure makes on them (IHI 0070 3.3.1, 3.4; Arm DDI 0487 D8).
Anything that would fault, stall, record an event or write memory (an Access flag or dirty
state update) stops the row there. The second phase commits the row's cache updates in the
order the scalar model makes them -- LRU moves, walk-cache fills, the stage 2 entry of the
output, the TLB fill. So a stopped row has changed no state and the scalar model starts from
exactly the state the row found.

The caches are the RISC-V kernels' linked arrays (:mod:`iommusim.perf.engine.kernels`: oldest
``M_HEAD`` to newest ``M_TAIL``, LRU / FIFO / seeded random replacement); the TLB and the walk
cache share the RISC-V IOTLB's hash index, their key columns being its own:
``(vmid, asid tag, privileged, input page)`` (:mod:`iommusim.hw.smmuv3.tlb`).
"""

from __future__ import annotations

from typing import Final, get_args

import numpy as np
import numpy.typing as npt

from iommusim.bits.arm.smmuv3_structures import S1DSS_SSID0
from iommusim.bits.pgformat import PERM_R, PERM_W, PERM_X
from iommusim.hw.smmuv3.tlb import GLOBAL, S2_ONLY
from iommusim.hw.smmuv3.transaction import Outcome
from iommusim.perf.engine.kernels import (
    M_CAP,
    M_COUNT,
    M_HEAD,
    M_LRU,
    M_RANDOM,
    M_RNG,
    M_TAIL,
    ST_OK,
    ST_PAGE,
    ST_SCALAR,
    T_DID,
    T_PID,
    T_PRIV,
    T_VPN,
    _append,
    _free_slot,
    _kernel,
    _random_victim,
    _row,
    _tlb_find,
    _tlb_hash_insert,
    _to_newest,
)
from iommusim.perf.engine.kernels import _jit_inline as _inline
from iommusim.perf.trace.format import FLAG_EXEC, FLAG_PRIV, FLAG_WRITE

__all__ = [
    "COUNTED",
    "D_COLUMNS",
    "D_NEXT",
    "F_COLUMNS",
    "KIND_ABORT",
    "KIND_BYPASS",
    "KIND_SCALAR",
    "KIND_XLATE",
    "N_ACCESSES",
    "N_HITS",
    "N_MISSES",
    "N_TRANS",
    "N_WALKS",
    "STATS",
    "S_COLUMNS",
    "S_NEXT",
    "T_ASID",
    "T_COLUMNS",
    "T_FRESH",
    "T_IPA",
    "T_NEXT",
    "T_PA",
    "T_PERMS",
    "T_PN",
    "T_PRIV",
    "T_SIZE",
    "T_VMID",
    "replay",
    "scratch",
]

_I64 = npt.NDArray[np.int64]

# Response outcome codes (the engine's OUTCOMES: the order of transaction.Outcome).
_O_OK: Final = get_args(Outcome).index("ok")
_O_BYPASS: Final = get_args(Outcome).index("bypass")
_O_ABORT: Final = get_args(Outcome).index("abort")

#: STE cache columns: the StreamID, what the kernels do with the stream (``KIND_*``), stage 1
#: enabled, S1CDMAX, S1DSS, the VMID tag, the stage 2 format row (-1: no stage 2), S2TTB.
S_COLUMNS: Final = ("sid", "kind", "s1", "cdmax", "dss", "vmid", "s2f", "s2ttb", "prev", "next")
S_SID, S_KIND, S_S1, S_CDMAX, S_DSS, S_VMID, S_S2F, S_S2TTB, S_PREV, S_NEXT = range(10)
#: The scalar model's (big-endian stage 2 tables); Config = abort; bypass; translate.
KIND_SCALAR, KIND_ABORT, KIND_BYPASS, KIND_XLATE = range(4)
#: CD cache columns: the key (StreamID, SubstreamID), ASID and TLB tag, two VA ranges,
#: whether the kernels walk it (no TBI, little-endian tables), then per range TTB0 / TTB1
#: (``D_R0`` / ``D_R1``): the format row (-1: no walk, EPDx), the table base, the range's
#: input bits and what the address bits above them must be (0, or -1 for all ones).
D_COLUMNS: Final = (
    "sid", "ssid", "asid", "tag", "two", "ok", "f0", "ttb0", "bits0", "want0", "f1", "ttb1",
    "bits1", "want1", "prev", "next",
)  # fmt: skip
D_SID, D_SSID, D_ASID, D_TAG, D_TWO, D_OK, D_R0 = range(7)
D_R1, D_PREV, D_NEXT = 10, 14, 15
R_F, R_TTB, R_BITS, R_WANT = range(4)
#: TLB and walk cache columns: the key (the RISC-V IOTLB's key columns, so its hash index
#: serves), the entry (:class:`~iommusim.hw.smmuv3.tlb.TlbEntry`), FRESH (filled by the
#: kernels) and the links.
T_COLUMNS: Final = (
    "vmid", "asid", "priv", "pn", "pa", "perms", "size", "ipa_pn", "fresh", "prev", "next",
)  # fmt: skip
T_VMID: Final = T_DID
T_ASID: Final = T_PID
T_PN: Final = T_VPN
T_PA, T_PERMS, T_SIZE, T_IPA, T_FRESH, T_PREV, T_NEXT = range(4, 11)
#: Format rows (one per VMSAv8-64 format and output size; see the engine's ``_fmt_row``):
#: levels, input bits, start-table alignment mask, output size, descriptor type masks,
#: the bits a table / leaf descriptor must not have, the output-address field, granule,
#: AF, nG, then per walker level (0: the last) the table and leaf type values, the level's
#: shift and index mask, the permission fields' shifts and masks, and the permission table
#: (:meth:`iommusim.bits.pgformat.PtFormat.grants`; the privileged half from ``F_PRIV``).
F_COLUMNS: Final = (
    "levels", "va_bits", "root_mask", "oa_bits", "tmask", "lmask", "nonleaf_bad",
    "leaf_bad", "oa_shift", "oa_width", "ps", "af", "ng", "priv",
    *(f"{c}{i}" for c in ("tval", "lval", "shift", "imask", "psh", "pmask") for i in range(4)),
    *(f"perm{i}" for i in range(32)),
)  # fmt: skip
F_LEVELS, F_VA_BITS, F_ROOT_MASK, F_OA_BITS, F_TMASK, F_LMASK, F_NONLEAF_BAD = range(7)
F_LEAF_BAD, F_OA_SHIFT, F_OA_WIDTH, F_PS, F_AF, F_NG, F_PRIV = range(7, 14)
F_TVAL, F_LVAL, F_SHIFT, F_IMASK, F_PSH, F_PMASK, F_PERM = 14, 18, 22, 26, 30, 34, 38

#: Counts (int64 array ``c``): IHI 0070 10.3 events 0x1 transactions, 0x2 TLB misses, 0x4
#: translation table walk accesses; then the kernels' TLB hits and walks.
N_TRANS, N_MISSES, N_ACCESSES, N_HITS, N_WALKS = range(5)
#: The :class:`~iommusim.hw.smmuv3.maintenance.TranslationCounts` fields the first three
#: add to, and the :class:`~iommusim.perf.engine.riscv.EngineStats` fields of the others.
COUNTED: Final = (
    ("transactions", N_TRANS),
    ("tlb_misses", N_MISSES),
    ("walk_accesses", N_ACCESSES),
)
STATS: Final = (("iotlb_hits", N_HITS), ("walks", N_WALKS))

# The walk-cache journal of one row (rows: its lookups in the scalar model's order): a hit
# (W_FILL = 0) or a fill of the stage 2 translation walked for the descriptor page W_PN; the
# entry (W_PA, W_PERMS, W_SIZE) and its slot as the row's earlier lookups leave the cache;
# W_LIVE: the row made the entry the newest and nothing evicted it since (the live rows are
# the newest end of the replacement order, oldest first); W_EVICT: the slot a fill evicted
# (its entry is gone), -1 for none.
W_FILL, W_PN, W_PA, W_PERMS, W_SIZE, W_SLOT, W_LIVE, W_EVICT = range(8)
# Journal state: lookups so far, the stage 2 descriptor reads, fills that evicted.
J_N, J_LOADS, J_EVICTS = range(3)

_PN_MASK: Final = (1 << 52) - 1
# A walk step's status: a table descriptor, the walk goes on.
_ST_TABLE: Final = -1
# Page-lookup memos (kernels._row): stage 1 levels at 0.., stage 2 of descriptor addresses
# at 4.., stage 2 of the output at 8..
_LP_S1, _LP_S2_TABLE, _LP_S2_OUT = 0, 4, 8
# Stage 2 leaf memos (_s2): the format row (-1: none), S2TTB, the IPA and the output above
# the leaf's size, the size, permissions and descriptor reads; rows: the table addresses of
# stage 1 levels at 0.., the output at 4.
S2M_F, S2M_TTB, S2M_IPA, S2M_SIZE, S2M_OUT, S2M_PERMS, S2M_LOADS = range(7)
_S2M_OUT = 4


# ---------------------------------------------------------------------------- caches
@_inline
def _ste_find(sc, sm, sid):
    s = sm[M_TAIL]
    while s >= 0 and sc[s, S_SID] != sid:
        s = sc[s, S_PREV]
    return s


@_inline
def _cd_find(dc, dm, sid, ssid):
    d = dm[M_TAIL]
    while d >= 0 and (dc[d, D_SID] != sid or dc[d, D_SSID] != ssid):
        d = dc[d, D_PREV]
    return d


@_kernel
def _insert(tl, th, tm, vmid, asid, priv, pn, pa, perms, size, ipa_pn):
    """``BoundedCache.insert`` of one TLB-shaped entry: a present key is replaced and made
    the newest; a new one takes a free slot, or the victim's (the oldest; random: the
    generator's pick); a cache of capacity 0 holds nothing."""
    if tm[M_CAP] <= 0:
        return
    s = _tlb_find(tl, th, vmid, asid, priv, pn)
    new = s < 0
    if not new:
        _to_newest(tl, tm, s, T_PREV, T_NEXT)
    else:
        s = _free_slot(tl, th, tm, T_PREV, T_NEXT)
        _append(tl, tm, s, T_PREV, T_NEXT)
    tl[s, T_VMID] = vmid
    tl[s, T_ASID] = asid
    tl[s, T_PRIV] = priv
    tl[s, T_PN] = pn
    tl[s, T_PA] = pa
    tl[s, T_PERMS] = perms
    tl[s, T_SIZE] = size
    tl[s, T_IPA] = ipa_pn
    tl[s, T_FRESH] = 1
    if new:
        _tlb_hash_insert(tl, th, s)


# ---------------------------------------------------------------------------- walks
@_inline
def _index(fm, f, i, ia):
    return ((ia >> fm[f, F_SHIFT + i]) & fm[f, F_IMASK + i]) * 8


@_inline
def _step(fm, f, i, pages, pk, pr, lp, at, pa, ia):
    """Read and judge the descriptor at ``pa`` at walker level ``i`` (DDI 0487 D8
    "Translation table descriptor formats"): ``(status, out, size, pte, page)`` --
    :data:`_ST_TABLE` and the next table's address, :data:`ST_OK` and the output address and
    log2 size of a block or page, :data:`ST_PAGE` for a page the snapshot lacks, or
    :data:`ST_SCALAR` for a descriptor the scalar walk must judge (invalid, reserved bits, an
    output address above the configured size: D8 "Address size fault")."""
    row = _row(pk, pr, lp, at + i, pa >> 12)
    if row < 0:
        return ST_PAGE, 0, 0, 0, pa >> 12
    pte = pages[row, (pa & 0xFFF) >> 3]
    if (pte & fm[f, F_TMASK]) == fm[f, F_TVAL + i]:
        if pte & fm[f, F_NONLEAF_BAD]:
            return ST_SCALAR, 0, 0, 0, 0
        return _ST_TABLE, ((pte >> fm[f, F_OA_SHIFT]) & fm[f, F_OA_WIDTH]) << fm[f, F_PS], 0, 0, 0
    if (pte & fm[f, F_LMASK]) != fm[f, F_LVAL + i] or pte & fm[f, F_LEAF_BAD]:
        return ST_SCALAR, 0, 0, 0, 0
    size = fm[f, F_SHIFT + i]
    mask = (1 << size) - 1
    oa = ((pte >> fm[f, F_OA_SHIFT]) & fm[f, F_OA_WIDTH]) << fm[f, F_PS]
    # Block output-address bits below the block size are ignored (D8 "Block descriptor").
    return ST_OK, (oa & ~mask) | (ia & mask), size, pte, 0


@_inline
def _walk(fm, f, pages, pk, pr, lp, at, root, ia):
    """Walk ``ia`` from the start table at ``root``: ``(status, out, size, pte, loads,
    page)``."""
    i = fm[f, F_LEVELS] - 1
    a = root
    loads = 0
    while True:
        st, a, size, pte, page = _step(
            fm, f, i, pages, pk, pr, lp, at, a + _index(fm, f, i, ia), ia
        )
        loads += 1
        if st != _ST_TABLE:
            return st, a, size, pte, loads, page
        i -= 1


@_inline
def _grants(fm, f, pte, priv):
    """The ``PERM_*`` bits leaf ``pte`` grants (DDI 0487 D8 "Memory access control"), or -1
    when its Access flag is 0 (D8 "The Access flag": a fault, or the hardware update --
    the scalar model's either way)."""
    if not pte & fm[f, F_AF]:
        return -1
    pi = fm[f, F_PRIV] if priv else 0
    for k in range(4):
        pi |= (pte & fm[f, F_PMASK + k]) >> fm[f, F_PSH + k]
    return fm[f, F_PERM + pi]


@_inline
def _s2(fm, f2, pages, pk, pr, lp, at, s2m, r, s2ttb, ipa, access):
    """A stage 2 walk of ``ipa`` for ``access`` (IHI 0070 3.4.2; D8 stage 2, an
    unprivileged access): ``(status, out, size, perms, loads, page)``; an IPA beyond
    S2T0SZ, an S2TTB above S2PS, a fault or an update stop at :data:`ST_SCALAR`.

    ``s2m[r]`` remembers the last leaf this walk found: an IPA in the same block or page
    (D8: the same descriptors at every level, the leaf's own included) is answered from
    it while the snapshot cannot change -- the loads still counted, the hardware makes
    them -- as the RISC-V kernels' ``_walk_nested`` memo does."""
    if ipa >> fm[f2, F_VA_BITS] or s2ttb >> fm[f2, F_OA_BITS]:
        return ST_SCALAR, 0, 0, 0, 0, 0
    size = s2m[r, S2M_SIZE]
    if s2m[r, S2M_F] == f2 and s2m[r, S2M_TTB] == s2ttb and ipa >> size == s2m[r, S2M_IPA]:
        out = s2m[r, S2M_OUT] | (ipa & ((1 << size) - 1))
        perms = s2m[r, S2M_PERMS]
        loads = s2m[r, S2M_LOADS]
    else:
        st, out, size, pte, loads, page = _walk(
            fm, f2, pages, pk, pr, lp, at, s2ttb & fm[f2, F_ROOT_MASK], ipa
        )
        if st != ST_OK:
            return st, 0, 0, 0, loads, page
        perms = _grants(fm, f2, pte, 0)
        if perms < 0:
            return ST_SCALAR, 0, 0, 0, loads, 0
        s2m[r, S2M_F] = f2
        s2m[r, S2M_TTB] = s2ttb
        s2m[r, S2M_IPA] = ipa >> size
        s2m[r, S2M_SIZE] = size
        s2m[r, S2M_OUT] = out >> size << size
        s2m[r, S2M_PERMS] = perms
        s2m[r, S2M_LOADS] = loads
    if access & ~perms:
        return ST_SCALAR, 0, 0, 0, loads, 0
    return ST_OK, out, size, perms, loads, 0


@_inline
def _journal_find(wj, n, col, v):
    """The newest live row of the first ``n`` of journal ``wj`` whose ``col`` is ``v``, or -1."""
    for k in range(n - 1, -1, -1):
        if wj[k, W_LIVE] and wj[k, col] == v:
            return k
    return -1


@_inline
def _evictor(wj, n, s):
    """The one of the first ``n`` journal rows that evicted the entry in slot ``s``, or -1."""
    for k in range(n):
        if wj[k, W_EVICT] == s:
            return k
    return -1


@_inline
def _victim(wl, wm, vm, wj, n):
    """The slot a fill of a new key takes in the full walk cache as the first ``n`` journal
    rows leave it (``BoundedCache.insert``: the oldest entry; random: the generator's pick,
    drawn from ``vm``, the row's copy of the cache's metadata); its entry's journal row, if
    the row had made it the newest, is no longer live."""
    if vm[M_RANDOM]:
        s = _random_victim(vm)
        k = _journal_find(wj, n, W_SLOT, s)
    else:
        # The oldest entry the row neither evicted nor made the newest; when there is none,
        # the oldest one it made the newest.
        s = wm[M_HEAD]
        while s >= 0 and (_evictor(wj, n, s) >= 0 or _journal_find(wj, n, W_SLOT, s) >= 0):
            s = wl[s, T_NEXT]
        k = -1
        if s < 0:
            k = 0
            while not wj[k, W_LIVE]:
                k += 1
            s = wj[k, W_SLOT]
    if k >= 0:
        wj[k, W_LIVE] = 0
    return s


@_inline
def _xlate(fm, f2, s2ttb, vmid, pages, pk, pr, lp, s2m, wl, wh, wm, vm, wj, jn, wmemo, i, addr):
    """The PA of the stage 1 descriptor at IPA ``addr`` (walker level ``i``) under nesting,
    as the walk cache gives it (IHI 0070 16.2: stage 2 translations of table addresses; the
    scalar model's ``_s2`` of CLASS TT): ``(status, pa, page)``. Reads only: the lookup or
    the fill goes to the journal ``wj``, which also answers the row's later lookups as the
    scalar model's cache would -- an entry the row filled, moved or evicted (its victims
    chosen by :func:`_victim`). ``wmemo[i]`` remembers the slot the cache gave the page
    level ``i`` looked up last (valid until a fill evicts)."""
    pn = addr >> 12
    n = jn[J_N]
    pa = 0
    perms = 0
    size = 0
    j = _journal_find(wj, n, W_PN, pn)
    if j >= 0:
        s = wj[j, W_SLOT]
        pa = wj[j, W_PA]
        perms = wj[j, W_PERMS]
        size = wj[j, W_SIZE]
    else:
        if wmemo[i, 0] == pn:
            s = wmemo[i, 1]
        else:
            s = _tlb_find(wl, wh, vmid, S2_ONLY, 0, pn)
            if s >= 0:
                wmemo[i, 0] = pn
                wmemo[i, 1] = s
        if s >= 0 and jn[J_EVICTS] and _evictor(wj, n, s) >= 0:
            s = -1
        if s >= 0:
            pa = wl[s, T_PA]
            perms = wl[s, T_PERMS]
            size = wl[s, T_SIZE]
    lru = wm[M_LRU]
    if s >= 0 and perms & PERM_R:
        if lru and j >= 0:
            wj[j, W_LIVE] = 0
        wj[n, W_FILL] = 0
        wj[n, W_PN] = pn
        wj[n, W_PA] = pa
        wj[n, W_PERMS] = perms
        wj[n, W_SIZE] = size
        wj[n, W_SLOT] = s
        wj[n, W_LIVE] = lru
        wj[n, W_EVICT] = -1
        jn[J_N] = n + 1
        return ST_OK, pa | (addr & 0xFFF), 0
    st, out, size, perms, loads, page = _s2(
        fm, f2, pages, pk, pr, lp, _LP_S2_TABLE, s2m, i, s2ttb, addr, PERM_R
    )
    if st != ST_OK:
        return st, 0, page
    jn[J_LOADS] += loads
    if wm[M_CAP] <= 0:
        return ST_OK, out, 0  # a walk cache of capacity 0 holds nothing
    # BoundedCache.insert: a present key is replaced in its slot; a new one takes a free
    # slot, or the victim's.
    evict = -1
    if s >= 0:
        if j >= 0:
            wj[j, W_LIVE] = 0
    elif vm[M_COUNT] < wm[M_CAP]:
        s = vm[M_COUNT]
        vm[M_COUNT] += 1
    else:
        s = evict = _victim(wl, wm, vm, wj, n)
        jn[J_EVICTS] += 1
    wj[n, W_FILL] = 1
    wj[n, W_PN] = pn
    wj[n, W_PA] = out & ~0xFFF
    wj[n, W_PERMS] = perms
    wj[n, W_SIZE] = size
    wj[n, W_SLOT] = s
    wj[n, W_LIVE] = 1
    wj[n, W_EVICT] = evict
    jn[J_N] = n + 1
    return ST_OK, out, 0


@_inline
def _walk_nested(
    fm, f, f2, s2ttb, vmid, pages, pk, pr, lp, s2m, wl, wh, wm, vm, wj, jn, wmemo, root, ia
):
    """:func:`_walk` with every descriptor address an IPA translated by stage 2 (IHI 0070
    3.4.2 nesting; the translations through :func:`_xlate`)."""
    i = fm[f, F_LEVELS] - 1
    a = root
    loads = 0
    size = 0
    pte = 0
    while True:
        addr = a + _index(fm, f, i, ia)
        st, pa, page = _xlate(
            fm, f2, s2ttb, vmid, pages, pk, pr, lp, s2m, wl, wh, wm, vm, wj, jn, wmemo, i, addr
        )
        if st == ST_OK:
            st, a, size, pte, page = _step(fm, f, i, pages, pk, pr, lp, _LP_S1, pa, ia)
            loads += 1
        if st != _ST_TABLE:
            return st, a, size, pte, loads, page
        i -= 1


@_inline
def _commit_walk_cache(wl, wh, wm, wj, jn, wmemo, vmid):
    """Replay the row's walk-cache journal on the cache: each lookup's LRU move, each fill
    (the scalar model's ``_s2`` insert: key ``(vmid, S2_ONLY, False, pn)``), which evicts
    the victim the journal chose."""
    for k in range(jn[J_N]):
        pn = wj[k, W_PN]
        if wj[k, W_FILL]:
            _insert(
                wl, wh, wm, vmid, S2_ONLY, 0, pn, wj[k, W_PA], wj[k, W_PERMS], wj[k, W_SIZE], pn
            )
            if wj[k, W_EVICT] >= 0:
                wmemo[:, 0] = -1  # the victim's slot holds another page now
        elif wm[M_LRU]:
            _to_newest(wl, wm, wj[k, W_SLOT], T_PREV, T_NEXT)


# ---------------------------------------------------------------------------- replay
@_kernel
def _stop(c, trans, misses, accesses, hits, walks, i, st):
    c[N_TRANS] += trans
    c[N_MISSES] += misses
    c[N_ACCESSES] += accesses
    c[N_HITS] += hits
    c[N_WALKS] += walks
    return i, st


def scratch() -> tuple[_I64, _I64, _I64, _I64, _I64, _I64]:
    """The scratch arrays of :func:`replay`, allocated once by its caller: the page-lookup
    and stage 2 leaf memos, the walk-cache journal and its state, the row's copy of the
    walk cache's metadata, the walk-cache slots remembered per level."""
    return (
        np.full((12, 2), -1, np.int64),
        np.full((5, 7), -1, np.int64),
        np.zeros((4, 8), np.int64),
        np.zeros(3, np.int64),
        np.zeros(M_RNG + 1, np.int64),
        np.full((4, 2), -1, np.int64),
    )


@_kernel
def replay(
    sids: npt.NDArray[np.uint32], pasids: npt.NDArray[np.int32], iovas: _I64,
    flags: npt.NDArray[np.uint8], start: int, stop: int, out_pa: _I64,
    out_outcome: npt.NDArray[np.uint8], fm: _I64, sc: _I64, sm: _I64, dc: _I64, dm: _I64,
    tl: _I64, th: _I64, tm: _I64, wl: _I64, wh: _I64, wm: _I64, pages: _I64, pk: _I64,
    pr: _I64, c: _I64, page_out: _I64, lp: _I64, s2m: _I64, wj: _I64, jn: _I64, vm: _I64,
    wmemo: _I64,
) -> tuple[int, int]:  # fmt: skip
    """The SMMUv3 kernel: rows ``start..stop-1`` (StreamID, SubstreamID or -1, address,
    flags) until one needs the scalar translator (``ST_SCALAR``) or a table page not in the
    snapshot (``ST_PAGE``, the page in ``page_out[0]``); the result is that row's index and
    the status, ``(stop, ST_OK)`` after the last. ``lp`` .. ``wmemo``: :func:`scratch`."""
    # The memos hold for one call: between calls the snapshot and the caches may change.
    lp[:] = -1
    s2m[:, S2M_F] = -1
    wmemo[:] = -1
    trans = 0
    misses = 0
    accesses = 0
    hits = 0
    walks = 0
    # The last row, when it hit: a row with the same inputs hits the same entry, and its
    # LRU moves are no-ops (the last row made the STE, CD and entry the newest).
    l_sid = -1
    l_pasid = 0
    l_priv = 0
    l_pn = 0
    l_slot = 0
    for i in range(start, stop):
        sid = np.int64(sids[i])
        pasid = np.int64(pasids[i])
        va = iovas[i]
        fl = flags[i]
        priv = 1 if fl & FLAG_PRIV else 0
        access = PERM_X if fl & FLAG_EXEC else PERM_W if fl & FLAG_WRITE else PERM_R
        pn = (va >> 12) & _PN_MASK
        if (
            sid == l_sid
            and pn == l_pn
            and pasid == l_pasid
            and priv == l_priv
            and not access & ~tl[l_slot, T_PERMS]
        ):
            out_pa[i] = tl[l_slot, T_PA] | (va & 0xFFF)
            out_outcome[i] = _O_OK
            trans += 1
            hits += 1
            continue
        l_sid = -1
        # IHI 0070 3.3.1 step 2: the STE, from the configuration cache.
        s = _ste_find(sc, sm, sid)
        if s < 0 or sc[s, S_KIND] == KIND_SCALAR:
            return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
        kind = sc[s, S_KIND]
        if kind != KIND_XLATE:
            # IHI 0070 5.2 STE.Config: abort terminates without an event; bypass passes the
            # address through, unless a SubstreamID comes with it (C_BAD_SUBSTREAMID).
            if kind == KIND_BYPASS and pasid >= 0:
                return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
            if sm[M_LRU]:
                _to_newest(sc, sm, s, S_PREV, S_NEXT)
            out_pa[i] = va if kind == KIND_BYPASS else 0
            out_outcome[i] = _O_BYPASS if kind == KIND_BYPASS else _O_ABORT
            trans += 1
            continue
        vmid = sc[s, S_VMID]
        f2 = sc[s, S_S2F]
        s2ttb = sc[s, S_S2TTB]
        # Steps 4-5: the CD a transaction uses (IHI 0070 5.2 S1CDMAX, S1DSS).
        d = -1
        if sc[s, S_S1]:
            cdmax = sc[s, S_CDMAX]
            ssid = pasid
            if pasid >= 0:
                if not cdmax or pasid >> cdmax:
                    return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
            elif cdmax and sc[s, S_DSS] != S1DSS_SSID0:
                return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
            else:
                ssid = 0
            d = _cd_find(dc, dm, sid, ssid)
            if d < 0 or not dc[d, D_OK]:
                return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
            tag = dc[d, D_TAG]
            kpriv = priv
        elif pasid < 0:
            tag = S2_ONLY
            kpriv = 0
        else:
            return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
        # Step 6: the TLB (IHI 0070 3.17 tagging); an ASID's miss may hit a global entry.
        t = -1
        if tm[M_COUNT]:
            t = _tlb_find(tl, th, vmid, tag, kpriv, pn)
            if t < 0 and d >= 0 and tag >= 0:
                t = _tlb_find(tl, th, vmid, GLOBAL, priv, pn)
        if t >= 0:
            if access & ~tl[t, T_PERMS]:
                return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
            if sm[M_LRU]:
                _to_newest(sc, sm, s, S_PREV, S_NEXT)
            if d >= 0 and dm[M_LRU]:
                _to_newest(dc, dm, d, D_PREV, D_NEXT)
            if tm[M_LRU]:
                _to_newest(tl, tm, t, T_PREV, T_NEXT)
            out_pa[i] = tl[t, T_PA] | (va & 0xFFF)
            out_outcome[i] = _O_OK
            trans += 1
            hits += 1
            l_sid = sid
            l_pasid = pasid
            l_priv = priv
            l_pn = pn
            l_slot = t
            continue
        # A TLB miss: the walks, reading only.
        jn[:] = 0
        k2 = -1
        out2 = 0
        perms2 = 0
        size2 = 0
        other = 0
        pte = 0
        if d < 0:
            st, out, size, perms, loads, page = _s2(
                fm, f2, pages, pk, pr, lp, _LP_S2_OUT, s2m, _S2M_OUT, s2ttb, va, access
            )
            if st != ST_OK:
                page_out[0] = page
                return _stop(c, trans, misses, accesses, hits, walks, i, st)
            ipa_pn = pn
        else:
            # DDI 0487 D8 "Translation table base and input address range": TTB1 for
            # address bit 55 = 1 (two ranges); the bits above the range equal bit 55.
            r = D_R1 if dc[d, D_TWO] and (va >> 55) & 1 else D_R0
            f = dc[d, r + R_F]
            bits = dc[d, r + R_BITS]
            if f < 0 or va >> bits != dc[d, r + R_WANT]:
                return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
            ia = va & ((1 << bits) - 1)
            ttb = dc[d, r + R_TTB]
            if ttb >> fm[f, F_OA_BITS]:
                return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
            root = ttb & fm[f, F_ROOT_MASK]
            if f2 >= 0:
                for k in range(len(wm)):
                    vm[k] = wm[k]
                st, out, size, pte, loads, page = _walk_nested(
                    fm, f, f2, s2ttb, vmid, pages, pk, pr, lp, s2m, wl, wh, wm, vm, wj, jn,
                    wmemo, root, ia,
                )  # fmt: skip
            else:
                st, out, size, pte, loads, page = _walk(fm, f, pages, pk, pr, lp, _LP_S1, root, ia)
            if st != ST_OK:
                page_out[0] = page
                return _stop(c, trans, misses, accesses, hits, walks, i, st)
            perms = _grants(fm, f, pte, priv)
            if perms < 0 or access & ~perms:
                return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
            ipa_pn = -1
            if f2 >= 0:
                # IHI 0070 3.4.2: stage 2 of the output, from the TLB's stage 2 entry or
                # walked (and then cached as one).
                ipa_pn = out >> 12
                k2 = _tlb_find(tl, th, vmid, S2_ONLY, 0, ipa_pn) if tm[M_COUNT] else -1
                if k2 >= 0 and not access & ~tl[k2, T_PERMS]:
                    out2 = tl[k2, T_PA] | (out & 0xFFF)
                    perms2 = tl[k2, T_PERMS]
                    size2 = tl[k2, T_SIZE]
                else:
                    k2 = -1
                    st, out2, size2, perms2, loads2, page = _s2(
                        fm, f2, pages, pk, pr, lp, _LP_S2_OUT, s2m, _S2M_OUT, s2ttb, out, access
                    )
                    if st != ST_OK:
                        page_out[0] = page
                        return _stop(c, trans, misses, accesses, hits, walks, i, st)
                    jn[J_LOADS] += loads2
                out = out2
                perms &= perms2
                size = min(size, size2)
            # DDI 0487 D8 "Global and process-specific translation table entries": nG = 0
            # matches every ASID. An ASID-tagged and a global entry for one page is a TLB
            # conflict (IHI 0070 7.3 F_TLB_CONFLICT): the scalar model's.
            asid = dc[d, D_ASID]
            if asid >= 0 and pte & fm[f, F_NG]:
                tag, other = asid, GLOBAL
            else:
                tag, other = GLOBAL, asid
            if tm[M_COUNT] and asid >= 0 and _tlb_find(tl, th, vmid, other, priv, pn) >= 0:
                return _stop(c, trans, misses, accesses, hits, walks, i, ST_SCALAR)
        # The row translates: commit its cache updates in the scalar model's order.
        if sm[M_LRU]:
            _to_newest(sc, sm, s, S_PREV, S_NEXT)
        if d >= 0:
            if dm[M_LRU]:
                _to_newest(dc, dm, d, D_PREV, D_NEXT)
            if f2 >= 0:
                _commit_walk_cache(wl, wh, wm, wj, jn, wmemo, vmid)
                if k2 >= 0:
                    if tm[M_LRU]:
                        _to_newest(tl, tm, k2, T_PREV, T_NEXT)
                else:
                    _insert(
                        tl, th, tm, vmid, S2_ONLY, 0, ipa_pn, out2 & ~0xFFF, perms2, size2,
                        ipa_pn,
                    )  # fmt: skip
            _insert(tl, th, tm, vmid, tag, priv, pn, out & ~0xFFF, perms, size, ipa_pn)
        else:
            _insert(tl, th, tm, vmid, S2_ONLY, 0, pn, out & ~0xFFF, perms, size, ipa_pn)
        out_pa[i] = out
        out_outcome[i] = _O_OK
        trans += 1
        misses += 1
        accesses += loads + jn[J_LOADS]
        walks += 1
    return _stop(c, trans, misses, accesses, hits, walks, stop, ST_OK)
