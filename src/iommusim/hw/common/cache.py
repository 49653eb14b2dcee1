"""Bounded translation caches with the replacement policies the models offer (LRU, FIFO,
random), shared by every IOMMU's configuration caches and TLBs (riscv-iommu "Caching
in-memory data structures"; IHI 0070 16.2 "Caching"). Geometry is a parameter; the
architectures only require that correct software sees no difference."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Final, Literal, TypeVar

__all__ = [
    "LCG_INC",
    "LCG_MUL",
    "BoundedCache",
    "Policy",
    "RandomCache",
    "bounded_cache",
    "lcg_victim",
]

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")

#: Replacement policies.
Policy = Literal["lru", "fifo", "random"]


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


#: The random policy's generator: a 64-bit linear congruential generator (Knuth's MMIX
#: constants), drawn once per eviction; the victim is the slot ``(top 31 bits) * n >> 31``.
#: The batch engine's kernels draw from the same generator, so both evict the same entry.
LCG_MUL: Final = 6364136223846793005
LCG_INC: Final = 1442695040888963407
_MASK64: Final = (1 << 64) - 1


def lcg_victim(state: int, n: int) -> tuple[int, int]:
    """The generator's next state and the slot in ``0..n-1`` it picks."""
    state = (state * LCG_MUL + LCG_INC) & _MASK64
    return state, ((state >> 33) * n) >> 31


class RandomCache(BoundedCache[_K, _V]):
    """A :class:`BoundedCache` evicting an entry chosen uniformly at random (the generator of
    :func:`lcg_victim`, seeded with ``seed``: deterministic for a seed). Entries sit in
    ``slots``; a new entry takes the victim's slot, a removed one's slot goes to the last
    entry, so an eviction is O(1)."""

    def __init__(self, capacity: int, seed: int) -> None:
        super().__init__(capacity, False)
        self.state = seed & _MASK64
        self.slots: list[_K] = []
        self._slot: dict[_K, int] = {}

    def insert(self, key: _K, value: _V) -> None:
        if self.capacity <= 0:
            return
        if key in self or len(self) < self.capacity:
            self[key] = value
            return
        self.state, i = lcg_victim(self.state, len(self.slots))
        old = self.slots[i]
        super().__delitem__(old)
        del self._slot[old]
        self.slots[i] = key
        self._slot[key] = i
        super().__setitem__(key, value)

    def __setitem__(self, key: _K, value: _V) -> None:
        if key not in self:
            self._slot[key] = len(self.slots)
            self.slots.append(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: _K) -> None:
        super().__delitem__(key)
        i = self._slot.pop(key)
        last = self.slots.pop()
        if i < len(self.slots):
            self.slots[i] = last
            self._slot[last] = i

    def pop(self, key: _K, *default: _V) -> _V:  # type: ignore[override]
        if key in self:
            v = self[key]
            del self[key]
            return v
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self, last: bool = True) -> tuple[_K, _V]:
        key = next(reversed(self)) if last else next(iter(self))
        return key, self.pop(key)

    def clear(self) -> None:
        super().clear()
        self.slots.clear()
        self._slot.clear()


def bounded_cache(capacity: int, policy: Policy, seed: int = 0) -> BoundedCache[_K, _V]:
    """A cache of ``capacity`` entries with replacement ``policy`` (``seed``: random's)."""
    if policy == "random":
        return RandomCache(capacity, seed)
    return BoundedCache(capacity, policy == "lru")
