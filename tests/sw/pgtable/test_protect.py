"""RiscvPageTable.protect: permission changes of present leaves in place (Linux
``change_protection`` on a table the IOMMU shares), checked against the PTE encoding, against
an independent model, and with the hardware walker (riscv-iommu: "Process to translate an
IOVA", first stage; privileged spec "Sv39": "Table: Encoding of PTE R/W/X fields").
"""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.regs import MODE_1LVL, OFF_DDTP
from iommusim.bits.riscv.structures import DC_TA, DC_TC
from iommusim.errors import InvalidArgument, NotSupported
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, CacheParams
from iommusim.hw.riscv.transaction import Request
from iommusim.mem import MemAccess, SparseMemory, TracingMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import FORMATS, IotlbGather, RiscvPageTable
from iommusim.sw.prot import IOMMU_MMIO, IOMMU_NOEXEC, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE

K4: Final = 1 << 12
M2: Final = 1 << 21
G1: Final = 1 << 30
RW: Final = IOMMU_READ | IOMMU_WRITE
RO: Final = IOMMU_READ | IOMMU_NOEXEC
POOL: Final = 0x8000_0000
DATA: Final = 0x1_0000_0000
ALL: Final = sorted(FORMATS)
V, R, W, X, U, G, A, D = (PTE.mask(n) for n in "vrwxugad")
RSW: Final = PTE["rsw"].mask


def make(fmt: str = "sv48", **kw: bool) -> tuple[SparseMemory, PageAllocator, RiscvPageTable]:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 256 * K4)
    return mem, pages, RiscvPageTable(mem, pages, fmt, **kw)


def leaf_addr(pt: RiscvPageTable, iova: int) -> int:
    """PA of the level-0 PTE for ``iova`` (little-endian tables)."""
    tpa = pt.root_pa
    for level in range(pt.fmt.levels - 1, 0, -1):
        shift = 12 + 9 * level
        bits = pt.fmt.root_index_bits if level == pt.fmt.levels - 1 else 9
        idx = (iova >> shift) & ((1 << bits) - 1)
        tpa = PTE["ppn"].get(pt.mem.read64(tpa + 8 * idx)) << 12
    return tpa + 8 * ((iova >> 12) & 511)


def snapshot(mem: SparseMemory, pages: PageAllocator, pt: RiscvPageTable) -> object:
    return list(mem.pages()), pages.nr_free, pt.table_pages, list(pt.walk_leaves())


# ------------------------------------------------------------------------------ encoding
@pytest.mark.parametrize("name", ALL)
def test_protect_rewrites_present_leaves_and_keeps_the_ppn(name: str) -> None:
    _, _, pt = make(name)
    pt.map(G1, DATA, 4 * K4, RW)
    gather = IotlbGather()
    assert pt.protect(G1, 4 * K4, RO, gather) == 4 * K4
    assert [(v, p, s, prot) for v, p, s, prot in pt.walk_leaves()] == [
        (G1 + k * K4, DATA + k * K4, K4, RO) for k in range(4)
    ]
    assert (gather.start, gather.end, gather.pgsize) == (G1, G1 + 4 * K4 - 1, K4)
    assert gather.freelist == []


def test_protect_keeps_a_d_g_and_software_bits() -> None:
    """D stays set when W goes (the page may already be dirty); G, RSW, A are kept; U, X, W,
    R come from prot."""
    mem, _, pt = make("sv39", set_ad=False)
    pt.map(0x5000, DATA, K4, RW)
    addr = leaf_addr(pt, 0x5000)
    assert mem.read64(addr) == V | R | W | X | U | (DATA >> 12) << 10
    # What hardware A/D updates and the OS's own bits would leave in the PTE.
    mem.write64(addr, mem.read64(addr) | A | D | G | RSW)
    assert pt.protect(0x5000, K4, IOMMU_READ | IOMMU_PRIV | IOMMU_NOEXEC, IotlbGather()) == K4
    assert mem.read64(addr) == V | R | A | D | G | RSW | (DATA >> 12) << 10


def test_protect_with_set_ad_presets_a_and_d_as_map_does() -> None:
    mem, _, pt = make("sv48")
    pt.map(0x5000, DATA, K4, RO)
    addr = leaf_addr(pt, 0x5000)
    assert mem.read64(addr) & (A | D) == A
    pt.protect(0x5000, K4, RW, IotlbGather())
    assert mem.read64(addr) == pt.leaf_bits(RW) | (DATA >> 12) << 10
    pt.protect(0x5000, K4, RO, IotlbGather())
    assert mem.read64(addr) == pt.leaf_bits(RO) | D | (DATA >> 12) << 10  # D kept


def test_protect_svpbmt_follows_prot() -> None:
    mem, _, pt = make("sv48", svpbmt=True)
    pt.map(0x5000, DATA, K4, IOMMU_READ)
    pt.protect(0x5000, K4, IOMMU_READ | IOMMU_MMIO, IotlbGather())
    assert PTE["pbmt"].get(mem.read64(leaf_addr(pt, 0x5000))) == 2
    pt.protect(0x5000, K4, IOMMU_READ, IotlbGather())
    assert PTE["pbmt"].get(mem.read64(leaf_addr(pt, 0x5000))) == 0


def test_unchanged_leaves_are_not_stored_or_gathered() -> None:
    _, _, pt = make()
    pt.map(0x10000, DATA, 2 * K4, RW)
    gather = IotlbGather()
    assert pt.protect(0x10000, 2 * K4, RW, gather) == 0
    assert gather.empty
    assert pt.protect(0x10000, 2 * K4, IOMMU_WRITE, gather) == 0  # W implies R: same PTE
    assert gather.empty


def test_holes_are_skipped() -> None:
    _, _, pt = make()
    pt.map(0x10000, DATA, K4, RW)
    pt.map(0x13000, DATA + K4, K4, RW)
    gather = IotlbGather()
    assert pt.protect(0, 4 * G1, RO, gather) == 2 * K4
    assert (gather.start, gather.end) == (0x10000, 0x13FFF)
    assert [prot for *_, prot in pt.walk_leaves()] == [RO, RO]
    assert pt.protect(8 * G1, G1, RO, gather) == 0  # nothing mapped there at all


def test_one_store_per_changed_leaf() -> None:
    """A walker sees the old or the new PTE: exactly one 64-bit store per changed leaf, and
    no other store."""
    log: list[MemAccess] = []
    ram = SparseMemory()
    mem = TracingMemory(ram, log)
    pages = PageAllocator(mem, POOL, 64 * K4)
    pt = RiscvPageTable(mem, pages, "sv57")
    pt.map(M2 - 2 * K4, DATA, 4 * K4, RW)  # across two level-0 tables
    pt.map(G1, 2 * G1, G1, RW)  # one gigapage
    log.clear()
    assert pt.protect(0, 2 * G1, RO, IotlbGather()) == 4 * K4 + G1
    stores = [a for a in log if a.kind != "r"]
    assert len(stores) == 5 and all(a.kind == "w" and a.size == 8 for a in stores)


@pytest.mark.parametrize("name", ["sv39", "sv48x4"])
def test_superpages_are_protected_whole_or_not_at_all(name: str) -> None:
    mem, pages, pt = make(name)
    pt.map(M2, DATA, M2, RW)
    pt.map(2 * M2, DATA + M2 + K4, K4, RW)
    before = snapshot(mem, pages, pt)
    for iova, size in ((M2, K4), (M2 + K4, M2), (0, M2 + K4)):
        gather = IotlbGather()
        with pytest.raises(InvalidArgument, match="would split the 0x200000-byte leaf"):
            pt.protect(iova, size, RO, gather)
        assert gather.empty
        assert snapshot(mem, pages, pt) == before
    gather = IotlbGather()
    assert pt.protect(M2, 2 * M2, RO, gather) == M2 + K4
    assert gather.pgsize == K4 and (gather.start, gather.end) == (M2, 2 * M2 + K4 - 1)
    assert pt.lookup(M2 + 5) == (M2, DATA, M2, RO)


@pytest.mark.parametrize(
    ("iova", "size", "prot", "exc", "match"),
    [
        (0x1001, K4, RO, InvalidArgument, "iova must be 4 KiB aligned"),
        (0x1000, 0x800, RO, InvalidArgument, "size must be a positive multiple"),
        (0x1000, 0, RO, InvalidArgument, "size must be a positive multiple"),
        (1 << 47, K4, RO, InvalidArgument, "must be canonical"),
        ((1 << 47) - K4, 2 * K4, RO, InvalidArgument, "must be canonical"),
        (0x1000, K4, IOMMU_NOEXEC, NotSupported, "grants no access"),
        (0x1000, K4, 1 << 9, InvalidArgument, "prot must be a combination"),
    ],
)
def test_errors_change_nothing(
    iova: int, size: int, prot: int, exc: type[Exception], match: str
) -> None:
    mem, pages, pt = make("sv48")
    pt.map(0x1000, DATA, 2 * K4, RW)
    before = snapshot(mem, pages, pt)
    gather = IotlbGather()
    with pytest.raises(exc, match=match):
        pt.protect(iova, size, prot, gather)
    assert gather.empty
    assert snapshot(mem, pages, pt) == before


def test_big_endian_tables() -> None:
    _, _, pt = make("sv39", big_endian=True)
    pt.map(0x7000, DATA, K4, RW)
    assert pt.protect(0x7000, K4, RO, IotlbGather()) == K4
    assert pt.lookup(0x7000) == (0x7000, DATA, K4, RO)


def test_upper_canonical_half() -> None:
    _, _, pt = make("sv39")
    top = (1 << 64) - G1
    pt.map(top, DATA, 2 * K4, RW)
    assert pt.protect(top, G1, RO, IotlbGather()) == 2 * K4
    assert pt.lookup(top + K4) == (top + K4, DATA + K4, K4, RO)


# ------------------------------------------------------------------------------ model
PROTS: Final = [IOMMU_READ, RW, RO, RW | IOMMU_NOEXEC, 0, IOMMU_READ | IOMMU_PRIV]


def norm(prot: int) -> int:
    return prot | IOMMU_READ if prot & IOMMU_WRITE else prot


@pytest.mark.parametrize("name", ["sv39", "sv57x4"])
@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["map", "unmap", "protect"]),
            st.integers(0, 40),
            st.integers(1, 12),
            st.sampled_from(PROTS),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_protect_agrees_with_a_model(name: str, ops: list[tuple[str, int, int, int]]) -> None:
    """Random 4 KiB map/unmap/protect sequences: every page's prot and PA match a dict model,
    the return value counts changed pages, and the gather covers exactly them."""
    _, _, pt = make(name)
    gstage = FORMATS[name].gstage
    base = M2 - 16 * K4  # straddles a level-0 table boundary
    model: dict[int, tuple[int, int]] = {}  # page -> (pa, prot)
    for kind, off, n, prot in ops:
        iova = base + off * K4
        pages = [iova + k * K4 for k in range(n)]
        if kind == "map":
            if any(p in model for p in pages):
                continue
            pt.map(iova, DATA + off * K4, n * K4, prot)
            for p in pages:
                model[p] = (DATA + p - base, prot)
        elif kind == "unmap":
            gather = IotlbGather()
            assert pt.unmap(iova, n * K4, gather) == K4 * sum(p in model for p in pages)
            for p in pages:
                model.pop(p, None)
        else:
            bits = pt.leaf_bits
            changed = [p for p in pages if p in model and bits(model[p][1]) != bits(prot)]
            gather = IotlbGather()
            assert pt.protect(iova, n * K4, prot, gather) == K4 * len(changed)
            if changed:
                assert (gather.start, gather.end) == (min(changed), max(changed) + K4 - 1)
            else:
                assert gather.empty
            for p in pages:
                if p in model:
                    model[p] = (model[p][0], prot)
        want = sorted(
            (p, pa, K4, norm(pr) & ~(IOMMU_PRIV if gstage else 0)) for p, (pa, pr) in model.items()
        )
        assert list(pt.walk_leaves()) == want


# ------------------------------------------------------------------------------ hardware
DID: Final = 3


def iommu_for(pt: RiscvPageTable, ram: SparseMemory, pages: PageAllocator) -> RiscvIommu:
    """An IOMMU without caches (so no invalidation is needed between changes) translating
    device DID through ``pt`` as its first stage (``DC.fsc`` = iosatp, no PASID)."""
    iommu = RiscvIommu(ram, PRESETS["full"].with_(caches=CacheParams(0, 0, 0)))
    ddt = pages.alloc_page()
    for k, w in enumerate((DC_TC.encode(v=1), 0, DC_TA.encode(pscid=1), pt.atp())):
        ram.write64(ddt + DID * 64 + 8 * k, w)
    iommu.write_register(OFF_DDTP, 8, (ddt >> 12) << 10 | MODE_1LVL)
    return iommu


def hw(iommu: RiscvIommu, iova: int) -> tuple[int, int, int]:
    """(read, write, execute) results: PA or -cause."""
    x = iommu.translate(Request(DID, iova, exec_req=True))
    return (
        iommu.translate_pa(DID, iova, False),
        iommu.translate_pa(DID, iova, True),
        x.pa if x.ok else -x.cause,
    )


def test_hardware_sees_the_new_permissions() -> None:
    """Load/store/instruction page faults are 13/15/12 (privileged spec "Exception codes")."""
    ram, pages, pt = make("sv48")
    iommu = iommu_for(pt, ram, pages)
    va = 0x40_0000
    pt.map(va, DATA, 2 * K4, RW)
    assert hw(iommu, va + 8) == (DATA + 8, DATA + 8, DATA + 8)
    pt.protect(va, K4, RO, IotlbGather())
    assert hw(iommu, va + 8) == (DATA + 8, -15, -12)
    assert hw(iommu, va + K4) == (DATA + K4,) * 3  # outside the range: unchanged
    pt.protect(va, K4, 0, IotlbGather())  # execute-only
    assert hw(iommu, va) == (-13, -15, DATA)
    pt.protect(va, K4, IOMMU_READ | IOMMU_PRIV, IotlbGather())  # supervisor-only: U = 0
    assert hw(iommu, va) == (-13, -15, -12)
    pt.protect(va, 2 * K4, RW | IOMMU_NOEXEC, IotlbGather())
    assert hw(iommu, va) == (DATA, DATA, -12)


# ------------------------------------------------------------------------------ planning
@pytest.mark.parametrize("name", ["sv39", "sv48", "sv57", "sv48x4"])
def test_tables_needed_counts_what_a_4k_map_allocates(name: str) -> None:
    """What a demand-paging fault handler checks before mapping pages one by one."""
    _, pages, pt = make(name)
    levels = FORMATS[name].levels
    assert pt.tables_needed(G1, K4) == levels - 1
    assert pt.tables_needed(G1 - K4, 2 * K4) == 2 * (levels - 1) - (levels - 3)
    free = pages.nr_free
    pt.map(G1 - K4, DATA, 2 * K4, RW)
    assert free - pages.nr_free == 2 * (levels - 1) - (levels - 3)
    assert pt.tables_needed(G1 - K4, 2 * K4) == 0  # mapped pages need nothing
    assert pt.tables_needed(G1 + M2 - K4, 2 * K4) == 1  # one more level-0 table
    pt.map(4 * G1, 4 * G1, M2, RW)  # a 2 MiB leaf
    assert pt.tables_needed(4 * G1, M2) == 0
    with pytest.raises(InvalidArgument, match="must be 4 KiB aligned"):
        pt.tables_needed(5, K4)
