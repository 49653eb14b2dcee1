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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from iommusim.bits.riscv.regs import OFF_CQT, REGISTERS_SIZE
from iommusim.errors import InvalidArgument
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.hw.riscv.transaction import Message
from iommusim.mem.addrmap import AddressMap
from iommusim.mem.sparse import SparseMemory
from iommusim.platform.bus import CostedMemory, RegisterWindow
from iommusim.platform.costs import CostModel, Ledger
from iommusim.platform.endpoint import DEFAULT_MAX_DMA_BYTES, Endpoint, check_ats_params
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
    """One endpoint. ``ats`` and ``pri`` are PCIe capabilities (PRI needs ATS); software
    enables them with :meth:`Endpoint.enable_ats` / :meth:`Endpoint.enable_pri`. The other
    fields shape the ATS machinery (see :class:`Endpoint`)."""

    name: str
    rid: int
    kind: str = "generic"
    pasid_bits: int = 0
    ats: bool = False
    pri: bool = False
    atc_entries: int = 64
    prg_max_pages: int = 4
    prg_timeout_ns: int = 10_000_000
    ats_inval_delay_ns: int = 0
    max_dma_bytes: int = DEFAULT_MAX_DMA_BYTES


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
                    f"base {r.base_pa:#x} size {r.size_bytes:#x}"
                )
        windows = [(f"system.ram[{i}]", r.base_pa, r.size_bytes) for i, r in enumerate(self.ram)]
        windows += [
            ("system.iommu_base_pa", self.iommu_base_pa, REGISTERS_SIZE),
            ("system.imsic_base_pa", self.imsic_base_pa, _PAGE),
        ]
        for i, (name, base, size) in enumerate(windows):
            if base < 0 or base + size > 1 << 56:
                raise InvalidArgument(
                    f"{name} must lie within the 56-bit physical address space, not at {base:#x}"
                )
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
                    f"endpoint {e.name!r} pasid_bits must be in [0, 20], not {e.pasid_bits}"
                )
            check_ats_params(
                e.name,
                ats=e.ats,
                pri=e.pri,
                atc_entries=e.atc_entries,
                prg_max_pages=e.prg_max_pages,
                prg_timeout_ns=e.prg_timeout_ns,
                ats_inval_delay_ns=e.ats_inval_delay_ns,
                max_dma_bytes=e.max_dma_bytes,
            )
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
        self.bus.add(
            cfg.iommu_base_pa,
            REGISTERS_SIZE,
            RegisterWindow(self.iommu, self.ledger, cfg.costs.mmio_ns, self._after_register_write),
            name="iommu",
            target_pa=0,
        )
        self.bus.freeze()
        self.endpoints: dict[str, Endpoint] = {}
        self._by_rid: dict[int, Endpoint] = {}
        for e in cfg.endpoints:
            ep = Endpoint(
                self,
                e.name,
                e.rid,
                pasid_bits=e.pasid_bits,
                kind=e.kind,
                ats=e.ats,
                pri=e.pri,
                atc_entries=e.atc_entries,
                prg_max_pages=e.prg_max_pages,
                prg_timeout_ns=e.prg_timeout_ns,
                ats_inval_delay_ns=e.ats_inval_delay_ns,
                max_dma_bytes=e.max_dma_bytes,
            )
            self.endpoints[e.name] = ep
            self._by_rid[e.rid] = ep

    def _after_register_write(self, offset: int) -> None:
        # The IOMMU consumes commands once software moves cqt (riscv-iommu: "Command-Queue").
        if offset == OFF_CQT:
            self.run_commands()

    def run_commands(self) -> int:
        """Let the IOMMU execute what it can of its command queue, as after a cqt write (the
        model runs commands at once; their cost is charged as IOMMU time). Returns how many
        ran. A device calls this when an Invalidation Completion may unblock an IOFENCE.C."""
        n = self.iommu.process_commands()
        if n:
            self.ledger.charge("command", self.costs.command_ns, n)
        return n

    def _message(self, msg: Message) -> None:
        """The IOMMU's outbound port. Every message is kept in :attr:`messages`; Invalidate
        Requests and Page Request Group Responses go to the endpoint they name (riscv-iommu:
        "IOMMU PCIe ATS commands"), messages for no known endpoint go nowhere else.

        Runs inside :meth:`RiscvIommu.process_commands`, so nothing here may run commands.
        """
        self.messages.append(msg)
        if msg.kind not in {"ats_inval_req", "prgr"}:
            return
        # The device_id of a PCIe function is its segment over its 16-bit RID; without DSV the
        # destination is in segment 0.
        ep = self._by_rid.get(msg.dseg << 16 | msg.rid if msg.dsv else msg.rid)
        if ep is None:
            return
        if msg.kind == "prgr":
            ep.prg_response(msg)
        else:
            ep.ats_invalidate(msg)

    def endpoint(self, name: str) -> Endpoint:
        try:
            return self.endpoints[name]
        except KeyError:
            raise InvalidArgument(f"no endpoint named {name!r}") from None

    def settle(self) -> None:
        """Turn the cost charged so far into virtual time, running events that fall due."""
        self.ledger.settle()

    def run_for(self, ns: int) -> None:
        """Let ``ns`` of idle time pass (after settling what was charged); EINVAL, with
        nothing settled, for a negative ``ns``: time only moves forward."""
        if ns < 0:
            raise InvalidArgument(f"run_for needs a non-negative time, not {ns} ns")
        self.ledger.settle()
        self.clock.advance(ns)

    def wait_for(self, predicate: Callable[[], bool], timeout_ns: int) -> bool:
        """Let time pass until ``predicate()`` holds or ``timeout_ns`` have passed.

        Settles what was charged, then runs the clock's events one instant at a time
        (settling the costs each charges) and checks ``predicate`` after each. When no event
        remains before the deadline nothing can change any more: the clock moves to the
        deadline and the answer is False. Returns whether the predicate holds. A model
        misuse (ModelError) from inside a clock callback, where time cannot pass.
        """
        if timeout_ns < 0:
            raise InvalidArgument(f"timeout_ns must be non-negative, not {timeout_ns}")
        clock = self.clock
        ledger = self.ledger
        ledger.settle()
        deadline = clock.now + timeout_ns
        clock.run_until(clock.now)  # also refuses a call from inside a clock callback
        ledger.settle()
        while not predicate():
            t = clock.next_event_ns()
            if clock.now >= deadline or t is None or t > deadline:
                if clock.now < deadline:
                    clock.run_until(deadline)
                return predicate()
            clock.run_until(t)
            ledger.settle()
        return True
