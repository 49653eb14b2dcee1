"""The page allocator: zeroed pages, natural alignment, exhaustion and misuse, buddy merging."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import ApiError, InvalidArgument, OutOfMemory
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PAGE_SIZE, PageAllocator

BASE = 0x8000_0000


def make(pages: int = 64, base: int = BASE, **kw: int) -> tuple[SparseMemory, PageAllocator]:
    mem = SparseMemory()
    return mem, PageAllocator(mem, base, pages * PAGE_SIZE, **kw)


def test_pages_are_zeroed_through_the_memory() -> None:
    mem, pages = make(4)
    for k in range(4):
        mem.write(BASE + k * PAGE_SIZE, b"\xa5" * PAGE_SIZE)
    pa = pages.alloc_page()
    assert mem.read(pa, PAGE_SIZE) == bytes(PAGE_SIZE)
    block = pages.alloc_pages(1)
    assert mem.read(block, 2 * PAGE_SIZE) == bytes(2 * PAGE_SIZE)


def test_lowest_address_first_and_deterministic() -> None:
    _, a = make(16)
    _, b = make(16)
    got = [a.alloc_page() for _ in range(16)]
    assert got == [BASE + k * PAGE_SIZE for k in range(16)]
    assert got == [b.alloc_page() for _ in range(16)]


def test_counters() -> None:
    _, pages = make(16)
    assert (pages.nr_total, pages.nr_free, pages.nr_allocated) == (16, 16, 0)
    pa = pages.alloc_pages(2)
    one = pages.alloc_page()
    assert (pages.nr_free, pages.nr_allocated) == (11, 5)
    assert pages.order_of(pa) == 2 and pages.order_of(one) == 0
    assert pages.order_of(pa + PAGE_SIZE) is None
    pages.free_pages(pa, 2)
    pages.free_page(one)
    assert (pages.nr_free, pages.nr_allocated) == (16, 0)


def test_exhaustion_is_enomem_and_changes_nothing() -> None:
    _, pages = make(3)
    got = {pages.alloc_page() for _ in range(3)}
    assert len(got) == 3
    with pytest.raises(OutOfMemory) as ei:
        pages.alloc_page()
    assert ei.value.errno == errno.ENOMEM
    assert isinstance(ei.value, ApiError) and isinstance(ei.value, MemoryError)
    assert pages.nr_free == 0
    pages.free_page(min(got))
    assert pages.alloc_page() == min(got)


def test_contiguous_allocation_fails_on_fragmented_memory() -> None:
    _, pages = make(8)
    got = [pages.alloc_page() for _ in range(8)]
    for pa in got[::2]:
        pages.free_page(pa)
    assert pages.nr_free == 4
    with pytest.raises(OutOfMemory):
        pages.alloc_pages(1)
    assert pages.nr_free == 4


def test_double_free_is_einval() -> None:
    _, pages = make(4)
    pa = pages.alloc_page()
    pages.free_page(pa)
    with pytest.raises(InvalidArgument, match="not allocated") as ei:
        pages.free_page(pa)
    assert ei.value.errno == errno.EINVAL
    assert pages.nr_free == 4


@pytest.mark.parametrize("pa", [BASE - PAGE_SIZE, BASE + 4 * PAGE_SIZE, BASE + 8, -4096])
def test_free_outside_range_or_misaligned(pa: int) -> None:
    _, pages = make(4)
    pages.alloc_page()
    with pytest.raises(InvalidArgument, match="4 KiB aligned address in"):
        pages.free_page(pa)
    assert pages.nr_free == 3


def test_free_of_a_page_inside_a_block_or_with_the_wrong_order() -> None:
    _, pages = make(8)
    pa = pages.alloc_pages(2)
    with pytest.raises(InvalidArgument, match="not allocated"):
        pages.free_page(pa + PAGE_SIZE)
    with pytest.raises(InvalidArgument, match="order 2, not 0"):
        pages.free_page(pa)
    pages.free_pages(pa, 2)
    assert pages.nr_free == 8


@pytest.mark.parametrize("order", [-1, 11])
def test_order_out_of_range(order: int) -> None:
    _, pages = make(4)
    with pytest.raises(InvalidArgument, match=r"order must be in 0\.\.10"):
        pages.alloc_pages(order)


@pytest.mark.parametrize(
    ("base", "size", "match"),
    [
        (BASE + 8, PAGE_SIZE, "base must be"),
        (BASE, 0, "size must be"),
        (BASE, 100, "size must be"),
    ],
)
def test_constructor_validates_the_range(base: int, size: int, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        PageAllocator(SparseMemory(), base, size)


def test_blocks_are_naturally_aligned_in_physical_addresses() -> None:
    # A range starting 4 KiB past a 16 KiB boundary: a 16 KiB G-stage root must still be
    # 16 KiB aligned (riscv-iommu: "iohgatp": the root table is 16 KiB and 16 KiB aligned).
    _, pages = make(32, base=BASE + PAGE_SIZE)
    root = pages.alloc_pages(2)
    assert root % (4 * PAGE_SIZE) == 0
    assert pages.owns(root) and pages.owns(root + 3 * PAGE_SIZE)
    big = pages.alloc_pages(4)
    assert big % (16 * PAGE_SIZE) == 0


def test_thousands_of_pages() -> None:
    _, pages = make(8192)
    got = [pages.alloc_page() for _ in range(8192)]
    assert len(set(got)) == 8192
    for pa in reversed(got):
        pages.free_page(pa)
    # Every buddy merged back: the largest blocks are available again.
    assert pages.alloc_pages(10) == BASE


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 7),
    st.lists(st.tuples(st.booleans(), st.integers(0, 4), st.integers()), max_size=60),
)
def test_random_alloc_free_keeps_blocks_disjoint_aligned_and_counted(
    skew: int, ops: list[tuple[bool, int, int]]
) -> None:
    _, pages = make(64, base=BASE + skew * PAGE_SIZE, max_order=4)
    live: dict[int, int] = {}
    for alloc, order, pick in ops:
        if alloc or not live:
            try:
                pa = pages.alloc_pages(order)
            except OutOfMemory:
                continue
            size = PAGE_SIZE << order
            assert pa % size == 0
            assert pages.owns(pa) and pages.owns(pa + size - 1)
            for q, o in live.items():
                assert pa + size <= q or q + (PAGE_SIZE << o) <= pa
            live[pa] = order
        else:
            pa = sorted(live)[pick % len(live)]
            pages.free_pages(pa, live.pop(pa))
        assert pages.nr_allocated == sum(1 << o for o in live.values())
    for pa, o in live.items():
        pages.free_pages(pa, o)
    assert pages.nr_free == 64
    # Fully merged: the allocator hands out the same blocks as a fresh one.
    _, fresh = make(64, base=BASE + skew * PAGE_SIZE, max_order=4)
    assert [pages.alloc_pages(4) for _ in range(3)] == [fresh.alloc_pages(4) for _ in range(3)]
