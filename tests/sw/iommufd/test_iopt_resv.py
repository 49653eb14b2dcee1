"""A device's reserved regions in the IOAS (io_pagetable.c
``iopt_table_enforce_dev_resv_regions``): reserved with the device as owner, EADDRINUSE
against areas and allowed ranges, the MSI rules, removal by owner; failures change nothing."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from iommusim.errors import AddressInUse, InvalidArgument
from iommusim.sw.iommufd import IovaRange
from iommusim.sw.iommufd.iopt import (
    RESV_DIRECT,
    RESV_DIRECT_RELAXABLE,
    RESV_MSI,
    RESV_RESERVED,
    RESV_SW_MSI,
    ResvRegion,
)


def test_regions_are_reserved_for_their_device(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = env.ioas(ioas).iopt
    dev_a, dev_b = object(), object()
    regions = [
        ResvRegion(0x8000_0000, 0x8FFF_FFFF, RESV_DIRECT),
        ResvRegion(0xFEE0_0000, 0xFEEF_FFFF, RESV_SW_MSI),
        ResvRegion(0x1000, 0x1FFF, RESV_DIRECT_RELAXABLE),  # not reserved
    ]
    assert t.enforce_dev_resv_regions(regions, dev_a) == 0xFEE0_0000
    assert t.enforce_dev_resv_regions([ResvRegion(0x2000, 0x2FFF)], dev_b) is None
    assert [r for r, o in t.reserved if o is dev_a] == [
        IovaRange(0x8000_0000, 0x8FFF_FFFF),
        IovaRange(0xFEE0_0000, 0xFEEF_FFFF),
    ]
    ranges = env.fd.ioas_iova_ranges(ioas).ranges
    assert ranges[:2] == [IovaRange(0, 0x1FFF), IovaRange(0x3000, 0x7FFF_FFFF)]
    t.remove_reserved(dev_a)
    assert [r for r, _ in t.reserved] == [IovaRange(0x2000, 0x2FFF)]


@pytest.mark.parametrize(
    "regions",
    [
        [ResvRegion(0x10000, 0x10FFF), ResvRegion(0x1_0000_0000, 0x1_0000_0FFF)],
        [ResvRegion(0x2_0000_0000, 0x2_0000_0FFF), ResvRegion(0x10800, 0x10FFF, RESV_MSI)],
        [ResvRegion(0x40_0000_0000, 0x40_0000_0FFF)],
    ],
)
def test_a_region_on_an_area_or_allowed_range_is_eaddrinuse(env: Any, regions: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x1000, 0xFF_FFFF), IovaRange(1 << 38, 1 << 39)])
    env.fd.ioas_map(ioas, env.buf, 0x1000, iova=0x10000)
    t = env.ioas(ioas).iopt
    dev = object()
    t.enforce_dev_resv_regions([ResvRegion(0x3_0000_0000, 0x3_0000_0FFF)], dev)
    env.fails(AddressInUse, errno.EADDRINUSE, lambda: t.enforce_dev_resv_regions(regions, dev))


@pytest.mark.parametrize(
    "types", [(RESV_SW_MSI, RESV_MSI), (RESV_SW_MSI, RESV_SW_MSI), (RESV_MSI, RESV_SW_MSI)]
)
def test_bad_msi_combinations_are_einval(env: Any, types: tuple[int, int]) -> None:
    ioas = env.fd.ioas_alloc()
    t = env.ioas(ioas).iopt
    regions = [ResvRegion(0xA000, 0xAFFF, types[0]), ResvRegion(0xC000, 0xCFFF, types[1])]
    env.fails(InvalidArgument, errno.EINVAL, lambda: t.enforce_dev_resv_regions(regions, 1))
    one = [regions[0], ResvRegion(0, 0, RESV_RESERVED)]  # one MSI region alone is fine
    assert t.enforce_dev_resv_regions(one, 1) == (0xA000 if types[0] == RESV_SW_MSI else None)
