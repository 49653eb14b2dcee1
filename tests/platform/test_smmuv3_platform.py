"""An Arm SMMUv3 in the platform: endpoints behind it DMA through its upstream port
(IHI 0070 3.9 / 3.10: StreamID = Requester ID, SubstreamID = PASID), programmed through its
register window on the bus; ATS completions, ATC invalidations whose CMD_SYNC waits for the
device's Invalidation Completion (4.5, 4.7), and a stalled DMA that waits in virtual time for
software's CMD_RESUME (3.12.2)."""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.bits.arm.smmuv3_queues import (
    CERROR_ATC_INV_SYNC,
    CMD_ATC_INV,
    CMD_RESUME,
    CMD_SYNC,
    CMD_TLBI_NH_VA,
    Command,
)
from iommusim.bits.arm.smmuv3_regs import CMDQ_BASE, CR0, EVENTQ_BASE, OFF, STRTAB_BASE_CFG
from iommusim.bits.arm.smmuv3_structures import (
    CD,
    EATS_FULL,
    STE,
    STE_CONFIG_S1,
    TG0_4K,
)
from iommusim.bits.pcie import CPL_UR
from iommusim.errors import InvalidArgument
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.transaction import Event
from iommusim.platform.system import EndpointConfig, IommuConfig, System, SystemConfig
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import ArmLpaePageTable, IotlbGather
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

SMMU: Final = 0x1100_0000
RID: Final = 0x100
RW: Final = IOMMU_READ | IOMMU_WRITE
TABLES: Final = 0x8800_0000
CMDQ: Final = 0x8F00_0000
EVENTQ: Final = 0x8F01_0000
STRTAB: Final = 0x8F02_0000


class Machine:
    """A System whose second IOMMU is an SMMUv3 serving RIDs 0x100-0x1FF, set up as a
    driver's probe would through MMIO and memory (no SMMUv3 driver exists yet)."""

    def __init__(self, *, s: int = 0, eats: int = 0, delay_ns: int = 0) -> None:
        ep = EndpointConfig("dev", rid=RID, ats=True, ats_inval_delay_ns=delay_ns)
        smmu = IommuConfig(SMMU, PRESETS["full"], "smmuv3", range(0x100, 0x200))
        cfg = SystemConfig(iommu_rids=range(0, 0x100), more_iommus=(smmu,), endpoints=(ep,))
        self.system = sys_ = System(cfg)
        self.bus = sys_.bus
        self.model = sys_.iommus[1].model
        self.ep = sys_.endpoint("dev")
        pages = PageAllocator(self.bus, TABLES, 1 << 24)
        self.pt = ArmLpaePageTable(self.bus, pages, 1, 4, 48)
        cd = pages.alloc_pages(0)
        image = CD.encode(
            v=1,
            aa64=1,
            r=1,
            a=1,
            s=s,
            asid=1,
            ips=0b101,
            t0sz=self.pt.t0sz,
            tg0=TG0_4K,
            epd1=1,
            ttb0=self.pt.root_pa >> 4,
        )
        self.write(cd, image)
        ste = STE.encode(v=1, config=STE_CONFIG_S1, s1contextptr=cd >> 6, eats=eats)
        self.write(STRTAB + RID * 64, ste)
        self.mmio(OFF.CMDQ_BASE, 8, CMDQ_BASE.encode(addr=CMDQ >> 5, log2size=4))
        self.mmio(OFF.EVENTQ_BASE, 8, EVENTQ_BASE.encode(addr=EVENTQ >> 5, log2size=4))
        self.mmio(OFF.STRTAB_BASE, 8, STRTAB)
        self.mmio(OFF.STRTAB_BASE_CFG, 4, STRTAB_BASE_CFG.encode(log2size=9))
        self.mmio(OFF.CR0, 4, CR0.encode(smmuen=1, cmdqen=1, eventqen=1))
        self.prod = 0

    def write(self, pa: int, value: int) -> None:
        self.bus.write(pa, value.to_bytes(64, "little"))

    def mmio(self, off: int, size: int, value: int) -> None:
        self.bus.write(SMMU + off, value.to_bytes(size, "little"))

    def read_reg(self, off: int) -> int:
        return int.from_bytes(self.bus.read(SMMU + off, 4), "little")

    def submit(self, cmd: Command, **fields: int) -> None:
        self.bus.write(
            CMDQ + (self.prod & 0xF) * 16,
            cmd.layout.encode(opcode=cmd.opcode, **fields).to_bytes(16, "little"),
        )
        self.prod = (self.prod + 1) & 0x1F
        self.mmio(OFF.CMDQ_PROD, 4, self.prod)

    def events(self) -> list[Event]:
        n = self.read_reg(OFF.EVENTQ_PROD) & 0xF
        return [Event.from_record(self.bus.read(EVENTQ + 32 * i, 32)) for i in range(n)]


def test_dma_through_the_smmu() -> None:
    m = Machine()
    m.pt.map(0x1000, 0x8100_0000, 0x1000, RW)
    m.bus.write(0x8100_0010, b"smmu-dma")
    assert m.ep.dma_read(0x1010, 8).data == b"smmu-dma"
    assert m.ep.dma_write(0x1020, b"back").ok
    assert m.bus.read(0x8100_0020, 4) == b"back"
    bad = m.ep.dma_read(0x5000, 4)
    assert not bad.ok and bad.status == CPL_UR
    assert [e.name for e in m.events()] == ["F_TRANSLATION"]


def test_params_must_match_the_kind() -> None:
    with pytest.raises(InvalidArgument, match="smmuv3"):
        IommuConfig(SMMU, kind="smmuv3")


def test_ats_completion_and_atc_invalidation_waited_for_by_cmd_sync() -> None:
    """IHI 0070 3.9.1 / 4.5 / 4.7: the device caches a translation from an ATS completion;
    CMD_ATC_INV sends it an Invalidate Request; with a device that answers late, CMD_SYNC
    stays at CONS until the Invalidation Completion arrives."""
    m = Machine(eats=EATS_FULL, delay_ns=5_000)
    m.ep.enable_ats(True)
    m.pt.map(0x2000, 0x8100_0000, 0x1000, RW)
    assert m.ep.dma_read(0x2000, 4).ok
    assert m.ep.stats.ats_requests == 1
    assert m.ep.dma_read(0x2000, 4).ok and m.ep.stats.atc_hits >= 1
    m.pt.unmap(0x2000, 0x1000, IotlbGather())
    m.submit(CMD_TLBI_NH_VA, vmid=0, asid=1, address=0x2)  # the SMMU's TLB, then the ATC
    m.submit(CMD_ATC_INV, streamid=RID, address=0x2, size=0)
    m.submit(CMD_SYNC)
    assert m.read_reg(OFF.CMDQ_CONS) & 0xFFFFF == 2  # the SYNC waits
    m.system.run_for(10_000)
    assert m.read_reg(OFF.CMDQ_CONS) & 0xFFFFF == 3
    assert m.ep.stats.ats_invals == 1
    assert not m.ep.dma_read(0x2000, 4).ok


def test_stalled_dma_waits_for_cmd_resume() -> None:
    """IHI 0070 3.12.2: the DMA's transaction stalls; software, reacting later in virtual
    time, maps the page and resumes it; the DMA completes with the data."""
    m = Machine(s=1)
    m.bus.write(0x8100_0000, b"late")

    def software() -> None:
        (ev,) = m.events()
        assert ev.stall
        m.pt.map(0x3000, 0x8100_0000, 0x1000, RW)
        m.submit(CMD_RESUME, streamid=RID, stag=ev.stag, ac=1)

    m.system.clock.call_after(20_000, software)
    t0 = m.system.clock.now
    got = m.ep.dma_read(0x3000, 4)
    assert got.ok and got.data == b"late"
    assert m.system.clock.now - t0 >= 20_000
    assert m.model.translator.stalled() == []


def test_stall_nobody_resumes_times_out() -> None:
    m = Machine(s=1)
    got = m.ep.dma_read(0x3000, 4)
    assert not got.ok and got.status == CPL_UR
    assert len(m.model.translator.stalled()) == 1  # still held by the SMMU


def test_unanswered_atc_invalidation_fails_the_sync_after_its_timeout() -> None:
    """IHI 0070 7.1 CERROR_ATC_INV_SYNC: an Invalidate Request to a function without ATS
    gets no completion; after the SMMU's timeout the waiting CMD_SYNC fails."""
    m = Machine(eats=EATS_FULL)
    m.ep.ats_capable = False
    m.submit(CMD_ATC_INV, streamid=RID, address=0x2, size=0)
    m.submit(CMD_SYNC)
    assert m.read_reg(OFF.CMDQ_CONS) == 1
    m.system.run_for(20_000_000)
    cons = m.read_reg(OFF.CMDQ_CONS)
    assert cons & 0xFFFFF == 1 and cons >> 24 & 0x7F == CERROR_ATC_INV_SYNC
