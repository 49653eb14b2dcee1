"""The compiled kernels of the RISC-V batch engine (numba ``@njit`` over int64 arrays).

:func:`replay` translates trace rows until it meets one it cannot answer exactly: it returns
that row's index and why it stopped (:data:`ST_SCALAR`: the scalar model must run it; or
:data:`ST_PAGE`: a table page the snapshot does not hold yet). A stopped row has changed no
state, so the scalar model starts from exactly the state the row found.

State lives in 2-D int64 arrays, one row per cache entry, with the ``*_PREV`` / ``*_NEXT``
columns linking the entries from the oldest (``M_HEAD``) to the newest (``M_TAIL``): the order
of the scalar model's ``OrderedDict`` caches (riscv-iommu: "Caching in-memory data
structures"; LRU moves an entry to the newest end on a hit, FIFO only on a fill; random
replacement evicts the slot its generator picks). The IOTLB is
also indexed by an open-addressing hash table (linear probing, backward-shift deletion).

Walks follow :meth:`iommusim.hw.pgtable.Walker.walk` for the 8-byte RISC-V formats
(riscv-iommu: "Process to translate an IOVA" steps 17-20, privileged spec "Virtual Address
Translation Process") with masks taken from the format descriptors (:data:`FMT_COLUMNS`);
every malformed entry, permission denial or missing A/D bit stops at :data:`ST_SCALAR`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from iommusim.hw.common.cache import LCG_INC, LCG_MUL

__all__ = [
    "C_EV1",
    "C_EV4",
    "C_EV7",
    "C_EV8",
    "C_HITS",
    "C_WALKS",
    "D_COLUMNS",
    "FMT_COLUMNS",
    "K_COLUMNS",
    "K_SP_SHIFTS",
    "M_COUNT",
    "M_HEAD",
    "M_LRU",
    "M_RANDOM",
    "M_RNG",
    "M_TAIL",
    "P_COLUMNS",
    "ST_OK",
    "ST_PAGE",
    "ST_SCALAR",
    "T_COLUMNS",
    "order",
    "page_find",
    "replay",
    "scratch",
    "tlb_index",
]

_F = TypeVar("_F", bound=Callable[..., object])
_I64 = npt.NDArray[np.int64]


def _jit(fn: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


def _nrt_option() -> dict[str, bool]:
    """``{"_nrt": False}`` where numba offers that (private) target option, else nothing: a
    numba without it compiles the same kernels with its runtime -- slower, as exact."""
    try:
        from numba.core.cpu import CPUTargetOptions
    except ImportError:
        return {}
    return {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}


_NRT_OFF: Final = _nrt_option()


def _kernel(fn: _F) -> _F:
    """:func:`_jit` without numba's runtime (NRT) where numba offers that
    (:func:`_nrt_option`), so without reference counts: numba counts a reference for every
    variable naming an array and its pruning pass leaves the counts split across branches
    (numba issue 2350) -- an atomic increment and decrement per array per inlined helper.
    A kernel so compiled allocates nothing: its scratch comes from the engine."""
    return cast(_F, numba.njit(cache=True, nogil=True, **_NRT_OFF)(fn))


def _jit_inline(fn: _F) -> _F:
    """A kernel helper inlined into its callers at numba-IR level (the walk helpers: their
    tuple returns otherwise cost a call each; the Sv39 walk runs ~25 % faster)."""
    return cast(_F, numba.njit(cache=True, nogil=True, inline="always")(fn))


ST_OK: Final = 0
ST_SCALAR: Final = 1
ST_PAGE: Final = 2

# Cache metadata (int64[7]): oldest entry, newest entry, entries in use, capacity, LRU,
# random (neither: FIFO) and the random policy's generator state
# (:func:`iommusim.hw.common.cache.lcg_victim`). Under random replacement the slots are the
# scalar cache's ``slots``: a fill of a full cache replaces the victim's slot in place.
M_HEAD: Final = 0
M_TAIL: Final = 1
M_COUNT: Final = 2
M_CAP: Final = 3
M_LRU: Final = 4
M_RANDOM: Final = 5
M_RNG: Final = 6

#: IOTLB columns: the key (device_id, process_id or -1, privileged, vpn), the entry
#: (:class:`~iommusim.hw.riscv.iotlb.IotlbEntry`), FRESH (filled by the engine) and the links.
T_COLUMNS: Final = (
    "did", "pid", "priv", "vpn", "gscid", "pscid", "glob", "pa", "ok", "pbmt", "size", "fresh",
    "prev", "next",
)  # fmt: skip
T_DID, T_PID, T_PRIV, T_VPN, T_GSCID, T_PSCID, T_GLOB, T_PA, T_OK, T_PBMT, T_SIZE = range(11)
T_FRESH, T_PREV, T_NEXT = 11, 12, 13
#: Device-context cache columns: the fields of a cached DC the walk reads.
D_COLUMNS: Final = (
    "did", "tc", "fsc_mode", "fsc_ppn", "g_mode", "g_ppn", "gscid", "pscid", "msiptp_mode",
    "msi_mask", "msi_pattern", "prev", "next",
)  # fmt: skip
D_DID, D_TC, D_FSC_MODE, D_FSC_PPN, D_G_MODE, D_G_PPN, D_GSCID, D_PSCID = range(8)
D_MSI_MODE, D_MSI_MASK, D_MSI_PATTERN, D_PREV, D_NEXT = range(8, 13)
#: Process-context cache columns.
P_COLUMNS: Final = ("did", "pid", "ens", "sum", "mode", "ppn", "pscid", "prev", "next")
P_DID, P_PID, P_ENS, P_SUM, P_MODE, P_PPN, P_PSCID, P_PREV, P_NEXT = range(9)

#: Per-format constants (one row per format, see :func:`iommusim.perf.engine.riscv`).
FMT_COLUMNS: Final = (
    "levels", "va_bits", "tmask", "tval", "lmask", "lval", "nonleaf_bad", "rw",
    "w_only", "rsvd", "mt_mask", "mt_shift", "mt_rsvd", "napot", "super", "gmask", "oa_shift",
    "oa_width", "ps", "shift0", "shift1", "shift2", "shift3", "shift4", "imask0", "imask1",
    "imask2", "imask3", "imask4",
)  # fmt: skip
F_LEVELS, F_VA_BITS, F_TMASK, F_TVAL, F_LMASK, F_LVAL, F_NONLEAF_BAD, F_RW = range(8)
F_WONLY, F_RSVD, F_MT_MASK, F_MT_SHIFT, F_MT_RSVD, F_NAPOT, F_SUPER, F_GMASK = range(8, 16)
F_OA_SHIFT, F_OA_WIDTH, F_PS, F_SHIFT, F_IMASK = 16, 17, 18, 19, 24

#: Scalar constants of a replay (int64 array ``k``).
K_COLUMNS: Final = (
    "did_wide", "bare_s1", "bare_g", "r", "w", "x", "u", "a", "d", "tc_pdtv", "tc_dpe",
    "tc_sbe", "tc_sxl", "sp_shifts",
)  # fmt: skip
K_DID_WIDE, K_BARE_S1, K_BARE_G, K_R, K_W, K_X, K_U, K_A, K_D = range(9)
K_TC_PDTV, K_TC_DPE, K_TC_SBE, K_TC_SXL = range(9, 13)
#: A superpage-entry IOTLB's probes (:func:`iommusim.hw.riscv.iotlb.superpage_shifts`), one
#: bit per shift of the page number; 0: an IOTLB of 4 KiB entries.
K_SP_SHIFTS: Final = 13

#: Counts (int64 array ``c``): HPM events 1, 4, 7 and 8 (riscv-iommu: "Standard Events
#: list"), then IOTLB hits and walks done by the engine.
C_EV1, C_EV4, C_EV7, C_EV8, C_HITS, C_WALKS = range(6)

_VPN_MASK: Final = (1 << 52) - 1
# riscv-iommu: "Process-context": process_id bits of pdtp.MODE PD8, PD17, PD20.
_PD_BITS: Final = (0, 8, 17, 20)


# ---------------------------------------------------------------------------- lists
@_jit_inline
def _unlink(a, m, s, cp, cn):
    p = a[s, cp]
    n = a[s, cn]
    if p >= 0:
        a[p, cn] = n
    else:
        m[M_HEAD] = n
    if n >= 0:
        a[n, cp] = p
    else:
        m[M_TAIL] = p


@_jit_inline
def _append(a, m, s, cp, cn):
    t = m[M_TAIL]
    a[s, cp] = t
    a[s, cn] = -1
    if t >= 0:
        a[t, cn] = s
    else:
        m[M_HEAD] = s
    m[M_TAIL] = s


@_jit_inline
def _random_victim(m):
    """The slot the random policy evicts (:func:`iommusim.hw.common.cache.lcg_victim` in
    int64 arithmetic: the product wraps modulo 2**64 like the masked Python one)."""
    x = m[M_RNG] * LCG_MUL + LCG_INC
    m[M_RNG] = x
    return (((x >> 33) & 0x7FFFFFFF) * m[M_COUNT]) >> 31


@_jit_inline
def _to_newest(a, m, s, cp, cn):
    if m[M_TAIL] != s:
        _unlink(a, m, s, cp, cn)
        _append(a, m, s, cp, cn)


# ---------------------------------------------------------------------------- IOTLB hash
@_jit_inline
def _home(did, pid, priv, vpn, mask):
    x = vpn * -7046029254386353131 + did * 0x27D4EB2F165667C5 + (pid + 1) * 0x165667B1 + priv
    x ^= x >> 31
    x *= -4658895280553007687
    return (x >> 29) & mask


@_jit_inline
def _tlb_find(tl, th, did, pid, priv, vpn):
    mask = len(th) - 1
    h = _home(did, pid, priv, vpn, mask)
    while True:
        s = th[h]
        if s < 0:
            return -1
        if (
            tl[s, T_VPN] == vpn
            and tl[s, T_DID] == did
            and tl[s, T_PID] == pid
            and tl[s, T_PRIV] == priv
        ):
            return s
        h = (h + 1) & mask


@_jit_inline
def _tlb_find_super(tl, th, did, pid, priv, vpn, shifts):
    """The superpage entry whose range holds page ``vpn``: the page number rounded down to
    each range size in ``shifts`` (smallest first), the entry's size confirming it -- the
    probes of :meth:`iommusim.hw.riscv.translate.TranslationEngine.superpage_lookup`."""
    sh = 1
    while shifts >> sh:
        if (shifts >> sh) & 1:
            s = _tlb_find(tl, th, did, pid, priv, (vpn >> sh) << sh)
            if s >= 0 and tl[s, T_SIZE] - 12 == sh:
                return s
        sh += 1
    return -1


@_jit_inline
def _tlb_hash_insert(tl, th, s):
    mask = len(th) - 1
    h = _home(tl[s, T_DID], tl[s, T_PID], tl[s, T_PRIV], tl[s, T_VPN], mask)
    while th[h] >= 0:
        h = (h + 1) & mask
    th[h] = s


@_jit_inline
def _tlb_hash_remove(tl, th, s):
    mask = len(th) - 1
    i = _home(tl[s, T_DID], tl[s, T_PID], tl[s, T_PRIV], tl[s, T_VPN], mask)
    while th[i] != s:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        e = th[j]
        if e < 0:
            break
        k = _home(tl[e, T_DID], tl[e, T_PID], tl[e, T_PRIV], tl[e, T_VPN], mask)
        # Leave e where it is when its home lies cyclically in (i, j].
        if (i <= j and i < k <= j) or (i > j and (k > i or k <= j)):
            continue
        th[i] = e
        i = j
    th[i] = -1


@_jit_inline
def _free_slot(tl, th, tm, cp, cn):
    """The slot a new IOTLB-shaped entry takes (``BoundedCache.insert``): a free one, else
    the victim's -- the oldest, or random's pick -- taken out of the hash and the list."""
    if tm[M_COUNT] < tm[M_CAP]:
        s = tm[M_COUNT]
        tm[M_COUNT] += 1
        return s
    s = _random_victim(tm) if tm[M_RANDOM] else tm[M_HEAD]
    _tlb_hash_remove(tl, th, s)
    _unlink(tl, tm, s, cp, cn)
    return s


@_jit
def tlb_index(tl: _I64, th: _I64, n: int) -> None:
    """Index IOTLB entries ``0..n-1`` in the (empty) hash table ``th``."""
    for s in range(n):
        _tlb_hash_insert(tl, th, s)


@_jit
def order(a: _I64, m: _I64, cn: int) -> _I64:
    """The slots of a cache from its oldest entry to its newest."""
    out = np.empty(m[M_COUNT], np.int64)
    s = m[M_HEAD]
    j = 0
    while s >= 0:
        out[j] = s
        j += 1
        s = a[s, cn]
    return out


# ---------------------------------------------------------------------------- memory
@_jit_inline
def page_find(pk: _I64, pn: int) -> int:
    """The hash position of page ``pn`` in ``pk``, or of the empty slot where it goes."""
    mask = len(pk) - 1
    h = (pn * -7046029254386353131 >> 25) & mask
    while pk[h] != pn and pk[h] >= 0:
        h = (h + 1) & mask
    return h


@_jit_inline
def _row(pk, pr, lp, at, pn):
    """The snapshot row of page ``pn``, or -1: the hash table behind a one-entry memo per
    walk level (``lp[at]``: page, row), valid within one kernel call."""
    if lp[at, 0] == pn:
        return lp[at, 1]
    h = page_find(pk, pn)
    if pk[h] < 0:
        return -1
    lp[at, 0] = pn
    lp[at, 1] = pr[h]
    return pr[h]


# ---------------------------------------------------------------------------- walks
@_jit_inline
def _leaf(fmts, f, pte, i, va):
    """The output address and page size of leaf ``pte`` at level ``i``, or size 0 when the
    leaf is one the scalar walk must judge (malformed, reserved memory type, NAPOT,
    misaligned superpage)."""
    if (
        (pte & fmts[f, F_LMASK]) != fmts[f, F_LVAL]
        or (pte & fmts[f, F_RW]) == fmts[f, F_WONLY]
        or pte & fmts[f, F_RSVD]
    ):
        return 0, 0
    mt = (pte & fmts[f, F_MT_MASK]) >> fmts[f, F_MT_SHIFT]
    if mt and (fmts[f, F_MT_RSVD] >> mt) & 1:
        return 0, 0
    if pte & fmts[f, F_NAPOT]:
        return 0, 0
    ps = fmts[f, F_PS]
    ppn = (pte >> fmts[f, F_OA_SHIFT]) & fmts[f, F_OA_WIDTH]
    size = fmts[f, F_SHIFT + i]
    if fmts[f, F_SUPER] and ppn & ((1 << (size - ps)) - 1):
        return 0, 0
    mask = (1 << size) - 1
    return ((ppn << ps) & ~mask) | (va & mask), size


@_jit_inline
def _walk(fmts, f, pages, pk, pr, lp, at, root, va):
    """Walk ``va`` from ``root``: ``(status, out, size, pte, g, loads, page)``; ``lp[at +
    level]`` memoise the page lookups."""
    i = fmts[f, F_LEVELS] - 1
    a = root
    g = 0
    loads = 0
    while True:
        pa = a + ((va >> fmts[f, F_SHIFT + i]) & fmts[f, F_IMASK + i]) * 8
        row = _row(pk, pr, lp, at + i, pa >> 12)
        if row < 0:
            return ST_PAGE, 0, 0, 0, 0, loads, pa >> 12
        pte = pages[row, (pa & 0xFFF) >> 3]
        loads += 1
        if (pte & fmts[f, F_TMASK]) == fmts[f, F_TVAL]:
            if pte & fmts[f, F_NONLEAF_BAD]:
                return ST_SCALAR, 0, 0, 0, 0, loads, 0
            g |= pte & fmts[f, F_GMASK]
            i -= 1
            if i < 0:
                return ST_SCALAR, 0, 0, 0, 0, loads, 0
            a = ((pte >> fmts[f, F_OA_SHIFT]) & fmts[f, F_OA_WIDTH]) << fmts[f, F_PS]
            continue
        out, size = _leaf(fmts, f, pte, i, va)
        if size == 0:
            return ST_SCALAR, 0, 0, 0, 0, loads, 0
        return ST_OK, out, size, pte, g | (pte & fmts[f, F_GMASK]), loads, 0


@_jit_inline
def _g_implicit(fmts, gf, k, pages, pk, pr, lp, groot, gpa):
    """The G-stage translation of an implicit read of a first-stage PTE at ``gpa``
    (riscv-iommu: "Process to translate an IOVA": implicit accesses need U and R, and A)."""
    if gpa >> fmts[gf, F_VA_BITS]:
        return ST_SCALAR, 0, 0, 0
    st, spa, _, pte, _, loads, page = _walk(fmts, gf, pages, pk, pr, lp, 10, groot, gpa)
    if st != ST_OK:
        return st, 0, loads, page
    if not pte & k[K_U] or not pte & k[K_R] or not pte & k[K_A]:
        return ST_SCALAR, 0, loads, 0
    return ST_OK, spa, loads, 0


@_jit_inline
def _walk_nested(fmts, f, gf, k, pages, pk, pr, lp, root, groot, va, memo):
    """:func:`_walk` with every PTE address a GPA translated by the G-stage:
    ``(status, out, size, pte, g, loads, gloads, page)``.

    ``memo`` (rows: GPA page, SPA page, G-stage loads) remembers the G-stage walks of table
    pages within one kernel call, while the snapshot cannot change: the loads are still
    counted, the hardware still makes them, only the simulator does not repeat them."""
    i = fmts[f, F_LEVELS] - 1
    a = root
    g = 0
    loads = 0
    gloads = 0
    mmask = len(memo) - 1
    while True:
        addr = a + ((va >> fmts[f, F_SHIFT + i]) & fmts[f, F_IMASK + i]) * 8
        gpn = addr >> 12
        m = (gpn ^ (gpn >> 9)) & mmask
        if memo[m, 0] == gpn:
            pa = (memo[m, 1] << 12) | (addr & 0xFFF)
            gloads += memo[m, 2]
        else:
            st, pa, gl, page = _g_implicit(fmts, gf, k, pages, pk, pr, lp, groot, addr)
            gloads += gl
            if st != ST_OK:
                return st, 0, 0, 0, 0, loads, gloads, page
            memo[m, 0] = gpn
            memo[m, 1] = pa >> 12
            memo[m, 2] = gl
        row = _row(pk, pr, lp, i, pa >> 12)
        if row < 0:
            return ST_PAGE, 0, 0, 0, 0, loads, gloads, pa >> 12
        pte = pages[row, (pa & 0xFFF) >> 3]
        loads += 1
        if (pte & fmts[f, F_TMASK]) == fmts[f, F_TVAL]:
            if pte & fmts[f, F_NONLEAF_BAD]:
                return ST_SCALAR, 0, 0, 0, 0, loads, gloads, 0
            g |= pte & fmts[f, F_GMASK]
            i -= 1
            if i < 0:
                return ST_SCALAR, 0, 0, 0, 0, loads, gloads, 0
            a = ((pte >> fmts[f, F_OA_SHIFT]) & fmts[f, F_OA_WIDTH]) << fmts[f, F_PS]
            continue
        out, size = _leaf(fmts, f, pte, i, va)
        if size == 0:
            return ST_SCALAR, 0, 0, 0, 0, loads, gloads, 0
        return ST_OK, out, size, pte, g | (pte & fmts[f, F_GMASK]), loads, gloads, 0


@_jit_inline
def _leaf_ok(k, pte, write, priv, sum_):
    """Whether leaf ``pte`` grants an untranslated read or write with no A/D update
    (riscv-iommu: "Process to translate an IOVA" step 19; "IOMMU updating of PTE accessed
    (A) and dirty (D) updates": an update, or its fault, is the scalar model's)."""
    if priv:
        if pte & k[K_U] and not sum_:
            return False
    elif not pte & k[K_U]:
        return False
    need = k[K_W] if write else k[K_R]
    if not pte & need or not pte & k[K_A]:
        return False
    return not (write and not pte & k[K_D])


@_jit_inline
def _granted(k, pte):
    """R/W/X a leaf grants for the IOTLB: W only once the page is dirty."""
    perms = pte & (k[K_R] | k[K_W] | k[K_X])
    if not pte & k[K_D]:
        perms &= ~k[K_W]
    return perms


# ---------------------------------------------------------------------------- replay
@_jit_inline
def _add_counts(c, ev1, ev4, ev7, ev8, hits, walks):
    c[C_EV1] += ev1
    c[C_EV4] += ev4
    c[C_EV7] += ev7
    c[C_EV8] += ev8
    c[C_HITS] += hits
    c[C_WALKS] += walks


@_jit_inline
def _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, st):
    _add_counts(c, ev1, ev4, ev7, ev8, hits, walks)
    return i, st


def scratch() -> tuple[_I64, _I64]:
    """The replay kernel's scratch arrays (``memo``, ``lp``), allocated once by the engine:
    the kernel allocates nothing."""
    return np.full((256, 3), -1, np.int64), np.full((15, 2), -1, np.int64)


@_kernel
def replay(
    dids: npt.NDArray[np.uint32], pasids: npt.NDArray[np.int32], iovas: _I64,
    flags: npt.NDArray[np.uint8], start: int, stop: int, out_pa: _I64,
    out_pbmt: npt.NDArray[np.uint8], k: _I64, fmts: _I64, tl: _I64, th: _I64, tm: _I64,
    dc: _I64, dm: _I64, pc: _I64, pm: _I64, pages: _I64, pk: _I64, pr: _I64, c: _I64,
    page_out: _I64, memo: _I64, lp: _I64,
) -> tuple[int, int]:  # fmt: skip
    """Translate rows ``start..stop-1``; returns ``(row, status)`` of the row it stopped at
    (``(stop, ST_OK)`` when all were done). ``page_out[0]`` names a missing page."""
    all_perms = k[K_R] | k[K_W] | k[K_X]
    tcap = tm[M_CAP]
    sp = k[K_SP_SHIFTS]
    # The memos hold only what this call read (the snapshot may change between calls).
    for r in range(memo.shape[0]):
        memo[r, 0] = -1
        memo[r, 1] = -1
        memo[r, 2] = -1
    for r in range(lp.shape[0]):
        lp[r, 0] = -1
        lp[r, 1] = -1
    # Page-lookup memos: first-stage levels at 0.., G-stage walks of the request's GPA at 5..,
    # implicit G-stage walks at 10.. (each level keeps its own page).
    ev1 = 0
    ev4 = 0
    ev7 = 0
    ev8 = 0
    hits = 0
    walks = 0
    # The last hit: a row with the same key hits the same entry (nothing was evicted since).
    l_did = -1
    l_pid = 0
    l_priv = 0
    l_vpn = 0
    l_slot = -1
    for i in range(start, stop):
        did = np.int64(dids[i])
        pasid = np.int64(pasids[i])
        iova = iovas[i]
        fl = flags[i]
        # Execute requests are never cached (and their rules are many); out-of-range IDs are
        # the bus's to truncate: the scalar model's.
        if fl & 4 or did >> 24 or pasid >= 1 << 20 or pasid < -1:
            return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
        write = (fl & 2) != 0
        pv = pasid >= 0
        priv = 1 if pv and fl & 8 else 0
        pid_key = pasid if pv else -1
        vpn = (iova >> 12) & _VPN_MASK
        hit = -1
        if tcap:
            if vpn == l_vpn and did == l_did and pid_key == l_pid and priv == l_priv:
                hit = l_slot
            else:
                hit = _tlb_find(tl, th, did, pid_key, priv, vpn)
                if hit < 0 and sp:
                    hit = _tlb_find_super(tl, th, did, pid_key, priv, vpn, sp)
            if hit >= 0 and tl[hit, T_OK] & (2 if write else 1):
                if tm[M_LRU]:
                    _to_newest(tl, tm, hit, T_PREV, T_NEXT)
                # A superpage entry's output is its range base (the page's own otherwise).
                off = ((1 << tl[hit, T_SIZE]) - 1) if sp else 0xFFF
                out_pa[i] = tl[hit, T_PA] | (iova & off)
                out_pbmt[i] = tl[hit, T_PBMT]
                ev1 += 1
                hits += 1
                l_did = did
                l_pid = pid_key
                l_priv = priv
                l_vpn = vpn
                l_slot = hit
                continue
        # riscv-iommu: "Process to translate an IOVA" step 5: a device_id wider than the mode.
        if did & k[K_DID_WIDE]:
            return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
        d = dm[M_TAIL]
        while d >= 0 and dc[d, D_DID] != did:
            d = dc[d, D_PREV]
        if d < 0:
            return _stop(
                c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR
            )  # a DDT walk: the scalar model's
        tc = dc[d, D_TC]
        if tc & (k[K_TC_SBE] | k[K_TC_SXL]):
            return _stop(
                c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR
            )  # big-endian tables, Sv32
        fsc_mode = dc[d, D_FSC_MODE]
        pdtv = tc & k[K_TC_PDTV]
        # Steps 7-16: which first stage applies (TranslationEngine.locate).
        if pdtv and fsc_mode > 3:
            return _stop(
                c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR
            )  # not a pdtp.MODE (a DC cached under other capabilities)
        if pv and (not pdtv or (fsc_mode and pasid >> _PD_BITS[fsc_mode])):
            return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
        p = -1
        sum_ = False
        s1mode = 0
        s1ppn = 0
        pscid = 0
        if not pdtv:
            s1mode = fsc_mode
            s1ppn = dc[d, D_FSC_PPN]
            pscid = dc[d, D_PSCID]
        elif (pv or tc & k[K_TC_DPE]) and fsc_mode:
            pid = pasid if pv else 0
            p = pm[M_TAIL]
            while p >= 0 and (pc[p, P_DID] != did or pc[p, P_PID] != pid):
                p = pc[p, P_PREV]
            if p < 0 or (priv and not pc[p, P_ENS]):
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
            s1mode = pc[p, P_MODE]
            s1ppn = pc[p, P_PPN]
            pscid = pc[p, P_PSCID]
            sum_ = pc[p, P_SUM] != 0
        g_mode = dc[d, D_G_MODE]
        groot = dc[d, D_G_PPN] << 12
        if g_mode and not 8 <= g_mode <= 10:
            return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
        s1loads = 0
        gloads = 0
        g = 0
        if s1mode:
            if not 8 <= s1mode <= 10:
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
            f = s1mode - 8
            top = iova >> (fmts[f, F_VA_BITS] - 1)
            if top not in (0, -1):
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
            if g_mode:
                st, gpa, s1size, pte, g, s1loads, gloads, page = _walk_nested(
                    fmts, f, g_mode - 5, k, pages, pk, pr, lp, s1ppn << 12, groot, iova, memo
                )
            else:
                st, gpa, s1size, pte, g, s1loads, page = _walk(
                    fmts, f, pages, pk, pr, lp, 0, s1ppn << 12, iova
                )
            if st != ST_OK:
                page_out[0] = page
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, st)
            if not _leaf_ok(k, pte, write, priv, sum_):
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
            s1perms = _granted(k, pte)
            s1pbmt = (pte & fmts[f, F_MT_MASK]) >> fmts[f, F_MT_SHIFT]
        else:
            gpa = iova
            s1size = k[K_BARE_S1]
            s1perms = all_perms
            s1pbmt = 0
        # riscv-iommu: "MSI address mask and pattern": an MSI is the scalar model's.
        if dc[d, D_MSI_MODE]:
            nm = ~dc[d, D_MSI_MASK]
            if ((gpa >> 12) & nm) == (dc[d, D_MSI_PATTERN] & nm):
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
        if g_mode:
            gf = g_mode - 5
            if gpa >> fmts[gf, F_VA_BITS]:
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
            st, spa, gsize, gpte, _, gl, page = _walk(fmts, gf, pages, pk, pr, lp, 5, groot, gpa)
            gloads += gl
            if st != ST_OK:
                page_out[0] = page
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, st)
            # G-stage accesses are user accesses (priv = 0).
            if not _leaf_ok(k, gpte, write, 0, False):
                return _stop(c, ev1, ev4, ev7, ev8, hits, walks, i, ST_SCALAR)
            gperms = _granted(k, gpte)
            gpbmt = (gpte & fmts[gf, F_MT_MASK]) >> fmts[gf, F_MT_SHIFT]
        else:
            spa = gpa
            gsize = k[K_BARE_G]
            gperms = all_perms
            gpbmt = 0
        # The row translates: commit its cache updates, as the scalar model makes them.
        if tm[M_LRU] | dm[M_LRU]:
            if dm[M_LRU]:
                _to_newest(dc, dm, d, D_PREV, D_NEXT)
            if p >= 0 and pm[M_LRU]:
                _to_newest(pc, pm, p, P_PREV, P_NEXT)
        pbmt = s1pbmt if s1pbmt else gpbmt
        if tcap:
            # IOTLB fill (riscv-iommu: "Caching in-memory data structures"): a fill of a
            # present key replaces it and makes it the newest, in LRU and FIFO alike.
            size = s1size if s1size < gsize else gsize
            cover = size
            key_vpn = vpn
            base = spa & ~0xFFF
            if sp:
                # One entry for the whole range, but a single page for a device whose MSIs
                # are translated (the scalar fill's rule: no entry spans an MSI page).
                cover = 12 if dc[d, D_MSI_MODE] else size
                key_vpn = (vpn >> (cover - 12)) << (cover - 12)
                base = spa & ~((1 << cover) - 1)
                s = _tlb_find(tl, th, did, pid_key, priv, key_vpn)
            else:
                s = hit
            if s < 0:
                s = _free_slot(tl, th, tm, T_PREV, T_NEXT)
                tl[s, T_DID] = did
                tl[s, T_PID] = pid_key
                tl[s, T_PRIV] = priv
                tl[s, T_VPN] = key_vpn
                _tlb_hash_insert(tl, th, s)
                _append(tl, tm, s, T_PREV, T_NEXT)
            else:
                _to_newest(tl, tm, s, T_PREV, T_NEXT)
            tl[s, T_GSCID] = dc[d, D_GSCID] if g_mode else -1
            tl[s, T_PSCID] = pscid if s1mode else -1
            tl[s, T_GLOB] = 1 if g else 0
            tl[s, T_PA] = base
            tl[s, T_OK] = ((s1perms & gperms) >> 1) & 3
            tl[s, T_PBMT] = pbmt
            tl[s, T_SIZE] = cover
            tl[s, T_FRESH] = 1
            l_did = -1  # the fill may have evicted the last hit's entry
        out_pa[i] = spa
        out_pbmt[i] = pbmt
        ev1 += 1
        ev4 += 1
        ev7 += s1loads
        ev8 += gloads
        walks += 1
    _add_counts(c, ev1, ev4, ev7, ev8, hits, walks)
    return stop, ST_OK
