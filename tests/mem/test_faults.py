"""FaultInjectingMemory: injected access faults and poisoned data.

riscv-iommu distinguishes "load access fault" causes from "data corruption" causes (e.g. 257
vs 268 for the DDT); the wrapper reports them as BusError kinds "access" and "corruption".
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iommusim.errors import BusError, ModelError
from iommusim.mem import ACCESS, CORRUPTION, FaultInjectingMemory, PhysicalMemory, SparseMemory

FAULT_PA = 0x1000
FAULT_SIZE = 0x40


def _mem() -> tuple[FaultInjectingMemory, SparseMemory]:
    inner = SparseMemory()
    inner.write(FAULT_PA - 0x40, bytes(range(0xC0)))
    return FaultInjectingMemory(inner), inner


Reader = Callable[[PhysicalMemory, int], object]
Writer = Callable[[PhysicalMemory, int], object]

READERS: dict[str, Reader] = {
    "read": lambda m, pa: m.read(pa, 3),
    "read32": lambda m, pa: m.read32(pa),
    "read64": lambda m, pa: m.read64(pa),
}
WRITERS: dict[str, Writer] = {
    "write": lambda m, pa: m.write(pa, b"\xee\xee\xee"),
    "write32": lambda m, pa: m.write32(pa, 0xEEEE_EEEE),
    "write64": lambda m, pa: m.write64(pa, 0xEEEE_EEEE_EEEE_EEEE),
    "cas64": lambda m, pa: m.cas64(pa, 0, 0xEE),
}


def test_implements_protocol() -> None:
    assert isinstance(FaultInjectingMemory(SparseMemory()), PhysicalMemory)


@pytest.mark.parametrize("name", sorted(READERS))
def test_access_fault_on_read(name: str) -> None:
    mem, _ = _mem()
    mem.inject(FAULT_PA, FAULT_SIZE, ACCESS)
    pa = FAULT_PA - 2  # overlaps the range only by its tail
    with pytest.raises(BusError) as info:
        READERS[name](mem, pa)
    assert (info.value.kind, info.value.pa) == ("access", pa)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_access_fault_on_write_leaves_memory_unchanged(name: str) -> None:
    mem, inner = _mem()
    before = inner.read(FAULT_PA - 0x40, 0xC0)
    mem.inject(FAULT_PA, FAULT_SIZE, ACCESS)
    pa = FAULT_PA + FAULT_SIZE - 2
    with pytest.raises(BusError) as info:
        WRITERS[name](mem, pa)
    assert (info.value.kind, info.value.pa) == ("access", pa)
    assert inner.read(FAULT_PA - 0x40, 0xC0) == before


@pytest.mark.parametrize("name", sorted(READERS))
def test_corruption_on_read(name: str) -> None:
    mem, _ = _mem()
    mem.inject(FAULT_PA, FAULT_SIZE, CORRUPTION)
    with pytest.raises(BusError) as info:
        READERS[name](mem, FAULT_PA + 8)
    assert (info.value.kind, info.value.pa) == ("corruption", FAULT_PA + 8)


@pytest.mark.parametrize("name", ["write", "write32", "write64"])
def test_corruption_does_not_affect_writes(name: str) -> None:
    mem, inner = _mem()
    mem.inject(FAULT_PA, FAULT_SIZE, CORRUPTION)
    WRITERS[name](mem, FAULT_PA + 8)
    assert inner.read(FAULT_PA + 8, 3) == b"\xee\xee\xee"


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("order", ["access-first", "corruption-first"])
def test_access_fault_wins_over_corruption(name: str, order: str) -> None:
    mem, _ = _mem()
    kinds = [ACCESS, CORRUPTION] if order == "access-first" else [CORRUPTION, ACCESS]
    mem.inject(FAULT_PA, 0x10, kinds[0])
    mem.inject(FAULT_PA + 0x8, 0x10, kinds[1])
    with pytest.raises(BusError) as info:
        READERS[name](mem, FAULT_PA + 0xA)  # overlaps both ranges
    assert info.value.kind == "access"


def test_clear_removes_the_fault() -> None:
    mem, inner = _mem()
    mem.inject(FAULT_PA, FAULT_SIZE, ACCESS)
    before = mem.active
    mem.clear(FAULT_PA, FAULT_SIZE)
    assert (before, mem.active) == (True, False)
    assert mem.read64(FAULT_PA) == inner.read64(FAULT_PA)
    mem.write32(FAULT_PA, 5)
    assert inner.read32(FAULT_PA) == 5


def test_clear_of_unknown_range_is_harmless() -> None:
    mem, _ = _mem()
    mem.inject(FAULT_PA, FAULT_SIZE, ACCESS)
    mem.clear(FAULT_PA, FAULT_SIZE + 1)  # not the injected key
    with pytest.raises(BusError):
        mem.read64(FAULT_PA)


def test_reinject_replaces_kind() -> None:
    mem, _ = _mem()
    mem.inject(FAULT_PA, FAULT_SIZE, ACCESS)
    mem.inject(FAULT_PA, FAULT_SIZE, CORRUPTION)
    mem.write64(FAULT_PA, 1)  # no longer an access fault
    with pytest.raises(BusError) as info:
        mem.read64(FAULT_PA)
    assert info.value.kind == "corruption"


def test_adjacent_accesses_are_unaffected() -> None:
    mem, inner = _mem()
    mem.inject(FAULT_PA, FAULT_SIZE, ACCESS)
    assert mem.read64(FAULT_PA - 8) == inner.read64(FAULT_PA - 8)
    assert mem.read(FAULT_PA + FAULT_SIZE, 8) == inner.read(FAULT_PA + FAULT_SIZE, 8)
    mem.write64(FAULT_PA + FAULT_SIZE, 3)
    assert inner.read64(FAULT_PA + FAULT_SIZE) == 3
    old = inner.read64(FAULT_PA - 8)
    assert mem.cas64(FAULT_PA - 8, old, 9) == old
    assert inner.read64(FAULT_PA - 8) == 9


@pytest.mark.parametrize(
    ("size", "kind", "message"),
    [
        (8, "poison", "fault kind must be 'access' or 'corruption', not 'poison'"),
        (0, ACCESS, "fault size must be positive, not 0"),
        (-4, CORRUPTION, "fault size must be positive, not -4"),
    ],
)
def test_inject_validation(size: int, kind: str, message: str) -> None:
    mem, _ = _mem()
    with pytest.raises(ModelError, match=f"^{re.escape(message)}$"):
        mem.inject(FAULT_PA, size, kind)
    assert not mem.active


@given(
    fault=st.tuples(
        st.integers(0, 0x100), st.integers(1, 0x40), st.sampled_from([ACCESS, CORRUPTION])
    ),
    pa=st.integers(0, 0x180),
    size=st.integers(1, 16),
    is_write=st.booleans(),
)
def test_faults_exactly_on_overlap(
    fault: tuple[int, int, str], pa: int, size: int, is_write: bool
) -> None:
    fpa, fsize, kind = fault
    mem = FaultInjectingMemory(SparseMemory())
    mem.inject(fpa, fsize, kind)
    overlaps = fpa < pa + size and pa < fpa + fsize
    should_fault = overlaps and (kind == ACCESS or not is_write)
    try:
        if is_write:
            mem.write(pa, bytes(size))
        else:
            mem.read(pa, size)
    except BusError as e:
        assert should_fault
        assert (e.kind, e.pa) == (kind, pa)
    else:
        assert not should_fault
