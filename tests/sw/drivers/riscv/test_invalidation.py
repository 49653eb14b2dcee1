"""IOTLB invalidation: strict unmap, the missing-invalidation hazard, the per-page threshold,
lazy (flush-queue) mode.

riscv-iommu "Guidelines for invalidations" / "Changing first-stage page table entry": after
changing a PTE software issues IOTINVAL.VMA (and IOFENCE.C to wait for it); until then the
IOMMU may keep using the old translation. Linux ``riscv_iommu_iotlb_inval``: one command per
4 KiB page with AV = 1 below RISCV_IOMMU_IOTLB_INVAL_LIMIT (2 MiB), else one whole-PSCID
command; ``riscv_iommu_iotlb_sync``: a non-empty freelist (table pages unlinked) forces the
whole PSCID.
"""

from __future__ import annotations

from typing import Any

import pytest

from iommusim.bits.riscv.pgtable import PTE
from iommusim.hw.riscv.params import PRESETS, CacheParams
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from iommusim.sw.drivers.riscv.domain import IOTLB_INVAL_LIMIT
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

PAGE = 4096
MiB = 1 << 20
RW = IOMMU_READ | IOMMU_WRITE
READ_PAGE_FAULT = 13
WRITE_PAGE_FAULT = 15


def iotinvals(cmds: list[dict[str, int | str]]) -> list[dict[str, int | str]]:
    return [c for c in cmds if c["op"] == "iotinval"]


# ------------------------------------------------------------------ strict unmap
def test_after_unmap_the_device_cannot_reach_the_page(machine: Any) -> None:
    m = machine()
    dom = m.paging("nic")
    ep = m.ep("nic")
    pa = m.kernel.pages.alloc_page()
    m.core.map(dom, 0x20_0000, pa, PAGE, RW)
    assert ep.dma_write(0x20_0000, b"mine").ok  # the translation is now in the IOTLB
    assert ep.dma_read(0x20_0000, 4).data == b"mine"
    assert m.core.unmap(dom, 0x20_0000, PAGE) == PAGE
    assert ep.dma_read(0x20_0000, 4).fault.cause == READ_PAGE_FAULT
    assert ep.dma_write(0x20_0000, b"gone").fault.cause == WRITE_PAGE_FAULT
    assert m.bus.read(pa, 4) == b"mine"


def test_strict_dma_unmap_invalidates_before_the_iova_is_reused(machine: Any) -> None:
    m = machine()
    dev, ep = m.dev("nic"), m.ep("nic")
    buf = m.kernel.pages.alloc_page()
    iova = m.core.dma_map(dev, buf, 64, DMA_BIDIRECTIONAL)
    assert ep.dma_write(iova, b"packet").ok
    fences = m.driver.stats["iofence"]
    m.core.dma_unmap(dev, iova, 64)
    assert m.driver.stats["iofence"] == fences + 1
    assert ep.dma_write(iova, b"stale?").fault.cause == WRITE_PAGE_FAULT
    # The IOVA comes back from the range cache, now pointing at another buffer.
    other = m.kernel.pages.alloc_page()
    assert m.core.dma_map(dev, other, 64, DMA_BIDIRECTIONAL) == iova
    assert ep.dma_write(iova, b"fresh!").ok
    assert m.bus.read(other, 6) == b"fresh!"
    assert m.bus.read(buf, 6) == b"packet"


# ------------------------------------------------------------------ the hazard
def remap_setup(machine: Any, iotlb_entries: int) -> tuple[Any, Any, Any, int, int, int]:
    """A paging domain mapping 0x30_0000 to page "old" (the device has read it once), page
    "new" beside it, and the PA of the leaf PTE a test rewrites."""
    params = PRESETS["full"].with_(caches=CacheParams(iotlb_entries=iotlb_entries))
    m = machine(params)
    dom = m.paging("nic")
    ep = m.ep("nic")
    old, new = m.kernel.pages.alloc_page(), m.kernel.pages.alloc_page()
    m.bus.write(old, b"old page")
    m.bus.write(new, b"new page")
    m.core.map(dom, 0x30_0000, old, PAGE, RW)
    assert ep.dma_read(0x30_0000, 8).data == b"old page"
    return m, dom, ep, old, new, m.leaf_pte_pa(dom, 0x30_0000)


@pytest.mark.parametrize("iotlb_entries", [1024, 2])
def test_missing_invalidation_shows_as_a_stale_translation(
    machine: Any, iotlb_entries: int
) -> None:
    # Rewrite a leaf PTE in memory to point at another page, without IOTINVAL: the IOMMU
    # keeps using the cached translation (DESIGN rule 2: the point of the model).
    m, dom, ep, old, new, pte_pa = remap_setup(machine, iotlb_entries)
    pte = m.bus.read64(pte_pa)
    assert PTE["ppn"].get(pte) << 12 == old
    m.bus.write64(pte_pa, PTE["ppn"].put(pte, new >> 12))
    assert m.core.iova_to_phys(dom, 0x30_0000) == new  # software sees the new mapping
    assert ep.dma_read(0x30_0000, 8).data == b"old page"  # the IOMMU does not
    assert ep.dma_write(0x30_0000, b"STALE!!!").ok
    assert m.bus.read(old, 8) == b"STALE!!!"
    dom.iotlb_inval(0x30_0000, 0x30_0FFF)
    assert ep.dma_read(0x30_0000, 8).data == b"new page"


def test_without_an_iotlb_there_is_nothing_stale(machine: Any) -> None:
    # The same missing invalidation is invisible when the IOTLB is disabled: a cache geometry
    # changes the result only for incorrect software (riscv-iommu "Caching in-memory data
    # structures").
    m, _, ep, _, new, pte_pa = remap_setup(machine, 0)
    m.bus.write64(pte_pa, PTE["ppn"].put(m.bus.read64(pte_pa), new >> 12))
    assert ep.dma_read(0x30_0000, 8).data == b"new page"


def test_unmap_without_sync_leaves_the_page_reachable(machine: Any) -> None:
    # Going around the core: clear the PTE through the page table but skip iotlb_sync.
    m = machine()
    dom = m.paging("nic")
    ep = m.ep("nic")
    pa = m.kernel.pages.alloc_page()
    m.core.map(dom, 0x50_0000, pa, PAGE, RW)
    m.core.map(dom, 0x50_1000, pa, PAGE, RW)  # keeps the leaf table alive
    assert ep.dma_read(0x50_0000, 4).ok
    gather = IotlbGather()
    assert dom.unmap(0x50_0000, PAGE, gather) == PAGE
    assert gather.freelist == []
    assert m.core.iova_to_phys(dom, 0x50_0000) is None
    assert ep.dma_write(0x50_0000, b"leak").ok
    assert m.bus.read(pa, 4) == b"leak"
    dom.iotlb_sync(gather)
    assert ep.dma_write(0x50_0000, b"leak").fault.cause == WRITE_PAGE_FAULT


# ------------------------------------------------------------------ per page or whole PSCID
@pytest.mark.parametrize(
    ("pages", "per_page"), [(1, True), (2, True), (511, True), (512, False), (513, False)]
)
def test_threshold_between_per_page_and_whole_pscid(
    machine: Any, pages: int, per_page: bool
) -> None:
    # Map 516 4-KiB pages from a 2 MiB boundary (the PA is offset by 4 KiB, so no 2 MiB leaf
    # is possible), unmap ``pages`` of them from the second page on: no table empties, so
    # only the range decides.
    m = machine()
    dom = m.paging("nic")
    block = m.kernel.pages.alloc_pages(10)
    base = 0x4000_0000
    m.core.map(dom, base, block + PAGE, 516 * PAGE, RW)
    start, iotinval0, fence0 = m.sent, m.driver.stats["iotinval"], m.driver.stats["iofence"]
    assert m.core.unmap(dom, base + PAGE, pages * PAGE) == pages * PAGE
    cmds = iotinvals(m.commands_since(start))
    assert m.driver.stats["iotinval"] - iotinval0 == len(cmds)
    assert m.driver.stats["iofence"] - fence0 == 1  # one IOFENCE.C for the whole batch
    assert m.commands_since(start)[-1]["op"] == "iofence"
    assert all(c["pscv"] == 1 and c["pscid"] == dom.pscid and c["gv"] == 0 for c in cmds)
    if per_page:
        assert [c["av"] for c in cmds] == [1] * pages
        assert [c["addr"] for c in cmds] == [(base >> 12) + 1 + k for k in range(pages)]
    else:
        assert len(cmds) == 1 and cmds[0]["av"] == 0
    # Either way the device lost exactly those pages.
    ep = m.ep("nic")
    assert ep.dma_read(base, 4).ok
    assert ep.dma_read(base + PAGE, 4).fault.cause == READ_PAGE_FAULT
    assert ep.dma_read(base + pages * PAGE, 4).fault.cause == READ_PAGE_FAULT
    assert ep.dma_read(base + (pages + 1) * PAGE, 4).ok


@pytest.mark.parametrize(
    ("start", "end", "n"),
    [
        (0x1800, 0x27FF, 2),  # an unaligned start still covers its page
        (0, IOTLB_INVAL_LIMIT - 2, 512),  # 2 MiB - 1 bytes: still per page
        (0, IOTLB_INVAL_LIMIT - 1, 1),  # exactly 2 MiB: whole PSCID
        (0, (1 << 64) - 1, 1),  # flush_iotlb_all
    ],
)
def test_iotlb_inval_command_count(machine: Any, start: int, end: int, n: int) -> None:
    m = machine()
    dom = m.paging("nic")
    first = m.sent
    dom.iotlb_inval(start, end)
    assert len(iotinvals(m.commands_since(first))) == n


def test_freed_table_pages_force_a_whole_pscid_flush(machine: Any) -> None:
    # Linux riscv_iommu_iotlb_sync: unlinked table pages may sit in non-leaf caches and the
    # base spec has no non-leaf range invalidation, so a gather with a freelist flushes the
    # whole PSCID however small its range.
    m = machine()
    dom = m.paging("nic")
    gather = IotlbGather()
    gather.add_page(0x5000, PAGE)
    first = m.sent
    dom.iotlb_sync(gather)
    assert [c["av"] for c in iotinvals(m.commands_since(first))] == [1]
    gather.freelist.append(m.RAM)
    first = m.sent
    dom.iotlb_sync(gather)
    cmds = iotinvals(m.commands_since(first))
    assert [(c["av"], c["pscv"], c["pscid"]) for c in cmds] == [(0, 1, dom.pscid)]
    first = m.sent
    dom.iotlb_sync(IotlbGather())  # nothing gathered: nothing to do
    assert m.commands_since(first) == []


def test_table_pages_are_released_only_after_the_fence(machine: Any) -> None:
    # Unmapping the whole span of a leaf table unlinks it; the page goes back to the
    # allocator only once IOTINVAL + IOFENCE.C completed (Linux: iommu_put_pages_list after
    # iotlb_sync), since a walker may still be reading it.
    m = machine()
    dom = m.paging("nic")
    block = m.kernel.pages.alloc_pages(10)
    base = 0x4020_0000
    m.core.map(dom, base, block + PAGE, 512 * PAGE, RW)
    free_after_map = m.kernel.pages.nr_free
    at_fence: list[int] = []
    real_sync = m.driver.sync

    def sync() -> bool:
        at_fence.append(m.kernel.pages.nr_free)
        return real_sync()

    m.driver.sync = sync
    first = m.sent
    assert m.core.unmap(dom, base, 512 * PAGE) == 512 * PAGE
    cmds = iotinvals(m.commands_since(first))
    assert [(c["av"], c["pscid"]) for c in cmds] == [(0, dom.pscid)]
    assert at_fence == [free_after_map]
    assert m.kernel.pages.nr_free > free_after_map
    assert m.ep("nic").dma_read(base, 4).fault.cause == READ_PAGE_FAULT


# ------------------------------------------------------------------ lazy mode
def test_lazy_unmap_defers_the_flush_and_exposes_the_page(machine: Any) -> None:
    # dma-iommu flush queue (reference digest 3.5): unmap clears the PTE but the IOTLB is
    # flushed only when the queue's timer (10 ms) fires; until then a stale entry still works.
    m = machine(mode="lazy")
    dev, ep = m.dev("nic"), m.ep("nic")
    cookie = m.core.dma_cookie(dev)
    assert cookie is not None and cookie.fq is not None
    buf = m.kernel.pages.alloc_page()
    iova = m.core.dma_map(dev, buf, 128, DMA_BIDIRECTIONAL)
    assert ep.dma_write(iova, b"live").ok
    first, inval0 = m.sent, m.driver.stats["iotinval"]
    m.core.dma_unmap(dev, iova, 128)
    assert m.commands_since(first) == []
    assert m.driver.stats["iotinval"] == inval0
    assert cookie.fq.pending == 1
    assert m.core.iova_to_phys(cookie.domain, iova) is None
    assert ep.dma_write(iova, b"late").ok  # the exposure window of lazy mode
    assert m.bus.read(buf, 4) == b"late"
    # The IOVA is not reused while its flush is pending.
    other = m.kernel.pages.alloc_page()
    second = m.core.dma_map(dev, other, 128, DMA_BIDIRECTIONAL)
    assert second != iova
    m.system.run_for(10_000_000)
    cmds = m.commands_since(first)
    assert [(c["op"], c.get("av"), c.get("pscid")) for c in cmds] == [
        ("iotinval", 0, cookie.domain.pscid),
        ("iofence", 0, None),
    ]
    assert cookie.fq.pending == 0
    assert cookie.fq.stats["timer_flushes"] == 1
    assert ep.dma_write(iova, b"shut").fault.cause == WRITE_PAGE_FAULT
    assert m.core.dma_map(dev, buf, 128, DMA_BIDIRECTIONAL) == iova  # released now
