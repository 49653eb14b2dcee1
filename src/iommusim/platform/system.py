"""The machine: memory map, RAM, IOMMUs, an interrupt sink and endpoints.

::

    CPU / software ──► bus (AddressMap) ──► RAM regions
                          │                 each IOMMU's register window ──► its model
                          │                 interrupt sink (IMSIC-like)
    endpoints ──PCIe──► upstream port of their IOMMU ──► bus
    IOMMU ──walks, queues, MSIs──► costed port ──► bus

Endpoints see their IOMMU only through its upstream port
(:class:`~iommusim.hw.common.upstream.UpstreamPort`); each IOMMU kind has an adapter (RISC-V:
:class:`~iommusim.hw.riscv.upstream.RiscvUpstreamPort`) that also says which register write is
its doorbell. The software stack reaches the hardware only through :attr:`System.bus` (DESIGN
rule 2): register accesses to the IOMMUs' windows and loads/stores to RAM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal, Protocol

from iommusim.errors import InvalidArgument, ModelError
from iommusim.hw.common.upstream import InvalidateRequest, PrgResponse, UpstreamPort
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.hw.riscv.transaction import Message
from iommusim.hw.riscv.upstream import RiscvUpstreamPort
from iommusim.hw.smmuv3.interrupts import IRQ_LINES
from iommusim.hw.smmuv3.maintenance import Tlbi, TlbiScope
from iommusim.hw.smmuv3.params import Smmuv3Params
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.hw.smmuv3.upstream import Smmuv3DevicePort, Smmuv3UpstreamPort
from iommusim.mem.addrmap import AddressMap
from iommusim.mem.protocol import PhysicalMemory
from iommusim.mem.sparse import SparseMemory
from iommusim.platform.bus import CostedMemory, RegisterDevice, RegisterWindow
from iommusim.platform.costs import CostModel, Ledger
from iommusim.platform.endpoint import DEFAULT_MAX_DMA_BYTES, Endpoint, check_ats_params
from iommusim.platform.interrupts import InterruptSink
from iommusim.sim.clock import VirtualClock

__all__ = [
    "IOMMU_KINDS",
    "EndpointConfig",
    "IommuAdapter",
    "IommuBuilder",
    "IommuConfig",
    "IommuKind",
    "IommuSlot",
    "MessageSink",
    "RamRegion",
    "System",
    "SystemConfig",
]

#: The IOMMU models a system can hold, by kind.
IommuKind = Literal["riscv", "smmuv3"]
_ALL_RIDS: Final = range(1 << 24)

_PAGE: Final = 4096
#: Above this many pages a CPU flushes the whole ASID (Linux arm64 ``MAX_DVM_OPS``-like).
_BROADCAST_PAGES: Final = 64
#: Interrupt identities of SMMUv3 wired lines (four per SMMU), above every MSI identity.
_WIRED_BASE: Final = 1024


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
class IommuConfig:
    """One IOMMU: its ``kind``, the base of its register window, its parameters and the
    requester ids of the endpoints behind it."""

    base_pa: int
    params: RiscvIommuParams | Smmuv3Params = PRESETS["full"]
    kind: IommuKind = "riscv"
    rids: range = _ALL_RIDS

    def __post_init__(self) -> None:
        want = {"riscv": RiscvIommuParams, "smmuv3": Smmuv3Params}.get(self.kind)
        if want is not None and not isinstance(self.params, want):
            raise InvalidArgument(
                f"an IOMMU of kind {self.kind!r} takes {want.__name__}, "
                f"not {type(self.params).__name__}"
            )
        r = self.rids
        if r.step != 1 or not 0 <= r.start < r.stop <= 1 << 24:
            raise InvalidArgument(
                f"IOMMU rids must be a non-empty contiguous range of 24-bit requester ids, not {r}"
            )


@dataclass(frozen=True, slots=True)
class SystemConfig:
    """Everything that shapes a :class:`System`; the defaults are a small RISC-V machine.

    The first IOMMU -- RISC-V, or an SMMUv3 when ``iommu`` is :class:`Smmuv3Params` -- with
    parameters ``iommu`` at ``iommu_base_pa`` serving
    requester ids ``iommu_rids``; ``more_iommus`` adds others (the requester-id ranges must
    not overlap, and each endpoint must be behind one of them)."""

    ram: tuple[RamRegion, ...] = (RamRegion(0x8000_0000, 256 << 20),)
    iommu_base_pa: int = 0x1000_0000
    imsic_base_pa: int = 0x2800_0000
    #: The first IOMMU's parameters; their type says its kind (RISC-V or SMMUv3).
    iommu: RiscvIommuParams | Smmuv3Params = PRESETS["full"]
    endpoints: tuple[EndpointConfig, ...] = ()
    costs: CostModel = field(default_factory=CostModel)
    iommu_rids: range = _ALL_RIDS
    more_iommus: tuple[IommuConfig, ...] = ()

    @property
    def iommus(self) -> tuple[IommuConfig, ...]:
        """Every IOMMU, the first one first."""
        kind: IommuKind = "smmuv3" if isinstance(self.iommu, Smmuv3Params) else "riscv"
        first = IommuConfig(self.iommu_base_pa, self.iommu, kind, self.iommu_rids)
        return (first, *self.more_iommus)

    def __post_init__(self) -> None:
        if not self.ram:
            raise InvalidArgument("system.ram must name at least one region")
        for i, r in enumerate(self.ram):
            if r.base_pa % _PAGE or r.size_bytes <= 0 or r.size_bytes % _PAGE:
                raise InvalidArgument(
                    f"system.ram[{i}] must be page-aligned with a positive size, not "
                    f"base {r.base_pa:#x} size {r.size_bytes:#x}"
                )
        iommus = self.iommus
        windows = [(f"system.ram[{i}]", r.base_pa, r.size_bytes) for i, r in enumerate(self.ram)]
        windows.append(("system.iommu_base_pa", self.iommu_base_pa, _WINDOW_BYTES["riscv"]))
        for i, m in enumerate(self.more_iommus):
            if m.kind not in _WINDOW_BYTES:
                raise InvalidArgument(
                    f"system.more_iommus[{i}].kind must be one of {sorted(_WINDOW_BYTES)}, "
                    f"not {m.kind!r}"
                )
            windows.append((f"system.more_iommus[{i}]", m.base_pa, _WINDOW_BYTES[m.kind]))
        windows.append(("system.imsic_base_pa", self.imsic_base_pa, _PAGE))
        for i, (name, base, size) in enumerate(windows):
            if base < 0 or base + size > 1 << 56:
                raise InvalidArgument(
                    f"{name} must lie within the 56-bit physical address space, not at {base:#x}"
                )
            for other, obase, osize in windows[:i]:
                if base < obase + osize and obase < base + size:
                    raise InvalidArgument(f"{name} must not overlap {other}")
        for i, m in enumerate(iommus):
            for j, prior in enumerate(iommus[:i]):
                if m.rids.start < prior.rids.stop and prior.rids.start < m.rids.stop:
                    raise InvalidArgument(
                        f"the requester ids of IOMMU {i} must not overlap those of IOMMU {j}"
                    )
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
            if not any(e.rid in m.rids for m in iommus):
                raise InvalidArgument(f"endpoint {e.name!r} rid {e.rid:#x} must be behind an IOMMU")
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


class IommuAdapter(UpstreamPort, Protocol):
    """An IOMMU as the platform holds it: the upstream port its endpoints use, plus its
    doorbell -- which register write asks it to work -- and a way to let it work."""

    def is_doorbell(self, offset: int) -> bool: ...

    def run_commands(self) -> int: ...


#: Where an IOMMU's outbound messages go: the message as the model made it, and the
#: device-bound PCIe message it carries (``None`` for one to no device).
MessageSink = Callable[[object, InvalidateRequest | PrgResponse | None], None]


class IommuSlot:
    """One IOMMU of a :class:`System`: its configuration, hardware ``model`` (the object its
    register window reaches) and ``port``, the adapter its endpoints talk to."""

    __slots__ = ("config", "index", "model", "port")

    def __init__(
        self, index: int, config: IommuConfig, model: RegisterDevice, port: IommuAdapter
    ) -> None:
        self.index = index
        self.config = config
        self.model = model
        self.port = port


def _riscv(
    cfg: IommuConfig,
    port_mem: PhysicalMemory,
    bus: PhysicalMemory,
    clock: VirtualClock,
    sink: MessageSink,
) -> tuple[RiscvIommu, RiscvUpstreamPort]:
    def outbound(msg: Message) -> None:
        sink(msg, RiscvUpstreamPort.downstream(msg))

    assert isinstance(cfg.params, RiscvIommuParams)
    model = RiscvIommu(port_mem, cfg.params, outbound, clock=clock)
    return model, RiscvUpstreamPort(model, bus)


def _smmuv3(
    cfg: IommuConfig,
    port_mem: PhysicalMemory,
    bus: PhysicalMemory,
    clock: VirtualClock,
    sink: MessageSink,
) -> tuple[Smmuv3, Smmuv3UpstreamPort]:
    assert isinstance(cfg.params, Smmuv3Params)
    down = Smmuv3DevicePort(sink, clock)
    model = Smmuv3(port_mem, cfg.params, port=down)
    down.smmu = model
    return model, Smmuv3UpstreamPort(model, bus, clock)


#: How to build an IOMMU of a kind from its configuration, its port to memory, the bus its
#: requests reach, the clock and the sink of its messages: its model and its adapter.
IommuBuilder = Callable[
    [IommuConfig, PhysicalMemory, PhysicalMemory, VirtualClock, MessageSink],
    tuple[RegisterDevice, IommuAdapter],
]
IOMMU_KINDS: Final[dict[str, IommuBuilder]] = {"riscv": _riscv, "smmuv3": _smmuv3}
_WINDOW_BYTES: Final[dict[str, int]] = {
    "riscv": RiscvUpstreamPort.registers_size,
    "smmuv3": Smmuv3UpstreamPort.registers_size,
}


class System:
    """A built machine. Use :meth:`settle` between operations to let virtual time pass."""

    def __init__(
        self,
        config: SystemConfig | None = None,
        *,
        ram: PhysicalMemory | None = None,
        iommu_builders: Mapping[str, IommuBuilder] | None = None,
    ) -> None:
        """``ram``: what backs the RAM regions (a fresh :class:`SparseMemory` by default; a
        VMM gives its guest the memory of its own address space). ``iommu_builders``
        replaces :data:`IOMMU_KINDS` entries (a VMM's virtual IOMMU for its guest)."""
        cfg = config if config is not None else SystemConfig()
        self.config = cfg
        self.costs = cfg.costs
        self.clock = VirtualClock()
        self.ledger = Ledger(self.clock)
        self._builders = {**IOMMU_KINDS, **(iommu_builders or {})}
        self.ram: PhysicalMemory = ram if ram is not None else SparseMemory()
        self.bus = AddressMap()
        for i, r in enumerate(cfg.ram):
            self.bus.add(r.base_pa, r.size_bytes, self.ram, name=f"ram{i}")
        self.sink = InterruptSink(self.clock, cfg.costs.irq_latency_ns)
        self.bus.add(cfg.imsic_base_pa, _PAGE, self.sink, name="imsic", target_pa=0)
        #: Every message the IOMMUs sent, as their models made them.
        self.messages: list[object] = []
        #: Every IOMMU, in configuration order.
        self.iommus: list[IommuSlot] = []
        for cfg_i in cfg.iommus:
            port_mem = CostedMemory(self.bus, self.ledger, "iommu_mem", cfg.costs.iommu_mem_ns)
            slot = self._add_iommu(cfg_i, port_mem)
            self.bus.add(
                cfg_i.base_pa,
                _WINDOW_BYTES[cfg_i.kind],
                RegisterWindow(
                    slot.model,
                    self.ledger,
                    cfg.costs.mmio_ns,
                    partial(self._after_register_write, slot),
                ),
                name="iommu" if slot.index == 0 else f"iommu{slot.index}",
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

    def _add_iommu(self, cfg: IommuConfig, port_mem: PhysicalMemory) -> IommuSlot:
        index = len(self.iommus)
        model, port = self._builders[cfg.kind](
            cfg,
            port_mem,
            self.bus,
            self.clock,
            lambda msg, out: self._message(index, msg, out),
        )
        slot = IommuSlot(index, cfg, model, port)
        if isinstance(model, Smmuv3):
            # The wired lines go to the interrupt controller (IHI 0070 3.18).
            model.irq.add_observer(
                lambda line: self.sink.raise_identity(self.wired_irq(index, line))
            )
        self.iommus.append(slot)
        return slot

    @property
    def iommu(self) -> RiscvIommu:
        """The first IOMMU's hardware model (always a RISC-V one, see :class:`SystemConfig`)."""
        model = self.iommus[0].model
        if not isinstance(model, RiscvIommu):
            raise ModelError(f"the first IOMMU must be a RiscvIommu, not {type(model).__name__}")
        return model

    def wired_irq(self, index: int, line: str) -> int:
        """The interrupt identity the platform wires SMMUv3 ``index``'s ``line`` ("eventq",
        "priq", "cmdq_sync", "gerror"; IHI 0070 3.18) to -- the firmware's description."""
        return _WIRED_BASE + 4 * index + IRQ_LINES.index(line)

    def cpu_tlbi(self, asid: int, start: int, end: int, whole: bool, el2: bool = False) -> int:
        """A CPU's broadcast TLB invalidation of ``[start, end)`` in ASID ``asid`` (the
        host's EL1&0 regime, VMID 0 -- or, with ``el2``, the EL2&0 regime of a VHE kernel;
        ``whole``: by ASID, as ``TLBI ASIDE1IS``, else ``TLBI VAE1IS`` per page): every
        SMMUv3 with BTM takes part (IHI 0070 3.17). Returns how many SMMUs did."""
        pages = (end - start + 0xFFF) >> 12
        asid_scope: TlbiScope = "el2_asid" if el2 else "nh_asid"
        va_scope: TlbiScope = "el2_va" if el2 else "nh_va"
        if whole or pages > _BROADCAST_PAGES:
            tlbis = [Tlbi(asid_scope, vmid=0, asid=asid)]
        else:
            base = start >> 12 << 12
            tlbis = [Tlbi(va_scope, vmid=0, asid=asid, addr=base + (i << 12)) for i in range(pages)]
        took = 0
        for slot in self.iommus:
            if isinstance(slot.model, Smmuv3):
                ok = [slot.model.broadcast_tlbi(t) for t in tlbis]
                took += bool(ok) and all(ok)
        return took

    def upstream_port(self, rid: int) -> UpstreamPort:
        """The upstream port of the IOMMU requester id ``rid`` is behind (EINVAL if none)."""
        for slot in self.iommus:
            if rid in slot.config.rids:
                return slot.port
        raise InvalidArgument(f"requester id {rid:#x} must be behind an IOMMU, not outside all")

    def _after_register_write(self, slot: IommuSlot, offset: int) -> None:
        # Each IOMMU kind has its doorbell (RISC-V: cqt, riscv-iommu: "Command-Queue").
        if slot.port.is_doorbell(offset):
            self.run_commands()

    def run_commands(self) -> int:
        """Let every IOMMU execute what it can of its command queue, as after a doorbell write
        (the model runs commands at once; their cost is charged as IOMMU time). Returns how
        many ran. A device calls this when an Invalidation Completion may unblock a fence."""
        total = 0
        for slot in self.iommus:
            n = slot.port.run_commands()
            if n:
                self.ledger.charge("command", self.costs.command_ns, n)
            total += n
        return total

    def _message(
        self, index: int, msg: object, out: InvalidateRequest | PrgResponse | None
    ) -> None:
        """IOMMU ``index``'s outbound port. Every message is kept in :attr:`messages`;
        Invalidate Requests and Page Request Group Responses go to the endpoint they name
        (riscv-iommu: "IOMMU PCIe ATS commands") if it is behind that IOMMU; messages for no
        known endpoint go nowhere else.

        Runs inside the IOMMU's command processing, so nothing here may run commands.
        """
        self.messages.append(msg)
        if out is None or out.rid not in self.iommus[index].config.rids:
            return
        ep = self._by_rid.get(out.rid)
        if ep is None:
            return
        if isinstance(out, PrgResponse):
            ep.prg_response(out)
        else:
            ep.ats_invalidate(out)

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
