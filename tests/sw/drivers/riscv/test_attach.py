"""Attaching devices to the driver's domains: identity, blocked, paging; the context-update
protocol; PSCIDs and bonds.

Linux RISC-V driver (reference digest 4.1): the static identity domain is fsc = Bare with
tc.V = 1; the blocked domain is tc.V = 0 so DMA faults with cause 258; a paging domain is
first-stage translation through DC.fsc = iosatp and DC.ta.PSCID; ``iodir_update`` clears V,
invalidates (IODIR.INVAL_DDT and the old context's IOTLB), fences, writes fsc and ta and then
tc with V last, invalidates and fences again (riscv-iommu "Changing device directory table
entry").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from iommusim.bits.riscv.structures import DC_FSC, DC_TA, DC_TC
from iommusim.hw.riscv.params import PRESETS
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_DMA, DOMAIN_IDENTITY, Domain
from iommusim.sw.drivers.riscv.domain import RiscvPagingDomain
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

PAGE = 4096
RW = IOMMU_READ | IOMMU_WRITE
DDT_ENTRY_INVALID = 258
READ_PAGE_FAULT = 13
WRITE_PAGE_FAULT = 15
# iosatp.MODE encodings (riscv-iommu "First-Stage context (fsc)").
SV39, SV57 = 8, 10


def tc_v(tc: int) -> int:
    return DC_TC["v"].get(tc)


# ------------------------------------------------------------------ identity
def test_identity_domain_passes_dma_through(machine: Any) -> None:
    m = machine(mode="passthrough")
    dev = m.dev("nic")
    assert m.domain_of("nic") is m.driver.identity_domain
    assert m.domain_of("nic").type == DOMAIN_IDENTITY
    tc, ta, fsc = m.dc(dev.rid)
    assert tc_v(tc) == 1 and fsc == 0 and ta == 0
    pa = m.kernel.pages.alloc_page()
    assert m.core.dma_map(dev, pa + 8, 100, DMA_BIDIRECTIONAL) == pa + 8  # dma-direct
    ep = m.ep("nic")
    assert ep.dma_write(pa + 8, b"through").ok
    assert m.bus.read(pa + 8, 7) == b"through"
    assert ep.dma_read(pa + 8, 7).data == b"through"


def test_attaching_identity_over_a_dma_domain(machine: Any) -> None:
    m = machine()
    dev = m.dev("nic")
    dma = m.domain_of("nic")
    assert isinstance(dma, RiscvPagingDomain) and dma.type == DOMAIN_DMA
    pa = m.kernel.pages.alloc_page()
    m.bus.write(pa, b"phys")
    assert not m.ep("nic").dma_read(pa, 4).ok  # the PA is no IOVA of the DMA domain
    m.core.attach_device(m.driver.identity_domain, dev)
    assert m.ep("nic").dma_read(pa, 4).data == b"phys"
    assert dma.bonds == []


# ------------------------------------------------------------------ blocked
def test_blocked_domain_faults_every_dma_with_258(machine: Any) -> None:
    m = machine()
    dev = m.dev("nic")
    default = m.domain_of("nic")
    pa = m.kernel.pages.alloc_page()
    iova = m.core.dma_map(dev, pa, PAGE, DMA_BIDIRECTIONAL)
    ep = m.ep("nic")
    assert ep.dma_write(iova, b"before").ok
    m.core.attach_device(m.driver.blocked_domain, dev)
    assert m.domain_of("nic").type == DOMAIN_BLOCKED
    assert tc_v(m.dc(dev.rid)[0]) == 0
    # Even the translation the IOTLB held is gone (the update invalidated the old PSCID).
    assert ep.dma_write(iova, b"after!").fault.cause == DDT_ENTRY_INVALID
    assert ep.dma_read(iova, 4).fault.cause == DDT_ENTRY_INVALID
    assert m.bus.read(pa, 6) == b"before"
    # The other device is untouched.
    assert m.ep("nvme").dma_read(0x1000, 4).fault.cause == READ_PAGE_FAULT
    m.core.detach_device(m.driver.blocked_domain, dev)
    assert m.domain_of("nic") is default
    assert ep.dma_write(iova, b"again!").ok
    assert m.bus.read(pa, 6) == b"again!"


# ------------------------------------------------------------------ paging
@pytest.mark.parametrize(
    ("preset", "mode", "fmt"), [("full", SV57, "sv57"), ("minimal", SV39, "sv39")]
)
def test_paging_domain_programs_the_context(machine: Any, preset: str, mode: int, fmt: str) -> None:
    m = machine(PRESETS[preset])
    dom = m.paging("nic")
    assert dom.pgtable.fmt.name == fmt
    tc, ta, fsc = m.dc(m.dev("nic").rid)
    assert tc_v(tc) == 1
    assert DC_FSC["mode"].get(fsc) == mode
    assert DC_FSC["ppn"].get(fsc) << 12 == dom.pgtable.root_pa
    assert DC_TA["pscid"].get(ta) == dom.pscid
    # Linux keeps the aperture to the lower half: IOVAs are not sign-extended.
    assert dom.aperture_end == (1 << (dom.pgtable.fmt.va_bits - 1)) - 1


def test_paging_domain_translates_mapped_pages_and_faults_the_rest(machine: Any) -> None:
    m = machine()
    dom = m.paging("nic")
    ep = m.ep("nic")
    pa = m.kernel.pages.alloc_pages(1)
    m.core.map(dom, 0x40_0000, pa, PAGE, RW)
    m.core.map(dom, 0x40_1000, pa + PAGE, PAGE, IOMMU_READ)
    m.bus.write(pa + PAGE, b"read-only")
    assert ep.dma_write(0x40_0010, b"hello").ok
    assert m.bus.read(pa + 0x10, 5) == b"hello"
    assert ep.dma_read(0x40_1000, 9).data == b"read-only"
    # riscv-iommu "Faults from virtual address translation process": 13 read, 15 write.
    w = ep.dma_write(0x40_1000, b"nope")
    assert (w.fault.cause, w.fault_iova, w.done) == (WRITE_PAGE_FAULT, 0x40_1000, 0)
    assert m.bus.read(pa + PAGE, 9) == b"read-only"
    assert ep.dma_read(0x40_2000, 4).fault.cause == READ_PAGE_FAULT
    assert ep.dma_write(0x40_2000, b"x").fault.cause == WRITE_PAGE_FAULT
    assert m.core.iova_to_phys(dom, 0x40_0123) == pa + 0x123
    assert m.core.iova_to_phys(dom, 0x40_2000) is None


def test_pscids_are_distinct_and_recycled(machine: Any) -> None:
    # Linux: one global IDA over [1, 2^20 - 1]; freed with the domain.
    m = machine()
    defaults = {m.domain_of("nic").pscid, m.domain_of("nvme").pscid}
    assert defaults == {1, 2}
    doms = [m.core.domain_alloc_paging(m.dev("nic")) for _ in range(3)]
    assert [d.pscid for d in doms] == [3, 4, 5]
    m.core.domain_free(doms[1])
    assert 4 not in m.driver.pscid_ida
    assert m.core.domain_alloc_paging(m.dev("nic")).pscid == 4


def test_freeing_a_domain_returns_its_table_pages(machine: Any) -> None:
    m = machine()
    free = m.kernel.pages.nr_free
    dom = m.core.domain_alloc_paging(m.dev("nic"))
    m.core.map(dom, 0x1000, m.RAM, PAGE, RW)
    m.core.map(dom, 1 << 40, m.RAM, PAGE, RW)
    assert m.kernel.pages.nr_free < free - 1
    m.core.domain_free(dom)
    assert m.kernel.pages.nr_free == free


# ------------------------------------------------------------------ context-update protocol
class WatchingMemory:
    """Forwards to ``inner``; after every store that touches ``[lo, hi)`` calls ``hook()``."""

    def __init__(self, inner: PhysicalMemory, lo: int, hi: int, hook: Callable[[], None]) -> None:
        self.inner, self.lo, self.hi, self.hook = inner, lo, hi, hook

    def _after(self, pa: int, size: int) -> None:
        if pa < self.hi and self.lo < pa + size:
            self.hook()

    def read(self, pa: int, size: int) -> bytes:
        return self.inner.read(pa, size)

    def read32(self, pa: int) -> int:
        return self.inner.read32(pa)

    def read64(self, pa: int) -> int:
        return self.inner.read64(pa)

    def write(self, pa: int, data: bytes) -> None:
        self.inner.write(pa, data)
        self._after(pa, len(data))

    def write32(self, pa: int, value: int) -> None:
        self.inner.write32(pa, value)
        self._after(pa, 4)

    def write64(self, pa: int, value: int) -> None:
        self.inner.write64(pa, value)
        self._after(pa, 8)

    def cas64(self, pa: int, expected: int, new: int) -> int:
        old = self.inner.cas64(pa, expected, new)
        self._after(pa, 8)
        return old


TRANSITIONS = [
    "dma->paging",
    "paging->paging",
    "paging->identity",
    "identity->blocked",
    "blocked->paging",
]


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_context_update_is_old_or_new_at_every_store(machine: Any, transition: str) -> None:
    # After the SMMUv3 KUnit test: record the device context at every store the driver makes
    # to it and check that whenever tc.V is 1 the fields the IOMMU uses (ta, fsc) are all old
    # or all new. A DMA racing with each store sees the old mapping, the new one, or cause 258
    # -- never anything else (riscv-iommu "Changing device directory table entry").
    m = machine()
    dev, ep = m.dev("nic"), m.ep("nic")
    # One bus address for every domain: the identity domain reaches the page at that PA,
    # each paging domain maps the address to a page of its own.
    addr = m.kernel.pages.alloc_page()
    m.bus.write(addr, b"IDENTITY")

    def map_tagged(d: Domain, tag: bytes) -> Domain:
        pa = m.kernel.pages.alloc_page()
        m.bus.write(pa, tag)
        m.core.map(d, addr, pa, PAGE, RW)
        return d

    map_tagged(m.domain_of("nic"), b"DMA-PAGE")
    identity, blocked = m.driver.identity_domain, m.driver.blocked_domain
    first, second = transition.split("->")
    doms = {"identity": identity, "blocked": blocked}
    if first != "dma":
        start = doms.get(first) or map_tagged(m.core.domain_alloc_paging(dev), b"OLD-PAGE")
        m.core.attach_device(start, dev)
    target = doms.get(second) or map_tagged(m.core.domain_alloc_paging(dev), b"NEW-PAGE")

    def outcome() -> bytes | int:
        res = ep.dma_read(addr, 8)
        return res.data if res.ok else res.fault.cause

    before = outcome()
    old_fields = m.dc(dev.rid)
    snapshots: list[tuple[int, int, int]] = []
    seen: list[bytes | int] = []
    dc_pa = m.driver.ddt.dc_pa(dev.rid)

    def on_store() -> None:
        snapshots.append(m.dc(dev.rid))
        seen.append(outcome())

    m.driver.mem = WatchingMemory(m.driver.mem, dc_pa, dc_pa + 64, on_store)
    m.core.replace_group_domain(target, dev.group)
    new_fields = m.dc(dev.rid)
    after = outcome()
    assert (
        after
        == {"paging": b"NEW-PAGE", "identity": b"IDENTITY", "blocked": DDT_ENTRY_INVALID}[second]
    )
    assert (
        before
        == {
            "dma": b"DMA-PAGE",
            "paging": b"OLD-PAGE",
            "identity": b"IDENTITY",
            "blocked": DDT_ENTRY_INVALID,
        }[first]
    )
    assert snapshots, "the driver never wrote the device context"
    for tc, ta, fsc in snapshots:
        if tc_v(tc):
            assert (ta, fsc) in {old_fields[1:], new_fields[1:]}
    # tc (with V) is the last store: the context becomes valid only when complete.
    assert snapshots[-1] == new_fields
    # Valid -> valid transitions pass through an invalid context.
    if tc_v(old_fields[0]) and tc_v(new_fields[0]):
        assert any(not tc_v(s[0]) for s in snapshots)
    assert set(seen) <= {before, after, DDT_ENTRY_INVALID}, seen


def test_update_commands_follow_the_spec_sequence(machine: Any) -> None:
    # Moving from paging domain A to B: V cleared, IODIR.INVAL_DDT(DID), IOTINVAL.VMA(PSCID A),
    # IOFENCE.C; new context, IODIR.INVAL_DDT(DID), IOFENCE.C; then A's last bond goes and
    # A's PSCID is flushed once more (Linux riscv_iommu_bond_unlink).
    m = machine()
    dev = m.dev("nic")
    a = m.paging("nic")
    b = m.core.domain_alloc_paging(dev)
    start = m.sent
    m.core.replace_group_domain(b, dev.group)
    cmds = m.commands_since(start)
    summary = [(c["op"], c.get("did"), c.get("dv"), c.get("pscid"), c.get("pscv")) for c in cmds]
    rid = dev.rid
    assert summary == [
        ("iodir", rid, 1, None, None),
        ("iotinval", None, None, a.pscid, 1),
        ("iofence", None, None, None, None),
        ("iodir", rid, 1, None, None),
        ("iofence", None, None, None, None),
        ("iotinval", None, None, a.pscid, 1),
        ("iofence", None, None, None, None),
    ]
    assert a.bonds == [] and b.bonds == [(m.driver, dev, None)]


def test_leaving_identity_flushes_all_translations(machine: Any) -> None:
    # The old context had fsc = Bare: its IOTLB entries carry no PSCID, so the driver
    # invalidates globally (Linux iodir_update, HEAD side).
    m = machine(mode="passthrough")
    dev = m.dev("nic")
    b = m.core.domain_alloc_paging(dev)
    start = m.sent
    m.core.attach_device(b, dev)
    inval = [c for c in m.commands_since(start) if c["op"] == "iotinval"]
    assert len(inval) == 1
    assert (inval[0]["pscv"], inval[0]["gv"], inval[0]["av"]) == (0, 0, 0)


def test_bonds_and_last_unlink(machine: Any) -> None:
    # Two groups on one domain: one bond per device; the IOTLB of the domain is flushed when
    # the last device on this IOMMU leaves, not before.
    m = machine()
    nic, nvme = m.dev("nic"), m.dev("nvme")
    shared = m.core.domain_alloc_paging(nic)
    m.core.attach_device(shared, nic)
    m.core.attach_device(shared, nvme)
    assert shared.bonds == [(m.driver, nic, None), (m.driver, nvme, None)]
    pa = m.kernel.pages.alloc_page()
    m.core.map(shared, 0x9000, pa, PAGE, RW)
    assert m.ep("nic").dma_write(0x9000, b"n").ok
    assert m.ep("nvme").dma_read(0x9000, 1).data == b"n"
    # One invalidation per IOMMU, however many devices are bonded.
    start = m.sent
    m.core.unmap(shared, 0x9000, PAGE)
    assert [c["op"] for c in m.commands_since(start)] == ["iotinval", "iofence"]
    start = m.sent
    m.core.detach_device(shared, nic)
    flushes = [
        c
        for c in m.commands_since(start)
        if c["op"] == "iotinval" and c["pscid"] == shared.pscid and c["pscv"]
    ]
    assert len(flushes) == 1  # the old context's invalidation only; nvme is still bonded
    start = m.sent
    m.core.detach_device(shared, nvme)
    flushes = [
        c
        for c in m.commands_since(start)
        if c["op"] == "iotinval" and c["pscid"] == shared.pscid and c["pscv"]
    ]
    assert len(flushes) == 2  # the context's, then bond_unlink of the last device
    assert shared.bonds == []
    start = m.sent
    shared.iotlb_inval(0, PAGE - 1)
    assert m.commands_since(start) == []  # nothing bonded: nothing to invalidate
