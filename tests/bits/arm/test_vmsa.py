"""The VMSAv8-64 descriptor tables and formats (Arm DDI 0487 D8 "Translation table
descriptor formats", D8 "Memory access control"), pinned by golden literal encodings
independent of the tables."""

from __future__ import annotations

import pytest

from iommusim.bits.arm.vmsa import S1_DESC, S2_DESC, Granule, stage1_format, stage2_format
from iommusim.bits.pgformat import PERM_R, PERM_W, PERM_X


@pytest.mark.parametrize(("granule", "oa"), [(4, 0xFFFF_FFFF_F000), (16, 0xFFFF_FFFF_C000)])
def test_stage1_descriptor_golden_encoding(granule: Granule, oa: int) -> None:
    """D8 "Block descriptor and Page descriptor": AttrIndx[4:2], NS 5, AP[2:1] 7:6, SH 9:8, AF 10,
    nG 11, OA [47:n], DBM 51,
    Contiguous 52, PXN 53, UXN 54."""
    lay = S1_DESC[granule]
    v = lay.encode(
        valid=1, table=1, attrindx=5, ns=1, ap1=1, ap2=1, sh=3, af=1, ng=1, dbm=1, contig=1
    )
    assert v == 0x0018_0000_0000_0FF7
    assert lay.encode(pxn=1, uxn=1) == 0x0060_0000_0000_0000
    assert lay.mask("oa") == oa
    assert lay.reserved_mask == 0  # RES0 and ignored bits are not checked by the walk


def test_stage2_and_64k_descriptor_golden_encoding() -> None:
    """D8 "Block descriptor and Page descriptor", stage 2: MemAttr[3:0] 5:2, S2AP[1:0] 7:6, XN 54;
    64KB OA is bits[47:16]."""
    lay = S2_DESC[4]
    assert lay.encode(valid=1, memattr=0xF, s2ap_r=1, s2ap_w=1, af=1, xn=1) == (
        0x0040_0000_0000_04FD
    )
    assert S2_DESC[64].mask("oa") == S1_DESC[64].mask("oa") == 0xFFFF_FFFF_0000


def test_descriptor_types_per_level() -> None:
    """D8 "Translation table descriptor formats": 0b11 is a table at levels 0-2 and a page at level
    3; 0b01 a block at 4KB
    levels 1-2 only; bit[0] = 0 invalid."""
    fmt = stage1_format(4, 16)
    assert fmt is not None
    by_level = {3 - i: i for i in range(4)}  # DDI 0487 level -> walker level
    assert fmt.is_table(0x1003, by_level[0]) and not fmt.is_leaf(0x1003, by_level[0])
    assert fmt.is_leaf(0x1003, by_level[3]) and not fmt.is_table(0x1003, by_level[3])
    assert [fmt.is_leaf(0x1001, by_level[lv]) for lv in range(4)] == [False, True, True, False]
    assert not any(fmt.is_leaf(0x1002, i) or fmt.is_table(0x1002, i) for i in range(4))
    assert fmt.block_levels() == (0, 1, 2)  # walker levels: pages, 2MB and 1GB blocks
    f64 = stage1_format(64, 16)
    assert f64 is not None and f64.block_levels() == (0, 1)


def test_permission_tables_golden() -> None:
    """D8 "Data access permissions" / "Stage 2 access permissions", read out as bitmaps: the
    privileged and unprivileged stage 1 grants
    for AP[2:1] = 00, 01, 10, 11 with UXN = PXN = 0, and stage 2 for S2AP = 00..11."""
    s1 = stage1_format(4, 16)
    s2 = stage2_format(4, 24, 1)
    assert s1 is not None and s2 is not None
    ap = [0, 1 << 6, 1 << 7, 3 << 6]
    rwx, rw, rx, x = PERM_R | PERM_W | PERM_X, PERM_R | PERM_W, PERM_R | PERM_X, PERM_X
    assert [s1.grants(a, True) for a in ap] == [rwx, rw, rx, rx]
    assert [s1.grants(a, False) for a in ap] == [x, rwx, x, rx]
    assert [s2.grants(a, p) for a in ap for p in (True, False)] == [
        x, x, rx, rx, PERM_W | x, PERM_W | x, rwx, rwx
    ]  # fmt: skip
    assert s2.grants(3 << 6 | 1 << 54, False) == rw


def test_dirty_state_polarity() -> None:
    """D8 "Hardware management of dirty state": stage 1 dirty is AP[2] = 0, stage 2 dirty is
    S2AP[1] = 1."""
    s1 = stage1_format(16, 20)
    s2 = stage2_format(16, 24, 1)
    assert s1 is not None and s2 is not None
    assert (s1.is_dirty(0), s1.is_dirty(1 << 7)) == (True, False)
    assert (s2.is_dirty(0), s2.is_dirty(1 << 7)) == (False, True)
    assert s1.dbm_mask == s2.dbm_mask == 1 << 51
