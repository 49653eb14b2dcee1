"""Two-stage domains: a nesting parent (G-stage, GSCID) and a user-owned first stage nested in
it, end to end through the hardware model.

riscv-iommu: "Device-context fields" (``iohgatp``, ``fsc``, ``ta``), "Two-Stage Address
Translation" of the privileged spec, "IOMMU Page-Table cache invalidation commands"
(IOTINVAL.VMA with GV = 1, IOTINVAL.GVMA) and "Changing device directory table entry".
"""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.bits.riscv.regs import cap
from iommusim.bits.riscv.structures import DC_IOHGATP
from iommusim.errors import ApiError
from iommusim.hw.riscv.params import PRESETS
from iommusim.mem import AddressMap
from iommusim.platform.system import EndpointConfig
from iommusim.sw.core.domain import DOMAIN_NESTED, DOMAIN_UNMANAGED
from iommusim.sw.drivers.riscv.nested import RiscvNestedDomain, RiscvNestParentDomain
from iommusim.sw.iommufd.uapi import IOMMU_HWPT_ALLOC_NEST_PARENT as NEST_PARENT
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.pgtable.riscv import RiscvPageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

PAGE: Final = 4096
GUEST_RAM: Final = 0x1_0000_0000  # guest-physical base of the guest's RAM
GUEST_PAGES: Final = 16
GVA: Final = 0x40_0000
READ_PAGE_FAULT: Final = 13
READ_GUEST_PAGE_FAULT: Final = 21
RW: Final = IOMMU_READ | IOMMU_WRITE


def parent_for(m: Any, name: str = "nic") -> RiscvNestParentDomain:
    parent = m.driver.domain_alloc_paging_flags(m.dev(name), NEST_PARENT)
    assert isinstance(parent, RiscvNestParentDomain)
    return parent


def test_a_nesting_parent_attached_directly_translates_guest_physical(machine: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    parent = parent_for(m)
    assert parent.type == DOMAIN_UNMANAGED and not parent.supports_pasid
    m.core.attach_device(parent, nic)
    dc_pa = m.driver.ddt.dc_pa(nic.rid, alloc=False)
    iohgatp = m.bus.read64(dc_pa + 8)
    # "full" has Sv57x4: iohgatp.MODE 10, the GSCID, the 16 KiB-aligned root.
    assert DC_IOHGATP.decode(iohgatp) == {
        "ppn": parent.pgtable.root_pa >> 12,
        "gscid": parent.gscid,
        "mode": 10,
    }
    assert m.dc(nic.rid)[2] == 0  # fsc Bare: the device's addresses are GPAs
    host = m.kernel.pages.alloc_page()
    m.bus.write(host, b"G-stage!")
    gpa = 0x2_0000_0000
    m.core.map(parent, gpa, host, PAGE, RW)
    assert m.ep("nic").dma_read(gpa + 0, 8).data == b"G-stage!"
    start = m.sent
    m.core.unmap(parent, gpa, PAGE)
    gvma = [c for c in m.commands_since(start) if c["op"] == "iotinval" and c["func3"] == 1]
    assert gvma == [
        {
            "op": "iotinval",
            "opcode": 1,
            "func3": 1,
            "av": 1,
            "pscid": 0,
            "pscv": 0,
            "gv": 1,
            "nl": 0,
            "gscid": parent.gscid,
            "s": 0,
            "addr": gpa >> 12,
        }
    ]
    res = m.ep("nic").dma_read(gpa, 8)
    assert not res.ok and res.fault.cause == READ_GUEST_PAGE_FAULT


def _guest(m: Any, parent: RiscvNestParentDomain) -> tuple[AddressMap, PageAllocator, list[int]]:
    """The guest's RAM: GUEST_PAGES pages at GUEST_RAM, each backed by a host page the parent
    maps (so every first-stage table access goes through the G-stage)."""
    guest = AddressMap()
    hosts = []
    for i in range(GUEST_PAGES):
        host = m.kernel.pages.alloc_page()
        m.core.map(parent, GUEST_RAM + i * PAGE, host, PAGE, RW)
        guest.add(GUEST_RAM + i * PAGE, PAGE, m.bus, name=f"guest{i}", target_pa=host)
        hosts.append(host)
    return guest, PageAllocator(guest, GUEST_RAM, GUEST_PAGES * PAGE), hosts


def test_a_nested_domain_walks_the_guests_tables_through_the_g_stage(machine: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    parent = parent_for(m)
    guest, guest_pages, hosts = _guest(m, parent)
    vs = RiscvPageTable(guest, guest_pages, "sv39")  # the guest's own first stage
    data_gpa = guest_pages.alloc_page()
    guest.write(data_gpa, b"in-guest")
    vs.map(GVA, data_gpa, PAGE, RW)
    nested = m.driver.alloc_nested(parent, vs.atp(), 7)
    assert isinstance(nested, RiscvNestedDomain) and nested.type == DOMAIN_NESTED
    m.core.attach_device(nested, nic)
    tc, ta, fsc = m.dc(nic.rid)
    assert (tc & 1, fsc, ta >> 12) == (1, vs.atp(), 7)
    ep = m.ep("nic")
    assert ep.dma_read(GVA, 8).data == b"in-guest"
    # The data really sits in the host page the G-stage maps that GPA to.
    assert m.bus.read(hosts[(data_gpa - GUEST_RAM) // PAGE], 8) == b"in-guest"

    # The guest unmaps in its own table: until it asks, the IOTLB may still hold it.
    vs.unmap(GVA, PAGE, IotlbGather())
    start = m.sent
    nested.cache_invalidate(GVA)
    [inv] = [c for c in m.commands_since(start) if c["op"] == "iotinval"]
    assert (inv["func3"], inv["gv"], inv["gscid"], inv["pscv"], inv["pscid"]) == (
        0,
        1,
        parent.gscid,
        1,
        7,
    )
    assert (inv["av"], inv["addr"]) == (1, GVA >> 12)
    res = ep.dma_read(GVA, 8)
    assert not res.ok and res.fault.cause == READ_PAGE_FAULT


def test_the_parents_unmap_reaches_a_nested_device(machine: Any) -> None:
    m = machine()
    parent = parent_for(m)
    guest, guest_pages, _ = _guest(m, parent)
    vs = RiscvPageTable(guest, guest_pages, "sv39")
    data_gpa = guest_pages.alloc_page()
    vs.map(GVA, data_gpa, PAGE, RW)
    nested = m.driver.alloc_nested(parent, vs.atp(), 3)
    m.core.attach_device(nested, m.dev("nic"))
    ep = m.ep("nic")
    assert ep.dma_read(GVA, 8).ok  # fills the IOTLB with the combined translation
    m.core.unmap(parent, data_gpa, PAGE)  # the host takes the guest page away
    res = ep.dma_read(GVA, 8)
    assert not res.ok and res.fault.cause == READ_GUEST_PAGE_FAULT


def test_parent_outlives_its_nested_domains_and_gscids_come_back(machine: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    parent = parent_for(m)
    nested = m.driver.alloc_nested(parent, 0, 1)  # a Bare first stage
    assert parent.users == 1
    with pytest.raises(ApiError) as e:
        m.core.domain_free(parent)
    assert e.value.errno == errno.EBUSY
    m.core.attach_device(nested, nic)
    m.core.detach_device(nested, nic)
    m.core.domain_free(nested)
    assert parent.users == 0
    gscid = parent.gscid
    m.core.domain_free(parent)
    assert parent_for(m).gscid == gscid  # the lowest free GSCID again


@pytest.mark.parametrize(
    ("fsc", "pscid"),
    [
        (1 << 50, 1),  # a reserved fsc bit (59:44)
        (11 << 60, 1),  # iosatp.MODE 11 is no first-stage mode
        (8 << 60, 1 << 20),  # a PSCID wider than 20 bits
    ],
)
def test_bad_nested_user_data_is_einval_and_allocates_nothing(
    machine: Any, fsc: int, pscid: int
) -> None:
    m = machine()
    parent = parent_for(m)
    with pytest.raises(ApiError) as e:
        m.driver.alloc_nested(parent, fsc, pscid)
    assert e.value.errno == errno.EINVAL
    assert parent.users == 0


def test_only_a_nesting_parent_can_hold_a_nested_domain(machine: Any) -> None:
    m = machine()
    plain = m.core.domain_alloc_paging(m.dev("nic"))
    with pytest.raises(ApiError) as e:
        m.driver.alloc_nested(plain, 0, 1)
    assert e.value.errno == errno.EINVAL


def test_no_g_stage_format_is_eopnotsupp(machine: Any) -> None:
    full = PRESETS["full"]
    no_x4 = full.capabilities & ~(
        1 << cap.SV39X4 | 1 << cap.SV48X4 | 1 << cap.SV57X4 | 1 << cap.SV32X4
    )
    m = machine(params=full.with_(capabilities=no_x4))
    free_gscids = len(m.driver.gscid_ida)
    with pytest.raises(ApiError) as e:
        m.driver.domain_alloc_paging_flags(m.dev("nic"), NEST_PARENT)
    assert e.value.errno == errno.EOPNOTSUPP
    assert len(m.driver.gscid_ida) == free_gscids


def test_no_pasids_under_a_g_stage(machine: Any) -> None:
    m = machine(endpoints=(EndpointConfig("acc", 0x20, pasid_bits=8),))
    acc = m.dev("acc")
    m.core.attach_device(parent_for(m, "acc"), acc)
    other = m.core.domain_alloc_paging(acc)
    with pytest.raises(ApiError) as e:
        m.core.attach_device_pasid(other, acc, 1)
    assert e.value.errno == errno.EOPNOTSUPP


def test_an_ats_device_forgets_what_the_parent_and_the_guest_take_away(machine: Any) -> None:
    """A device with ATS caches the two-stage translation in its ATC: a G-stage unmap sends it
    an ATS.INVAL of everything (any GVA may use the GPA), a guest invalidation one of the
    guest's page (riscv-iommu: "Device Address Translation Cache invalidations")."""
    m = machine(endpoints=(EndpointConfig("acc", 0x20, ats=True),))
    acc, ep = m.dev("acc"), m.ep("acc")
    parent = parent_for(m, "acc")
    guest, guest_pages, _ = _guest(m, parent)
    vs = RiscvPageTable(guest, guest_pages, "sv39")
    pages = [guest_pages.alloc_page() for _ in range(2)]
    for i, gpa in enumerate(pages):
        guest.write(gpa, bytes([0x30 + i]) * 8)
        vs.map(GVA + i * PAGE, gpa, PAGE, RW)
    nested = m.driver.alloc_nested(parent, vs.atp(), 9)
    m.core.attach_device(nested, acc)
    assert m.driver.ats_enabled(acc) and ep.ats_enabled
    assert ep.dma_read(GVA, 8).data == b"0" * 8
    assert ep.dma_read(GVA + PAGE, 8).data == b"1" * 8
    assert ep.stats.ats_requests == 2  # both pages now sit in the ATC
    # The guest drops its second page and asks for the invalidation.
    vs.unmap(GVA + PAGE, PAGE, IotlbGather())
    invals = ep.stats.ats_invals
    nested.cache_invalidate(GVA + PAGE)
    assert ep.stats.ats_invals == invals + 1
    assert not ep.dma_read(GVA + PAGE, 8).ok
    assert ep.dma_read(GVA, 8).data == b"0" * 8  # the other page is still cached and valid
    # The host takes the first guest page away: the ATC must not keep the GVA.
    m.core.unmap(parent, pages[0], PAGE)
    assert ep.stats.ats_invals == invals + 2
    res = ep.dma_read(GVA, 8)
    assert not res.ok


def test_no_g_stage_under_a_device_with_pasids(machine: Any) -> None:
    """The other order: a device with a PASID table cannot move to a G-stage (its PDT would
    have to be found by guest-physical address); the refusal changes nothing."""
    m = machine(endpoints=(EndpointConfig("acc", 0x20, pasid_bits=8),))
    acc = m.dev("acc")
    pasid_domain = m.core.domain_alloc_paging(acc)
    m.core.attach_device_pasid(pasid_domain, acc, 1)
    parent = parent_for(m, "acc")
    before = (m.dc(acc.rid), m.sent, list(parent.bonds), acc.group.domain)
    with pytest.raises(ApiError) as e:
        m.core.attach_device(parent, acc)
    assert e.value.errno == errno.EOPNOTSUPP
    assert (m.dc(acc.rid), m.sent, list(parent.bonds), acc.group.domain) == before
    assert parent.users == 0
