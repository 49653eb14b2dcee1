"""IHI 0070 10 "Performance Monitor Counter Groups": counters programmed and read through the
PMCG page count the SMMU's transactions, TLB misses, configuration misses and table-walk
accesses (10.3 events) while enabled (10.4 SMMU_PMCG_CR.E, CNTENSET0)."""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm import smmuv3_pmcg as P
from iommusim.hw.smmuv3.maintenance import TranslationCounts
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.pmcg import Pmcg
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.sw.prot import IOMMU_READ
from testsupport.smmuv3_scene import Scene

DATA: Final = 0x8000_0000


def program(pmcg: Pmcg, events: list[int]) -> None:
    for i, e in enumerate(events):
        pmcg.write_register(P.PMCG_EVTYPER + 4 * i, 4, P.EVTYPER.encode(event=e))
    pmcg.write_register(P.PMCG_CNTENSET0, 4, (1 << len(events)) - 1)
    pmcg.write_register(P.PMCG_CR, 4, P.CR.encode(e=1))


def test_identification_registers() -> None:
    """10.4 SMMU_PMCG_CFGR: NCTR = counters - 1, SIZE = 63; CEID0 names events 1-7."""
    smmu = Smmuv3(Scene().mem, PRESETS["full"])
    assert smmu.pmcg is not None
    cfgr = smmu.pmcg.read_register(P.PMCG_CFGR, 4)
    assert P.CFGR["nctr"].get(cfgr) == PRESETS["full"].num_counters - 1
    assert P.CFGR["size"].get(cfgr) == 63
    assert smmu.pmcg.read_register(P.PMCG_CEID0, 8) == 0xFE
    assert Smmuv3(Scene().mem, PRESETS["qemu-like"]).pmcg is None


def test_counters_count_the_translations() -> None:
    s = Scene()
    t = s.s1()
    t.map(0x1000, DATA, 0x1000, IOMMU_READ)
    s.stream_s1(1, t)
    smmu = Smmuv3(s.mem, s.params, translator=s.t)
    s.t.enabled = True  # as if SMMUEN were set (the scene latched the stream table)
    pmcg = smmu.pmcg
    assert pmcg is not None
    s.go(1, 0x1000)  # before the counters are enabled: not counted
    events = [P.EVENT_TRANSACTION, P.EVENT_TLB_MISS, P.EVENT_CONFIG_MISS, P.EVENT_WALK_ACCESS]
    program(pmcg, events)
    s.t.cfgi_ste_range(0, 31)
    s.t.tlb.clear()
    for _ in range(3):
        s.go(1, 0x1000)
    # 3 transactions, 1 TLB miss, 2 configuration misses (STE, CD), 4 descriptor reads.
    got = [pmcg.read_register(P.PMCG_EVCNTR + 8 * i, 8) for i in range(4)]
    assert got == [3, 1, 2, 4]
    pmcg.write_register(P.PMCG_CNTENCLR0, 4, 1)  # counter 0 stops
    s.go(1, 0x1000)
    assert pmcg.read_register(P.PMCG_EVCNTR, 8) == 3
    pmcg.write_register(P.PMCG_CR, 4, 0)  # every counter stops
    s.go(1, 0x1000)
    assert pmcg.read_register(P.PMCG_EVCNTR + 8, 8) == 1


def test_counter_write_and_overflow() -> None:
    """10.4 SMMU_PMCG_EVCNTR<n> is writable; counting past its width wraps and sets the
    counter's OVSSET0 bit, cleared by OVSCLR0."""
    counts = TranslationCounts()
    pmcg = Pmcg(counts, 2, counter_bits=32)
    program(pmcg, [P.EVENT_TRANSACTION])
    pmcg.write_register(P.PMCG_EVCNTR, 4, 0xFFFF_FFFE)
    counts.transactions += 3
    assert pmcg.read_register(P.PMCG_EVCNTR, 4) == 1
    assert pmcg.read_register(P.PMCG_OVSSET0, 4) == 1
    pmcg.write_register(P.PMCG_OVSCLR0, 4, 1)
    assert pmcg.read_register(P.PMCG_OVSSET0, 4) == 0


def test_bad_accesses_are_ignored() -> None:
    pmcg = Pmcg(TranslationCounts(), 4)
    pmcg.write_register(P.PMCG_CR, 3, 1)
    assert pmcg.read_register(P.PMCG_CR + 1, 4) == 0
    assert pmcg.read_register(P.PMCG_CR, 4) == 0
