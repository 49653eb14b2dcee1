"""Boot the software stack on a :class:`~iommusim.platform.system.System`.

The kernel owns RAM through a page allocator, probes the RISC-V IOMMU driver against the
IOMMU's register window, registers it with the core and probes one device per endpoint, so
each endpoint ends up in its own group with the default domain the DMA mode asks for. It
also creates processes (:meth:`Kernel.new_process`), whose address spaces devices can share
through :attr:`Kernel.sva`.
"""

from __future__ import annotations

from typing import Final

from iommusim.errors import NoDevice
from iommusim.platform.system import System
from iommusim.sw.core.device import Device
from iommusim.sw.core.fq import FqOptions
from iommusim.sw.core.iommu import DmaMode, IommuCore
from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver
from iommusim.sw.mm.mm import Mm
from iommusim.sw.pages import PageAllocator
from iommusim.sw.sva.sva import Sva

#: CPU steps a page fault takes (allocate, zero and map a page): about 1 us at the default
#: 50 ns per step.
FAULT_CPU_STEPS: Final = 20

__all__ = ["Kernel"]


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
    ) -> None:
        self.system = system
        ram = system.config.ram[0]
        self.pages = PageAllocator(system.bus, ram.base_pa, ram.size_bytes)
        self.core = IommuCore(system.clock, dma_mode=dma_mode, ncpus=ncpus, fq=fq)
        self.iommu = RiscvIommuDriver(
            system.bus,
            system.config.iommu_base_pa,
            self.pages,
            system.sink,
            msi_pa=system.config.imsic_base_pa,
            cq_entries=cq_entries,
            fq_entries=fq_entries,
        )
        self.iommu.probe()
        self.core.register(self.iommu)
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
        system.settle()

    def new_process(self, name: str, fmt: str = "sv48") -> Mm:
        """A process with an empty address space whose page table is in ``fmt``."""
        mm = Mm(self.system.bus, self.pages, fmt, name=name)
        self.processes.append(mm)
        return mm

    def device(self, name: str) -> Device:
        try:
            return self.devices[name]
        except KeyError:
            raise NoDevice(f"no device named {name!r}") from None
