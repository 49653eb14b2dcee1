"""IHI 0070 3.9 "Address Translation Services": Translation Requests answered from the
translation (permissions and size, no stall, no translation-fault record), STE.EATS
(F_BAD_ATS_TREQ, F_TRANSL_FORBIDDEN), translated transactions, and split-stage ATS."""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm.smmuv3_queues import F_BAD_ATS_TREQ, F_TRANSL_FORBIDDEN, F_UUT
from iommusim.bits.arm.smmuv3_structures import EATS_FULL, EATS_SPLIT, STE_CONFIG_S1
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.transaction import AT_ATS_REQUEST, AT_TRANSLATED
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import Scene

RW: Final = IOMMU_READ | IOMMU_WRITE
DATA: Final = 0x8000_0000


def ats_scene(eats: int) -> Scene:
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    t.map(0x2000, DATA + 0x1000, 0x1000, IOMMU_READ)
    t.map(0x20_0000, DATA + 0x20_0000, 0x20_0000, RW)
    ptr = s.cd_table({0: s.cd_image(t, s=1)})
    s.put_ste(1, config=STE_CONFIG_S1, s1contextptr=ptr >> 6, eats=eats)
    return s


def test_translation_request_completion_permissions_and_size() -> None:
    """3.9.1: the completion carries the output address, the translation's size and the
    permissions it grants; a read-only page answers a write request with R only."""
    s = ats_scene(EATS_FULL)
    r = s.go(1, 0x1000, at=AT_ATS_REQUEST, no_write=False)
    assert (r.outcome, r.pa, r.size_lg2, r.r, r.w) == ("ok", DATA, 12, True, True)
    r = s.go(1, 0x2000, at=AT_ATS_REQUEST, no_write=False)
    assert (r.outcome, r.pa, r.r, r.w, r.event) == ("ok", DATA + 0x1000, True, False, None)
    r = s.go(1, 0x20_0000, at=AT_ATS_REQUEST)
    assert (r.pa, r.size_lg2) == (DATA + 0x20_0000, 21)
    assert s.t.counts.ats_requests == 3


def test_translation_fault_on_a_request_grants_nothing_and_never_stalls() -> None:
    """3.9.1: a translation fault answers with no permissions; no event, even with CD.S."""
    s = ats_scene(EATS_FULL)
    r = s.go(1, 0x9000, at=AT_ATS_REQUEST)
    assert (r.outcome, r.r, r.w, r.event) == ("ok", False, False, None)
    assert s.t.stalled() == []


def test_eats_zero_rejects_requests_and_translated_transactions() -> None:
    """5.2 EATS = 0b00: a Translation Request is F_BAD_ATS_TREQ (UR), a translated
    transaction F_TRANSL_FORBIDDEN (aborted)."""
    s = ats_scene(0)
    r = s.go(1, 0x1000, at=AT_ATS_REQUEST)
    assert r.outcome == "ur" and r.event is not None and r.event.type == F_BAD_ATS_TREQ
    r = s.go(1, DATA, at=AT_TRANSLATED)
    assert r.outcome == "abort" and r.event is not None and r.event.type == F_TRANSL_FORBIDDEN


def test_translated_transactions_pass_through_with_eats_full() -> None:
    s = ats_scene(EATS_FULL)
    r = s.go(1, DATA + 0x40, at=AT_TRANSLATED, is_write=True)
    assert (r.outcome, r.pa) == ("ok", DATA + 0x40)
    assert s.t.counts.ats_translated == 1


def test_split_stage_ats() -> None:
    """3.9.2 / 5.2 EATS = 0b10: a Translation Request returns the stage 1 output (an IPA);
    the translated transaction is then translated by stage 2."""
    s = Scene()
    s1, s2 = s.s1(), s.s2()
    s2.map(0x4000_0000, 0x4000_0000, 1 << 28, RW)
    s2.map(0x1000_0000, DATA, 0x1000, RW)
    s1.map(0x5000, 0x1000_0000, 0x1000, RW)
    ptr = s.cd_table({0: s.cd_image(s1)})
    s.stream_nested(1, s1, s2, ptr, eats=EATS_SPLIT)
    r = s.go(1, 0x5000, at=AT_ATS_REQUEST)
    assert (r.outcome, r.pa) == ("ok", 0x1000_0000)
    r = s.go(1, 0x1000_0010, at=AT_TRANSLATED)
    assert (r.outcome, r.pa) == ("ok", DATA + 0x10)
    # An untranslated access on the same stream still goes through both stages.
    assert s.go(1, 0x5020).pa == DATA + 0x20


def test_requests_while_disabled_are_unsupported() -> None:
    s = ats_scene(EATS_FULL)
    s.t.enabled = False
    assert s.go(1, 0x1000, at=AT_ATS_REQUEST).outcome == "ur"


def test_ats_traffic_to_an_smmu_without_ats_is_f_uut() -> None:
    """IHI 0070 7.3 F_UUT: with IDR0.ATS = 0 a Translation Request (UR) and a translated
    transaction (aborted) are Unsupported Upstream Transactions."""
    s = Scene(params=PRESETS["qemu-like"])
    s.stream_bypass(1)
    r = s.go(1, 0x1000, at=AT_ATS_REQUEST)
    assert r.outcome == "ur" and r.event is not None and r.event.type == F_UUT
    r = s.go(1, 0x1000, at=AT_TRANSLATED)
    assert r.outcome == "abort" and r.event is not None and r.event.type == F_UUT
