"""The DMA flush queue (sw/core/fq.py), after Linux ``dma-iommu.c`` (reference digest 3.5).

``queue_iova`` tags each entry with ``fq_flush_start_cnt``; ``fq_ring_free`` releases only
entries whose tag is below ``fq_flush_finish_cnt``, i.e. whose IOTLB flush has completed; a
full ring (size - 1 entries) forces a flush; the first entry arms a timer (10 ms per-CPU
queues of 256, or 1 s for the single 32768-entry queue) whose flush releases everything.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import InvalidArgument
from iommusim.sim.clock import VirtualClock
from iommusim.sw.core.fq import (
    DEFAULT_FQ_SIZE,
    DEFAULT_FQ_TIMEOUT_NS,
    SINGLE_FQ_SIZE,
    SINGLE_FQ_TIMEOUT_NS,
    FlushQueue,
    FqEntry,
    FqOptions,
)

MS = 1_000_000


class Harness:
    """A flush queue whose flush and release callbacks log what happened, in order."""

    def __init__(self, options: FqOptions, ncpus: int = 1) -> None:
        self.clock = VirtualClock()
        self.log: list[tuple[str, int]] = []
        self.fq = FlushQueue(self.clock, self._flush, self._release, ncpus, options)

    def _flush(self) -> None:
        self.log.append(("flush", self.fq.flush_start_cnt))
        # While the flush runs it has started but not finished.
        assert self.fq.flush_finish_cnt == self.fq.flush_start_cnt - 1

    def _release(self, entry: FqEntry, cpu: int) -> None:
        # Released only once a flush begun after its enqueue has finished.
        assert entry.counter < self.fq.flush_finish_cnt
        self.log.append(("release", entry.iova_pfn))

    def released(self) -> list[int]:
        return [v for k, v in self.log if k == "release"]

    def flushes(self) -> int:
        return sum(1 for k, _ in self.log if k == "flush")


def test_default_and_single_options() -> None:
    assert (FqOptions().entries, FqOptions().timeout) == (DEFAULT_FQ_SIZE, DEFAULT_FQ_TIMEOUT_NS)
    assert (DEFAULT_FQ_SIZE, DEFAULT_FQ_TIMEOUT_NS) == (256, 10 * MS)
    single = FqOptions(single=True)
    assert (single.entries, single.timeout) == (SINGLE_FQ_SIZE, SINGLE_FQ_TIMEOUT_NS)
    assert (SINGLE_FQ_SIZE, SINGLE_FQ_TIMEOUT_NS) == (32768, 1000 * MS)
    assert FqOptions(single=True, size=8, timeout_ns=5).entries == 8
    h = Harness(single, ncpus=4)
    assert len(h.fq.rings) == 1
    assert len(Harness(FqOptions(), ncpus=4).fq.rings) == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (FqOptions(size=3), "power of two >= 2, not 3"),
        (FqOptions(size=1), "power of two >= 2, not 1"),
        (FqOptions(timeout_ns=0), "timeout must be positive, not 0"),
        (FqOptions(timeout_ns=-5), "timeout must be positive, not -5"),
    ],
)
def test_bad_options_are_einval(options: FqOptions, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as e:
        FlushQueue(VirtualClock(), lambda: None, lambda e, c: None, 1, options)
    assert e.value.errno == errno.EINVAL


def test_nothing_is_released_before_a_flush() -> None:
    h = Harness(FqOptions(size=8))
    for pfn in (10, 11, 12):
        h.fq.queue(pfn, 1, [])
    assert h.log == []
    assert h.fq.pending == 3
    h.clock.advance(10 * MS - 1)
    assert h.log == []


def test_timer_flush_after_10ms_of_virtual_time() -> None:
    h = Harness(FqOptions())
    h.fq.queue(1, 1, [0xA000])
    h.clock.advance(4 * MS)
    h.fq.queue(2, 1, [])  # does not re-arm: one timer, from the first entry
    h.clock.advance(6 * MS - 1)
    assert h.log == []
    h.clock.advance(1)
    assert h.log == [("flush", 1), ("release", 1), ("release", 2)]
    assert h.fq.pending == 0
    assert h.fq.stats["timer_flushes"] == 1
    # The next entry arms a new timer.
    h.fq.queue(3, 1, [])
    h.clock.advance(10 * MS)
    assert h.released() == [1, 2, 3]
    assert h.fq.stats["timer_flushes"] == 2


def test_full_ring_forces_a_flush() -> None:
    # A ring of 4 holds 3 entries; queueing the 4th flushes and frees the first three.
    h = Harness(FqOptions(size=4))
    for pfn in (1, 2, 3):
        h.fq.queue(pfn, 1, [])
    assert h.log == []
    h.fq.queue(4, 1, [])
    assert h.log == [("flush", 1), ("release", 1), ("release", 2), ("release", 3)]
    assert h.fq.pending == 1
    assert h.fq.stats["full_flushes"] == 1
    # Entry 4 was queued after that flush started: it waits for the next one.
    h.fq.queue(5, 1, [])
    assert h.released() == [1, 2, 3]
    h.clock.advance(10 * MS)
    assert h.released() == [1, 2, 3, 4, 5]


def test_per_cpu_rings_release_on_their_own_queue() -> None:
    h = Harness(FqOptions(size=4), ncpus=2)
    h.fq.queue(1, 1, [], cpu=1)
    for pfn in (10, 11, 12, 13):
        h.fq.queue(pfn, 1, [], cpu=0)
    # cpu 0's full ring flushed the IOTLB; cpu 1's entry is flushed but freed lazily.
    assert h.flushes() == 1
    assert h.released() == [10, 11, 12]
    h.fq.queue(2, 1, [], cpu=1)  # fq_ring_free on cpu 1's ring first
    assert h.released() == [10, 11, 12, 1]
    assert [len(r) for r in h.fq.rings] == [1, 1]


def test_destroy_flushes_pending_and_cancels_the_timer() -> None:
    h = Harness(FqOptions())
    h.fq.queue(7, 1, [0xB000])
    h.fq.destroy()
    assert h.log == [("flush", 1), ("release", 7)]
    h.clock.advance(20 * MS)
    assert h.flushes() == 1  # the timer was cancelled
    empty = Harness(FqOptions())
    empty.fq.destroy()
    assert empty.log == []


def test_max_exposed_tracks_the_window() -> None:
    h = Harness(FqOptions(size=4))
    for pfn in range(1, 8):
        h.fq.queue(pfn, 1, [])
    assert h.fq.stats["queued"] == 7
    assert h.fq.stats["max_exposed"] == 3


def test_exposure_lasts_from_the_unmap_to_the_flush_after_it() -> None:
    """Linux dma-iommu.c fq_flush_timeout: an IOVA queued at t stays reachable through a
    stale IOTLB entry until the next flush completes."""
    h = Harness(FqOptions(size=8, timeout_ns=10 * MS))
    h.fq.queue(1, 1, [])
    h.clock.advance(4 * MS)
    h.fq.queue(2, 1, [])
    h.clock.advance(8 * MS)  # the timer, armed at 0, flushes at 10 ms
    assert h.fq.stats["max_exposure_ns"] == 10 * MS
    assert h.fq.stats["exposure_ns_total"] == 10 * MS + 6 * MS
    h.fq.queue(3, 1, [])  # at 12 ms; its timer flushes at 22 ms
    h.clock.advance(10 * MS)
    assert h.fq.stats["max_exposure_ns"] == 10 * MS
    assert h.fq.stats["exposure_ns_total"] == 26 * MS


@settings(max_examples=40, deadline=None)
@given(
    size_lg2=st.integers(1, 4),
    ncpus=st.integers(1, 3),
    single=st.booleans(),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("q"), st.integers(0, 2)),
            st.tuples(st.just("t"), st.integers(0, 12 * MS)),
        ),
        max_size=40,
    ),
)
def test_every_entry_is_released_once_after_a_completed_flush(
    size_lg2: int, ncpus: int, single: bool, ops: list[tuple[str, int]]
) -> None:
    h = Harness(FqOptions(single=single, size=1 << size_lg2), ncpus)
    queued: list[int] = []
    for kind, arg in ops:
        if kind == "q":
            h.fq.queue(len(queued), 1, [], cpu=arg)
            queued.append(len(queued))
        else:
            h.clock.advance(arg)
        assert all(len(r) <= h.fq.size - 1 for r in h.fq.rings)
        assert len(h.released()) + h.fq.pending == len(queued)
    h.clock.advance(h.fq.timeout_ns)
    assert sorted(h.released()) == queued
    assert h.fq.pending == 0
