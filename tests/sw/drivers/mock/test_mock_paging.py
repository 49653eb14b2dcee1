"""Mock paging domains: map, unmap, iova_to_phys and dirty tracking on both table types
(selftest.c: mock_domain_alloc_pgtable, amdv1_mock_ops / amdv1_mock_huge_ops,
mock_domain_set_dirty_tracking, amdv1_mock_dirty_ops; generic_pt fmt/amdv1.h under
AMDV1_IOMMUFD_SELFTEST)."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import ApiError
from iommusim.sw.drivers.mock import MockPagingDomain
from iommusim.sw.iommufd import selftest_uapi as su
from iommusim.sw.iommufd import uapi
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

RW: Final = IOMMU_READ | IOMMU_WRITE
K2: Final = su.MOCK_PAGE_SIZE
K4: Final = 4096
M1: Final = su.MOCK_HUGE_PAGE_SIZE
BASE: Final = su.MOCK_APERTURE_START
PA: Final = 0x4000_0000
HWPT = su.STRUCTS["iommu_hwpt_selftest"]


def paging(env: Any, huge: bool = False, dirty: bool = False) -> MockPagingDomain:
    flags = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING if dirty else 0
    data = env.user_data(0xDEAD, HWPT.encode(pagetable_type=int(huge)))
    return env.drv.domain_alloc_paging_flags(env.dev(), flags, data)  # type: ignore[no-any-return]


def leaves(dom: MockPagingDomain) -> list[tuple[int, int, int]]:
    return [(b, lf.pa, lf.size) for b, lf in dom.pt.leaves()]


def dirty_of(dom: MockPagingDomain, iova: int, size: int, no_clear: bool) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    dom.read_and_clear_dirty(iova, size, no_clear, lambda i, n: seen.append((i, n)))
    return seen


def errno_of(e: pytest.ExceptionInfo[ApiError]) -> int:
    return e.value.errno


# ------------------------------------------------------------------ default table
def test_a_2k_page_maps_and_translates_byte_for_byte(env: Any) -> None:
    dom = paging(env)
    env.core.map(dom, Iova(BASE), PhysAddr(PA + K2), K2, RW)
    assert leaves(dom) == [(BASE, PA + K2, K2)]
    assert env.core.iova_to_phys(dom, Iova(BASE + 0x7FF)) == PA + K2 + 0x7FF
    assert env.core.iova_to_phys(dom, Iova(BASE + K2)) is None
    assert env.core.iova_to_phys(dom, Iova(BASE - 1)) is None


def test_the_largest_leaf_both_alignments_allow_is_used(env: Any) -> None:
    """iommu_pgsize: the biggest page of pgsize_bitmap that iova | paddr and the length
    allow (every power of two from 2 KiB in the default table)."""
    dom = paging(env)
    dom.map(Iova(BASE), PhysAddr(PA), 0x10000 + K4 + K2, RW)
    assert leaves(dom) == [
        (BASE, PA, 0x10000),
        (BASE + 0x10000, PA + 0x10000, K4),
        (BASE + 0x11000, PA + 0x11000, K2),
    ]
    dom2 = paging(env)
    dom2.map(Iova(BASE), PhysAddr(PA + K2), 2 * K2, RW)  # the PA is only 2 KiB aligned
    assert [s for _, _, s in leaves(dom2)] == [K2, K2]


def test_unmap_returns_the_bytes_of_the_leaves_and_gathers_them(env: Any) -> None:
    dom = paging(env)
    dom.map(Iova(BASE), PhysAddr(PA), K4, RW)
    dom.map(Iova(BASE + 0x8000), PhysAddr(PA), K2, RW)
    gather = IotlbGather()
    assert dom.unmap(Iova(BASE), 0x10000, gather) == K4 + K2  # the hole counts 0
    assert (gather.start, gather.end, gather.pgsize) == (BASE, BASE + 0x8000 + K2 - 1, K2)
    assert leaves(dom) == [] and gather.freelist == []
    assert env.core.unmap(dom, Iova(BASE), K2) == 0


def test_the_core_map_and_unmap_go_through_the_table(env: Any) -> None:
    dom = paging(env)
    env.core.map(dom, Iova(BASE), PhysAddr(PA), 0x4000, RW)
    assert env.core.unmap(dom, Iova(BASE), 0x4000) == 0x4000
    assert env.core.iova_to_phys(dom, Iova(BASE)) is None


def _map_error_cases() -> list[tuple[str, int, int, int, int, int]]:
    """(name, iova, pa, size, prot, errno) against a table holding [BASE+4K, BASE+8K)."""
    return [
        ("overlaps the start of a leaf", BASE, PA, 2 * K4, RW, errno.EEXIST),
        ("inside a leaf", BASE + K4 + K2, PA, K2, RW, errno.EEXIST),
        ("covers a leaf", BASE, PA, 0x10000, RW, errno.EEXIST),
        ("iova misaligned", BASE + 0x100, PA, K2, RW, errno.EINVAL),
        ("size misaligned", BASE + 0x10000, PA, 0x900, RW, errno.EINVAL),
        ("empty", BASE + 0x10000, PA, 0, RW, errno.EINVAL),
        ("pa misaligned", BASE + 0x10000, PA + 0x400, K2, RW, errno.EINVAL),
        ("beyond the 38-bit table", (1 << 38) - K2, PA, 2 * K2, RW, errno.EINVAL),
        ("negative iova", -K2, PA, K2, RW, errno.EINVAL),
        ("beyond 51-bit output", BASE + 0x10000, (1 << 51) - K2, 2 * K2, RW, errno.EINVAL),
        ("unknown prot bit", BASE + 0x10000, PA, K2, 1 << 6, errno.EINVAL),
    ]


@pytest.mark.parametrize("case", range(11))
def test_every_map_error_changes_nothing(env: Any, case: int) -> None:
    dom = paging(env)
    dom.map(Iova(BASE + K4), PhysAddr(PA), K4, RW)
    name, iova, pa, size, prot, err = _map_error_cases()[case]
    before = env.snapshot(dom)
    with pytest.raises(ApiError) as e:
        dom.map(Iova(iova), PhysAddr(pa), size, prot)
    assert errno_of(e) == err, name
    assert env.snapshot(dom) == before


@pytest.mark.parametrize(
    ("iova", "size"),
    [(BASE + K2, K2), (BASE, K2), (BASE + K2, 0x10000), (BASE + 0x100, K2), ((1 << 38), K2)],
)
def test_unmap_that_would_split_a_leaf_or_is_malformed_is_einval(
    env: Any, iova: int, size: int
) -> None:
    """The core's contract: a leaf is not split (EINVAL, nothing changed)."""
    dom = paging(env)
    dom.map(Iova(BASE), PhysAddr(PA), K4, RW)
    before = env.snapshot(dom)
    with pytest.raises(ApiError) as e:
        dom.unmap(Iova(iova), size, IotlbGather())
    assert errno_of(e) == errno.EINVAL
    assert env.snapshot(dom) == before


def test_freeing_the_domain_drops_its_table(env: Any) -> None:
    dom = paging(env)
    dom.map(Iova(BASE), PhysAddr(PA), K4, RW)
    env.core.domain_free(dom)
    assert dom.freed and len(dom.pt) == 0


# ------------------------------------------------------------------ huge table
def test_the_huge_table_maps_huge_pages_and_cpu_pages(env: Any) -> None:
    """MOCK_IOMMUPT_HUGE: pgsize_bitmap MOCK_HUGE_PAGE_SIZE | PAGE_SIZE."""
    dom = paging(env, huge=True)
    dom.map(Iova(0), PhysAddr(PA), 2 * M1 + K4, RW)
    assert leaves(dom) == [(0, PA, M1), (M1, PA + M1, M1), (2 * M1, PA + 2 * M1, K4)]
    assert dom.iova_to_phys(Iova(M1 + 0x1234)) == PA + M1 + 0x1234
    dom.map(Iova(4 * M1), PhysAddr(PA + K4), M1, RW)  # the PA is only 4 KiB aligned
    assert {s for b, _, s in leaves(dom) if b >= 4 * M1} == {K4}
    assert dom.unmap(Iova(0), 2 * M1, IotlbGather()) == 2 * M1


def test_the_huge_table_refuses_2k_pages(env: Any) -> None:
    dom = paging(env, huge=True)
    with pytest.raises(ApiError) as e:
        env.core.map(dom, Iova(0), PhysAddr(PA), K2, RW)
    assert errno_of(e) == errno.EINVAL
    with pytest.raises(ApiError) as e:
        dom.map(Iova(K2), PhysAddr(PA), K4, RW)
    assert errno_of(e) == errno.EINVAL
    assert len(dom.pt) == 0


# ------------------------------------------------------------------ dirty tracking
def test_a_domain_without_dirty_ops_has_no_dirty_tracking(env: Any) -> None:
    """Without IOMMU_HWPT_ALLOC_DIRTY_TRACKING domain->dirty_ops is NULL: no op at all."""
    dom = paging(env)
    before = env.snapshot(dom)
    for call in (
        lambda: dom.set_dirty_tracking(True),
        lambda: dom.read_and_clear_dirty(BASE, K4, False, lambda i, n: None),
    ):
        with pytest.raises(ApiError) as e:
            call()
        assert errno_of(e) == errno.EOPNOTSUPP
    assert env.snapshot(dom) == before


def test_set_dirty_tracking_toggles_the_mock_dirty_flag(env: Any) -> None:
    """mock_domain_set_dirty_tracking; selftest iommufd_dirty_tracking.set_dirty_tracking."""
    dom = paging(env, dirty=True)
    dom.set_dirty_tracking(True)
    assert dom.dirty_tracking
    dom.set_dirty_tracking(True)  # no change
    assert dom.dirty_tracking
    dom.set_dirty_tracking(False)
    assert not dom.dirty_tracking


def test_a_dirty_leaf_is_reported_whole_and_cleaned(env: Any) -> None:
    """amdv1pt_entry_is_write_dirty: the D bit of any item makes the contiguous leaf dirty,
    so a 4 KiB leaf is 4 KiB dirty even if one 2 KiB half was written."""
    dom = paging(env, dirty=True)
    dom.map(Iova(BASE), PhysAddr(PA), 3 * K4, RW)  # leaves 8K + 4K
    assert dom.pt.set_dirty(BASE + 0x2800)
    assert not dom.pt.set_dirty(BASE + 0x10000)
    assert dirty_of(dom, BASE, 3 * K4, False) == [(BASE + 0x2000, K4)]
    assert dirty_of(dom, BASE, 3 * K4, False) == []


def test_no_clear_keeps_the_dirty_bits(env: Any) -> None:
    dom = paging(env, huge=True, dirty=True)
    dom.map(Iova(0), PhysAddr(PA), 2 * M1, RW)
    dom.pt.set_dirty(M1 + 5)
    for _ in range(2):  # a huge leaf is MOCK_HUGE_PAGE_SIZE dirty bytes
        assert dirty_of(dom, 0, 2 * M1, True) == [(M1, M1)]


def test_a_dirty_leaf_across_the_edge_of_the_range_is_clipped(env: Any) -> None:
    dom = paging(env, huge=True, dirty=True)
    dom.map(Iova(0), PhysAddr(PA), 2 * M1, RW)
    dom.pt.set_dirty(0)
    dom.pt.set_dirty(M1)
    assert dirty_of(dom, M1 - K4, 2 * K4, False) == [(M1 - K4, K4), (M1, K4)]
    assert all(not lf.dirty for _, lf in dom.pt.leaves())
