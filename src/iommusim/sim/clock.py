"""Virtual time and a deterministic event scheduler.

Wall time never enters the model (DESIGN.md rule 6): components read :attr:`VirtualClock.now`
and schedule work with :meth:`VirtualClock.call_at`. Events due at the same instant run in the
order they were scheduled, so a run is a pure function of its inputs.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from iommusim.errors import ModelError

__all__ = ["Event", "VirtualClock"]


@dataclass(slots=True, order=True)
class Event:
    """A scheduled call; ordered by ``(time_ns, seq)``. Cancel it with :meth:`cancel`."""

    time_ns: int
    seq: int
    fn: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        """Drop the event if it has not run yet; cancelling twice is harmless."""
        self.cancelled = True


class VirtualClock:
    """Integer-nanosecond virtual time with an event queue."""

    __slots__ = ("_now", "_queue", "_running", "_seq")

    def __init__(self, start_ns: int = 0) -> None:
        if start_ns < 0:
            raise ModelError(f"start time must be non-negative, not {start_ns}")
        self._now = start_ns
        self._queue: list[Event] = []
        self._seq = 0
        self._running = False

    @property
    def now(self) -> int:
        """Current virtual time in nanoseconds."""
        return self._now

    @property
    def pending(self) -> int:
        """Number of scheduled events that have not run and are not cancelled."""
        return sum(not e.cancelled for e in self._queue)

    def next_event_ns(self) -> int | None:
        """Time of the earliest pending event, or ``None`` if there is none."""
        self._drop_cancelled()
        return self._queue[0].time_ns if self._queue else None

    def call_at(self, time_ns: int, fn: Callable[[], object]) -> Event:
        """Run ``fn()`` when time reaches ``time_ns`` (which must not be in the past)."""
        if time_ns < self._now:
            raise ModelError(f"event time must be >= now ({self._now}), not {time_ns}")
        event = Event(time_ns, self._seq, fn)
        self._seq += 1
        heapq.heappush(self._queue, event)
        return event

    def call_after(self, delay_ns: int, fn: Callable[[], object]) -> Event:
        """Run ``fn()`` ``delay_ns`` nanoseconds from now."""
        if delay_ns < 0:
            raise ModelError(f"delay must be non-negative, not {delay_ns}")
        return self.call_at(self._now + delay_ns, fn)

    @property
    def running(self) -> bool:
        """An event callback is running (time cannot be advanced from inside it)."""
        return self._running

    def run_until(self, time_ns: int) -> int:
        """Run every event due at or before ``time_ns`` in order, then set now to ``time_ns``.

        Events scheduled by a callback for a time within the window run in the same call.
        Returns the number of events run.
        """
        if time_ns < self._now:
            raise ModelError(f"run_until time must be >= now ({self._now}), not {time_ns}")
        if self._running:
            raise ModelError("run_until must not be called from an event callback")
        self._running = True
        ran = 0
        try:
            queue = self._queue
            while queue and queue[0].time_ns <= time_ns:
                event = heapq.heappop(queue)
                if event.cancelled:
                    continue
                self._now = event.time_ns
                event.cancelled = True  # it has run: a later cancel() is a no-op
                event.fn()
                ran += 1
            self._now = time_ns
        finally:
            self._running = False
        return ran

    def advance(self, delta_ns: int) -> int:
        """Move time forward by ``delta_ns``, running the events that fall due on the way."""
        if delta_ns < 0:
            raise ModelError(f"clock advance must be non-negative, not {delta_ns}")
        return self.run_until(self._now + delta_ns)

    def run_all(self) -> int:
        """Run events until the queue is empty; time stops at the last event."""
        ran = 0
        while (t := self.next_event_ns()) is not None:
            ran += self.run_until(t)
        return ran

    def _drop_cancelled(self) -> None:
        queue = self._queue
        while queue and queue[0].cancelled:
            heapq.heappop(queue)
