"""``struct io_pagetable`` (``drivers/iommu/iommufd/io_pagetable.c``): the IOVA space of one
IOAS -- its areas, allowed and reserved ranges, and the IOVA alignment.

Addresses are 64-bit (``unsigned long`` of an LP64 kernel): ``ULONG_MAX`` is ``2**64 - 1``.
Every operation validates before it changes anything, except :meth:`IoPagetable.unmap_range`,
which keeps the kernel's behaviour of unmapping area by area and stopping at the first area
it cannot remove (the areas before it stay unmapped and are counted in ``unmapped``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from iommusim.errors import (
    AddressInUse,
    ApiError,
    Busy,
    Exists,
    InvalidArgument,
    NoSpace,
    NotFound,
    NotPermitted,
    Overflow,
)
from iommusim.sw.iommufd.pages import IoPages
from iommusim.sw.pages import PAGE_SIZE
from iommusim.sw.prot import IOMMU_WRITE

__all__ = ["ULONG_MAX", "Area", "IoPagetable", "IovaRange", "PagesSlice"]

ULONG_MAX: Final = (1 << 64) - 1
#: ``SIZE_MAX`` of the kernel, the ``size_t`` bound on a length.
SIZE_MAX: Final = ULONG_MAX
#: ``HPAGE_SIZE`` with transparent huge pages: the largest auto-IOVA alignment.
HPAGE_SIZE: Final = 2 << 20


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
    allowed or reserved ranges)."""

    __slots__ = (
        "_areas",
        "_starts",
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
        #: Domains filled from this table (HWPTs attach here; none yet).
        self.domains: list[object] = []

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
        user address ``addr``, aligned as the kernel aligns it (never IOVA 0)."""
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
        an allocated IOVA when None; return the IOVA. Takes a reference on each slice's
        pages. All or nothing."""
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
        # No domain to fill yet (iopt_area_fill_domains returns at once for none).
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
        out: list[PagesSlice] = []
        cur = iova
        for area in self.areas_in(iova, last):
            if area.iova > cur:
                break
            end = min(last, area.last)
            out.append(PagesSlice(area.pages, area.start_byte_at(cur), end - cur + 1))
            cur = end + 1
            if end == last:
                return out
        raise NotFound(f"range {iova:#x}..{last:#x} is not fully mapped")

    # ------------------------------------------------------------------ unmapping
    def unmap_range(self, start: int, last: int) -> tuple[int, ApiError | None]:
        """``iopt_unmap_iova_range``: remove every area inside ``[start, last]`` in IOVA
        order. Returns the bytes unmapped and the error that stopped it: ENOENT for an
        area reaching outside the range, EBUSY for a locked one -- the areas before it are
        already gone, as in the kernel."""
        unmapped = 0
        for area in self.areas_in(start, last):
            if area.num_locks or area.num_accesses:
                return unmapped, Busy(f"area at {area.iova:#x} is in use")
            if area.iova < start or area.last > last:
                return unmapped, NotFound(
                    f"area {area.iova:#x}..{area.last:#x} is not inside {start:#x}..{last:#x}"
                )
            self._remove(area)
            area.pages.put()
            unmapped += area.length
        return unmapped, None

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
        """``iopt_reserve_iova`` (device reserved regions, the MSI window, the selftest's
        ADD_RESERVED): EADDRINUSE when an area or an allowed range intersects it."""
        if self.areas_in(start, last) or any(
            r.start <= last and start <= r.last for r in self.allowed
        ):
            raise AddressInUse(f"range {start:#x}..{last:#x} is mapped or allowed")
        self.reserved.append((IovaRange(start, last), owner))

    def remove_reserved(self, owner: object) -> None:
        """``iopt_remove_reserved_iova``: drop every range ``owner`` reserved."""
        self.reserved = [(r, o) for r, o in self.reserved if o is not owner]

    # ------------------------------------------------------------------ alignment
    def _calculate_alignment(self) -> None:
        """``iopt_calculate_iova_alignment`` with no domains or accesses yet."""
        new = PAGE_SIZE if self.disable_large_pages else 1
        if new > self.iova_alignment:
            mask = new - 1
            for a in self._areas:
                if a.iova & mask or a.length & mask or a.page_offset & mask:
                    raise AddressInUse(f"area {a.iova:#x}..{a.last:#x} is not aligned to {new:#x}")
        self.iova_alignment = new

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
