"""The device's address translation cache (platform/atc.py): LRU replacement, lookups by
PASID and privilege, range invalidation as an Invalidate Request asks (riscv-iommu: "IOMMU PCIe
ATS commands", ATS.INVAL). Small geometries reach the eviction corners (STYLE)."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import InvalidArgument
from iommusim.platform.atc import Atc


def test_lru_replacement_and_peek() -> None:
    atc = Atc(2)
    atc.insert(-1, 1, 0x1000, True, False)
    atc.insert(-1, 2, 0x2000, True, True)
    assert atc.lookup(-1, 1) == (0x1000, True, False)  # 1 is now the most recent
    assert atc.peek(-1, 2) == (0x2000, True, True)  # peek does not reorder
    atc.insert(-1, 3, 0x3000, True, True)
    assert atc.peek(-1, 2) is None and len(atc) == 2 and atc.evictions == 1
    atc.insert(-1, 1, 0x9000, True, True)  # replacing an entry evicts nothing
    assert atc.lookup(-1, 1) == (0x9000, True, True) and atc.evictions == 1


def test_pasid_and_privilege_are_part_of_the_tag() -> None:
    atc = Atc(8)
    atc.insert(-1, 5, 0xA000, True, True)
    atc.insert(3, 5, 0xB000, True, True)
    atc.insert(3, 5, 0xC000, True, False, priv=True)
    assert atc.lookup(-1, 5) == (0xA000, True, True)
    assert atc.lookup(3, 5) == (0xB000, True, True)
    assert atc.lookup(3, 5, priv=True) == (0xC000, True, False)
    assert atc.lookup(4, 5) is None


def test_invalidate_by_range_and_pasid() -> None:
    atc = Atc(16)
    for pid in (-1, 1, 2):
        for vpn in (0x10, 0x11, 0x12, 0x20):
            atc.insert(pid, vpn, vpn << 12, True, True)
    assert atc.invalidate(1, 0x11000, 0x2000) == 2  # pages 0x11, 0x12 of PASID 1
    assert atc.peek(1, 0x10) is not None and atc.peek(1, 0x11) is None
    assert atc.peek(2, 0x11) is not None and atc.peek(-1, 0x11) is not None
    # No PASID: every PASID and the untagged entries (over-invalidation PCIe allows).
    assert atc.invalidate(None, 0x10000, 0x1000) == 3
    left = len(atc)
    assert atc.invalidate(None, 0, 1 << 64) == left and len(atc) == 0


def test_clear_and_bad_size() -> None:
    atc = Atc(4)
    atc.insert(-1, 1, 0, True, True)
    assert atc.clear() == 1 and len(atc) == 0
    with pytest.raises(InvalidArgument, match="ATC entries must be at least 1, not 0") as e:
        Atc(0)
    assert e.value.errno == errno.EINVAL


ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.sampled_from([-1, 1, 2]), st.integers(0, 7)),
        st.tuples(st.just("lookup"), st.sampled_from([-1, 1, 2]), st.integers(0, 7)),
        st.tuples(st.just("inval"), st.sampled_from([None, 1, 2]), st.integers(0, 7)),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(capacity=st.integers(1, 4), ops=ops)
def test_matches_a_reference_lru(capacity: int, ops: list[tuple[str, int | None, int]]) -> None:
    """Against a list kept in recency order: same hits, same contents, same evictions."""
    atc = Atc(capacity)
    ref: list[tuple[int, int]] = []  # least recent first
    evictions = 0
    for op, pid, vpn in ops:
        if op == "insert":
            assert pid is not None
            key = (pid, vpn)
            if key in ref:
                ref.remove(key)
            elif len(ref) >= capacity:
                ref.pop(0)
                evictions += 1
            ref.append(key)
            atc.insert(pid, vpn, vpn << 12, True, True)
        elif op == "lookup":
            assert pid is not None
            key = (pid, vpn)
            hit = atc.lookup(pid, vpn)
            assert (hit is not None) == (key in ref)
            if key in ref:
                ref.remove(key)
                ref.append(key)
        else:
            # Two pages from vpn on.
            doomed = [k for k in ref if vpn <= k[1] <= vpn + 1 and (pid is None or k[0] == pid)]
            assert atc.invalidate(pid, vpn << 12, 0x2000) == len(doomed)
            ref = [k for k in ref if k not in doomed]
        assert len(atc) == len(ref)
        assert atc.evictions == evictions
