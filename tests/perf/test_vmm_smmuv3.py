"""A whole guest behind a VMM on SMMUv3 (issue 15): the guest's own kernel and SMMUv3 driver on
a virtual SMMUv3 the VMM traps; the host SMMUv3 nests the guest's stage 1 over its stage 2;
strict invalidation forwarded, faults delivered back -- and a forwarded invalidation left out
on purpose shows up as a stale translation."""

from __future__ import annotations

from iommusim.perf.vmm_smmuv3 import GuestScene, run_guest_scene
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL


def test_the_guest_scene_end_to_end() -> None:
    r = run_guest_scene()
    assert r.guest_dma_ok  # the device read what the guest's buffer holds, at its IOVA
    assert not r.stale_after_unmap  # the guest's TLBI reached the host SMMU
    assert "F_TRANSLATION" in r.fault_delivered  # through the vEVENTQ into the guest
    assert r.ste_installs >= 1 and r.forwarded_commands >= 1
    assert r.host_walk_reads_per_miss > 4  # nested: more than a single-stage walk reads


def test_a_missing_forwarded_invalidation_leaves_the_guest_stale() -> None:
    s = GuestScene()
    s.accel.tlbi = lambda t: None  # type: ignore[method-assign]  # the VMM drops guest TLBIs
    g = s.guest_kernel
    dev = g.device("nic")
    buf = g.pages.alloc_page()
    iova = g.core.dma_map(dev, buf, 4096, DMA_BIDIRECTIONAL)
    assert s.nic.dma_read(iova, 8).ok  # cached in the host SMMU's TLB
    g.core.dma_unmap(dev, iova, 4096)
    assert s.nic.dma_read(iova, 8).ok  # stale: the guest's invalidation never arrived


def test_guest_commands_are_trapped_and_forwarded() -> None:
    s = GuestScene()
    before = s.accel.forwarded
    g = s.guest_kernel
    dev = g.device("nic")
    iova = g.core.dma_map(dev, g.pages.alloc_page(), 4096, DMA_BIDIRECTIONAL)
    g.core.dma_unmap(dev, iova, 4096)
    assert s.accel.forwarded > before  # the unmap's TLBI went to the host via iommufd
