"""IHI 0070 3.3 "Data structures and translation procedure" and 3.4 "Address translation":
stream table lookup, STE and CD checks, stage 1, stage 2 and nested translation, and the
configuration errors each step reports (7.3 event records)."""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.bits.arm.smmuv3_queues import (
    C_BAD_CD,
    C_BAD_STE,
    C_BAD_STREAMID,
    C_BAD_SUBSTREAMID,
    CLASS_CD,
    CLASS_IN,
    CLASS_TT,
    F_CD_FETCH,
    F_STE_FETCH,
    F_STREAM_DISABLED,
    F_TRANSLATION,
)
from iommusim.bits.arm.smmuv3_structures import (
    S1DSS_BYPASS,
    S1DSS_SSID0,
    S1FMT_4K_L2,
    STE_CONFIG_ABORT,
    STE_CONFIG_S1,
    TG1_4K,
)
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.transaction import Event
from iommusim.mem.faults import ACCESS, FaultInjectingMemory
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import PS_48, Scene

RW: Final = IOMMU_READ | IOMMU_WRITE
DATA: Final = 0x8000_0000


def test_smmuen_clear_bypasses_or_aborts_by_gbpa() -> None:
    """3.3.1 / 6.3 SMMU_GBPA: with SMMUEN = 0 transactions bypass unless GBPA.ABORT, and no
    event is recorded either way."""
    s = Scene()
    s.t.enabled = False
    r = s.go(5, 0x1234)
    assert (r.outcome, r.pa, r.event) == ("bypass", 0x1234, None)
    s.t.gbpa_abort = True
    r = s.go(5, 0x1234)
    assert (r.outcome, r.event) == ("abort", None)


def test_streamid_beyond_the_table_is_c_bad_streamid() -> None:
    """3.3.2 / 6.3 STRTAB_BASE_CFG.LOG2SIZE: a StreamID outside the table is C_BAD_STREAMID,
    recorded only when SMMU_CR2.RECINVSID is set (7.3.2)."""
    s = Scene(log2size=4)
    r = s.go(16, 0)
    assert r.outcome == "abort" and r.event is not None
    assert r.event.type == C_BAD_STREAMID and r.event.streamid == 16 and r.recorded
    s.t.record_bad_sid = False
    assert not s.go(16, 0).recorded


def test_ste_fetch_abort_is_f_ste_fetch_with_its_address() -> None:
    """7.3.3 F_STE_FETCH: an external abort on the STE fetch, FetchAddr the STE's address."""
    s = Scene()
    mem = FaultInjectingMemory(s.mem)
    s.t.mem = mem
    mem.inject(s.ste_pa(3), 64, ACCESS)
    r = s.go(3, 0)
    assert r.event is not None and r.event.type == F_STE_FETCH
    assert r.event.fetchaddr == s.ste_pa(3) and r.outcome == "abort"


def test_invalid_and_illegal_ste_are_c_bad_ste() -> None:
    """5.2: STE.V = 0 and a reserved Config are C_BAD_STE (7.3.4)."""
    s = Scene()
    s.put_ste(1, v=0, config=STE_CONFIG_S1)
    s.put_ste(2, config=0b010)
    for sid in (1, 2):
        r = s.go(sid, 0)
        assert r.event is not None and r.event.type == C_BAD_STE and r.outcome == "abort"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"config": STE_CONFIG_S1, "s1cdmax": 21}, "S1CDMAX above SSIDSIZE"),
        ({"config": STE_CONFIG_S1, "s1cdmax": 4, "s1fmt": 0b11}, "reserved S1Fmt"),
        ({"config": STE_CONFIG_S1, "s1cdmax": 4, "s1dss": 0b11}, "reserved S1DSS"),
        ({"config": STE_CONFIG_S1, "strw": 0b01}, "EL3 StreamWorld"),
        ({"config": STE_CONFIG_S1, "eats": 0b11}, "reserved EATS"),
        ({"config": STE_CONFIG_S1, "eats": 0b10}, "split ATS without nesting"),
        ({"config": STE_CONFIG_S1, "s1contextptr": 1 << 43}, "CD pointer above the OAS"),
    ],
)
def test_illegal_stage1_ste_fields(fields: dict[str, int], why: str) -> None:
    """5.2: each field combination the STE description calls ILLEGAL is C_BAD_STE."""
    s = Scene()
    s.put_ste(7, **fields)
    r = s.go(7, 0)
    assert r.event is not None and r.event.type == C_BAD_STE, why


def test_illegal_stage2_fields() -> None:
    """5.2: an S2TG the SMMU lacks, an S2SL0 that does not fit S2T0SZ, S2AA64 = 0 and an
    EL2 StreamWorld with stage 2 are C_BAD_STE."""
    s = Scene(params=PRESETS["qemu-like"])
    t = s.s2()
    good = s.s2_fields(t)
    for bad in ({"s2tg": 0b11}, {"s2sl0": 0b11}, {"s2aa64": 0}, {"strw": 0b10}):
        s.put_ste(1, config=0b110, **{**good, **bad})
        s.t.cfgi_ste(1, True)
        r = s.go(1, 0)
        assert r.event is not None and r.event.type == C_BAD_STE, bad


def test_config_abort_terminates_without_an_event() -> None:
    """5.2 Config = 0b000: all traffic aborted, no event."""
    s = Scene()
    s.put_ste(1, config=STE_CONFIG_ABORT)
    r = s.go(1, 0x1000)
    assert (r.outcome, r.event, r.recorded) == ("abort", None, False)


def test_config_bypass_passes_through() -> None:
    s = Scene()
    s.stream_bypass(1)
    r = s.go(1, 0xDEAD_B000, is_write=True)
    assert (r.outcome, r.pa) == ("bypass", 0xDEAD_B000)


@pytest.mark.parametrize("granule", [4, 16, 64])
def test_stage1_translation_each_granule(granule: int) -> None:
    """3.4.1 / DDI 0487 D8: a stage 1 page of every granule, the offset carried through."""
    s = Scene()
    t = s.s1(granule, 48)
    page = 1 << {4: 12, 16: 14, 64: 16}[granule]
    t.map(0x10 * page, DATA, page, RW)
    s.stream_s1(1, t)
    r = s.go(1, 0x10 * page + 0x123, is_write=True)
    assert (r.outcome, r.pa, r.size_lg2, r.r, r.w) == (
        "ok",
        DATA + 0x123,
        page.bit_length() - 1,
        True,
        True,
    )


def test_stage1_block_and_ttb1() -> None:
    """A 2 MiB block, and an address with bit 55 set walks TTB1 (DDI 0487 D8 "Translation
    table base and input address range"); the upper bits must then be all ones."""
    s = Scene()
    t0 = s.s1(4, 39)
    t1 = s.s1(4, 39)
    t0.map(0x20_0000, DATA, 0x20_0000, RW)
    t1.map(0x1000, DATA + 0x5000, 0x1000, RW)
    cd = s.cd_image(t0, 3, epd1=0, t1sz=t1.t0sz, tg1=TG1_4K, ttb1=t1.root_pa >> 4)
    s.put_ste(1, config=STE_CONFIG_S1, s1contextptr=s.cd_table({0: cd}) >> 6)
    assert s.go(1, 0x21_2345).pa == DATA + 0x1_2345
    assert s.go(1, 0x21_2345).size_lg2 == 21
    hi = (1 << 64) - (1 << 39) + 0x1000
    assert s.go(1, hi | 0x10).pa == DATA + 0x5010
    bad = s.go(1, (1 << 63) | 0x1000)  # bit 55 clear, bit 63 set: outside both ranges
    assert bad.event is not None and bad.event.type == F_TRANSLATION


def test_tbi_ignores_the_top_byte() -> None:
    """CD.TBI0: bits 63:56 are ignored in the range check (DDI 0487 D8 "Address tagging")."""
    s = Scene()
    t = s.s1(4, 48)
    t.map(0x1000, DATA, 0x1000, RW)
    s.stream_s1(1, t, tbi=1)
    assert s.go(1, 0xAB00_0000_0000_1008).pa == DATA + 8
    assert s.go(1, 0xCD00_0000_0000_1010).pa == DATA + 0x10  # another tag, the same page
    s.stream_s1(2, t, asid=2)
    assert s.go(2, 0xAB00_0000_0000_1008).outcome == "abort"


def test_epd0_disables_the_ttb0_walk() -> None:
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    s.stream_s1(1, t, epd0=1)
    r = s.go(1, 0x1000)
    assert r.event is not None and r.event.type == F_TRANSLATION and not r.event.s2


def test_stage2_only() -> None:
    """Config = stage 2 only: the input address is an IPA (3.4.2)."""
    s = Scene()
    t = s.s2(4, 40)
    t.map(0x4000, DATA, 0x1000, RW)
    s.stream_s2(1, t)
    r = s.go(1, 0x4010, is_write=True)
    assert (r.outcome, r.pa) == ("ok", DATA + 0x10)
    miss = s.go(1, 0x8000)
    assert miss.event is not None and miss.event.type == F_TRANSLATION and miss.event.s2
    assert miss.event.class_ == CLASS_IN and miss.event.ipa == 0x8000


@pytest.mark.parametrize(("g1", "g2"), [(4, 4), (16, 4), (64, 16), (4, 64)])
def test_nested_translation(g1: int, g2: int) -> None:
    """3.4.3 nesting: the CD table, every stage 1 descriptor and the output go through stage
    2. Stage 2 identity-maps the table pool (IPA = PA) and moves the data."""
    s = Scene()
    s1 = s.s1(g1, 48)
    s2 = s.s2(g2, 40)
    s2.map(0x4000_0000, 0x4000_0000, 1 << 28, RW)  # the pool holding CDs and stage 1 tables
    s2.map(0x1000_0000, DATA, 1 << 20, RW)  # the guest's data IPAs
    s1.map(0x7000_0000, 0x1000_0000, 1 << 16, RW)
    ptr = s.cd_table({0: s.cd_image(s1)})
    s.stream_nested(1, s1, s2, ptr)
    r = s.go(1, 0x7000_0010, is_write=True)
    assert (r.outcome, r.pa) == ("ok", DATA + 0x10)


def test_nested_stage2_fault_classes() -> None:
    """7.3.12 CLASS: a stage 2 fault on the CD fetch is CLASS CD, on a stage 1 descriptor
    CLASS TT, on the output address CLASS IN -- each with S2 = 1 and the faulting IPA."""
    s = Scene()
    s1 = s.s1(4, 48)
    s2 = s.s2(4, 40)
    s1.map(0x7000_0000, 0x1000_0000, 0x1000, RW)
    ptr = s.cd_table({0: s.cd_image(s1)})
    # The CD table's IPA is unmapped in stage 2.
    s.stream_nested(1, s1, s2, 0x2000_0000)
    ev = s.go(1, 0x7000_0000).event
    assert ev is not None and (ev.type, ev.s2, ev.class_, ev.ipa) == (
        F_TRANSLATION,
        True,
        CLASS_CD,
        0x2000_0000,
    )
    # The CD is mapped, the stage 1 tables are not.
    s2.map(ptr, ptr, 0x1000, RW)
    s.stream_nested(2, s1, s2, ptr)
    ev = s.go(2, 0x7000_0000).event
    assert ev is not None and (ev.s2, ev.class_, ev.ipa) == (True, CLASS_TT, s1.root_pa)
    assert ev.ttrnw
    # Tables mapped, output IPA not.
    for pa in s1.table_pages:
        if pa != ptr:
            s2.map(pa, pa, 0x1000, RW)
    s.t.tlb.clear()
    ev = s.go(2, 0x7000_0000).event
    assert ev is not None and (ev.s2, ev.class_, ev.ipa) == (True, CLASS_IN, 0x1000_0000)


def test_cd_placed_at_an_ipa_elsewhere_in_pa() -> None:
    """Under nesting S1ContextPtr is an IPA: stage 2 decides where the CD is read."""
    s = Scene()
    s1 = s.s1(4, 48)
    s2 = s.s2(4, 40)
    s1.map(0x1000, 0x1000_0000, 0x1000, RW)
    cd_pa = s.cd_table({0: s.cd_image(s1)})
    s2.map(0x3000_0000, cd_pa, 0x1000, RW)
    s2.map(0x4000_0000, 0x4000_0000, 1 << 28, RW)
    s2.map(0x1000_0000, DATA, 0x1000, RW)
    s.stream_nested(1, s1, s2, 0x3000_0000)
    assert s.go(1, 0x1004).pa == DATA + 4


def test_substreams() -> None:
    """5.2 S1CDMAX / S1DSS and 3.3.2: SSV selects a CD; beyond S1CDMAX is C_BAD_SUBSTREAMID;
    without SSV, S1DSS terminates (F_STREAM_DISABLED), bypasses or uses CD 0."""
    s = Scene()
    ta, tb = s.s1(), s.s1()
    ta.map(0x1000, DATA, 0x1000, RW)
    tb.map(0x1000, DATA + 0x10_0000, 0x1000, RW)
    ptr = s.cd_table({0: s.cd_image(ta, 1), 5: s.cd_image(tb, 2)}, entries=16)
    s.put_ste(1, config=STE_CONFIG_S1, s1contextptr=ptr >> 6, s1cdmax=4)
    assert s.go(1, 0x1000, ssv=True, ssid=5).pa == DATA + 0x10_0000
    assert s.go(1, 0x1000, ssv=True, ssid=0).pa == DATA
    for ev in (s.go(1, 0x1000, ssv=True, ssid=16).event,):
        assert ev is not None and ev.type == C_BAD_SUBSTREAMID
    ev = s.go(1, 0x1000).event
    assert ev is not None and ev.type == F_STREAM_DISABLED
    s.put_ste(2, config=STE_CONFIG_S1, s1contextptr=ptr >> 6, s1cdmax=4, s1dss=S1DSS_BYPASS)
    assert (s.go(2, 0x1000).outcome, s.go(2, 0x1000).pa) == ("bypass", 0x1000)
    s.put_ste(3, config=STE_CONFIG_S1, s1contextptr=ptr >> 6, s1cdmax=4, s1dss=S1DSS_SSID0)
    assert s.go(3, 0x1000).pa == DATA
    # A SubstreamID on a stream without stage 1.
    s.stream_bypass(4)
    ev = s.go(4, 0, ssv=True, ssid=1).event
    assert ev is not None and ev.type == C_BAD_SUBSTREAMID


def test_two_level_cd_table() -> None:
    """5.3 L1CD: a 2-level CD table with 4KB leaf tables (64 CDs each); an invalid L1CD is
    C_BAD_SUBSTREAMID."""
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    l1 = s.cd_table_2level({200: s.cd_image(t, 9)})
    s.put_ste(1, config=STE_CONFIG_S1, s1contextptr=l1 >> 6, s1cdmax=10, s1fmt=S1FMT_4K_L2)
    assert s.go(1, 0x1000, ssv=True, ssid=200).pa == DATA
    ev = s.go(1, 0x1000, ssv=True, ssid=5).event
    assert ev is not None and ev.type == C_BAD_SUBSTREAMID


def test_two_level_stream_table() -> None:
    """5.1 L1STD: StreamIDs spread over level-2 tables; an L1STD with Span = 0 is
    C_BAD_STREAMID."""
    s = Scene(fmt="2level", log2size=16, split=8)
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, RW)
    s.stream_s1(0x1234, t)
    assert s.go(0x1234, 0x1000).pa == DATA
    ev = s.go(0x5678, 0x1000).event
    assert ev is not None and ev.type == C_BAD_STREAMID


def test_bad_cd_and_cd_fetch_abort() -> None:
    """5.4: CD.V = 0, an out-of-range T0SZ and a reserved TG0 are C_BAD_CD; an abort on the
    CD fetch is F_CD_FETCH (7.3.9) with the CD's address."""
    s = Scene()
    t = s.s1()
    for i, bad in enumerate(({"v": 0}, {"t0sz": 12}, {"tg0": 0b11}, {"aa64": 0})):
        s.stream_s1(10 + i, t, **bad)
        ev = s.go(10 + i, 0).event
        assert ev is not None and ev.type == C_BAD_CD, bad
    mem = FaultInjectingMemory(s.mem)
    s.t.mem = mem
    ptr = s.cd_table({0: s.cd_image(t)})
    s.put_ste(20, config=STE_CONFIG_S1, s1contextptr=ptr >> 6)
    mem.inject(ptr, 64, ACCESS)
    ev = s.go(20, 0).event
    assert ev is not None and ev.type == F_CD_FETCH and ev.fetchaddr == ptr


def test_event_records_round_trip_bit_exactly() -> None:
    """7.3: what the translator reports encodes to the 32-byte record and back."""
    s = Scene()
    t = s.s2()
    s.stream_s2(1, t)
    ev = s.go(1, 0xABC_D000, ssv=False, is_write=True, priv=True).event
    assert ev is not None
    assert Event.from_record(ev.record()) == ev
    assert ev.record()[0] == F_TRANSLATION and not ev.rnw and ev.pnu


def test_s2_input_above_s2t0sz_is_a_translation_fault() -> None:
    s = Scene()
    t = s.s2(4, 40)
    s.stream_s2(1, t)
    ev = s.go(1, 1 << 41).event
    assert ev is not None and ev.type == F_TRANSLATION and ev.s2


def test_ips_caps_output_to_the_oas() -> None:
    """CD.IPS above IDR5.OAS behaves as the OAS: a 44-bit OAS rejects a 46-bit output with
    F_ADDR_SIZE (DDI 0487 D8 "Address size fault")."""
    s = Scene(params=PRESETS["qemu-like"])
    t = s.s1()
    t.map(0x1000, 1 << 45, 0x1000, RW)
    s.stream_s1(1, t, ips=PS_48)
    ev = s.go(1, 0x1000).event
    assert ev is not None and ev.name == "F_ADDR_SIZE"
