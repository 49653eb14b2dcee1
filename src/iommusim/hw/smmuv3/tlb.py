"""The SMMUv3 TLB: entries tagged by translation regime, VMID and ASID, and the matching of
every TLB invalidation scope (IHI 0070 3.17 "TLB tagging, VMIDs, ASIDs and participation in
broadcast TLB maintenance", 4.4 "TLB invalidation", 4.4.1 range invalidation).

The TLB is a :class:`~iommusim.hw.common.cache.BoundedCache` keyed, like the RISC-V IOTLB,
one entry per 4 KiB input page: ``(vmid, asid, privileged, addr >> 12)``. ``vmid`` is -1 for
the EL2 regimes; ``asid`` is the CD's ASID for a stage 1 (or combined stage 1 + stage 2)
entry, :data:`GLOBAL` for a stage 1 entry with nG = 0 (or of the ASID-less EL2 regime), and
:data:`S2_ONLY` for a stage 2 entry (an IPA -> PA translation: a stream with only stage 2, or a
stage 1 table address translated under nesting). Invalidating more than asked is allowed,
never less: combined entries remember the IPA they came from, so TLBI_S2_IPA removes them
too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from iommusim.bits.pgformat import PERM_R, PERM_W, PERM_X
from iommusim.hw.smmuv3.maintenance import Tlbi

__all__ = ["GLOBAL", "S2_ONLY", "TlbEntry", "TlbKey", "match_tlbi", "tlbi_range"]

#: ``(vmid or -1, asid or GLOBAL / S2_ONLY, privileged, input address >> 12)``.
TlbKey = tuple[int, int, bool, int]
GLOBAL: Final = -1
S2_ONLY: Final = -2
#: Range invalidation granule by TG (IHI 0070 4.4.1): 4KB, 16KB, 64KB.
_TG_SHIFT: Final = {1: 12, 2: 14, 3: 16}


@dataclass(slots=True)
class TlbEntry:
    """One cached translation (never changed once cached): the output ``pa`` of its 4 KiB
    page, the ``PERM_*`` bits both stages grant (W only once dirty), the log2 ``size_lg2``
    of the translation (the smaller stage's block or page) and, when a stage 2 was involved,
    the 4 KiB page number of the IPA (-1 otherwise). ``r``, ``w``, ``x``: the permissions
    as the response reports them (computed once, read on every hit)."""

    pa: int
    perms: int
    size_lg2: int
    ipa_pn: int
    r: bool = field(init=False)
    w: bool = field(init=False)
    x: bool = field(init=False)

    def __post_init__(self) -> None:
        self.r = bool(self.perms & PERM_R)
        self.w = bool(self.perms & PERM_W)
        self.x = bool(self.perms & PERM_X)


def tlbi_range(t: Tlbi) -> tuple[int, int]:
    """The input-address range ``[lo, hi)`` a TLBI by address names: one address (TG = 0),
    or ``(NUM + 1) * 2**SCALE`` granules from it (IHI 0070 4.4.1; as Linux
    ``__arm_smmu_tlb_inv_range`` encodes it: ``inv_range = num << (scale + tg)``)."""
    if not t.tg:
        return t.addr, t.addr + 1
    g = _TG_SHIFT[t.tg]
    base = t.addr >> g << g
    return base, base + ((t.num + 1) << (t.scale + g))


def _overlaps(pn: int, size_lg2: int, lo: int, hi: int) -> bool:
    base = (pn << 12) >> size_lg2 << size_lg2
    return base < hi and lo < base + (1 << size_lg2)


def match_tlbi(tlb: Mapping[TlbKey, TlbEntry], t: Tlbi) -> Iterator[TlbKey]:
    """The keys a :class:`Tlbi` removes (IHI 0070 4.4, each scope's "invalidates ...")."""
    sc = t.scope
    el2 = sc.startswith("el2")
    by_addr = sc.endswith(("_va", "_vaa")) or sc == "s2_ipa"
    lo, hi = tlbi_range(t) if by_addr else (0, 0)
    for key, e in tlb.items():
        vmid, asid, _, pn = key
        if sc == "nsnh_all":
            if vmid >= 0:
                yield key
            continue
        if el2 != (vmid < 0) or (not el2 and vmid != t.vmid):
            continue
        if sc == "s12_vmall":
            yield key
            continue
        if sc == "s2_ipa":
            if e.ipa_pn >= 0 and _overlaps(e.ipa_pn, e.size_lg2, lo, hi):
                yield key
            continue
        if asid == S2_ONLY:
            continue  # stage 1 scopes leave stage 2 entries alone
        if sc.endswith("_asid") and asid != t.asid:
            continue
        if sc.endswith("_va") and asid not in (t.asid, GLOBAL):
            continue
        if by_addr and not _overlaps(pn, e.size_lg2, lo, hi):
            continue
        yield key
