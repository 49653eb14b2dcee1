"""The shared bounded caches (hw/common/cache.py): LRU, FIFO and seeded random replacement
keep their capacity, random replacement is deterministic for a seed, draws its victims from
the shared generator and its slot list stays in step with every insert, delete, pop and clear."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.hw.common.cache import RandomCache, bounded_cache, lcg_victim


def test_random_replacement_is_seeded_and_bounded() -> None:
    a: RandomCache[int, int] = RandomCache(8, seed=3)
    b: RandomCache[int, int] = RandomCache(8, seed=3)
    for i in range(100):
        a.insert(i, i)
        b.insert(i, i)
    assert len(a) == 8 and list(a) == list(b)
    c: RandomCache[int, int] = RandomCache(8, seed=4)
    for i in range(100):
        c.insert(i, i)
    assert list(c) != list(a)  # another seed evicts others


def test_a_new_entry_takes_the_victims_slot() -> None:
    cache: RandomCache[int, int] = RandomCache(4, seed=9)
    for i in range(4):
        cache.insert(i, i)
    state, victim = lcg_victim(9, 4)
    cache.insert(10, 10)
    assert cache.state == state and cache.slots[victim] == 10
    assert sorted(cache) == sorted({0, 1, 2, 3, 10} - {victim})


def test_policies_by_name() -> None:
    lru = bounded_cache(2, "lru")
    fifo = bounded_cache(2, "fifo")
    for cache in (lru, fifo):
        cache.insert(1, 1)
        cache.insert(2, 2)
        cache.lookup(1)
        cache.insert(3, 3)
    assert sorted(lru) == [1, 3] and sorted(fifo) == [2, 3]
    assert isinstance(bounded_cache(2, "random", 1), RandomCache)


ops = st.lists(
    st.tuples(st.sampled_from(("insert", "del", "pop", "clear", "popitem")), st.integers(0, 20)),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_the_key_list_follows_every_change(seq: list[tuple[str, int]]) -> None:
    cache: RandomCache[int, int] = RandomCache(5, seed=0)
    for op, k in seq:
        if op == "insert":
            cache.insert(k, k)
        elif op == "del" and k in cache:
            del cache[k]
        elif op == "pop":
            cache.pop(k, None)  # type: ignore[arg-type]
        elif op == "clear":
            cache.clear()
        elif op == "popitem" and cache:
            cache.popitem(last=bool(k % 2))
        assert len(cache) <= 5
        assert sorted(cache.slots) == sorted(cache)
        assert all(cache.slots[i] == key for key, i in cache._slot.items())
