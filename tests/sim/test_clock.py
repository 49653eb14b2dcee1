"""VirtualClock: integer-nanosecond time and a deterministic event queue."""

from __future__ import annotations

import re
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iommusim.errors import ModelError
from iommusim.sim import VirtualClock


def test_starts_at_zero_and_advances() -> None:
    clock = VirtualClock()
    assert clock.now == 0
    assert clock.advance(10) == 0
    assert clock.now == 10
    clock.advance(0)
    assert clock.now == 10
    assert VirtualClock(start_ns=500).now == 500


def test_events_run_in_time_then_scheduling_order() -> None:
    clock = VirtualClock()
    ran: list[tuple[str, int]] = []
    for name, t in [("c", 30), ("a", 10), ("b1", 20), ("b2", 20), ("a2", 10)]:
        clock.call_at(t, partial(lambda n: ran.append((n, clock.now)), name))
    assert clock.pending == 5
    assert clock.run_until(20) == 4
    assert ran == [("a", 10), ("a2", 10), ("b1", 20), ("b2", 20)]
    assert clock.now == 20
    assert clock.pending == 1
    assert clock.next_event_ns() == 30


def test_advance_runs_due_events_and_stops_at_target() -> None:
    clock = VirtualClock()
    ran: list[int] = []
    clock.call_after(5, lambda: ran.append(clock.now))
    clock.call_after(15, lambda: ran.append(clock.now))
    assert clock.advance(10) == 1
    assert ran == [5]
    assert clock.now == 10
    clock.advance(5)
    assert ran == [5, 15]
    assert clock.now == 15


def test_event_due_exactly_at_target_runs() -> None:
    clock = VirtualClock()
    ran: list[int] = []
    clock.call_at(10, lambda: ran.append(1))
    clock.run_until(10)
    assert ran == [1]


def test_callbacks_may_schedule_within_the_window() -> None:
    clock = VirtualClock()
    ran: list[tuple[str, int]] = []

    def first() -> None:
        ran.append(("first", clock.now))
        clock.call_after(0, lambda: ran.append(("same-time", clock.now)))
        clock.call_after(5, lambda: ran.append(("later", clock.now)))
        clock.call_after(50, lambda: ran.append(("outside", clock.now)))

    clock.call_at(10, first)
    clock.call_at(12, lambda: ran.append(("second", clock.now)))
    assert clock.run_until(20) == 4
    assert ran == [("first", 10), ("same-time", 10), ("second", 12), ("later", 15)]
    assert clock.next_event_ns() == 60


def test_cancel() -> None:
    clock = VirtualClock()
    ran: list[str] = []
    keep = clock.call_at(5, lambda: ran.append("keep"))
    drop = clock.call_at(5, lambda: ran.append("drop"))
    drop.cancel()
    drop.cancel()
    assert clock.pending == 1
    assert clock.run_until(10) == 1
    assert ran == ["keep"]
    keep.cancel()  # after it ran: no effect
    assert clock.pending == 0
    assert clock.next_event_ns() is None


def test_run_all_stops_at_last_event() -> None:
    clock = VirtualClock()
    ran: list[int] = []
    clock.call_at(7, lambda: clock.call_after(100, lambda: ran.append(clock.now)))
    clock.call_at(3, lambda: ran.append(clock.now))
    assert clock.run_all() == 3
    assert ran == [3, 107]
    assert clock.now == 107


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda c: c.advance(-1), "clock advance must be non-negative, not -1"),
        (lambda c: c.call_at(99, lambda: None), "event time must be >= now (100), not 99"),
        (lambda c: c.call_after(-5, lambda: None), "delay must be non-negative, not -5"),
        (lambda c: c.run_until(50), "run_until time must be >= now (100), not 50"),
    ],
)
def test_time_never_goes_backwards(action: object, message: str) -> None:
    clock = VirtualClock(start_ns=100)
    with pytest.raises(ModelError, match=f"^{re.escape(message)}$"):
        action(clock)  # type: ignore[operator]
    assert clock.now == 100
    assert clock.pending == 0


def test_negative_start_rejected() -> None:
    with pytest.raises(ModelError, match=r"^start time must be non-negative, not -1$"):
        VirtualClock(start_ns=-1)


def test_run_until_is_not_reentrant() -> None:
    clock = VirtualClock()
    errors: list[str] = []

    def nested() -> None:
        try:
            clock.advance(1)
        except ModelError as e:
            errors.append(str(e))

    clock.call_at(1, nested)
    clock.run_until(5)
    assert errors == ["run_until must not be called from an event callback"]
    assert clock.now == 5
    # The guard is released afterwards, even when a callback raised.
    clock.call_at(6, lambda: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        clock.run_until(10)
    assert clock.advance(1) == 0


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=30), st.integers(0, 60))
def test_runs_exactly_due_uncancelled_events_in_order(
    schedule: list[tuple[int, bool]], until: int
) -> None:
    clock = VirtualClock()
    ran: list[int] = []
    for i, (t, cancel) in enumerate(schedule):
        event = clock.call_at(t, partial(ran.append, i))
        if cancel:
            event.cancel()
    count = clock.run_until(until)
    expected = sorted(
        (i for i, (t, cancel) in enumerate(schedule) if t <= until and not cancel),
        key=lambda i: (schedule[i][0], i),
    )
    assert ran == expected
    assert count == len(expected)
    assert clock.now == until
