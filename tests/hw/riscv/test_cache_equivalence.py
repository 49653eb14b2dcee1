"""Caches never change a result for correct software (riscv-iommu: "Caching in-memory data
structures"; "IOMMU Page-Table cache invalidation commands").

A cached and an uncached model run side by side on random map / change / unmap / translate
sequences. Software follows the spec's rule: every PTE or DC change is followed by the
invalidation it needs (IOTINVAL.VMA for a PTE, IODIR.INVAL_DDT for a DC) and an IOFENCE.C.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.queues import CMD_IODIR, CMD_IOFENCE, CMD_IOTINVAL
from iommusim.bits.riscv.structures import DC_FSC, DC_TC
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


def _pte(frame: int, writable: bool, dirty: bool) -> int:
    return PTE.encode(v=1, r=1, w=int(writable), u=1, a=1, d=int(dirty), ppn=0x4000 + frame)


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
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    ops,
    st.sampled_from([(0, 0, 0), (2, 2, 2), (64, 64, 1024)]),
    st.sampled_from(("lru", "fifo", "random")),
)
def test_cached_and_uncached_models_agree(
    seq: list[tuple[object, ...]], geometry: tuple[int, int, int], policy: Replacement
) -> None:
    ddtc, pdtc, iotlb = geometry
    cached = Model(CacheParams(ddtc, pdtc, iotlb, policy))
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
            elif op[0] == "pscid":
                m.set_dc(int(op[1]))
                m.sync(CMD_IODIR.encode(opcode=3, dv=1, did=DID))
        if op[0] == "dma":
            _, page, write, off = op
            req = Request(DID, int(page) * 4096 + int(off), is_write=bool(write))
            assert cached.iommu.translate(req) == plain.iommu.translate(req)
    # Same memory afterwards: PTE A/D updates and fault records.
    assert list(cached.mem.pages()) == list(plain.mem.pages())
    assert cached.iommu.regs.fqt == plain.iommu.regs.fqt
