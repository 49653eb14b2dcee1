"""VmaList: sorted, disjoint, merged areas; split on remove and set_prot (Linux ``split_vma``,
``vma_merge``), gap search (``unmapped_area`` / ``unmapped_area_topdown``)."""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import ModelError
from iommusim.sw.mm import Vma, VmaList

P: Final = 0x1000


def spans(vl: VmaList) -> list[tuple[int, int, int]]:
    return [(v.start // P, v.end // P, v.prot) for v in vl]


def build(*areas: tuple[int, int, int]) -> VmaList:
    vl = VmaList()
    for s, e, p in areas:
        vl.insert(s * P, e * P, p)
    vl.check()
    return vl


def test_insert_merges_touching_areas_of_equal_prot() -> None:
    vl = build((10, 20, 3), (30, 40, 3))
    vl.insert(20 * P, 30 * P, 3)
    assert spans(vl) == [(10, 40, 3)]
    vl.insert(40 * P, 41 * P, 1)
    vl.insert(9 * P, 10 * P, 1)
    assert spans(vl) == [(9, 10, 1), (10, 40, 3), (40, 41, 1)]
    vl.check()


def test_insert_over_an_area_is_a_model_error() -> None:
    vl = build((10, 20, 3))
    with pytest.raises(ModelError, match="overlaps"):
        vl.insert(19 * P, 21 * P, 3)
    with pytest.raises(ModelError, match="empty area"):
        vl.insert(30 * P, 30 * P, 3)
    assert spans(vl) == [(10, 20, 3)]


def test_remove_splits_and_returns_the_clipped_pieces() -> None:
    vl = build((10, 20, 3), (20, 30, 1), (40, 50, 3))
    removed = vl.remove(15 * P, 45 * P)
    assert [(v.start // P, v.end // P, v.prot) for v in removed] == [
        (15, 20, 3),
        (20, 30, 1),
        (40, 45, 3),
    ]
    assert spans(vl) == [(10, 15, 3), (45, 50, 3)]
    assert vl.remove(0, 5 * P) == []  # a hole
    vl.remove(12 * P, 13 * P)  # the middle of an area
    assert spans(vl) == [(10, 12, 3), (13, 15, 3), (45, 50, 3)]
    vl.check()


def test_set_prot_splits_and_merges_back() -> None:
    vl = build((10, 20, 3))
    old = vl.set_prot(12 * P, 14 * P, 1)
    assert old == [Vma(12 * P, 14 * P, 3)]
    assert spans(vl) == [(10, 12, 3), (12, 14, 1), (14, 20, 3)]
    vl.set_prot(12 * P, 14 * P, 3)
    assert spans(vl) == [(10, 20, 3)]
    with pytest.raises(ModelError, match="not covered"):
        vl.set_prot(5 * P, 12 * P, 1)


def test_find_covered_is_free() -> None:
    vl = build((10, 20, 3), (20, 30, 1), (40, 50, 3))
    assert vl.find(10 * P) == Vma(10 * P, 20 * P, 3)
    assert vl.find(20 * P - 1) == Vma(10 * P, 20 * P, 3)
    assert vl.find(30 * P) is None and vl.find(0) is None and vl.find(50 * P) is None
    assert vl.covered(15 * P, 30 * P) and not vl.covered(15 * P, 31 * P)
    assert not vl.covered(5 * P, 12 * P)
    assert vl.is_free(30 * P, 40 * P) and not vl.is_free(30 * P, 41 * P)
    assert 10 * P in vl.find(10 * P)  # type: ignore[operator]


def test_gaps() -> None:
    vl = build((10, 20, 3), (25, 30, 1), (40, 50, 3))
    assert vl.gap_top_down(5 * P, 0, 100 * P) == 95 * P
    assert vl.gap_top_down(5 * P, 0, 45 * P) == 35 * P  # below the area crossing high
    assert vl.gap_top_down(10 * P, 0, 40 * P) == 30 * P
    assert vl.gap_top_down(10 * P, 0, 39 * P) == 0  # only [0, 10) is big enough
    assert vl.gap_top_down(10 * P, P, 39 * P) is None
    assert vl.gap_top_down(5 * P, 0, 25 * P) == 20 * P
    assert vl.gap_bottom_up(5 * P, 0, 100 * P) == 0
    assert vl.gap_bottom_up(5 * P, 8 * P, 100 * P) == 20 * P
    assert vl.gap_bottom_up(10 * P, 8 * P, 100 * P) == 30 * P
    assert vl.gap_bottom_up(60 * P, 8 * P, 100 * P) is None
    assert VmaList().gap_top_down(P, 0, P) == 0


Op = tuple[str, int, int, int]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["insert", "remove", "set_prot"]),
            st.integers(0, 40),
            st.integers(1, 10),
            st.integers(0, 3),
        ),
        max_size=30,
    )
)
def test_against_a_page_model(ops: list[Op]) -> None:
    """Random operations against a dict page -> prot: the list always equals the model,
    merged and sorted; gap searches find the highest/lowest fitting free range."""
    vl = VmaList()
    model: dict[int, int] = {}
    for kind, s, n, prot in ops:
        pages = range(s, s + n)
        if kind == "insert":
            if any(p in model for p in pages):
                continue
            vl.insert(s * P, (s + n) * P, prot)
            model.update(dict.fromkeys(pages, prot))
        elif kind == "remove":
            removed = vl.remove(s * P, (s + n) * P)
            assert sum(v.size for v in removed) == sum(p in model for p in pages) * P
            for p in pages:
                model.pop(p, None)
        else:
            if not all(p in model for p in pages):
                assert not vl.covered(s * P, (s + n) * P)
                continue
            old = vl.set_prot(s * P, (s + n) * P, prot)
            assert {q // P: v.prot for v in old for q in range(v.start, v.end, P)} == {
                p: model[p] for p in pages
            }
            model.update(dict.fromkeys(pages, prot))
        vl.check()
        assert {q // P: v.prot for v in vl for q in range(v.start, v.end, P)} == model
        for length in (1, 3):
            free = [
                p
                for p in range(0, 60 - length + 1)
                if all(q not in model for q in range(p, p + length))
            ]
            assert vl.gap_top_down(length * P, 0, 60 * P) == (max(free) * P if free else None)
            assert vl.gap_bottom_up(length * P, 0, 60 * P) == (min(free) * P if free else None)
