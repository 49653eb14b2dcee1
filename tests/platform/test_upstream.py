"""The upstream port: endpoints speak PCIe to whatever IOMMU is above them
(hw/common/upstream.py, hw/riscv/upstream.py, platform/system.py).

STYLE house rule 5 (after an httpx transport): an endpoint depends on the port alone, so a fake
port drives it; the RISC-V adapter answers with PCIe completion statuses (riscv-iommu:
"Aborting transactions", "Reliability, Availability, and Serviceability") and its own fault
records; a system holds several IOMMUs, each with its doorbell, and the kernel binds a driver
to each by kind.
"""

from __future__ import annotations

import errno

import pytest

from iommusim.bits.pcie import CPL_CA, CPL_SC, CPL_UR
from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import MODE_1LVL, OFF_CQT, OFF_DDTP
from iommusim.errors import BusError, InvalidArgument
from iommusim.hw.common.upstream import (
    InvalidateRequest,
    PrgResponse,
    TranslationCompletion,
    UpstreamPort,
)
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS
from iommusim.hw.riscv.transaction import Message
from iommusim.hw.riscv.upstream import RiscvUpstreamPort
from iommusim.mem import FaultInjectingMemory, SparseMemory
from iommusim.platform.endpoint import DmaResult
from iommusim.platform.system import (
    EndpointConfig,
    IommuConfig,
    RamRegion,
    System,
    SystemConfig,
)
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from iommusim.sw.kernel import DRIVERS, Kernel

PAGE = 4096
RAM = 0x8000_0000
DDT = 0x9000_0000
ALL_INBOUND_DISALLOWED = 256  # riscv-iommu: "Fault record CAUSE field encodings"
DDT_DATA_CORRUPTION = 268


class FakePort:
    """An IOMMU that answers every read with one byte pattern and faults every write."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int, bool, int, int, bool]] = []
        self._fault: FaultRecord | None = None

    @property
    def last_fault(self) -> FaultRecord | None:
        return self._fault

    def memory_read(
        self, rid: int, pasid: int, priv: bool, addr: int, size: int, translated: bool
    ) -> bytes | int:
        self.reads.append((rid, pasid, priv, addr, size, translated))
        return b"\x5a" * size

    def memory_write(
        self, rid: int, pasid: int, priv: bool, addr: int, data: bytes, translated: bool
    ) -> int:
        self._fault = FaultRecord(15, 3, rid, False, 0, False, addr)
        return CPL_UR

    def translation_request(
        self, rid: int, pasid: int, priv: bool, addr: int, no_write: bool
    ) -> TranslationCompletion:
        return TranslationCompletion(CPL_UR)

    def page_request(self, rid: int, pasid: int, priv: bool, payload: int) -> None:
        pass

    def invalidation_completion(self, rid: int, itag: int, cc: int) -> None:
        pass


def test_an_endpoint_depends_on_its_upstream_port_alone() -> None:
    system = System(SystemConfig(endpoints=(EndpointConfig("dev", 0x08, pasid_bits=4),)))
    ep = system.endpoint("dev")
    fake = FakePort()
    port: UpstreamPort = fake
    ep.port = port
    res = ep.dma_read(0x1FF8, 16, pasid=3)
    assert res == DmaResult(16, data=b"\x5a" * 16)
    # Split at the 4 KiB boundary, each piece one untranslated request.
    assert fake.reads == [(8, 3, False, 0x1FF8, 8, False), (8, 3, False, 0x2000, 8, False)]
    res = ep.dma_write(0x4000, b"x")
    assert res == DmaResult(0, CPL_UR, FaultRecord(15, 3, 8, False, 0, False, 0x4000), None, 0x4000)
    assert res.outcome == "Write/AMO page fault"


def riscv(mem: SparseMemory) -> tuple[RiscvIommu, RiscvUpstreamPort, FaultInjectingMemory]:
    port_mem = FaultInjectingMemory(mem)
    iommu = RiscvIommu(port_mem, PRESETS["full"])
    return iommu, RiscvUpstreamPort(iommu, mem), port_mem


def test_a_fault_completes_ur_with_the_iommus_record() -> None:
    # riscv-iommu "Process to translate an IOVA" step 1: Off -> cause 256 (TTYP 2, read).
    _, port, _ = riscv(SparseMemory())
    assert port.memory_read(0x12, -1, False, RAM + 8, 8, False) == CPL_UR
    assert port.last_fault == FaultRecord(ALL_INBOUND_DISALLOWED, 2, 0x12, False, 0, False, RAM + 8)
    assert port.memory_write(0x12, 5, True, RAM, b"x", False) == CPL_UR
    assert port.last_fault == FaultRecord(ALL_INBOUND_DISALLOWED, 3, 0x12, True, 5, True, RAM)


def test_corrupted_data_completes_ca() -> None:
    """riscv-iommu: "Reliability, Availability, and Serviceability": for a transaction aborted
    by corrupted data "a Completer Abort (CA) response is appropriate"."""
    mem = SparseMemory()
    iommu, port, port_mem = riscv(mem)
    iommu.write_register(OFF_DDTP, 8, DDT >> 12 << 10 | MODE_1LVL)
    port_mem.inject(DDT, PAGE, "corruption")
    assert port.memory_read(0x3, -1, False, RAM, 8, False) == CPL_CA
    assert port.last_fault is not None and port.last_fault.cause == DDT_DATA_CORRUPTION


def test_an_address_nothing_decodes_completes_ur_without_a_fault() -> None:
    # Bare mode passes the address through; the memory behind the port refuses it.
    class Holes(SparseMemory):
        def read(self, pa: int, size: int) -> bytes:
            raise BusError("access", pa)

    iommu = RiscvIommu(SparseMemory(), PRESETS["full"])
    iommu.write_register(OFF_DDTP, 8, 1)  # Bare
    port = RiscvUpstreamPort(iommu, Holes())
    assert port.memory_read(1, -1, False, RAM, 8, False) == CPL_UR
    assert port.last_fault is None
    assert port.memory_write(1, -1, False, RAM, b"ok", False) == CPL_SC
    assert iommu.last_fault is None


def test_downstream_messages_are_routed_by_segment_and_rid() -> None:
    inval = Message("ats_inval_req", rid=0x10, dsv=True, dseg=2, pv=True, pid=7, payload=9, itag=4)
    assert RiscvUpstreamPort.downstream(inval) == InvalidateRequest(0x2_0010, 7, 9, 4)
    prgr = Message("prgr", rid=0x10, payload=0x55)
    assert RiscvUpstreamPort.downstream(prgr) == PrgResponse(0x10, -1, 0x55)
    assert RiscvUpstreamPort.downstream(Message("sync", pr=True)) is None
    assert RiscvUpstreamPort.is_doorbell(OFF_CQT) and not RiscvUpstreamPort.is_doorbell(OFF_DDTP)


def two_iommus() -> System:
    return System(
        SystemConfig(
            ram=(RamRegion(RAM, 32 << 20),),
            iommu_rids=range(0, 0x100),
            more_iommus=(IommuConfig(0x1100_0000, PRESETS["full"], rids=range(0x100, 0x200)),),
            endpoints=(EndpointConfig("a", 0x08), EndpointConfig("b", 0x108)),
        )
    )


def test_a_system_holds_several_iommus_and_routes_each_endpoint_to_its_own() -> None:
    system = two_iommus()
    first, second = system.iommus
    assert system.iommu is first.model
    assert system.endpoint("a").port is first.port
    assert system.endpoint("b").port is second.port
    regions = {r.name: r.base_pa for r in system.bus.regions}
    assert (regions["iommu"], regions["iommu1"]) == (0x1000_0000, 0x1100_0000)
    with pytest.raises(InvalidArgument, match="must be behind an IOMMU") as e:
        system.upstream_port(0x300)
    assert e.value.errno == errno.EINVAL


def test_the_kernel_binds_a_driver_to_each_iommu_by_kind() -> None:
    system = two_iommus()
    kernel = Kernel(system, cq_entries=64, fq_entries=64)
    assert set(DRIVERS) == {"riscv", "smmuv3"}
    assert [d.name for d in kernel.drivers] == ["riscv-iommu0", "riscv-iommu1"]
    assert kernel.iommu is kernel.drivers[0]
    for name, driver in (("a", kernel.drivers[0]), ("b", kernel.drivers[1])):
        dev = kernel.device(name)
        assert dev.iommu is driver
        pa = kernel.pages.alloc_page()
        system.bus.write(pa, name.encode() * 8)
        iova = kernel.core.dma_map(dev, pa, PAGE, DMA_BIDIRECTIONAL)
        # Each IOMMU translates its own endpoint's DMA through the tables its driver wrote;
        # the unmap's invalidation rings that IOMMU's doorbell.
        assert system.endpoint(name).dma_read(iova, 8).data == name.encode() * 8
        kernel.core.dma_unmap(dev, iova, PAGE)
        assert not system.endpoint(name).dma_read(iova, 8).ok


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            dict(more_iommus=(IommuConfig(0x1100_0000, rids=range(0x100, 0x200)),)),
            "the requester ids of IOMMU 1 must not overlap those of IOMMU 0",
        ),
        (
            dict(iommu_rids=range(0, 0x10), endpoints=(EndpointConfig("x", 0x20),)),
            "endpoint 'x' rid 0x20 must be behind an IOMMU",
        ),
        (
            dict(more_iommus=(IommuConfig(0x1000_0800, rids=range(1)),), iommu_rids=range(1, 2)),
            "system.more_iommus\\[0\\] must not overlap system.iommu_base_pa",
        ),
    ],
)
def test_bad_iommu_configs_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        SystemConfig(**kw)  # type: ignore[arg-type]


def test_an_iommu_serves_a_contiguous_range_of_requester_ids() -> None:
    with pytest.raises(InvalidArgument, match="must be a non-empty contiguous range"):
        IommuConfig(0x1100_0000, rids=range(0, 10, 2))
    with pytest.raises(InvalidArgument, match="must be a non-empty contiguous range"):
        IommuConfig(0x1100_0000, rids=range(0, 1 << 25))
