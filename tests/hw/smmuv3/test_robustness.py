"""Whatever the memory image, the SMMUv3 translator answers with the architecture's outcome
-- a translation or an event -- and never raises (DESIGN: bad input to hardware gives the
spec's fault, never a Python exception). Random STE / L1 / CD / descriptor doublewords over a
scene with real tables, random requests, on every preset."""

from __future__ import annotations

from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.transaction import AT_ATS_REQUEST, AT_TRANSLATED, Request
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import POOL, Scene

U64: Final = (1 << 64) - 1

requests = st.builds(
    Request,
    sid=st.integers(0, 300),
    addr=st.one_of(st.integers(0, U64), st.integers(0, 0x3FFF)),
    is_write=st.booleans(),
    ssv=st.booleans(),
    ssid=st.integers(0, (1 << 20) - 1),
    priv=st.booleans(),
    instr=st.booleans(),
    at=st.sampled_from((0, AT_TRANSLATED, AT_ATS_REQUEST)),
    no_write=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(PRESETS)),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 4095), st.integers(0, U64)), max_size=80),
    st.lists(requests, min_size=1, max_size=12),
)
def test_no_memory_image_makes_the_translator_raise(
    preset: str, two_level: bool, noise: list[tuple[int, int]], reqs: list[Request]
) -> None:
    s = Scene(params=PRESETS[preset], fmt="2level" if two_level else "linear", log2size=8)
    t1 = s.s1()
    t1.map(0x1000, 0x8000_0000, 0x2000, IOMMU_READ | IOMMU_WRITE)
    s.stream_s1(1, t1)
    s.stream_bypass(2)
    if PRESETS[preset].idr0_field("s2p"):
        t2 = s.s2()
        t2.map(0x1000, 0x8000_0000, 0x1000, IOMMU_READ)
        s.stream_s2(3, t2)
    # Random doublewords over the pool: STEs, L1 descriptors, CDs and tables all live here.
    for index, value in noise:
        s.mem.write64(POOL + index * 8, value)
    for req in reqs:
        r = s.t.translate(req)
        assert r.outcome in ("ok", "bypass", "abort", "raz_wi", "stalled", "ur")
        if r.event is not None:
            assert len(r.event.record()) == 32
