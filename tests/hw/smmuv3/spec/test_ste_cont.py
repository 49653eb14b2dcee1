"""IHI 0070 5.2 STE.CONT (the contiguous hint) and 7.3.18 F_CFG_CONFLICT: an STE cache that
honours the hint serves a whole span from one fetched STE; CONT never narrows invalidation;
two cached entries matching one StreamID that differ in more than CONT are a multiple match,
reported as F_CFG_CONFLICT with the transaction aborted."""

from __future__ import annotations

from typing import Final

from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import Scene

RW: Final = IOMMU_READ | IOMMU_WRITE
DATA: Final = 0x8000_0000
OTHER: Final = 0x9000_0000


def _two_tables(s: Scene) -> tuple[int, int]:
    """Two CD tables: stage 1 of the first maps 0x1000 to DATA, of the second to OTHER."""
    ta, tb = s.s1(), s.s1()
    ta.map(0x1000, DATA, 0x1000, RW)
    tb.map(0x1000, OTHER, 0x1000, RW)
    return s.cd_table({0: s.cd_image(ta, 1)}), s.cd_table({0: s.cd_image(tb, 2)})


def test_one_fetched_ste_serves_its_whole_span() -> None:
    s = Scene(ste_cont_entries=8)
    ptr, _ = _two_tables(s)
    for sid in range(4, 8):
        s.put_ste(sid, config=0b101, s1contextptr=ptr >> 6, cont=2)
    assert s.go(5, 0x1000).pa == DATA
    misses = s.t.counts.config_misses
    for sid in (4, 6, 7):
        assert s.go(sid, 0x1000).pa == DATA
    # No STE was fetched for the neighbours (their CDs were: the CD cache is per StreamID).
    assert s.t.counts.config_misses == misses + 3
    assert list(s.t.ste_spans) == [(4, 2)] and not s.t.ste_cache


def test_the_hint_is_ignored_without_span_entries() -> None:
    s = Scene(ste_cont_entries=0)  # the hint ignored: every StreamID its own STE
    ptr, _ = _two_tables(s)
    for sid in range(4, 8):
        s.put_ste(sid, config=0b101, s1contextptr=ptr >> 6, cont=2)
    for sid in range(4, 8):
        assert s.go(sid, 0x1000).pa == DATA
    assert sorted(s.t.ste_cache) == [4, 5, 6, 7] and not s.t.ste_spans


def test_a_neighbour_uses_the_span_entry_until_invalidated() -> None:
    """Software broke the rule (StreamID 6's STE differs): the span entry still serves it --
    one of the CONSTRAINED UNPREDICTABLE behaviours -- until a CFGI_STE for 6 drops the
    entry; CONT does not narrow invalidation."""
    s = Scene(ste_cont_entries=8)
    pa, pb = _two_tables(s)
    for sid in range(4, 8):
        s.put_ste(sid, config=0b101, s1contextptr=pa >> 6, cont=2)
    s.put_ste(6, config=0b101, s1contextptr=pb >> 6)
    assert s.go(4, 0x1000).pa == DATA
    assert s.go(6, 0x1000).pa == DATA  # the neighbour's STE
    s.t.cfgi_ste(6, True)
    assert not s.t.ste_spans
    assert s.go(6, 0x1000).pa == OTHER  # its own STE now


def test_differing_matches_are_f_cfg_conflict() -> None:
    s = Scene(ste_cont_entries=8)
    pa, pb = _two_tables(s)
    s.put_ste(9, config=0b101, s1contextptr=pb >> 6)
    assert s.go(9, 0x1000).pa == OTHER  # cached as StreamID 9's own entry
    for sid in (8, 10, 11):
        s.put_ste(sid, config=0b101, s1contextptr=pa >> 6, cont=2)
    assert s.go(8, 0x1000).pa == DATA  # cached as the span 8-11
    out = s.go(9, 0x1000)
    assert out.outcome == "abort"
    assert out.event is not None and out.event.name == "F_CFG_CONFLICT"
    assert out.event.streamid == 9 and out.recorded
    assert s.go(10, 0x1000).pa == DATA  # one match: no conflict
    # Invalidating the span's StreamIDs (as software must) ends the conflict.
    s.t.cfgi_ste_range(8, 1)
    s.put_ste(9, config=0b101, s1contextptr=pa >> 6, cont=2)
    assert s.go(9, 0x1000).pa == DATA


def test_entries_differing_only_in_cont_do_not_conflict() -> None:
    s = Scene(ste_cont_entries=8)
    pa, _ = _two_tables(s)
    s.put_ste(9, config=0b101, s1contextptr=pa >> 6)
    assert s.go(9, 0x1000).pa == DATA
    for sid in range(8, 12):
        s.put_ste(sid, config=0b101, s1contextptr=pa >> 6, cont=2)
    assert s.go(8, 0x1000).pa == DATA
    assert s.go(9, 0x1000).pa == DATA  # two matches, identical but for CONT


def test_a_span_is_capped_by_its_level_2_table() -> None:
    """A CONT span beyond the level 2 table: StreamIDs of the next L1STD are not matched
    and fail their own lookup (C_BAD_STREAMID: no L1STD there)."""
    s = Scene(fmt="2level", log2size=8, split=6, ste_cont_entries=8)
    pa, _ = _two_tables(s)
    s.put_ste(0, config=0b101, s1contextptr=pa >> 6, cont=8)
    assert s.go(0, 0x1000).pa == DATA
    assert list(s.t.ste_spans) == [(0, 6)]
    assert s.go(63, 0x1000).pa == DATA
    out = s.go(64, 0x1000)
    assert out.event is not None and out.event.name == "C_BAD_STREAMID"
