"""Arm SMMUv3 in-memory configuration structures (IHI 0070 chapter 5, "Data structure formats").

The level-1 stream table descriptor, the 64-byte Stream Table Entry, the level-1 context
descriptor and the 64-byte Context Descriptor, each as one little-endian :class:`Layout` whose
bit numbers are absolute (doubleword ``n`` holds bits ``64n+63 .. 64n``). Fields not listed are
RES0 (IHI 0070 5: "All non-specified fields are RES0"). The encodings of the multi-valued fields
the translation process switches on follow each table.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.fields import layout

__all__ = [
    "CD",
    "CDTAB_L1",
    "CD_A",
    "CD_AA64",
    "CD_ASID_SHIFT",
    "CD_R",
    "CD_TTB0_MASK",
    "CD_V",
    "EATS_ABORT",
    "EATS_FULL",
    "EATS_SPLIT",
    "S1DSS_BYPASS",
    "S1DSS_SSID0",
    "S1DSS_TERMINATE",
    "S1FMT_4K_L2",
    "S1FMT_64K_L2",
    "S1FMT_LINEAR",
    "STE",
    "STE_CONFIG_ABORT",
    "STE_CONFIG_BYPASS",
    "STE_CONFIG_MASK",
    "STE_CONFIG_NESTED",
    "STE_CONFIG_S1",
    "STE_CONFIG_S2",
    "STE_CONFIG_SHIFT",
    "STE_CONT_IDENTICAL",
    "STE_S1CTXPTR_MASK",
    "STE_S2TTB_MASK",
    "STE_V",
    "STRTAB_L1",
    "STRW_EL2",
    "STRW_EL2_E2H",
    "STRW_EL3",
    "STRW_NSEL1",
    "TG0_4K",
    "TG0_16K",
    "TG0_64K",
    "TG1_4K",
    "TG1_16K",
    "TG1_64K",
]

# IHI 0070 5.1 "Level 1 Stream Table Descriptor": Span (log2 of STEs + 1 in the level-2 table,
# 0 = invalid) and the level-2 table address L2Ptr[51:6].
STRTAB_L1: Final = layout(
    "strtab.l1",
    64,
    "IHI 0070 5.1 Level 1 Stream Table Descriptor",
    ("span", 0, 5),
    ("l2ptr", 6, 46),
)

# IHI 0070 5.2 "Stream Table Entry" (64 bytes).
STE: Final = layout(
    "ste",
    512,
    "IHI 0070 5.2 Stream Table Entry",
    # doubleword 0
    ("v", 0, 1),
    ("config", 1, 3),
    ("s1fmt", 4, 2),
    ("s1contextptr", 6, 46),  # S1ContextPtr[51:6]
    ("s1cdmax", 59, 5),
    # doubleword 1
    ("s1dss", 64, 2),
    ("s1cir", 66, 2),
    ("s1cor", 68, 2),
    ("s1csh", 70, 2),
    ("s2hwu59", 72, 1),
    ("s2hwu60", 73, 1),
    ("s2hwu61", 74, 1),
    ("s2hwu62", 75, 1),
    ("dre", 76, 1),
    ("cont", 77, 4),
    ("dcp", 81, 1),
    ("ppar", 82, 1),
    ("mev", 83, 1),
    ("s2fwb", 89, 1),
    ("s1mpam", 90, 1),
    ("s1stalld", 91, 1),
    ("eats", 92, 2),
    ("strw", 94, 2),
    ("memattr", 96, 4),
    ("mtcfg", 100, 1),
    ("alloccfg", 101, 4),
    ("shcfg", 108, 2),
    ("nscfg", 110, 2),
    ("privcfg", 112, 2),
    ("instcfg", 114, 2),
    # doubleword 2: S2VMID, then the VTCR-like stage-2 controls from bit 160
    ("s2vmid", 128, 16),
    ("s2t0sz", 160, 6),
    ("s2sl0", 166, 2),
    ("s2ir0", 168, 2),
    ("s2or0", 170, 2),
    ("s2sh0", 172, 2),
    ("s2tg", 174, 2),
    ("s2ps", 176, 3),
    ("s2aa64", 179, 1),
    ("s2endi", 180, 1),
    ("s2affd", 181, 1),
    ("s2ptw", 182, 1),
    ("s2hd", 183, 1),
    ("s2ha", 184, 1),
    ("s2s", 185, 1),
    ("s2r", 186, 1),
    # doubleword 3
    ("s2ttb", 196, 48),  # S2TTB[51:4]
    # doublewords 4 and 5: the MPAM identifiers and the Virtual Machine Structure pointer
    ("partid", 272, 16),
    ("pmg", 320, 8),
    ("vmsptr", 332, 40),  # VMSPtr[51:12]
)

#: STE.Config (IHI 0070 5.2): bit 2 clear aborts; bit 0 enables stage 1, bit 1 stage 2.
STE_CONFIG_ABORT: Final = 0b000
STE_CONFIG_BYPASS: Final = 0b100
STE_CONFIG_S1: Final = 0b101
STE_CONFIG_S2: Final = 0b110
STE_CONFIG_NESTED: Final = 0b111
#: STE.S1Fmt (IHI 0070 5.2): linear CD table, or two levels with 4 KiB / 64 KiB leaf tables.
S1FMT_LINEAR: Final = 0b00
S1FMT_4K_L2: Final = 0b01
S1FMT_64K_L2: Final = 0b10
#: STE.S1DSS (IHI 0070 5.2): what a transaction without a SubstreamID gets.
S1DSS_TERMINATE: Final = 0b00
S1DSS_BYPASS: Final = 0b01
S1DSS_SSID0: Final = 0b10
#: STE.EATS (IHI 0070 5.2): ATS translation requests aborted, fully translated, or split-stage.
EATS_ABORT: Final = 0b00
EATS_FULL: Final = 0b01
EATS_SPLIT: Final = 0b10
#: STE.STRW (IHI 0070 5.2): the StreamWorld.
STRW_NSEL1: Final = 0b00
STRW_EL3: Final = 0b01
STRW_EL2: Final = 0b10
STRW_EL2_E2H: Final = 0b11

# IHI 0070 5.3 "Level 1 Context Descriptor": V and the level-2 CD table address L2Ptr[51:12].
CDTAB_L1: Final = layout(
    "cdtab.l1",
    64,
    "IHI 0070 5.3 Level 1 Context Descriptor",
    ("v", 0, 1),
    ("l2ptr", 12, 40),
)

# IHI 0070 5.4 "Context Descriptor" (64 bytes).
CD: Final = layout(
    "cd",
    512,
    "IHI 0070 5.4 Context Descriptor",
    # doubleword 0: the TCR-like controls, V, and the ASID
    ("t0sz", 0, 6),
    ("tg0", 6, 2),
    ("ir0", 8, 2),
    ("or0", 10, 2),
    ("sh0", 12, 2),
    ("epd0", 14, 1),
    ("endi", 15, 1),
    ("t1sz", 16, 6),
    ("tg1", 22, 2),
    ("ir1", 24, 2),
    ("or1", 26, 2),
    ("sh1", 28, 2),
    ("epd1", 30, 1),
    ("v", 31, 1),
    ("ips", 32, 3),
    ("affd", 35, 1),
    ("wxn", 36, 1),
    ("uwxn", 37, 1),
    ("tbi", 38, 2),  # TBI0 at 38, TBI1 at 39
    ("pan", 40, 1),
    ("aa64", 41, 1),
    ("hd", 42, 1),
    ("ha", 43, 1),
    ("s", 44, 1),
    ("r", 45, 1),
    ("a", 46, 1),
    ("aset", 47, 1),
    ("asid", 48, 16),
    # doubleword 1
    ("nscfg0", 64, 1),
    ("had0", 65, 1),
    ("haft", 67, 1),
    ("ttb0", 68, 48),  # TTB0[51:4]
    # hardware use of descriptor bits 59-62 for TTB0 walks (as TCR_EL1.HWU0nn)
    ("hwu059", 124, 1),
    ("hwu060", 125, 1),
    ("hwu061", 126, 1),
    ("hwu062", 127, 1),
    # doubleword 2
    ("nscfg1", 128, 1),
    ("had1", 129, 1),
    ("ttb1", 132, 48),  # TTB1[51:4]
    ("hwu159", 188, 1),
    ("hwu160", 189, 1),
    ("hwu161", 190, 1),
    ("hwu162", 191, 1),
    # doublewords 3 and 4: the MAIR_EL1 and AMAIR_EL1 images, low word then high word
    ("mair0", 192, 32),
    ("mair1", 224, 32),
    ("amair0", 256, 32),
    ("amair1", 288, 32),
    # doubleword 5: IMPLEMENTATION DEFINED, then the MPAM identifiers
    ("impdef", 320, 32),
    ("partid", 352, 16),
    ("pmg", 368, 8),
)

#: CD.TG0 and CD.TG1 do not share an encoding (IHI 0070 5.4, as TCR_EL1.TG0/TG1): one enum per
#: field, so an encoding of one is never read as the other.
TG0_4K: Final = 0b00
TG0_64K: Final = 0b01
TG0_16K: Final = 0b10
TG1_16K: Final = 0b01
TG1_4K: Final = 0b10
TG1_64K: Final = 0b11

# -- masks for plain-int code, derived from the tables ------------------------------------------

STE_V: Final = STE.mask("v")
#: IHI 0070 5.2 STE.CONT: the bits that must be identical in every STE of a contiguous span
#: (every defined field but CONT itself).
STE_CONT_IDENTICAL: Final = STE.mask(*(f.name for f in STE.fields if f.name != "cont"))
STE_CONFIG_MASK: Final = STE.mask("config")
STE_CONFIG_SHIFT: Final = STE["config"].lsb
STE_S1CTXPTR_MASK: Final = STE.mask("s1contextptr")
#: S2TTB within doubleword 3 (bits 51:4 of that doubleword).
STE_S2TTB_MASK: Final = STE.mask("s2ttb") >> 192

CD_V: Final = CD.mask("v")
CD_AA64: Final = CD.mask("aa64")
CD_R: Final = CD.mask("r")
CD_A: Final = CD.mask("a")
CD_ASID_SHIFT: Final = CD["asid"].lsb
#: TTB0 within doubleword 1 (bits 51:4 of that doubleword).
CD_TTB0_MASK: Final = CD.mask("ttb0") >> 64
