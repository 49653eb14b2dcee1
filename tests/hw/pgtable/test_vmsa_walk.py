"""VMSAv8-64 walks through the shared walker on hand-built tables (Arm DDI 0487 D8): pages
and blocks per granule (D8 "Translation table descriptor formats"), start levels from T0SZ
(D8 "Translation table walk"), concatenated stage 2 start tables, every fault kind with its
level, stage 1 AP/UXN/PXN and stage 2 S2AP/XN permissions (D8 "Memory access control"), the
Access flag and dirty state with DBM (D8 "Hardware updates to the translation tables"), the
Contiguous hint (D8 "The Contiguous bit") and big-endian descriptors."""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.bits.arm.vmsa import GRANULES, Granule, stage1_format, stage2_format
from iommusim.bits.pgformat import PERM_R, PERM_W, PERM_X, PtFormat
from iommusim.hw.pgtable import AdUpdate, PteRead, VmsaFault, VmsaLeaf, VmsaWalker, swap64
from iommusim.mem import ACCESS, FaultInjectingMemory, SparseMemory
from iommusim.mem.protocol import PhysicalMemory

TTB: Final = 0x4000_0000
TABLES: Final = 0x4100_0000  # next-level tables are allocated from here
OUT: Final = 0x8_0000_0000  # output addresses (36 bits: inside a 40-bit IPS)
IPS: Final = 40
TABLE: Final = 0b11
BLOCK: Final = 0b01
PAGE: Final = 0b11
AF: Final = 1 << 10
AP1: Final = 1 << 6  # stage 1 AP[1]: EL0 access
AP2: Final = 1 << 7  # stage 1 AP[2]: read-only
S2AP_R: Final = 1 << 6
S2AP_W: Final = 1 << 7
DBM: Final = 1 << 51
CONTIG: Final = 1 << 52
PXN: Final = 1 << 53
UXN: Final = 1 << 54  # stage 2: XN
RW: Final = PERM_R | PERM_W


def build(
    mem: SparseMemory,
    fmt: PtFormat,
    ia: int,
    leaf_level: int,
    leaf: int,
    *,
    be: bool = False,
) -> int:
    """Tables from TTB down to a descriptor ``leaf`` at DDI 0487 level ``leaf_level`` for
    ``ia`` (one fresh table per level); returns the leaf descriptor's address."""
    start = 4 - fmt.levels
    table = TTB
    nxt = TABLES
    gran = 1 << fmt.page_shift
    for lvl in range(start, 4):
        i = 3 - lvl  # walker level
        addr = table + (ia >> fmt.level_shift(i) & fmt.index_mask(i)) * 8
        desc = leaf if lvl == leaf_level else nxt | TABLE
        mem.write64(addr, swap64(desc) if be else desc)
        if lvl == leaf_level:
            return addr
        table = nxt
        nxt += gran
    raise AssertionError("leaf level below level 3")


def s1(granule: Granule, t0sz: int = 16) -> PtFormat:
    fmt = stage1_format(granule, t0sz)
    assert fmt is not None
    return fmt


def vw(
    mem: PhysicalMemory, fmt: PtFormat, ha: bool = False, hd: bool = False, ips: int = IPS
) -> VmsaWalker:
    return VmsaWalker(fmt, mem, ips, ha, hd)


def leaf(r: VmsaLeaf | VmsaFault) -> VmsaLeaf:
    assert isinstance(r, VmsaLeaf), r
    return r


# ------------------------------------------------------------------ pages and blocks


@pytest.mark.parametrize("granule", [4, 16, 64])
def test_page_at_level_3_for_each_granule(granule: Granule) -> None:
    """D8 "Page descriptor": a page descriptor (0b11) at level 3 maps one granule; the walk reads
    one
    descriptor per level from the start level (4KB and 16KB: level 0; 64KB: level 1)."""
    fmt = s1(granule)
    g = GRANULES[granule]
    ia = 0x1234_5678_9ABC & ((1 << 48) - 1)
    mem = SparseMemory()
    build(mem, fmt, ia, 3, OUT | AF | PAGE)
    trace: list[PteRead | AdUpdate] = []
    r = leaf(vw(mem, fmt).walk(TTB, ia, PERM_R, True, False, trace))
    assert (r.out, r.size_lg2, r.level) == (OUT | ia & ((1 << g) - 1), g, 3)
    assert [t.level for t in trace] == list(range(fmt.levels - 1, -1, -1))
    assert fmt.levels == (3 if granule == 64 else 4)


@pytest.mark.parametrize(
    ("granule", "level", "size_lg2"),
    [(4, 1, 30), (4, 2, 21), (16, 2, 25), (64, 2, 29)],
)
def test_block_at_each_allowed_level(granule: Granule, level: int, size_lg2: int) -> None:
    """D8 "Block descriptor": 4KB granule blocks at levels 1 (1GB) and 2 (2MB), 16KB at
    level 2 (32MB), 64KB at level 2 (512MB); output-address bits below the block size are
    RES0 and ignored."""
    fmt = s1(granule)
    ia = 0x7654_3210_FEDC & ((1 << 48) - 1)
    mem = SparseMemory()
    base = 0x40_0000_0000  # aligned to every block size
    build(mem, fmt, ia, level, base | 1 << fmt.page_shift | AF | BLOCK)
    r = leaf(vw(mem, fmt).walk(TTB, ia, PERM_R, True, False))
    assert (r.out, r.size_lg2, r.level) == (base | ia & ((1 << size_lg2) - 1), size_lg2, level)


@pytest.mark.parametrize(
    ("granule", "level"), [(4, 0), (16, 0), (16, 1), (64, 1), (4, 3), (16, 3), (64, 3)]
)
def test_block_where_the_level_allows_none_is_a_translation_fault(
    granule: Granule, level: int
) -> None:
    """D8 "Block descriptor": 0b01 at a level without blocks (4KB level 0, 16KB levels 0-1, 64KB
    level 1
    with 48-bit output addresses) and at level 3 is invalid: a Translation fault there."""
    fmt = s1(granule)
    mem = SparseMemory()
    build(mem, fmt, 0x1000_0000, level, OUT | AF | BLOCK)
    assert vw(mem, fmt).walk(TTB, 0x1000_0000, PERM_R, True, False) == VmsaFault(
        "translation", level
    )


@pytest.mark.parametrize("bits", [0b00, 0b10])
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_invalid_descriptor_is_a_translation_fault_at_its_level(bits: int, level: int) -> None:
    """D8 "Invalid descriptor": bit[0] = 0 marks an invalid descriptor at any level."""
    fmt = s1(4)
    mem = SparseMemory()
    build(mem, fmt, 0x1000_0000, level, OUT | AF | bits)
    assert vw(mem, fmt).walk(TTB, 0x1000_0000, PERM_R, True, False) == VmsaFault(
        "translation", level
    )


@pytest.mark.parametrize(
    ("granule", "t0sz", "start", "root_bits"),
    [
        (4, 16, 0, 9),
        (4, 25, 1, 9),
        (4, 33, 1, 1),
        (4, 39, 2, 4),
        (16, 16, 0, 1),
        (16, 27, 1, 1),
        (16, 28, 2, 11),
        (16, 39, 3, 11),
        (64, 16, 1, 6),
        (64, 21, 1, 1),
        (64, 25, 2, 10),
        (64, 39, 3, 9),
    ],
)
def test_start_level_from_t0sz(granule: Granule, t0sz: int, start: int, root_bits: int) -> None:
    """D8 "Translation table walk": the stage 1 walk starts at the level whose table resolves the
    top of the
    64 - T0SZ input bits; the start table has 2^(resolved bits) entries."""
    fmt = s1(granule, t0sz)
    assert (4 - fmt.levels, fmt.root_index_bits, fmt.va_bits) == (start, root_bits, 64 - t0sz)
    ia = (1 << (64 - t0sz)) - 1 - 0xFFF  # the top of the input range
    mem = SparseMemory()
    build(mem, fmt, ia, 3, OUT | AF | PAGE)
    trace: list[PteRead | AdUpdate] = []
    r = leaf(vw(mem, fmt).walk(TTB, ia, PERM_R, True, False, trace))
    assert r.out == OUT | ia & ((1 << fmt.page_shift) - 1)
    assert isinstance(trace[0], PteRead)
    assert trace[0].addr == TTB + ((1 << root_bits) - 1) * 8  # the last start-table entry


def test_t0sz_out_of_range_has_no_format() -> None:
    """IHI 0070 CD.T0SZ / DDI 0487 D8: T0SZ 16-39 (48 with FEAT_TTST for 4KB)."""
    assert stage1_format(4, 15) is None and stage1_format(4, 40) is None
    assert stage1_format(4, 48, ttst=True) is not None
    assert stage1_format(64, 48, ttst=True) is None


# ------------------------------------------------------------------ stage 2 concatenation


@pytest.mark.parametrize(
    ("granule", "t0sz", "sl0", "start", "tables"),
    [(4, 24, 1, 1, 2), (4, 30, 0, 2, 16), (16, 24, 1, 2, 16), (64, 20, 1, 2, 4)],
)
def test_concatenated_stage2_start_tables(
    granule: Granule, t0sz: int, sl0: int, start: int, tables: int
) -> None:
    """DDI 0487 D8 "Concatenated translation tables": up to 16 start-level tables, one
    after another, index the top input bits; an IPA in the last of them walks from it."""
    fmt = stage2_format(granule, t0sz, sl0)
    assert fmt is not None
    g = GRANULES[granule]
    assert (4 - fmt.levels, fmt.root_bytes, fmt.root_alignment) == (start, tables << g, tables << g)
    ipa = (1 << (64 - t0sz)) - (1 << fmt.page_shift)
    mem = SparseMemory()
    build(mem, fmt, ipa, 3, OUT | AF | S2AP_R | PAGE)
    trace: list[PteRead | AdUpdate] = []
    r = leaf(vw(mem, fmt).walk(TTB, ipa, PERM_R, False, False, trace, "s2"))
    assert r.out == OUT
    assert isinstance(trace[0], PteRead)
    assert trace[0].addr - TTB >= (tables - 1) << g  # in the last concatenated table


@pytest.mark.parametrize(
    ("granule", "t0sz", "sl0"),
    [(4, 24, 0), (4, 33, 2), (4, 16, 3), (16, 16, 3), (64, 16, 3), (64, 39, 2), (4, 40, 0)],
)
def test_invalid_stage2_start_has_no_format(granule: Granule, t0sz: int, sl0: int) -> None:
    """More than 16 concatenated tables, a start level resolving no input bit, a reserved
    SL0 or T0SZ out of range: no walk (IHI 0070 STE.S2SL0 / S2T0SZ: C_BAD_STE)."""
    assert stage2_format(granule, t0sz, sl0) is None


# ------------------------------------------------------------------ fault kinds


def test_input_out_of_range_and_table_base_out_of_range_are_level_0() -> None:
    """AArch64 reports an input address above 2^(64 - T0SZ) as a level 0 Translation fault
    and a TTB above the IPS as a level 0 Address size fault (DDI 0487 D8 "Translation table
    walk")."""
    fmt = s1(4, 25)
    w = vw(SparseMemory(), fmt)
    assert w.walk(TTB, 1 << 39, PERM_R, True, False) == VmsaFault("translation", 0)
    assert w.walk(1 << IPS, 0, PERM_R, True, False) == VmsaFault("address_size", 0)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_table_address_above_ips_is_an_address_size_fault_at_its_level(level: int) -> None:
    """D8 "Address size fault": a next-level table address with a bit at or above the
    configured output size faults at the level of the table descriptor."""
    fmt = s1(4)
    mem = SparseMemory()
    build(mem, fmt, 0x5000, level, 1 << IPS | TABLE)
    assert vw(mem, fmt).walk(TTB, 0x5000, PERM_R, True, False) == VmsaFault("address_size", level)
    # The same descriptor is fine with a 48-bit output size (it then points to empty memory).
    assert vw(mem, fmt, ips=48).walk(TTB, 0x5000, PERM_R, True, False) == VmsaFault(
        "translation", level + 1
    )


@pytest.mark.parametrize(("level", "kind"), [(2, BLOCK), (3, PAGE)])
def test_output_address_above_ips_is_an_address_size_fault(level: int, kind: int) -> None:
    fmt = s1(4)
    mem = SparseMemory()
    build(mem, fmt, 0x5000, level, 1 << 45 | AF | kind)
    assert vw(mem, fmt).walk(TTB, 0x5000, PERM_R, True, False) == VmsaFault("address_size", level)


def test_invalid_descriptor_with_a_high_address_is_still_a_translation_fault() -> None:
    """Validity first: an invalid descriptor's other bits mean nothing (D8 "Invalid descriptor")."""
    fmt = s1(4)
    mem = SparseMemory()
    build(mem, fmt, 0x5000, 1, 1 << 45 | 0b10)
    assert vw(mem, fmt).walk(TTB, 0x5000, PERM_R, True, False) == VmsaFault("translation", 1)


def test_external_abort_on_a_descriptor_read_is_walk_eabt_at_its_level() -> None:
    """A descriptor read answered with an abort: IHI 0070 F_WALK_EABT, with the level."""
    inner = SparseMemory()
    fmt = s1(4)
    build(inner, fmt, 0x5000, 3, OUT | AF | PAGE)
    mem = FaultInjectingMemory(inner)
    mem.inject(TABLES + 4096, 4096, ACCESS)  # the level 2 table
    # The level 2 descriptor of VA 0x5000 is entry 0 of that table: its address is reported.
    fault = VmsaFault("walk_eabt", 2, TABLES + 4096)
    assert vw(mem, fmt).walk(TTB, 0x5000, PERM_R, True, False) == fault


# ------------------------------------------------------------------ permissions


@pytest.mark.parametrize(
    ("bits", "priv", "grants"),
    [
        (0, True, RW | PERM_X),  # AP = 00: EL1 RW, EL0 none (execute-only at EL0 if UXN = 0)
        (0, False, PERM_X),
        (AP1, True, RW),  # AP = 01: RW at both; EL0-writable => never EL1-executable
        (AP1, False, RW | PERM_X),
        (AP2, True, PERM_R | PERM_X),  # AP = 10: EL1 RO, EL0 none
        (AP2, False, PERM_X),
        (AP1 | AP2, True, PERM_R | PERM_X),  # AP = 11: RO at both
        (AP1 | AP2, False, PERM_R | PERM_X),
        (AP1 | AP2 | UXN, False, PERM_R),
        (AP1 | AP2 | UXN, True, PERM_R | PERM_X),
        (AP1 | AP2 | PXN, True, PERM_R),
        (AP1 | AP2 | PXN, False, PERM_R | PERM_X),
        (PXN | UXN, True, RW),
        (PXN | UXN, False, 0),
    ],
)
def test_stage1_ap_uxn_pxn(bits: int, priv: bool, grants: int) -> None:
    """D8 "Data access permissions" (AP[2:1]) and D8 "Instruction access
    permissions" (UXN, PXN; a location writable at EL0 is not executable at EL1). Every
    access the leaf grants is translated, every other one is a level 3 Permission fault."""
    fmt = s1(4)
    mem = SparseMemory()
    build(mem, fmt, 0x5000, 3, OUT | AF | bits | PAGE)
    w = vw(mem, fmt)
    for access in (PERM_R, PERM_W, PERM_X):
        r = w.walk(TTB, 0x5000, access, priv, False)
        if access & grants:
            assert isinstance(r, VmsaLeaf) and r.perms == grants
        else:
            assert r == VmsaFault("permission", 3)


@pytest.mark.parametrize(
    ("bits", "grants"),
    [
        (0, PERM_X),
        (S2AP_R, PERM_R | PERM_X),
        (S2AP_W, PERM_W | PERM_X),
        (S2AP_R | S2AP_W, RW | PERM_X),
        (S2AP_R | S2AP_W | UXN, RW),  # bit 54: stage 2 XN
        (S2AP_R | PXN, PERM_R | PERM_X),  # bit 53 is XN[0] only with FEAT_XNX: ignored
    ],
)
def test_stage2_s2ap_xn(bits: int, grants: int) -> None:
    """D8 "Stage 2 access permissions": S2AP[0] read, S2AP[1] write, XN execute-never;
    the privilege of the access makes no difference."""
    fmt = stage2_format(4, 24, 1)
    assert fmt is not None
    mem = SparseMemory()
    build(mem, fmt, 0x5000, 3, OUT | AF | bits | PAGE)
    w = vw(mem, fmt)
    for priv in (True, False):
        for access in (PERM_R, PERM_W, PERM_X):
            r = w.walk(TTB, 0x5000, access, priv, False, None, "s2")
            assert (r == VmsaFault("permission", 3)) == (not access & grants)


def test_perms_decode_of_a_stage1_leaf() -> None:
    fmt = s1(4)
    p = fmt.perms(OUT | AF | AP1 | PAGE)
    assert (p.read, p.write, p.execute, p.user) == (True, True, False, True)
    p = fmt.perms(OUT | AF | PXN | UXN | PAGE)
    assert (p.read, p.write, p.execute, p.user) == (True, True, False, False)


# ------------------------------------------------------------------ Access flag and DBM


@pytest.mark.parametrize(("level", "kind"), [(1, BLOCK), (2, BLOCK), (3, PAGE)])
def test_access_flag_fault_without_hardware_update(level: int, kind: int) -> None:
    """D8 "The Access flag": AF = 0 with hardware management off is an Access flag
    fault at the leaf's level -- checked before permissions (a write to a read-only entry
    with AF = 0 reports the Access flag fault)."""
    fmt = s1(4)
    mem = SparseMemory()
    build(mem, fmt, 0x5000, level, (OUT & ~((1 << 30) - 1)) | AP2 | kind)
    w = vw(mem, fmt)
    assert w.walk(TTB, 0x5000, PERM_R, True, False) == VmsaFault("access_flag", level)
    assert w.walk(TTB, 0x5000, PERM_W, True, False) == VmsaFault("access_flag", level)


@pytest.mark.parametrize("be", [False, True])
def test_hardware_access_flag_update(be: bool) -> None:
    """D8 "The Access flag" with HA: the walk sets AF in the descriptor (atomically) and
    translates; an
    access that faults on permissions leaves the descriptor unchanged."""
    fmt = s1(4)
    mem = SparseMemory()
    desc = OUT | AP2 | PAGE
    at = build(mem, fmt, 0x5000, 3, desc, be=be)
    w = vw(mem, fmt, ha=True)
    assert w.walk(TTB, 0x5000, PERM_W, True, be) == VmsaFault("permission", 3)
    assert mem.read64(at) == (swap64(desc) if be else desc)
    trace: list[PteRead | AdUpdate] = []
    r = leaf(w.walk(TTB, 0x5000, PERM_R, True, be, trace))
    assert r.pte == desc | AF and mem.read64(at) == (swap64(desc | AF) if be else desc | AF)
    assert trace[-1] == AdUpdate("s1", at, desc, desc | AF)


def test_dbm_write_clears_ap2_under_hd() -> None:
    """D8 "Hardware management of dirty state": with HD, a write to a DBM = 1 entry with
    AP[2] = 1 (writable-clean) clears AP[2] instead of faulting; a read leaves it clean;
    without HD (or without DBM) the write is a Permission fault."""
    fmt = s1(4)
    mem = SparseMemory()
    clean = OUT | AF | AP2 | DBM | PAGE
    at = build(mem, fmt, 0x5000, 3, clean)
    assert vw(mem, fmt, ha=True).walk(TTB, 0x5000, PERM_W, True, False) == VmsaFault(
        "permission", 3
    )
    hd = vw(mem, fmt, ha=True, hd=True)
    r = leaf(hd.walk(TTB, 0x5000, PERM_R, True, False))
    assert r.perms == PERM_R | PERM_X and mem.read64(at) == clean
    r = leaf(hd.walk(TTB, 0x5000, PERM_W, True, False))
    assert r.perms & PERM_W and mem.read64(at) == clean & ~AP2 == r.pte
    assert not fmt.is_dirty(clean) and fmt.is_dirty(r.pte)
    mem.write64(at, clean & ~DBM)
    assert hd.walk(TTB, 0x5000, PERM_W, True, False) == VmsaFault("permission", 3)


def test_dbm_does_not_grant_what_ap1_forbids() -> None:
    """An EL0 write to a DBM entry with AP[1] = 0 has no EL0 access at all: still a
    Permission fault, the descriptor unchanged."""
    fmt = s1(4)
    mem = SparseMemory()
    clean = OUT | AF | AP2 | DBM | PAGE
    at = build(mem, fmt, 0x5000, 3, clean)
    hd = vw(mem, fmt, ha=True, hd=True)
    assert hd.walk(TTB, 0x5000, PERM_W, False, False) == VmsaFault("permission", 3)
    assert mem.read64(at) == clean


def test_stage2_dbm_sets_s2ap_w_and_af_together() -> None:
    """D8 "Hardware management of dirty state" at stage 2: dirty state is S2AP[1] = 1; one atomic
    update sets AF and
    S2AP[1]."""
    fmt = stage2_format(4, 24, 1)
    assert fmt is not None
    mem = SparseMemory()
    clean = OUT | S2AP_R | DBM | PAGE
    at = build(mem, fmt, 0x5000, 3, clean)
    r = leaf(vw(mem, fmt, ha=True, hd=True).walk(TTB, 0x5000, PERM_W, False, False))
    assert mem.read64(at) == clean | AF | S2AP_W == r.pte and r.perms & PERM_W


def test_hd_without_ha_manages_nothing() -> None:
    """Dirty-state management requires Access-flag management (D8 "Hardware management of dirty
    state")."""
    fmt = s1(4)
    mem = SparseMemory()
    build(mem, fmt, 0x5000, 3, OUT | AF | AP2 | DBM | PAGE)
    assert vw(mem, fmt, hd=True).walk(TTB, 0x5000, PERM_W, True, False) == VmsaFault(
        "permission", 3
    )


# ------------------------------------------------------------------ hints and endianness


@pytest.mark.parametrize("granule", [4, 16, 64])
def test_contiguous_hint_changes_no_result(granule: Granule) -> None:
    """D8 "The Contiguous bit" is a hint that the entry is one of a contiguous set: a
    caching hint, so the walk's output and permissions are the same with it."""
    fmt = s1(granule)
    assert fmt.hints == ("contig",)
    results = []
    for hint in (0, CONTIG):
        mem = SparseMemory()
        build(mem, fmt, 0x12_3456, 3, OUT | AF | AP1 | hint | PAGE)
        r = leaf(vw(mem, fmt).walk(TTB, 0x12_3456, PERM_R, False, False))
        results.append((r.out, r.size_lg2, r.level, r.perms))
    assert results[0] == results[1]


@pytest.mark.parametrize("granule", [4, 16, 64])
def test_big_endian_tables(granule: Granule) -> None:
    """IHI 0070 CD.ENDI / STE.S2ENDI: descriptors stored big-endian walk the same."""
    fmt = s1(granule)
    mem = SparseMemory()
    build(mem, fmt, 0x1_2345_6000, 3, OUT | AF | PAGE, be=True)
    r = leaf(vw(mem, fmt).walk(TTB, 0x1_2345_6000, PERM_R, True, True))
    assert r.out == OUT | 0x1_2345_6000 & ((1 << GRANULES[granule]) - 1)
    assert vw(mem, fmt).walk(TTB, 0x1_2345_6000, PERM_R, True, False) != r


def test_nested_walk_reads_every_descriptor_through_xlate() -> None:
    """Nested translation (IHI 0070 "Stage 1 and stage 2 translation"; DDI 0487 D8
    "Translation table walk"): every stage 1 table address is an IPA that ``xlate`` maps; the
    hardware AF update writes the descriptor where it was read."""
    fmt = s1(4)
    offset = 0x2_0000_0000  # IPA -> PA
    ipa_mem = SparseMemory()
    at = build(ipa_mem, fmt, 0x5000, 3, OUT | PAGE)
    mem = SparseMemory()
    for a in (TTB, TABLES, TABLES + 0x1000, TABLES + 0x2000):
        for k in range(512):
            v = ipa_mem.read64(a + k * 8)
            if v:
                mem.write64(a + k * 8 + offset, v)
    trace: list[PteRead | AdUpdate] = []
    r = leaf(
        vw(mem, fmt, ha=True).walk(
            TTB, 0x5000, PERM_R, True, False, trace, xlate=lambda a: a + offset
        )
    )
    assert (r.addr, r.pa, r.out) == (at, at + offset, OUT)
    assert all(t.pa == t.addr + offset for t in trace if isinstance(t, PteRead))
    assert mem.read64(at + offset) == OUT | AF | PAGE


@pytest.mark.parametrize(
    ("xn", "el1", "el0"),
    [(0b00, True, True), (0b01, False, True), (0b10, False, False), (0b11, True, False)],
)
def test_stage2_xnx_execute_by_privilege(xn: int, el1: bool, el0: bool) -> None:
    """FEAT_XNX (DDI 0487 D8 "Stage 2 access permissions"; IHI 0070 SMMU_IDR3.XNX): stage 2
    XN[1:0] decides execution per privilege; without it XN[0] is ignored."""
    fmt = stage2_format(4, 24, 1, xnx=True)
    plain = stage2_format(4, 24, 1)
    assert fmt is not None and plain is not None
    desc = OUT | AF | S2AP_R | (xn >> 1) * UXN | (xn & 1) * PXN | PAGE
    mem = SparseMemory()
    build(mem, fmt, 0x5000, 3, desc)
    for priv, ok in ((True, el1), (False, el0)):
        r = vw(mem, fmt).walk(TTB, 0x5000, PERM_X, priv, False, None, "s2")
        assert isinstance(r, VmsaLeaf) == ok
        assert bool(plain.grants(desc, priv) & PERM_X) == (not xn >> 1)
