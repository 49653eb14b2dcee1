"""The VMSAv8-64 instance of the radix writer (:mod:`iommusim.sw.pgtable.radix`), after Linux
``io-pgtable-arm`` (``ARM_64_LPAE_S1`` / ``ARM_64_LPAE_S2``): the tables an SMMUv3 walks for
stage 1 (CD.TTB0) and stage 2 (STE.S2TTB).

The formats are the :class:`~iommusim.bits.pgformat.PtFormat` descriptors of
:mod:`iommusim.bits.arm.vmsa` that the hardware walker (:class:`~iommusim.hw.pgtable.VmsaWalker`)
walks: 4KB, 16KB and 64KB granules, the start level from the input size (DDI 0487 D8
"Translation table walk"), page descriptors at level 3 and blocks where the granule allows them
(D8 "Block descriptor"), and for stage 2 a concatenated start table in place of a level-0 table
when at most 16 tables do it (D8 "Concatenated translation tables"; Linux
``arm_64_lpae_alloc_pgtable_s2`` makes the same choice).

Leaf bits from the map ``prot`` (Linux ``arm_lpae_prot_to_pte``): stage 1 leaves are non-global
(nG: ASID-tagged), read-only (AP[2]) without ``IOMMU_WRITE``, accessible at EL0 (AP[1]) unless
``IOMMU_PRIV``; stage 2 leaves get S2AP read / write from ``IOMMU_READ`` / ``IOMMU_WRITE``.
Both: execute-never (UXN / XN, bit 54) with ``IOMMU_NOEXEC``; memory type device for
``IOMMU_MMIO``, write-back cacheable for ``IOMMU_CACHE``, else non-cacheable (stage 1: MAIR
index 2 / 1 / 0; stage 2 MemAttr 0b0001 / 0b1111 / 0b0101); inner shareable with
``IOMMU_CACHE``, else outer shareable; the Access flag set unless the table is built for
hardware Access-flag management (``set_af=False``, CD.HA / STE.S2HA: D8 "Hardware management of
the Access flag"). A prot granting neither read nor write is :class:`NotSupported` (Linux
silently maps nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from iommusim.bits.arm.vmsa import GRANULES, S1_DESC, S2_DESC, Granule, stage1_format, stage2_format
from iommusim.bits.pgformat import PtFormat
from iommusim.errors import InvalidArgument, NotSupported
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.radix import FlushOps, RadixPageTable
from iommusim.sw.prot import (
    IOMMU_CACHE,
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_PROT_MASK,
    IOMMU_READ,
    IOMMU_WRITE,
)

__all__ = [
    "ARM64_MM_FORMATS",
    "ArmLpaeLeafCodec",
    "ArmLpaeMmFormat",
    "ArmLpaePageTable",
    "arm_lpae_format",
]

# Linux io-pgtable-arm's MAIR indices (ARM_LPAE_MAIR_ATTR_IDX_*) and stage 2 MemAttr values
# (ARM_LPAE_PTE_MEMATTR_*), DDI 0487 D8 "Stage 2 memory type and Cacheability attributes".
_MAIR_NC: Final = 0
_MAIR_CACHE: Final = 1
_MAIR_DEV: Final = 2
_S2_MEMATTR_NC: Final = 0b0101
_S2_MEMATTR_OIWB: Final = 0b1111
_S2_MEMATTR_DEV: Final = 0b0001
# Shareability (D8 "Shareable attribute"): SH = 0b10 outer, 0b11 inner.
_SH_OS: Final = 0b10
_SH_IS: Final = 0b11


def arm_lpae_format(stage: Literal[1, 2], granule: Granule, ia_bits: int) -> PtFormat:
    """The VMSAv8-64 format a table of ``stage`` with ``granule`` and ``ia_bits`` input bits
    uses: stage 1 starts where the input size says (CD.T0SZ = 64 - ``ia_bits``); stage 2 at
    the natural start level too, except that a level-0 start becomes a concatenated level-1
    start table when at most 16 tables do it (Linux ``arm_64_lpae_alloc_pgtable_s2``; the
    STE.S2SL0 that selects it is :attr:`ArmLpaePageTable.sl0`). :class:`InvalidArgument`
    for a granule or input size the architecture has no format for."""
    if granule not in GRANULES:
        raise InvalidArgument(f"granule must be 4, 16 or 64 (KB), not {granule}")
    t0sz = 64 - ia_bits
    if stage == 1:
        fmt = stage1_format(granule, t0sz)
        if fmt is None:
            raise InvalidArgument(f"ia_bits must be 25..48 for stage 1, not {ia_bits}")
        return fmt
    if stage != 2:
        raise InvalidArgument(f"stage must be 1 or 2, not {stage}")
    fmts = [f for sl0 in (0, 1, 2) if (f := stage2_format(granule, t0sz, sl0)) is not None]
    if not fmts:
        raise InvalidArgument(f"ia_bits must be 25..48 for stage 2, not {ia_bits}")
    stride = GRANULES[granule] - 3
    natural = min(
        (f for f in fmts if f.root_index_bits <= stride), key=lambda f: f.levels, default=None
    )
    concatenated = [f for f in fmts if f.levels == 3]
    if natural is None or (natural.levels == 4 and concatenated):
        return concatenated[0]
    return natural


@dataclass(frozen=True, slots=True)
class ArmLpaeLeafCodec:
    """Leaf bits of a VMSAv8-64 table of ``stage`` from a map ``prot`` (Linux
    ``arm_lpae_prot_to_pte``, see the module docstring); ``set_af``: preset the Access
    flag. The descriptor type (page 0b11 / block 0b01) is the writer's, per level."""

    stage: Literal[1, 2]
    granule: Granule
    set_af: bool = True

    @property
    def keep_mask(self) -> int:
        """protect() keeps the type, the output address, AF, dirty state (DBM) and the bits
        software and hints own (Contiguous, nG, software-use)."""
        lay = (S1_DESC if self.stage == 1 else S2_DESC)[self.granule]
        extra = ("ng",) if self.stage == 1 else ()
        return lay.mask("valid", "table", "oa", "af", "dbm", "contig", "sw", *extra)

    def leaf_bits(self, prot: int) -> int:
        if prot < 0 or prot & ~IOMMU_PROT_MASK:
            raise InvalidArgument(f"prot must be a combination of IOMMU_* bits, not {prot:#x}")
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            raise NotSupported(f"prot {prot:#x} grants no access (no READ or WRITE)")
        cache = bool(prot & IOMMU_CACHE)
        f: dict[str, int] = {
            "af": int(self.set_af),
            "sh": _SH_IS if cache else _SH_OS,
        }
        if self.stage == 1:
            lay = S1_DESC[self.granule]
            f["ng"] = 1
            f["ap2"] = int(not prot & IOMMU_WRITE)
            f["ap1"] = int(not prot & IOMMU_PRIV)
            f["uxn"] = int(bool(prot & IOMMU_NOEXEC))
            f["attrindx"] = _MAIR_DEV if prot & IOMMU_MMIO else _MAIR_CACHE if cache else _MAIR_NC
        else:
            lay = S2_DESC[self.granule]
            f["s2ap_r"] = int(bool(prot & IOMMU_READ))
            f["s2ap_w"] = int(bool(prot & IOMMU_WRITE))
            f["xn"] = int(bool(prot & IOMMU_NOEXEC))
            f["memattr"] = (
                _S2_MEMATTR_DEV
                if prot & IOMMU_MMIO
                else _S2_MEMATTR_OIWB
                if cache
                else _S2_MEMATTR_NC
            )
        return lay.encode(f)

    def prot_of(self, pte: int) -> int:
        if self.stage == 1:
            d = S1_DESC[self.granule].decode(pte)
            prot = IOMMU_READ | (0 if d["ap2"] else IOMMU_WRITE)
            prot |= 0 if d["ap1"] else IOMMU_PRIV
            prot |= IOMMU_NOEXEC if d["uxn"] else 0
            prot |= {_MAIR_DEV: IOMMU_MMIO, _MAIR_CACHE: IOMMU_CACHE}.get(d["attrindx"], 0)
            return prot
        d = S2_DESC[self.granule].decode(pte)
        prot = (IOMMU_READ if d["s2ap_r"] else 0) | (IOMMU_WRITE if d["s2ap_w"] else 0)
        prot |= IOMMU_NOEXEC if d["xn"] else 0
        prot |= {_S2_MEMATTR_DEV: IOMMU_MMIO, _S2_MEMATTR_OIWB: IOMMU_CACHE}.get(d["memattr"], 0)
        return prot


class ArmLpaePageTable(RadixPageTable):
    """A VMSAv8-64 I/O page table in ``mem`` whose table pages come from ``pages``: ``stage``
    1 or 2, ``granule`` 4, 16 or 64 (KB), ``ia_bits`` input address bits (:func:`arm_lpae_format`
    picks the start level). Leaves up to the largest block the granule allows (Linux
    ``pgsize_bitmap``: 4K/2M/1G, 16K/32M, 64K/512M). ``big_endian`` writes the table for
    CD.ENDI / STE.S2ENDI = 1; ``flush`` gets the IOTLB maintenance callbacks. Dirty tracking
    by DBM (:attr:`track_dirty`) is not supported for these formats yet: VMSAv8-64 records
    dirty state by clearing AP[2] (stage 1), the inverse of the RISC-V D bit the radix
    writer's dirty helpers assume."""

    __slots__ = ("granule", "stage")

    def __init__(
        self,
        mem: PhysicalMemory,
        pages: PageAllocator,
        stage: Literal[1, 2],
        granule: Granule,
        ia_bits: int,
        *,
        set_af: bool = True,
        big_endian: bool = False,
        flush: FlushOps | None = None,
    ) -> None:
        fmt = arm_lpae_format(stage, granule, ia_bits)
        self.stage = stage
        self.granule = granule
        super().__init__(
            mem,
            pages,
            fmt,
            ArmLpaeLeafCodec(stage, granule, set_af),
            max_leaf_level=fmt.levels - 1,
            big_endian=big_endian,
            flush=flush,
        )

    @property
    def start_level(self) -> int:
        """The DDI 0487 level of the start table (0-3)."""
        return 4 - self.pt.levels

    @property
    def sl0(self) -> int:
        """STE.S2SL0 for this stage 2 table (IHI 0070 5.2; DDI 0487 VTCR_EL2.SL0: 4KB
        granule 0 = level 2, 1 = level 1, 2 = level 0; 16KB and 64KB 0 = level 3, 1 = level
        2, 2 = level 1)."""
        if self.stage != 2:
            raise InvalidArgument("sl0 is a stage 2 field; this is a stage 1 table")
        return (2 - self.start_level) if self.granule == 4 else (3 - self.start_level)

    @property
    def t0sz(self) -> int:
        """CD.T0SZ / STE.S2T0SZ: 64 minus the input size."""
        return 64 - self.pt.va_bits


@dataclass(frozen=True, slots=True)
class ArmLpaeMmFormat:
    """An arm64 process page table (the CPU's TTBR0_EL1 format): stage 1 with ``granule`` and
    ``ia_bits`` input bits, leaves written with AF set, as :class:`~iommusim.sw.mm.Mm` and an
    SMMUv3 SVA CD (CD.TTB0 = the root, T0SZ, TG0) share it."""

    name: str
    granule: Granule
    ia_bits: int

    @property
    def pt(self) -> PtFormat:
        return arm_lpae_format(1, self.granule, self.ia_bits)

    def page_table(self, mem: PhysicalMemory, pages: PageAllocator) -> ArmLpaePageTable:
        return ArmLpaePageTable(mem, pages, 1, self.granule, self.ia_bits)


#: The arm64 user page-table formats a process may use (48-bit VA, 4KB and 64KB pages).
ARM64_MM_FORMATS: Final = {
    "arm64-4k": ArmLpaeMmFormat("arm64-4k", 4, 48),
    "arm64-64k": ArmLpaeMmFormat("arm64-64k", 64, 48),
}
