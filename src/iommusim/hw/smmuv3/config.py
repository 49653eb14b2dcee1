"""Stream Table Entries and Context Descriptors as the SMMU uses them: fetched, checked and
decoded once, then cached (IHI 0070 3.3 "Data structures and translation procedure", 5.2
"Stream Table Entry", 5.4 "Context Descriptor").

:func:`decode_ste` and :func:`decode_cd` turn the 64-byte structures (as 512-bit ints, the
layouts of :mod:`iommusim.bits.arm.smmuv3_structures`) into :class:`Ste` / :class:`Cd`, or
into the reason the structure is ILLEGAL -- the SMMU's C_BAD_STE / C_BAD_CD (IHI 0070 5.2,
5.4: "the STE/CD is considered ILLEGAL if ..."). Where a field selects something the
implementation lacks, the parameters (:class:`~iommusim.hw.smmuv3.params.Smmuv3Params`)
decide. Each decoded structure carries the walkers its translations use.

Decisions where IHI 0070 allows a choice (CONSTRAINED UNPREDICTABLE) or leaves one open --
each is the ILLEGAL outcome unless stated:

- S1ContextPtr (without stage 2) or a level-2 pointer at or above the OAS: ILLEGAL.
- A granule the SMMU does not implement (IDR5.GRAN*), a reserved TG / S2TG, a T0SZ / S2T0SZ
  outside the granule's range, an S2SL0 that does not fit S2T0SZ: ILLEGAL.
- CD.IPS / STE.S2PS above IDR5.OAS (or reserved): the OAS is used (as DDI 0487 for PS).
- AArch32 tables (CD.AA64 = 0, STE.S2AA64 = 0) are not modelled: ILLEGAL, as on an SMMU
  with IDR0.TTF = AArch64 only.
- Stall (IDR0.STALL_MODEL): terminate-only makes CD.S = 1 / STE.S2S = 1 ILLEGAL; stall-forced
  makes CD.S = 0 / STE.S2S = 0 / STE.S1STALLD = 1 ILLEGAL; STE.S1STALLD = 1 with CD.S = 1 is
  ILLEGAL.
- CD.A = 0 under IDR0.TERM_MODEL = 1 (RAZ/WI not supported) is used as A = 1.
- HA / HD without IDR0.HTTU support, ASID[15:8] without IDR0.ASID16 and VMID[15:8] without
  IDR0.VMID16 are ignored (RES0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

from iommusim.bits.arm.smmuv3_structures import (
    CD,
    EATS_ABORT,
    EATS_SPLIT,
    S1FMT_4K_L2,
    S1FMT_64K_L2,
    S1FMT_LINEAR,
    STE,
    STE_CONFIG_ABORT,
    STE_CONFIG_BYPASS,
    STE_CONFIG_NESTED,
    STRW_EL2,
    STRW_EL2_E2H,
    STRW_NSEL1,
    TG0_4K,
    TG0_16K,
    TG0_64K,
    TG1_4K,
    TG1_16K,
    TG1_64K,
)
from iommusim.bits.arm.vmsa import Granule, stage1_format, stage2_format
from iommusim.bits.pgformat import PtFormat
from iommusim.hw.pgtable.vmsa import VmsaWalker
from iommusim.hw.smmuv3.params import OAS_BITS, Smmuv3Params

__all__ = ["Cd", "Ste", "WalkerFactory", "cd_l2_bits", "decode_cd", "decode_ste"]

#: Builds (or reuses) the walker of one format: ``(fmt, oa_bits, ha, hd, affd)``.
WalkerFactory = Callable[[PtFormat, int, bool, bool, bool], VmsaWalker]

_PA52: Final = (1 << 52) - 1
_ALL64: Final = (1 << 64) - 1
#: Address bits 55:0: what TBI leaves of an address (DDI 0487 D8 "Address tagging").
_UNTAGGED: Final = (1 << 56) - 1
_TG0: Final[dict[int, Granule]] = {TG0_4K: 4, TG0_16K: 16, TG0_64K: 64}
_TG1: Final[dict[int, Granule]] = {TG1_4K: 4, TG1_16K: 16, TG1_64K: 64}
_GRAN_FIELD: Final[dict[int, str]] = {4: "gran4k", 16: "gran16k", 64: "gran64k"}
#: IDR0.STALL_MODEL encodings (IHI 0070 6.3).
_STALL_BOTH, _STALL_NONE, _STALL_FORCED = 0b00, 0b01, 0b10
#: IDR0.TTENDIAN (IHI 0070 6.3): mixed, little-endian only, big-endian only.
_TTENDIAN_LE, _TTENDIAN_BE = 0b10, 0b11


class Ste(NamedTuple):
    """A valid, legal STE (IHI 0070 5.2), decoded. ``s1ctxptr`` and ``s2ttb`` are byte
    addresses; ``vmid`` is the TLB tag of the stream's regime (IHI 0070 3.17: -1 for the
    EL2 regimes, which have no VMID); ``s2`` is the stage 2 walker (None: stage 2 bypassed)."""

    raw: int
    config: int
    s1: bool
    s1fmt: int
    s1ctxptr: int
    s1cdmax: int
    s1dss: int
    s1stalld: bool
    eats: int
    strw: int
    vmid: int
    s2: VmsaWalker | None
    s2ttb: int
    s2endi: bool
    s2s: bool
    s2r: bool


class Cd(NamedTuple):
    """A valid, legal CD (IHI 0070 5.4), decoded: for each of TTB0 / TTB1 its table base and
    its walk (``range0`` / ``range1``: None when the range is disabled by EPDx or absent in
    the regime); ``asid`` the
    TLB tag (-1 in the EL2 regime without E2H: no ASID); the fault controls S, R, A."""

    raw: int
    asid: int
    #: The TLB tag of the CD's process-specific entries: the ASID, or GLOBAL (-1) in the
    #: ASID-less EL2 regime.
    tag: int
    ttb0: int
    ttb1: int
    two_ranges: bool
    tbi0: bool
    tbi1: bool
    #: Per range (TTB0, TTB1; None: no walk), what the stage 1 walk needs:
    #: ``(walker, ttb, kept, bits, want)`` -- the address bits ``kept`` (all, or 55:0 under
    #: TBI) above the range's ``bits`` must equal ``want`` (0 for TTB0, all ones for TTB1).
    range0: tuple[VmsaWalker, int, int, int, int] | None
    range1: tuple[VmsaWalker, int, int, int, int] | None
    endi: bool
    s: bool
    r: bool
    a: bool
    aset: bool


def _granule_ok(p: Smmuv3Params, g: Granule) -> bool:
    return bool(p.idr5_field(_GRAN_FIELD[g]))


def _size_bits(p: Smmuv3Params, enc: int) -> int:
    """CD.IPS / STE.S2PS: the configured output size, never above the OAS."""
    return min(OAS_BITS.get(enc, p.oas_bits), p.oas_bits)


def _endian_ok(p: Smmuv3Params, be: int) -> bool:
    te = p.idr0_field("ttendian")
    return not ((te == _TTENDIAN_LE and be) or (te == _TTENDIAN_BE and not be))


def decode_ste(raw: int, p: Smmuv3Params, e2h: bool, walker: WalkerFactory) -> Ste | str:
    """The STE whose 512-bit image is ``raw`` (V = 1 already checked by the caller), or why
    it is ILLEGAL (IHI 0070 5.2). ``e2h``: SMMU_CR2.E2H."""
    f = STE.decode(raw)
    config = f["config"]
    if config in (0b001, 0b010, 0b011):
        return f"Config {config:#05b} is reserved"
    s1 = bool(config & 1)
    s2 = bool(config & 2) and config != STE_CONFIG_BYPASS
    if config in (STE_CONFIG_ABORT, STE_CONFIG_BYPASS):
        s1 = s2 = False
    if s1 and not p.idr0_field("s1p"):
        return "stage 1 enabled but IDR0.S1P = 0"
    if s2 and not p.idr0_field("s2p"):
        return "stage 2 enabled but IDR0.S2P = 0"
    stall_model = p.idr0_field("stall_model")
    strw = f["strw"]
    if s1 or s2:
        if strw == 0b01:
            return "STRW = EL3 for a Non-secure stream"
        if strw in (STRW_EL2, STRW_EL2_E2H) and not p.idr0_field("hyp"):
            return "STRW = EL2 but IDR0.Hyp = 0"
        if strw == STRW_EL2_E2H and not e2h:
            return "STRW = EL2-E2H but SMMU_CR2.E2H = 0"
        if strw != STRW_NSEL1 and s2:
            return "stage 2 enabled in an EL2 StreamWorld"
    eats = f["eats"] if p.idr0_field("ats") else EATS_ABORT
    if eats == 0b11:
        return "EATS = 0b11 is reserved"
    if eats == EATS_SPLIT and (p.idr0_field("ns1ats") or config != STE_CONFIG_NESTED):
        return "split-stage ATS (EATS = 0b10) needs nesting and IDR0.NS1ATS = 0"
    s1cdmax = f["s1cdmax"]
    s1fmt = f["s1fmt"]
    s1ctxptr = f["s1contextptr"] << 6
    s1stalld = bool(f["s1stalld"]) and stall_model != _STALL_NONE
    if s1:
        if s1cdmax > p.ssid_bits:
            return f"S1CDMAX {s1cdmax} exceeds IDR1.SSIDSIZE {p.ssid_bits}"
        if s1cdmax and s1fmt not in (S1FMT_LINEAR, S1FMT_4K_L2, S1FMT_64K_L2):
            return "S1Fmt = 0b11 is reserved"
        if s1cdmax and s1fmt != S1FMT_LINEAR and not p.idr0_field("cd2l"):
            return "2-level CD table but IDR0.CD2L = 0"
        if s1cdmax and f["s1dss"] == 0b11:
            return "S1DSS = 0b11 is reserved"
        if not s2 and s1ctxptr >> p.oas_bits:
            return "S1ContextPtr is above the OAS"
        if s1stalld and stall_model == _STALL_FORCED:
            return "S1STALLD = 1 but stalls are forced (IDR0.STALL_MODEL = 0b10)"
    vmid = f["s2vmid"] if p.idr0_field("vmid16") else f["s2vmid"] & 0xFF
    if (s1 or s2) and strw != STRW_NSEL1:
        vmid = -1
    elif not p.idr0_field("s2p"):
        vmid = 0
    s2w: VmsaWalker | None = None
    s2s = False
    if s2:
        g = _TG0.get(f["s2tg"])
        if g is None or not _granule_ok(p, g):
            return f"S2TG {f['s2tg']:#04b} selects a granule the SMMU does not implement"
        ttst = bool(p.idr3_field("stt"))
        fmt = stage2_format(g, f["s2t0sz"], f["s2sl0"], ttst, bool(p.idr3_field("xnx")))
        if fmt is None:
            return f"S2T0SZ {f['s2t0sz']} / S2SL0 {f['s2sl0']} invalid for a {g}KB granule"
        if not f["s2aa64"]:
            return "S2AA64 = 0: AArch32 stage 2 tables are not implemented"
        if not _endian_ok(p, f["s2endi"]):
            return "S2ENDI selects an endianness IDR0.TTENDIAN does not support"
        s2s = bool(f["s2s"])
        if stall_model == _STALL_NONE and s2s:
            return "S2S = 1 but the SMMU cannot stall (IDR0.STALL_MODEL = 0b01)"
        if stall_model == _STALL_FORCED and not s2s:
            return "S2S = 0 but stalls are forced (IDR0.STALL_MODEL = 0b10)"
        httu = p.idr0_field("httu")
        ha = bool(f["s2ha"]) and httu >= 1
        hd = bool(f["s2hd"]) and httu >= 2
        s2w = walker(fmt, _size_bits(p, f["s2ps"]), ha, hd, bool(f["s2affd"]))
    return Ste(
        raw=raw,
        config=config,
        s1=s1,
        s1fmt=s1fmt,
        s1ctxptr=s1ctxptr,
        s1cdmax=s1cdmax if s1 else 0,
        s1dss=f["s1dss"],
        s1stalld=s1stalld,
        eats=eats,
        strw=strw,
        vmid=vmid,
        s2=s2w,
        s2ttb=(raw >> 192 & ((1 << 52) - 1)) & ~0xF,
        s2endi=bool(f["s2endi"]),
        s2s=s2s,
        s2r=bool(f["s2r"]),
    )


def cd_l2_bits(s1fmt: int) -> int:
    """SubstreamID bits a level-2 CD table resolves (IHI 0070 5.2 S1Fmt: 4KB leaf tables
    hold 64 CDs, 64KB ones 1024); 0 for a linear table."""
    return {S1FMT_4K_L2: 6, S1FMT_64K_L2: 10}.get(s1fmt, 0)


def decode_cd(raw: int, p: Smmuv3Params, ste: Ste, walker: WalkerFactory) -> Cd | str:
    """The CD whose 512-bit image is ``raw``, or why it is invalid or ILLEGAL (IHI 0070
    5.4): both are C_BAD_CD."""
    f = CD.decode(raw)
    if not f["v"]:
        return "V = 0"
    if not f["aa64"]:
        return "AA64 = 0: AArch32 stage 1 tables are not implemented"
    if not _endian_ok(p, f["endi"]):
        return "ENDI selects an endianness IDR0.TTENDIAN does not support"
    stall_model = p.idr0_field("stall_model")
    s = bool(f["s"])
    if stall_model == _STALL_NONE and s:
        return "S = 1 but the SMMU cannot stall (IDR0.STALL_MODEL = 0b01)"
    if stall_model == _STALL_FORCED and not s:
        return "S = 0 but stalls are forced (IDR0.STALL_MODEL = 0b10)"
    if s and ste.s1stalld:
        return "S = 1 but STE.S1STALLD = 1"
    httu = p.idr0_field("httu")
    ha = bool(f["ha"]) and httu >= 1
    hd = bool(f["hd"]) and httu >= 2
    oa = _size_bits(p, f["ips"])
    affd = bool(f["affd"])
    ttst = bool(p.idr3_field("stt"))
    el2 = ste.strw == STRW_EL2
    walkers: list[VmsaWalker | None] = []
    for n, tgs in ((0, _TG0), (1, _TG1)):
        if f[f"epd{n}"] or (n == 1 and el2):
            walkers.append(None)
            continue
        g = tgs.get(f[f"tg{n}"])
        if g is None or not _granule_ok(p, g):
            return f"TG{n} {f[f'tg{n}']:#04b} selects a granule the SMMU does not implement"
        fmt = stage1_format(g, f[f"t{n}sz"], ttst)
        if fmt is None:
            return f"T{n}SZ {f[f't{n}sz']} is out of range for a {g}KB granule"
        walkers.append(walker(fmt, oa, ha, hd, affd))
    asid = f["asid"] if p.idr0_field("asid16") else f["asid"] & 0xFF
    ttbs = ((raw >> 64 & _PA52) & ~0xF, (raw >> 128 & _PA52) & ~0xF)
    ranges: list[tuple[VmsaWalker, int, int, int, int] | None] = []
    for n, w in enumerate(walkers):
        if w is None:
            ranges.append(None)
            continue
        tbi = bool(f["tbi"] >> n & 1)
        bits = w.w.va_bits
        kept = _UNTAGGED if tbi else _ALL64
        want = kept >> bits if n else 0
        ranges.append((w, ttbs[n], kept, bits, want))
    return Cd(
        raw=raw,
        asid=-1 if el2 else asid,
        tag=-1 if el2 else asid,
        ttb0=ttbs[0],
        ttb1=ttbs[1],
        two_ranges=not el2,
        tbi0=bool(f["tbi"] & 1),
        tbi1=bool(f["tbi"] & 2),
        range0=ranges[0],
        range1=ranges[1],
        endi=bool(f["endi"]),
        s=s,
        r=bool(f["r"]),
        a=bool(f["a"]) or bool(p.idr0_field("term_model")),
        aset=bool(f["aset"]),
    )
