"""Each step of the driver's ordering is load-bearing (issue 12): with the step skipped on
purpose, a device access reaches what it must not -- a stale STE after an attach without
CMD_CFGI_STE, a stale ATC entry after munmap without CMD_ATC_INV, or before the device's
Invalidation Completion when the CMD_SYNC that waits for it is left out. The same checks
pass with the driver as written."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

import pytest

from iommusim.bits.arm.smmuv3_queues import CMD_ATC_INV, CMD_CFGI_STE, CMD_SYNC
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE

RID: Final = 0x10


def boot(**ep: Any) -> tuple[System, Kernel, Smmuv3Driver]:
    e = {"pasid_bits": 20, "ats": True, "pri": True, **ep}
    cfg = replace(SystemConfig(endpoints=(EndpointConfig("acc", RID, **e),)), iommu=PRESETS["full"])
    system = System(cfg)
    kernel = Kernel(system)
    drv = kernel.drivers[0]
    assert isinstance(drv, Smmuv3Driver)
    return system, kernel, drv


def drop(drv: Smmuv3Driver, opcode: int) -> None:
    """Break the driver: every command with ``opcode`` is left out of its batches."""
    issue = drv.issue

    def without(cmds: list[int], sync: bool = True) -> None:
        kept = [c for c in cmds if c & 0xFF != opcode]
        issue(kept, sync and opcode != CMD_SYNC.opcode)

    drv.issue = without  # type: ignore[method-assign]


def stale_after_attach(broken: bool) -> bool:
    """Attach the device to identity after DMA through its DMA domain: does its next
    access to a physical address still go through the old translation?"""
    system, kernel, drv = boot(ats=False, pri=False)
    dev, ep = kernel.device("acc"), system.endpoint("acc")
    pa = kernel.pages.alloc_page()
    system.bus.write(pa, b"identity")
    iova = kernel.core.dma_map(dev, kernel.pages.alloc_page(), 4096, DMA_BIDIRECTIONAL)
    assert ep.dma_read(iova, 4).ok  # the STE (S1) is cached now
    if broken:
        drop(drv, CMD_CFGI_STE.opcode)
    drv.identity_domain.attach_dev(dev, None)
    return ep.dma_read(pa, 8).data != b"identity"


def stale_after_munmap(broken: int | None, delay_ns: int = 0) -> bool:
    """SVA: the device caches a page in its ATC; munmap; does it still reach the page?"""
    system, kernel, drv = boot(ats_inval_delay_ns=delay_ns)
    mm = kernel.new_process("app", "arm64-4k")
    buf = mm.mmap(1 << 12, PROT_READ | PROT_WRITE)
    mm.write(buf, b"secret")
    sva = kernel.sva.bind(kernel.device("acc"), mm)
    ep = system.endpoint("acc")
    assert ep.dma_read(buf, 6, pasid=sva.pasid).data == b"secret"  # in the ATC now
    if broken is not None:
        drop(drv, broken)
    mm.munmap(buf, 1 << 12)
    return ep.dma_read(buf, 6, pasid=sva.pasid).ok


def test_the_driver_as_written_leaves_nothing_stale() -> None:
    assert not stale_after_attach(False)
    assert not stale_after_munmap(None)
    assert not stale_after_munmap(None, delay_ns=5_000)


def test_skipping_cfgi_ste_leaves_the_old_translation() -> None:
    assert stale_after_attach(True)


def test_skipping_atc_inv_leaves_the_device_atc_stale() -> None:
    assert stale_after_munmap(CMD_ATC_INV.opcode)


@pytest.mark.parametrize("delay_ns", [5_000])
def test_skipping_cmd_sync_returns_before_the_device_invalidated(delay_ns: int) -> None:
    """Without the CMD_SYNC that waits for the Invalidation Completion, munmap returns while
    the device (answering after ``delay_ns``) still translates from its ATC."""
    assert stale_after_munmap(CMD_SYNC.opcode, delay_ns)
