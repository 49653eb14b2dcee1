"""The DMA API's flush queue: lazy IOTLB invalidation (Linux ``dma-iommu.c``, "fq").

An unmap in a DMA_FQ domain clears the PTEs but does not invalidate the IOTLB; the IOVA and
the freed table pages are queued, tagged with the flush count at enqueue time, and released
only after a later whole-domain IOTLB flush has completed. A flush happens when a queue is
full or when the timer armed by the first queued entry expires. Until then the device may
still reach the old pages through a stale IOTLB entry: that window is the price of lazy mode,
and :attr:`FlushQueue.pending` shows what is exposed at any moment.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from iommusim.errors import InvalidArgument
from iommusim.sim.clock import Event, VirtualClock

__all__ = ["FlushQueue", "FqEntry", "FqOptions"]

#: IOVA_DEFAULT_FQ_SIZE / _TIMEOUT (per-CPU queues) and IOVA_SINGLE_FQ_* (one queue).
DEFAULT_FQ_SIZE: Final = 256
DEFAULT_FQ_TIMEOUT_NS: Final = 10_000_000
SINGLE_FQ_SIZE: Final = 32768
SINGLE_FQ_TIMEOUT_NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class FqOptions:
    """``single`` picks one global queue (shadow_on_flush IOMMUs) instead of per-CPU ones."""

    single: bool = False
    size: int | None = None
    timeout_ns: int | None = None

    @property
    def entries(self) -> int:
        n = (
            self.size
            if self.size is not None
            else (SINGLE_FQ_SIZE if self.single else DEFAULT_FQ_SIZE)
        )
        if n < 2 or n & (n - 1):
            raise InvalidArgument(f"flush-queue size must be a power of two >= 2, not {n}")
        return n

    @property
    def timeout(self) -> int:
        t = (
            self.timeout_ns
            if self.timeout_ns is not None
            else (SINGLE_FQ_TIMEOUT_NS if self.single else DEFAULT_FQ_TIMEOUT_NS)
        )
        if t <= 0:
            raise InvalidArgument(f"flush-queue timeout must be positive, not {t}")
        return t


@dataclass(frozen=True, slots=True)
class FqEntry:
    iova_pfn: int
    pages: int
    freelist: tuple[int, ...]
    counter: int
    queued_ns: int


class FlushQueue:
    """Per-CPU (or one) rings of unmapped IOVAs waiting for an IOTLB flush."""

    def __init__(
        self,
        clock: VirtualClock,
        flush_all: Callable[[], None],
        release: Callable[[FqEntry, int], None],
        ncpus: int,
        options: FqOptions,
    ) -> None:
        self.clock = clock
        self._flush_all = flush_all
        self._release = release
        self.size = options.entries
        self.timeout_ns = options.timeout
        nq = 1 if options.single else ncpus
        # A ring holds size - 1 entries: full when ((tail + 1) & mask) == head.
        self.rings: list[deque[FqEntry]] = [deque() for _ in range(nq)]
        self.flush_start_cnt = 0
        self.flush_finish_cnt = 0
        self._timer: Event | None = None
        # Unmapped IOVAs the next flush makes unreachable: how many, and their unmap times
        # (summed, and the oldest) -- each stays exposed until that flush.
        self._unflushed = 0
        self._unflushed_ns_sum = 0
        self._unflushed_oldest_ns: int | None = None
        self.stats = {
            "queued": 0,
            "flushes": 0,
            "full_flushes": 0,
            "timer_flushes": 0,
            "max_exposed": 0,
            "max_exposure_ns": 0,
            "exposure_ns_total": 0,
        }

    @property
    def pending(self) -> int:
        """Unmapped IOVAs not yet released: each may still be reachable via a stale entry."""
        return sum(len(r) for r in self.rings)

    def _ring(self, cpu: int) -> deque[FqEntry]:
        return self.rings[cpu % len(self.rings)]

    def flush(self) -> None:
        """fq_flush_iotlb: a whole-domain invalidation, bracketed by the two counters."""
        self.flush_start_cnt += 1
        self._flush_all()
        self.flush_finish_cnt += 1
        self.stats["flushes"] += 1
        # The exposure of an unmapped IOVA ends when the flush after its unmap completes.
        now = self.clock.now
        if self._unflushed_oldest_ns is not None:
            oldest = now - self._unflushed_oldest_ns
            self.stats["max_exposure_ns"] = max(self.stats["max_exposure_ns"], oldest)
            self.stats["exposure_ns_total"] += self._unflushed * now - self._unflushed_ns_sum
        self._unflushed = 0
        self._unflushed_ns_sum = 0
        self._unflushed_oldest_ns = None

    def _ring_free(self, ring: deque[FqEntry], cpu: int) -> None:
        finish = self.flush_finish_cnt
        while ring and ring[0].counter < finish:
            self._release(ring.popleft(), cpu)

    def queue(self, iova_pfn: int, pages: int, freelist: list[int], cpu: int = 0) -> None:
        """queue_iova."""
        ring = self._ring(cpu)
        self._ring_free(ring, cpu)
        if len(ring) >= self.size - 1:
            self.flush()
            self.stats["full_flushes"] += 1
            self._ring_free(ring, cpu)
        now = self.clock.now
        ring.append(FqEntry(iova_pfn, pages, tuple(freelist), self.flush_start_cnt, now))
        self.stats["queued"] += 1
        self._unflushed += 1
        self._unflushed_ns_sum += now
        if self._unflushed_oldest_ns is None:
            self._unflushed_oldest_ns = now
        exposed = self.pending
        self.stats["max_exposed"] = max(self.stats["max_exposed"], exposed)
        if self._timer is None:
            self._timer = self.clock.call_after(self.timeout_ns, self._timeout)

    def _timeout(self) -> None:
        """fq_flush_timeout: flush, then free every ring."""
        self._timer = None
        self.flush()
        self.stats["timer_flushes"] += 1
        for cpu, ring in enumerate(self.rings):
            self._ring_free(ring, cpu)

    def destroy(self) -> None:
        """Flush and release everything (the domain is going away)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending:
            self.flush()
            for cpu, ring in enumerate(self.rings):
                self._ring_free(ring, cpu)
