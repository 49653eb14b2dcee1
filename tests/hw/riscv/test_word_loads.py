"""Page-table walks load PTEs straight from a SparseMemory's word view (DESIGN "Performance");
through any other memory they use the memory protocol. Both must give the same translation,
the same A/D updates, fault records and walk trace (riscv-iommu: "Process to translate an
IOVA", first-stage and G-stage walks).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.riscv.structures import DC_TC
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS
from iommusim.hw.riscv.transaction import Request
from iommusim.mem import FaultInjectingMemory, PhysicalMemory, SparseMemory

DDT = 0x8_0000
FQ = 0x9_0000
DID = 1
# Table pages 16 KiB apart, so that any of them can also be a G-stage root.
TABLES = [0x10_0000 + k * 0x4000 for k in range(4)]
_POINTERS = [(t >> 12) << 10 | 1 for t in TABLES]
# Leaves: ordinary pages, identity superpages (PPN 0 is aligned at every level), and PTEs
# each breaking one rule (reserved bits, PBMT 3, NAPOT, W without R, A/D clear, no U).
_LEAVES = [(0x4000 + k) << 10 | f for k in (0, 1) for f in (0xDF, 0xD7, 0x5F, 0x1F, 0xCF)] + [
    0xDF,
    0x5B,
    0,
    0x5,
    0x1 | 1 << 6,
    1 << 54 | 0xDF,
    3 << 61 | 0xDF,
    1 << 63 | 0x4008 << 10 | 0xDF,
]

_pte = st.sampled_from(_POINTERS + _LEAVES)


def _model(mem: PhysicalMemory) -> RiscvIommu:
    iommu = RiscvIommu(mem, PRESETS["full"])
    w = iommu.write_register
    w(40, 8, (FQ >> 12) << 10 | 7)  # fqb, 256 records
    w(76, 4, 1)  # fqen
    w(16, 8, (DDT >> 12) << 10 | 2)  # ddtp 1LVL
    iommu.engine.trace = []
    return iommu


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.tuples(st.sampled_from(TABLES), st.integers(0, 1)), _pte),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 7), st.booleans()), min_size=1, max_size=6),
)
def test_word_loads_and_protocol_loads_agree(
    ptes: dict[tuple[int, int], int], two_stage: bool, accesses: list[tuple[int, bool]]
) -> None:
    rams = (SparseMemory(), SparseMemory())
    for ram in rams:
        for (table, idx), value in ptes.items():
            ram.write64(table + 8 * idx, value)
        dc = DDT + DID * 64
        ram.write64(dc, DC_TC.encode(v=1, sade=1, gade=1))
        if two_stage:
            ram.write64(dc + 8, 8 << 60 | TABLES[1] >> 12)  # iohgatp Sv39x4
        ram.write64(dc + 24, 8 << 60 | TABLES[0] >> 12)  # iosatp Sv39
    direct = _model(rams[0])
    wrapped = _model(FaultInjectingMemory(rams[1]))
    for vpns, write in accesses:
        # VPN[2..0] each 0 or 1: the table entries the dictionary may have filled.
        iova = (vpns >> 2 & 1) << 30 | (vpns >> 1 & 1) << 21 | (vpns & 1) << 12 | 0x18
        req = Request(DID, iova, is_write=write)
        assert direct.translate(req) == wrapped.translate(req)
        assert direct.engine.trace == wrapped.engine.trace
    assert list(rams[0].pages()) == list(rams[1].pages())
    assert direct.regs.fqt == wrapped.regs.fqt
