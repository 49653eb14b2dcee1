"""Driver-specific user data handed through the IOMMU core (``include/linux/iommu.h``).

iommufd passes a driver the user's pointer to a driver-defined struct (the nested-domain data
of HWPT_ALLOC, the vIOMMU data of VIOMMU_ALLOC) as a :class:`UserData`, and an array of
driver-defined entries (HWPT_INVALIDATE) as a :class:`UserDataArray`. The driver copies what it
understands with the kernel's helpers, which check the type and the lengths the way
``__iommu_copy_struct_from_user`` does, so a driver never sees a struct it did not ask for:

- a ``type`` other than the driver's -> EINVAL;
- a user length below the struct's first version (``min_len``) or *above* the driver's struct
  -> EINVAL (7.3 refuses a longer struct outright here, unlike ``copy_struct_from_user``);
- an address the user cannot read -> EFAULT;
- a shorter struct is zero-extended.

The array helper applies the same rules to entry ``index`` (``entry_len`` is its length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from iommusim.errors import ArgumentTooBig, InvalidArgument

__all__ = ["UserAccess", "UserData", "UserDataArray", "copy_struct_from_user"]

_U64 = (1 << 64) - 1


class UserAccess(Protocol):
    """Reads and writes of user memory; :class:`~iommusim.errors.BadAddress` (EFAULT) for
    any byte that is not accessible, having changed nothing."""

    def read(self, va: int, n: int) -> bytes: ...

    def write(self, va: int, data: bytes) -> None: ...


def copy_struct_from_user(mem: UserAccess, ksize: int, uptr: int, usize: int) -> bytes:
    """``copy_struct_from_user``: ``ksize`` bytes of the kernel's struct from ``usize``
    user bytes at ``uptr``: a longer user struct needs a zero tail (E2BIG, checked first),
    a shorter one is zero-extended; an unreadable byte is EFAULT."""
    if usize > ksize and any(mem.read((uptr + ksize) & _U64, usize - ksize)):
        raise ArgumentTooBig(f"user struct bytes {ksize}..{usize} must be zero")
    n = min(ksize, usize)
    data = mem.read(uptr, n) if n else b""
    return data.ljust(ksize, b"\0")


@dataclass(frozen=True, slots=True)
class UserData:
    """``struct iommu_user_data``: ``len`` bytes at ``uptr`` holding a struct of ``type``."""

    type: int
    uptr: int
    len: int
    mem: UserAccess

    def copy_from(self, data_type: int, size: int, min_len: int) -> bytes:
        """``__iommu_copy_struct_from_user``: the driver's ``size``-byte struct of
        ``data_type`` whose first version was ``min_len`` bytes long."""
        if self.type != data_type:
            raise InvalidArgument(f"user data type {self.type:#x} is not {data_type:#x}")
        if self.len < min_len or size < self.len:
            raise InvalidArgument(
                f"user data length {self.len} is outside {min_len}..{size} for type {data_type:#x}"
            )
        return copy_struct_from_user(self.mem, size, self.uptr, self.len)

    def copy_to(self, data_type: int, data: bytes, min_len: int) -> None:
        """``__iommu_copy_struct_to_user``: report the driver's struct ``data`` back into
        the user's buffer (``copy_struct_to_user``: as much as both hold; a longer user
        buffer gets zeros after it)."""
        if self.type != data_type:
            raise InvalidArgument(f"user data type {self.type:#x} is not {data_type:#x}")
        if self.len < min_len or len(data) < self.len:
            raise InvalidArgument(
                f"user data length {self.len} is outside {min_len}..{len(data)} for type "
                f"{data_type:#x}"
            )
        self.mem.write(self.uptr, data[: self.len])


@dataclass(frozen=True, slots=True)
class UserDataArray:
    """``struct iommu_user_data_array``: ``entry_num`` entries of ``entry_len`` bytes."""

    type: int
    uptr: int
    entry_len: int
    entry_num: int
    mem: UserAccess

    def copy_entry(self, data_type: int, index: int, size: int, min_len: int) -> bytes:
        """``__iommu_copy_struct_from_user_array``: entry ``index`` as the driver's
        ``size``-byte struct of ``data_type`` (first version ``min_len`` bytes)."""
        if not 0 <= index < self.entry_num:
            raise InvalidArgument(f"entry {index} is beyond the array's {self.entry_num}")
        at = (self.uptr + self.entry_len * index) & _U64
        return UserData(self.type, at, self.entry_len, self.mem).copy_from(data_type, size, min_len)
