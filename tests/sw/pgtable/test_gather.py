"""IotlbGather: the range and table pages an unmap leaves for iotlb_sync (Linux
``struct iommu_iotlb_gather``)."""

from __future__ import annotations

from iommusim.sw.pgtable import IotlbGather


def test_starts_empty() -> None:
    g = IotlbGather()
    assert g.empty and g.size == 0 and g.pgsize == 0 and g.freelist == []
    assert g.start == (1 << 64) - 1 and g.end == 0  # iommu_iotlb_gather_init
    assert "empty" in repr(g)


def test_add_range_extends_an_inclusive_range() -> None:
    g = IotlbGather()
    g.add_range(0x5000, 0x1000)
    assert (g.start, g.end, g.size) == (0x5000, 0x5FFF, 0x1000)
    g.add_range(0x2000, 0x1000)
    g.add_range(0x8000, 0x2000)
    assert (g.start, g.end) == (0x2000, 0x9FFF)
    assert not g.empty
    assert g.pgsize == 0  # add_range does not record a page size


def test_add_page_keeps_the_smallest_page_size() -> None:
    g = IotlbGather()
    g.add_page(0x20_0000, 0x20_0000)
    assert g.pgsize == 0x20_0000
    g.add_page(0x1000, 0x1000)
    g.add_page(0x40_0000, 0x20_0000)
    assert g.pgsize == 0x1000
    assert (g.start, g.end) == (0x1000, 0x5F_FFFF)


def test_upper_half_addresses() -> None:
    g = IotlbGather()
    g.add_page((1 << 64) - 0x1000, 0x1000)
    assert g.end == (1 << 64) - 1 and g.size == 0x1000


def test_is_disjoint_as_linux() -> None:
    g = IotlbGather()
    assert not g.is_disjoint(0, 0x1000)  # nothing gathered yet
    g.add_range(0x4000, 0x2000)
    assert not g.is_disjoint(0x6000, 0x1000)  # adjacent after
    assert not g.is_disjoint(0x3000, 0x1000)  # adjacent before
    assert not g.is_disjoint(0x5000, 0x1000)
    assert g.is_disjoint(0x7000, 0x1000)
    assert g.is_disjoint(0x1000, 0x1000)


def test_freelist_alone_is_not_empty_and_reset_clears_all() -> None:
    g = IotlbGather()
    g.freelist.append(0x8000_0000)
    assert not g.empty
    old = g.freelist
    g.add_page(0x1000, 0x1000)
    g.reset()
    assert g.empty and g.pgsize == 0 and g.freelist == []
    assert old == [0x8000_0000]  # a caller holding the old list keeps its pages
