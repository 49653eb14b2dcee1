"""Implementation parameters of an Arm SMMUv3 (DESIGN rule 5: nothing implementation-defined is
hard-coded).

IHI 0070 6.3 "SMMU_IDR0 ... SMMU_IDR5" fix the feature set: a :class:`Smmuv3Params` holds
those ID register values (built field by field from :mod:`iommusim.bits.arm.smmuv3_regs`), and
beside them the choices the architecture leaves to the implementation -- cache geometry and
replacement (IHI 0070 16.2 "Caching"), the number of event counters (IHI 0070 10 "Performance
Monitor Counter Groups").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, Literal

from iommusim.bits.arm.smmuv3_regs import AIDR, IDR0, IDR1, IDR3, IDR5
from iommusim.errors import ModelError

__all__ = ["OAS_BITS", "PRESETS", "Smmuv3CacheParams", "Smmuv3Params", "Smmuv3Replacement"]

#: Cache replacement policies (random: seeded by ``Smmuv3CacheParams.seed``).
Smmuv3Replacement = Literal["lru", "fifo", "random"]

#: IHI 0070 6.3 SMMU_IDR5.OAS: encoding -> output address size in bits.
OAS_BITS: Final[Mapping[int, int]] = MappingProxyType(
    {0b000: 32, 0b001: 36, 0b010: 40, 0b011: 42, 0b100: 44, 0b101: 48, 0b110: 52}
)


@dataclass(frozen=True, slots=True)
class Smmuv3CacheParams:
    """Geometry of the SMMU's caches; ``0`` entries disables a cache.

    IHI 0070 16.2 "Caching": what is cached and how much is IMPLEMENTATION DEFINED; correct
    software (invalidation after every change) gets the same results for any geometry.
    ``ste_entries``/``cd_entries``: configuration caches; ``tlb_entries``: the TLB (tagged by
    VMID/ASID, stage and level); ``walk_entries``: the walk cache -- stage 2 translations of the
    stage 1 descriptor and CD-table addresses a nested walk reads -- of intermediate
    descriptors. ``ste_cont_entries``: STE cache entries that honour STE.CONT (IHI 0070 5.2:
    one entry matches every StreamID of the STE's contiguous span); 0 ignores the hint --
    both are allowed, the hint only permits the sharing.
    """

    ste_entries: int = 64
    cd_entries: int = 64
    tlb_entries: int = 1024
    walk_entries: int = 0
    ste_cont_entries: int = 0
    replacement: Smmuv3Replacement = "lru"
    #: The seed of random replacement (each cache draws from its own generator).
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "ste_entries",
            "cd_entries",
            "tlb_entries",
            "walk_entries",
            "ste_cont_entries",
        ):
            if getattr(self, name) < 0:
                raise ModelError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.replacement not in ("lru", "fifo", "random"):
            raise ModelError(
                f"replacement must be 'lru', 'fifo' or 'random', not {self.replacement!r}"
            )


@dataclass(frozen=True, slots=True)
class Smmuv3Params:
    """Everything implementation-defined about one SMMUv3 instance: the ID registers as the
    SMMU reports them (IHI 0070 6.3) and the implementation's other choices."""

    idr0: int
    idr1: int
    idr3: int
    idr5: int
    #: SMMU_IIDR (fields: :data:`iommusim.bits.arm.smmuv3_regs.IIDR`).
    iidr: int = 0
    aidr: int = AIDR.encode(archmajorrev=0, archminorrev=2)
    caches: Smmuv3CacheParams = field(default_factory=Smmuv3CacheParams)
    #: IHI 0070 10: event counters of the model's PMCG (0: no PMCG).
    num_counters: int = 4

    def __post_init__(self) -> None:
        if self.idr0 >> 32 or self.idr1 >> 32 or self.idr3 >> 32 or self.idr5 >> 32:
            raise ModelError("ID register values must be 32-bit")
        if IDR5["oas"].get(self.idr5) not in OAS_BITS:
            raise ModelError(f"IDR5.OAS {IDR5['oas'].get(self.idr5)} is reserved")
        if not IDR0["s1p"].get(self.idr0) | IDR0["s2p"].get(self.idr0):
            raise ModelError("an SMMU implements stage 1, stage 2 or both (IDR0.S1P/S2P)")
        if not self.idr5 & IDR5.mask("gran4k", "gran16k", "gran64k"):
            raise ModelError("IDR5 must report at least one granule")
        if IDR1["sidsize"].get(self.idr1) > 32 or IDR1["ssidsize"].get(self.idr1) > 20:
            raise ModelError("IDR1.SIDSIZE is at most 32 and IDR1.SSIDSIZE at most 20")
        if not 0 <= self.num_counters <= 64:
            raise ModelError(f"num_counters must be in 0..64, not {self.num_counters}")

    def idr0_field(self, name: str) -> int:
        """A field of SMMU_IDR0 by its :data:`IDR0` name."""
        return IDR0[name].get(self.idr0)

    def idr1_field(self, name: str) -> int:
        """A field of SMMU_IDR1 by its :data:`IDR1` name."""
        return IDR1[name].get(self.idr1)

    def idr3_field(self, name: str) -> int:
        """A field of SMMU_IDR3 by its :data:`IDR3` name."""
        return IDR3[name].get(self.idr3)

    def idr5_field(self, name: str) -> int:
        """A field of SMMU_IDR5 by its :data:`IDR5` name."""
        return IDR5[name].get(self.idr5)

    @property
    def oas_bits(self) -> int:
        """The output address size in bits (IDR5.OAS)."""
        return OAS_BITS[IDR5["oas"].get(self.idr5)]

    @property
    def sid_bits(self) -> int:
        """StreamID width (IDR1.SIDSIZE)."""
        return IDR1["sidsize"].get(self.idr1)

    @property
    def ssid_bits(self) -> int:
        """SubstreamID width (IDR1.SSIDSIZE; 0: no substreams)."""
        return IDR1["ssidsize"].get(self.idr1)

    def with_caches(self, **kw: int | str) -> Smmuv3Params:
        """A copy with other cache geometry (``Smmuv3CacheParams`` field names)."""
        return replace(self, caches=replace(self.caches, **kw))  # type: ignore[arg-type]


# The queue sizes a preset reports: log2 of the largest queue software may configure.
_FULL = Smmuv3Params(
    idr0=IDR0.encode(
        s2p=1,
        s1p=1,
        ttf=0b10,  # AArch64 tables only
        cohacc=1,
        btm=1,
        httu=0b10,  # Access flag and dirty state
        hyp=1,
        ats=1,
        asid16=1,
        msi=1,
        sev=1,
        pri=1,
        vmid16=1,
        cd2l=1,
        ttendian=0b00,  # mixed: CD.ENDI / STE.S2ENDI choose
        stall_model=0b00,  # stall and terminate
        term_model=0,  # CD.A chooses abort or RAZ/WI
        st_level=0b01,  # linear and 2-level stream tables
    ),
    idr1=IDR1.encode(sidsize=16, ssidsize=20, priqs=8, eventqs=8, cmdqs=8),
    idr3=IDR3.encode(had=1, ril=1, bbml=0b10),
    idr5=IDR5.encode(oas=0b101, gran4k=1, gran16k=1, gran64k=1, vax=0, stall_max=64),
    caches=Smmuv3CacheParams(walk_entries=64, ste_cont_entries=16),
)

# After QEMU's hw/arm/smmuv3.c (../reference digest): S1+S2 and nested, no ATS/PRI/stall/HTTU/
# MSI/BTM, terminate model only, 44-bit OAS, a 256-entry TLB.
_QEMU_LIKE = Smmuv3Params(
    idr0=IDR0.encode(
        s2p=1,
        s1p=1,
        ttf=0b10,
        cohacc=1,
        asid16=1,
        vmid16=1,
        ttendian=0b10,  # little-endian only
        stall_model=0b01,  # terminate only
        term_model=1,  # abort only: CD.A must be 1
        st_level=0b01,
    ),
    idr1=IDR1.encode(sidsize=16, ssidsize=16, priqs=19, eventqs=19, cmdqs=19),
    idr3=IDR3.encode(ril=1, bbml=0b10),
    idr5=IDR5.encode(oas=0b100, gran4k=1, gran16k=1, gran64k=1),
    aidr=AIDR.encode(archmajorrev=0, archminorrev=1),
    caches=Smmuv3CacheParams(ste_entries=0, cd_entries=0, tlb_entries=256, replacement="fifo"),
    num_counters=0,
)

# The least an SMMUv3 may be: stage 1, linear stream table, one granule, no substreams.
_MINIMAL = Smmuv3Params(
    idr0=IDR0.encode(s1p=1, ttf=0b10, ttendian=0b10, stall_model=0b01, term_model=1),
    idr1=IDR1.encode(sidsize=8, ssidsize=0, priqs=0, eventqs=4, cmdqs=4),
    idr3=0,
    idr5=IDR5.encode(oas=0b010, gran4k=1),
    aidr=AIDR.encode(archmajorrev=0, archminorrev=0),
    caches=Smmuv3CacheParams(ste_entries=4, cd_entries=4, tlb_entries=16),
    num_counters=0,
)

#: Named presets: ``full`` (every feature the model has), ``qemu-like`` (QEMU's feature set),
#: ``minimal``.
PRESETS: Final[Mapping[str, Smmuv3Params]] = MappingProxyType(
    {"full": _FULL, "qemu-like": _QEMU_LIKE, "minimal": _MINIMAL}
)
