"""Shared Virtual Addressing on SMMUv3 (the seed "iommu: Shared Virtual Addressing for
SMMUv3"): a process's arm64 page table shared with a PCIe device at a PASID, its CPU ASID in
the CD (a private domain's ASID seized), I/O page faults through PRI, invalidation on
munmap, and the device's accesses setting the CPU table's Access flag (HTTU)."""

from __future__ import annotations

from typing import Any, Final

import pytest

from iommusim.bits.arm.vmsa import S1_DESC
from iommusim.errors import NoDevice, NotSupported
from iommusim.hw.pgtable import VmsaLeaf, VmsaWalker
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.platform.system import EndpointConfig, IommuConfig, System, SystemConfig
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE

SMMU_PA: Final = 0x1100_0000
RID: Final = 0x18


def machine(preset: str = "full", **ep: Any) -> tuple[System, Kernel]:
    smmu = IommuConfig(SMMU_PA, PRESETS[preset], "smmuv3", range(0, 0x100))
    e = {"pasid_bits": 20, "ats": True, "pri": True, **ep}
    cfg = SystemConfig(
        iommu_rids=range(0x100, 0x200),
        more_iommus=(smmu,),
        endpoints=(EndpointConfig("acc", rid=RID, **e),),
    )
    system = System(cfg)
    return system, Kernel(system)


def test_sva_dma_with_page_faults_and_munmap() -> None:
    system, kernel = machine()
    mm = kernel.new_process("app", "arm64-4k")
    buf = mm.mmap(1 << 16, PROT_READ | PROT_WRITE)  # nothing resident yet
    sva = kernel.sva.bind(kernel.device("acc"), mm)
    acc = system.endpoint("acc")
    assert acc.dma_write(buf, b"hello", pasid=sva.pasid).ok  # PRI fault-in, then the write
    assert mm.read(buf, 5) == b"hello"
    assert acc.stats.page_requests >= 1
    assert acc.dma_read(buf, 5, pasid=sva.pasid).data == b"hello"
    mm.munmap(buf, 1 << 16)  # the notifier: TLBI by ASID/VA and ATC_INV before it returns
    assert not acc.dma_read(buf, 5, pasid=sva.pasid).ok
    drv = kernel.drivers[1]
    assert isinstance(drv, Smmuv3Driver) and drv.cmdq is not None and drv.cmdq.errors == []


def test_the_process_asid_is_shared_and_a_private_domain_moves() -> None:
    """The seed's "Seize private ASID": the DMA domain of the device took ASID 1 first;
    binding a process whose CPU ASID is 1 moves the DMA domain to another ASID, and both
    keep translating."""
    system, kernel = machine()
    acc = kernel.device("acc")
    drv = kernel.drivers[1]
    assert isinstance(drv, Smmuv3Driver)
    dma = acc.group.default_domain if acc.group is not None else None
    assert dma is not None and getattr(dma, "tag", None) == 1
    mm = kernel.new_process("app", "arm64-4k")
    assert mm.asid == 1
    sva = kernel.sva.bind(acc, mm)
    assert sva.domain.tag == 1 and getattr(dma, "tag", None) != 1  # type: ignore[attr-defined]
    from iommusim.sw.core.dma import DMA_BIDIRECTIONAL

    iova = kernel.core.dma_map(acc, kernel.pages.alloc_page(), 4096, DMA_BIDIRECTIONAL)
    assert system.endpoint("acc").dma_read(iova, 4).ok


def test_device_access_sets_the_cpu_access_flag() -> None:
    """HTTU (IDR0.HTTU, CD.HA): a leaf the CPU left with AF = 0 -- as an arm64 kernel does
    for pages it wants to age -- is set by the SMMU's walk, not faulted."""
    system, kernel = machine()
    mm = kernel.new_process("app", "arm64-4k")
    buf = mm.mmap(1 << 12, PROT_READ | PROT_WRITE)
    mm.write(buf, b"x")
    sva = kernel.sva.bind(kernel.device("acc"), mm)
    pt = mm.table()
    af = S1_DESC[4].mask("af")
    leaf = VmsaWalker(pt.pt, system.bus, 48, False, False, affd=True).walk(
        pt.root_pa, buf, 0, False, False
    )
    assert isinstance(leaf, VmsaLeaf)
    system.bus.write64(leaf.pa, leaf.pte & ~af)
    assert system.endpoint("acc").dma_read(buf, 1, pasid=sva.pasid).data == b"x"
    assert system.bus.read64(leaf.pa) & af


def test_sva_needs_an_arm64_mm_and_fault_support() -> None:
    _, kernel = machine()
    with pytest.raises(NotSupported):
        kernel.sva.bind(kernel.device("acc"), kernel.new_process("rv", "sv48"))
    _, kernel = machine(pri=False)
    with pytest.raises(NoDevice):
        kernel.sva.bind(kernel.device("acc"), kernel.new_process("app", "arm64-4k"))


def test_wide_pasids_use_a_two_level_cd_table() -> None:
    """SSIDSIZE 20 with IDR0.CD2L: the CD table is 2-level (S1Fmt = 4KB leaves), leaves
    allocated on first use; a PASID far beyond one leaf translates."""
    system, kernel = machine()
    acc = kernel.device("acc")
    drv = kernel.drivers[1]
    assert isinstance(drv, Smmuv3Driver)
    dom = kernel.core.domain_alloc_paging(acc)
    pa = kernel.pages.alloc_page()
    system.bus.write(pa, b"wide")
    dom.map(0x5000, pa, 4096, 3)
    kernel.core.attach_device_pasid(dom, acc, 70_000)
    assert drv._masters[RID].cd_2lvl
    assert system.endpoint("acc").dma_read(0x5000, 4, pasid=70_000).data == b"wide"


def test_broadcast_tlb_maintenance_replaces_the_tlbi_commands() -> None:
    """The seed's "Enable broadcast TLB maintenance": with IDR0.BTM the driver clears
    CR2.PTM and issues no TLBI for a shared ASID -- the CPU's own broadcast TLBI on munmap
    reaches the SMMU's TLB (IHI 0070 3.17); without that broadcast the stale translation
    would be used."""
    from iommusim.bits.arm.smmuv3_queues import CMD_TLBI_NH_ASID, CMD_TLBI_NH_VA

    for broadcast in (True, False):
        system, kernel = machine()
        drv = kernel.drivers[1]
        assert isinstance(drv, Smmuv3Driver) and drv.btm and drv.cmdq is not None
        mm = kernel.new_process("app", "arm64-4k")
        buf = mm.mmap(1 << 12, PROT_READ | PROT_WRITE)
        mm.write(buf, b"secret")
        sva = kernel.sva.bind(kernel.device("acc"), mm)
        acc = system.endpoint("acc")
        assert acc.dma_read(buf, 6, pasid=sva.pasid).ok
        if not broadcast:
            mm.cpu_tlb_flush = None  # a CPU whose TLBIs do not reach the SMMU
        issued = dict(drv.cmdq.issued)
        mm.munmap(buf, 1 << 12)
        tlbis = sum(
            drv.cmdq.issued.get(op, 0) - issued.get(op, 0)
            for op in (CMD_TLBI_NH_VA.opcode, CMD_TLBI_NH_ASID.opcode)
        )
        assert tlbis == 0
        assert acc.dma_read(buf, 6, pasid=sva.pasid).ok == (not broadcast)


def test_vhe_runs_stage1_in_the_el2_e2h_regime() -> None:
    """The seed's "Add support for VHE": a kernel at EL2 with VHE has the SMMU's stage 1 in
    the EL2-E2H regime (CR2.E2H, STE.STRW = EL2-E2H) so the CPU's EL2 broadcast TLBIs and the
    driver's CMD_TLBI_EL2_* commands are the ones that clear it -- for DMA domains and SVA."""
    from iommusim.bits.arm.smmuv3_structures import STE, STRW_EL2_E2H
    from iommusim.sw.core.dma import DMA_BIDIRECTIONAL

    smmu = IommuConfig(SMMU_PA, PRESETS["full"], "smmuv3", range(0, 0x100))
    cfg = SystemConfig(
        iommu_rids=range(0x100, 0x200),
        more_iommus=(smmu,),
        endpoints=(EndpointConfig("acc", rid=RID, pasid_bits=20, ats=True, pri=True),),
    )
    system = System(cfg)
    kernel = Kernel(system, vhe=True)
    drv = kernel.drivers[1]
    assert isinstance(drv, Smmuv3Driver) and drv.e2h
    acc, ep = kernel.device("acc"), system.endpoint("acc")
    ste = int.from_bytes(system.bus.read(drv._ste_pa(RID), 64), "little")
    assert STE["strw"].get(ste) == STRW_EL2_E2H
    iova = kernel.core.dma_map(acc, kernel.pages.alloc_page(), 4096, DMA_BIDIRECTIONAL)
    assert ep.dma_read(iova, 4).ok
    kernel.core.dma_unmap(acc, iova, 4096)
    assert not ep.dma_read(iova, 4).ok  # the EL2 TLBI reached the EL2-tagged entry
    mm = kernel.new_process("app", "arm64-4k")
    buf = mm.mmap(1 << 12, PROT_READ | PROT_WRITE)
    mm.write(buf, b"el2")
    sva = kernel.sva.bind(acc, mm)
    assert ep.dma_read(buf, 3, pasid=sva.pasid).data == b"el2"
    mm.munmap(buf, 1 << 12)  # the CPU's EL2 broadcast TLBI (BTM), the driver's ATC_INV
    assert not ep.dma_read(buf, 3, pasid=sva.pasid).ok
