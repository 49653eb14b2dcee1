"""Dirty tracking over an io_pagetable (``drivers/iommu/iommufd/io_pagetable.c``
``iopt_set_dirty_tracking`` / ``iopt_read_and_clear_dirty_data``) and the user bitmap it
fills (``drivers/iommu/iommufd/iova_bitmap.c``).

The bitmap has one bit per ``page_size`` bytes of IOVA from ``iova``: bit ``n`` is bit
``n % 64`` of the little-endian u64 word ``n // 64`` at the user pointer -- byte ``n // 8``,
bit ``n % 8``. Bits are set (OR-ed in), never cleared: user space hands in a zeroed bitmap.
After the range checks the read cannot fail, as in the kernel (``iova_bitmap_for_each``'s
result is dropped): a hole between areas ends the walk, and a bitmap page that cannot be
written loses its bits, while the domain's dirty bits are cleared all the same.
"""

from __future__ import annotations

from typing import Final

from iommusim.errors import ApiError, InvalidArgument, NotSupported, Overflow
from iommusim.sw.core.domain import Domain
from iommusim.sw.iommufd.iopt import ULONG_MAX, IoPagetable
from iommusim.sw.iommufd.user import UserMemory
from iommusim.sw.pages import PAGE_SIZE

__all__ = [
    "IOMMU_DIRTY_NO_CLEAR",
    "IovaBitmap",
    "check_iova_range",
    "read_and_clear_dirty_data",
    "set_dirty_tracking",
]

#: ``IOMMU_DIRTY_NO_CLEAR`` (= ``IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR``): read, keep dirty.
IOMMU_DIRTY_NO_CLEAR: Final = 1 << 0
U64_MAX: Final = (1 << 64) - 1


class IovaBitmap:
    """``struct iova_bitmap``: the user bitmap at ``data`` for ``[iova, iova + length)``
    in units of ``1 << pgshift`` bytes (``__ffs(page_size)``)."""

    __slots__ = ("data", "iova", "last", "pgshift", "user")

    def __init__(self, user: UserMemory, iova: int, length: int, page_size: int, data: int):
        self.user = user
        self.iova = iova
        self.last = iova + length - 1
        self.pgshift = (page_size & -page_size).bit_length() - 1
        self.data = data

    def set(self, iova: int, length: int) -> None:
        """``iova_bitmap_set``: mark ``[iova, iova + length)`` dirty (clipped to the
        bitmap's range); a bitmap page user space cannot write loses its bits."""
        first = max(iova, self.iova)
        last = min(iova + length - 1, self.last)
        if first > last:
            return
        bit0 = (first - self.iova) >> self.pgshift
        bit1 = (last - self.iova) >> self.pgshift
        # One user page of the bitmap at a time (pin_user_pages_fast per page).
        byte = bit0 // 8
        while byte <= bit1 // 8:
            va = (self.data + byte) & U64_MAX
            end = min(bit1 // 8, byte + PAGE_SIZE - va % PAGE_SIZE - 1)
            try:
                cur = bytearray(self.user.read(va, end - byte + 1))
                for b in range(max(bit0, byte * 8), min(bit1, end * 8 + 7) + 1):
                    cur[b // 8 - byte] |= 1 << (b % 8)
                self.user.write(va, bytes(cur))
            except ApiError:
                pass  # iova_bitmap_advance_to failed to pin: the bits are lost
            byte = end + 1


def check_iova_range(iopt: IoPagetable, iova: int, length: int, page_size: int) -> None:
    """``iommufd_check_iova_range``: EINVAL for length 0, EOVERFLOW when the range passes
    ULONG_MAX, EINVAL unless both ends are aligned to the IOAS's alignment and to
    ``page_size`` (which must not be 0)."""
    if not length:
        raise InvalidArgument("the bitmap's length must not be 0")
    last = iova + length - 1
    if last > U64_MAX or iova > ULONG_MAX or last > ULONG_MAX:
        raise Overflow(f"iova {iova:#x} + length {length:#x} overflows")
    align = iopt.iova_alignment
    if iova & (align - 1) or (last + 1) & (align - 1):
        raise InvalidArgument(f"range {iova:#x}..{last:#x} is not aligned to {align:#x}")
    if not page_size:
        raise InvalidArgument("page_size must not be 0")
    if iova & (page_size - 1) or (last + 1) & (page_size - 1):
        raise InvalidArgument(f"range {iova:#x}..{last:#x} is not aligned to {page_size:#x}")


def read_and_clear_dirty_data(
    iopt: IoPagetable,
    domain: Domain,
    flags: int,
    iova: int,
    length: int,
    page_size: int,
    data: int,
    user: UserMemory,
) -> None:
    """``iopt_read_and_clear_dirty_data``: set the bitmap at user address ``data`` for
    every dirty IOVA of ``domain`` in ``[iova, iova + length)``, walking the areas that
    cover it contiguously from ``iova``, and clear the domain's dirty bits unless
    ``flags`` has IOMMU_DIRTY_NO_CLEAR. The errors of :func:`check_iova_range`, then
    EOPNOTSUPP for a domain without dirty tracking; nothing changed on an error."""
    check_iova_range(iopt, iova, length, page_size)
    if not domain.dirty_ops:
        raise NotSupported(f"{domain!r} has no dirty tracking")
    bitmap = IovaBitmap(user, iova, length, page_size, data)
    no_clear = bool(flags & IOMMU_DIRTY_NO_CLEAR)
    spans, _ = iopt.contig_areas(iova, iova + length - 1)
    try:
        for _area, first, last in spans:
            domain.read_and_clear_dirty(first, last - first + 1, no_clear, bitmap.set)
    except ApiError:
        return  # iova_bitmap_for_each's error is dropped by iommu_read_and_clear_dirty


def set_dirty_tracking(iopt: IoPagetable, domain: Domain, enable: bool) -> None:
    """``iopt_set_dirty_tracking``: EOPNOTSUPP for a domain without dirty tracking;
    enabling first clears the dirty bits over every area (a clean snapshot), then the
    domain switches. A driver error is raised with tracking left as it was."""
    if not domain.dirty_ops:
        raise NotSupported(f"{domain!r} has no dirty tracking")
    if enable:
        for area in iopt.areas:
            domain.read_and_clear_dirty(area.iova, area.length, False, _ignore)
    domain.set_dirty_tracking(enable)


def _ignore(iova: int, length: int) -> None:
    """A dirty record nobody reads (``iommu_dirty_bitmap_init`` with no bitmap)."""
