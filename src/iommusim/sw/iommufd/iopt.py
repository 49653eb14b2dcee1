"""``struct io_pagetable`` (``drivers/iommu/iommufd/io_pagetable.c``): the IOVA space of one
IOAS -- its areas, allowed and reserved ranges, the IOVA alignment, the domains every area
is mapped into (the HWPT_PAGINGs on this IOAS) and the in-kernel accesses using it.

Addresses are 64-bit (``unsigned long`` of an LP64 kernel): ``ULONG_MAX`` is ``2**64 - 1``.
Every operation validates before it changes anything, or undoes what it did before raising
(a domain that fails to map), except :meth:`IoPagetable.unmap_range`, which keeps the
kernel's behaviour of unmapping area by area and stopping at the first area it cannot remove
(the areas before it stay unmapped and are counted in ``unmapped``).

Pins follow ``pages.c``: while the table has at least one domain, every area holds one pin
user on its pages (``area->storage_domain`` / ``pages->domains_itree``), taken when the area
is filled into the first domain and dropped when it leaves the last one; accesses pin on
their own (:meth:`IoPages.add_access`). A table without domains pins nothing by itself.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import (
    AddressInUse,
    ApiError,
    Busy,
    Deadlock,
    Exists,
    InvalidArgument,
    ModelError,
    NoSpace,
    NotFound,
    NotPermitted,
    Overflow,
)
from iommusim.sw.core.domain import Domain
from iommusim.sw.iommufd.pages import IoPages
from iommusim.sw.pages import PAGE_SIZE
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.prot import IOMMU_WRITE

__all__ = [
    "RESV_DIRECT",
    "RESV_DIRECT_RELAXABLE",
    "RESV_MSI",
    "RESV_RESERVED",
    "RESV_SW_MSI",
    "ULONG_MAX",
    "AccessUser",
    "Area",
    "ContigSpan",
    "IoPagetable",
    "IovaRange",
    "PagesSlice",
    "ResvRegion",
]

ULONG_MAX: Final = (1 << 64) - 1
#: ``SIZE_MAX`` of the kernel, the ``size_t`` bound on a length.
SIZE_MAX: Final = ULONG_MAX
#: ``HPAGE_SIZE`` with transparent huge pages: the largest auto-IOVA alignment.
HPAGE_SIZE: Final = 2 << 20
#: How often an unmap asks the accesses to unpin an area before giving up with
#: EDEADLOCK (``iopt_unmap_iova_range``'s ``tries``).
UNMAP_TRIES: Final = 100

# enum iommu_resv_type (include/linux/iommu.h).
RESV_DIRECT: Final = 0
RESV_DIRECT_RELAXABLE: Final = 1
RESV_RESERVED: Final = 2
RESV_MSI: Final = 3
RESV_SW_MSI: Final = 4


class ResvRegion(NamedTuple):
    """``struct iommu_resv_region``: ``[start, last]`` of a device the IOAS must not map
    (``type`` one of ``RESV_*``)."""

    start: int
    last: int
    type: int = RESV_RESERVED


class ContigSpan(NamedTuple):
    """One step of ``iopt_for_each_contig_area``: ``area`` covers ``[first, last]`` of the
    range walked."""

    area: Area
    first: int
    last: int


class AccessUser(Protocol):
    """What the table needs of an in-kernel access on it (``iopt->access_list``): its
    IOVA alignment and the unmap notification (``iommufd_access_notify_unmap``), after
    which the access must have unpinned everything in ``[iova, iova + length)``."""

    @property
    def iova_alignment(self) -> int: ...

    def notify_unmap(self, iova: int, length: int) -> None: ...


class IovaRange(NamedTuple):
    """An inclusive IOVA range ``[start, last]`` (``struct iommu_iova_range``)."""

    start: int
    last: int


class PagesSlice(NamedTuple):
    """``struct iopt_pages_list`` element: ``length`` bytes of ``pages`` from byte
    ``start_byte`` (counted from ``pages.uptr``)."""

    pages: IoPages
    start_byte: int
    length: int


@dataclass(slots=True, eq=False)
class Area:
    """``struct iopt_area``: ``[iova, last]`` maps bytes from ``start_byte`` of ``pages``."""

    iova: int
    last: int
    pages: IoPages
    start_byte: int
    prot: int
    #: Objects locking the area against unmap (``area->num_locks``).
    num_locks: int = 0
    #: In-kernel accesses using the area (``area->num_accesses``).
    num_accesses: int = 0
    #: An unmap is waiting for the accesses to let go: new pins and rw are EINVAL.
    prevent_access: bool = False

    @property
    def length(self) -> int:
        return self.last - self.iova + 1

    @property
    def page_offset(self) -> int:
        return self.start_byte % PAGE_SIZE

    @property
    def first_index(self) -> int:
        return self.start_byte // PAGE_SIZE

    @property
    def last_index(self) -> int:
        return (self.start_byte + self.length - 1) // PAGE_SIZE

    def start_byte_at(self, iova: int) -> int:
        """``iopt_area_start_byte``: the pages byte that ``iova`` maps."""
        return self.start_byte + (iova - self.iova)

    def index_at(self, iova: int) -> int:
        """``iopt_area_iova_to_index``: the pages index that ``iova`` maps."""
        return self.start_byte_at(iova) // PAGE_SIZE


def _roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _ffs(n: int) -> int:
    """``__ffs64``: index of the lowest set bit of a non-zero ``n``."""
    return (n & -n).bit_length() - 1


def _merged(ranges: Iterable[tuple[int, int]], first: int, last: int) -> list[IovaRange]:
    """The used spans of ``interval_tree_for_each_span`` over ``[first, last]``: the
    union of the ranges, touching ones joined, clipped to the window."""
    out: list[IovaRange] = []
    for s, e in sorted(ranges):
        if e < first or s > last:
            continue
        s, e = max(s, first), min(e, last)
        if out and s <= out[-1].last + 1:
            if e > out[-1].last:
                out[-1] = IovaRange(out[-1].start, e)
        else:
            out.append(IovaRange(s, e))
    return out


def _holes(used: Sequence[IovaRange], first: int, last: int) -> list[IovaRange]:
    """The hole spans of the same iteration: ``[first, last]`` minus ``used``."""
    out: list[IovaRange] = []
    at = first
    for s, e in used:
        if s > at:
            out.append(IovaRange(at, s - 1))
        at = e + 1
    if at <= last:
        out.append(IovaRange(at, last))
    return out


def _check_range(start: int, last: int, length: int, align: int, page_offset: int) -> int | None:
    """``__alloc_iova_check_range``: the aligned start that fits ``length`` in
    ``[start, last]``, keeping ``page_offset``, or None."""
    aligned = start + align - 1
    if aligned > ULONG_MAX:
        return None
    aligned = (aligned & ~(align - 1)) | page_offset
    if aligned >= last or last - aligned < length - 1:
        return None
    return aligned


class IoPagetable:
    """The IOVA space of an IOAS (``iopt_init_table``: no alignment restriction, no
    allowed or reserved ranges, no domains, no accesses)."""

    __slots__ = (
        "_areas",
        "_starts",
        "accesses",
        "allowed",
        "disable_large_pages",
        "domains",
        "iova_alignment",
        "reserved",
    )

    def __init__(self) -> None:
        self._areas: list[Area] = []
        self._starts: list[int] = []
        self.allowed: list[IovaRange] = []
        #: (range, owner) of every reserved range (``iopt_reserve_iova``).
        self.reserved: list[tuple[IovaRange, object]] = []
        self.iova_alignment = 1
        self.disable_large_pages = False
        #: Domains filled from this table (``iopt->domains``), in the kernel's xarray
        #: order: index 0 is the storage domain.
        self.domains: list[Domain] = []
        #: In-kernel accesses attached (``iopt->access_list``).
        self.accesses: list[AccessUser] = []

    # ------------------------------------------------------------------ queries
    @property
    def areas(self) -> list[Area]:
        """Every area in IOVA order (a copy of the list)."""
        return list(self._areas)

    def areas_in(self, first: int, last: int) -> list[Area]:
        """Areas intersecting ``[first, last]`` in IOVA order (``iopt_area_iter_*``)."""
        i = bisect.bisect_right(self._starts, first) - 1
        if i < 0 or self._areas[i].last < first:
            i += 1
        out: list[Area] = []
        while i < len(self._areas) and self._areas[i].iova <= last:
            out.append(self._areas[i])
            i += 1
        return out

    def contig_areas(self, iova: int, last: int) -> tuple[list[ContigSpan], bool]:
        """``iopt_for_each_contig_area`` over ``[iova, last]``: the areas that cover it
        without a gap from ``iova`` on, each with the part of the range it covers, and
        whether they reach ``last`` (``iopt_area_contig_done``)."""
        out: list[ContigSpan] = []
        cur = iova
        for area in self.areas_in(iova, last):
            if area.iova > cur:
                break
            end = min(last, area.last)
            out.append(ContigSpan(area, cur, end))
            if end == last:
                return out, True
            cur = end + 1
        return out, False

    def _reserved_hits(self, first: int, last: int) -> bool:
        return any(r.start <= last and first <= r.last for r, _ in self.reserved)

    def iova_ranges(self) -> list[IovaRange]:
        """The usable IOVA ranges IOAS_IOVA_RANGES reports: the holes of the reserved
        ranges over the whole space (the allowed list does not enter)."""
        used = _merged((r for r, _ in self.reserved), 0, ULONG_MAX)
        return _holes(used, 0, ULONG_MAX)

    # ------------------------------------------------------------------ IOVA choice
    def alloc_iova(self, addr: int, length: int) -> int:
        """``iopt_alloc_iova``: the lowest free IOVA for ``length`` bytes mapping from
        address ``addr`` (user address or file offset), aligned as the kernel aligns it
        (never IOVA 0)."""
        page_offset = addr % PAGE_SIZE
        if length == 0 or length >= ULONG_MAX // 2:
            raise Overflow(f"length {length:#x} cannot be allocated")
        align = _roundup_pow_of_two(length)
        if addr:
            # Keep the alignment present in addr, for huge pages.
            align = min(align, 1 << _ffs(addr))
        align = min(align, HPAGE_SIZE)
        if align < self.iova_alignment:
            raise InvalidArgument(
                f"IOVA alignment {align:#x} from addr {addr:#x} and length {length:#x} is "
                f"below the IOAS's {self.iova_alignment:#x}"
            )
        window = (PAGE_SIZE, ULONG_MAX - PAGE_SIZE)
        allowed = _merged(self.allowed, *window) if self.allowed else [IovaRange(*window)]
        busy = [(r.start, r.last) for r, _ in self.reserved]
        busy += [(a.iova, a.last) for a in self._areas]
        for span in allowed:
            start = _check_range(span.start, span.last, length, align, page_offset)
            if start is None:
                continue
            for hole in _holes(_merged(busy, start, span.last), start, span.last):
                iova = _check_range(hole.start, hole.last, length, align, page_offset)
                if iova is not None:
                    return iova
        raise NoSpace(f"no free IOVA range of {length:#x} bytes")

    def check_iova(self, iova: int, length: int) -> None:
        """``iopt_check_iova`` for a fixed IOVA: EINVAL when misaligned or reserved,
        EOVERFLOW past the end, EEXIST on an existing area."""
        if iova & (self.iova_alignment - 1):
            raise InvalidArgument(f"iova {iova:#x} is not aligned to {self.iova_alignment:#x}")
        last = iova + length - 1
        if last > ULONG_MAX:
            raise Overflow(f"iova {iova:#x} + length {length:#x} overflows")
        if self._reserved_hits(iova, last):
            raise InvalidArgument(f"range {iova:#x}..{last:#x} intersects a reserved range")
        if self.areas_in(iova, last):
            raise Exists(f"range {iova:#x}..{last:#x} overlaps a mapped area")

    # ------------------------------------------------------------------ mapping
    def map_pages(
        self, slices: Sequence[PagesSlice], length: int, iova: int | None, prot: int
    ) -> int:
        """``iopt_map_pages``: map ``slices`` (``length`` bytes in all) at ``iova``, or at
        an allocated IOVA when None; return the IOVA. Each new area is filled into every
        domain (pinned, then mapped: ``iopt_fill_domains_pages``) and takes a reference on
        its slice's pages. All or nothing: a domain that fails to map has the new areas
        unmapped from the domains already filled and their pins dropped."""
        if length & (self.iova_alignment - 1) or not length:
            raise InvalidArgument(
                f"length {length:#x} must be non-zero and aligned to {self.iova_alignment:#x}"
            )
        if iova is None:
            first = slices[0]
            iova = self.alloc_iova(first.start_byte + first.pages.uptr, length)
        else:
            self.check_iova(iova, length)
        new: list[Area] = []
        at = iova
        for sl in slices:  # iopt_insert_area's checks, before any area goes in
            if prot & IOMMU_WRITE and not sl.pages.writable:
                raise NotPermitted("cannot map read-only pages writeable")
            area = Area(at, at + sl.length - 1, sl.pages, sl.start_byte, prot)
            if area.page_offset & (self.iova_alignment - 1):
                raise InvalidArgument(
                    f"page offset {area.page_offset:#x} is not aligned to {self.iova_alignment:#x}"
                )
            if area.last > ULONG_MAX or sl.start_byte + sl.length - 1 > ULONG_MAX:
                raise Overflow(f"area at {at:#x} of {sl.length:#x} bytes overflows")
            new.append(area)
            at += sl.length
        filled: list[Area] = []
        try:
            for area in new:
                self._fill_domains(area)
                filled.append(area)
        except ApiError:
            for area in filled:
                self._unfill_domains(area)
            raise
        for area in new:
            area.pages.get()
            self._insert(area)
        return iova

    def _insert(self, area: Area) -> None:
        i = bisect.bisect_left(self._starts, area.iova)
        self._starts.insert(i, area.iova)
        self._areas.insert(i, area)

    def _remove(self, area: Area) -> None:
        i = bisect.bisect_left(self._starts, area.iova)
        if i >= len(self._areas) or self._areas[i] is not area:  # pragma: no cover
            raise AssertionError("area not in its table")
        del self._starts[i]
        del self._areas[i]

    def get_pages(self, iova: int, length: int) -> list[PagesSlice]:
        """``iopt_get_pages``: the pages behind ``[iova, iova + length)``, which must be
        covered by contiguous areas (ENOENT otherwise). Takes no reference: the caller
        maps the slices at once."""
        if not length:
            raise InvalidArgument("length must not be 0")
        last = iova + length - 1
        if last > ULONG_MAX:
            raise Overflow(f"iova {iova:#x} + length {length:#x} overflows")
        spans, done = self.contig_areas(iova, last)
        if not done:
            raise NotFound(f"range {iova:#x}..{last:#x} is not fully mapped")
        return [
            PagesSlice(a.pages, a.start_byte_at(first), end - first + 1) for a, first, end in spans
        ]

    # ------------------------------------------------------------------ domains
    def _map_area(self, area: Area, domain: Domain, pas: Sequence[int]) -> None:
        """``iopt_area_fill_domain`` / ``batch_to_domain``: map ``area`` into ``domain``
        from the physical addresses of its pages. Physically contiguous pages go in one
        map call, so the domain may use large pages, unless large pages are disabled
        (``batch_iommu_map_small``: one call per page). All or nothing."""
        runs: list[list[int]] = []  # [iova, pa, size]
        base = area.iova - area.page_offset
        for k, pa in enumerate(pas):
            skip = area.page_offset if k == 0 else 0
            va = base + k * PAGE_SIZE + skip
            size = min(PAGE_SIZE - skip, area.last + 1 - va)
            if runs and not self.disable_large_pages and runs[-1][1] + runs[-1][2] == pa + skip:
                runs[-1][2] += size
            else:
                runs.append([va, pa + skip, size])
        mapped = 0
        try:
            for va, pa, size in runs:
                domain.check_pa_range(pa, size)  # as IommuCore.map checks it
                domain.map(Iova(va), PhysAddr(pa), size, area.prot)
                mapped += size
        except ApiError:
            if mapped:
                _unmap_domain(domain, area.iova, mapped)
            raise

    def _fill_domains(self, area: Area) -> None:
        """``iopt_area_fill_domains``: pin ``area``'s pages and map it into every domain;
        nothing changed on failure."""
        if not self.domains or area.pages.revoked:
            return
        pages = area.pages
        pas = pages.pin(area.first_index, area.last_index)
        done: list[Domain] = []
        try:
            for domain in self.domains:
                self._map_area(area, domain, pas)
                done.append(domain)
        except ApiError:
            for domain in done:
                _unmap_domain(domain, area.iova, area.length)
            pages.unpin(area.first_index, area.last_index)
            raise

    def _unfill_domains(self, area: Area) -> None:
        """``iopt_area_unfill_domains``: unmap ``area`` from every domain, then drop its
        pin."""
        if not self.domains or area.pages.revoked:
            return
        for domain in self.domains:
            _unmap_domain(domain, area.iova, area.length)
        area.pages.unpin(area.first_index, area.last_index)

    def add_domain(self, domain: Domain) -> None:
        """``iopt_table_add_domain``: fill ``domain`` with every area and add it.

        EEXIST for a domain already added; EINVAL when its smallest page is larger than
        PAGE_SIZE (the model's pages could not be mapped); EADDRINUSE when an area is not
        aligned to that page, or when an area or an allowed range lies outside the
        domain's aperture (reserved, owner ``domain``, from now on); the domain's own
        map errors (ENOMEM, ...). All or nothing: on failure the areas already mapped are
        unmapped from it, pins taken are dropped, the reservations go."""
        if any(d is domain for d in self.domains):
            raise Exists(f"{domain!r} is already in this IOAS")
        if not domain.pgsize_bitmap:
            raise InvalidArgument(f"{domain!r} has no page sizes")
        align = max(1 << _ffs(domain.pgsize_bitmap), self.iova_alignment)
        if align > PAGE_SIZE:
            raise InvalidArgument(f"domain page size {align:#x} exceeds {PAGE_SIZE:#x}")
        if align != self.iova_alignment:
            self._check_alignment(align)
        try:
            # No area may exist outside the domain's aperture.
            if domain.aperture_start != 0:
                self.reserve_iova(0, domain.aperture_start - 1, domain)
            if domain.aperture_end != ULONG_MAX:
                self.reserve_iova(domain.aperture_end + 1, ULONG_MAX, domain)
            self._fill_domain(domain)
        except ApiError:
            self.remove_reserved(domain)
            raise
        self.iova_alignment = align
        self.domains.append(domain)

    def _fill_domain(self, domain: Domain) -> None:
        """``iopt_fill_domain``: map every area into ``domain`` (the first domain pins
        the pages); on failure unmap and unpin what was done."""
        first = not self.domains
        done: list[Area] = []
        try:
            for area in self._areas:
                if area.pages.revoked:  # a revoked dma-buf maps into no domain
                    continue
                if first:
                    pas = area.pages.pin(area.first_index, area.last_index)
                else:
                    pas = area.pages.lookup(area.first_index, area.last_index)
                try:
                    self._map_area(area, domain, pas)
                except ApiError:
                    if first:
                        area.pages.unpin(area.first_index, area.last_index)
                    raise
                done.append(area)
        except ApiError:
            for area in done:
                _unmap_domain(domain, area.iova, area.length)
                if first:
                    area.pages.unpin(area.first_index, area.last_index)
            raise

    def revoke(self, pages: IoPages) -> None:
        """The exporter revoked the dma-buf behind ``pages`` (``iopt_revoke_notify``):
        every area of it leaves every domain; the areas stay, with no translation."""
        for area in self._areas:
            if area.pages is pages:
                self._unfill_domains(area)

    def remove_domain(self, domain: Domain) -> None:
        """``iopt_table_remove_domain``: unmap every area from ``domain`` (the last domain
        drops the areas' pins: pages stay pinned only for accesses), drop its reserved
        ranges and recalculate the alignment. The tail domain takes the removed one's
        index, as the kernel keeps its xarray dense. A domain not in the table is a
        :class:`ModelError` (the kernel's WARN)."""
        index = next((i for i, d in enumerate(self.domains) if d is domain), None)
        if index is None:
            raise ModelError(f"{domain!r} is not in this IOAS")
        tail = self.domains.pop()
        if index < len(self.domains):
            self.domains[index] = tail
        for area in self._areas:
            if area.pages.revoked:
                continue
            _unmap_domain(domain, area.iova, area.length)
            if not self.domains:
                area.pages.unpin(area.first_index, area.last_index)
        self.remove_reserved(domain)
        self._calculate_alignment()

    # ------------------------------------------------------------------ device regions
    def enforce_dev_resv_regions(self, regions: Sequence[ResvRegion], owner: object) -> int | None:
        """``iopt_table_enforce_dev_resv_regions``: reserve every region of a device
        (owner ``owner``) except DIRECT_RELAXABLE ones; return the SW_MSI region's start
        (``sw_msi_start``), or None. EADDRINUSE when a region meets an area or an allowed
        range; EINVAL for both SW_MSI and MSI regions, or more than one SW_MSI. Nothing
        changed on failure (the regions this call reserved go; earlier ones of ``owner``
        stay -- the kernel drops every range of the owner, which it has reserved only
        here)."""
        before = len(self.reserved)
        sw_msi: int | None = None
        num_hw_msi = num_sw_msi = 0
        try:
            for r in regions:
                if r.type == RESV_DIRECT_RELAXABLE:
                    continue
                if r.type == RESV_MSI:
                    num_hw_msi += 1
                if r.type == RESV_SW_MSI:
                    sw_msi = r.start
                    num_sw_msi += 1
                self.reserve_iova(r.start, r.last, owner)
            if (num_sw_msi and num_hw_msi) or num_sw_msi > 1:
                raise InvalidArgument("a device has both MSI and SW_MSI regions, or two SW_MSI")
        except ApiError:
            del self.reserved[before:]
            raise
        return sw_msi

    # ------------------------------------------------------------------ unmapping
    def unmap_range(self, start: int, last: int) -> tuple[int, ApiError | None]:
        """``iopt_unmap_iova_range``: remove every area inside ``[start, last]`` in IOVA
        order, unmapping it from every domain. Returns the bytes unmapped and the error
        that stopped it: ENOENT for an area reaching outside the range, EBUSY for a locked
        one -- the areas before it are already gone, as in the kernel. An area accesses
        pin is marked ``prevent_access`` and every access is told to unmap it; after
        :data:`UNMAP_TRIES` answers that leave it pinned the unmap gives up with
        EDEADLOCK (the kernel's WARN), the area still marked."""
        unmapped = 0
        tries = 0
        while True:
            found = self.areas_in(start, last)
            if not found:
                return unmapped, None
            area = found[0]
            if area.num_locks:
                return unmapped, Busy(f"area at {area.iova:#x} is locked")
            if area.iova < start or area.last > last:
                return unmapped, NotFound(
                    f"area {area.iova:#x}..{area.last:#x} is not inside {start:#x}..{last:#x}"
                )
            if area.iova != start:
                tries = 0
            if area.num_accesses:
                start = area.iova
                area.prevent_access = True
                for access in list(self.accesses):
                    access.notify_unmap(area.iova, area.length)
                tries += 1
                if tries > UNMAP_TRIES:
                    return unmapped, Deadlock(
                        f"the accesses keep area {area.iova:#x}..{area.last:#x} pinned"
                    )
                continue
            self._remove(area)
            self._unfill_domains(area)
            area.pages.put()
            unmapped += area.length

    def unmap_iova(self, iova: int, length: int) -> tuple[int, ApiError | None]:
        """``iopt_unmap_iova``: EINVAL for length 0, EOVERFLOW past the end (raised,
        nothing changed); otherwise as :meth:`unmap_range`."""
        if not length:
            raise InvalidArgument("length must not be 0")
        last = iova + length - 1
        if last > ULONG_MAX:
            raise Overflow(f"iova {iova:#x} + length {length:#x} overflows")
        return self.unmap_range(iova, last)

    def unmap_all(self) -> tuple[int, ApiError | None]:
        return self.unmap_range(0, ULONG_MAX)

    def cut_iova(self, iovas: Sequence[int]) -> None:
        """``iopt_cut_iova`` (the VFIO type1 compatibility's unmap inside an area): split
        the area holding each of ``iovas`` so that one part ends there
        (``iopt_area_split``: both parts share the pages). EINVAL when the split point is
        not aligned to the IOAS, an access uses the area, or domains hold it while large
        pages are enabled; the cuts before it stay, as in the kernel (they change no
        mapping)."""
        for iova in iovas:
            for area in self.areas_in(iova, iova):
                self._split(area, iova)

    def _split(self, area: Area, iova: int) -> None:
        if iova in (area.iova, area.last):
            return
        new_start = iova + 1
        mask = self.iova_alignment - 1
        if new_start & mask or area.start_byte_at(new_start) & mask:
            raise InvalidArgument(f"cannot split at {new_start:#x}: not aligned to {mask + 1:#x}")
        if area.num_accesses:
            raise InvalidArgument(f"cannot split area {area.iova:#x}: an access uses it")
        if self.domains and not self.disable_large_pages:
            raise InvalidArgument(
                f"cannot split area {area.iova:#x}: domains may map it with large pages"
            )
        self._remove(area)
        self._insert(Area(area.iova, iova, area.pages, area.start_byte, area.prot))
        rhs = Area(new_start, area.last, area.pages, area.start_byte_at(new_start), area.prot)
        self._insert(rhs)
        area.pages.get()

    # ------------------------------------------------------------------ ranges
    def set_allowed(self, ranges: Sequence[IovaRange]) -> None:
        """``iopt_set_allow_iova``: replace the allowed list; EADDRINUSE, nothing
        changed, when one intersects a reserved range."""
        for r in ranges:
            if self._reserved_hits(r.start, r.last):
                raise AddressInUse(f"allowed range {r.start:#x}..{r.last:#x} is reserved")
        self.allowed = sorted(ranges)

    def reserve_iova(self, start: int, last: int, owner: object) -> None:
        """``iopt_reserve_iova`` (device reserved regions, the MSI window, a domain's
        aperture, the selftest's ADD_RESERVED): EADDRINUSE when an area or an allowed
        range intersects it."""
        if self.areas_in(start, last) or any(
            r.start <= last and start <= r.last for r in self.allowed
        ):
            raise AddressInUse(f"range {start:#x}..{last:#x} is mapped or allowed")
        self.reserved.append((IovaRange(start, last), owner))

    def remove_reserved(self, owner: object) -> None:
        """``iopt_remove_reserved_iova``: drop every range ``owner`` reserved."""
        self.reserved = [(r, o) for r, o in self.reserved if o is not owner]

    # ------------------------------------------------------------------ alignment
    def _check_alignment(self, align: int) -> None:
        """``iopt_check_iova_alignment``: EADDRINUSE unless every area's IOVA, length and
        page offset (and every access's alignment) fit ``align``."""
        mask = align - 1
        for a in self._areas:
            if a.iova & mask or a.length & mask or a.page_offset & mask:
                raise AddressInUse(f"area {a.iova:#x}..{a.last:#x} is not aligned to {align:#x}")
        if any(x.iova_alignment > align for x in self.accesses):
            raise AddressInUse(f"an access needs more than {align:#x} alignment")

    def _calculate_alignment(self) -> None:
        """``iopt_calculate_iova_alignment``: the largest of PAGE_SIZE when large pages
        are disabled, each domain's smallest page and each access's alignment."""
        new = PAGE_SIZE if self.disable_large_pages else 1
        for d in self.domains:
            new = max(new, 1 << _ffs(d.pgsize_bitmap))
        for x in self.accesses:
            new = max(new, x.iova_alignment)
        if new > self.iova_alignment:
            self._check_alignment(new)
        self.iova_alignment = new

    def add_access(self, access: AccessUser) -> None:
        """``iopt_add_access``: EADDRINUSE when an area does not fit the access's
        alignment; nothing changed then."""
        self.accesses.append(access)
        try:
            self._calculate_alignment()
        except ApiError:
            self.accesses.pop()
            raise

    def remove_access(self, access: AccessUser) -> None:
        """``iopt_remove_access``."""
        self.accesses = [x for x in self.accesses if x is not access]
        self._calculate_alignment()

    def set_large_pages(self, enable: bool) -> None:
        """``iopt_enable_large_pages`` / ``iopt_disable_large_pages``: disabling needs
        page-aligned areas (EADDRINUSE) and, with domains, no areas (EINVAL)."""
        if enable:
            self.disable_large_pages = False
            self._calculate_alignment()
            return
        if self.disable_large_pages:
            return
        if self.domains and self._areas:
            raise InvalidArgument("cannot disable large pages with domains holding areas")
        self.disable_large_pages = True
        try:
            self._calculate_alignment()
        except ApiError:
            self.disable_large_pages = False
            raise


def _unmap_domain(domain: Domain, iova: int, length: int) -> None:
    """``iommu_unmap_nofail``: clear ``[iova, iova + length)``, sync the IOTLB, then free
    the unlinked table pages (as :meth:`IommuCore.unmap` does)."""
    gather = IotlbGather()
    domain.unmap(Iova(iova), length, gather)
    domain.iotlb_sync(gather)
    domain.release_table_pages(gather.freelist)
