"""Bad arguments to the IOMMU core and the DMA API fail with the kernel's errno and change
nothing the fuzzer's snapshot sees (memory, registers, domains, IOVA allocators, ...): the
regressions found by the robustness campaign and the state-machine fuzzer (issue 10, item 4;
tests/testsupport/swfuzz.py)."""

from __future__ import annotations

import errno

from iommusim.errors import InvalidArgument, NotFound, OutOfMemory
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.swfuzz import RAM, Rig, fails_cleanly

PAGE = 4096
RW = IOMMU_READ | IOMMU_WRITE


def test_dma_map_above_the_output_address_width_is_einval_before_any_iova() -> None:
    # Regression: the IOVA was allocated (and parked in the range cache) before the page
    # table refused the PA; a 44-bit PPN holds 56-bit physical addresses.
    for mode in ("strict", "lazy"):
        rig = Rig(mode)
        nic = rig.kernel.device("nic")
        for pa in (1 << 60, (1 << 56) - PAGE // 2, -PAGE):
            fails_cleanly(
                rig,
                InvalidArgument,
                errno.EINVAL,
                lambda r=rig, d=nic, pa=pa: r.core.dma_map(d, pa, PAGE, 0),
            )
        iova = rig.core.dma_map(nic, RAM, PAGE, DMA_BIDIRECTIONAL)
        assert rig.system.endpoint("nic").dma_read(iova, 4).ok


def test_dma_map_that_runs_out_of_table_pages_gives_the_iova_back_exactly() -> None:
    # The IOVA from the range cache goes back where it was: the allocator is unchanged.
    rig = Rig()
    nic = rig.kernel.device("nic")
    iova = rig.core.dma_map(nic, RAM, PAGE, DMA_BIDIRECTIONAL)
    rig.core.dma_unmap(nic, iova, PAGE)  # the IOVA is now in the range cache
    pages = rig.kernel.pages
    while pages.nr_free:
        pages.alloc_page()
    # 4 MiB at an unaligned PA come from the tree, below the cached page, and need
    # level-0 tables that do not exist yet.
    fails_cleanly(
        rig, OutOfMemory, errno.ENOMEM, lambda: rig.core.dma_map(nic, RAM + PAGE, 4 << 20, 0)
    )


def test_a_huge_dma_map_is_refused_without_planning_it() -> None:
    rig = Rig()
    nic = rig.kernel.device("nic")
    # 2^46 bytes at an unaligned PA would need 2^25 level-0 tables: ENOMEM once the count
    # passes the free pages, not after planning every one of them.
    fails_cleanly(
        rig, OutOfMemory, errno.ENOMEM, lambda: rig.core.dma_map(nic, RAM + PAGE, 1 << 46, 0)
    )
    # Beyond every physical address: EINVAL before any IOVA is allocated.
    fails_cleanly(
        rig, InvalidArgument, errno.EINVAL, lambda: rig.core.dma_map(nic, RAM, 1 << 62, 0)
    )


def test_every_use_of_a_freed_domain_is_enoent() -> None:
    # Regression: ModelError("page table used after destroy()") from the page-table layer.
    rig = Rig()
    core = rig.core
    nic, acc = rig.kernel.device("nic"), rig.kernel.device("acc")
    dom = core.domain_alloc_paging(nic)
    rig.domains.append(dom)
    core.domain_free(dom)
    for call in (
        lambda: core.domain_free(dom),
        lambda: core.attach_device(dom, nic),
        lambda: core.replace_group_domain(dom, nic.group),
        lambda: core.detach_device(dom, nic),
        lambda: core.map(dom, 0x10_0000, RAM, PAGE, RW),
        lambda: core.unmap(dom, 0x10_0000, PAGE),
        lambda: core.iova_to_phys(dom, 0x10_0000),
        lambda: core.attach_device_pasid(dom, acc, 1),
        lambda: core.detach_device_pasid(dom, acc, 1),
    ):
        fails_cleanly(rig, NotFound, errno.ENOENT, call)


def test_a_static_domain_cannot_be_freed() -> None:
    rig = Rig()
    drv = rig.kernel.iommu
    for dom in (drv.identity_domain, drv.blocked_domain):
        fails_cleanly(rig, InvalidArgument, errno.EINVAL, lambda d=dom: rig.core.domain_free(d))


def test_another_groups_default_domain_cannot_be_attached() -> None:
    # Found by the fuzzer: acc attached to nic's default domain, then releasing nic freed
    # that domain under acc (ModelError on acc's next dma_map).
    rig = Rig()
    nic, acc = rig.kernel.device("nic"), rig.kernel.device("acc")
    default = nic.group.default_domain
    fails_cleanly(rig, InvalidArgument, errno.EINVAL, lambda: rig.core.attach_device(default, acc))
    fails_cleanly(
        rig,
        InvalidArgument,
        errno.EINVAL,
        lambda: rig.core.replace_group_domain(default, acc.group),
    )
    rig.core.release_device(nic)
    assert rig.core.dma_map(acc, RAM, PAGE, DMA_BIDIRECTIONAL) > 0
