"""TracingMemory: every access recorded, in order, with its data."""

from __future__ import annotations

import dataclasses

import pytest

from iommusim.errors import BusError
from iommusim.mem import (
    ACCESS,
    CORRUPTION,
    FaultInjectingMemory,
    FlatMemory,
    MemAccess,
    PhysicalMemory,
    SparseMemory,
    TracingMemory,
)


def test_implements_protocol() -> None:
    assert isinstance(TracingMemory(SparseMemory(), []), PhysicalMemory)


def test_records_every_access_in_order() -> None:
    inner = SparseMemory()
    log: list[MemAccess] = []
    mem = TracingMemory(inner, log)
    mem.write(0x100, b"\x01\x02\x03")
    assert mem.read(0x100, 3) == b"\x01\x02\x03"
    mem.write32(0x200, 0xAABB_CCDD)
    assert mem.read32(0x200) == 0xAABB_CCDD
    mem.write64(0x208, 0x1122_3344_5566_7788)
    assert mem.read64(0x208) == 0x1122_3344_5566_7788
    assert log == [
        MemAccess("w", 0x100, 3, 0x030201),
        MemAccess("r", 0x100, 3, 0x030201),
        MemAccess("w", 0x200, 4, 0xAABB_CCDD),
        MemAccess("r", 0x200, 4, 0xAABB_CCDD),
        MemAccess("w", 0x208, 8, 0x1122_3344_5566_7788),
        MemAccess("r", 0x208, 8, 0x1122_3344_5566_7788),
    ]
    # The accesses reached the inner memory.
    assert inner.read64(0x208) == 0x1122_3344_5566_7788


def test_callable_sink() -> None:
    seen: list[tuple[str, int]] = []
    mem = TracingMemory(FlatMemory(0, 64), lambda a: seen.append((a.kind, a.pa)))
    mem.write64(8, 1)
    mem.read32(8)
    assert seen == [("w", 8), ("r", 8)]


def test_store_records_value_truncated_to_width() -> None:
    log: list[MemAccess] = []
    mem = TracingMemory(SparseMemory(), log)
    mem.write32(0, 0x1_2345_6789)
    assert log[-1].value == 0x2345_6789
    assert mem.read32(0) == 0x2345_6789


def test_cas_records_found_expected_and_new() -> None:
    log: list[MemAccess] = []
    mem = TracingMemory(SparseMemory(), log)
    mem.write64(0x40, 5)
    log.clear()
    assert mem.cas64(0x40, 4, 6) == 5  # mismatch: kept
    assert mem.cas64(0x40, 5, 6) == 5  # match: swapped
    assert log == [
        MemAccess("cas", 0x40, 8, 5, expected=4, new=6),
        MemAccess("cas", 0x40, 8, 5, expected=5, new=6),
    ]
    assert [a.swapped for a in log] == [False, True]
    assert mem.read64(0x40) == 6


def test_faulting_access_recorded_then_reraised() -> None:
    faulty = FaultInjectingMemory(SparseMemory())
    faulty.inject(0x1000, 0x10, ACCESS)
    faulty.inject(0x2000, 0x10, CORRUPTION)
    log: list[MemAccess] = []
    mem = TracingMemory(faulty, log)
    with pytest.raises(BusError) as info:
        mem.read64(0x2008)
    assert info.value.kind == "corruption"
    with pytest.raises(BusError):
        mem.write32(0x1004, 7)
    with pytest.raises(BusError):
        mem.cas64(0x1000, 0, 1)
    with pytest.raises(BusError):
        mem.read(0x0FFF, 2)
    assert log == [
        MemAccess("r", 0x2008, 8, 0, fault="corruption"),
        MemAccess("w", 0x1004, 4, 7, fault="access"),
        MemAccess("cas", 0x1000, 8, 0, expected=0, new=1, fault="access"),
        MemAccess("r", 0x0FFF, 2, 0, fault="access"),
    ]
    assert not log[2].swapped


def test_record_is_frozen_and_slotted() -> None:
    access = MemAccess("r", 0, 8, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        access.pa = 4  # type: ignore[misc]
    assert not hasattr(access, "__dict__")


def test_str_is_readable() -> None:
    assert str(MemAccess("r", 0x80, 4, 0xAB)) == "r   0x0000000000000080 [4] 0x000000ab"
    assert str(MemAccess("w", 0x80, 8, 0, fault="access")).endswith("-> access fault")
    text = str(MemAccess("cas", 0x80, 8, 1, expected=1, new=3))
    assert text.endswith("(swapped)")
    assert "new 0x0000000000000003" in text
