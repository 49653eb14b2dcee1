"""A booted machine for the IOMMU-core tests, and a snapshot of everything a call may change.

``machine(mode="strict", **kernel_kw)`` boots System + Kernel with a NIC-like endpoint (rid
0x08) and an NVMe-like one (0x10); ``m.add(name, rid, group_key=...)`` probes one more device
(with an endpoint, so it can DMA). ``snapshot(m, *domains)`` captures groups, devices, the
device contexts in memory, each domain's bonds / mappings / IOVA allocator, and the
allocators and command counts -- a failed call must leave all of it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import pytest

from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.platform.endpoint import Endpoint
from iommusim.platform.system import EndpointConfig, RamRegion, System, SystemConfig
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import Domain
from iommusim.sw.core.iommu import IommuCore
from iommusim.sw.core.iova import IovaAllocator
from iommusim.sw.drivers.riscv.domain import RiscvPagingDomain
from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver
from iommusim.sw.kernel import Kernel

RAM: Final = 0x8000_0000
RAM_SIZE: Final = 32 << 20


class Machine:
    RAM = RAM

    def __init__(
        self, mode: str = "strict", params: RiscvIommuParams | None = None, **kernel_kw: object
    ) -> None:
        self.system = System(
            SystemConfig(
                ram=(RamRegion(RAM, RAM_SIZE),),
                iommu=params if params is not None else PRESETS["full"],
                endpoints=(EndpointConfig("nic", 0x08), EndpointConfig("nvme", 0x10)),
            )
        )
        self.kernel = Kernel(self.system, dma_mode=mode, **kernel_kw)  # type: ignore[arg-type]
        self.core: IommuCore = self.kernel.core
        self.driver: RiscvIommuDriver = self.kernel.iommu
        self.bus = self.system.bus
        self.eps: dict[str, Endpoint] = dict(self.system.endpoints)

    def add(self, name: str, rid: int, group_key: str | None = None) -> Device:
        dev = Device(name, rid, group_key=group_key)
        self.core.probe_device(dev)
        self.eps[name] = Endpoint(self.system, name, rid)
        return dev

    def dev(self, name: str) -> Device:
        return self.core.devices[name]

    def ep(self, name: str) -> Endpoint:
        return self.eps[name]

    def domain_of(self, name: str) -> Domain:
        group = self.dev(name).group
        assert group is not None and group.domain is not None
        return group.domain

    def dc(self, rid: int) -> tuple[int, int, int]:
        ddt = self.driver.ddt
        assert ddt is not None
        pa = ddt.dc_pa(rid, alloc=False)
        if pa is None:
            return (0, 0, 0)
        return self.bus.read64(pa), self.bus.read64(pa + 16), self.bus.read64(pa + 24)


def iova_in_use(iovad: IovaAllocator) -> tuple[tuple[int, int], ...]:
    """Ranges held by the allocator's tree that are not parked in its range cache."""
    cached: set[int] = set()
    for rc in iovad._rcaches:
        for mag in rc.depot:
            cached.update(mag)
        for c in rc.cpus:
            cached.update(c.loaded)
            cached.update(c.prev)
    return tuple((s, iovad._sizes[s]) for s in iovad._starts if s not in cached)


def snapshot(m: Machine, *domains: Domain) -> dict[str, object]:
    core = m.core
    out: dict[str, object] = {
        "groups": [
            (g.id, g.domain, g.default_domain, tuple(d.name for d in g.devices), g.owner)
            for g in core.groups
        ],
        "devices": {n: (d.group, d.iommu, d.fault_handler) for n, d in core.devices.items()},
        "dcs": {n: m.dc(d.rid) for n, d in core.devices.items() if d.iommu is m.driver},
        "pages_free": m.kernel.pages.nr_free,
        "commands": m.driver.cmdq.sent if m.driver.cmdq else 0,
        "pscids": len(m.driver.pscid_ida),
        "unhandled": list(core.unhandled_faults),
    }
    for k, d in enumerate(domains):
        attached = sum(1 for g in core.groups if g.domain is d)
        entry: dict[str, object] = {"attached_groups": attached}
        if isinstance(d, RiscvPagingDomain):
            entry["bonds"] = list(d.bonds)
            entry["leaves"] = list(d.pgtable.walk_leaves()) if d.pgtable.root_pa >= 0 else None
            entry["tables"] = d.pgtable.table_pages if d.pgtable.root_pa >= 0 else None
        if d.cookie is not None:
            entry["iova"] = iova_in_use(d.cookie.iovad)
            entry["fq_pending"] = d.cookie.fq.pending if d.cookie.fq is not None else None
        out[f"domain{k}"] = entry
    return out


@pytest.fixture
def machine() -> type[Machine]:
    return Machine


@pytest.fixture
def snap() -> Callable[..., dict[str, object]]:
    return snapshot
