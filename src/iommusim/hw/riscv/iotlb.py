"""IOTLB entries and their invalidation matching (riscv-iommu: "Caching in-memory data
structures", "IOMMU Page-Table cache invalidation commands").

The IOTLB is a dict (:attr:`TranslationEngine.iotlb`) keyed by the request, as the hot path
builds it: ``(device_id, process_id or -1, privileged, iova >> 12)`` -- one entry per 4 KiB
page -- and holding an :class:`IotlbEntry`. Invalidating more than asked is allowed, never less.

With ``CacheParams.iotlb_superpages`` an entry covers its translation's whole range
(``size_lg2``), keyed by the range's first page: a request in that page finds it with the same
key, one elsewhere in the range by :func:`superpage_shifts`' probes (the page number rounded
down to each range size the IOMMU can produce, the entry's size confirming the match).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

from iommusim.bits.riscv.pgtable import FIRST_STAGE_FORMATS, G_STAGE_FORMATS

__all__ = ["IotlbEntry", "IotlbKey", "match_gvma", "match_vma", "superpage_shifts"]

#: ``(device_id, process_id or -1, privileged, iova >> 12)``: a tuple, built per lookup.
IotlbKey = tuple[int, int, bool, int]


@dataclass(slots=True)
class IotlbEntry:
    """One cached translation of a 4 KiB page; never changed once in the IOTLB.

    Tagged for IOTINVAL matching: ``gscid`` (-1 for a host address space, no G-stage),
    ``pscid`` (-1 for a Bare first stage) and ``glob`` (the first-stage Global bit). ``pa`` is
    the page's SPA, ``ok`` the permissions both stages grant (bit 0 read, bit 1 write -- only
    once the leaf is dirty), ``pbmt`` the memory type and ``size_lg2`` the translation's range
    (the smaller stage's page).

    A slotted class rather than a frozen record or a NamedTuple: the IOTLB-hit path reads
    ``ok`` and ``pa`` as fast as a tuple's items only from slots (a NamedTuple's accessors cost
    a few percent of a hit), and a frozen dataclass's ``__init__`` would slow every fill."""

    gscid: int
    pscid: int
    glob: bool
    pa: int
    ok: int
    pbmt: int
    size_lg2: int


def superpage_shifts(bare_page_size: Mapping[str, int]) -> tuple[int, ...]:
    """The range sizes above 4 KiB a translation can have -- every level of every RISC-V
    format, their NAPOT ranges and the Bare stages' (``bare_page_size``) -- as shifts of the
    4 KiB page number, smallest first."""
    sizes = {f.level_shift(lv) for by_mode in (*FIRST_STAGE_FORMATS, *G_STAGE_FORMATS)
             for f in by_mode.values() for lv in range(len(f.index_bits))}  # fmt: skip
    sizes |= {
        f.page_shift + f.napot_order
        for by_mode in FIRST_STAGE_FORMATS
        for f in by_mode.values()
        if f.napot
    }
    sizes |= {v.bit_length() - 1 for v in bare_page_size.values()}
    return tuple(sorted(s - 12 for s in sizes if s > 12))


def match_gvma(
    tlb: MutableMapping[IotlbKey, IotlbEntry], gv: bool, gscid: int
) -> Iterator[IotlbKey]:
    """Keys IOTINVAL.GVMA removes: entries derived from G-stage tables, of ``gscid`` when GV.

    Entries are not indexed by GPA range: a GSCID match suffices (a superset of the addressed
    entries, as the spec's note on IOTINVAL.GVMA allows)."""
    for key, e in tlb.items():
        if e.gscid >= 0 and (not gv or e.gscid == gscid):
            yield key


def match_vma(
    tlb: MutableMapping[IotlbKey, IotlbEntry],
    gv: bool,
    gscid: int,
    pscv: bool,
    pscid: int,
    av: bool,
    addr_pn: int,
    span: int,
) -> Iterator[IotlbKey]:
    """Keys IOTINVAL.VMA removes: of the host (no GV) or of ``gscid``; of ``pscid`` and not
    Global when PSCV; whose range meets the ``span`` pages at ``addr_pn`` when AV."""
    for key, e in tlb.items():
        etag = e.gscid
        if (etag >= 0) != gv or (gv and etag != gscid):
            continue
        if pscv and (e.glob or e.pscid != pscid):
            continue
        if av:
            shift = e.size_lg2 - 12
            vpn = key[3] >> shift
            if not addr_pn >> shift <= vpn <= (addr_pn + span - 1) >> shift:
                continue
        yield key
