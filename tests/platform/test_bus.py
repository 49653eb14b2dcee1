"""Register windows, costed memory, the cost model and the ledger (platform/bus.py, costs.py).

riscv-iommu "Memory-mapped register interface": the behaviour of accesses that are not 4 or 8
bytes, or not naturally aligned, is UNSPECIFIED; the platform answers them with an access
fault, and an atomic to a register completes with an access fault too.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import BusError, ModelError
from iommusim.mem import SparseMemory
from iommusim.perf.dma_workload import default_system
from iommusim.platform.bus import CostedMemory, RegisterWindow
from iommusim.platform.costs import CATEGORIES, CostModel, Ledger
from iommusim.platform.system import System
from iommusim.sim.clock import VirtualClock
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from iommusim.sw.kernel import Kernel


class FakeRegs:
    """A register device that records every access and answers reads with a pattern."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int]] = []

    def read_register(self, offset: int, size: int) -> int:
        self.calls.append(("r", offset, size, 0))
        return (0x1122_3344_5566_7788 + offset) & ((1 << (8 * size)) - 1)

    def write_register(self, offset: int, size: int, value: int) -> None:
        self.calls.append(("w", offset, size, value))


def window(cost: int = 7) -> tuple[RegisterWindow, FakeRegs, Ledger, list[int]]:
    regs = FakeRegs()
    ledger = Ledger(VirtualClock())
    doorbells: list[int] = []
    return RegisterWindow(regs, ledger, cost, doorbells.append), regs, ledger, doorbells


# ------------------------------------------------------------------ RegisterWindow
@pytest.mark.parametrize(("offset", "size"), [(0, 4), (4, 4), (0x2FC, 4), (0, 8), (0x10, 8)])
def test_aligned_4_and_8_byte_accesses_reach_the_device(offset: int, size: int) -> None:
    win, regs, ledger, doorbells = window()
    data = win.read(offset, size)
    assert data == ((0x1122_3344_5566_7788 + offset) & ((1 << (8 * size)) - 1)).to_bytes(
        size, "little"
    )
    win.write(offset, bytes(range(1, size + 1)))
    assert regs.calls == [
        ("r", offset, size, 0),
        ("w", offset, size, int.from_bytes(bytes(range(1, size + 1)), "little")),
    ]
    # after_write runs for the write only (the doorbell hook), with the region offset.
    assert doorbells == [offset]
    assert ledger.counts["mmio"] == 2
    assert ledger.ns["mmio"] == 14


@pytest.mark.parametrize(
    ("offset", "size"), [(0, 1), (0, 2), (2, 4), (1, 4), (4, 8), (0, 16), (0x0C, 8)]
)
def test_other_sizes_and_misaligned_accesses_fault_and_cost_nothing(offset: int, size: int) -> None:
    win, regs, ledger, doorbells = window()
    with pytest.raises(BusError) as e:
        win.read(offset, size)
    assert e.value.kind == "access"
    assert e.value.pa == offset
    with pytest.raises(BusError):
        win.write(offset, bytes(size))
    assert regs.calls == []
    assert doorbells == []
    assert ledger.counts["mmio"] == 0


def test_word_helpers_are_little_endian() -> None:
    win, regs, _, doorbells = window()
    assert win.read32(8) == (0x1122_3344_5566_7788 + 8) & 0xFFFF_FFFF
    assert win.read64(8) == 0x1122_3344_5566_7790
    win.write32(4, 0xDEAD_BEEF)
    win.write64(8, 0x0102_0304_0506_0708)
    assert regs.calls[-2:] == [("w", 4, 4, 0xDEAD_BEEF), ("w", 8, 8, 0x0102_0304_0506_0708)]
    assert doorbells == [4, 8]


def test_atomics_to_registers_fault() -> None:
    win, regs, ledger, _ = window()
    with pytest.raises(BusError) as e:
        win.cas64(0x10, 0, 1)
    assert e.value.pa == 0x10
    assert regs.calls == []
    assert ledger.counts["mmio"] == 0


def test_iommu_registers_through_the_system_bus() -> None:
    # The IOMMU window: 8-byte registers may be read as two 4-byte halves (riscv-iommu:
    # "Memory-mapped register interface"), byte accesses fault, atomics fault.
    system = System()
    base = system.config.iommu_base_pa
    caps = system.config.iommu.capabilities
    assert system.bus.read64(base) == caps
    assert system.bus.read32(base) == caps & 0xFFFF_FFFF
    assert system.bus.read32(base + 4) == caps >> 32
    assert system.ledger.counts["mmio"] == 3
    with pytest.raises(BusError):
        system.bus.read(base, 1)
    with pytest.raises(BusError):
        system.bus.read(base + 2, 4)
    with pytest.raises(BusError):
        system.bus.cas64(base + 0x10, 0, 1)
    assert system.ledger.counts["mmio"] == 3


# ------------------------------------------------------------------ CostedMemory
def test_costed_memory_charges_once_per_access_and_forwards() -> None:
    inner = SparseMemory()
    ledger = Ledger(VirtualClock())
    mem = CostedMemory(inner, ledger, "iommu_mem", 80)
    mem.write(0x1000, b"abcdefgh")
    assert mem.read(0x1000, 8) == b"abcdefgh"
    mem.write32(0x2000, 0x1234_5678)
    assert mem.read32(0x2000) == 0x1234_5678
    mem.write64(0x3000, 0x0102_0304_0506_0708)
    assert mem.read64(0x3000) == 0x0102_0304_0506_0708
    assert mem.cas64(0x3000, 0x0102_0304_0506_0708, 5) == 0x0102_0304_0506_0708
    assert inner.read64(0x3000) == 5
    # A failed compare still costs an access.
    assert mem.cas64(0x3000, 0, 6) == 5
    assert inner.read64(0x3000) == 5
    assert ledger.counts["iommu_mem"] == 8
    assert ledger.ns["iommu_mem"] == 8 * 80
    assert all(ledger.counts[c] == 0 for c in CATEGORIES if c != "iommu_mem")


def test_iommu_walks_are_charged_and_an_iotlb_hit_is_not() -> None:
    # The IOMMU reaches memory through a costed port: the first DMA walks the device
    # directory, the device context and the first-stage table (riscv-iommu "Process to
    # translate an IOVA"); a second DMA to the same page is answered from the IOTLB and
    # reads no memory.
    system = System(default_system())
    kernel = Kernel(system)
    buf = kernel.pages.alloc_page()
    iova = kernel.core.dma_map(kernel.device("nic"), buf, 128, DMA_BIDIRECTIONAL)
    ep = system.endpoint("nic")
    before = system.ledger.counts["iommu_mem"]
    assert ep.dma_read(iova, 64).ok
    assert system.ledger.counts["iommu_mem"] - before >= 5  # at least the five Sv57 levels
    before = system.ledger.counts["iommu_mem"]
    assert ep.dma_read(iova + 64, 64).ok
    assert system.ledger.counts["iommu_mem"] == before
    assert system.ledger.counts["dma_data"] == 2
    assert system.ledger.ns["dma_data"] == 2 * system.costs.dma_page_ns


# ------------------------------------------------------------------ CostModel and Ledger
def test_cost_model_rejects_negative_costs_naming_the_field() -> None:
    with pytest.raises(ModelError, match="mmio_ns must be a non-negative int, not -1"):
        CostModel(mmio_ns=-1)
    with pytest.raises(ModelError, match="irq_latency_ns"):
        CostModel(irq_latency_ns=1.5)  # type: ignore[arg-type]
    assert CostModel(mmio_ns=0).mmio_ns == 0


def test_ledger_counts_and_settles_onto_the_clock() -> None:
    clock = VirtualClock()
    ledger = Ledger(clock)
    ledger.charge("mmio", 200)
    ledger.charge("dma_data", 120, n=3)
    assert ledger.counts["mmio"] == 1
    assert ledger.counts["dma_data"] == 3
    assert ledger.ns["dma_data"] == 360
    assert ledger.debt_ns == 560
    assert clock.now == 0  # nothing passes until a safe point
    ledger.settle()
    assert clock.now == 560
    assert ledger.debt_ns == 0
    ledger.settle()  # nothing charged since: time stands still
    assert clock.now == 560


def test_settle_runs_the_events_that_fall_due() -> None:
    clock = VirtualClock()
    ledger = Ledger(clock)
    ran: list[int] = []
    clock.call_at(100, lambda: ran.append(clock.now))
    clock.call_at(1000, lambda: ran.append(clock.now))
    ledger.charge("cpu", 150)
    ledger.settle()
    assert ran == [100]
    assert clock.now == 150
    ledger.charge("cpu", 850)
    ledger.settle()
    assert ran == [100, 1000]


def test_snapshot_is_a_copy() -> None:
    ledger = Ledger(VirtualClock())
    ledger.charge("command", 40, n=2)
    snap = ledger.snapshot()
    assert snap == {
        "counts": {"mmio": 0, "iommu_mem": 0, "command": 2, "dma_data": 0, "cpu": 0, "ats": 0},
        "ns": {"mmio": 0, "iommu_mem": 0, "command": 80, "dma_data": 0, "cpu": 0, "ats": 0},
    }
    snap["counts"]["command"] = 99
    assert ledger.counts["command"] == 2


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(CATEGORIES), st.integers(0, 5000), st.integers(1, 4)), max_size=20
    )
)
def test_settled_time_is_the_sum_of_charges(charges: list[tuple[str, int, int]]) -> None:
    clock = VirtualClock()
    ledger = Ledger(clock)
    for cat, ns, n in charges:
        ledger.charge(cat, ns, n)
    ledger.settle()
    assert clock.now == sum(ns * n for _, ns, n in charges) == sum(ledger.ns.values())
    for cat in CATEGORIES:
        assert ledger.counts[cat] == sum(n for c, _, n in charges if c == cat)
