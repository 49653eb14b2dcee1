"""The id allocator (after Linux ``ida``): lowest free id first, and claiming one id."""

from __future__ import annotations

from iommusim.sw.core.ida import Ida


def test_claim_takes_exactly_one_free_id() -> None:
    ida = Ida(1, 10)
    assert ida.alloc() == 1
    assert ida.claim(5) and not ida.claim(5) and not ida.claim(1) and not ida.claim(11)
    assert [ida.alloc() for _ in range(4)] == [2, 3, 4, 6]
    ida.free(3)
    assert ida.claim(3) and ida.alloc() == 7
