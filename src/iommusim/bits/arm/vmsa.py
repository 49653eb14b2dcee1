"""VMSAv8-64 translation-table descriptors and formats (Arm DDI 0487 chapter D8), as
:class:`~iommusim.bits.pgformat.PtFormat` instances for the shared walker
(:mod:`iommusim.hw.pgtable`).

One descriptor layout per stage and granule (DDI 0487 D8 "Translation table descriptor
formats"): bits[1:0] give the type -- 0b11 a table descriptor above the last level and a page
descriptor at level 3, 0b01 a block descriptor at a level that allows blocks, 0b00 / 0b10
invalid (D8 "Table descriptor", "Invalid descriptor"). Blocks are allowed at levels 1 and 2
with the 4KB granule and at level 2 with the 16KB and 64KB granules (D8 "Block descriptor",
48-bit output addresses; the 52-bit forms -- FEAT_LPA / FEAT_LPA2 -- are not described here).
The output address is bits[47:n] for a 2^n-byte granule; block descriptors ignore the bits
below the block size.

Permissions are negative and decoded through the format's ``perm_table`` (D8 "Memory access
control"): stage 1 AP[2:1], UXN and PXN -- with a location writable at EL0 never executable
when privileged (D8 "Instruction access permissions"); stage 2 S2AP and XN (D8 "Stage 2
access permissions"). The Access Flag is AF (D8 "The Access flag"), dirty state is AP[2] = 0
(stage 1) or S2AP[1] = 1 (stage 2) with DBM marking a writable-clean entry (D8 "Hardware
management of dirty state"); the
Contiguous bit is a hint (D8 "The Contiguous bit") and never changes a result.

Geometry (D8 "Translation table walk"): a 2^n-byte granule resolves n - 3 input bits
per level, the last level is always 3; stage 1's start level follows from the input size
64 - T0SZ; stage 2's from SL0, the start table concatenated up to 16 times when the input size
needs it (D8 "Concatenated translation tables").
"""

from __future__ import annotations

from functools import cache
from typing import Final, Literal

from iommusim.bits.fields import Access, Layout, layout
from iommusim.bits.pgformat import PERM_R, PERM_W, PERM_X, PtFormat

__all__ = [
    "GRANULES",
    "S1_DESC",
    "S2_DESC",
    "Granule",
    "stage1_format",
    "stage2_format",
    "t0sz_range",
]

#: A translation granule, by its size in KB.
Granule = Literal[4, 16, 64]
#: log2 of each granule's size in bytes.
GRANULES: Final[dict[int, int]] = {4: 12, 16: 14, 64: 16}

_C = Access.CUSTOM
#: Output addresses are at most 48 bits wide in these descriptors (without FEAT_LPA/LPA2).
_OA_TOP: Final = 48


def _desc(stage: Literal[1, 2], granule: int) -> Layout:
    """The block / page / table descriptor of ``stage`` for a 2^granule-byte granule (DDI
    0487 D8 "Table descriptor", D8 "Block descriptor and Page descriptor"). Bits the
    walk ignores are CUSTOM: software-use bits, RES0 bits (not checked), PBHA and -- in a
    table descriptor -- the hierarchical NSTable / APTable / XNTable / PXNTable bits[63:59]."""
    lower: tuple[tuple[str, int, int] | tuple[str, int, int, Access], ...]
    upper: tuple[tuple[str, int, int] | tuple[str, int, int, Access], ...]
    if stage == 1:
        lower = (
            ("attrindx", 2, 3),
            ("ns", 5, 1),
            ("ap1", 6, 1),  # AP[1]: EL0 access
            ("ap2", 7, 1),  # AP[2]: read-only
            ("sh", 8, 2),
            ("af", 10, 1),
            ("ng", 11, 1),
        )
        upper = (("gp", 50, 1), ("dbm", 51, 1), ("contig", 52, 1), ("pxn", 53, 1), ("uxn", 54, 1))
    else:
        lower = (
            ("memattr", 2, 4),
            ("s2ap_r", 6, 1),  # S2AP[0]: read
            ("s2ap_w", 7, 1),  # S2AP[1]: write
            ("sh", 8, 2),
            ("af", 10, 1),
            ("fnxs", 11, 1, _C),
        )
        upper = (
            ("res0_50", 50, 1, _C),
            ("dbm", 51, 1),
            ("contig", 52, 1),
            ("xn0", 53, 1, _C),  # XN[0]: ignored (RES0) without FEAT_XNX
            ("xn", 54, 1),
        )
    res0_lo = (("res0_lo", 12, granule - 12, _C),) if granule > 12 else ()
    return layout(
        f"vmsa_s{stage}_desc_{1 << (granule - 10)}k",
        64,
        f"DDI 0487 D8: VMSAv8-64 stage {stage} descriptor, {1 << (granule - 10)}KB granule",
        ("valid", 0, 1),
        ("table", 1, 1),  # bit[1]: table (levels 0-2) or page (level 3); 0 = block
        *lower,
        *res0_lo,
        ("oa", granule, _OA_TOP - granule),
        ("res0_hi", 48, 2, _C),
        *upper,
        ("sw", 55, 4, _C),
        ("upper_ign", 59, 5, _C),
    )


#: The descriptor layouts by granule (KB).
S1_DESC: Final[dict[int, Layout]] = {kb: _desc(1, g) for kb, g in GRANULES.items()}
S2_DESC: Final[dict[int, Layout]] = {kb: _desc(2, g) for kb, g in GRANULES.items()}

# Levels (DDI 0487 numbering) that may hold a block descriptor, by granule, 48-bit OA.
_BLOCK_LEVELS: Final[dict[int, frozenset[int]]] = {
    4: frozenset((1, 2)),
    16: frozenset((2,)),
    64: frozenset((2,)),
}

# Stage 2 start level by SL0, by granule (DDI 0487 D8, VTCR_EL2.SL0 / IHI 0070 STE.S2SL0);
# 4KB SL0 = 3 (FEAT_TTST) and 16KB SL0 = 3 (FEAT_LPA2) are not supported: reserved.
_SL0_LEVEL: Final[dict[int, dict[int, int]]] = {
    4: {0: 2, 1: 1, 2: 0},
    16: {0: 3, 1: 2, 2: 1},
    64: {0: 3, 1: 2, 2: 1},
}


def _s1_perm_table() -> tuple[int, ...]:
    """Stage 1 permissions indexed by AP[1] | AP[2] << 1 | PXN << 2 | UXN << 3 | priv << 4
    (DDI 0487 D8 "Data access permissions": AP[2] = 1 read-only, AP[1] = 1 accessible
    at EL0; privileged reads are always allowed. "Instruction access permissions": UXN forbids
    unprivileged
    execution, PXN privileged execution, and a location writable at EL0 is never executable
    at EL1 -- the SMMU has no WXN, IHI 0070 5.4 "CD" treats it as 0)."""
    table = []
    for i in range(32):
        ap1, ap2, pxn, uxn, priv = (i >> b & 1 for b in range(5))
        if priv:
            p = PERM_R | (0 if ap2 else PERM_W)
            el0_writable = ap1 and not ap2
            if not pxn and not el0_writable:
                p |= PERM_X
        else:
            p = (PERM_R | (0 if ap2 else PERM_W)) if ap1 else 0
            if not uxn:
                p |= PERM_X  # execute-only at EL0 with AP[1] = 0
        table.append(p)
    return tuple(table)


def _s2_perm_table(xnx: bool) -> tuple[int, ...]:
    """Stage 2 permissions indexed by S2AP[0] | S2AP[1] << 1 | XN[0] << 2 | XN[1] << 3 |
    priv << 4 (DDI 0487 D8 "Stage 2 access permissions": S2AP[0] read, S2AP[1] write; XN[1]
    execute-never for every privilege, XN[0] ignored -- RES0 -- without FEAT_XNX). With
    FEAT_XNX (IHI 0070 SMMU_IDR3.XNX) XN[1:0] = 0b00 executable at EL1 and EL0, 0b01 not at
    EL1, 0b10 at neither, 0b11 not at EL0."""
    table = []
    for i in range(32):
        r, w, xn0, xn1, priv = (i >> b & 1 for b in range(5))
        if xnx:
            exec_ok = not (xn1 and not xn0) and not (xn0 and (xn1 != priv))
        else:
            exec_ok = not xn1
        table.append((PERM_R if r else 0) | (PERM_W if w else 0) | (PERM_X if exec_ok else 0))
    return tuple(table)


_S1_PERMS: Final = _s1_perm_table()
_S2_PERMS: Final = {False: _s2_perm_table(False), True: _s2_perm_table(True)}


def t0sz_range(granule: Granule, ttst: bool = False) -> tuple[int, int]:
    """The (smallest, largest) T0SZ of a walk with this granule: 16 (48-bit inputs, no
    FEAT_LVA) to 39, or with small translation tables (FEAT_TTST, SMMU_IDR3.STT) 48 for 4KB
    and 16KB and 47 for 64KB (DDI 0487 D8 "Input address size"; IHI 0070 CD.T0SZ)."""
    if not ttst:
        return 16, 39
    return 16, 47 if granule == 64 else 48


def _format(
    stage: Literal[1, 2], granule: Granule, ia_bits: int, start: int, name: str, xnx: bool = False
) -> PtFormat:
    g = GRANULES[granule]
    stride = g - 3
    levels = 4 - start
    root_bits = ia_bits - g - stride * (levels - 1)
    blocks = _BLOCK_LEVELS[granule]
    # Walker levels count from the leaf side: walker level i is DDI 0487 level 3 - i.
    table_values = tuple(-1 if i == 0 else 0b11 for i in range(levels))
    leaf_values = tuple(0b11 if i == 0 else 0b01 if 3 - i in blocks else -1 for i in range(levels))
    s1 = stage == 1
    return PtFormat(
        name=name,
        spec=f"DDI 0487 D8: VMSAv8-64 stage {stage}, {granule}KB granule",
        pte=(S1_DESC if s1 else S2_DESC)[granule],
        index_bits=(stride,) * (levels - 1) + (root_bits,),
        page_shift=g,
        input="zero",
        oa="oa",
        valid="valid",
        read=None,
        write=None,
        execute=None,
        user=None,
        accessed="af",
        dirty="ap2" if s1 else "s2ap_w",
        global_=None,
        table_fields=("valid", "table"),
        nonleaf_reserved=(),
        table_values=table_values,
        leaf_fields=("valid", "table"),
        leaf_values=leaf_values,
        perm_fields=("ap1", "ap2", "pxn", "uxn") if s1 else ("s2ap_r", "s2ap_w", "xn0", "xn"),
        perm_table=_S1_PERMS if s1 else _S2_PERMS[xnx],
        dirty_when_clear=s1,
        dbm="dbm",
        hints=("contig",),
        memtype="attrindx" if s1 else "memattr",
        # Block output-address bits below the block size are RES0 and ignored (D8 "Block
        # descriptor").
        misaligned_superpage_faults=False,
    )


@cache
def stage1_format(granule: Granule, t0sz: int, ttst: bool = False) -> PtFormat | None:
    """The stage 1 format for an input size of 64 - ``t0sz`` bits, or None when ``t0sz`` is
    out of range (the caller's configuration error, e.g. IHI 0070 C_BAD_CD). The start level
    is the one whose table resolves the top input bits (DDI 0487 D8 "Starting level of
    stage 1 translation table lookup")."""
    lo, hi = t0sz_range(granule, ttst)
    if not lo <= t0sz <= hi:
        return None
    g = GRANULES[granule]
    ia_bits = 64 - t0sz
    levels = -(-(ia_bits - g) // (g - 3))
    return _format(1, granule, ia_bits, 4 - levels, f"vmsa_s1_{granule}k_t0sz{t0sz}")


@cache
def stage2_format(
    granule: Granule, t0sz: int, sl0: int, ttst: bool = False, xnx: bool = False
) -> PtFormat | None:
    """The stage 2 format for an input (IPA) size of 64 - ``t0sz`` bits starting at the level
    ``sl0`` selects, or None when the combination is invalid: ``t0sz`` out of range, a
    reserved SL0, or a start level that resolves no input bit or would need more than 16
    concatenated tables (DDI 0487 D8 "Concatenated translation tables for the initial
    stage 2 lookup"; IHI 0070 STE.S2SL0 / S2T0SZ: C_BAD_STE). ``xnx``: FEAT_XNX, the two-bit stage 2
    XN[1:0] (see the permission table)."""
    lo, hi = t0sz_range(granule, ttst)
    start = _SL0_LEVEL[granule].get(sl0)
    if not lo <= t0sz <= hi or start is None:
        return None
    g = GRANULES[granule]
    ia_bits = 64 - t0sz
    root_bits = ia_bits - g - (g - 3) * (3 - start)
    if not 1 <= root_bits <= g - 3 + 4:
        return None
    name = f"vmsa_s2_{granule}k_t0sz{t0sz}_sl0{sl0}{'_xnx' if xnx else ''}"
    return _format(2, granule, ia_bits, start, name, xnx)
