"""Memory images for the SMMUv3 studies: one stream whose tables the software stack wrote.

Translation tables are :class:`~iommusim.sw.pgtable.arm_lpae.ArmLpaePageTable` (the writer the
SMMUv3 driver and iommufd use, after Linux ``io-pgtable-arm``); the stream table entry and
the context descriptor are encoded from the layouts of
:mod:`iommusim.bits.arm.smmuv3_structures` with the fields Linux ``arm_smmu_make_s1_cd``,
``arm_smmu_make_s2_domain_ste`` and ``arm_smmu_make_nested_cd_table_ste`` set (IHI 0070 5.2
"Stream Table Entry", 5.4 "Context Descriptor"). Tables, structures and data live in one
:class:`~iommusim.mem.SparseMemory`, so the batch engine can replay against it.

Every leaf is a page of the granule (DDI 0487 D8 "Page descriptor"), in both stages, so every
walk reaches the last level: under nesting the stage 1 tables and the CD table sit in a
guest window whose IPA equals its PA, mapped page by page by stage 2, and the data IPAs are
mapped page by page too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from iommusim.bits.arm.smmuv3_structures import (
    CD,
    STE,
    STE_CONFIG_NESTED,
    STE_CONFIG_S1,
    STE_CONFIG_S2,
    TG0_4K,
    TG0_16K,
    TG0_64K,
)
from iommusim.bits.arm.vmsa import GRANULES, Granule
from iommusim.errors import InvalidArgument
from iommusim.hw.smmuv3.params import OAS_BITS, PRESETS
from iommusim.hw.smmuv3.translator import STRTAB_LINEAR, Smmuv3Translator
from iommusim.mem import SparseMemory
from iommusim.sw.drivers.smmuv3.entries import qwords
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.arm_lpae import ArmLpaePageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

__all__ = ["IOVA_BASE", "STREAM_ID", "Smmuv3Image", "Stages", "build_smmuv3_image"]

#: Which stages translate the stream (STE.Config: IHI 0070 5.2).
Stages = Literal["s1", "s2", "nested"]
STREAM_ID: Final = 5
#: Device-visible addresses start here (under stage 2 alone they are IPAs).
IOVA_BASE: Final = 0x4000_0000
_PAGE: Final = 4096
_STRTAB_LOG2SIZE: Final = 3
_HOST_PA: Final = 0x1000_0000
_HOST_BYTES: Final = 64 << 20
# The guest's table window (IPA = PA) under nesting, and where data lives: IOVA -> IPA is the
# identity in stage 1, IPA -> PA adds _DATA_OFFSET in stage 2 (or the whole of stage 1 alone).
_GUEST_PA: Final = 0x0800_0000
_GUEST_BYTES: Final = 2 << 20
_DATA_OFFSET: Final = 0x20_0000_0000
_RW: Final = IOMMU_READ | IOMMU_WRITE
_TG0: Final = {4: TG0_4K, 16: TG0_16K, 64: TG0_64K}
#: CD.IPS / STE.S2PS: a 48-bit output, the full preset's OAS (IHI 0070 5.2, 5.4).
_PS_48: Final = next(k for k, bits in OAS_BITS.items() if bits == 48)


@dataclass(frozen=True, slots=True)
class Smmuv3Image:
    """The tables of stream :data:`STREAM_ID` in ``mem`` (a linear stream table at
    ``strtab``): ``pages`` 4 KiB pages mapped from :data:`IOVA_BASE`; ``s1_levels`` and
    ``s2_levels`` the levels each walk reads (0 for a stage not in use; stage 2's after
    concatenation)."""

    mem: SparseMemory
    strtab: int
    pages: int
    s1_levels: int
    s2_levels: int

    def translator(self, tlb_entries: int, walk_entries: int) -> Smmuv3Translator:
        """A fresh translator of the full preset (64-entry STE and CD caches) with a TLB of
        ``tlb_entries`` and a walk cache of ``walk_entries`` over the image, its stream table
        configured and SMMUEN set (IHI 0070 6.3 SMMU_STRTAB_BASE, _CFG, CR0). The tables
        are read only (the Access flag is set), so translators may share one image."""
        caches = PRESETS["full"].with_caches(tlb_entries=tlb_entries, walk_entries=walk_entries)
        t = Smmuv3Translator(self.mem, caches)
        t.set_stream_table(self.strtab, _STRTAB_LOG2SIZE, STRTAB_LINEAR, 0)
        t.enabled = True
        return t


def _map_pages(table: ArmLpaePageTable, va: int, pa: int, nbytes: int) -> None:
    """Map ``nbytes`` from ``va`` to ``pa`` one granule page at a time (no blocks)."""
    unit = 1 << GRANULES[table.granule]
    for off in range(0, nbytes, unit):
        table.map(va + off, pa + off, unit, _RW)


def _write(mem: SparseMemory, pa: int, image: int) -> None:
    for i, q in enumerate(qwords(image)):
        mem.write64(pa + 8 * i, q)


def build_smmuv3_image(
    stages: Stages, granule: Granule, s1_bits: int, s2_bits: int, pages: int
) -> Smmuv3Image:
    """Tables for stream :data:`STREAM_ID` translating ``pages`` 4 KiB pages from
    :data:`IOVA_BASE` through ``stages``: stage 1 of ``s1_bits`` input bits (CD.T0SZ),
    stage 2 of ``s2_bits`` IPA bits (STE.S2T0SZ; the writer concatenates the start table
    where DDI 0487 D8 "Concatenated translation tables" allows), both with ``granule``
    (4, 16 or 64 KB) and page leaves. The bits of a stage not in ``stages`` are ignored."""
    if stages not in ("s1", "s2", "nested"):
        raise InvalidArgument(f"stages must be 's1', 's2' or 'nested', not {stages!r}")
    if pages < 1:
        raise InvalidArgument(f"pages must be >= 1, not {pages}")
    unit = 1 << GRANULES[granule]
    span = -(-pages * _PAGE // unit) * unit
    mem = SparseMemory()
    host = PageAllocator(mem, _HOST_PA, _HOST_BYTES)
    strtab = host.alloc_pages(0)
    ste: dict[str, int] = {"v": 1}
    s1_levels = s2_levels = 0
    if stages != "s1":
        s2 = ArmLpaePageTable(mem, host, 2, granule, s2_bits)
        s2_levels = s2.pt.levels
        if stages == "nested":
            _map_pages(s2, _GUEST_PA, _GUEST_PA, _GUEST_BYTES)
        _map_pages(s2, IOVA_BASE, IOVA_BASE + _DATA_OFFSET, span)
        ste.update(
            config=STE_CONFIG_S2, s2vmid=1, s2t0sz=s2.t0sz, s2sl0=s2.sl0,
            s2tg=_TG0[granule], s2ps=_PS_48, s2aa64=1, s2r=1, s2ttb=s2.root_pa >> 4,
        )  # fmt: skip
    if stages != "s2":
        nested = stages == "nested"
        alloc = PageAllocator(mem, _GUEST_PA, _GUEST_BYTES) if nested else host
        s1 = ArmLpaePageTable(mem, alloc, 1, granule, s1_bits)
        s1_levels = s1.pt.levels
        # Stage 1 alone outputs PAs; nested, IPAs that stage 2 moves by _DATA_OFFSET.
        _map_pages(s1, IOVA_BASE, IOVA_BASE + (0 if nested else _DATA_OFFSET), span)
        cd_table = alloc.alloc_pages(0)
        cd = CD.encode(
            v=1, aa64=1, r=1, a=1, asid=1, ips=_PS_48, t0sz=s1.t0sz, tg0=_TG0[granule],
            epd1=1, ttb0=s1.root_pa >> 4,
        )  # fmt: skip
        _write(mem, cd_table, cd)
        # Nested keeps the stage 2 fields above; its S1ContextPtr is an IPA (= the PA here).
        ste.update(config=STE_CONFIG_NESTED if nested else STE_CONFIG_S1)
        ste.update(s1contextptr=cd_table >> 6)
    _write(mem, strtab + STREAM_ID * 64, STE.encode(ste))
    return Smmuv3Image(mem, strtab, pages, s1_levels, s2_levels)
