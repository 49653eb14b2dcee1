"""The maintenance interface between an SMMUv3's command queue and its translation caches.

IHI 0070 4.3 "Configuration structures and configuration invalidation", 4.4 "TLB
invalidation" and 4.2 "Prefetch" commands, and 3.17 "Broadcast TLB maintenance" (BTM): the
command queue decodes each command and calls one method of a :class:`CacheMaintenance`, which
the SMMU's translation caches implement. A TLB invalidation is one :class:`Tlbi` record,
whatever its scope, so the CPU-side broadcast path (BTM) and the command path share one
matcher.

:class:`TranslationCounts` are the events the translator counts for the performance monitor
counter group (IHI 0070 10 "Performance Monitor Counter Groups").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

__all__ = ["CacheMaintenance", "Tlbi", "TlbiScope", "TranslationCounts"]

#: Which TLB entries a :class:`Tlbi` names (IHI 0070 4.4): ``nh_*`` non-hypervisor stage 1
#: entries of one VMID (``nh_all``: all stage 1 of the VMID; ``nh_asid``: one ASID;
#: ``nh_va``: one address of one ASID; ``nh_vaa``: one address, any ASID), ``el2_*`` the EL2
#: (VMID-less) regime's entries, ``s12_vmall`` every stage 1 and stage 2 entry of one VMID,
#: ``s2_ipa`` stage 2 entries of one IPA, ``nsnh_all`` every non-secure non-hypervisor entry,
#: ``el2_all`` every EL2 entry.
TlbiScope = Literal[
    "nh_all",
    "nh_asid",
    "nh_va",
    "nh_vaa",
    "el2_all",
    "el2_asid",
    "el2_va",
    "el2_vaa",
    "s12_vmall",
    "s2_ipa",
    "nsnh_all",
]


class Tlbi(NamedTuple):
    """One TLB invalidation (IHI 0070 4.4), as a command or a broadcast TLBI carries it.

    ``addr`` is a byte address (VA for ``*_va``/``*_vaa``, IPA for ``s2_ipa``); ``leaf``:
    only last-level (leaf) entries need be invalidated. Range invalidation (IHI 0070 4.4.1,
    IDR3.RIL): ``tg`` the granule (0: not a range, 1: 4K, 2: 16K, 3: 64K), ``num`` and
    ``scale`` give the range ``(num + 1) * 2**scale`` granules (the command's 5-bit SCALE;
    a broadcast CPU TLBI by range, whose 2-bit SCALE counts ``2**(5 * scale + 1)``, arrives
    converted), ``ttl`` the
    translation table level hint (0 unknown). ``broadcast``: arrived by BTM from the CPU side
    rather than the command queue (IHI 0070 3.17: honoured only when IDR0.BTM and CR2.PTM=0,
    and for stage 1 only for entries whose CD.ASET is 0)."""

    scope: TlbiScope
    vmid: int = 0
    asid: int = 0
    addr: int = 0
    leaf: bool = False
    tg: int = 0
    num: int = 0
    scale: int = 0
    ttl: int = 0
    broadcast: bool = False


class CacheMaintenance(Protocol):
    """What the command queue asks of the caches (IHI 0070 4.2-4.4). Invalidating more than
    asked is allowed, never less; none of these raises for any argument."""

    def prefetch_config(self, sid: int, ssv: bool, ssid: int) -> None:
        """CMD_PREFETCH_CONFIG: may load the STE (and CD) of ``sid``/``ssid``; never
        records an event (IHI 0070 4.2.1)."""
        ...

    def cfgi_ste(self, sid: int, leaf: bool) -> None:
        """CMD_CFGI_STE: the STE of ``sid`` (``leaf``=0: also its level-1 descriptor)."""
        ...

    def cfgi_ste_range(self, sid: int, range_lg2: int) -> None:
        """CMD_CFGI_STE_RANGE: the ``2**(range_lg2 + 1)`` STEs aligned around ``sid``
        (``range_lg2`` = 31: every STE, CMD_CFGI_ALL)."""
        ...

    def cfgi_cd(self, sid: int, ssid: int, leaf: bool) -> None:
        """CMD_CFGI_CD: the CD of ``sid``/``ssid`` (``leaf``=0: also its L1CD)."""
        ...

    def cfgi_cd_all(self, sid: int) -> None:
        """CMD_CFGI_CD_ALL: every CD of ``sid``."""
        ...

    def tlbi(self, t: Tlbi) -> None:
        """One TLB invalidation, from a command or (``t.broadcast``) by BTM."""
        ...


@dataclass(slots=True)
class TranslationCounts:
    """Event counts kept by the translator for the PMCG, by the architected event numbers
    (IHI 0070 10.3 "Event numbers"; Linux ``arm_smmuv3_pmu`` names them): 0x1 transactions
    presented, 0x2 TLB misses (for a transaction or an ATS request), 0x3 configuration cache
    misses (an STE or CD fetched from memory), 0x4 translation table walk accesses (one per
    descriptor read), 0x5 configuration structure accesses, 0x6 ATS translation requests
    received, 0x7 ATS translated transactions passed through."""

    transactions: int = 0
    tlb_misses: int = 0
    config_misses: int = 0
    walk_accesses: int = 0
    config_accesses: int = 0
    ats_requests: int = 0
    ats_translated: int = 0
