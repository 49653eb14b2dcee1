"""Differential tests: tables written by ``sw.pgtable`` and walked by the hardware model.

A RISC-V IOMMU (``PRESETS['full']``, 1-level DDT) gets one device whose context points at a
:class:`RiscvPageTable`: ``DC.fsc`` = iosatp for the first-stage formats (``iohgatp`` Bare),
``DC.iohgatp`` for the x4 formats (``fsc`` Bare). Random map/unmap sequences run against the
table and against an independent model of the mappings; after each step every probed address
is translated by the hardware for a read, a write and an instruction fetch, and the result must
be the model's: the PA when mapped and permitted, else the spec's page-fault cause (privileged
spec: 13/15/12; riscv-iommu "Two-stage address translation": guest-page faults 21/23/20 for the
G-stage).

Software follows the spec's invalidation rules between changes, as the Linux RISC-V driver's
``iotlb_sync`` does (riscv-iommu: "Changing first-stage page table entry", "Changing
second-stage page table entry"): per-page IOTINVAL (AV = 1) for a leaf-only range below 2 MiB,
else the whole address space, then IOFENCE.C; the gather's table pages are freed only after
that. A gather that missed a page would show up as a stale IOTLB hit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from iommusim.bits.riscv.queues import CMD_IOFENCE, CMD_IOTINVAL
from iommusim.bits.riscv.regs import (
    CQCSR_CQEN,
    CQCSR_CQON,
    FCTL_BE,
    MODE_1LVL,
    OFF_CQB,
    OFF_CQCSR,
    OFF_CQT,
    OFF_DDTP,
    OFF_FCTL,
)
from iommusim.bits.riscv.structures import DC_TA, DC_TC
from iommusim.errors import Exists, InvalidArgument
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, CacheParams
from iommusim.hw.riscv.transaction import Request
from iommusim.mem import MemAccess, SparseMemory, TracingMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import FORMATS, IotlbGather, RiscvPageTable
from iommusim.sw.prot import IOMMU_NOEXEC, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE

K4: Final = 1 << 12
M2: Final = 1 << 21
G1: Final = 1 << 30
POOL: Final = 0x8000_0000
POOL_PAGES: Final = 4096
DATA: Final = 0x40_0000_0000
DID: Final = 5
PSCID: Final = 0x123
GSCID: Final = 0x45
CQ_LOG2: Final = 6
#: Linux RISCV_IOMMU_IOTLB_INVAL_LIMIT: below this, one IOTINVAL per 4 KiB page.
INVAL_LIMIT: Final = M2
#: Page-fault causes (read, write, execute): first stage, then G-stage guest-page faults.
S1_FAULTS: Final = (13, 15, 12)
G_FAULTS: Final = (21, 23, 20)
RW: Final = IOMMU_READ | IOMMU_WRITE


class System:
    """Memory, IOMMU, page allocator and one device translated by ``pt``."""

    def __init__(
        self,
        fmt: str,
        *,
        caches: CacheParams | None = None,
        set_ad: bool = True,
        big_endian: bool = False,
        sw_mem: Callable[[PhysicalMemory], PhysicalMemory] | None = None,
    ) -> None:
        self.ram = SparseMemory()
        params = PRESETS["full"]
        if caches is not None:
            params = params.with_(caches=caches)
        self.iommu = RiscvIommu(self.ram, params)
        # The software's view of memory (a tracing wrapper in the ordering test).
        self.mem = sw_mem(self.ram) if sw_mem is not None else self.ram
        self.pages = PageAllocator(self.mem, POOL, POOL_PAGES * K4)
        self.fmt = FORMATS[fmt]
        self.pt = RiscvPageTable(self.mem, self.pages, fmt, set_ad=set_ad, big_endian=big_endian)
        self.faults = G_FAULTS if self.fmt.gstage else S1_FAULTS
        # First-stage tables follow DC.tc.SBE, G-stage tables fctl.BE, which also makes the
        # DDT and the queues big-endian (riscv-iommu: "Endianness of in-memory data
        # structures"); fctl is written while the IOMMU is off.
        self.be = big_endian and self.fmt.gstage
        self.iommu.write_register(OFF_FCTL, 4, FCTL_BE if self.be else 0)
        assert self.iommu.read_register(OFF_FCTL, 4) & FCTL_BE == (FCTL_BE if self.be else 0)
        # Command queue (riscv-iommu: "Command-queue base (cqb)"): 64 entries in one page.
        self.cq = self.pages.alloc_page()
        self.tail = 0
        self.iommu.write_register(OFF_CQB, 8, (self.cq >> 12) << 10 | (CQ_LOG2 - 1))
        self.iommu.write_register(OFF_CQCSR, 4, CQCSR_CQEN)
        assert self.iommu.read_register(OFF_CQCSR, 4) & CQCSR_CQON
        # One-level DDT, extended device-context format (capabilities.MSI_FLAT = 1).
        ddt = self.pages.alloc_page()
        tc = DC_TC.encode(
            v=1,
            sbe=int(big_endian),
            sade=int(not set_ad and not self.fmt.gstage),
            gade=int(not set_ad and self.fmt.gstage),
        )
        if self.fmt.gstage:
            words = (tc, self.pt.atp(gscid=GSCID), 0, 0)
        else:
            words = (tc, 0, DC_TA.encode(pscid=PSCID), self.pt.atp())
        for k, w in enumerate(words):
            self.ram.write(ddt + DID * 64 + 8 * k, w.to_bytes(8, "big" if self.be else "little"))
        self.iommu.write_register(OFF_DDTP, 8, (ddt >> 12) << 10 | MODE_1LVL)

    # -- command queue ------------------------------------------------------------------------
    def command(self, value: int) -> None:
        order = "big" if self.be else "little"
        words = (value & ((1 << 64) - 1)).to_bytes(8, order) + (value >> 64).to_bytes(8, order)
        self.ram.write(self.cq + self.tail * 16, words)
        self.tail = (self.tail + 1) % (1 << CQ_LOG2)
        self.iommu.write_register(OFF_CQT, 4, self.tail)
        self.iommu.process_commands()

    def iotlb_sync(self, gather: IotlbGather) -> None:
        """Linux ``riscv_iommu_iotlb_sync``: invalidate, fence, then free the table pages."""
        if gather.empty:
            return
        gstage = self.fmt.gstage
        func, tag = (1, {"gv": 1, "gscid": GSCID}) if gstage else (0, {"pscv": 1, "pscid": PSCID})
        if gather.freelist or gather.size >= INVAL_LIMIT:
            self.command(CMD_IOTINVAL.encode(opcode=1, func3=func, **tag))
        else:
            for page in range(gather.start, gather.end + 1, K4):
                self.command(
                    CMD_IOTINVAL.encode(opcode=1, func3=func, av=1, addr=page >> 12, **tag)
                )
        self.command(CMD_IOFENCE.encode(opcode=2, pr=1, pw=1))
        for tpa in gather.freelist:
            self.pages.free_page(tpa)
        gather.reset()

    # -- probing ------------------------------------------------------------------------------
    def expect(self, model: Model, iova: int, access: int) -> int:
        """The model's answer: PA, or ``-cause`` (access 0 read, 1 write, 2 execute)."""
        found = model.lookup(iova)
        if found is None:
            return -self.faults[access]
        pa, prot = found
        ok = (
            prot & RW
            if access == 0
            else prot & IOMMU_WRITE
            if access == 1
            else not prot & IOMMU_NOEXEC
        )
        # Requests here are user-mode (no PASID): a supervisor-only first-stage page faults.
        if not self.fmt.gstage and prot & IOMMU_PRIV:
            ok = False
        return pa if ok else -self.faults[access]

    def check(self, model: Model, iova: int) -> None:
        want = [self.expect(model, iova, a) for a in range(3)]
        got_r = self.iommu.translate(Request(DID, iova))
        got_w = self.iommu.translate_pa(DID, iova, True)
        got_x = self.iommu.translate(Request(DID, iova, exec_req=True))
        got = [
            got_r.pa if got_r.ok else -got_r.cause,
            got_w,
            got_x.pa if got_x.ok else -got_x.cause,
        ]
        assert got == want, f"iova {iova:#x}: hardware {got}, model {want}"
        if got_r.ok:
            assert got_r.size_lg2 == min(model.leaf_lg2(iova), 30)
        assert self.pt.iova_to_phys(iova) == model.phys(iova)


class Model:
    """What the page table should contain: leaves chosen as the largest aligned pages."""

    def __init__(self, sizes: list[int], levels: int) -> None:
        self.sizes = sorted(sizes, reverse=True)
        self.levels = levels
        self.leaves: dict[int, tuple[int, int, int]] = {}  # iova -> (pa, size, prot)
        # (entry size, base) of every PTE slot that points at a table. Tables stay until an
        # unmap covers their whole span, and a slot holding one is mapped through it.
        self.tables: set[tuple[int, int]] = set()

    def _overlapping(self, iova: int, size: int) -> list[int]:
        return [v for v, (_, s, _) in self.leaves.items() if v < iova + size and iova < v + s]

    def map(self, iova: int, pa: int, size: int, prot: int) -> bool:
        """False when the writer must refuse with EEXIST."""
        if self._overlapping(iova, size):
            return False
        end = iova + size
        while iova < end:
            s = next(
                s
                for s in self.sizes
                if not (iova | pa) % s and end - iova >= s and (s, iova) not in self.tables
            )
            self.leaves[iova] = (pa, s, prot)
            for lvl in range(self.levels - 1):
                span = 1 << (12 + 9 * (lvl + 1))
                if span > s:
                    self.tables.add((span, iova & ~(span - 1)))
            iova += s
            pa += s
        return True

    def unmap(self, iova: int, size: int) -> int | None:
        """Bytes unmapped, or None when the writer must refuse to split a leaf (EINVAL)."""
        hit = self._overlapping(iova, size)
        if any(v < iova or v + self.leaves[v][1] > iova + size for v in hit):
            return None
        self.tables = {
            (span, b) for span, b in self.tables if not (iova <= b and b + span <= iova + size)
        }
        return sum(self.leaves.pop(v)[1] for v in hit)

    def _leaf(self, iova: int) -> tuple[int, int, int, int] | None:
        for v, (pa, s, prot) in self.leaves.items():
            if v <= iova < v + s:
                return v, pa, s, prot
        return None

    def lookup(self, iova: int) -> tuple[int, int] | None:
        leaf = self._leaf(iova)
        if leaf is None:
            return None
        v, pa, _, prot = leaf
        if prot & IOMMU_WRITE:
            prot |= IOMMU_READ  # W implies R
        return pa + iova - v, prot

    def phys(self, iova: int) -> int | None:
        found = self.lookup(iova)
        return None if found is None else found[0]

    def leaf_lg2(self, iova: int) -> int:
        leaf = self._leaf(iova)
        assert leaf is not None
        return leaf[2].bit_length() - 1


# ------------------------------------------------------------------------------ strategies
PROTS: Final = [
    IOMMU_READ,
    IOMMU_WRITE,
    RW,
    IOMMU_READ | IOMMU_NOEXEC,
    RW | IOMMU_NOEXEC,
    0,
    IOMMU_READ | IOMMU_PRIV,
]
OFFSETS: Final = [0, 1, 2, 255, 511, 512, 513, 1024, 1536]
NPAGES: Final = [1, 2, 3, 255, 512, 513, 1024]
PA_SHIFT: Final = [0, 1, 512]


def windows(name: str) -> list[int]:
    """Three 1 GiB-aligned windows: low, mid, and the top of the input address space (the
    upper canonical half for a first stage)."""
    f = FORMATS[name]
    top = (1 << 64) - (1 << (f.va_bits - 1)) if not f.gstage else (1 << f.va_bits) - 2 * G1
    return [0, 5 * G1, top]


#: An operation: (kind, window, offset in pages, pages, PA shift in pages or 1 GiB frame, prot).
Op = tuple[str, int, int, int, int, int]

op_st: st.SearchStrategy[Op] = st.one_of(
    st.tuples(
        st.just("map"),
        st.integers(0, 2),
        st.sampled_from(OFFSETS),
        st.sampled_from(NPAGES),
        st.sampled_from(PA_SHIFT),
        st.sampled_from(PROTS),
    ),
    st.tuples(
        st.just("giga"),
        st.integers(0, 2),
        st.just(0),
        st.just(G1 // K4),
        st.integers(0, 3),
        st.sampled_from(PROTS),
    ),
    st.tuples(
        st.just("unmap"),
        st.integers(0, 2),
        st.sampled_from(OFFSETS),
        st.sampled_from(NPAGES),
        st.just(0),
        st.just(0),
    ),
    st.tuples(
        st.just("unmap"), st.integers(0, 2), st.just(0), st.just(G1 // K4), st.just(0), st.just(0)
    ),
)


def note_event(name: str) -> None:
    """A Hypothesis event (shown with --hypothesis-show-statistics) when under @given."""
    if currently_in_test_context():
        event(name)


GEOMETRIES: Final = [CacheParams(0, 0, 0), CacheParams(2, 2, 2), CacheParams()]


def run_sequence(
    name: str, ops: list[Op], geometry: int, set_ad: bool, big_endian: bool, extra_probes: list[int]
) -> None:
    sysm = System(name, caches=GEOMETRIES[geometry], set_ad=set_ad, big_endian=big_endian)
    pt = sysm.pt
    model = Model([1 << (12 + 9 * lvl) for lvl in pt.fmt.leaf_levels], pt.fmt.levels)
    wins = windows(name)
    probes: list[int] = []
    for kind, win, off, npages, shift, prot in ops:
        iova = wins[win] + off * K4
        size = npages * K4
        if kind in ("map", "giga"):
            pa = DATA + shift * G1 if kind == "giga" else DATA + (off + shift) * K4
            if model.map(iova, pa, size, prot):
                pt.map(iova, pa, size, prot)
                note_event("map")
            else:
                with pytest.raises(Exists):
                    pt.map(iova, pa, size, prot)
                note_event("map refused: EEXIST")
        else:
            gather = IotlbGather()
            want = model.unmap(iova, size)
            if want is None:
                with pytest.raises(InvalidArgument, match="would split"):
                    pt.unmap(iova, size, gather)
                assert gather.empty
                note_event("unmap refused: split")
            else:
                assert pt.unmap(iova, size, gather) == want
                note_event(
                    "unmap frees tables"
                    if gather.freelist
                    else "unmap"
                    if want
                    else "unmap of a hole"
                )
                sysm.iotlb_sync(gather)
        # Probe the operation's pages (up to 16), its neighbours, the first page of the
        # leaves (so the IOTLB holds entries an unmap must invalidate) and earlier probes.
        step = max(1, npages // 16)
        here = [iova + k * K4 for k in range(0, npages, step)]
        here += [iova + size - K4, iova - K4, iova + size]
        for p in (*here, *probes, *sorted(model.leaves)[:32], *extra_probes):
            if 0 <= p < 1 << 64:
                sysm.check(model, p)
        probes = (probes + here)[-32:]
    # The table holds exactly the model's leaves, and every table page is accounted for
    # (root, other tables, plus the command queue and DDT pages).
    assert [(v, p, s) for v, p, s, _ in pt.walk_leaves()] == sorted(
        (v, p, s) for v, (p, s, _) in model.leaves.items()
    )
    assert sysm.pages.nr_allocated == (1 << pt.fmt.root_order) + len(pt.table_pages) - 1 + 2


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(op_st, min_size=1, max_size=14),
    geometry=st.integers(0, 2),
    set_ad=st.booleans(),
    big_endian=st.booleans(),
    extra=st.lists(st.integers(0, (1 << 64) - 1).map(lambda v: v & ~0xFFF), max_size=3),
)
def test_hardware_walk_agrees_with_the_writer(
    name: str, ops: list[Op], geometry: int, set_ad: bool, big_endian: bool, extra: list[int]
) -> None:
    run_sequence(name, ops, geometry, set_ad, big_endian, extra)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_leaf_size_and_both_halves(name: str) -> None:
    """A fixed sequence reaching 4 KiB, 2 MiB and 1 GiB leaves in each window, the upper
    canonical half (first stage) / the top of the GPA space (G-stage), table freeing and a
    range invalidation by pages."""
    ops: list[Op] = []
    for w in range(3):
        ops += [("map", w, 511, 3, 0, RW), ("giga", w, 0, G1 // K4, 1, IOMMU_READ)]
    ops += [
        ("unmap", 0, 511, 1, 0, 0),
        ("unmap", 0, 512, 1, 0, 0),
        ("unmap", 0, 0, 1024, 0, 0),
        ("unmap", 1, 0, G1 // K4, 0, 0),
        ("unmap", 2, 0, G1 // K4, 0, 0),
        ("map", 2, 0, 1024, 1, IOMMU_WRITE),
        # Cached 4 KiB entries, then a partial unmap that leaves the table in place: only
        # a per-page invalidation of every gathered page removes them.
        ("map", 0, 0, 3, 0, RW),
        ("unmap", 0, 1, 2, 0, 0),
    ]
    run_sequence(name, ops, 2, True, False, [])


# ------------------------------------------------------------------------------ ordering
class Watcher:
    """After every store the software makes, translate the probes on an uncached IOMMU:
    each must give the result before the operation or the result after it (the "old or new"
    rule of Linux's SMMUv3 KUnit context-update test)."""

    def __init__(self) -> None:
        self.sys: System | None = None
        self.probes: list[int] = []
        self.allowed: list[set[int]] = []
        self.stores = 0

    def __call__(self, access: MemAccess) -> None:
        if access.kind != "w" or self.sys is None or not self.allowed:
            return
        self.stores += 1
        for iova, ok in zip(self.probes, self.allowed, strict=True):
            got = self.sys.iommu.translate_pa(DID, iova, False)
            assert got in ok, f"after store {access}: {iova:#x} -> {got}, allowed {ok}"


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_walker_never_sees_a_half_built_table(name: str) -> None:
    """Every store of a map or unmap (table zeroing, entries, links, unlinks) leaves each
    probed address translating as before the operation or as after it."""
    watcher = Watcher()
    sysm = System(name, caches=CacheParams(0, 0, 0), sw_mem=lambda ram: TracingMemory(ram, watcher))
    watcher.sys = sysm
    pt = sysm.pt
    read = pt.iova_to_phys
    fault = -sysm.faults[0]
    base = 5 * G1
    pt.map(base, DATA, K4, RW)  # existing tables down to level 0 for part of the range
    steps: list[tuple[str, int, int, int]] = [
        ("map", base + M2 - 2 * K4, DATA + M2 - 2 * K4, M2 + 4 * K4),  # new + existing tables
        ("map", 9 * G1 + M2 - K4, DATA + K4, 2 * K4),  # a whole new path from the root
        ("unmap", base + M2 - 2 * K4, 0, M2 + 4 * K4),
        ("unmap", base, 0, K4),
        ("unmap", 9 * G1, 0, G1),
    ]
    for kind, iova, pa, size in steps:
        probes = [iova + k * K4 for k in range(0, size // K4, max(1, size // K4 // 8))]
        probes += [iova + size - K4, base]
        before = [read(p) for p in probes]
        watcher.probes = probes
        watcher.allowed = [{fault if b is None else b} for b in before]
        if kind == "map":
            for k, p in enumerate(probes):
                if iova <= p < iova + size:
                    watcher.allowed[k].add(p - iova + pa)
            pt.map(iova, pa, size, RW)
        else:
            for k, p in enumerate(probes):
                if iova <= p < iova + size:
                    watcher.allowed[k].add(fault)
            gather = IotlbGather()
            pt.unmap(iova, size, gather)
            watcher.allowed = []
            sysm.iotlb_sync(gather)
        watcher.allowed = []
        assert [read(p) for p in probes] == [
            (p - iova + pa if kind == "map" else None) if iova <= p < iova + size else b
            for p, b in zip(probes, before, strict=True)
        ]
    assert watcher.stores > 20


# ------------------------------------------------------------------------------ two stages
def test_two_stage_tables_written_by_software() -> None:
    """A first-stage Sv48 table in guest memory under a G-stage Sv39x4 table, both written by
    the writer: the walker translates the first-stage table pointers through the G-stage
    (riscv-iommu: "Two-stage address translation")."""
    ram = SparseMemory()
    iommu = RiscvIommu(ram, PRESETS["full"])
    host = PageAllocator(ram, POOL, 256 * K4)
    guest_ram = 0x1_0000_0000
    guest = PageAllocator(ram, guest_ram, 256 * K4)
    g = RiscvPageTable(ram, host, "sv39x4")
    s1 = RiscvPageTable(ram, guest, "sv48")  # guest tables: GPA = SPA under the identity map
    g.map(guest_ram, guest_ram, M2, RW)  # the guest's page-table memory, identity
    g.map(0x2000_0000, DATA, M2, RW)  # guest data GPA 512 MiB -> host DATA
    s1.map(0x7000_0000, 0x2000_0000 + 3 * K4, 2 * K4, RW)
    s1.map(0x7000_2000, 0x3000_0000, K4, IOMMU_READ)  # GPA without a G-stage mapping
    ddt = host.alloc_page()
    for k, w in enumerate(
        (DC_TC.encode(v=1), g.atp(gscid=GSCID), DC_TA.encode(pscid=PSCID), s1.atp())
    ):
        ram.write64(ddt + DID * 64 + 8 * k, w)
    iommu.write_register(OFF_DDTP, 8, (ddt >> 12) << 10 | MODE_1LVL)
    assert iommu.translate_pa(DID, 0x7000_1234) == DATA + 4 * K4 + 0x234
    assert iommu.translate_pa(DID, 0x7000_0010, True) == DATA + 3 * K4 + 0x10
    assert iommu.translate_pa(DID, 0x7000_2000) == -21  # guest-page fault on the final GPA
    assert iommu.translate_pa(DID, 0x7000_3000) == -13  # first-stage page fault
    assert iommu.translate_pa(DID, 0x7000_2000, True) == -15  # read-only first-stage leaf
