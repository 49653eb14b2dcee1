"""Caches never change a result for correct software (riscv-iommu: "Caching in-memory data
structures"; "IOMMU Page-Table cache invalidation commands").

A cached and an uncached model run side by side on random map / change / unmap / translate
sequences -- 4 KiB pages and a 2 MiB superpage, with an IOTLB of 4 KiB fragments or of
whole-superpage entries. Software follows the spec's rule: every PTE or DC change is followed
by the invalidation it needs (IOTINVAL.VMA for a PTE, IODIR.INVAL_DDT for a DC) and an
IOFENCE.C.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.queues import CMD_IODIR, CMD_IOFENCE, CMD_IOTINVAL
from iommusim.bits.riscv.structures import (
    DC_FSC,
    DC_IOHGATP,
    DC_MSIPTP,
    DC_TC,
    MSI_ADDR_MASK,
)
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, CacheParams, Replacement
from iommusim.hw.riscv.transaction import Request
from iommusim.mem import SparseMemory

DDT = 0x10_0000
ROOT = 0x20_0000
L1 = 0x21_0000
L0 = 0x22_0000
CQ = 0x30_0000
FQ = 0x31_0000
DID = 3
MSI_PT = 0x40_0000
G_ROOT = 0x50_0000  # 16 KiB aligned
NPAGES = 2


class Model:
    def __init__(self, caches: CacheParams) -> None:
        self.mem = SparseMemory()
        self.iommu = RiscvIommu(self.mem, PRESETS["full"].with_(caches=caches))
        m = self.mem
        m.write64(ROOT, PTE.encode(v=1, ppn=L1 >> 12))
        m.write64(L1, PTE.encode(v=1, ppn=L0 >> 12))
        self.set_dc(pscid=1)
        w = self.iommu.write_register
        w(24, 8, (CQ >> 12) << 10 | 5)  # cqb, 64 entries
        w(36, 4, 0)
        w(72, 4, 1)  # cqen
        w(40, 8, (FQ >> 12) << 10 | 7)  # fqb, 256 records
        w(48, 4, 0)
        w(76, 4, 1)  # fqen
        w(16, 8, (DDT >> 12) << 10 | 2)  # ddtp 1LVL
        self.tail = 0

    def set_dc(self, pscid: int) -> None:
        dc = DDT + DID * 64
        self.mem.write64(dc, DC_TC.encode(v=1, sade=1))
        self.mem.write64(dc + 16, pscid << 12)
        self.mem.write64(dc + 24, DC_FSC.encode(mode=8, ppn=ROOT >> 12))

    def command(self, value: int) -> None:
        self.mem.write(CQ + self.tail * 16, value.to_bytes(16, "little"))
        self.tail = (self.tail + 1) % 64
        self.iommu.write_register(36, 4, self.tail)

    def sync(self, inval: int) -> None:
        self.command(inval)
        self.command(CMD_IOFENCE.encode(opcode=2))
        self.iommu.process_commands()


def _pte(frame: int, writable: bool, dirty: bool, ppn: int = 0x4000) -> int:
    return PTE.encode(v=1, r=1, w=int(writable), u=1, a=1, d=int(dirty), ppn=ppn + frame)


#: The 2 MiB superpage: level 1 entry 1 (VA 0x20_0000..0x3F_FFFF), frames 2 MiB apart.
SUPER_VA = 0x20_0000


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("map"),
            st.integers(0, NPAGES - 1),
            st.integers(0, 15),
            st.booleans(),
            st.booleans(),
        ),
        st.tuples(st.just("unmap"), st.integers(0, NPAGES - 1)),
        st.tuples(st.just("pscid"), st.integers(1, 3)),
        st.tuples(st.just("dma"), st.integers(0, NPAGES - 1), st.booleans(), st.integers(0, 4095)),
        st.tuples(st.just("smap"), st.integers(0, 3), st.booleans(), st.booleans()),
        st.tuples(st.just("sunmap"), st.integers(0, 511)),
        st.tuples(st.just("sdma"), st.sampled_from([0, 1, 2, 300, 511]), st.booleans()),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    ops,
    st.sampled_from([(0, 0, 0), (2, 2, 2), (64, 64, 1024)]),
    st.sampled_from(("lru", "fifo", "random")),
    st.booleans(),
)
def test_cached_and_uncached_models_agree(
    seq: list[tuple[object, ...]],
    geometry: tuple[int, int, int],
    policy: Replacement,
    superpages: bool,
) -> None:
    ddtc, pdtc, iotlb = geometry
    cached = Model(CacheParams(ddtc, pdtc, iotlb, policy, iotlb_superpages=superpages))
    plain = Model(CacheParams(0, 0, 0))
    for op in seq:
        for m in (cached, plain):
            if op[0] == "map":
                _, page, frame, writable, dirty = op
                m.mem.write64(L0 + 8 * int(page), _pte(int(frame), bool(writable), bool(dirty)))
                m.sync(CMD_IOTINVAL.encode(opcode=1, av=1, addr=int(page)))
            elif op[0] == "unmap":
                m.mem.write64(L0 + 8 * int(op[1]), 0)
                m.sync(CMD_IOTINVAL.encode(opcode=1, av=1, addr=int(op[1])))
            elif op[0] == "smap":
                _, frame, writable, dirty = op
                pte = _pte(int(frame) * 512, bool(writable), bool(dirty), 0x8_0000)
                m.mem.write64(L1 + 8, pte)
                m.sync(CMD_IOTINVAL.encode(opcode=1, av=1, addr=SUPER_VA >> 12))
            elif op[0] == "sunmap":
                # Any address of the superpage invalidates it (its entries, whole or not).
                m.mem.write64(L1 + 8, 0)
                m.sync(CMD_IOTINVAL.encode(opcode=1, av=1, addr=(SUPER_VA >> 12) + int(op[1])))
            elif op[0] == "pscid":
                m.set_dc(int(op[1]))
                m.sync(CMD_IODIR.encode(opcode=3, dv=1, did=DID))
        if op[0] == "dma":
            _, page, write, off = op
            req = Request(DID, int(page) * 4096 + int(off), is_write=bool(write))
            assert cached.iommu.translate(req) == plain.iommu.translate(req)
        elif op[0] == "sdma":
            _, page, write = op
            va = SUPER_VA + int(page) * 4096 + 8
            req = Request(DID, va, is_write=bool(write))
            assert cached.iommu.translate(req) == plain.iommu.translate(req)
            pa = [m.iommu.translate_pa(DID, va + 16, bool(write)) for m in (cached, plain)]
            assert pa[0] == pa[1], (hex(va), pa)
    # Same memory afterwards: PTE A/D updates and fault records.
    assert list(cached.mem.pages()) == list(plain.mem.pages())
    assert cached.iommu.regs.fqt == plain.iommu.regs.fqt


def _superpage_scene(superpages: bool, msi_page: int | None = None) -> tuple[Model, Model]:
    cached = Model(CacheParams(iotlb_entries=1024, iotlb_superpages=superpages))
    plain = Model(CacheParams(0, 0, 0))
    for m in (cached, plain):
        m.mem.write64(L1 + 8, _pte(0, True, True, 0x8_0000))
        if msi_page is not None:
            # MSI translation needs a G-stage: Sv39x4 identity-mapping 4 GiB with 1 GiB
            # leaves. riscv-iommu: "MSI address mask and pattern": GPA page msi_page is an
            # MSI; the MSI page table (at MSI_PT, all zeros) answers it with a fault.
            dc = DDT + DID * 64
            for i in range(4):
                m.mem.write64(G_ROOT + 8 * i, _pte(0, True, True, i << 18))
            m.mem.write64(dc + 8, DC_IOHGATP.encode(mode=8, gscid=1, ppn=G_ROOT >> 12))
            m.mem.write64(dc + 32, DC_MSIPTP.encode(mode=1, ppn=MSI_PT >> 12))
            m.mem.write64(dc + 40, MSI_ADDR_MASK.encode(mask=0))
            m.mem.write64(dc + 48, MSI_ADDR_MASK.encode(mask=msi_page))
            m.sync(CMD_IODIR.encode(opcode=3, dv=1, did=DID))
    return cached, plain


def test_a_superpage_costs_one_entry_of_a_superpage_iotlb() -> None:
    """The superpage-entry IOTLB: 512 pages of one 2 MiB leaf fill one entry (and hit it
    from every page), the 4 KiB-fragment IOTLB one entry per page."""
    for superpages, entries in ((True, 1), (False, 512)):
        cached, plain = _superpage_scene(superpages)
        for page in range(512):
            req = Request(DID, SUPER_VA + page * 4096 + 24)
            assert cached.iommu.translate(req) == plain.iommu.translate(req)
        tlb = cached.iommu.engine.iotlb
        assert len(tlb) == entries
        assert next(iter(tlb)) == (DID, -1, False, SUPER_VA >> 12)
        assert {e.size_lg2 for e in tlb.values()} == {21}


def test_no_superpage_entry_spans_an_msi_page() -> None:
    """A device translating MSIs keeps single-page entries even in a superpage-entry IOTLB:
    the MSI page inside the 2 MiB leaf still takes the MSI walk (here: a fault), as without
    caches."""
    msi = 0x8_0000 + 7  # the GPA page the superpage's page 7 maps to
    cached, plain = _superpage_scene(True, msi)
    for page in (0, 7, 1, 7):
        req = Request(DID, SUPER_VA + page * 4096)
        assert cached.iommu.translate(req) == plain.iommu.translate(req)
    assert plain.iommu.translate(Request(DID, SUPER_VA)).ok
    assert not plain.iommu.translate(Request(DID, SUPER_VA + 7 * 4096)).ok
    assert {e.size_lg2 for e in cached.iommu.engine.iotlb.values()} == {12}
