"""Binding devices to processes: PASIDs, process contexts, the kernel's errors.

riscv-iommu: "Process-directory-table (PDT)", "Process-context fields", "Changing process
directory table entry"; Linux iommu-sva.c for the PASID rules and errnos.
"""

from __future__ import annotations

import errno

import pytest
from tests.sw.sva.conftest import SvaMachine

from iommusim.bits.riscv.structures import DC_TC, PC_TA
from iommusim.errors import ApiError, Busy, InvalidArgument
from iommusim.hw.riscv.transaction import Request
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE
from iommusim.sw.pgtable.riscv import riscv_atp

RW = PROT_READ | PROT_WRITE
PAGE = 4096


def tc_of(dc: bytes) -> dict[str, int]:
    return DC_TC.decode(int.from_bytes(dc[:8], "little"))


def pc_of(m: SvaMachine, name: str, pasid: int) -> tuple[int, int]:
    st = m.driver._devs[m.dev(name).rid]
    assert st.pdt is not None
    pa = st.pdt.pc_pa(pasid, alloc=False)
    assert pa is not None
    return m.system.bus.read64(pa), m.system.bus.read64(pa + 8)


def test_bind_writes_a_process_context_for_the_mm(m: SvaMachine) -> None:
    mm = m.kernel.new_process("p")
    h = m.sva.bind(m.dev("acc"), mm)
    assert h.pasid == 1 and mm.pasid == 1
    tc = tc_of(m.dc("acc"))
    # Device context: PDT with DPE (RID traffic through PC 0), ATS, PRI with PRPR.
    assert (tc["v"], tc["pdtv"], tc["dpe"], tc["en_ats"], tc["en_pri"], tc["prpr"]) == (
        1,
        1,
        1,
        1,
        1,
        1,
    )
    ta, fsc = pc_of(m, "acc", 1)
    f = PC_TA.decode(ta)
    assert (f["v"], f["ens"], f["sum"]) == (1, 0, 0)
    assert f["pscid"] == h.domain.pscid != 0  # type: ignore[attr-defined]
    assert fsc == riscv_atp(mm.table())
    assert m.ep("acc").pri_enabled and m.ep("acc").ats_enabled


def test_the_iommu_walks_the_process_page_table(m: SvaMachine) -> None:
    """A translation request with the PASID resolves through the PC to the CPU's PTE."""
    mm = m.kernel.new_process("p")
    va = mm.mmap(4 * PAGE, RW, populate=True)
    h = m.sva.bind(m.dev("acc"), mm)
    resp = m.system.iommu.translate(
        Request(0x10, va + 0x123, at=2, pid_valid=True, process_id=h.pasid, no_write=False)
    )
    # U in a completion is PCIe "untranslated access only", not the PTE's U bit.
    assert resp.ok and resp.r and resp.w and not resp.u and not resp.priv
    assert resp.ppn << 12 == mm.translate(va) & ~0xFFF


def test_rid_dma_keeps_working_across_the_pdt_conversion(m: SvaMachine) -> None:
    """The DMA domain moves from DC.fsc to PC 0 when the first PASID is attached."""
    dev, ep = m.dev("acc"), m.ep("acc")
    pa = m.kernel.pages.alloc_page()
    iova = m.core.dma_map(dev, pa, PAGE, 0)
    assert ep.dma_write(iova, b"before").ok
    h = m.sva.bind(dev, m.kernel.new_process("p"))
    assert ep.dma_read(iova, 6).data == b"before"
    assert ep.dma_write(iova, b"during").ok
    m.sva.unbind(h)
    assert ep.dma_read(iova, 6).data == b"during"
    m.core.dma_unmap(dev, iova, PAGE)
    assert not ep.dma_read(iova, 6).ok  # the unmap reached the device's ATC too


def test_one_pasid_per_process_shared_by_its_devices(m: SvaMachine) -> None:
    p, q = m.kernel.new_process("p"), m.kernel.new_process("q")
    hp = m.sva.bind(m.dev("acc"), p)
    hp2 = m.sva.bind(m.dev("acc2"), p)
    hq = m.sva.bind(m.dev("acc"), q)
    assert (hp.pasid, hp2.pasid, hq.pasid) == (1, 1, 2)
    assert hp.domain is hp2.domain is not hq.domain  # one SVA domain per mm per IOMMU
    again = m.sva.bind(m.dev("acc"), p)
    assert again is hp and hp.users == 2
    m.sva.unbind(again)
    assert m.core.pasid_domain(m.dev("acc"), 1) is hp.domain  # still one user
    m.sva.unbind(hp)
    assert m.core.pasid_domain(m.dev("acc"), 1) is None
    assert p.pasid == 1  # the PASID stays with the process while it lives
    m.sva.unbind(hp2)
    p.exit()
    assert p.pasid is None and 1 not in m.sva.pasid_ida
    assert m.sva.bind(m.dev("acc2"), m.kernel.new_process("r")).pasid == 1


def _state(m: SvaMachine, *names: str) -> object:
    return (
        [m.dc(n) for n in names],
        len(m.sva.pasid_ida),
        m.kernel.pages.nr_free,
        [dict(m.dev(n).group.pasid_array) for n in names],  # type: ignore[union-attr]
        [(m.ep(n).ats_enabled, m.ep(n).pri_enabled) for n in names],
        dict(m.driver.stats),
        len(m.driver.pscid_ida),
    )


def fails(
    m: SvaMachine, exc: type[ApiError], code: int, names: tuple[str, ...], call: object, match: str
) -> None:
    before = _state(m, *names)
    with pytest.raises(exc, match=match) as e:
        call()  # type: ignore[operator]
    assert e.value.errno == code
    assert _state(m, *names) == before


def test_bind_without_pasid_capability(m: SvaMachine) -> None:
    """iommu_alloc_global_pasid has nothing for max_pasids == 0: ENOSPC; once the mm has a
    PASID, iommu_alloc_mm_data finds it beyond the device's width: EOVERFLOW."""
    mm = m.kernel.new_process("p")
    fails(
        m,
        ApiError,
        errno.ENOSPC,
        ("nopasid",),
        lambda: m.sva.bind(m.dev("nopasid"), mm),
        "no PASID capability",
    )
    assert mm.pasid is None
    m.sva.bind(m.dev("acc"), mm)
    fails(
        m,
        ApiError,
        errno.EOVERFLOW,
        ("nopasid", "acc"),
        lambda: m.sva.bind(m.dev("nopasid"), mm),
        "beyond",
    )


def test_bind_without_pri(m: SvaMachine) -> None:
    """An SVA domain needs I/O page faults: a device without PRI is ENODEV (as Intel's
    intel_iommu_enable_iopf), and the PASID the bind allocated is given back."""
    mm = m.kernel.new_process("p")
    fails(m, ApiError, errno.ENODEV, ("nopri",), lambda: m.sva.bind(m.dev("nopri"), mm), "no PRI")
    assert mm.pasid is None and len(m.sva.pasid_ida) == 0


def test_pasid_exhaustion(m: SvaMachine) -> None:
    """A 2-bit PASID device has PASIDs 1..3 (ida_alloc_range(1, max_pasids - 1))."""
    procs = [m.kernel.new_process(f"p{i}") for i in range(4)]
    for i, p in enumerate(procs[:3]):
        assert m.sva.bind(m.dev("small"), p).pasid == i + 1
    fails(
        m,
        ApiError,
        errno.ENOSPC,
        ("small",),
        lambda: m.sva.bind(m.dev("small"), procs[3]),
        "no free PASID",
    )
    assert procs[3].pasid is None
    # A wide device can still get PASID 4 for it; the small one then overflows.
    assert m.sva.bind(m.dev("acc"), procs[3]).pasid == 4
    fails(
        m,
        ApiError,
        errno.EOVERFLOW,
        ("small", "acc"),
        lambda: m.sva.bind(m.dev("small"), procs[3]),
        "beyond",
    )


def test_bind_to_an_exited_process_or_unprobed_device(m: SvaMachine) -> None:
    mm = m.kernel.new_process("p")
    mm.exit()
    with pytest.raises(InvalidArgument, match="exited"):
        m.sva.bind(m.dev("acc"), mm)
    from iommusim.sw.core.device import Device

    with pytest.raises(ApiError) as e:
        m.sva.bind(Device("ghost", 0x40, pasid_bits=20), m.kernel.new_process("q"))
    assert e.value.errno == errno.ENODEV


def test_pasid_slot_taken_by_another_domain_is_ebusy(m: SvaMachine) -> None:
    dev = m.dev("acc")
    other = m.core.domain_alloc_paging(dev)
    m.core.attach_device_pasid(other, dev, 1)
    with pytest.raises(Busy):
        m.core.attach_device_pasid(other, dev, 1)
    mm = m.kernel.new_process("p")
    fails(m, ApiError, errno.EBUSY, ("acc",), lambda: m.sva.bind(dev, mm), "holds")


def test_unbind_blocks_the_pasid(m: SvaMachine) -> None:
    mm = m.kernel.new_process("p")
    va = mm.mmap(PAGE, RW)
    h = m.sva.bind(m.dev("acc"), mm)
    ep = m.ep("acc")
    assert ep.dma_write(va, b"x", pasid=h.pasid).ok
    m.sva.unbind(h)
    unhandled = m.core.iopf.stats.unhandled
    r = ep.dma_read(va, 1, pasid=h.pasid)
    # The invalid PC answers the ATS request "success, no permission" (riscv-iommu: "PCIe
    # ATS translation request handling", cause 266); the page request that follows finds
    # no domain at the PASID and is answered "invalid".
    assert not r.ok and r.abort == "prg_invalid"
    assert m.core.iopf.stats.unhandled == unhandled + 1
    with pytest.raises(InvalidArgument):
        m.sva.unbind(h)


def test_exit_with_a_bound_device(m: SvaMachine) -> None:
    """At exit the SVA domain invalidates its process contexts before the page table goes;
    the PASID is freed when the last device unbinds."""
    mm = m.kernel.new_process("p")
    va = mm.mmap(2 * PAGE, RW)
    h = m.sva.bind(m.dev("acc"), mm)
    ep = m.ep("acc")
    assert ep.dma_write(va, b"x", pasid=h.pasid).ok
    free_before = m.kernel.pages.nr_free
    mm.exit()
    assert PC_TA.decode(pc_of(m, "acc", h.pasid)[0])["v"] == 0
    assert m.kernel.pages.nr_free > free_before  # pages and tables came back
    assert not ep.dma_read(va, 1, pasid=h.pasid).ok
    assert mm.pasid == 1
    m.sva.unbind(h)
    assert mm.pasid is None and len(m.sva.pasid_ida) == 0


def test_release_device_drops_pasids_and_the_pdt(m: SvaMachine) -> None:
    dev = m.dev("acc")
    free0 = m.kernel.pages.nr_free
    mm = m.kernel.new_process("p")
    m.sva.bind(dev, mm)
    m.core.release_device(dev)
    assert tc_of(m.dc("acc"))["v"] == 0 and tc_of(m.dc("acc"))["pdtv"] == 0
    assert not m.ep("acc").ats_enabled and not m.ep("acc").pri_enabled
    mm.exit()
    assert m.kernel.pages.nr_free >= free0 - 1  # at most a DDT page stayed
