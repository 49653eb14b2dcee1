"""Synthetic DMA traces: the access patterns trace studies sweep (seeded, so reproducible).

- ``uniform``: every request picks one of the working set's pages at random;
- ``zipf``: page ``k`` (by popularity rank) with probability proportional to ``1 / k**s``;
- ``ring``: the pages in order, wrapping, as a NIC walks its receive ring of buffers.

Requests arrive every ``interval_ns``; each moves ``size`` bytes at a 64-byte aligned offset
that keeps it inside its page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from iommusim.errors import InvalidArgument
from iommusim.perf.trace.format import FLAG_PRIV, FLAG_READ, FLAG_WRITE, Trace, empty
from iommusim.perf.trace.io import CHUNK_ROWS

__all__ = ["Pattern", "SyntheticTrace"]

Pattern = Literal["uniform", "zipf", "ring"]
_PAGE: Final = 4096


@dataclass(frozen=True, slots=True)
class SyntheticTrace:
    """A synthetic trace of ``rows`` requests by one device over ``working_set`` pages."""

    pattern: Pattern
    rows: int
    working_set: int
    seed: int = 0
    device_id: int = 0
    pasid: int = -1
    priv: bool = False
    base_iova: int = 0x4000_0000
    size: int = 64
    write_fraction: float = 0.5
    interval_ns: int = 10
    zipf_s: float = 1.0

    def __post_init__(self) -> None:
        if self.pattern not in ("uniform", "zipf", "ring"):
            raise InvalidArgument(f"pattern must be uniform, zipf or ring, not {self.pattern!r}")
        if self.rows < 0:
            raise InvalidArgument(f"rows must be >= 0, not {self.rows}")
        if self.working_set <= 0:
            raise InvalidArgument(f"working_set must be > 0 pages, not {self.working_set}")
        if not 1 <= self.size <= _PAGE:
            raise InvalidArgument(f"size must be 1..4096 bytes, not {self.size}")
        if self.base_iova % _PAGE or self.base_iova + self.working_set * _PAGE > 1 << 64:
            raise InvalidArgument(f"base_iova must be page-aligned, not {self.base_iova:#x}")
        if not 0.0 <= self.write_fraction <= 1.0:
            raise InvalidArgument(f"write_fraction must be in [0, 1], not {self.write_fraction}")
        if self.interval_ns < 0:
            raise InvalidArgument(f"interval_ns must be >= 0, not {self.interval_ns}")
        if self.zipf_s <= 0:
            raise InvalidArgument(f"zipf_s must be > 0, not {self.zipf_s}")
        if self.pasid != -1 and not 0 <= self.pasid < 1 << 20:
            raise InvalidArgument(f"pasid must be -1 or 20-bit, not {self.pasid}")
        if self.priv and self.pasid == -1:
            raise InvalidArgument("priv must be False for requests without a PASID")

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[Trace]:
        """Yield the trace in chunks of up to ``chunk_rows`` rows."""
        rng = np.random.default_rng(self.seed)
        ws = self.working_set
        cdf = None
        if self.pattern == "zipf":
            weights = 1.0 / np.arange(1, ws + 1, dtype=np.float64) ** self.zipf_s
            cdf = np.cumsum(weights)
            cdf /= cdf[-1]
            # Popularity ranks land on pages in a seeded random order, not address order.
            rank_page = rng.permutation(ws)
        slots = (_PAGE - self.size) // 64 + 1
        access = np.array([FLAG_READ, FLAG_WRITE], dtype=np.uint8)
        priv = np.uint8(FLAG_PRIV if self.priv else 0)
        done = 0
        while done < self.rows:
            n = min(chunk_rows, self.rows - done)
            idx = np.arange(done, done + n, dtype=np.uint64)
            if self.pattern == "ring":
                page = idx % np.uint64(ws)
            elif cdf is not None:
                ranks = np.searchsorted(cdf, rng.random(n), side="right").clip(0, ws - 1)
                page = rank_page[ranks].astype(np.uint64)
            else:
                page = rng.integers(0, ws, n, dtype=np.uint64)
            rows = empty(n)
            rows["time_ns"] = idx * np.uint64(self.interval_ns)
            rows["device_id"] = self.device_id
            rows["pasid"] = self.pasid
            offset = rng.integers(0, slots, n).astype(np.uint64) * np.uint64(64)
            rows["iova"] = (
                np.uint64(self.base_iova) + page.astype(np.uint64) * np.uint64(_PAGE) + offset
            )
            rows["size"] = self.size
            writes = rng.random(n) < self.write_fraction
            rows["flags"] = access[writes.astype(np.intp)] | priv
            yield rows
            done += n
