"""Dirty tracking in the radix writer (after Linux ``iommu_dirty_ops`` over io-pgtable):
clean leaves under ``track_dirty``, ``read_and_clear_dirty`` reporting whole leaves and
gathering the cleaned ones for the IOTLB invalidation, ``set_dirty`` for hardware that stops
updating D (riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates",
"Accessed (A)/Dirty (D) bit updates and page promotions")."""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.bits.riscv.pgtable import PTE
from iommusim.errors import InvalidArgument
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import IotlbGather, RiscvPageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

POOL: Final = 0x8000_0000
K4: Final = 4096
M2: Final = 2 << 20
RW: Final = IOMMU_READ | IOMMU_WRITE
_D: Final = PTE.mask("d")
_A: Final = PTE.mask("a")


def table(fmt: str = "sv39", big_endian: bool = False) -> tuple[SparseMemory, RiscvPageTable]:
    mem = SparseMemory()
    return mem, RiscvPageTable(mem, PageAllocator(mem, POOL, 64 * K4), fmt, big_endian=big_endian)


def leaf_pa(pt: RiscvPageTable, iova: int) -> int:
    """Where the leaf PTE of ``iova`` lives (a software walk, little-endian tables)."""
    f = pt.pt
    tpa = pt.root_pa
    for level in range(f.levels - 1, -1, -1):
        pa = tpa + ((iova >> f.level_shift(level)) & f.index_mask(level)) * 8
        entry = pt.mem.read64(pa)
        if f.is_leaf(entry):
            return pa
        tpa = f.oa_of(entry)
    raise AssertionError(f"no leaf for {iova:#x}")


def dirty(pt: RiscvPageTable, *iovas: int) -> None:
    """What the hardware does on a write: set D in the leaf."""
    for iova in iovas:
        pa = leaf_pa(pt, iova)
        pt.mem.write64(pa, pt.mem.read64(pa) | _D)


def read(
    pt: RiscvPageTable, iova: int, size: int, no_clear: bool = False
) -> tuple[list[tuple[int, int]], IotlbGather]:
    got: list[tuple[int, int]] = []
    gather = IotlbGather()
    pt.read_and_clear_dirty(iova, size, no_clear, lambda i, n: got.append((i, n)), gather)
    return got, gather


def test_leaves_map_clean_only_under_track_dirty() -> None:
    mem, pt = table()
    pt.map(0, POOL + 32 * K4, K4, RW)
    assert mem.read64(leaf_pa(pt, 0)) & (_A | _D) == _A | _D  # set_ad: preset
    pt.track_dirty = True
    pt.map(K4, POOL + 33 * K4, K4, RW)
    assert mem.read64(leaf_pa(pt, K4)) & (_A | _D) == _A
    assert pt.leaf_bits(RW) & _D == 0


def test_read_and_clear_reports_whole_leaves_and_gathers_the_cleaned_ones() -> None:
    mem, pt = table()
    pt.track_dirty = True
    pt.map(0, POOL + 32 * K4, 2 * K4, RW)
    pt.map(M2, 0x4000_0000, M2, RW)
    dirty(pt, K4, M2)
    got, gather = read(pt, 0, 2 * M2)
    assert got == [(K4, K4), (M2, M2)]
    assert (gather.start, gather.end, gather.pgsize) == (K4, 2 * M2 - 1, K4)
    assert not mem.read64(leaf_pa(pt, K4)) & _D and not mem.read64(leaf_pa(pt, M2)) & _D
    assert read(pt, 0, 2 * M2)[0] == []
    # A range that only touches the superpage reports (and cleans) all of it.
    dirty(pt, M2)
    got, gather = read(pt, M2 + 5 * K4, K4)
    assert got == [(M2, M2)] and (gather.start, gather.size) == (M2, M2)


def test_no_clear_keeps_d_and_gathers_nothing() -> None:
    mem, pt = table()
    pt.track_dirty = True
    pt.map(0, POOL + 32 * K4, K4, RW)
    dirty(pt, 0)
    got, gather = read(pt, 0, K4, no_clear=True)
    assert got == [(0, K4)] and gather.empty
    assert mem.read64(leaf_pa(pt, 0)) & _D


def test_the_upper_canonical_half_reports_sign_extended_iovas() -> None:
    _, pt = table()
    pt.track_dirty = True
    top = (1 << 64) - M2
    pt.map(top, POOL + 32 * K4, K4, RW)
    dirty(pt, top)
    assert read(pt, top, M2)[0] == [(top, K4)]


def test_big_endian_tables_clear_the_right_bit() -> None:
    mem, pt = table(big_endian=True)
    pt.track_dirty = True
    pt.map(0, POOL + 32 * K4, K4, RW)
    pa = pt.root_pa
    for _ in range(2):  # two table levels of Sv39 down to the level-0 table
        entry = int.from_bytes(mem.read64(pa).to_bytes(8, "little"), "big")
        pa = pt.pt.oa_of(entry)
    raw = int.from_bytes(mem.read64(pa).to_bytes(8, "little"), "big")
    mem.write64(pa, int.from_bytes((raw | _D).to_bytes(8, "big"), "little"))
    assert read(pt, 0, K4)[0] == [(0, K4)]
    assert int.from_bytes(mem.read64(pa).to_bytes(8, "little"), "big") == raw


def test_set_dirty_marks_writable_leaves_only() -> None:
    mem, pt = table("sv48x4")
    pt.track_dirty = True
    pt.map(0, POOL + 32 * K4, K4, RW)
    pt.map(K4, POOL + 33 * K4, K4, IOMMU_READ)
    pt.map(M2, 0x4000_0000, M2, RW)
    dirty(pt, M2)
    assert pt.set_dirty(0, 4 * M2) == K4  # only the clean writable 4 KiB leaf changed
    assert mem.read64(leaf_pa(pt, 0)) & _D and mem.read64(leaf_pa(pt, M2)) & _D
    assert not mem.read64(leaf_pa(pt, K4)) & _D


@pytest.mark.parametrize(("iova", "size"), [(1, K4), (0, 0), (1 << 38, K4)])
def test_bad_ranges_are_einval_and_change_nothing(iova: int, size: int) -> None:
    mem, pt = table()
    pt.track_dirty = True
    pt.map(0, POOL + 32 * K4, K4, RW)
    dirty(pt, 0)
    before = mem.read64(leaf_pa(pt, 0))
    with pytest.raises(InvalidArgument):
        read(pt, iova, size)
    with pytest.raises(InvalidArgument):
        pt.set_dirty(iova, size)
    assert mem.read64(leaf_pa(pt, 0)) == before
