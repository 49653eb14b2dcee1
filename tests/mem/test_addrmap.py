"""AddressMap: overlap-checked, freezable regions dispatched by address."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iommusim.errors import BusError, ModelError
from iommusim.mem import (
    AddressMap,
    FlatMemory,
    MemAccess,
    PhysicalMemory,
    SparseMemory,
    TracingMemory,
)
from testsupport.memops import PAGE, Op, check_against_reference, ops

RAM0 = 0x8000_0000
RAM1 = RAM0 + 2 * PAGE  # adjacent to RAM0


def _two_rams() -> tuple[AddressMap, FlatMemory, FlatMemory]:
    amap = AddressMap()
    ram0 = FlatMemory(RAM0, 2 * PAGE)
    ram1 = FlatMemory(RAM1, 2 * PAGE)
    amap.add(RAM0, 2 * PAGE, ram0, name="ram0")
    amap.add(RAM1, 2 * PAGE, ram1, name="ram1")
    return amap, ram0, ram1


def test_implements_protocol() -> None:
    assert isinstance(AddressMap(), PhysicalMemory)


@given(ops(4 * PAGE))
def test_adjacent_regions_agree_with_bytearray_model(seq: list[Op]) -> None:
    amap, _, _ = _two_rams()
    check_against_reference(amap, RAM0, 4 * PAGE, seq, atomic_boundaries=(RAM1 - RAM0,))


def test_dispatches_to_the_region_holding_the_address() -> None:
    amap, ram0, ram1 = _two_rams()
    amap.write64(RAM0 + 0x10, 1)
    amap.write64(RAM1 + 0x10, 2)
    assert ram0.read64(RAM0 + 0x10) == 1
    assert ram1.read64(RAM1 + 0x10) == 2
    assert amap.region_at(RAM1 - 1) is amap.regions[0]
    assert amap.region_at(RAM1) is amap.regions[1]
    assert amap.region_at(RAM0 - 1) is None
    assert amap.region_at(RAM1 + 2 * PAGE) is None


def test_access_spanning_adjacent_regions_is_split() -> None:
    amap, ram0, ram1 = _two_rams()
    amap.write64(RAM1 - 4, 0x1122_3344_5566_7788)
    assert ram0.read32(RAM1 - 4) == 0x5566_7788
    assert ram1.read32(RAM1) == 0x1122_3344
    assert amap.read64(RAM1 - 4) == 0x1122_3344_5566_7788
    amap.write32(RAM1 - 2, 0xAABB_CCDD)
    assert amap.read32(RAM1 - 2) == 0xAABB_CCDD
    assert amap.read(RAM1 - 3, 6) == bytes([0x77, 0xDD, 0xCC, 0xBB, 0xAA, 0x22])


@pytest.mark.parametrize(
    ("pa", "size"),
    [(RAM0 - 1, 1), (RAM1 + 2 * PAGE, 8), (RAM0 - 2, 4), (RAM1 + 2 * PAGE - 4, 8), (0, 0)],
)
def test_unmapped_access_is_an_access_fault(pa: int, size: int) -> None:
    amap, _, _ = _two_rams()
    with pytest.raises(BusError) as info:
        amap.read(pa, size)
    assert (info.value.kind, info.value.pa) == ("access", pa)
    with pytest.raises(BusError):
        amap.write(pa, bytes(size))
    if size in (4, 8):
        read = amap.read32 if size == 4 else amap.read64
        write = amap.write32 if size == 4 else amap.write64
        with pytest.raises(BusError):
            read(pa)
        with pytest.raises(BusError):
            write(pa, 0)


def test_write_into_a_hole_changes_nothing() -> None:
    amap, _, ram1 = _two_rams()
    end = RAM1 + 2 * PAGE
    amap.write(end - 16, b"\x11" * 16)
    with pytest.raises(BusError):
        amap.write(end - 8, b"\xff" * 16)
    assert ram1.read(end - 16, 16) == b"\x11" * 16


def test_cas64_must_not_span_regions() -> None:
    amap, _, _ = _two_rams()
    amap.write64(RAM1 - 4, 5)
    with pytest.raises(BusError) as info:
        amap.cas64(RAM1 - 4, 5, 6)
    assert (info.value.kind, info.value.pa) == ("access", RAM1 - 4)
    assert amap.read64(RAM1 - 4) == 5
    assert amap.cas64(RAM1 - 16, 0, 6) == 0
    assert amap.read64(RAM1 - 16) == 6


def test_target_pa_translates_addresses() -> None:
    amap = AddressMap()
    log: list[MemAccess] = []
    backing = SparseMemory()
    amap.add(0x4000_0000, PAGE, TracingMemory(backing, log), target_pa=0)
    amap.write32(0x4000_0010, 0xFEED)
    assert log == [MemAccess("w", 0x10, 4, 0xFEED)]
    assert backing.read32(0x10) == 0xFEED
    assert amap.read32(0x4000_0010) == 0xFEED


def test_regions_sorted_by_address() -> None:
    amap = AddressMap()
    amap.add(0x3000, 0x1000, SparseMemory(), name="c")
    amap.add(0x1000, 0x1000, SparseMemory(), name="a")
    amap.add(0x2000, 0x1000, SparseMemory(), name="b")
    assert [r.name for r in amap.regions] == ["a", "b", "c"]
    assert len(amap) == 3
    assert [amap.region_at(pa).name for pa in (0x1FFF, 0x2000, 0x3FFF)] == ["a", "b", "c"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("base", "size"),
    [(0x1800, 0x1000), (0x0800, 0x1000), (0x1000, 0x1000), (0x1100, 0x10), (0x0, 0x3000)],
)
def test_overlap_is_rejected(base: int, size: int) -> None:
    amap = AddressMap()
    amap.add(0x1000, 0x1000, SparseMemory(), name="ram")
    with pytest.raises(ModelError) as info:
        amap.add(base, size, SparseMemory(), name="dev")
    assert str(info.value) == (
        f"region 'dev' [{base:#x}, {base + size:#x}) must not overlap 'ram' [0x1000, 0x2000)"
    )
    assert len(amap) == 1


def test_frozen_map_rejects_changes_but_still_dispatches() -> None:
    amap, _, _ = _two_rams()
    amap.freeze()
    assert amap.frozen
    with pytest.raises(ModelError, match=r"^address map must not be changed once frozen$"):
        amap.add(0, PAGE, SparseMemory())
    amap.write64(RAM0, 3)
    assert amap.read64(RAM0) == 3


@pytest.mark.parametrize(
    ("base", "size", "memory", "message"),
    [
        (0, 0, SparseMemory(), "region size must be positive, not 0"),
        (-1, 8, SparseMemory(), "region base must be non-negative, not -0x1"),
        (
            (1 << 64) - 4,
            8,
            SparseMemory(),
            "region must end within the 64-bit address space, not at 0x10000000000000004",
        ),
        (0, 8, object(), "region memory must implement PhysicalMemory, not object"),
    ],
)
def test_add_validation(base: int, size: int, memory: object, message: str) -> None:
    amap = AddressMap()
    with pytest.raises(ModelError, match=f"^{re.escape(message)}$"):
        amap.add(base, size, memory)  # type: ignore[arg-type]
    assert len(amap) == 0


@given(st.integers(0, 6 * PAGE), st.integers(1, 16))
def test_faults_exactly_outside_regions(off: int, size: int) -> None:
    # ram at [PAGE, 2 PAGE) and [3 PAGE, 5 PAGE); everything else is a hole.
    amap = AddressMap()
    amap.add(PAGE, PAGE, SparseMemory())
    amap.add(3 * PAGE, 2 * PAGE, SparseMemory())
    mapped = all(PAGE <= b < 2 * PAGE or 3 * PAGE <= b < 5 * PAGE for b in range(off, off + size))
    try:
        amap.read(off, size)
    except BusError as e:
        assert not mapped
        assert e.pa == off
    else:
        assert mapped
