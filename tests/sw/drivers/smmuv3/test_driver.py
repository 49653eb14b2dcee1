"""The SMMUv3 driver on the model (after Linux arm-smmu-v3): probe through MMIO, DMA through a
stage 1 DMA domain with strict and lazy invalidation, identity and blocked domains, faults
from the event queue, and the hitless STE/CD update ordering (the Linux KUnit "used bits"
check: at every CMD_SYNC each bit the SMMU uses is the old or the new value)."""

from __future__ import annotations

from typing import Any, Final

import pytest

from iommusim.bits.arm.smmuv3_structures import STE, STE_CONFIG_BYPASS
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.platform.system import EndpointConfig, IommuConfig, System, SystemConfig
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_IDENTITY
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.drivers.smmuv3.entries import qwords, used_cd, used_ste, value, write_entry
from iommusim.sw.kernel import Kernel

SMMU_PA: Final = 0x1100_0000
RID: Final = 0x18


def machine(preset: str = "full", dma_mode: Any = "strict", **ep: Any) -> tuple[System, Kernel]:
    smmu = IommuConfig(SMMU_PA, PRESETS[preset], "smmuv3", range(0, 0x100))
    cfg = SystemConfig(
        iommu_rids=range(0x100, 0x200),
        more_iommus=(smmu,),
        endpoints=(EndpointConfig("nic", rid=RID, **ep),),
    )
    system = System(cfg)
    return system, Kernel(system, dma_mode=dma_mode)


def smmu_driver(kernel: Kernel) -> Smmuv3Driver:
    drv = kernel.drivers[1]
    assert isinstance(drv, Smmuv3Driver)
    return drv


@pytest.mark.parametrize("preset", ["full", "qemu-like", "minimal"])
def test_dma_through_the_smmuv3_driver(preset: str) -> None:
    system, kernel = machine(preset)
    nic, ep = kernel.device("nic"), system.endpoint("nic")
    pa = kernel.pages.alloc_page()
    system.bus.write(pa, b"payload!")
    iova = kernel.core.dma_map(nic, pa, 4096, DMA_BIDIRECTIONAL)
    assert ep.dma_read(iova, 8).data == b"payload!"
    kernel.core.dma_unmap(nic, iova, 4096)
    assert not ep.dma_read(iova, 8).ok  # strict: gone once unmap returns


def test_lazy_unmap_stays_reachable_until_the_flush() -> None:
    system, kernel = machine(dma_mode="lazy")
    nic, ep = kernel.device("nic"), system.endpoint("nic")
    iova = kernel.core.dma_map(nic, kernel.pages.alloc_page(), 4096, DMA_BIDIRECTIONAL)
    assert ep.dma_read(iova, 8).ok
    kernel.core.dma_unmap(nic, iova, 4096)
    assert ep.dma_read(iova, 8).ok  # the SMMU's TLB still has it
    system.run_for(20_000_000)
    assert not ep.dma_read(iova, 8).ok


def test_faults_reach_the_device_handler() -> None:
    system, kernel = machine()
    nic, ep = kernel.device("nic"), system.endpoint("nic")
    seen = []
    nic.fault_handler = seen.append
    kernel.core.dma_map(nic, kernel.pages.alloc_page(), 4096, DMA_BIDIRECTIONAL)
    assert not ep.dma_read(0x7000_0000, 4).ok
    system.run_for(1_000_000)  # the event-queue MSI is delivered
    assert [f.reason for f in seen] == ["F_TRANSLATION"]
    assert seen[0].iova == 0x7000_0000 and seen[0].rid == RID


def test_identity_and_blocked_domains() -> None:
    system, kernel = machine()
    nic, ep = kernel.device("nic"), system.endpoint("nic")
    drv = smmu_driver(kernel)
    pa = kernel.pages.alloc_page()
    system.bus.write(pa, b"direct")
    drv.identity_domain.attach_dev(nic, None)
    assert ep.dma_read(pa, 6).data == b"direct"
    drv.blocked_domain.attach_dev(nic, drv.identity_domain)
    assert not ep.dma_read(pa, 6).ok
    assert drv.identity_domain.type == DOMAIN_IDENTITY
    assert drv.blocked_domain.type == DOMAIN_BLOCKED


def test_probe_programs_the_smmu_through_mmio() -> None:
    _, kernel = machine()
    drv = smmu_driver(kernel)
    assert drv.cmdq is not None and drv.cmdq.errors == []
    assert drv.strtab_2lvl  # SIDSIZE 16 > the 8-bit split: a 2-level stream table


def test_every_sync_sees_old_or_new_used_bits() -> None:
    """Linux KUnit arm_smmu_v3_test_ste_expect_transition: the STE and CD as memory holds
    them at each CMD_SYNC of an attach; every bit the SMMU uses then (by that entry's own V
    and Config) is the old value or the new one."""
    system, kernel = machine()
    nic = kernel.device("nic")
    drv = smmu_driver(kernel)
    ste_pa = drv._ste_pa(RID)
    seen: list[int] = []
    assert drv.cmdq is not None
    drv.cmdq.sync_hook = lambda: seen.append(int.from_bytes(system.bus.read(ste_pa, 64), "little"))
    old = int.from_bytes(system.bus.read(ste_pa, 64), "little")
    drv.identity_domain.attach_dev(nic, None)
    dom = kernel.core.domain_alloc_paging(nic)
    kernel.core.attach_device(dom, nic)
    new = int.from_bytes(system.bus.read(ste_pa, 64), "little")
    assert len(seen) >= 2  # S1 -> bypass -> S1 (the new CD): several steps
    states = [old, STE.encode(v=1, config=STE_CONFIG_BYPASS), new]
    for e in seen:
        used = used_ste(e)
        assert any(e & used == s & used for s in states), hex(e)


@pytest.mark.parametrize(
    ("cur", "target", "syncs"),
    [
        # V = 0 -> bypass: the unused bits, then qword 0 with V.
        (0, STE.encode(v=1, config=0b100), 2),
        # bypass -> stage 1: only qword 0's used bits change -- hitless, two steps.
        (STE.encode(v=1, config=0b100), STE.encode(v=1, config=0b101, s1cdmax=2), 2),
        # stage 1 -> stage 2 with another VMID: qwords 0 and 2 -- V = 0 first, three steps.
        (STE.encode(v=1, config=0b101, s2vmid=1), STE.encode(v=1, config=0b110, s2ttb=5), 3),
    ],
)
def test_write_entry_steps(cur: int, target: int, syncs: int) -> None:
    """The hitless (one qword of used bits changes) and breaking (V = 0 first) sequences."""
    mem = qwords(cur)
    snapshots: list[int] = []

    def store(i: int, q: int) -> None:
        mem[i] = q

    n = write_entry(
        qwords(cur), qwords(target), used_ste, store, lambda: snapshots.append(value(mem))
    )
    assert n == syncs and value(mem) == target
    for e in snapshots:
        u = used_ste(e)
        assert e & u in (cur & u, target & u) or not e & 1


def test_cd_used_bits() -> None:
    assert used_cd(0) == 1 << 31


def test_without_msis_the_wired_event_line_reaches_the_driver() -> None:
    """IDR0.MSI = 0 (the QEMU-like preset): the SMMU pulses its wired "eventq" line, which
    the platform routes to the interrupt controller and the driver's handler takes (Linux
    ``arm_smmu_setup_unique_irqs``)."""
    system, kernel = machine("qemu-like")
    nic, ep = kernel.device("nic"), system.endpoint("nic")
    seen: list[str] = []
    nic.fault_handler = lambda f: seen.append(f.reason)
    assert not ep.dma_read(0x7000_0000, 4).ok
    system.run_for(1_000_000)
    assert seen == ["F_TRANSLATION"]
    assert smmu_driver(kernel).stats["irqs"] >= 1


def test_a_page_request_hint_is_kept_not_reported_as_a_fault() -> None:
    """IHI 0070 7.3.19 E_PAGE_REQUEST asks for no response: the driver records it and
    reports no DMA fault (as Linux, which takes no action on it)."""
    system, kernel = machine()
    nic = kernel.device("nic")
    seen: list[str] = []
    nic.fault_handler = lambda f: seen.append(f.reason)
    smmu = next(i.model for i in system.iommus if isinstance(i.model, Smmuv3))
    assert smmu.page_request_hint(RID, 0x4000_0000, 16, "rw")
    system.run_for(1_000_000)
    drv = smmu_driver(kernel)
    assert drv.stats["page_hints"] == 1 and seen == []
    rec = drv.events[-1]
    assert rec.name == "E_PAGE_REQUEST"
    assert rec.fields["span"] == 16 and rec.fields["inputaddr_pn"] == 0x4_0000
