"""Dirty tracking by the RISC-V driver, end to end through the hardware model: the device's
writes set D bits in the page tables in memory, the driver reads and cleans them.

riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates" (with
``capabilities.AMO_HWAD``), "Translation control (tc)" (``SADE``: first-stage A/D updates,
``GADE``: G-stage; with the bit 0 a store through a clean leaf page-faults), "Process to
translate an IOVA" (its first- and second-stage steps update A/D as the privileged spec
says), "Accessed (A)/Dirty (D) bit updates and page promotions" (software that clears D must
invalidate the cached entries, or the IOMMU may not set it again) and "Device-context
configuration checks" (SADE/GADE are reserved without AMO_HWAD).
"""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.structures import DC_TC
from iommusim.errors import ApiError
from iommusim.hw.riscv.params import PRESETS
from iommusim.mem import AddressMap
from iommusim.platform.system import EndpointConfig
from iommusim.sw.core.ops import CAP_DIRTY_TRACKING
from iommusim.sw.drivers.riscv.domain import RiscvPagingDomain
from iommusim.sw.drivers.riscv.nested import RiscvNestParentDomain
from iommusim.sw.iommufd import uapi
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.riscv import RiscvPageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

PAGE: Final = 4096
HUGE: Final = 2 << 20
IOVA: Final = 0x10_0000
SP_IOVA: Final = 0x40_0000  # a 2 MiB superpage
RW: Final = IOMMU_READ | IOMMU_WRITE
DIRTY: Final = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
NEST_PARENT: Final = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
_D: Final = PTE.mask("d")
_A: Final = PTE.mask("a")
_SADE: Final = DC_TC.mask("sade")
_GADE: Final = DC_TC.mask("gade")
STORE_PAGE_FAULT: Final = 15
GUEST_RAM: Final = 0x1_0000_0000
GUEST_PAGES: Final = 16
GVA: Final = 0x40_0000


def pte_pa(m: Any, domain: RiscvPagingDomain, iova: int) -> int:
    """Where the leaf PTE mapping ``iova`` lives (a software walk of any RISC-V format,
    the x4 G-stage's wider root included)."""
    pt = domain.pgtable.pt
    table = domain.pgtable.root_pa
    for level in range(pt.levels - 1, -1, -1):
        pa = table + ((iova >> pt.level_shift(level)) & pt.index_mask(level)) * 8
        pte = m.bus.read64(pa)
        assert pte & pt.valid_mask, f"no mapping at {iova:#x}"
        if pt.is_leaf(pte):
            return pa
        table = pt.oa_of(pte)
    raise AssertionError("walk ran past level 0")


def pte(m: Any, domain: RiscvPagingDomain, iova: int) -> int:
    return int(m.bus.read64(pte_pa(m, domain, iova)))


def dirty_domain(m: Any, name: str = "nic") -> RiscvPagingDomain:
    domain = m.driver.domain_alloc_paging_flags(m.dev(name), DIRTY)
    assert isinstance(domain, RiscvPagingDomain) and domain.dirty_ops
    return domain


def mapped(m: Any) -> RiscvPagingDomain:
    """A dirty-tracking domain attached to the NIC with a 4 KiB page at IOVA and a 2 MiB
    superpage at SP_IOVA, both read-write, and a read-only page after the first."""
    domain = dirty_domain(m)
    m.core.attach_device(domain, m.dev("nic"))
    m.core.map(domain, IOVA, m.kernel.pages.alloc_page(), PAGE, RW)
    m.core.map(domain, IOVA + PAGE, m.kernel.pages.alloc_page(), PAGE, IOMMU_READ)
    m.core.map(domain, SP_IOVA, m.kernel.pages.alloc_pages(9), HUGE, RW)
    return domain


def read_dirty(domain: RiscvPagingDomain, no_clear: bool = False) -> list[tuple[int, int]]:
    got: list[tuple[int, int]] = []
    domain.read_and_clear_dirty(0, 1 << 32, no_clear, lambda iova, n: got.append((iova, n)))
    return got


def test_capable_dirty_tracking_exactly_with_amo_hwad(machine: Any) -> None:
    for preset, want in (("full", True), ("linux-virt", True), ("minimal", False)):
        m = machine(PRESETS[preset])
        assert m.driver.capable(m.dev("nic"), CAP_DIRTY_TRACKING) is want, preset


def test_leaves_keep_a_and_d_preset_while_tracking_is_off(machine: Any) -> None:
    # With SADE 0 a store through a leaf whose D is 0 is a page fault ("Translation control
    # (tc)"), so the leaves are written dirty until tracking is turned on.
    m = machine()
    domain = mapped(m)
    assert m.dc(0x08)[0] & (_SADE | _GADE) == 0
    assert pte(m, domain, IOVA) & (_A | _D) == _A | _D
    assert pte(m, domain, IOVA + PAGE) & (_A | _D) == _A  # read-only: never dirty
    assert m.ep("nic").dma_write(IOVA, b"x").ok
    assert read_dirty(domain) == []  # nothing is tracked while off


def test_a_device_write_sets_d_and_read_and_clear_reports_each_leaf_with_its_size(
    machine: Any,
) -> None:
    m = machine()
    domain = mapped(m)
    ep = m.ep("nic")
    assert ep.dma_write(IOVA, b"warm").ok  # an IOTLB entry from before tracking
    domain.set_dirty_tracking(True)
    assert m.dc(0x08)[0] & _SADE
    # Turning tracking on cleans every leaf (a clean snapshot).
    for iova in (IOVA, IOVA + PAGE, SP_IOVA):
        assert pte(m, domain, iova) & (_A | _D) == _A
    assert read_dirty(domain) == []

    assert ep.dma_write(IOVA + 8, b"dirty").ok
    assert ep.dma_read(IOVA + PAGE, 4).ok  # a read sets no D
    assert ep.dma_write(SP_IOVA + 0x12_3000, b"huge").ok
    # The hardware model set D in the PTEs in memory.
    assert pte(m, domain, IOVA) & _D
    assert not pte(m, domain, IOVA + PAGE) & _D
    assert pte(m, domain, SP_IOVA) & _D

    start = m.sent
    assert read_dirty(domain) == [(IOVA, PAGE), (SP_IOVA, HUGE)]
    assert not pte(m, domain, IOVA) & _D and not pte(m, domain, SP_IOVA) & _D
    sent = m.commands_since(start)
    inv = [c for c in sent if c["op"] == "iotinval"]
    # The gathered range passes 2 MiB: one IOTINVAL.VMA of the whole PSCID, then the fence.
    assert [(c["func3"], c["gv"], c["pscv"], c["pscid"], c["av"]) for c in inv] == [
        (0, 0, 1, domain.pscid, 0)
    ]
    assert sent[-1]["op"] == "iofence"
    assert read_dirty(domain) == []

    # After the invalidation the next write walks the table again and sets D again.
    assert ep.dma_write(IOVA, b"again").ok
    assert read_dirty(domain) == [(IOVA, PAGE)]


def test_a_single_page_is_invalidated_by_address(machine: Any) -> None:
    m = machine()
    domain = mapped(m)
    domain.set_dirty_tracking(True)
    assert m.ep("nic").dma_write(IOVA, b"x").ok
    start = m.sent
    assert read_dirty(domain) == [(IOVA, PAGE)]
    inv = [c for c in m.commands_since(start) if c["op"] == "iotinval"]
    assert [(c["func3"], c["pscid"], c["av"], c["addr"]) for c in inv] == [
        (0, domain.pscid, 1, IOVA >> 12)
    ]


def test_without_the_invalidation_a_cached_dirty_translation_skips_the_d_update(
    machine: Any,
) -> None:
    # Why read_and_clear_dirty invalidates: "If such invalidations are not performed, then
    # the IOMMU may not set these bits when processing subsequent transactions".
    m = machine()
    domain = mapped(m)
    domain.set_dirty_tracking(True)
    ep = m.ep("nic")
    assert ep.dma_write(IOVA, b"x").ok
    pa = pte_pa(m, domain, IOVA)
    m.bus.write64(pa, m.bus.read64(pa) & ~_D)  # cleared behind the IOMMU's back
    assert ep.dma_write(IOVA, b"y").ok
    assert not m.bus.read64(pa) & _D  # the IOTLB hit let the write through


def test_no_clear_reports_and_keeps_d_without_invalidating(machine: Any) -> None:
    m = machine()
    domain = mapped(m)
    domain.set_dirty_tracking(True)
    assert m.ep("nic").dma_write(SP_IOVA, b"x").ok
    start = m.sent
    assert read_dirty(domain, no_clear=True) == [(SP_IOVA, HUGE)]
    assert pte(m, domain, SP_IOVA) & _D
    assert m.sent == start
    assert read_dirty(domain) == [(SP_IOVA, HUGE)]
    assert read_dirty(domain) == []


def test_a_range_reports_the_leaves_it_touches(machine: Any) -> None:
    m = machine()
    domain = mapped(m)
    domain.set_dirty_tracking(True)
    ep = m.ep("nic")
    assert ep.dma_write(IOVA, b"x").ok and ep.dma_write(SP_IOVA + HUGE - 8, b"y").ok
    got: list[tuple[int, int]] = []
    # A range inside the superpage reports the whole leaf; the 4 KiB page stays dirty.
    domain.read_and_clear_dirty(SP_IOVA + PAGE, PAGE, False, lambda i, n: got.append((i, n)))
    assert got == [(SP_IOVA, HUGE)]
    assert pte(m, domain, IOVA) & _D
    with pytest.raises(ApiError) as e:
        domain.read_and_clear_dirty(IOVA + 1, PAGE, False, lambda i, n: None)
    assert e.value.errno == errno.EINVAL
    assert pte(m, domain, IOVA) & _D


def test_maps_while_tracking_start_clean_and_turning_it_off_marks_leaves_dirty(
    machine: Any,
) -> None:
    m = machine()
    domain = mapped(m)
    domain.set_dirty_tracking(True)
    late = 0x80_0000
    m.core.map(domain, late, m.kernel.pages.alloc_page(), PAGE, RW)
    assert pte(m, domain, late) & (_A | _D) == _A
    ep = m.ep("nic")
    assert ep.dma_write(late, b"x").ok
    assert read_dirty(domain) == [(late, PAGE)]

    domain.set_dirty_tracking(False)
    assert m.dc(0x08)[0] & _SADE == 0
    # Every writable leaf is dirty again, so no store faults with SADE 0; reads stay clean.
    for iova in (IOVA, SP_IOVA, late):
        assert pte(m, domain, iova) & _D
    assert not pte(m, domain, IOVA + PAGE) & _D
    for iova in (IOVA, SP_IOVA, late):
        assert ep.dma_write(iova, b"z").ok
    assert read_dirty(domain) == []
    m.core.map(domain, late + PAGE, m.kernel.pages.alloc_page(), PAGE, RW)
    assert pte(m, domain, late + PAGE) & _D
    domain.set_dirty_tracking(False)  # already off: nothing changes
    assert m.dc(0x08)[0] & _SADE == 0


def test_a_device_attached_later_gets_the_current_state(machine: Any) -> None:
    m = machine()
    domain = mapped(m)
    domain.set_dirty_tracking(True)
    m.core.attach_device(domain, m.dev("nvme"))
    assert m.dc(0x10)[0] & _SADE
    assert m.ep("nvme").dma_write(SP_IOVA, b"nvme").ok
    assert read_dirty(domain) == [(SP_IOVA, HUGE)]
    # Going back to the default (DMA) domain, which does not track, takes SADE away again.
    m.core.detach_device(domain, m.dev("nic"))
    assert m.dc(0x08)[0] & _SADE == 0 and m.dc(0x10)[0] & _SADE


def test_a_domain_without_dirty_ops_has_no_dirty_tracking(machine: Any) -> None:
    m = machine()
    plain = m.paging("nic")
    assert not plain.dirty_ops
    with pytest.raises(ApiError) as e:
        plain.set_dirty_tracking(True)
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(ApiError) as e:
        plain.read_and_clear_dirty(0, PAGE, False, lambda i, n: None)
    assert e.value.errno == errno.EOPNOTSUPP
    assert m.dc(0x08)[0] & _SADE == 0


@pytest.mark.parametrize(
    ("preset", "flags"),
    [
        ("minimal", DIRTY),  # no capabilities.AMO_HWAD: SADE/GADE are reserved
        ("minimal", DIRTY | NEST_PARENT),
        ("full", DIRTY | uapi.IOMMU_HWPT_ALLOC_PASID),  # SADE is the whole device's
    ],
)
def test_dirty_tracking_allocations_the_iommu_cannot_honour_are_eopnotsupp(
    machine: Any, preset: str, flags: int
) -> None:
    m = machine(PRESETS[preset])
    nic = m.dev("nic")
    ids = (m.driver.pscid_ida.alloc(), m.driver.gscid_ida.alloc())
    for ida, n in zip((m.driver.pscid_ida, m.driver.gscid_ida), ids, strict=True):
        ida.free(n)
    with pytest.raises(ApiError) as e:
        m.driver.domain_alloc_paging_flags(nic, flags)
    assert e.value.errno == errno.EOPNOTSUPP
    # Nothing was taken: the next tags are the ones free before.
    assert (m.driver.pscid_ida.alloc(), m.driver.gscid_ida.alloc()) == ids


def _guest(m: Any, parent: RiscvNestParentDomain) -> tuple[AddressMap, PageAllocator]:
    """The guest's RAM: GUEST_PAGES pages at GUEST_RAM, each a host page the parent maps."""
    guest = AddressMap()
    for i in range(GUEST_PAGES):
        host = m.kernel.pages.alloc_page()
        m.core.map(parent, GUEST_RAM + i * PAGE, host, PAGE, RW)
        guest.add(GUEST_RAM + i * PAGE, PAGE, m.bus, name=f"guest{i}", target_pa=host)
    return guest, PageAllocator(guest, GUEST_RAM, GUEST_PAGES * PAGE)


def test_a_nesting_parent_tracks_the_guest_physical_pages_a_nested_device_writes(
    machine: Any,
) -> None:
    m = machine()
    nic = m.dev("nic")
    parent = m.driver.domain_alloc_paging_flags(nic, NEST_PARENT | DIRTY)
    assert isinstance(parent, RiscvNestParentDomain) and parent.dirty_ops
    guest, guest_pages = _guest(m, parent)
    vs = RiscvPageTable(guest, guest_pages, "sv39")  # the guest's own first stage
    data_gpa = guest_pages.alloc_page()
    vs.map(GVA, data_gpa, PAGE, RW)
    vs.map(GVA + PAGE, guest_pages.alloc_page(), PAGE, RW)
    nested = m.driver.alloc_nested(parent, vs.atp(), 7)
    m.core.attach_device(nested, nic)
    assert m.dc(nic.rid)[0] & (_SADE | _GADE) == 0
    ep = m.ep("nic")
    assert ep.dma_write(GVA, b"before").ok

    parent.set_dirty_tracking(True)
    # GADE (not SADE: the guest's first stage is the guest's own) in the nested device's DC.
    assert m.dc(nic.rid)[0] & (_SADE | _GADE) == _GADE
    assert read_dirty_gpa(parent) == []
    assert ep.dma_write(GVA + 16, b"guest write").ok
    assert ep.dma_read(GVA + PAGE, 4).ok
    assert pte(m, parent, data_gpa) & _D
    start = m.sent
    # Exactly the guest-physical page written (the guest's table pages were only read).
    assert read_dirty_gpa(parent) == [(data_gpa, PAGE)]
    assert not pte(m, parent, data_gpa) & _D
    sent = m.commands_since(start)
    inv = [c for c in sent if c["op"] == "iotinval"]
    assert [(c["func3"], c["gscid"], c["av"], c["addr"]) for c in inv] == [
        (1, parent.gscid, 1, data_gpa >> 12)
    ]
    assert sent[-1]["op"] == "iofence"
    # The GVMA dropped the combined entry: the next write marks the page again.
    assert ep.dma_write(GVA, b"again").ok
    assert read_dirty_gpa(parent) == [(data_gpa, PAGE)]

    parent.set_dirty_tracking(False)
    assert m.dc(nic.rid)[0] & _GADE == 0
    assert ep.dma_write(GVA, b"off").ok


def test_a_device_on_the_parent_itself_writes_guest_physical_pages(machine: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    parent = m.driver.domain_alloc_paging_flags(nic, NEST_PARENT | DIRTY)
    assert isinstance(parent, RiscvNestParentDomain)
    parent.set_dirty_tracking(True)
    m.core.attach_device(parent, nic)  # attached after: gets GADE
    assert m.dc(nic.rid)[0] & (_SADE | _GADE) == _GADE
    m.core.map(parent, GUEST_RAM, m.kernel.pages.alloc_pages(9), HUGE, RW)
    assert pte(m, parent, GUEST_RAM) & (_A | _D) == _A
    assert m.ep("nic").dma_write(GUEST_RAM + 0x1000, b"gpa").ok
    assert read_dirty_gpa(parent) == [(GUEST_RAM, HUGE)]


def read_dirty_gpa(parent: RiscvNestParentDomain) -> list[tuple[int, int]]:
    got: list[tuple[int, int]] = []
    parent.read_and_clear_dirty(GUEST_RAM, 16 << 20, False, lambda i, n: got.append((i, n)))
    return got


def test_a_device_with_a_process_directory_gets_sade_in_its_device_context(
    machine: Any,
) -> None:
    # With PASIDs the RID's translation moves to process context 0 (tc.DPE), but SADE is
    # still the device context's: it covers every first stage of the device.
    m = machine(endpoints=(EndpointConfig("acc", 0x20, pasid_bits=8),))
    acc = m.dev("acc")
    other = m.core.domain_alloc_paging(acc)
    m.core.attach_device_pasid(other, acc, 1)
    domain = dirty_domain(m, "acc")
    m.core.attach_device(domain, acc)
    tc = m.dc(0x20)[0]
    assert tc & DC_TC.mask("pdtv") and not tc & _SADE
    m.core.map(domain, IOVA, m.kernel.pages.alloc_page(), PAGE, RW)
    m.core.map(other, IOVA, m.kernel.pages.alloc_page(), PAGE, RW)
    domain.set_dirty_tracking(True)
    assert m.dc(0x20)[0] & (DC_TC.mask("pdtv") | _SADE) == DC_TC.mask("pdtv") | _SADE
    ep = m.ep("acc")
    assert ep.dma_write(IOVA, b"rid").ok
    assert ep.dma_write(IOVA, b"pasid", pasid=1).ok  # A/D preset there: nothing to update
    assert read_dirty(domain) == [(IOVA, PAGE)]
    # A dirty-tracking domain serves no PASID (SADE could not follow it).
    with pytest.raises(ApiError) as e:
        m.core.attach_device_pasid(domain, acc, 2)
    assert e.value.errno == errno.EOPNOTSUPP
    domain.set_dirty_tracking(False)
    assert m.dc(0x20)[0] & _SADE == 0
    assert ep.dma_write(IOVA, b"rid").ok and ep.dma_write(IOVA, b"pasid", pasid=1).ok


@pytest.mark.parametrize("enable", [True, False])
def test_a_failed_context_update_leaves_tracking_as_it_was(
    machine: Any, monkeypatch: pytest.MonkeyPatch, enable: bool
) -> None:
    m = machine()
    domain = mapped(m)
    m.core.attach_device(domain, m.dev("nvme"))
    if not enable:
        domain.set_dirty_tracking(True)
    real = m.driver.set_ad_update
    nvme = m.dev("nvme")

    def failing(dev: Any, ade: int) -> None:
        if dev is nvme:
            raise ApiError("the command queue is stuck")
        real(dev, ade)

    monkeypatch.setattr(m.driver, "set_ad_update", failing)
    before = (m.dc(0x08)[0], m.dc(0x10)[0], pte(m, domain, IOVA))
    with pytest.raises(ApiError):
        domain.set_dirty_tracking(enable)
    assert domain.dirty_tracking is not enable
    assert domain.pgtable.track_dirty is not enable
    assert (m.dc(0x08)[0], m.dc(0x10)[0]) == before[:2]
    if enable:
        assert pte(m, domain, IOVA) == before[2]  # nothing cleaned


def test_a_device_with_ats_has_its_atc_invalidated_too(machine: Any) -> None:
    # An ATS Translation Request for write permission makes the IOMMU set D (the device
    # may write through its ATC later without asking), so cleaning D must reach the ATC:
    # ATS.INVAL after the IOTLB invalidation ("Device Address Translation Cache
    # invalidations"), or the device's next write would leave D clear.
    m = machine(endpoints=(EndpointConfig("nic", 0x08, ats=True),))
    domain = mapped(m)
    domain.set_dirty_tracking(True)
    ep = m.ep("nic")
    assert ep.dma_write(IOVA, b"x").ok and ep.stats.translated == 1  # through the ATC
    start = m.sent
    assert read_dirty(domain) == [(IOVA, PAGE)]
    ops = [c["op"] for c in m.commands_since(start)]
    assert ops == ["iotinval", "ats", "iofence"]
    assert ep.stats.atc_dropped == 1
    requests = ep.stats.ats_requests
    assert ep.dma_write(IOVA, b"y").ok  # the ATC asks again: D is set again
    assert ep.stats.ats_requests == requests + 1
    assert read_dirty(domain) == [(IOVA, PAGE)]
