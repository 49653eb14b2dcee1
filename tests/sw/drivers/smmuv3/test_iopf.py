"""I/O page faults on SMMUv3, both ways (issue 12): PRI for a PCIe device (PRIQ entry -> iopf
core -> CMD_PRI_RESP) and stalls (stalled event -> iopf core -> CMD_RESUME retry or abort),
each reaching success, invalid and failure responses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from iommusim.bits.arm.smmuv3_regs import IDR0
from iommusim.errors import InvalidArgument
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.iopf.queue import IopfGroup
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE

PAGE: Final = 4096
#: The full preset with stalls forced (IDR0.STALL_MODEL = 0b10): every fault stalls.
FORCED: Final = replace(
    PRESETS["full"],
    idr0=IDR0["stall_model"].put(PRESETS["full"].idr0, 0b10),
)


def boot(params: Any, **ep: Any) -> tuple[System, Kernel, Smmuv3Driver]:
    cfg = replace(
        SystemConfig(endpoints=(EndpointConfig("acc", 0x10, pasid_bits=20, **ep),)),
        iommu=params,
    )
    system = System(cfg)
    kernel = Kernel(system)
    drv = kernel.drivers[0]
    assert isinstance(drv, Smmuv3Driver)
    return system, kernel, drv


def test_pri_success_invalid_failure() -> None:
    system, kernel, drv = boot(PRESETS["full"], ats=True, pri=True)
    mm = kernel.new_process("app", "arm64-4k")
    buf = mm.mmap(4 * PAGE, PROT_READ | PROT_WRITE)
    sva = kernel.sva.bind(kernel.device("acc"), mm)
    ep = system.endpoint("acc")
    assert ep.dma_write(buf, b"ok", pasid=sva.pasid).ok  # fault in: success
    assert ep.stats.prg_success >= 1
    assert not ep.dma_read(0x10_0000, 4, pasid=sva.pasid).ok  # no VMA there: invalid
    assert ep.stats.prg_invalid >= 1

    def broken(group: IopfGroup) -> None:
        raise InvalidArgument("the handler cannot take it")

    sva.domain.iopf_handler = broken
    assert not ep.dma_read(buf + PAGE, 4, pasid=sva.pasid).ok  # a handler error: failure
    assert ep.stats.prg_failure >= 1
    assert drv.stats["page_requests"] >= 3


def test_stall_retry_success_invalid_failure() -> None:
    """A device without ATS behind an SMMU that stalls every fault: its DMA waits while the
    driver's event handler resolves the fault; CMD_RESUME retries after a fault-in, aborts
    for an address with no VMA or a failing handler."""
    system, kernel, drv = boot(FORCED)
    mm = kernel.new_process("app", "arm64-4k")
    buf = mm.mmap(4 * PAGE, PROT_READ | PROT_WRITE)
    sva = kernel.sva.bind(kernel.device("acc"), mm)
    ep = system.endpoint("acc")
    t0 = system.clock.now
    assert ep.dma_write(buf, b"stalled", pasid=sva.pasid).ok  # stalled, faulted in, retried
    assert system.clock.now > t0 and mm.read(buf, 7) == b"stalled"
    assert drv.stats["stalls"] >= 1 and drv.stats["resumes"] >= 1
    assert not ep.dma_read(0x10_0000, 4, pasid=sva.pasid).ok  # invalid: resumed as abort

    def broken(group: IopfGroup) -> None:
        raise InvalidArgument("the handler cannot take it")

    sva.domain.iopf_handler = broken
    assert not ep.dma_read(buf + PAGE, 4, pasid=sva.pasid).ok  # failure: abort
    smmu = system.iommus[0].model
    assert smmu.translator.stalled() == []  # type: ignore[attr-defined]
