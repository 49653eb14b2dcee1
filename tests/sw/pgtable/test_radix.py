"""The generic radix writer (sw/pgtable/radix): IOTLB maintenance through
``iommu_flush_ops``-style callbacks (Linux ``io_pgtable_tlb_add_page``,
``io_pgtable_tlb_flush_walk``, ``tlb_flush_all`` before ``free_io_pgtable_ops``), any
format descriptor (4-byte Sv32 PTEs included) and the RISC-V instance's checks."""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.bits.riscv.pgtable import SV32, SV39
from iommusim.errors import InvalidArgument, ModelError
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import (
    IotlbGather,
    RadixPageTable,
    RiscvLeafCodec,
    RiscvPageTable,
    RiscvPtFormat,
    riscv_atp,
)
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

POOL: Final = 0x8000_0000
K4: Final = 4096
M2: Final = 2 << 20
RW: Final = IOMMU_READ | IOMMU_WRITE


class Recorder:
    """FlushOps that records every call (and still fills the gather)."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def tlb_flush_all(self) -> None:
        self.calls.append(("all",))

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        self.calls.append(("walk", iova, size, granule))

    def tlb_add_page(self, gather: IotlbGather, iova: int, granule: int) -> None:
        self.calls.append(("page", iova, granule))
        gather.add_page(iova, granule)


def test_flush_callbacks() -> None:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 64 * K4)
    rec = Recorder()
    pt = RiscvPageTable(mem, pages, "sv39", flush=rec)
    pt.map(0, POOL + 32 * K4, 2 * K4, RW)
    pt.map(M2, 0x4000_0000, M2, RW)  # one 2 MiB leaf
    gather = IotlbGather()
    assert pt.unmap(0, 2 * M2, gather) == 2 * K4 + M2
    # The leaves, then the level-0 table (its whole 2 MiB span was unmapped).
    assert rec.calls == [("page", 0, K4), ("page", K4, K4), ("walk", 0, M2, K4), ("page", M2, M2)]
    assert (gather.start, gather.end, gather.pgsize, len(gather.freelist)) == (0, 2 * M2 - 1, K4, 1)
    rec.calls.clear()
    pt.map(0, POOL + 32 * K4, K4, IOMMU_READ)
    assert pt.protect(0, K4, RW, gather) == K4 and rec.calls == [("page", 0, K4)]
    for p in gather.freelist:
        pages.free_page(p)
    pt.destroy()
    assert rec.calls[-1] == ("all",)


def test_sv32_tables_with_4_byte_entries() -> None:
    """The same writer builds Sv32 tables: 4-byte PTEs, 10-bit indexes, 4 MiB superpages."""
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 16 * K4)
    codec = RiscvLeafCodec(gstage=False, set_ad=True, svpbmt=False)
    pt = RadixPageTable(mem, pages, SV32, codec, max_leaf_level=1)
    pt.map(0x40_0000, 0x3_0040_0000, 0x40_0000, RW)  # one 4 MiB leaf at a 34-bit PA
    pt.map(0x1000, 0x2000, K4, IOMMU_READ)
    assert mem.read32(pt.root_pa + 4) == (0x3_0040_0000 >> 12) << 10 | 0xD7 | 0x8
    assert pt.iova_to_phys(0x41_2345) == 0x3_0041_2345
    assert [leaf[:3] for leaf in pt.walk_leaves()] == [
        (0x1000, 0x2000, K4),
        (0x40_0000, 0x3_0040_0000, 0x40_0000),
    ]
    assert pt.pgsize_bitmap == K4 | 0x40_0000
    with pytest.raises(InvalidArgument, match="below 2"):
        pt.map(0x80_0000, 1 << 34, K4, RW)


def test_riscv_atp_needs_a_riscv_writer_format() -> None:
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 16 * K4)
    codec = RiscvLeafCodec(gstage=False, set_ad=True, svpbmt=False)
    generic = RadixPageTable(mem, pages, SV39, codec, max_leaf_level=3)
    assert riscv_atp(generic) >> 60 == 8  # the descriptor names the mode
    sv32 = RadixPageTable(mem, pages, SV32, codec, max_leaf_level=1)
    with pytest.raises(InvalidArgument, match="RISC-V format, not sv32"):
        riscv_atp(sv32)
    sv32.destroy()
    with pytest.raises(ModelError, match="after destroy"):
        riscv_atp(sv32)


def test_riscv_format_must_match_its_descriptor() -> None:
    with pytest.raises(ModelError, match="no RISC-V format"):
        RiscvPtFormat("sv39", 4, False, 8)
    assert RiscvPtFormat("sv39x4", 3, True, 8).pt.root_bytes == 16 * 1024
