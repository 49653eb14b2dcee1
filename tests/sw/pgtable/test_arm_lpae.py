"""The VMSAv8-64 writer (after Linux io-pgtable-arm): golden descriptor encodings (DDI 0487 D8
"Translation table descriptor formats"), start levels and stage 2 concatenation (D8
"Concatenated translation tables"), blocks where the granule allows them (D8 "Block
descriptor") and the prot policy of ``arm_lpae_prot_to_pte``."""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.errors import InvalidArgument, NotSupported
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import ArmLpaePageTable, IotlbGather, arm_lpae_format
from iommusim.sw.prot import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_READ,
    IOMMU_WRITE,
)

POOL: Final = 0x4000_0000
RW: Final = IOMMU_READ | IOMMU_WRITE


def table(stage: int, granule: int, ia_bits: int) -> ArmLpaePageTable:
    mem = SparseMemory()
    return ArmLpaePageTable(mem, PageAllocator(mem, POOL, 1 << 26), stage, granule, ia_bits)  # type: ignore[arg-type]


def leaf_pte(t: ArmLpaePageTable, iova: int) -> int:
    """The descriptor at the level the lookup ends (read back through the table's memory)."""
    found = t._find(iova)
    assert found is not None
    return found[0]


def test_stage1_4k_page_descriptor_is_linux_s1_rw_encoding() -> None:
    """D8 "Page descriptor": nG | AF | SH=outer | AP[1] (EL0) | 0b11 with OA[47:12] -- the
    value Linux arm_lpae_prot_to_pte writes for IOMMU_READ | IOMMU_WRITE at stage 1."""
    t = table(1, 4, 48)
    t.map(0x1000, 0x8000_0000, 0x1000, RW)
    assert leaf_pte(t, 0x1000) == 0x8000_0E43


def test_stage1_read_only_priv_noexec_cacheable() -> None:
    """AP[2] read-only without WRITE, AP[1] clear with PRIV, UXN with NOEXEC, AttrIndx 1 and
    inner shareable with CACHE."""
    t = table(1, 4, 39)
    t.map(0x2000, 0x9000_0000, 0x1000, IOMMU_READ | IOMMU_PRIV | IOMMU_NOEXEC | IOMMU_CACHE)
    pte = leaf_pte(t, 0x2000)
    assert pte == 0x9000_0000 | 1 << 54 | 1 << 11 | 1 << 10 | 0b11 << 8 | 1 << 7 | 1 << 2 | 0b11
    assert t.lookup(0x2000) == (
        0x2000,
        0x9000_0000,
        0x1000,
        IOMMU_READ | IOMMU_PRIV | IOMMU_NOEXEC | IOMMU_CACHE,
    )


def test_stage2_page_descriptor_s2ap_and_memattr() -> None:
    """D8 "Stage 2 access permissions": S2AP[0] read, S2AP[1] write; MemAttr 0b0001 for
    device memory (Linux ARM_LPAE_PTE_MEMATTR_DEV); no nG at stage 2."""
    t = table(2, 4, 40)
    t.map(0x3000, 0xA000_0000, 0x1000, RW | IOMMU_MMIO)
    assert leaf_pte(t, 0x3000) == 0xA000_0000 | 1 << 10 | 0b10 << 8 | 0b11 << 6 | 1 << 2 | 0b11


@pytest.mark.parametrize(
    ("stage", "granule", "ia_bits", "start", "root_bytes"),
    [
        (1, 4, 48, 0, 4096),
        (1, 4, 39, 1, 4096),
        (1, 16, 48, 0, 16),  # one input bit at level 0: a 2-entry start table
        (1, 16, 47, 1, 16384),
        (1, 64, 42, 2, 65536),
        (1, 64, 48, 1, 512),  # six bits at level 1
        # 4KB, 40-bit IPA: a level-0 start would resolve one bit; two concatenated level-1
        # tables do it (D8 "Concatenated translation tables"), as Linux chooses.
        (2, 4, 40, 1, 8192),
        (2, 4, 48, 0, 4096),
        (2, 16, 36, 2, 16384),
        (2, 16, 48, 1, 2 * 16384),  # two concatenated level-1 tables instead of level 0
        (2, 64, 48, 1, 512),
    ],
)
def test_start_level_and_root_size(
    stage: int, granule: int, ia_bits: int, start: int, root_bytes: int
) -> None:
    t = table(stage, granule, ia_bits)
    assert t.start_level == start
    assert t.pt.root_alignment == root_bytes
    assert 4096 << t.root_order >= root_bytes


def test_stage2_sl0_encodes_the_start_level() -> None:
    """IHI 0070 STE.S2SL0 / VTCR_EL2.SL0: 4KB 1 = level 1, 2 = level 0; 64KB 1 = level 2."""
    assert table(2, 4, 40).sl0 == 1
    assert table(2, 4, 48).sl0 == 2
    assert table(2, 64, 42).sl0 == 1
    assert table(2, 4, 40).t0sz == 24
    with pytest.raises(InvalidArgument, match="stage 2 field"):
        _ = table(1, 4, 40).sl0


@pytest.mark.parametrize(
    ("granule", "block", "level"),
    [(4, 1 << 21, 2), (4, 1 << 30, 1), (16, 1 << 25, 2), (64, 1 << 29, 2)],
)
def test_blocks_where_the_granule_allows_them(granule: int, block: int, level: int) -> None:
    """D8 "Block descriptor": type 0b01 at levels 1-2 (4KB) or level 2 (16KB, 64KB)."""
    t = table(1, granule, 48)
    t.map(block, 2 * block, block, RW)
    found = t._find(block + 0x1000)
    assert found is not None
    pte, walker_level = found
    assert 3 - walker_level == level
    assert pte & 0b11 == 0b01
    assert t.iova_to_phys(block + 0x1234) == 2 * block + 0x1234


def test_no_block_at_level_0_or_16k_level_1() -> None:
    """No 512 GiB block at 4KB level 0 and no 64 GiB block at 16KB level 1: mapped with the
    largest allowed leaves instead."""
    t = table(1, 16, 47)
    t.map(1 << 36, 1 << 37, 1 << 36, RW)
    found = t._find(1 << 36)
    assert found is not None
    assert 3 - found[1] == 2


def test_unmap_and_protect_round_trip() -> None:
    t = table(2, 16, 40)
    t.map(0x10_0000, 0x20_0000, 0x8000, RW)
    g = IotlbGather()
    assert t.protect(0x10_0000, 0x4000, IOMMU_READ, g) == 0x4000
    assert t.lookup(0x10_0000) == (0x10_0000, 0x20_0000, 0x4000, IOMMU_READ)
    assert t.unmap(0x10_0000, 0x8000, g) == 0x8000
    assert t.iova_to_phys(0x10_0000) is None


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgument, match="granule"):
        arm_lpae_format(1, 8, 48)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="ia_bits"):
        arm_lpae_format(1, 4, 52)
    t = table(1, 4, 39)
    with pytest.raises(NotSupported):
        t.map(0, 0x1000, 0x1000, IOMMU_NOEXEC)
    with pytest.raises(InvalidArgument, match="below"):
        t.map(1 << 39, 0x1000, 0x1000, RW)
