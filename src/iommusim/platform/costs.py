"""What the machine's operations cost on the virtual clock, and the ledger that adds them up.

Every MMIO access, every memory access the IOMMU makes (directory and page-table walks, queue
entries), every command it executes, every device data transfer and every CPU-side software
step has a configurable cost. Costs are charged to a :class:`Ledger` while an operation runs
and turned into virtual time by :meth:`Ledger.settle` at a safe point between operations, so
no clock event (a flush-queue timer, an interrupt handler) ever runs in the middle of a
hardware walk.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from iommusim.errors import ModelError
from iommusim.sim.clock import VirtualClock

__all__ = ["CostModel", "Ledger"]

#: Ledger categories, in report order.
#: ``ats`` is PCIe ATS/PRI traffic between endpoints and the IOMMU: each message or request /
#: completion leg counts once, and so does each ATC invalidation a device carries out.
CATEGORIES: Final = ("mmio", "iommu_mem", "command", "dma_data", "cpu", "ats")


@dataclass(frozen=True, slots=True)
class CostModel:
    """Nanoseconds per operation; all implementation-defined, all overridable.

    The defaults are round figures of the right order for a PCIe-attached IOMMU: an uncached
    MMIO access costs a few hundred nanoseconds, a memory access of a page walk about a DRAM
    latency, a command a few tens of nanoseconds of IOMMU time. ``pcie_msg_ns`` is one leg of
    PCIe ATS/PRI traffic (a Translation Request or its Completion, a Page Request, a PRG
    Response, an Invalidate Request or its Completion); ``atc_inval_ns`` the device's own work
    to carry out one Invalidate Request.
    """

    mmio_ns: int = 200
    iommu_mem_ns: int = 80
    command_ns: int = 40
    dma_page_ns: int = 120
    cpu_op_ns: int = 50
    irq_latency_ns: int = 2_000
    pcie_msg_ns: int = 250
    atc_inval_ns: int = 500

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or v < 0:
                raise ModelError(f"{f.name} must be a non-negative int, not {v!r}")


class Ledger:
    """Counts and accumulated nanoseconds per category, settled onto a virtual clock."""

    __slots__ = ("clock", "counts", "debt_ns", "ns")

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.counts: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self.ns: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self.debt_ns = 0

    def charge(self, category: str, cost_ns: int, n: int = 1) -> None:
        self.counts[category] += n
        self.ns[category] += cost_ns * n
        self.debt_ns += cost_ns * n

    def settle(self) -> None:
        """Advance the clock by what was charged since the last settle (runs due events)."""
        debt, self.debt_ns = self.debt_ns, 0
        if debt:
            self.clock.advance(debt)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"counts": dict(self.counts), "ns": dict(self.ns)}
