"""The batch engine against the scalar model: random tables and traces, identical answers,
caches (contents and replacement order), performance counters and memory (A/D updates).

riscv-iommu: "Caching in-memory data structures" (the caches the engine mirrors), "Process to
translate an IOVA" (the walks), "Standard Events list" (the counters compared).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from iommusim.bits.riscv.regs import OFF_IOHPMCTR, OFF_IOHPMEVT
from iommusim.hw.common.cache import RandomCache
from iommusim.hw.riscv.context import TC_GADE, TC_PDTV, TC_SADE, TC_V
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, CacheParams
from iommusim.mem import SparseMemory
from iommusim.perf.engine import JIT_AVAILABLE, BatchEngine, request_of
from iommusim.perf.trace import FLAG_EXEC, FLAG_PRIV, FLAG_READ, FLAG_WRITE, empty

PAGE = 4096
VA = 0x4000_0000
SPA_OFF = 0x20_0000_0000
#: Leaf flags: V R W U A D; V R W U A (clean); V R W U (no A); V R U A D (read-only);
#: V R W A D (supervisor); invalid; V W U A D (W without R: reserved); with G.
LEAVES = (0xD7, 0xD7, 0xD7, 0x57, 0x17, 0xD3, 0xCF, 0x00, 0xD5, 0xF7)
EVENTS = (1, 4, 5, 6, 7, 8)
pytestmark = pytest.mark.skipif(not JIT_AVAILABLE, reason="numba is not importable")


class Image:
    """Sv39 (or PD8 + Sv39 + Sv39x4) tables for devices 5 and 7 (6 has an invalid DC)."""

    def __init__(self, two_stage: bool, leaves: list[int], sade: bool, caches: CacheParams):
        self.mem = mem = SparseMemory()
        self.next = 0x1000_0000
        self.iommu = RiscvIommu(mem, PRESETS["full"].with_(caches=caches))
        ddt = self.page()
        tc = TC_V | (TC_SADE if sade else 0)
        if two_stage:
            g_root = (self.page(8) + 0x3FFF) & ~0x3FFF
            self.g_root = g_root
            self.gnext = 0x10_0000
            pdt = self.gpage()
            s1 = self.gpage()
            # PD8: process 1 valid (ENS, SUM), process 2 invalid.
            mem.write64(pdt + SPA_OFF + 16, 1 | 1 << 1 | 1 << 2 | 3 << 12)
            mem.write64(pdt + SPA_OFF + 24, 8 << 60 | s1 >> 12)
            for i, flags in enumerate(leaves):
                data = 0x1000_0000 + i * PAGE
                self.map(g_root, data, data + SPA_OFF, 0xD7, 11)
                self.map(s1, VA + i * PAGE, data, flags, 9, guest=True)
            for did in (5, 7):
                dc = ddt + did * 64
                mem.write64(dc, tc | TC_PDTV | (TC_GADE if sade else 0))
                mem.write64(dc + 8, 8 << 60 | did << 44 | g_root >> 12)
                mem.write64(dc + 24, 1 << 60 | pdt >> 12)
        else:
            s1 = self.page()
            for i, flags in enumerate(leaves):
                self.map(s1, VA + i * PAGE, 0x8000_0000 + i * PAGE, flags, 9)
            # A 2 MiB superpage at 0x8000_0000.
            l1 = self.page()
            mem.write64(s1 + 2 * 8, (l1 >> 12) << 10 | 1)
            mem.write64(l1, (0x4000_0000 >> 12) << 10 | 0xD7)
            for did in (5, 7):
                dc = ddt + did * 64
                mem.write64(dc, tc)
                mem.write64(dc + 16, did << 12)  # PSCID
                mem.write64(dc + 24, 8 << 60 | s1 >> 12)
        mem.write64(ddt + 6 * 64, 0)
        self.iommu.write_register(16, 8, ddt >> 12 << 10 | 2)  # ddtp 1LVL
        for n, selected in enumerate(EVENTS, start=1):
            self.iommu.write_register(OFF_IOHPMEVT + 8 * (n - 1), 8, selected)

    def page(self, n: int = 1) -> int:
        pa = self.next
        self.next += n * PAGE
        return pa

    def gpage(self) -> int:
        gpa = self.gnext
        self.gnext += PAGE
        self.map(self.g_root, gpa, gpa + SPA_OFF, 0xD7, 11)
        return gpa

    def map(self, root: int, va: int, pa: int, flags: int, root_bits: int, guest: bool = False):
        off = SPA_OFF if guest else 0
        table = root
        for lvl in (2, 1):
            bits = root_bits if lvl == 2 else 9
            at = table + (va >> (12 + 9 * lvl) & ((1 << bits) - 1)) * 8 + off
            pte = self.mem.read64(at)
            if not pte & 1:
                nxt = self.gpage() if guest else self.page()
                self.mem.write64(at, (nxt >> 12) << 10 | 1)
                table = nxt
            else:
                table = (pte >> 10 & ((1 << 44) - 1)) << 12
        self.mem.write64(table + (va >> 12 & 511) * 8 + off, (pa >> 12) << 10 | flags)

    def counters(self) -> list[int]:
        return [self.iommu.read_register(OFF_IOHPMCTR + 8 * n, 8) for n in range(len(EVENTS))]


@st.composite
def scenes(draw: st.DrawFn) -> tuple[dict[str, object], np.ndarray, list[int], int]:
    two = draw(st.booleans())
    npages = draw(st.integers(1, 12))
    config = {
        "two_stage": two,
        "leaves": draw(st.lists(st.sampled_from(LEAVES), min_size=npages, max_size=npages)),
        "sade": draw(st.booleans()),
        "caches": CacheParams(
            ddtc_entries=draw(st.sampled_from([0, 1, 2, 2, 64])),
            pdtc_entries=draw(st.sampled_from([0, 1, 2, 2, 64])),
            iotlb_entries=draw(st.sampled_from([0, 1, 2, 3, 8, 64])),
            replacement=draw(st.sampled_from(["lru", "fifo", "random"])),
            seed=draw(st.integers(0, 3)),
            iotlb_superpages=draw(st.booleans()),
        ),
    }
    n = draw(st.integers(1, 80))
    rows = empty(n)
    for i in range(n):
        did = draw(st.sampled_from([5] * 6 + [7, 6]))
        if draw(st.integers(0, 9)) == 0:
            va = 0x8000_0000 + draw(st.integers(0, 511)) * PAGE  # superpage (or unmapped)
        else:
            va = VA + draw(st.integers(0, npages)) * PAGE
        pasid = draw(st.sampled_from([1] * 6 + [2, 300, -1] if two else [-1] * 8 + [1]))
        flags = draw(st.sampled_from([FLAG_READ] * 4 + [FLAG_WRITE] * 3 + [FLAG_EXEC]))
        if pasid >= 0 and draw(st.booleans()):
            flags |= FLAG_PRIV
        rows[i] = (i, did, pasid, va | draw(st.integers(0, 511)) * 8, 8, flags)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    return config, rows, cuts, draw(st.sampled_from([1, 1, 4096]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scene=scenes())
def test_the_engine_answers_as_the_scalar_model_does(
    scene: tuple[dict[str, object], np.ndarray, list[int], int],
) -> None:
    config, rows, cuts, max_burst = scene
    ref = Image(**config)  # type: ignore[arg-type]
    fast = Image(**config)  # type: ignore[arg-type]
    engine = BatchEngine(fast.iommu, max_burst=max_burst)
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        got.append(engine.replay(rows[a:b]))
    pa = np.concatenate([g.pa for g in got])
    cause = np.concatenate([g.cause for g in got])
    pbmt = np.concatenate([g.pbmt for g in got])
    for i, row in enumerate(rows.tolist()):
        _, did, pasid, iova, _, flags = row
        want = ref.iommu.translate(request_of(did, pasid, iova, flags))
        assert (int(pa[i]), int(cause[i]), int(pbmt[i])) == (
            want.pa if want.ok else 0,
            0 if want.ok else want.cause,
            want.pbmt if want.ok else 0,
        ), f"row {i}: {row}"
    for cache in ("iotlb", "ddtc", "pdtc"):
        mine = getattr(fast.iommu.engine, cache)
        theirs = getattr(ref.iommu.engine, cache)
        if isinstance(theirs, RandomCache):
            # Random replacement: the same entries in the same slots, the same generator.
            assert (mine.slots, mine.state) == (theirs.slots, theirs.state), cache
            assert sorted(mine) == sorted(theirs), cache
        else:
            assert list(mine) == list(theirs), cache
    assert dict(fast.iommu.engine.iotlb) == dict(ref.iommu.engine.iotlb)
    assert fast.counters() == ref.counters()
    assert dict(fast.mem.pages()) == dict(ref.mem.pages())
    assert fast.iommu.last_fault == ref.iommu.last_fault
    assert engine.stats.rows == engine.stats.engine_rows + engine.stats.scalar_rows
    event(f"kernel rows: {engine.stats.engine_rows * 4 // len(rows)}/4")
    event(f"kernel IOTLB hits: {engine.stats.iotlb_hits > 0}")


def reads_of(iovas: np.ndarray) -> np.ndarray:
    """8-byte reads by device 5 without a PASID, one per IOVA."""
    rows = empty(len(iovas))
    rows["device_id"] = 5
    rows["pasid"] = -1
    rows["iova"] = iovas
    rows["flags"] = FLAG_READ
    rows["size"] = 8
    return rows


def test_a_clean_trace_is_answered_by_the_kernels() -> None:
    scene = Image(False, [0xD7] * 8, True, CacheParams(iotlb_entries=4))
    engine = BatchEngine(scene.iommu)
    rows = reads_of(VA + (np.arange(1000) % 8) * PAGE)
    out = engine.replay(rows)
    assert out.pa.tolist() == (0x8000_0000 + (np.arange(1000) % 8) * PAGE).tolist()
    # The first row walks the DDT in the scalar model; the rest are the kernels'.
    assert engine.stats.scalar_rows == 1
    assert engine.stats.walks + engine.stats.iotlb_hits == 999


def test_random_replacement_runs_in_the_kernels_and_evicts_as_the_scalar_model() -> None:
    caches = CacheParams(iotlb_entries=4, replacement="random", seed=11)
    fast = Image(False, [0xD7] * 8, True, caches)
    ref = Image(False, [0xD7] * 8, True, caches)
    engine = BatchEngine(fast.iommu)
    rows = reads_of(VA + (np.arange(1000) * 5 % 8) * PAGE)
    engine.replay(rows)
    for row in rows.tolist():
        ref.iommu.translate(request_of(row[1], row[2], row[3], row[5]))
    assert engine.stats.scalar_rows == 1
    mine, theirs = fast.iommu.engine.iotlb, ref.iommu.engine.iotlb
    assert isinstance(mine, RandomCache) and isinstance(theirs, RandomCache)
    assert (mine.slots, mine.state) == (theirs.slots, theirs.state)
    assert theirs.state != 11  # evictions drew from the generator
    # Random replacement of 4 entries over 8 pages hits sometimes, unlike FIFO's cycle.
    assert 0 < engine.stats.iotlb_hits < 999
    assert fast.counters() == ref.counters()


def test_a_superpage_entry_iotlb_in_the_kernels() -> None:
    """``iotlb_superpages``: the 2 MiB leaf at 0x8000_0000 costs one IOTLB entry; the
    kernels walk once and answer every other page of it from that entry."""
    caches = CacheParams(iotlb_entries=4, iotlb_superpages=True)
    fast = Image(False, [0xD7] * 8, True, caches)
    ref = Image(False, [0xD7] * 8, True, caches)
    engine = BatchEngine(fast.iommu)
    pages = np.arange(2000) * 7 % 512
    rows = reads_of(0x8000_0000 + pages * PAGE + 16)
    out = engine.replay(rows)
    assert out.pa.tolist() == (0x4000_0000 + pages * PAGE + 16).tolist()
    for row in rows.tolist():
        ref.iommu.translate(request_of(row[1], row[2], row[3], row[5]))
    assert engine.stats.scalar_rows == 1  # the DDT walk
    assert engine.stats.walks == 0 and engine.stats.iotlb_hits == 1999
    assert list(fast.iommu.engine.iotlb) == list(ref.iommu.engine.iotlb)
    assert [e.size_lg2 for e in fast.iommu.engine.iotlb.values()] == [21]
    assert fast.counters() == ref.counters()
