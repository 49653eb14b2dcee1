"""The DMA API's IOVA allocator (sw/core/iova.py), after Linux ``drivers/iommu/iova.c``.

``alloc_iova(..., size_aligned=true)``: ranges are taken top-down below the limit, a
power-of-two size is aligned to itself, ``base_pfn`` 1 keeps pfn 0 (IOVA 0) out; the range
cache (``iova_rcache``) recycles freed ranges of up to 32 pages per CPU.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import InvalidArgument
from iommusim.sw.core.iova import IOVA_MAG_SIZE, IovaAllocator


def test_top_down_and_size_aligned() -> None:
    a = IovaAllocator()
    assert a.alloc_iova(1, 100) == 100
    assert a.alloc_iova(1, 100) == 99
    # Four pages aligned to four, below what is taken: 92..95.
    assert a.alloc_iova(4, 100) == 92
    # Not a power of two: no alignment, right below.
    assert a.alloc_iova(3, 100) == 89
    assert a.allocated == 9
    assert a.size_of(92) == 4
    assert a.size_of(93) is None


def test_pfn_zero_is_never_handed_out() -> None:
    a = IovaAllocator()
    assert a.alloc_iova(1, 0) is None
    assert a.alloc_iova(2, 1) is None  # the only 2-aligned pair below 2 starts at pfn 0
    assert a.alloc_iova(1, 1) == 1
    assert a.alloc_iova(1, 1) is None
    b = IovaAllocator()
    assert b.alloc_iova(2, 3) == 2
    assert b.alloc_iova(1, 3) == 1
    assert b.alloc_iova(1, 3) is None  # exhausted


def test_granule_sets_the_shift() -> None:
    assert IovaAllocator(4096).shift == 12
    assert IovaAllocator(1 << 16).shift == 16
    for bad in (2048, 3 * 4096, 0):
        with pytest.raises(InvalidArgument, match="power of two >= 4096") as e:
            IovaAllocator(bad)
        assert e.value.errno == errno.EINVAL


def test_bad_size_and_double_free_are_einval() -> None:
    a = IovaAllocator()
    with pytest.raises(InvalidArgument, match="size must be positive"):
        a.alloc_iova(0, 100)
    pfn = a.alloc_iova(1, 100)
    assert pfn is not None
    a.free_iova(pfn)
    with pytest.raises(InvalidArgument, match="is not allocated"):
        a.free_iova(pfn)
    with pytest.raises(InvalidArgument, match="is not allocated"):
        a.free_iova_fast(pfn)


def test_freed_gaps_are_found_again() -> None:
    a = IovaAllocator()
    pfns = [a.alloc_iova(1, 20) for _ in range(20)]
    assert pfns == list(range(20, 0, -1))
    assert a.alloc_iova(1, 20) is None
    a.free_iova(10)
    a.free_iova(11)
    assert a.alloc_iova(2, 20) == 10  # the only 2-aligned hole
    a.free_iova(15)
    assert a.alloc_iova(2, 20) is None
    assert a.alloc_iova(1, 20) == 15


def test_range_cache_recycles_freed_ranges() -> None:
    a = IovaAllocator()
    pfn = a.alloc_iova_fast(1, 1000)
    assert pfn == 1000
    a.free_iova_fast(pfn)
    assert a.cached() == 1
    assert a.allocated == 1  # still held by the tree while cached
    assert a.alloc_iova_fast(1, 1000) == 1000
    assert a.stats["rcache_hits"] == 1
    assert a.stats["tree_allocs"] == 1
    # Small sizes round up to a power of two and come from that order's cache only.
    three = a.alloc_iova_fast(3, 1000)
    assert a.size_of(three) == 4
    a.free_iova_fast(three)
    assert a.alloc_iova_fast(1, 1000) != three
    assert a.alloc_iova_fast(4, 1000) == three


def test_range_cache_respects_the_limit() -> None:
    a = IovaAllocator()
    high = a.alloc_iova_fast(1, 1000)
    a.free_iova_fast(high)
    low = a.alloc_iova_fast(1, 10)  # the cached pfn 1000 does not fit under 10
    assert low == 10
    assert a.alloc_iova_fast(1, 1000) == high


def test_large_sizes_bypass_the_range_cache() -> None:
    a = IovaAllocator()
    big = a.alloc_iova_fast(64, 1 << 20)
    a.free_iova_fast(big)
    assert a.cached() == 0
    assert a.size_of(big) is None
    assert a.stats["tree_frees"] == 1


def test_per_cpu_magazines_and_depot() -> None:
    a = IovaAllocator(ncpus=2)
    on_cpu0 = [a.alloc_iova_fast(1, 1 << 20, cpu=0) for _ in range(3 * IOVA_MAG_SIZE)]
    for p in on_cpu0:
        a.free_iova_fast(p, cpu=0)
    assert a.cached() == 3 * IOVA_MAG_SIZE  # loaded + prev + one full magazine in the depot
    # cpu 1 has empty magazines: it takes the depot's full magazine.
    got = a.alloc_iova_fast(1, 1 << 20, cpu=1)
    assert got in on_cpu0
    assert a.stats["rcache_hits"] == 1


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("alloc"), st.integers(1, 12), st.integers(0, 64)),
            st.tuples(st.just("free"), st.integers(0, 1000), st.just(0)),
        ),
        max_size=60,
    )
)
def test_tree_allocations_never_overlap_and_fail_only_when_full(
    ops: list[tuple[str, int, int]],
) -> None:
    # Against a bitmap: ranges are disjoint, within [1, limit], aligned when the size is a
    # power of two; None only when no aligned hole of that size exists below the limit.
    a = IovaAllocator()
    used: dict[int, int] = {}
    for op, x, y in ops:
        if op == "alloc":
            size, limit = x, y
            pfn = a.alloc_iova(size, limit)
            taken = {p for s, n in used.items() for p in range(s, s + n)}
            align = size if size & (size - 1) == 0 else 1
            holes = [
                lo
                for lo in range(1, limit - size + 2)
                if lo % align == 0 and not taken & set(range(lo, lo + size))
            ]
            if pfn is None:
                assert holes == []
            else:
                assert pfn in holes
                if not used:
                    assert pfn == max(holes)  # top-down from the limit
                used[pfn] = size
        elif used:
            pfn = sorted(used)[x % len(used)]
            a.free_iova(pfn)
            del used[pfn]
        assert a.allocated == sum(used.values())
    for pfn, size in used.items():
        assert a.size_of(pfn) == size
