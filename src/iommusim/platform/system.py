"""The machine: memory map, RAM, a RISC-V IOMMU, an interrupt sink and endpoints.

::

    CPU / software ──► bus (AddressMap) ──► RAM regions
                          │                 IOMMU register window ──► RiscvIommu
                          │                 interrupt sink (IMSIC-like)
    endpoints ──DMA──► RiscvIommu.translate_pa ──► bus
    RiscvIommu ──walks, queues, MSIs──► costed port ──► bus

The software stack reaches the hardware only through :attr:`System.bus` (DESIGN rule 2):
register accesses to the IOMMU's window and loads/stores to RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from iommusim.errors import InvalidArgument
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.hw.riscv.regs import OFF_CQT, REGISTERS_SIZE
from iommusim.hw.riscv.transaction import Message
from iommusim.mem.addrmap import AddressMap
from iommusim.mem.sparse import SparseMemory
from iommusim.platform.bus import CostedMemory, RegisterWindow
from iommusim.platform.costs import CostModel, Ledger
from iommusim.platform.endpoint import Endpoint
from iommusim.platform.interrupts import InterruptSink
from iommusim.sim.clock import VirtualClock

__all__ = ["EndpointConfig", "RamRegion", "System", "SystemConfig"]

_PAGE: Final = 4096


@dataclass(frozen=True, slots=True)
class RamRegion:
    base_pa: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    name: str
    rid: int
    kind: str = "generic"
    pasid_bits: int = 0


@dataclass(frozen=True, slots=True)
class SystemConfig:
    """Everything that shapes a :class:`System`; the defaults are a small RISC-V machine."""

    ram: tuple[RamRegion, ...] = (RamRegion(0x8000_0000, 256 << 20),)
    iommu_base_pa: int = 0x1000_0000
    imsic_base_pa: int = 0x2800_0000
    iommu: RiscvIommuParams = PRESETS["full"]
    endpoints: tuple[EndpointConfig, ...] = ()
    costs: CostModel = field(default_factory=CostModel)

    def __post_init__(self) -> None:
        if not self.ram:
            raise InvalidArgument("system.ram must name at least one region")
        for i, r in enumerate(self.ram):
            if r.base_pa % _PAGE or r.size_bytes <= 0 or r.size_bytes % _PAGE:
                raise InvalidArgument(
                    f"system.ram[{i}] must be page-aligned with a positive size, not "
                    f"base {r.base_pa:#x} size {r.size_bytes:#x}")
        windows = [(f"system.ram[{i}]", r.base_pa, r.size_bytes) for i, r in enumerate(self.ram)]
        windows += [("system.iommu_base_pa", self.iommu_base_pa, REGISTERS_SIZE),
                    ("system.imsic_base_pa", self.imsic_base_pa, _PAGE)]
        for i, (name, base, size) in enumerate(windows):
            if base < 0 or base + size > 1 << 56:
                raise InvalidArgument(f"{name} must lie within the 56-bit physical address "
                                      f"space, not at {base:#x}")
            for other, obase, osize in windows[:i]:
                if base < obase + osize and obase < base + size:
                    raise InvalidArgument(f"{name} must not overlap {other}")
        rids = [e.rid for e in self.endpoints]
        if len(set(rids)) != len(rids):
            raise InvalidArgument(f"endpoint requester ids must be distinct, not {rids}")
        for e in self.endpoints:
            if not 0 <= e.rid < 1 << 24:
                raise InvalidArgument(f"endpoint {e.name!r} rid must fit 24 bits, not {e.rid:#x}")
            if not 0 <= e.pasid_bits <= 20:
                raise InvalidArgument(
                    f"endpoint {e.name!r} pasid_bits must be in [0, 20], not {e.pasid_bits}")
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"endpoint names must be distinct, not {names}")


class System:
    """A built machine. Use :meth:`settle` between operations to let virtual time pass."""

    def __init__(self, config: SystemConfig | None = None) -> None:
        cfg = config if config is not None else SystemConfig()
        self.config = cfg
        self.costs = cfg.costs
        self.clock = VirtualClock()
        self.ledger = Ledger(self.clock)
        self.ram = SparseMemory()
        self.bus = AddressMap()
        for i, r in enumerate(cfg.ram):
            self.bus.add(r.base_pa, r.size_bytes, self.ram, name=f"ram{i}")
        self.sink = InterruptSink(self.clock, cfg.costs.irq_latency_ns)
        self.bus.add(cfg.imsic_base_pa, _PAGE, self.sink, name="imsic", target_pa=0)
        self.messages: list[Message] = []
        port = CostedMemory(self.bus, self.ledger, "iommu_mem", cfg.costs.iommu_mem_ns)
        self.iommu = RiscvIommu(port, cfg.iommu, self._message, clock=self.clock)
        self.bus.add(cfg.iommu_base_pa, REGISTERS_SIZE,
                     RegisterWindow(self.iommu, self.ledger, cfg.costs.mmio_ns,
                                    self._after_register_write), name="iommu", target_pa=0)
        self.bus.freeze()
        self.endpoints: dict[str, Endpoint] = {}
        for e in cfg.endpoints:
            self.endpoints[e.name] = Endpoint(self, e.name, e.rid, pasid_bits=e.pasid_bits,
                                              kind=e.kind)

    def _after_register_write(self, offset: int) -> None:
        # The IOMMU consumes commands once software moves cqt (riscv-iommu: "Command-Queue").
        # The model runs them at once; their cost is charged as IOMMU time.
        if offset == OFF_CQT:
            n = self.iommu.process_commands()
            if n:
                self.ledger.charge("command", self.costs.command_ns, n)

    def _message(self, msg: Message) -> None:
        self.messages.append(msg)

    def endpoint(self, name: str) -> Endpoint:
        try:
            return self.endpoints[name]
        except KeyError:
            raise InvalidArgument(f"no endpoint named {name!r}") from None

    def settle(self) -> None:
        """Turn the cost charged so far into virtual time, running events that fall due."""
        self.ledger.settle()

    def run_for(self, ns: int) -> None:
        """Let ``ns`` of idle time pass (after settling what was charged)."""
        self.ledger.settle()
        self.clock.advance(ns)
