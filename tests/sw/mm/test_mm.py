"""Mm: a process address space with a RISC-V page table the IOMMU can share.

Demand paging (Linux ``do_anonymous_page``), mmap placement (``arch_get_unmapped_area_topdown``,
``vm.mmap_min_addr``), munmap/mprotect with MMU-notifier ordering
(``mmu_notifier_arch_invalidate_secondary_tlbs``; riscv-iommu: "Guidelines for
invalidations"), exit (``exit_mmap``), and errors that change nothing.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Final

import pytest

from iommusim.bits.riscv.pgtable import PTE
from iommusim.errors import ApiError, BadAddress, Busy, InvalidArgument, NotFound, OutOfMemory
from iommusim.mem import SparseMemory
from iommusim.sw.mm import (
    MMAP_MIN_ADDR,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    Mm,
    MmStats,
    MmuNotifier,
    Vma,
)
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import FORMATS
from iommusim.sw.pgtable.riscv import riscv_atp
from iommusim.sw.prot import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE

P: Final = 0x1000
M2: Final = 1 << 21
G1: Final = 1 << 30
POOL: Final = 0x8000_0000
RW: Final = PROT_READ | PROT_WRITE
V, R, W, X, U, A, D = (PTE.mask(n) for n in "vrwxuad")


def make(fmt: str = "sv48", pool_pages: int = 512) -> tuple[SparseMemory, PageAllocator, Mm]:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, pool_pages * P)
    return mem, pages, Mm(mem, pages, fmt)


def raw_pte(mm: Mm, va: int) -> int:
    """The level-0 PTE for ``va``, read from memory as the hardware would (0 if no table)."""
    pt = mm.pgtable
    tpa = pt.root_pa
    for level in range(pt.fmt.levels - 1, 0, -1):
        entry = mm.mem.read64(tpa + 8 * ((va >> (12 + 9 * level)) & 511))
        if not entry & V:
            return 0
        tpa = PTE["ppn"].get(entry) << 12
    return mm.mem.read64(tpa + 8 * ((va >> 12) & 511))


def snapshot(mm: Mm) -> tuple[object, ...]:
    """Everything a failed call must leave alone."""
    mem = mm.mem
    assert isinstance(mem, SparseMemory)
    return (
        mm.vmas(),
        mm.resident,
        repr(mm.stats),
        list(mem.pages()),
        mm.pages.nr_free,
        mm.pgtable.table_pages,
        list(mm.pgtable.walk_leaves()),
    )


class Recorder:
    """A notifier that records its calls and runs ``on_invalidate`` inside each one."""

    def __init__(self, log: list[tuple[object, ...]] | None = None, tag: str = "n") -> None:
        self.log: list[tuple[object, ...]] = [] if log is None else log
        self.tag = tag
        self.on_invalidate: Callable[[int, int, bool], None] | None = None
        self.on_release: Callable[[], None] | None = None

    def invalidate(self, mm: Mm, start: int, end: int, tables_freed: bool) -> None:
        self.log.append((self.tag, "invalidate", start, end, tables_freed))
        if self.on_invalidate is not None:
            self.on_invalidate(start, end, tables_freed)

    def release(self, mm: Mm) -> None:
        self.log.append((self.tag, "release"))
        if self.on_release is not None:
            self.on_release()


def test_recorder_is_an_mmu_notifier() -> None:
    n: MmuNotifier = Recorder()  # checked by mypy on the tests
    assert n is not None


# ------------------------------------------------------------------------------ creation
@pytest.mark.parametrize(
    ("fmt", "mode", "va_bits"), [("sv39", 8, 39), ("sv48", 9, 48), ("sv57", 10, 57)]
)
def test_formats_and_layout(fmt: str, mode: int, va_bits: int) -> None:
    _, pages, mm = make(fmt)
    satp = riscv_atp(mm.table())
    assert satp >> 60 == mode and (satp & ((1 << 44) - 1)) << 12 == mm.pgtable.root_pa
    assert mm.task_size == 1 << (va_bits - 1)
    assert mm.mmap_base == mm.task_size - G1
    assert pages.nr_allocated == 1  # the root table only
    assert mm.pasid is None and mm.name == "mm" and not mm.exited
    assert mm.stats == MmStats()
    mm.pasid = 7
    assert mm.pasid == 7


def test_only_cpu_formats() -> None:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 16 * P)
    with pytest.raises(
        InvalidArgument,
        match="fmt must be one of sv39, sv48, sv57, arm64-4k, arm64-64k, not 'sv39x4'",
    ):
        Mm(mem, pages, "sv39x4")
    assert pages.nr_allocated == 0


# ------------------------------------------------------------------------------ mmap
def test_mmap_is_top_down_below_mmap_base_and_allocates_nothing() -> None:
    _, pages, mm = make()
    a = mm.mmap(3 * P, RW)
    assert a == mm.mmap_base - 3 * P
    b = mm.mmap(5000, PROT_READ)  # rounded up to 2 pages
    assert b == a - 2 * P
    c = mm.mmap(P, RW)
    assert c == b - P
    assert mm.vmas() == [Vma(c, b, RW), Vma(b, a, PROT_READ), Vma(a, a + 3 * P, RW)]
    assert pages.nr_allocated == 1 and mm.stats.pages == 0
    assert mm.translate(a) is None and mm.find_vma(a + 5) == Vma(a, a + 3 * P, RW)
    assert mm.find_vma(a + 3 * P) is None


def test_adjacent_areas_with_equal_prot_merge() -> None:
    _, _, mm = make()
    a = mm.mmap(2 * P, RW)
    b = mm.mmap(P, RW)
    assert b == a - P and mm.vmas() == [Vma(b, a + 2 * P, RW)]


def test_mmap_hint_is_used_when_free() -> None:
    _, _, mm = make()
    assert mm.mmap(P, RW, addr=0x4000_0000) == 0x4000_0000
    # Occupied: falls back to the top-down search.
    assert mm.mmap(P, RW, addr=0x4000_0000) == mm.mmap_base - P
    # Below mmap_min_addr or beyond user space: not usable as a hint.
    assert mm.mmap(P, RW, addr=0) == mm.mmap_base - 2 * P
    assert mm.mmap(2 * P, RW, addr=mm.task_size - P) == mm.mmap_base - 4 * P


def test_mmap_falls_back_above_mmap_base_then_enomem() -> None:
    _, _, mm = make("sv39")
    low = mm.mmap(mm.mmap_base - MMAP_MIN_ADDR, PROT_NONE)
    assert low == MMAP_MIN_ADDR
    assert mm.mmap(G1 // 2, RW) == mm.mmap_base  # Linux's bottom-up fallback
    before = snapshot(mm)
    with pytest.raises(OutOfMemory, match="no free range"):
        mm.mmap(G1, RW)
    with pytest.raises(OutOfMemory, match="exceeds user space"):
        mm.mmap(mm.task_size, RW)
    assert snapshot(mm) == before


def test_fixed_replaces_existing_mappings_as_munmap_then_mmap() -> None:
    _, pages, mm = make()
    rec = Recorder()
    mm.register_notifier(rec)
    a = mm.mmap(4 * P, RW, addr=0x100_0000, fixed=True)
    assert a == 0x100_0000
    mm.write(a, b"\xaa" * (4 * P))
    used = pages.nr_allocated
    assert mm.mmap(2 * P, PROT_READ, addr=a + P, fixed=True) == a + P
    assert rec.log == [("n", "invalidate", a + P, a + 3 * P, False)]
    assert mm.vmas() == [
        Vma(a, a + P, RW),
        Vma(a + P, a + 3 * P, PROT_READ),
        Vma(a + 3 * P, a + 4 * P, RW),
    ]
    assert pages.nr_allocated == used - 2
    assert mm.read(a + P, 2 * P) == bytes(2 * P)  # new, zeroed pages
    assert mm.read(a, 1) == b"\xaa"


def test_fixed_over_nothing_needs_no_invalidation() -> None:
    _, _, mm = make()
    rec = Recorder()
    mm.register_notifier(rec)
    mm.mmap(P, RW, addr=0x100_0000, fixed=True)
    mm.mmap(P, PROT_READ, addr=0x100_0000, fixed=True)  # an area, but no page present
    assert rec.log == [] and mm.stats.invalidations == 0


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"length": 0}, InvalidArgument, "length must be > 0, not 0"),
        ({"length": -P}, InvalidArgument, "length must be > 0"),
        ({"prot": 8}, InvalidArgument, "prot must be a combination of PROT_READ"),
        ({"prot": -1}, InvalidArgument, "prot must be a combination"),
        ({"addr": 0x10001}, InvalidArgument, "addr must be 4 KiB aligned, not 0x10001"),
        ({"addr": -P}, InvalidArgument, "addr must be 4 KiB aligned"),
        ({"fixed": True}, InvalidArgument, "fixed needs an addr"),
        ({"fixed": True, "addr": 0xF000}, InvalidArgument, "addr must be >= 0x10000"),
        (
            {"fixed": True, "addr": (1 << 47) - P, "length": 2 * P},
            OutOfMemory,
            "exceeds user space",
        ),
        ({"length": 1 << 47}, OutOfMemory, "exceeds user space"),
    ],
)
def test_mmap_errors_change_nothing(kw: dict[str, int], exc: type[ApiError], match: str) -> None:
    _, _, mm = make()
    a = mm.mmap(P, RW)
    mm.write(a, b"x")
    before = snapshot(mm)
    args: dict[str, int] = {"length": P, "prot": RW, **kw}
    length = args.pop("length")
    prot = args.pop("prot")
    with pytest.raises(exc, match=match) as ei:
        mm.mmap(length, prot, **args)  # type: ignore[arg-type]
    assert ei.value.errno == (errno.ENOMEM if exc is OutOfMemory else errno.EINVAL)
    assert snapshot(mm) == before


def test_populate_faults_everything_in_and_is_best_effort() -> None:
    _, pages, mm = make("sv39", pool_pages=8)
    a = mm.mmap(2 * P, RW, populate=True)
    assert mm.stats.pages == 2 and mm.stats.faults == mm.stats.cpu_faults == 2
    assert mm.translate(a) is not None and mm.translate(a + P) is not None
    # 1 root + 2 tables + 2 data pages used; 3 free: a 5-page populate gets 3 and succeeds.
    b = mm.mmap(5 * P, PROT_READ, populate=True)
    assert pages.nr_free == 0
    assert [mm.translate(b + k * P) is not None for k in range(5)] == [True] * 3 + [False] * 2
    assert mm.vmas()[0] == Vma(b, b + 5 * P, PROT_READ)
    c = mm.mmap(P, PROT_NONE, populate=True)  # nothing to populate
    assert mm.translate(c) is None


# ------------------------------------------------------------------------------ demand paging
def test_untouched_pages_read_as_zeros_and_are_faulted_in_by_the_access() -> None:
    _, pages, mm = make()
    a = mm.mmap(4 * P, RW)
    before = pages.nr_allocated
    assert mm.read(a + P + 10, 20) == bytes(20)
    assert mm.stats.faults == mm.stats.cpu_faults == 1 and mm.stats.remote_faults == 0
    assert mm.stats.pages == 1 and pages.nr_allocated == before + 1 + 3  # data + 3 tables
    assert mm.translate(a) is None and mm.translate(a + P) is not None


def test_data_round_trips_across_pages() -> None:
    mem, _, mm = make()
    a = mm.mmap(3 * P, RW)
    data = bytes(range(256)) * 17  # 4352 bytes over three pages
    mm.write(a + P - 100, data)
    assert mm.read(a + P - 100, len(data)) == data
    assert mm.read(a + P - 101, 1) == b"\0"
    assert mm.stats.pages == 3 and mm.stats.faults == 3
    # The bytes are really in the pages the page table names.
    pa = mm.translate(a + P)
    assert pa is not None and mem.read(pa, 4) == data[100:104]
    mm.write(a, b"")
    assert mm.read(a, 0) == b""


def test_present_pages_are_not_faulted_again() -> None:
    _, _, mm = make()
    a = mm.mmap(P, RW)
    mm.write(a, b"hi")
    pa = mm.translate(a)
    assert mm.fault_in(a, write=True) and mm.fault_in(a + 5)
    assert mm.read(a, 2) == b"hi" and mm.translate(a) == pa and mm.stats.faults == 1


@pytest.mark.parametrize(
    ("prot", "read", "write", "exec_"),
    [
        (PROT_NONE, False, False, False),
        (PROT_READ, True, False, False),
        (PROT_WRITE, True, True, False),  # write implies read
        (RW, True, True, False),
        (PROT_EXEC, False, False, True),
        (PROT_READ | PROT_EXEC, True, False, True),
        (RW | PROT_EXEC, True, True, True),
    ],
)
def test_fault_in_follows_the_area_protection(
    prot: int, read: bool, write: bool, exec_: bool
) -> None:
    _, _, mm = make()
    a = mm.mmap(P, prot)
    before = snapshot(mm)
    assert mm.fault_in(a, write=True) is write
    assert mm.fault_in(a, exec_=True) is exec_
    assert mm.fault_in(a) is read
    assert mm.fault_in(a, write=True, exec_=True) is (write and exec_)
    if not (read or write or exec_):
        assert snapshot(mm) == before
    else:
        assert mm.stats.faults == 1 and mm.translate(a) is not None


def test_fault_in_outside_every_area() -> None:
    _, _, mm = make()
    before = snapshot(mm)
    for addr in (0, MMAP_MIN_ADDR, mm.mmap_base, -P, mm.task_size, 1 << 64):
        assert mm.fault_in(addr) is False
    assert snapshot(mm) == before


def test_remote_faults_are_counted_apart() -> None:
    _, _, mm = make()
    a = mm.mmap(2 * P, RW)
    assert mm.fault_in(a, write=True, remote=True)
    mm.write(a + P, b"x")
    assert (mm.stats.faults, mm.stats.cpu_faults, mm.stats.remote_faults) == (2, 1, 1)
    assert mm.stats.peak_pages == 2


# ------------------------------------------------------------------------------ PTEs
@pytest.mark.parametrize(
    ("prot", "bits"),
    [
        (PROT_READ, V | R | U | A),
        (PROT_WRITE, V | R | W | U | A | D),
        (RW, V | R | W | U | A | D),
        (PROT_EXEC, V | X | U | A),
        (PROT_READ | PROT_EXEC, V | R | X | U | A),
        (RW | PROT_EXEC, V | R | W | X | U | A | D),
    ],
)
def test_leaves_are_user_pages_with_a_d_preset(prot: int, bits: int) -> None:
    """Linux RISC-V protection_map: U = 1, A preset, D preset on writable pages, X only with
    PROT_EXEC, W implies R."""
    _, _, mm = make()
    a = mm.mmap(P, prot)
    assert mm.fault_in(a, exec_=bool(prot & PROT_EXEC), write=bool(prot & PROT_WRITE))
    pa = mm.translate(a)
    assert pa is not None
    assert raw_pte(mm, a) == bits | (pa >> 12) << 10
    iprot = mm.pgtable.lookup(a)
    assert iprot is not None and iprot[:3] == (a, pa, P)
    assert bool(iprot[3] & IOMMU_WRITE) == bool(prot & PROT_WRITE)
    assert bool(iprot[3] & IOMMU_NOEXEC) != bool(prot & PROT_EXEC)
    assert bool(iprot[3] & IOMMU_READ) == bool(prot & RW)


# ------------------------------------------------------------------------------ read / write
def test_read_write_efault_before_touching_anything() -> None:
    _, _, mm = make()
    a = mm.mmap(2 * P, RW, addr=0x100_0000)
    mm.mmap(P, PROT_READ, addr=a + 2 * P)
    mm.mmap(P, PROT_EXEC, addr=a + 4 * P)  # a hole at a + 3P
    before = snapshot(mm)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: mm.write(a + P, bytes(P + 1)), f"address {a + 2 * P:#x} cannot be written"),
        (lambda: mm.read(a, 3 * P + 1), f"address {a + 3 * P:#x} cannot be read: not mapped"),
        (lambda: mm.read(a + 4 * P, 1), "cannot be read"),
        (lambda: mm.read(a - 1, 2), f"address {a - 1:#x} cannot be read"),
        (lambda: mm.read(-1, 2), "outside user space"),
        (lambda: mm.write(mm.task_size - 1, b"ab"), "outside user space"),
    ]
    for call, match in cases:
        with pytest.raises(BadAddress, match=match) as ei:
            call()
        assert ei.value.errno == errno.EFAULT
        assert snapshot(mm) == before
    with pytest.raises(InvalidArgument, match="n must be >= 0"):
        mm.read(a, -1)
    assert mm.read(a + 2 * P, 1) == b"\0"  # read-only area: readable


def test_write_out_of_memory_changes_nothing() -> None:
    """The whole range's pages (data + tables) are counted before the first fault."""
    _, pages, mm = make("sv39", pool_pages=6)
    a = mm.mmap(4 * P, RW)
    mm.write(a, b"x")  # root + 2 tables + 1 page: 2 free
    before = snapshot(mm)
    with pytest.raises(OutOfMemory, match="needs 3 pages, 2 free"):
        mm.write(a, bytes(4 * P))
    assert snapshot(mm) == before
    mm.write(a + P, bytes(2 * P))  # exactly enough
    assert pages.nr_free == 0


def test_fault_in_out_of_memory_changes_nothing() -> None:
    _, _, mm = make("sv48", pool_pages=3)  # root + 2: the data page fits, 3 tables do not
    a = mm.mmap(P, RW)
    before = snapshot(mm)
    with pytest.raises(OutOfMemory) as ei:
        mm.fault_in(a, remote=True)
    assert ei.value.errno == errno.ENOMEM
    assert snapshot(mm) == before
    _, _, mm = make("sv39", pool_pages=3)  # root + 2 tables: no data page
    a = mm.mmap(P, RW)
    before = snapshot(mm)
    with pytest.raises(OutOfMemory):
        mm.read(a, 1)
    assert snapshot(mm) == before


# ------------------------------------------------------------------------------ munmap
def test_munmap_splits_areas_and_frees_pages() -> None:
    _, pages, mm = make()
    a = mm.mmap(8 * P, RW, addr=0x100_0000)
    mm.write(a, bytes(range(256)) * 128)  # all 8 pages
    used = pages.nr_allocated
    mm.munmap(a + 2 * P, 3 * P)
    assert mm.vmas() == [Vma(a, a + 2 * P, RW), Vma(a + 5 * P, a + 8 * P, RW)]
    assert pages.nr_allocated == used - 3 and mm.stats.pages == 5
    assert mm.stats.peak_pages == 8
    assert [mm.translate(a + k * P) is None for k in range(8)] == [False] * 2 + [True] * 3 + [
        False
    ] * 3
    assert mm.read(a + 5 * P, 2) == bytes([0, 1])
    mm.munmap(a + P, 1)  # length rounded up
    assert mm.vmas()[0] == Vma(a, a + P, RW)


def test_munmap_notifies_once_after_the_ptes_and_before_any_free() -> None:
    _, pages, mm = make()
    a = mm.mmap(4 * P, RW, addr=0x100_0000)
    mm.write(a, bytes(4 * P))
    pas = [mm.translate(a + k * P) for k in range(4)]
    rec = Recorder()
    mm.register_notifier(rec)
    seen: list[bool] = []

    def inside(start: int, end: int, tables_freed: bool) -> None:
        # The PTEs are already clear in memory ...
        seen.append(all(raw_pte(mm, a + k * P) == 0 for k in range(1, 3)))
        # ... and the data pages are still allocated.
        seen.append(all(pages.order_of(pa) == 0 for pa in pas if pa is not None))

    rec.on_invalidate = inside
    mm.munmap(a + P, 2 * P)
    assert rec.log == [("n", "invalidate", a + P, a + 3 * P, False)]
    assert seen == [True, True]
    assert [pages.order_of(pa) for pa in pas if pa is not None] == [0, None, None, 0]
    assert mm.stats.invalidations == 1


def test_munmap_of_a_whole_table_span_reports_tables_freed_and_frees_them_after() -> None:
    _, pages, mm = make()
    base = 4 * G1
    a = mm.mmap(2 * M2, RW, addr=base, fixed=True)
    mm.write(a + M2 + 5 * P, b"z")  # one level-0 table, under level-1 and level-2 tables
    tables = [t for t in mm.pgtable.table_pages if t != mm.pgtable.root_pa]
    assert len(tables) == 3
    rec = Recorder()
    mm.register_notifier(rec)
    freed_inside: list[list[int | None]] = []
    rec.on_invalidate = lambda s, e, f: freed_inside.append([pages.order_of(t) for t in tables])
    baseline = pages.nr_allocated
    mm.munmap(base, G1)  # the whole level-1 table's span
    assert rec.log == [("n", "invalidate", base, base + G1, True)]
    assert freed_inside == [[0, 0, 0]]  # still allocated during the callback
    # The level-1 and level-0 tables go; the level-2 table stays (its span is 512 GiB).
    assert pages.nr_allocated == baseline - 1 - 2
    assert mm.vmas() == []


def test_munmap_of_an_emptied_table_span_still_invalidates() -> None:
    """A table emptied by earlier unmaps stays linked; unmapping its whole span later
    unlinks it, which the IOMMU may cache as a non-leaf entry: invalidate with
    tables_freed even though no leaf was present."""
    _, _, mm = make()
    a = mm.mmap(M2, RW, addr=G1, fixed=True)
    mm.write(a, b"x")
    mm.munmap(a, P)
    rec = Recorder()
    mm.register_notifier(rec)
    mm.mmap(M2, RW, addr=G1, fixed=True)
    mm.munmap(a, M2)
    assert rec.log == [("n", "invalidate", a, a + M2, True)]


def test_munmap_of_holes_and_absent_pages_does_not_invalidate() -> None:
    _, _, mm = make()
    rec = Recorder()
    mm.register_notifier(rec)
    a = mm.mmap(4 * P, RW)
    mm.munmap(MMAP_MIN_ADDR, 16 * P)
    mm.munmap(a, 4 * P)
    assert rec.log == [] and mm.vmas() == [] and mm.stats.invalidations == 0


@pytest.mark.parametrize(
    ("addr", "length", "match"),
    [
        (0x10001, P, "addr must be 4 KiB aligned"),
        (0x10000, 0, "length must be > 0"),
        (0x10000, -1, "length must be > 0"),
        (1 << 47, P, "must lie below task_size"),
    ],
)
def test_munmap_errors_change_nothing(addr: int, length: int, match: str) -> None:
    _, _, mm = make()
    a = mm.mmap(P, RW, addr=0x10000)
    mm.write(a, b"q")
    before = snapshot(mm)
    with pytest.raises(InvalidArgument, match=match):
        mm.munmap(addr, length)
    assert snapshot(mm) == before


# ------------------------------------------------------------------------------ mprotect
def test_mprotect_splits_merges_and_rewrites_present_ptes() -> None:
    _, _, mm = make()
    a = mm.mmap(4 * P, RW, addr=0x100_0000)
    mm.write(a, bytes(4 * P))
    mm.mprotect(a + P, 2 * P, PROT_READ)
    assert mm.vmas() == [
        Vma(a, a + P, RW),
        Vma(a + P, a + 3 * P, PROT_READ),
        Vma(a + 3 * P, a + 4 * P, RW),
    ]
    assert raw_pte(mm, a + P) & (R | W | X | D) == R | D  # D kept when W goes
    assert raw_pte(mm, a) & (R | W) == R | W
    mm.mprotect(a + P, 2 * P, RW)
    assert mm.vmas() == [Vma(a, a + 4 * P, RW)]
    assert raw_pte(mm, a + P) & (R | W) == R | W
    mm.mprotect(a, 0, PROT_NONE)  # length 0: nothing, as Linux
    assert mm.vmas() == [Vma(a, a + 4 * P, RW)]


def test_mprotect_downgrade_invalidates_after_the_pte_store_upgrade_does_not() -> None:
    _, _, mm = make()
    a = mm.mmap(2 * P, RW, addr=0x100_0000)
    mm.write(a, b"data")
    rec = Recorder()
    mm.register_notifier(rec)
    inside: list[int] = []
    rec.on_invalidate = lambda s, e, f: inside.append(raw_pte(mm, a) & (R | W))
    mm.mprotect(a, 2 * P, PROT_READ)
    assert rec.log == [("n", "invalidate", a, a + 2 * P, False)]
    assert inside == [R]  # already downgraded when the callback runs
    assert mm.fault_in(a, write=True) is False
    with pytest.raises(BadAddress):
        mm.write(a, b"x")
    assert mm.read(a, 4) == b"data"
    rec.log.clear()
    mm.mprotect(a, 2 * P, RW | PROT_EXEC)  # only gains
    mm.mprotect(a, 2 * P, PROT_WRITE | PROT_EXEC)  # same PTE bits: W implies R
    assert rec.log == []
    assert mm.fault_in(a, write=True, exec_=True)
    mm.mprotect(a, 2 * P, RW)  # loses X
    assert rec.log == [("n", "invalidate", a, a + 2 * P, False)]
    assert mm.stats.invalidations == 2


def test_mprotect_without_present_pages_does_not_invalidate() -> None:
    _, _, mm = make()
    rec = Recorder()
    mm.register_notifier(rec)
    a = mm.mmap(2 * P, RW)
    mm.mprotect(a, 2 * P, PROT_NONE)
    mm.mprotect(a, 2 * P, PROT_READ)
    assert rec.log == []


def test_prot_none_keeps_the_data_and_maps_it_again() -> None:
    _, pages, mm = make()
    a = mm.mmap(2 * P, RW, addr=G1 + M2, fixed=True)
    mm.write(a, b"keep me")
    pa = mm.translate(a)
    rec = Recorder()
    mm.register_notifier(rec)
    mm.mprotect(a, 2 * P, PROT_NONE)
    assert rec.log == [("n", "invalidate", a, a + 2 * P, False)]
    assert mm.translate(a) is None and raw_pte(mm, a) == 0
    assert mm.fault_in(a) is False
    with pytest.raises(BadAddress):
        mm.read(a, 1)
    assert mm.stats.pages == 1 and pa is not None and pages.order_of(pa) == 0
    used = pages.nr_allocated
    mm.mprotect(a, 2 * P, PROT_READ)
    assert mm.translate(a) is None  # mapped again on the next access
    assert mm.read(a, 7) == b"keep me"
    assert mm.translate(a) == pa and pages.nr_allocated == used
    assert mm.stats.faults == 2
    # PROT_NONE over a table's whole span unlinks the emptied table.
    rec.log.clear()
    mm.mmap(M2, RW, addr=G1 + M2, fixed=True)
    mm.write(G1 + M2, b"x")
    mm.mprotect(G1 + M2, M2, PROT_NONE)
    assert rec.log[-1] == ("n", "invalidate", G1 + M2, G1 + 2 * M2, True)


def test_mprotect_errors_change_nothing() -> None:
    _, _, mm = make()
    a = mm.mmap(2 * P, RW, addr=0x100_0000)
    mm.mmap(P, RW, addr=a + 3 * P)  # a hole at a + 2P
    mm.write(a, b"x")
    before = snapshot(mm)
    with pytest.raises(OutOfMemory, match="is not fully mapped") as ei:
        mm.mprotect(a, 4 * P, PROT_READ)
    assert ei.value.errno == errno.ENOMEM
    for args, match in [
        ((a + 1, P, PROT_READ), "addr must be 4 KiB aligned"),
        ((a, P, 16), "prot must be a combination"),
        ((a, -P, PROT_READ), "length must be >= 0"),
    ]:
        with pytest.raises(InvalidArgument, match=match):
            mm.mprotect(*args)
    with pytest.raises(OutOfMemory):
        mm.mprotect(mm.task_size - P, 2 * P, PROT_READ)
    assert snapshot(mm) == before


# ------------------------------------------------------------------------------ notifiers
def test_notifier_registration() -> None:
    _, _, mm = make()
    n = Recorder()
    mm.register_notifier(n)
    with pytest.raises(Busy) as ei:
        mm.register_notifier(n)
    assert ei.value.errno == errno.EBUSY
    mm.unregister_notifier(n)
    with pytest.raises(NotFound) as e2:
        mm.unregister_notifier(n)
    assert e2.value.errno == errno.ENOENT
    a = mm.mmap(P, RW)
    mm.write(a, b"x")
    mm.munmap(a, P)
    assert n.log == []  # unregistered: no callbacks
    assert mm.stats.invalidations == 1  # the round happens with no notifier too


def test_every_notifier_is_called_in_registration_order() -> None:
    _, _, mm = make()
    log: list[tuple[object, ...]] = []
    n1, n2 = Recorder(log, "a"), Recorder(log, "b")
    mm.register_notifier(n1)
    mm.register_notifier(n2)
    a = mm.mmap(P, RW)
    mm.write(a, b"x")
    mm.munmap(a, P)
    assert log == [("a", "invalidate", a, a + P, False), ("b", "invalidate", a, a + P, False)]


# ------------------------------------------------------------------------------ exit
def test_exit_releases_notifiers_first_and_returns_every_page() -> None:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 512 * P)
    keep = pages.alloc_page()  # someone else's page
    baseline = pages.nr_allocated
    mm = Mm(mem, pages, "sv57", name="proc")
    log: list[tuple[object, ...]] = []
    n1, n2 = Recorder(log, "a"), Recorder(log, "b")
    mm.register_notifier(n1)
    mm.register_notifier(n2)
    a = mm.mmap(8 * P, RW)
    b = mm.mmap(2 * P, PROT_READ, addr=0x10000)
    mm.write(a, bytes(8 * P))
    mm.read(b, P + 1)
    mm.mprotect(a, P, PROT_NONE)
    mm.fault_in(a + 3 * P, remote=True)
    log.clear()
    still_mapped: list[bool] = []
    n1.on_release = lambda: still_mapped.append(mm.translate(a + P) is not None)
    mm.exit()
    assert log == [("a", "release"), ("b", "release")]  # and no invalidate after
    assert still_mapped == [True]
    assert pages.nr_allocated == baseline and pages.order_of(keep) == 0
    assert mm.exited and mm.vmas() == [] and mm.stats.pages == 0
    assert mm.translate(a + P) is None and mm.find_vma(a) is None
    assert mm.fault_in(a) is False
    for call in (
        lambda: mm.mmap(P, RW),
        lambda: mm.munmap(a, P),
        lambda: mm.mprotect(a, P, RW),
        lambda: mm.read(a, 1),
        lambda: mm.write(a, b"x"),
        mm.table,
        lambda: mm.register_notifier(Recorder()),
    ):
        with pytest.raises(InvalidArgument, match="mm 'proc' has exited"):
            call()
    mm.exit()  # a no-op
    assert log == [("a", "release"), ("b", "release")]
    mm.unregister_notifier(n1)  # released notifiers may still be unregistered
    with pytest.raises(NotFound):
        mm.unregister_notifier(n1)
    assert "exited" in repr(mm)


def test_mm_takes_a_format_object() -> None:
    """An address space is built on a page-table format descriptor, not only a satp mode
    name; a G-stage format (zero-extended GPAs) has no user half and is refused with nothing
    allocated (privileged spec "Two-Stage Address Translation")."""
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 16 * P)
    mm = Mm(mem, pages, FORMATS["sv39"])
    assert mm.pgtable.pt is FORMATS["sv39"].pt and mm.task_size == 1 << 38
    assert riscv_atp(mm.table()) >> 60 == 8
    with pytest.raises(InvalidArgument, match=r"first-stage format, not sv39x4"):
        Mm(mem, pages, FORMATS["sv39x4"])
    assert pages.nr_allocated == 1
