"""IHI 0070 16.2 "Caching": with correct software -- every change followed by the invalidation
IHI 0070 4.3 / 4.4 requires -- no cache geometry changes a result. Translators read one
memory: default caches, tiny caches (constant eviction: FIFO, random, LRU) and none at all;
the LRU caches stay in the order they would have without the fast path's remembered context."""

from __future__ import annotations

from typing import Any, Final

from hypothesis import example, given, settings
from hypothesis import strategies as st

from iommusim.bits.arm.smmuv3_structures import STE_CONFIG_S1
from iommusim.hw.smmuv3.maintenance import Tlbi
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.transaction import Request
from iommusim.hw.smmuv3.translator import STRTAB_LINEAR, Smmuv3Translator
from iommusim.sw.pgtable import IotlbGather
from iommusim.sw.prot import IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import Scene

PAGES: Final = 4
DATA: Final = 0x8000_0000
PROTS: Final = (IOMMU_READ, IOMMU_READ | IOMMU_WRITE, IOMMU_READ | IOMMU_WRITE | IOMMU_PRIV)

op = st.one_of(
    st.tuples(
        st.just("dma"),
        st.integers(0, 3),  # stream
        st.integers(0, PAGES - 1),
        st.booleans(),  # write
        st.booleans(),  # privileged
        st.booleans(),  # SSV with SSID 1
    ),
    st.tuples(st.just("map"), st.integers(0, 2), st.integers(0, PAGES - 1), st.integers(0, 2)),
    st.tuples(st.just("unmap"), st.integers(0, 2), st.integers(0, PAGES - 1)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(op, min_size=1, max_size=60))
# A cached translation, its page unmapped and invalidated, then used again.
@example([("map", 0, 1, 1), ("dma", 0, 1, 0, 0, 0), ("unmap", 0, 1), ("dma", 0, 1, 0, 0, 0)])
def test_cached_and_uncached_translators_agree(ops: list[tuple[Any, ...]]) -> None:
    s = Scene()
    full = PRESETS["full"]
    others = [
        Smmuv3Translator(
            s.mem,
            full.with_caches(
                ste_entries=1, cd_entries=1, tlb_entries=2, walk_entries=1, replacement="fifo"
            ),
        ),
        Smmuv3Translator(
            s.mem, full.with_caches(ste_entries=0, cd_entries=0, tlb_entries=0, walk_entries=0)
        ),
        Smmuv3Translator(
            s.mem,
            full.with_caches(ste_entries=2, tlb_entries=3, walk_entries=2, replacement="random"),
        ),
    ]
    # Tiny LRU caches twice: the second forgets the fast path's context before every
    # transaction, so the first must keep its caches in the same order without it.
    tiny_lru = full.with_caches(ste_entries=2, cd_entries=2, tlb_entries=2, walk_entries=1)
    lru, lru_ref = Smmuv3Translator(s.mem, tiny_lru), Smmuv3Translator(s.mem, tiny_lru)
    others += [lru, lru_ref]
    for t in others:
        t.set_stream_table(s.strtab, 8, STRTAB_LINEAR, 0)
        t.enabled = True
    xlators = [s.t, *others]
    # Streams 0-1: stage 1 tables A and B (ASIDs 1, 2) with substreams; 2: stage 2 only on
    # table C (VMID 3); 3: nested, stage 1 A over an identity-plus-data stage 2 (VMID 4).
    a, b, c = s.s1(), s.s1(), s.s2()
    tables = (a, b, c)
    asid_of = {0: 1, 1: 2, 2: -1}
    ptr0 = s.cd_table({0: s.cd_image(a, 1), 1: s.cd_image(b, 2)}, entries=2)
    ptr1 = s.cd_table({0: s.cd_image(b, 2), 1: s.cd_image(a, 1)}, entries=2)
    s.put_ste(0, config=STE_CONFIG_S1, s1contextptr=ptr0 >> 6, s1cdmax=1, s1dss=0b10)
    s.put_ste(1, config=STE_CONFIG_S1, s1contextptr=ptr1 >> 6, s1cdmax=1, s1dss=0b10)
    s.stream_s2(2, c, vmid=3)
    n2 = s.s2()
    n2.map(0x4000_0000, 0x4000_0000, 1 << 28, IOMMU_READ | IOMMU_WRITE)
    n2.map(DATA, 0x1_0000_0000, PAGES * 0x1000 * 3, IOMMU_READ | IOMMU_WRITE)
    s.stream_nested(3, a, n2, s.cd_table({0: s.cd_image(a, 1)}), s2vmid=4)
    mapped: set[tuple[int, int]] = set()
    for o in ops:
        if o[0] == "dma":
            _, sid, page, write, priv, ssv = o
            sub = bool(ssv) and sid in (0, 1)
            req = Request(sid, page * 0x1000 + 8, is_write=write, priv=priv, ssv=sub, ssid=int(sub))
            lru_ref.forget_context()
            got = [x.translate(req) for x in xlators]
            assert all(g == got[0] for g in got[1:]), (req, got)
            for cache in ("ste_cache", "cd_cache", "tlb", "walk_cache"):
                assert list(getattr(lru, cache)) == list(getattr(lru_ref, cache)), cache
            continue
        ti, page = o[1], o[2]
        t = tables[ti]
        if (ti, page) in mapped:
            t.unmap(page * 0x1000, 0x1000, IotlbGather())
            mapped.discard((ti, page))
            for x in xlators:
                if ti == 2:
                    x.tlbi(Tlbi("s2_ipa", vmid=3, addr=page * 0x1000))
                else:
                    x.tlbi(Tlbi("nh_va", vmid=0, asid=asid_of[ti], addr=page * 0x1000))
                    x.tlbi(Tlbi("nh_va", vmid=4, asid=asid_of[ti], addr=page * 0x1000))
        if o[0] == "map":
            out = DATA + (ti * PAGES + page) * 0x1000
            t.map(page * 0x1000, out, 0x1000, PROTS[o[3]])
            mapped.add((ti, page))
