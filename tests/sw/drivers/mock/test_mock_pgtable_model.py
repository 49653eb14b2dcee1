"""The mock page table against a dict model: random map/unmap/dirty sequences on both page
size sets (selftest.c mock_domain_alloc_pgtable's DEFAULT and HUGE tables)."""

from __future__ import annotations

import errno
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import ApiError
from iommusim.sw.drivers.mock import (
    MOCK_DEFAULT_PGSIZE_BITMAP,
    MOCK_HUGE_PGSIZE_BITMAP,
    MockPageTable,
)
from iommusim.sw.pgtable.gather import IotlbGather

PA: Final = 0x4000_0000
#: (pgsize_bitmap, granule, how many granules the window spans).
TABLES: Final = {
    "default": (MOCK_DEFAULT_PGSIZE_BITMAP, 0x800, 64),
    "huge": (MOCK_HUGE_PGSIZE_BITMAP, 0x1000, 768),  # three 1 MiB leaves fit
}

OPS = st.lists(
    st.tuples(
        st.sampled_from(["map", "unmap", "dirty"]),
        st.integers(0, 767),  # start, in granules (taken modulo the window)
        st.integers(1, 300),  # length, in granules
        st.integers(0, 3),  # PA skew, in granules: how aligned the PA is
    ),
    min_size=1,
    max_size=25,
)


def dirty_leaves(pt: MockPageTable, size: int) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    pt.read_and_clear_dirty(0, size, False, lambda i, m: seen.append((i, m)))
    return seen


@pytest.mark.parametrize("table", sorted(TABLES))
@settings(max_examples=60, deadline=None, derandomize=True)
@given(ops=OPS)
def test_the_table_agrees_with_a_model(table: str, ops: list[tuple[str, int, int, int]]) -> None:
    """Every granule translates as the model says; leaves are sizes of the bitmap, naturally
    aligned in IOVA and PA; refused calls change nothing; unmap returns the leaves' bytes and
    gathers them; dirty leaves read back whole and then clean."""
    bitmap, g, span = TABLES[table]
    pt = MockPageTable(bitmap)
    model: dict[int, int] = {}  # granule IOVA -> PA
    for kind, start, n, skew in ops:
        start %= span
        n = min(n, span - start)
        iova, size, pa = start * g, n * g, PA + skew * g
        before = pt.leaves()
        if kind == "map":
            overlap = any(iova + k * g in model for k in range(n))
            try:
                pt.map(iova, pa, size, 3)
            except ApiError as e:
                assert overlap and e.errno == errno.EEXIST
                assert pt.leaves() == before
                continue
            assert not overlap
            model.update({iova + k * g: pa + k * g for k in range(n)})
        elif kind == "unmap":
            gather = IotlbGather()
            try:
                done = pt.unmap(iova, size, gather)
            except ApiError as e:
                assert e.errno == errno.EINVAL  # it would split a leaf
                assert pt.leaves() == before
                continue
            cleared = [b for b, _ in before if iova <= b < iova + size]
            assert done == sum(lf.size for b, lf in before if b in cleared)
            if cleared:
                assert gather.start == cleared[0]
            for b, lf in before:
                if b in cleared:
                    for k in range(lf.size // g):
                        del model[b + k * g]
        else:
            pt.set_dirty(iova)
            seen = dirty_leaves(pt, span * g)
            found = pt.leaf_at(iova)
            assert seen == ([(found[0], found[1].size)] if found else [])
        for b, lf in pt.leaves():
            assert lf.size & bitmap and not b % lf.size and not lf.pa % lf.size
        for k in range(span):
            assert pt.iova_to_phys(k * g) == model.get(k * g)
