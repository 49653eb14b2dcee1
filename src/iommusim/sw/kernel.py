"""Boot the software stack on a :class:`~iommusim.platform.system.System`.

The kernel owns RAM through a page allocator, probes a driver for each of the system's IOMMUs
-- picked by the IOMMU's kind from :data:`DRIVERS`, as Linux binds a driver to a device it
matches -- against its register window, registers it with the core and probes one device per
endpoint, so each endpoint ends up in its own group, behind its IOMMU, with the default domain
the DMA mode asks for. It
also creates processes (:meth:`Kernel.new_process`), whose address spaces devices can share
through :attr:`Kernel.sva`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from iommusim.errors import NoDevice, OutOfMemory
from iommusim.platform.system import IommuSlot, System
from iommusim.sw.core.device import Device
from iommusim.sw.core.fq import FqOptions
from iommusim.sw.core.ida import Ida
from iommusim.sw.core.iommu import DmaMode, IommuCore
from iommusim.sw.core.ops import IommuDriver
from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.mm.mm import Mm
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import ARM64_MM_FORMATS
from iommusim.sw.sva.sva import Sva

#: CPU steps a page fault takes (allocate, zero and map a page): about 1 us at the default
#: 50 ns per step.
FAULT_CPU_STEPS: Final = 20

__all__ = ["DRIVERS", "DriverFactory", "Kernel"]

#: Builds and probes the driver of one IOMMU: ``(system, slot, pages, cq_entries,
#: fq_entries, vhe)`` -- ``vhe``: the kernel runs at EL2 with VHE (arm64).
DriverFactory = Callable[[System, IommuSlot, PageAllocator, int, int, bool], IommuDriver]
#: Vectors each IOMMU's interrupts take, from identity 32 up.
_IRQS_PER_IOMMU: Final = 16


def _riscv_driver(
    system: System,
    slot: IommuSlot,
    pages: PageAllocator,
    cq_entries: int,
    fq_entries: int,
    vhe: bool,
) -> RiscvIommuDriver:
    driver = RiscvIommuDriver(
        system.bus,
        slot.config.base_pa,
        pages,
        system.sink,
        msi_pa=system.config.imsic_base_pa,
        irq_base=32 + _IRQS_PER_IOMMU * slot.index,
        rids=slot.config.rids,
        cq_entries=cq_entries,
        fq_entries=fq_entries,
        name=f"riscv-iommu{slot.index}",
    )
    driver.probe()
    return driver


def _smmuv3_driver(
    system: System,
    slot: IommuSlot,
    pages: PageAllocator,
    cq_entries: int,
    fq_entries: int,
    vhe: bool,
) -> Smmuv3Driver:
    clock = system.clock

    def wait() -> bool:
        """Let virtual time run to its next event while the driver polls the SMMU."""
        nxt = clock.next_event_ns()
        if nxt is None or clock.running:
            return False
        clock.run_until(nxt)
        return True

    driver = Smmuv3Driver(
        system.bus,
        slot.config.base_pa,
        pages,
        system.sink,
        wait,
        msi_pa=system.config.imsic_base_pa,
        irq_base=32 + _IRQS_PER_IOMMU * slot.index,
        rids=slot.config.rids,
        cmdq_log2=max(cq_entries.bit_length() - 1, 1),
        evtq_log2=max(fq_entries.bit_length() - 1, 1),
        vhe=vhe,
        wired={line: system.wired_irq(slot.index, line) for line in ("eventq", "priq", "gerror")},
        name=f"arm-smmu-v3.{slot.index}",
    )
    driver.probe()
    return driver


#: The driver for each IOMMU kind.
DRIVERS: Final[dict[str, DriverFactory]] = {"riscv": _riscv_driver, "smmuv3": _smmuv3_driver}


class Kernel:
    """The OS of one machine: page allocator, IOMMU driver, IOMMU core, devices."""

    def __init__(
        self,
        system: System,
        *,
        dma_mode: DmaMode = "strict",
        ncpus: int = 1,
        fq: FqOptions | None = None,
        cq_entries: int = 8192,
        fq_entries: int = 4096,
        vhe: bool = False,
    ) -> None:
        self.system = system
        #: The kernel runs at EL2 with VHE (arm64): SMMUv3 stage 1 in the EL2-E2H regime,
        #: CPU TLB invalidations by the EL2 TLBIs.
        self.vhe = vhe
        ram = system.config.ram[0]
        self.pages = PageAllocator(system.bus, ram.base_pa, ram.size_bytes)
        self.core = IommuCore(system.clock, dma_mode=dma_mode, ncpus=ncpus, fq=fq)
        #: One driver per IOMMU of the system, in its order.
        self.drivers: list[IommuDriver] = []
        for slot in system.iommus:
            factory = DRIVERS.get(slot.config.kind)
            if factory is None:
                raise NoDevice(f"no driver for an IOMMU of kind {slot.config.kind!r}")
            driver = factory(system, slot, self.pages, cq_entries, fq_entries, vhe)
            self.core.register(driver)
            self.drivers.append(driver)
        self.devices: dict[str, Device] = {}
        for ep in system.endpoints.values():
            dev = Device(
                ep.name,
                ep.rid,
                pasid_bits=ep.pasid_bits,
                ats=ep.ats_capable,
                pri=ep.pri_capable,
                pci=ep,
            )
            self.core.probe_device(dev)
            self.devices[ep.name] = dev
        costs = system.costs
        self.sva = Sva(
            self.core,
            charge=lambda n: system.ledger.charge("cpu", costs.cpu_op_ns * FAULT_CPU_STEPS, n),
        )
        self.processes: list[Mm] = []
        #: The CPU's ASID allocator for arm64 address spaces (16-bit ASIDs).
        self.cpu_asids = Ida(1, (1 << 16) - 1)
        system.settle()

    @property
    def iommu(self) -> RiscvIommuDriver:
        """The first IOMMU's driver, when it is a RISC-V one (ENODEV otherwise): the one the
        RISC-V studies read their counters from."""
        driver = self.drivers[0]
        if not isinstance(driver, RiscvIommuDriver):
            raise NoDevice(f"the first IOMMU is driven by {driver.name}, not the RISC-V driver")
        return driver

    def new_process(self, name: str, fmt: str = "sv48") -> Mm:
        """A process with an empty address space whose page table is in ``fmt``."""
        mm = Mm(self.system.bus, self.pages, fmt, name=name)
        if fmt in ARM64_MM_FORMATS:
            asid = self.cpu_asids.alloc()
            if asid is None:
                raise OutOfMemory("no CPU ASID left for an arm64 address space")
            mm.asid = asid
            system = self.system

            def cpu_tlb_flush(m: Mm, start: int, end: int, freed: bool) -> None:
                assert m.asid is not None
                system.cpu_tlbi(m.asid, start, end, freed, el2=self.vhe)

            mm.cpu_tlb_flush = cpu_tlb_flush
        self.processes.append(mm)
        return mm

    def device(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            raise NoDevice(f"no device named {name!r}") from None
