"""The SMMUv3 batch engine against the scalar model: random tables, traces and cache
geometries, identical answers and events, caches (contents and replacement order), PMCG
counts and memory (AF updates, event records).

IHI 0070 3.3.1 and 3.4 (the procedure the kernels follow), 16.2 "Caching" (the STE, CD, TLB
and walk caches the engine mirrors), 10.3 (the counted events); Arm DDI 0487 D8 (the walks:
granules, start levels, blocks, AP / S2AP permissions, the Access flag, nG).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from iommusim.bits.arm import smmuv3_pmcg as P
from iommusim.bits.arm.smmuv3_regs import CR0, EVENTQ_BASE, OFF, STRTAB_BASE, STRTAB_BASE_CFG
from iommusim.bits.arm.smmuv3_structures import (
    STE,
    STE_CONFIG_ABORT,
    STE_CONFIG_S1,
    TG1_4K,
    TG1_16K,
    TG1_64K,
)
from iommusim.bits.arm.vmsa import S1_DESC
from iommusim.bits.pgformat import PERM_R
from iommusim.hw.common.cache import BoundedCache, RandomCache
from iommusim.hw.pgtable.vmsa import VmsaWalker
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.perf.engine import (
    JIT_AVAILABLE,
    OUTCOMES,
    Smmuv3BatchEngine,
    smmuv3_request_of,
)
from iommusim.perf.trace import FLAG_EXEC, FLAG_PRIV, FLAG_READ, FLAG_WRITE, Trace, empty
from iommusim.sw.pgtable import ArmLpaePageTable
from iommusim.sw.prot import IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import Scene

pytestmark = pytest.mark.skipif(not JIT_AVAILABLE, reason="numba is not importable")

VA: Final = 0x1000_0000
BLOCK_VA: Final = 0x2000_0000
DATA: Final = 0x8000_0000
BLOCK_PA: Final = 0xC000_0000
#: The nested stream's IPA window (stage 2: read-write, then read-only) and its PA.
IPA: Final = 0x1_0000_0000
IPA_RO: Final = IPA + (1 << 25)
S2_PA: Final = 0x10_0000_0000
#: The nested stream's address whose walk loops (indices 0, 1, 0, 1 from level 0): tables
#: P0, P1, P0, P1, the level 1 entry read again at level 3 as the page (see Image).
LOOP_VA: Final = 1 << 30 | 1 << 12
RW: Final = IOMMU_READ | IOMMU_WRITE
#: Leaf permissions: read-write for all, read-only, privileged only.
PROTS: Final = (RW, RW, IOMMU_READ, RW | IOMMU_PRIV)
#: Leaf edits after mapping: none, Access flag cleared, nG cleared (a global entry).
EDITS: Final = ("", "", "", "no_af", "global")
_AF: Final = S1_DESC[4].mask("af")
_NG: Final = S1_DESC[4].mask("ng")
_TG1: Final = {4: TG1_4K, 16: TG1_16K, 64: TG1_64K}
SIDS: Final = (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5, 6, 7)


def leaf_pa(mem: Any, table: ArmLpaePageTable, va: int) -> int:
    """Where the leaf descriptor of ``va`` lives (the hardware walk's last read)."""
    trace: list[Any] = []
    w = VmsaWalker(table.pt, mem, 48, False, False)
    w.walk(table.root_pa, va, PERM_R, True, False, trace)
    return int(trace[-1].pa)


class Image:
    """Streams over one memory: 0 stage 1 with two substreams (tables A, ASID 1, and B,
    ASID 2, mapping the same addresses), 1 stage 1 on A through TTB0 and TTB1 with hardware
    Access flag updates, 2 stage 2 only, 3 nested (stage 1 N over that stage 2; N's level 1
    table points back at its start table for :data:`LOOP_VA`, a recursive mapping), 4
    bypass, 5 abort, 6 an invalid STE, 7 an STE whose CD is invalid."""

    def __init__(
        self,
        granule: int,
        ia_bits: int,
        s2_granule: int,
        leaves: list[tuple[int, str]],
        caches: dict[str, Any],
    ) -> None:
        self.scene = s = Scene(PRESETS["full"], **caches)
        self.mem = s.mem
        self.t = s.t
        unit = 1 << {4: 12, 16: 14, 64: 16}[granule]
        a, b = s.s1(granule, ia_bits), s.s1(granule, ia_bits)
        n = s.s1(4, 48)
        s2 = s.s2(s2_granule, 40)
        s2.map(0x4000_0000, 0x4000_0000, 1 << 28, RW)  # the table pool: IPA = PA
        s2.map(IPA, S2_PA, 1 << 25, RW)
        s2.map(IPA_RO, S2_PA + (1 << 25), 1 << 25, IOMMU_READ)
        edits: list[tuple[ArmLpaePageTable, int, str]] = []
        for i, (prot, edit) in enumerate(leaves):
            a.map(VA + i * unit, DATA + i * unit, unit, prot)
            b.map(VA + i * unit, DATA + (i + 64) * unit, unit, PROTS[(i + 1) % len(PROTS)])
            n.map(VA + i * 4096, (IPA_RO if edit == "global" else IPA) + i * 4096, 4096, prot)
            edits += [(a, VA + i * unit, edit), (n, VA + i * 4096, edit)]
            edits.append((b, VA + i * unit, "global" if edit == "" and i % 2 else ""))
        # DDI 0487 D8: bits[1:0] = 0b11 is a table descriptor at levels 0-2 and a page
        # descriptor at level 3, where AF and AP[1] (EL0 access) apply.
        d = S1_DESC[4]
        p1 = d["oa"].get(self.mem.read64(n.root_pa)) << 12
        self.mem.write64(p1 + 8, d.encode(valid=1, table=1, ap1=1, af=1, oa=n.root_pa >> 12))
        block = 1 << (a.pt.level_shift(1))
        a.map(BLOCK_VA, BLOCK_PA, block, RW)
        for table, va, edit in edits:
            if edit:
                pa = leaf_pa(self.mem, table, va)
                pte = self.mem.read64(pa)
                self.mem.write64(pa, pte & ~(_AF if edit == "no_af" else _NG))
        ptr = s.cd_table({0: s.cd_image(a, 1), 1: s.cd_image(b, 2)})
        s.put_ste(0, config=STE_CONFIG_S1, s1contextptr=ptr >> 6, s1cdmax=1, s1dss=0b10)
        two = s.cd_image(
            a, 1, epd1=0, t1sz=a.t0sz, tg1=_TG1[granule], ttb1=a.root_pa >> 4, ha=1, hd=1
        )
        s.put_ste(1, config=STE_CONFIG_S1, s1contextptr=s.cd_table({0: two}) >> 6)
        s.stream_s2(2, s2, vmid=3)
        s.stream_nested(3, n, s2, s.cd_table({0: s.cd_image(n, 4)}), vmid=4)
        s.stream_bypass(4)
        s.put_ste(5, config=STE_CONFIG_ABORT)
        s.put_ste(6, v=0, config=STE_CONFIG_S1)
        s.put_ste(7, config=STE_CONFIG_S1, s1contextptr=s.cd_table({0: 0}) >> 6)


def addresses(granule: int, ia_bits: int, npages: int) -> list[int]:
    """Addresses worth asking about: the mapped pages (and one past), the block, the TTB1
    alias of the pages, the stage 2 windows, one beyond every input range."""
    unit = 1 << {4: 12, 16: 14, 64: 16}[granule]
    pages = [VA + i * unit for i in range(npages + 1)]
    high = -(1 << ia_bits) & ((1 << 64) - 1)
    return [
        *pages,
        *(va | high for va in pages[:4]),
        BLOCK_VA,
        BLOCK_VA + 3 * 4096,
        IPA + 4096,
        IPA_RO + 8192,
        LOOP_VA,
        1 << 50,
    ]


def cache_state(cache: BoundedCache[Any, Any]) -> object:
    """What must match: keys in replacement order (a random cache: its slots and generator)
    and the entries (STEs and CDs by their images: their walkers are per translator)."""

    def value(v: Any) -> object:
        return v.raw if hasattr(v, "raw") else v

    items = [(k, value(v)) for k, v in cache.items()]
    if isinstance(cache, RandomCache):
        return cache.slots, cache.state, sorted(items, key=repr)
    return items


@st.composite
def scenes(
    draw: st.DrawFn,
    sids: tuple[int, ...] = SIDS,
    config_entries: tuple[int, ...] = (0, 1, 2, 64, 64, 64),
    tlb_entries: tuple[int, ...] = (0, 1, 2, 3, 8, 64),
    walk_entries: tuple[int, ...] = (0, 1, 2, 64),
    granules: tuple[int, ...] = (4, 4, 4, 16, 64),
    pasids: tuple[int, ...] = (-1, -1, -1, -1, -1, -1, 0, 1, 2),
) -> tuple[dict[str, Any], Trace, list[int], int]:
    """An image, a trace over streams ``sids``, where to cut it into replays and the
    engine's max_burst; the STE / CD cache, TLB and walk cache sizes, the stage 1 granule of
    tables A and B and the rows' SubstreamIDs drawn from the tuples."""
    granule = draw(st.sampled_from(granules))
    npages = draw(st.integers(1, 8))
    config: dict[str, Any] = {
        "granule": granule,
        "ia_bits": draw(st.sampled_from([48, 39, 32, 30])),
        "s2_granule": draw(st.sampled_from([4, 4, 16])),
        "leaves": draw(
            st.lists(
                st.tuples(st.sampled_from(PROTS), st.sampled_from(EDITS)),
                min_size=npages,
                max_size=npages,
            )
        ),
        "caches": {
            "ste_entries": draw(st.sampled_from(config_entries)),
            "cd_entries": draw(st.sampled_from(config_entries)),
            "tlb_entries": draw(st.sampled_from(tlb_entries)),
            "walk_entries": draw(st.sampled_from(walk_entries)),
            "replacement": draw(st.sampled_from(["lru", "fifo", "random"])),
            "seed": draw(st.integers(0, 3)),
        },
    }
    # A working set of requests, repeated: locality, as in a real trace.
    pool = addresses(granule, config["ia_bits"], npages)
    working = []
    for _ in range(draw(st.integers(1, 10))):
        flags = draw(st.sampled_from([FLAG_READ] * 5 + [FLAG_WRITE] * 2 + [FLAG_EXEC]))
        if draw(st.integers(0, 3)) == 0:
            flags |= FLAG_PRIV
        # Mostly the mapped pages; the other addresses fault somewhere.
        va = draw(st.sampled_from(pool[: npages + 1] * 3 + pool)) | draw(st.integers(0, 511)) * 8
        pasid = draw(st.sampled_from(pasids))
        working.append((draw(st.sampled_from(sids)), pasid, va, 8, flags))
    n = draw(st.integers(1, 120))
    rows = empty(n)
    for i in range(n):
        rows[i] = (i, *working[draw(st.integers(0, len(working) - 1))])
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    return config, rows, cuts, draw(st.sampled_from([1, 1, 4096]))


def check_replay(scene: tuple[dict[str, Any], Trace, list[int], int]) -> None:
    """Replay the scene's trace through the engine (cut into replays) and one row at a time
    through the scalar model: the same answers, events, caches, counts and memory."""
    config, rows, cuts, max_burst = scene
    ref = Image(**config)
    fast = Image(**config)
    engine = Smmuv3BatchEngine(fast.t, max_burst=max_burst)
    got = [engine.replay(rows[a:b]) for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    pa = np.concatenate([g.pa for g in got]).tolist()
    outcome = np.concatenate([g.outcome for g in got]).tolist()
    evt = np.concatenate([g.event for g in got]).tolist()
    for i, row in enumerate(rows.tolist()):
        _, sid, pasid, va, _, flags = row
        want = ref.t.translate(smmuv3_request_of(sid, pasid, va, flags))
        wevt = want.event.type if want.event is not None else 0
        assert (pa[i], OUTCOMES[outcome[i]], evt[i]) == (want.pa, want.outcome, wevt), row
    for name in ("ste_cache", "cd_cache", "tlb", "walk_cache"):
        assert cache_state(getattr(fast.t, name)) == cache_state(getattr(ref.t, name)), name
    assert fast.t.counts == ref.t.counts
    assert dict(fast.mem.pages()) == dict(ref.mem.pages())
    assert engine.stats.rows == engine.stats.engine_rows + engine.stats.scalar_rows
    event(f"kernel rows: {engine.stats.engine_rows * 4 // len(rows)}/4")
    event(f"kernel rows > 0: {engine.stats.engine_rows > 0}")
    event(f"kernel walks: {engine.stats.walks > 0}, TLB hits: {engine.stats.iotlb_hits > 0}")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scene=scenes())
def test_the_engine_answers_as_the_scalar_model_does(
    scene: tuple[dict[str, Any], Trace, list[int], int],
) -> None:
    check_replay(scene)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scene=scenes((3, 3, 3, 2), (64,), (0, 0, 1, 2), (1, 1, 2, 3, 5), (4,), (-1,)))
def test_nested_walks_through_a_tiny_walk_cache_answer_as_the_scalar_model_does(
    scene: tuple[dict[str, Any], Trace, list[int], int],
) -> None:
    """IHI 0070 16.2: fills of a walk cache smaller than the walks' table pages evict
    entries of the same walk (and, for LOOP_VA, the page it looks up again): the kernels
    choose the scalar model's victims under every replacement policy."""
    check_replay(scene)


def trace_of(sid: int, vas: list[int], flags: int = FLAG_READ) -> Trace:
    rows = empty(len(vas))
    rows["device_id"] = sid
    rows["pasid"] = -1
    rows["iova"] = vas
    rows["flags"] = flags
    rows["size"] = 8
    return rows


def test_a_clean_trace_is_answered_by_the_kernels() -> None:
    caches = {"tlb_entries": 4, "walk_entries": 4}
    fast = Image(4, 48, 4, [(RW, "")] * 8, caches)
    ref = Image(4, 48, 4, [(RW, "")] * 8, caches)
    engine = Smmuv3BatchEngine(fast.t)
    for sid, base in ((0, VA), (3, VA), (2, IPA), (4, VA)):
        vas = [base + (i % 8) * 4096 + 16 for i in range(1000)]
        out = engine.replay(trace_of(sid, vas))
        want = [ref.t.translate(smmuv3_request_of(sid, -1, va, FLAG_READ)).pa for va in vas]
        assert out.pa.tolist() == want
    # Each stream's first row fetches its STE (and CD) in the scalar model; the rest are the
    # kernels': walks (4 TLB entries over 8 pages in LRU order never hit) and bypasses.
    assert engine.stats.scalar_rows == 4
    assert engine.stats.walks == 3 * 999
    assert fast.t.counts == ref.t.counts


@pytest.mark.parametrize("replacement", ["lru", "fifo", "random"])
@pytest.mark.parametrize("walk_entries", [1, 2, 3])
def test_walk_cache_fills_that_evict_what_the_row_looks_up_next_are_the_kernels(
    walk_entries: int, replacement: str
) -> None:
    """IHI 0070 16.2: a walk cache smaller than a nested walk's table pages. Every row's
    fills evict entries that it looks up afterwards (the next level's, or -- the recursive
    LOOP_VA, tables P0, P1, P0, P1 -- the same page again); the kernels answer all of them,
    choosing the scalar model's victims."""
    caches = {"tlb_entries": 0, "walk_entries": walk_entries, "replacement": replacement}
    fast = Image(4, 48, 4, [(RW, "")] * 8, {**caches, "seed": 1})
    ref = Image(4, 48, 4, [(RW, "")] * 8, {**caches, "seed": 1})
    engine = Smmuv3BatchEngine(fast.t)
    vas = [LOOP_VA if i % 3 == 0 else VA + (i * 5 % 8) * 4096 for i in range(300)]
    out = engine.replay(trace_of(3, vas))
    want = [ref.t.translate(smmuv3_request_of(3, -1, va, FLAG_READ)) for va in vas]
    assert [OUTCOMES[o] for o in out.outcome.tolist()] == ["ok"] * 300
    assert out.pa.tolist() == [w.pa for w in want]
    assert engine.stats.scalar_rows == 1  # the STE and CD fetch
    assert engine.stats.engine_rows == engine.stats.walks == 299
    for name in ("tlb", "walk_cache"):
        assert cache_state(getattr(fast.t, name)) == cache_state(getattr(ref.t, name)), name
    assert fast.t.counts == ref.t.counts


def test_random_replacement_evicts_as_the_scalar_model_does() -> None:
    caches = {"tlb_entries": 4, "walk_entries": 8, "replacement": "random", "seed": 5}
    fast = Image(4, 48, 4, [(RW, "")] * 8, caches)
    ref = Image(4, 48, 4, [(RW, "")] * 8, caches)
    engine = Smmuv3BatchEngine(fast.t)
    vas = [VA + (i * 5 % 8) * 4096 for i in range(1000)]
    engine.replay(trace_of(3, vas))
    for va in vas:
        ref.t.translate(smmuv3_request_of(3, -1, va, FLAG_READ))
    assert engine.stats.scalar_rows == 1
    for name in ("tlb", "walk_cache"):
        mine, theirs = getattr(fast.t, name), getattr(ref.t, name)
        assert isinstance(mine, RandomCache) and isinstance(theirs, RandomCache)
        assert (mine.slots, mine.state) == (theirs.slots, theirs.state)
    assert ref.t.tlb.state != caches["seed"] + 2  # evictions drew from the TLB's generator
    # Random replacement of 4 entries over 8 pages hits sometimes, unlike FIFO's cycle.
    assert 0 < engine.stats.iotlb_hits < 999
    assert fast.t.counts == ref.t.counts


def smmu_on(image: Image) -> Smmuv3:
    """An SMMU over the image's memory and stream table, its event queue at 0x20_0000."""
    smmu = Smmuv3(image.mem, image.scene.params)
    w = smmu.write_register
    w(OFF.STRTAB_BASE, 8, STRTAB_BASE.encode(addr=image.scene.strtab >> 6))
    w(OFF.STRTAB_BASE_CFG, 4, STRTAB_BASE_CFG.encode(log2size=8))
    w(OFF.EVENTQ_BASE, 8, EVENTQ_BASE.encode(addr=0x20_0000 >> 5, log2size=4))
    w(OFF.CR0, 4, CR0.encode(smmuen=1, eventqen=1))
    return smmu


def test_on_an_smmu_events_are_recorded_and_the_pmcg_counts_the_kernels_rows() -> None:
    fast_image = Image(4, 48, 4, [(RW, ""), (IOMMU_READ, "")] * 4, {})
    ref_image = Image(4, 48, 4, [(RW, ""), (IOMMU_READ, "")] * 4, {})
    fast, ref = smmu_on(fast_image), smmu_on(ref_image)
    for smmu in (fast, ref):
        assert smmu.pmcg is not None
        for i, evt in enumerate((P.EVENT_TRANSACTION, P.EVENT_TLB_MISS, P.EVENT_WALK_ACCESS)):
            smmu.pmcg.write_register(P.PMCG_EVTYPER + 4 * i, 4, P.EVTYPER.encode(event=evt))
        smmu.pmcg.write_register(P.PMCG_CNTENSET0, 4, 0b111)
        smmu.pmcg.write_register(P.PMCG_CR, 4, P.CR.encode(e=1))
    vas = [VA + (i % 8) * 4096 for i in range(200)]
    rows = trace_of(0, vas, FLAG_WRITE)  # odd pages are read-only: permission faults
    out = Smmuv3BatchEngine(fast).replay(rows)
    for va in vas:
        ref.translate(smmuv3_request_of(0, -1, va, FLAG_WRITE))
    assert [OUTCOMES[o] for o in out.outcome.tolist()[:2]] == ["ok", "abort"]
    assert dict(fast_image.mem.pages()) == dict(ref_image.mem.pages())  # the event queue
    assert fast.read_register(OFF.EVENTQ_PROD, 4) == ref.read_register(OFF.EVENTQ_PROD, 4) > 0
    assert fast.pmcg is not None and ref.pmcg is not None
    assert [fast.pmcg.counter(i) for i in range(3)] == [ref.pmcg.counter(i) for i in range(3)]
    assert fast.pmcg.counter(0) == 200


def test_ste_cont_spans_are_left_to_the_scalar_model() -> None:
    """STE.CONT span entries (IHI 0070 5.2) are matched by the scalar lookup only: once one is
    cached, the engine hands every row to the scalar model -- answers, caches and counts stay
    the scalar model's."""
    fast = Image(4, 48, 4, [(RW, "")] * 8, {"tlb_entries": 4})
    ref = Image(4, 48, 4, [(RW, "")] * 8, {"tlb_entries": 4})
    for img in (fast, ref):
        dw1 = img.scene.ste_pa(4) + 8  # stream 4 bypasses; make it a span of two
        img.mem.write64(dw1, img.mem.read64(dw1) | STE.encode(cont=1) >> 64)
    engine = Smmuv3BatchEngine(fast.t)
    vas = [VA + (i % 8) * 4096 for i in range(200)]
    rows = np.concatenate([trace_of(3, vas), trace_of(4, vas), trace_of(3, vas)])
    out = engine.replay(rows)
    want = [ref.t.translate(smmuv3_request_of(int(r[1]), -1, int(r[3]), FLAG_READ)) for r in rows]
    assert out.pa.tolist() == [w.pa for w in want]
    assert list(fast.t.ste_spans) == list(ref.t.ste_spans) == [(4, 1)]
    assert engine.stats.engine_rows == 199 and engine.stats.scalar_rows == 401
    assert fast.t.counts == ref.t.counts
