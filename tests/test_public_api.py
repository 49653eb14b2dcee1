"""The public API: what ``from iommusim import ...`` offers (pinned, so a change is deliberate)
and that those names are the objects the modules define."""

from __future__ import annotations

import iommusim
from iommusim.platform.system import System
from iommusim.sw.kernel import Kernel

PUBLIC = {
    "DMA_BIDIRECTIONAL",
    "DMA_FROM_DEVICE",
    "DMA_TO_DEVICE",
    "IOMMU_NOEXEC",
    "IOMMU_PRIV",
    "IOMMU_READ",
    "IOMMU_WRITE",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "RISCV_PRESETS",
    "SMMUV3_PRESETS",
    "AddressMap",
    "ApiError",
    "BusError",
    "Busy",
    "CacheParams",
    "Device",
    "DmaMode",
    "DmaResult",
    "Domain",
    "Endpoint",
    "EndpointConfig",
    "Exists",
    "Fault",
    "FlatMemory",
    "FormatError",
    "Gpa",
    "InvalidArgument",
    "IommuConfig",
    "IommuCore",
    "IommufdFile",
    "IommusimError",
    "Iova",
    "Kernel",
    "Mm",
    "ModelError",
    "NoDevice",
    "NotFound",
    "NotSupported",
    "OutOfMemory",
    "PhysAddr",
    "PhysicalMemory",
    "RamRegion",
    "Request",
    "Response",
    "RiscvIommu",
    "RiscvIommuParams",
    "Scenario",
    "Smmuv3",
    "Smmuv3Params",
    "Smmuv3Request",
    "Smmuv3Response",
    "SparseMemory",
    "System",
    "SystemConfig",
    "load_scenario",
    "parse_scenario",
}


def test_the_public_names_are_pinned() -> None:
    assert set(iommusim.__all__) == PUBLIC
    assert len(iommusim.__all__) == len(PUBLIC)  # no name twice
    for name in PUBLIC:
        assert getattr(iommusim, name) is not None, name


def test_public_names_are_the_modules_objects() -> None:
    assert iommusim.Kernel is Kernel and iommusim.System is System
    assert iommusim.RISCV_PRESETS["full"].capabilities


def test_the_readme_example_runs_from_the_package() -> None:
    """README "Python API": the whole machine, imported from ``iommusim`` alone."""
    from iommusim import DMA_TO_DEVICE, EndpointConfig, Kernel, System, SystemConfig

    system = System(SystemConfig(endpoints=(EndpointConfig("nic", rid=0x08),)))
    kernel = Kernel(system, dma_mode="lazy")
    nic, ep = kernel.device("nic"), system.endpoint("nic")
    pa = kernel.pages.alloc_page()
    system.bus.write(pa, b"payload!")
    iova = kernel.core.dma_map(nic, pa, 4096, DMA_TO_DEVICE)
    assert ep.dma_read(iova, 8).data == b"payload!"
    kernel.core.dma_unmap(nic, iova, 4096)
    assert ep.dma_read(iova, 8).ok  # lazy: reachable until the flush queue runs
    system.run_for(10_000_000)
    assert not ep.dma_read(iova, 8).ok


def test_the_readme_smmuv3_example_runs_from_the_package() -> None:
    """README "Python API", SMMUv3: an SMMU programmed through MMIO over a memory image,
    one translation and one fault as data."""
    from iommusim import SMMUV3_PRESETS, Smmuv3, Smmuv3Request, SparseMemory
    from iommusim.bits.arm.smmuv3_regs import CR0, OFF, STRTAB_BASE_CFG
    from iommusim.bits.arm.smmuv3_structures import STE, STE_CONFIG_BYPASS

    mem = SparseMemory()
    smmu = Smmuv3(mem, SMMUV3_PRESETS["full"])
    mem.write(0x10_0000 + 5 * 64, STE.encode(v=1, config=STE_CONFIG_BYPASS).to_bytes(64, "little"))
    smmu.write_register(OFF.STRTAB_BASE, 8, 0x10_0000)
    smmu.write_register(OFF.STRTAB_BASE_CFG, 4, STRTAB_BASE_CFG.encode(log2size=4))
    smmu.write_register(OFF.CR0, 4, CR0.encode(smmuen=1))
    resp = smmu.translate(Smmuv3Request(sid=5, addr=0x1234_5678, is_write=True))
    assert (resp.outcome, resp.pa) == ("bypass", 0x1234_5678)
    bad = smmu.translate(Smmuv3Request(sid=6, addr=0))
    assert bad.event is not None and bad.event.name == "C_BAD_STE"
    assert smmu.translator.counts.transactions == 2
