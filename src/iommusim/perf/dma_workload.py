"""A NIC + NVMe DMA workload through the whole stack, in strict or lazy invalidation mode.

Each operation is what a driver does for one I/O: ``dma_map`` a buffer, let the device move
the data (its DMA is translated by the IOMMU model), ``dma_unmap``. The NIC moves one packet
per operation (receive: the device writes; transmit: it reads); the NVMe device moves one
block I/O of several pages. After an unmap, and with a small probability, the device touches
the buffer it just lost -- the access a buggy or malicious device makes. In strict mode it
faults at once; in lazy mode it may still succeed through a stale IOTLB entry until the flush
queue flushes: the exposure window lazy mode buys its speed with, counted as stale accesses.

Counts come from the places a real system would read them: the IOMMU's performance counters
(programmed and read through MMIO: the RISC-V HPM counters, or the SMMUv3's PMCG), the
driver's command statistics and the clock. The same workload runs on either IOMMU: the first
IOMMU of the system configuration (``SystemConfig.iommu``) decides.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Final

from iommusim.bits.arm import smmuv3_pmcg as PMCG
from iommusim.bits.arm.smmuv3_queues import CMD_SYNC, COMMANDS_BY_OPCODE
from iommusim.bits.riscv.regs import OFF_IOCOUNTINH, OFF_IOHPMCTR, OFF_IOHPMEVT
from iommusim.errors import InvalidArgument
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.core.dma import DMA_FROM_DEVICE, DMA_TO_DEVICE
from iommusim.sw.core.fq import FqOptions
from iommusim.sw.core.iommu import DmaMode
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.kernel import Kernel

__all__ = ["RunReport", "WorkloadConfig", "default_system", "run_workload"]

_PAGE: Final = 4096
# riscv-iommu: "Performance-monitoring event selectors": the events this report reads.
EV_UNTRANSLATED: Final = 1
EV_TLB_MISS: Final = 4
EV_DDT_WALK: Final = 5
EV_S1_WALK: Final = 7
_EVENTS: Final = (EV_UNTRANSLATED, EV_TLB_MISS, EV_DDT_WALK, EV_S1_WALK)
# IHI 0070 10.3: the SMMUv3 PMCG events in the same roles -- transactions, TLB misses,
# configuration-cache misses (STE/CD fetches), translation-table descriptor reads.
_SMMU_EVENTS: Final = (
    PMCG.EVENT_TRANSACTION,
    PMCG.EVENT_TLB_MISS,
    PMCG.EVENT_CONFIG_MISS,
    PMCG.EVENT_WALK_ACCESS,
)
#: SMMUv3 TLB invalidation opcodes (IHI 0070 4.4: CMD_TLBI_*).
_TLBI_OPCODES: Final = frozenset(o for o, c in COMMANDS_BY_OPCODE.items() if "TLBI" in c.name)


def default_system() -> SystemConfig:
    """RAM, a RISC-V IOMMU with every capability, a NIC at 00:01.0, an NVMe at 00:02.0."""
    return SystemConfig(
        endpoints=(
            EndpointConfig("nic", 0x08, kind="nic"),
            EndpointConfig("nvme", 0x10, kind="nvme"),
        )
    )


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    ops: int = 3000
    seed: int = 1
    nic_fraction: float = 0.7
    packet_bytes: int = 1500
    block_bytes: int = 16 * _PAGE
    stale_probe_rate: float = 0.05
    think_ns: int = 300  # CPU time between operations, besides the modelled costs
    buffers: int = 64  # DMA buffers per device (a ring)

    def __post_init__(self) -> None:
        if self.ops < 0:
            raise InvalidArgument(f"workload.ops must be >= 0, not {self.ops}")
        if not 0 <= self.nic_fraction <= 1 or not 0 <= self.stale_probe_rate <= 1:
            raise InvalidArgument(
                "workload.nic_fraction and workload.stale_probe_rate must be in [0, 1]"
            )
        if not 0 < self.packet_bytes <= _PAGE:
            raise InvalidArgument(
                f"workload.packet_bytes must be in [1, 4096], not {self.packet_bytes}"
            )
        if self.block_bytes <= 0 or self.block_bytes % _PAGE:
            raise InvalidArgument(
                f"workload.block_bytes must be a positive multiple of 4096, not {self.block_bytes}"
            )
        if self.buffers < 1 or self.think_ns < 0:
            raise InvalidArgument("workload.buffers must be >= 1 and think_ns >= 0")


@dataclass(slots=True)
class RunReport:
    mode: str
    #: The IOMMU the workload ran on: "riscv" or "smmuv3".
    iommu: str = "riscv"
    ops: int = 0
    dmas: int = 0
    bytes: int = 0
    translations: int = 0
    iotlb_misses: int = 0
    ddt_walks: int = 0
    page_walks: int = 0
    commands: int = 0
    invalidations: int = 0
    fences: int = 0
    faults: int = 0
    stale_probes: int = 0
    stale_accesses: int = 0
    fq_flushes: int = 0
    fq_max_pending: int = 0
    #: The longest and the mean time from an unmap to the flush that ends its exposure
    #: (virtual ns; 0 in strict mode, where the unmap itself invalidates).
    fq_max_exposure_ns: int = 0
    fq_mean_exposure_ns: float = 0.0
    virtual_ns: int = 0
    ledger: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def iotlb_hit_rate(self) -> float:
        return 1.0 - self.iotlb_misses / self.translations if self.translations else 0.0

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["iotlb_hit_rate"] = round(self.iotlb_hit_rate, 6)
        return d


def _program_counters(system: System, kind: str) -> None:
    base = system.config.iommu_base_pa
    bus = system.bus
    if kind == "smmuv3":
        pmcg = base + PMCG.PMCG_OFFSET
        for i, ev in enumerate(_SMMU_EVENTS):
            bus.write32(pmcg + PMCG.PMCG_EVTYPER + 4 * i, PMCG.EVTYPER.encode(event=ev))
            bus.write64(pmcg + PMCG.PMCG_EVCNTR + 8 * i, 0)
        bus.write32(pmcg + PMCG.PMCG_CNTENSET0, (1 << len(_SMMU_EVENTS)) - 1)
        bus.write32(pmcg + PMCG.PMCG_CR, PMCG.CR.encode(e=1))
        return
    for i, ev in enumerate(_EVENTS):
        bus.write64(base + OFF_IOHPMEVT + 8 * i, ev)
        bus.write64(base + OFF_IOHPMCTR + 8 * i, 0)
    bus.write32(base + OFF_IOCOUNTINH, 0)


def _read_counters(system: System, kind: str) -> tuple[int, int, int, int]:
    """(translations, TLB misses, context / configuration walks, table walks or reads)."""
    base = system.config.iommu_base_pa
    if kind == "smmuv3":
        pmcg = base + PMCG.PMCG_OFFSET
        t, m, c, w = (system.bus.read64(pmcg + PMCG.PMCG_EVCNTR + 8 * i) for i in range(4))
        return t, m, c, w
    t, m, c, w = (
        system.bus.read64(base + OFF_IOHPMCTR + 8 * i) & ((1 << 63) - 1) for i in range(4)
    )
    return t, m, c, w


def _driver_counts(kernel: Kernel, kind: str) -> tuple[int, int, int, int]:
    """(commands, TLB invalidation commands, syncs, faults) the first IOMMU's driver
    issued / saw so far."""
    if kind == "smmuv3":
        drv = kernel.drivers[0]
        assert isinstance(drv, Smmuv3Driver) and drv.cmdq is not None
        issued = drv.cmdq.issued
        tlbi = sum(n for op, n in issued.items() if op in _TLBI_OPCODES)
        return sum(issued.values()), tlbi, issued.get(CMD_SYNC.opcode, 0), drv.stats["events"]
    rv = kernel.iommu
    cmds = rv.cmdq.sent if rv.cmdq else 0
    return cmds, rv.stats["iotinval"], rv.stats["iofence"], rv.faults_seen


def run_workload(
    mode: DmaMode,
    cfg: WorkloadConfig | None = None,
    system_config: SystemConfig | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    ncpus: int = 1,
    fq: FqOptions | None = None,
) -> RunReport:
    """Boot a fresh machine in ``mode`` and run ``cfg.ops`` operations on it."""
    cfg = cfg if cfg is not None else WorkloadConfig()
    sc = system_config if system_config is not None else default_system()
    names = {e.kind: e.name for e in sc.endpoints}
    if "nic" not in names or "nvme" not in names:
        sc = replace(sc, endpoints=default_system().endpoints)
        names = {"nic": "nic", "nvme": "nvme"}
    system = System(sc)
    kind = system.iommus[0].config.kind
    kernel = Kernel(system, dma_mode=mode, ncpus=ncpus, fq=fq)
    core = kernel.core
    _program_counters(system, kind)
    rng = random.Random(cfg.seed)
    nic, nvme = kernel.device(names["nic"]), kernel.device(names["nvme"])
    nic_ep, nvme_ep = system.endpoint(names["nic"]), system.endpoint(names["nvme"])
    order = (cfg.block_bytes // _PAGE - 1).bit_length()
    nic_bufs = [kernel.pages.alloc_page() for _ in range(cfg.buffers)]
    nvme_bufs = [kernel.pages.alloc_pages(order) for _ in range(cfg.buffers)]
    report = RunReport(mode, kind)
    before = _driver_counts(kernel, kind)
    payload = bytes(range(256)) * (cfg.block_bytes // 256 + 16)
    for i in range(cfg.ops):
        use_nic = rng.random() < cfg.nic_fraction
        dev, ep = (nic, nic_ep) if use_nic else (nvme, nvme_ep)
        if use_nic:
            pa = nic_bufs[i % cfg.buffers]
            size = cfg.packet_bytes
        else:
            pa = nvme_bufs[i % cfg.buffers]
            size = cfg.block_bytes
        to_device = rng.random() < 0.5
        direction = DMA_TO_DEVICE if to_device else DMA_FROM_DEVICE
        cpu = i % ncpus
        iova = core.dma_map(dev, pa, size, direction, cpu)
        res = ep.dma_read(iova, size) if to_device else ep.dma_write(iova, payload[:size])
        report.dmas += 1
        report.bytes += res.done
        core.dma_unmap(dev, iova, size, cpu)
        if rng.random() < cfg.stale_probe_rate:
            # The device touches the buffer it no longer owns.
            report.stale_probes += 1
            probe = ep.dma_write(iova, payload[:8]) if not to_device else ep.dma_read(iova, 8)
            report.dmas += 1
            if probe.ok:
                report.stale_accesses += 1
        report.ops += 1
        system.ledger.charge("cpu", cfg.think_ns)
        system.settle()
        if progress is not None:
            progress(1)
    # The workload's time ends here; then every timer runs out (the flush queue's last flush,
    # pending interrupts) so the counters below include them.
    report.virtual_ns = system.clock.now
    system.run_for(20_000_000)
    t, m, c, w = _read_counters(system, kind)
    report.translations, report.iotlb_misses, report.ddt_walks, report.page_walks = t, m, c, w
    after = _driver_counts(kernel, kind)
    report.commands, report.invalidations, report.fences, report.faults = (
        a - b for a, b in zip(after, before, strict=True)
    )
    exposure_total = queued = 0
    for d in (nic, nvme):
        cookie = core.dma_cookie(d)
        if cookie is not None and cookie.fq is not None:
            st = cookie.fq.stats
            report.fq_flushes += st["flushes"]
            report.fq_max_pending = max(report.fq_max_pending, st["max_exposed"])
            report.fq_max_exposure_ns = max(report.fq_max_exposure_ns, st["max_exposure_ns"])
            exposure_total += st["exposure_ns_total"]
            queued += st["queued"]
    report.fq_mean_exposure_ns = round(exposure_total / queued, 1) if queued else 0.0
    report.ledger = system.ledger.snapshot()
    return report
