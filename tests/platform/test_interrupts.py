"""The interrupt sink (platform/interrupts.py), an IMSIC-like MSI target.

AIA "Incoming MSI Controller (IMSIC)": a 32-bit little-endian write of identity ``n`` to
``seteipnum_le`` (offset 0 of the interrupt file) makes ``n`` pending; reads of it return
zero; a second MSI for an identity that is already pending merges with it. The sink runs
the handler ``irq_latency_ns`` after the MSI, on the virtual clock.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import BusError, Busy, InvalidArgument
from iommusim.platform.costs import CostModel
from iommusim.platform.interrupts import InterruptSink
from iommusim.platform.system import System, SystemConfig
from iommusim.sim.clock import VirtualClock

LATENCY = 2_000


def sink(num_ids: int = 64) -> tuple[VirtualClock, InterruptSink]:
    clock = VirtualClock()
    return clock, InterruptSink(clock, LATENCY, num_ids)


def test_handler_runs_after_the_latency_not_before() -> None:
    clock, s = sink()
    calls: list[int] = []
    s.request_irq(5, lambda: calls.append(clock.now))
    clock.advance(100)
    s.raise_identity(5)
    clock.advance(LATENCY - 1)
    assert calls == []
    clock.advance(1)
    assert calls == [100 + LATENCY]
    assert s.received == {5: 1}
    assert s.spurious == 0


def test_msis_for_a_pending_identity_merge() -> None:
    clock, s = sink()
    calls: list[int] = []
    s.request_irq(7, lambda: calls.append(clock.now))
    s.raise_identity(7)
    clock.advance(10)
    s.raise_identity(7)
    s.raise_identity(7)
    clock.advance(10 * LATENCY)
    assert calls == [LATENCY]  # one delivery for three MSIs
    assert s.received[7] == 3
    # Once delivered, the identity is no longer pending: the next MSI is a new interrupt.
    s.raise_identity(7)
    clock.advance(LATENCY)
    assert len(calls) == 2


def test_distinct_identities_are_delivered_separately_in_order() -> None:
    clock, s = sink()
    order: list[int] = []
    s.request_irq(3, lambda: order.append(3))
    s.request_irq(4, lambda: order.append(4))
    s.raise_identity(4)
    s.raise_identity(3)
    clock.advance(LATENCY)
    assert order == [4, 3]


def test_identity_without_handler_is_spurious() -> None:
    clock, s = sink()
    s.raise_identity(9)
    clock.advance(LATENCY)
    assert s.spurious == 1
    calls: list[int] = []
    s.request_irq(9, lambda: calls.append(1))
    s.free_irq(9)
    s.free_irq(9)  # freeing twice is harmless
    s.raise_identity(9)
    clock.advance(LATENCY)
    assert calls == []
    assert s.spurious == 2
    assert s.received == {9: 2}


def test_request_irq_errors() -> None:
    _, s = sink(num_ids=64)
    for bad in (0, 64, -1):
        with pytest.raises(InvalidArgument, match=r"must be in \[1, 63\]") as e:
            s.request_irq(bad, lambda: None)
        assert e.value.errno == errno.EINVAL
    s.request_irq(63, lambda: None)
    # request_irq of a line that has a handler: EBUSY, and the first handler stays.
    calls: list[int] = []
    s.request_irq(1, lambda: calls.append(1))
    with pytest.raises(Busy, match="already has a handler") as e2:
        s.request_irq(1, lambda: calls.append(2))
    assert e2.value.errno == errno.EBUSY


def test_seteipnum_over_the_bus() -> None:
    system = System(SystemConfig(costs=CostModel(irq_latency_ns=500)))
    base = system.config.imsic_base_pa
    calls: list[int] = []
    system.sink.request_irq(40, lambda: calls.append(system.clock.now))
    system.bus.write32(base, 40)
    # Reads of seteipnum return zero.
    assert system.bus.read32(base) == 0
    system.run_for(499)
    assert calls == []
    system.run_for(1)
    assert calls == [500]


def test_ignored_and_faulting_sink_accesses() -> None:
    clock, s = sink(num_ids=64)
    # Identity 0 and unimplemented identities are ignored (AIA: "writes ... of a value that is
    # not an implemented interrupt identity are ignored"); other words of the page too.
    s.write32(0, 0)
    s.write32(0, 64)
    s.write32(4, 5)
    assert s.received == {}
    for fn in (
        lambda: s.read(0, 8),
        lambda: s.read(2, 4),
        lambda: s.read64(0),
        lambda: s.write64(0, 1),
        lambda: s.write(0, b"\x01\x00"),
        lambda: s.write(2, bytes(4)),
        lambda: s.cas64(0, 0, 1),
    ):
        with pytest.raises(BusError):
            fn()
    clock.advance(LATENCY)
    assert s.spurious == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 3 * LATENCY)), max_size=25))
def test_deliveries_match_a_pending_bit_model(msis: list[tuple[int, int]]) -> None:
    # Model: an identity is pending from its first MSI until its delivery one latency later;
    # MSIs in between only merge.
    clock, s = sink()
    runs: dict[int, list[int]] = {i: [] for i in range(1, 7)}
    for i in range(1, 7):
        s.request_irq(i, lambda i=i: runs[i].append(clock.now))
    due: dict[int, int] = {}
    expected: dict[int, list[int]] = {i: [] for i in range(1, 7)}
    now = 0
    for identity, gap in msis:
        now += gap
        for i, t in list(due.items()):
            if t <= now:
                expected[i].append(t)
                del due[i]
        if identity not in due:
            due[identity] = now + LATENCY
        clock.advance(gap)
        s.raise_identity(identity)
    for i, t in due.items():
        expected[i].append(t)
    clock.advance(LATENCY)
    assert runs == {i: sorted(v) for i, v in expected.items()}
    for i in range(1, 7):
        assert s.received.get(i, 0) == sum(1 for ident, _ in msis if ident == i)
