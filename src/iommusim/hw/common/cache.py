"""A bounded translation cache with the replacement policies the models offer (LRU, FIFO),
shared by every IOMMU's configuration caches and TLBs (riscv-iommu "Caching in-memory data
structures"; IHI 0070 16.2 "Caching"). Geometry is a parameter; the architectures only
require that correct software sees no difference."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import TypeVar

__all__ = ["BoundedCache"]

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class BoundedCache(OrderedDict[_K, _V]):
    """A mapping of at most ``capacity`` entries (0: caches nothing) evicting the least
    recently used entry (``lru``) or the oldest one (FIFO)."""

    def __init__(self, capacity: int, lru: bool) -> None:
        super().__init__()
        self.capacity = capacity
        self.lru = lru

    def lookup(self, key: _K) -> _V | None:
        v = self.get(key)
        if v is not None and self.lru:
            self.move_to_end(key)
        return v

    def insert(self, key: _K, value: _V) -> None:
        if self.capacity <= 0:
            return
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.capacity:
            self.popitem(last=False)
