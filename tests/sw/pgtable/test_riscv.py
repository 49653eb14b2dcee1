"""RiscvPageTable unit tests: formats, PTE encoding, map/unmap/iova_to_phys for every format,
and error paths that leave memory byte-identical.

The walk the hardware does over these tables is checked in ``test_riscv_hw.py``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from iommusim.bits.riscv.pgtable import FIRST_STAGE_FORMATS, G_STAGE_FORMATS, PTE
from iommusim.bits.riscv.structures import DC_FSC, DC_IOHGATP
from iommusim.errors import Exists, InvalidArgument, ModelError, NotSupported, OutOfMemory
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import FORMATS, IotlbGather, RiscvPageTable, RiscvPtFormat
from iommusim.sw.prot import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
)

K4 = 1 << 12
M2 = 1 << 21
G1 = 1 << 30
G512 = 1 << 39
RW = IOMMU_READ | IOMMU_WRITE
POOL = 0x8000_0000
DATA = 0x1_0000_0000
ALL = sorted(FORMATS)
FIRST = [f for f in ALL if not FORMATS[f].gstage]
GSTAGE = [f for f in ALL if FORMATS[f].gstage]


def make(
    fmt: str, pool_pages: int = 256, **kw: bool
) -> tuple[SparseMemory, PageAllocator, RiscvPageTable]:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, pool_pages * K4)
    return mem, pages, RiscvPageTable(mem, pages, fmt, **kw)


def snapshot(mem: SparseMemory, pages: PageAllocator, pt: RiscvPageTable) -> tuple[object, ...]:
    return list(mem.pages()), pages.nr_free, pt.table_pages, list(pt.walk_leaves())


def leaves(pt: RiscvPageTable) -> list[tuple[int, int, int]]:
    return [(v, p, s) for v, p, s, _ in pt.walk_leaves()]


# ------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("name", ALL)
def test_formats_match_the_walker_mode_tables(name: str) -> None:
    """riscv-iommu: "Encodings of iosatp.MODE field" / "Encodings of iohgatp.MODE field"."""
    f = FORMATS[name]
    walked = (G_STAGE_FORMATS if f.gstage else FIRST_STAGE_FORMATS)[0][f.mode]
    levels, bits, ptesz, va_bits = (
        walked.levels,
        walked.index_bits[0],
        walked.pte_bytes,
        walked.va_bits,
    )
    assert (f.levels, bits, ptesz, f.va_bits) == (levels, 9, 8, va_bits)
    assert f.pt is walked
    assert f.root_order == (2 if f.gstage else 0)


@pytest.mark.parametrize(
    ("name", "bitmap"),
    [
        ("sv39", K4 | M2 | G1),
        ("sv48", K4 | M2 | G1 | G512),
        ("sv57", K4 | M2 | G1 | G512),
        ("sv39x4", K4 | M2 | G1),
        ("sv48x4", K4 | M2 | G1 | G512),
        ("sv57x4", K4 | M2 | G1 | G512),
    ],
)
def test_pgsize_bitmap(name: str, bitmap: int) -> None:
    assert make(name)[2].pgsize_bitmap == bitmap


def test_unknown_format_name() -> None:
    with pytest.raises(InvalidArgument, match="fmt must be one of sv39, "):
        make("sv32")


@pytest.mark.parametrize("name", ALL)
def test_root_table_and_atp(name: str) -> None:
    mem = SparseMemory()
    # The pool starts 4 KiB past a 16 KiB boundary: the x4 root must still be 16 KiB aligned.
    pages = PageAllocator(mem, POOL + K4, 64 * K4)
    pt = RiscvPageTable(mem, pages, FORMATS[name])
    f = pt.fmt
    assert pt.root_pa % (K4 << f.root_order) == 0
    assert pt.root_ppn == pt.root_pa >> 12 and pt.mode == f.mode and pt.va_bits == f.va_bits
    assert pages.nr_allocated == 1 << f.root_order
    assert pt.table_pages == [pt.root_pa]
    if f.gstage:
        assert DC_IOHGATP.decode(pt.atp(gscid=7)) == {
            "ppn": pt.root_ppn,
            "gscid": 7,
            "mode": f.mode,
        }
    else:
        assert DC_FSC.decode(pt.atp()) == {"ppn": pt.root_ppn, "mode": f.mode}
        with pytest.raises(InvalidArgument, match="gscid must be 0"):
            pt.atp(gscid=1)


def test_root_allocation_failure_is_enomem() -> None:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 2 * K4)
    with pytest.raises(OutOfMemory):
        RiscvPageTable(mem, pages, "sv39x4")
    assert pages.nr_free == 2


# ------------------------------------------------------------------------------ PTE bits
V, R, W, X, U, A, D = (PTE.mask(n) for n in "vrwxuad")


@pytest.mark.parametrize(
    ("prot", "bits"),
    [
        (IOMMU_READ, V | R | X | U | A),
        (IOMMU_WRITE, V | R | W | X | U | A | D),  # W without R is reserved: W implies R
        (RW, V | R | W | X | U | A | D),
        (IOMMU_READ | IOMMU_NOEXEC, V | R | U | A),
        (RW | IOMMU_NOEXEC, V | R | W | U | A | D),
        (0, V | X | U | A),  # execute-only, as Linux's riscvpt_iommu_set_prot
        (IOMMU_READ | IOMMU_PRIV, V | R | X | A),  # supervisor-only: U = 0
        (IOMMU_READ | IOMMU_CACHE | IOMMU_MMIO, V | R | X | U | A),  # PBMT only with svpbmt
    ],
)
def test_first_stage_leaf_bits(prot: int, bits: int) -> None:
    assert make("sv39")[2].leaf_bits(prot) == bits


def test_gstage_leaves_are_always_user() -> None:
    """A G-stage walk treats every access as a user access (privileged spec "Two-Stage
    Address Translation"), so U = 1 even for IOMMU_PRIV."""
    pt = make("sv39x4")[2]
    assert pt.leaf_bits(IOMMU_READ | IOMMU_PRIV) == V | R | X | U | A


def test_leaf_bits_without_ad_and_with_svpbmt() -> None:
    assert make("sv48", set_ad=False)[2].leaf_bits(RW) == V | R | W | X | U
    pt = make("sv48", svpbmt=True)[2]
    assert PTE["pbmt"].get(pt.leaf_bits(IOMMU_READ | IOMMU_MMIO)) == 2  # Svpbmt IO
    assert PTE["pbmt"].get(pt.leaf_bits(IOMMU_READ)) == 0


def test_prot_errors() -> None:
    pt = make("sv39")[2]
    with pytest.raises(NotSupported, match="grants no access") as ei:
        pt.leaf_bits(IOMMU_NOEXEC)
    assert ei.value.errno == errno.EOPNOTSUPP
    with pytest.raises(InvalidArgument, match="prot must be a combination"):
        pt.leaf_bits(1 << 6)


# ------------------------------------------------------------------------------ map
@pytest.mark.parametrize("name", ALL)
def test_map_uses_the_largest_pages_alignment_allows(name: str) -> None:
    _, _, pt = make(name)
    base = 4 * G1
    # 4 KiB, then up to the 2 MiB boundary, one 2 MiB page, a 4 KiB tail.
    pt.map(base + M2 - 2 * K4, DATA + M2 - 2 * K4, 2 * K4 + M2 + K4, RW)
    assert leaves(pt) == [
        (base + M2 - 2 * K4, DATA + M2 - 2 * K4, K4),
        (base + M2 - K4, DATA + M2 - K4, K4),
        (base + M2, DATA + M2, M2),
        (base + 2 * M2, DATA + 2 * M2, K4),
    ]
    # A gigapage when both addresses are 1 GiB aligned ...
    pt.map(G1, 8 * G1, G1, IOMMU_READ)
    assert (G1, 8 * G1, G1) in leaves(pt)
    # ... 4 KiB pages when the PA is only 4 KiB aligned.
    pt.map(2 * G1, DATA + K4, 4 * K4, IOMMU_READ)
    assert [s for v, _, s in leaves(pt) if 2 * G1 <= v < 3 * G1] == [K4] * 4


@pytest.mark.parametrize("name", ["sv48", "sv57", "sv48x4", "sv57x4"])
def test_512g_leaves(name: str) -> None:
    _, _, pt = make(name)
    pt.map(G512, 3 * G512, G512, RW)
    assert leaves(pt) == [(G512, 3 * G512, G512)]
    assert pt.iova_to_phys(G512 + 0x1234_5678) == 3 * G512 + 0x1234_5678


def test_sv39_has_no_512g_leaf() -> None:
    _, _, pt = make("sv39")
    pt.map(0, 0, 4 * G1, RW)
    assert leaves(pt) == [(k * G1, k * G1, G1) for k in range(4)]


@pytest.mark.parametrize("name", ALL)
def test_iova_to_phys_and_lookup(name: str) -> None:
    _, _, pt = make(name)
    pt.map(G1, 5 * G1, G1, IOMMU_READ)
    pt.map(3 * G1 + M2, DATA + M2, M2, RW | IOMMU_NOEXEC)
    pt.map(3 * G1 + 3 * M2, DATA + 7 * K4, K4, IOMMU_WRITE)
    assert pt.iova_to_phys(G1 + 0x2345_6789) == 5 * G1 + 0x2345_6789
    assert pt.iova_to_phys(3 * G1 + M2 + 0x1_2345) == DATA + M2 + 0x1_2345
    assert pt.iova_to_phys(3 * G1 + 3 * M2 + 0xFFF) == DATA + 7 * K4 + 0xFFF
    assert pt.iova_to_phys(3 * G1 + 3 * M2 + K4) is None
    assert pt.iova_to_phys(0) is None
    assert pt.lookup(3 * G1 + M2 + 5) == (3 * G1 + M2, DATA + M2, M2, RW | IOMMU_NOEXEC)
    assert pt.lookup(3 * G1 + 3 * M2) == (3 * G1 + 3 * M2, DATA + 7 * K4, K4, RW)
    assert pt.lookup(G1) == (G1, 5 * G1, G1, IOMMU_READ)
    assert pt.lookup(9 * G1) is None


def test_priv_mapping_reads_back_priv() -> None:
    _, _, pt = make("sv39")
    pt.map(0, DATA, K4, IOMMU_READ | IOMMU_PRIV)
    assert pt.lookup(0) == (0, DATA, K4, IOMMU_READ | IOMMU_PRIV)


@pytest.mark.parametrize("name", ALL)
def test_non_leaf_entries_hold_only_v_and_ppn(name: str) -> None:
    """Privileged spec: for non-leaf PTEs the D, A and U bits are reserved (zero)."""
    mem, _, pt = make(name)
    pt.map(0, DATA, K4, RW)
    tpa, entries = pt.root_pa, 0
    for _level in range(pt.fmt.levels - 1):
        pte = mem.read64(tpa)
        assert pte & ~PTE.mask("ppn") == V
        tpa = PTE["ppn"].get(pte) << 12
        entries += 1
    assert mem.read64(tpa) == PTE.encode(ppn=DATA >> 12, v=1, r=1, w=1, x=1, u=1, a=1, d=1)
    assert entries == len(pt.table_pages) - 1


@pytest.mark.parametrize("name", FIRST)
def test_upper_canonical_half(name: str) -> None:
    """Privileged spec "Sv39": bits 63..VA-1 must all equal bit VA-1."""
    _, _, pt = make(name)
    top = (1 << 64) - (1 << (pt.va_bits - 1))
    pt.map(top, DATA, M2, RW)
    pt.map((1 << 64) - K4, DATA + M2, K4, RW)
    assert leaves(pt) == [(top, DATA, M2), ((1 << 64) - K4, DATA + M2, K4)]
    assert pt.iova_to_phys(top + 0x10) == DATA + 0x10
    assert pt.iova_to_phys((1 << 64) - 1) == DATA + M2 + 0xFFF
    # The same index bits without the sign extension are a different (unmapped) address.
    assert pt.iova_to_phys(top & ((1 << pt.va_bits) - 1)) is None
    g = IotlbGather()
    assert pt.unmap(top, 1 << (pt.va_bits - 1), g) == M2 + K4
    assert (g.start, g.end) == (top, (1 << 64) - 1)


def test_gstage_covers_the_whole_gpa_space() -> None:
    _, _, pt = make("sv39x4")
    pt.map((1 << 41) - M2, DATA, M2, RW)
    assert pt.iova_to_phys((1 << 41) - 1) == DATA + M2 - 1
    assert leaves(pt) == [((1 << 41) - M2, DATA, M2)]  # root index 2047: 11 index bits


def test_map_refuses_existing_mappings() -> None:
    _, _, pt = make("sv39")
    pt.map(G1 + M2, DATA, K4, RW)
    pt.map(2 * G1, 8 * G1, M2, RW)
    with pytest.raises(Exists) as ei:
        pt.map(G1, DATA, 4 * M2, RW)  # would need the table holding the 4 KiB page
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(Exists, match="already mapped by a 0x200000-byte leaf"):
        pt.map(2 * G1 + K4, DATA, K4, RW)
    with pytest.raises(Exists):
        pt.map(2 * G1, DATA, G1, RW)  # a 1 GiB leaf over a table
    with pytest.raises(Exists):
        pt.map(G1 + M2, DATA, K4, IOMMU_READ)


# ------------------------------------------------------------------------------ errors
BadCall = Callable[[RiscvPageTable], object]
BAD_CALLS: list[tuple[str, BadCall, type[Exception]]] = [
    ("iova misaligned", lambda pt: pt.map(0x1800, DATA, K4, RW), InvalidArgument),
    ("pa misaligned", lambda pt: pt.map(0, DATA + 8, K4, RW), InvalidArgument),
    ("size misaligned", lambda pt: pt.map(0, DATA, K4 + 1, RW), InvalidArgument),
    ("size zero", lambda pt: pt.map(0, DATA, 0, RW), InvalidArgument),
    ("negative iova", lambda pt: pt.map(-K4, DATA, K4, RW), InvalidArgument),
    ("pa beyond 56 bits", lambda pt: pt.map(0, (1 << 56) - K4, 2 * K4, RW), InvalidArgument),
    ("beyond the range", lambda pt: pt.map(1 << 59, DATA, K4, RW), InvalidArgument),
    ("overlap", lambda pt: pt.map(G1 + M2 - K4, DATA, 2 * K4, RW), Exists),
    ("overlap at the end", lambda pt: pt.map(0, DATA, 2 * G1, RW), Exists),
    ("no access", lambda pt: pt.map(0, DATA, K4, IOMMU_NOEXEC), NotSupported),
    ("unmap misaligned", lambda pt: pt.unmap(0x10, K4, IotlbGather()), InvalidArgument),
    (
        "unmap splits a 2 MiB leaf",
        lambda pt: pt.unmap(3 * G1 + K4, K4, IotlbGather()),
        InvalidArgument,
    ),
    (
        "unmap splits at the end",
        lambda pt: pt.unmap(3 * G1 - M2, M2 + K4, IotlbGather()),
        InvalidArgument,
    ),
    (
        "unmap splits at the start",
        lambda pt: pt.unmap(3 * G1 + M2 - K4, 2 * K4, IotlbGather()),
        InvalidArgument,
    ),
    ("unmap beyond the range", lambda pt: pt.unmap(0, 1 << 60, IotlbGather()), InvalidArgument),
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(("why", "call", "exc"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_errors_leave_memory_byte_identical(
    name: str, why: str, call: BadCall, exc: type[Exception]
) -> None:
    mem, pages, pt = make(name)
    pt.map(G1 + M2, DATA, K4, RW)
    pt.map(3 * G1, DATA + M2, M2, RW)
    before = snapshot(mem, pages, pt)
    with pytest.raises(exc):
        call(pt)
    assert snapshot(mem, pages, pt) == before


@pytest.mark.parametrize("name", FIRST)
def test_non_canonical_ranges(name: str) -> None:
    mem, pages, pt = make(name)
    half = 1 << (pt.va_bits - 1)
    before = snapshot(mem, pages, pt)
    for iova, size in (
        (half, K4),
        (half - K4, 2 * K4),
        ((1 << 64) - half - K4, 2 * K4),
        ((1 << 64) - K4, 2 * K4),
    ):
        with pytest.raises(InvalidArgument, match="must be canonical"):
            pt.map(iova, DATA, size, RW)
        with pytest.raises(InvalidArgument, match="must be canonical"):
            pt.unmap(iova, size, IotlbGather())
    assert pt.iova_to_phys(half) is None
    assert snapshot(mem, pages, pt) == before


@pytest.mark.parametrize("name", GSTAGE)
def test_gpa_beyond_the_format(name: str) -> None:
    _, _, pt = make(name)
    with pytest.raises(InvalidArgument, match=f"must lie below 2\\^{pt.va_bits}"):
        pt.map((1 << pt.va_bits) - K4, DATA, 2 * K4, RW)
    with pytest.raises(InvalidArgument):
        pt.map((1 << 64) - K4, DATA, K4, RW)  # no sign extension for GPAs
    assert pt.iova_to_phys(1 << pt.va_bits) is None


@pytest.mark.parametrize("name", ALL)
def test_out_of_table_pages_changes_nothing(name: str) -> None:
    f = FORMATS[name]
    mem, pages, pt = make(name, pool_pages=(1 << f.root_order) + f.levels - 2)
    before = snapshot(mem, pages, pt)
    with pytest.raises(OutOfMemory) as ei:
        pt.map(0, DATA, K4, RW)  # needs levels - 1 table pages; one fewer is free
    assert ei.value.errno == errno.ENOMEM
    assert snapshot(mem, pages, pt) == before


class FailingAllocator(PageAllocator):
    """An allocator that runs dry after ``budget`` pages although its counters say otherwise
    (as a concurrent allocation would), to reach the rollback path."""

    budget = 0

    def alloc_pages(self, order: int) -> int:
        if self.budget <= 0:
            raise OutOfMemory("injected")
        self.budget -= 1
        return super().alloc_pages(order)


def test_failed_table_allocation_returns_the_pages_it_got() -> None:
    mem = SparseMemory()
    pages = FailingAllocator(mem, POOL, 64 * K4)
    pages.budget = 1
    pt = RiscvPageTable(mem, pages, "sv57")
    pages.budget = 2
    leaves_before = list(pt.walk_leaves())
    with pytest.raises(OutOfMemory, match="injected"):
        pt.map(0, DATA, K4, RW)  # needs 4 table pages
    assert pages.nr_allocated == 1
    assert pt.table_pages == [pt.root_pa] and list(pt.walk_leaves()) == leaves_before
    assert mem.read(pt.root_pa, K4) == bytes(K4)


# ------------------------------------------------------------------------------ unmap
@pytest.mark.parametrize("name", ALL)
def test_unmap_counts_bytes_and_gathers(name: str) -> None:
    _, pages, pt = make(name)
    pt.map(G1, DATA, M2 + 3 * K4, RW)
    tables = len(pt.table_pages)
    g = IotlbGather()
    # A hole before, the 2 MiB leaf, one 4 KiB leaf: holes count 0.
    assert pt.unmap(G1 - M2, 2 * M2 + K4, g) == M2 + K4
    assert (g.start, g.end, g.pgsize) == (G1, G1 + M2 + K4 - 1, K4)
    assert g.freelist == []  # the level-0 table still holds two leaves
    assert pt.unmap(G1 - M2, 2 * M2 + K4, IotlbGather()) == 0  # all holes now
    g2 = IotlbGather()
    assert pt.unmap(G1 + M2 + K4, 2 * K4, g2) == 2 * K4
    # Emptied by smaller unmaps, the tables stay linked for the next map (io-pgtable rule).
    assert g2.freelist == [] and len(pt.table_pages) == tables
    span = 1 << (12 + 9 * (pt.fmt.levels - 1))  # what one root entry covers
    g3 = IotlbGather()
    assert pt.unmap(G1 & ~(span - 1), span, g3) == 0
    # An unmap covering their whole span unlinks them: listed, but not freed yet.
    assert len(g3.freelist) == tables - 1 == pt.fmt.levels - 1
    assert pt.table_pages == [pt.root_pa]
    assert pages.nr_allocated == (1 << pt.fmt.root_order) + len(g3.freelist)
    for tpa in g3.freelist:
        pages.free_page(tpa)
    assert leaves(pt) == []


def test_unmap_of_a_hole_gathers_nothing() -> None:
    _, _, pt = make("sv48")
    g = IotlbGather()
    assert pt.unmap(0, 1 << 47, g) == 0
    assert g.empty


def test_unmap_tables_are_unlinked_bottom_up_and_children_first() -> None:
    mem, _, pt = make("sv39")
    pt.map(0, DATA, K4, RW)
    l1 = PTE["ppn"].get(mem.read64(pt.root_pa)) << 12
    l0 = PTE["ppn"].get(mem.read64(l1)) << 12
    g = IotlbGather()
    pt.unmap(0, K4, g)
    assert g.freelist == []  # emptied, but the unmap did not cover the tables' spans
    pt.unmap(0, G1, g)
    assert g.freelist == [l0, l1]
    assert mem.read64(pt.root_pa) == 0 and mem.read64(l1) == 0 and mem.read64(l0) == 0


def test_freed_table_pages_are_reused() -> None:
    _, pages, pt = make("sv39")
    pt.map(0, DATA, K4, RW)
    first = pt.table_pages
    g = IotlbGather()
    pt.unmap(0, G1, g)
    for tpa in g.freelist:
        pages.free_page(tpa)
    pt.map(0, DATA, K4, RW)
    assert pt.table_pages == first


# ------------------------------------------------------------------------------ encodings
def test_big_endian_tables() -> None:
    """riscv-iommu: DC.tc.SBE = 1 makes the walker read PTEs big-endian."""
    mem, _, pt = make("sv39", big_endian=True)
    pt.map(0, DATA, K4, RW)
    root_entry = mem.read(pt.root_pa, 8)
    l1 = PTE["ppn"].get(int.from_bytes(root_entry, "big")) << 12
    assert int.from_bytes(root_entry, "big") & ~PTE.mask("ppn") == V
    assert pt.table_pages[1] == l1
    assert pt.iova_to_phys(0x123) == DATA + 0x123
    g = IotlbGather()
    assert pt.unmap(0, G1, g) == K4 and len(g.freelist) == 2


def test_without_ad_preset() -> None:
    mem, _, pt = make("sv39x4", set_ad=False)
    pt.map(0, DATA, K4, RW)
    l0 = pt.table_pages[-1]
    assert mem.read64(l0) & (A | D) == 0


def test_walk_leaves_reports_prot() -> None:
    _, _, pt = make("sv39")
    pt.map(0, DATA, K4, IOMMU_READ)
    pt.map(K4, DATA, K4, IOMMU_WRITE | IOMMU_NOEXEC)
    assert list(pt.walk_leaves()) == [(0, DATA, K4, IOMMU_READ), (K4, DATA, K4, RW | IOMMU_NOEXEC)]


# ------------------------------------------------------------------------------ lifetime
@pytest.mark.parametrize("name", ALL)
def test_destroy_frees_every_table_page(name: str) -> None:
    _, pages, pt = make(name)
    pt.map(0, DATA, 3 * K4, RW)
    pt.map(5 * G1, DATA, M2, RW)
    pt.destroy()
    assert pages.nr_allocated == 0
    assert "destroyed" in repr(pt)
    with pytest.raises(ModelError, match="after destroy"):
        pt.map(0, DATA, K4, RW)


def test_format_object_and_repr() -> None:
    f = RiscvPtFormat("sv48", 4, False, 9)
    assert f == FORMATS["sv48"]
    _, _, pt = make("sv48")
    assert repr(pt).startswith("RiscvPageTable(sv48, root=0x80000000")
