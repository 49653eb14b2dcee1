"""The exception tree of iommusim.

::

    IommusimError                  root of everything the package raises on purpose
    ├── ModelError                 a bug in the model, or the model used in a way it does not allow
    ├── ApiError                   bad input to the software API; carries the kernel's errno
    │   ├── InvalidArgument        EINVAL (also a ValueError)
    │   ├── NotFound               ENOENT (also a LookupError)
    │   ├── Busy                   EBUSY
    │   ├── Exists                 EEXIST
    │   ├── OutOfMemory            ENOMEM (also a MemoryError)
    │   ├── NotSupported           EOPNOTSUPP
    │   ├── NoDevice               ENODEV
    │   ├── NoSpace                ENOSPC
    │   ├── Overflow               EOVERFLOW (also an OverflowError)
    │   ├── BadAddress             EFAULT (an address outside every mapping)
    │   ├── NotPermitted           EPERM
    │   ├── AddressInUse           EADDRINUSE
    │   ├── MessageTooLong         EMSGSIZE (an output array too small; the count is returned)
    │   ├── ArgumentTooBig         E2BIG (a struct longer than the kernel's, non-zero tail)
    │   ├── InappropriateIoctl     ENOTTY (an ioctl number the file does not implement)
    │   ├── BadFileDescriptor      EBADF (a closed file)
    │   ├── IoError                EIO (a driver's "cannot do this command")
    │   ├── IllegalSeek            ESPIPE (a read/write at a file offset on a stream file)
    │   ├── NoSuchAddress          ENXIO (an mmap offset or length no region has)
    │   ├── InvalidExchange        EBADE (the selftest: pages differ from what was expected)
    │   ├── OutOfRange             ERANGE (a size that does not fit)
    │   ├── Deadlock               EDEADLK (iommufd: an access that never unpins on unmap)
    │   ├── TooManyOpenFiles       EMFILE (a process's file-descriptor table is full)
    │   └── BadFdState             EBADFD (an fd that is not the kind of file expected)
    ├── FormatError                malformed input file (vector, scenario); names the field
    └── BusError                   a memory access answered with an error (access fault or
                                   poisoned data); the hardware models turn it into the spec's
                                   fault record, it never escapes a hardware call
"""

from __future__ import annotations

import errno as _errno
from typing import ClassVar

__all__ = [
    "AddressInUse",
    "ApiError",
    "ArgumentTooBig",
    "BadAddress",
    "BadFdState",
    "BadFileDescriptor",
    "BusError",
    "Busy",
    "Deadlock",
    "Exists",
    "FormatError",
    "IllegalSeek",
    "InappropriateIoctl",
    "InvalidArgument",
    "InvalidExchange",
    "IoError",
    "IommusimError",
    "MessageTooLong",
    "ModelError",
    "NoDevice",
    "NoSpace",
    "NoSuchAddress",
    "NotFound",
    "NotPermitted",
    "NotSupported",
    "OutOfMemory",
    "OutOfRange",
    "Overflow",
    "TooManyOpenFiles",
]


class IommusimError(Exception):
    """Root of every exception iommusim raises on purpose."""


class ModelError(IommusimError):
    """A bug in the model or a use of it that it does not allow."""


class FormatError(IommusimError, ValueError):
    """Malformed input (a vector, a scenario): the message names the offending field."""


class ApiError(IommusimError):
    """Bad input to the software API; ``errno`` is the value the kernel would return."""

    errno: ClassVar[int] = _errno.EINVAL


class InvalidArgument(ApiError, ValueError):
    errno = _errno.EINVAL


class NotFound(ApiError, LookupError):
    errno = _errno.ENOENT


class Busy(ApiError):
    errno = _errno.EBUSY


class Exists(ApiError):
    # Not a FileExistsError: OSError's own errno/strerror attributes and two-argument
    # constructor would clash with ApiError.errno.
    errno = _errno.EEXIST


class OutOfMemory(ApiError, MemoryError):
    errno = _errno.ENOMEM


class NotSupported(ApiError):
    errno = _errno.EOPNOTSUPP


class NoDevice(ApiError):
    errno = _errno.ENODEV


class NoSpace(ApiError):
    errno = _errno.ENOSPC


class Overflow(ApiError, OverflowError):
    errno = _errno.EOVERFLOW


class BadAddress(ApiError):
    errno = _errno.EFAULT


class NotPermitted(ApiError):
    # Not a PermissionError: OSError's errno attribute would clash with ApiError.errno.
    errno = _errno.EPERM


class AddressInUse(ApiError):
    errno = _errno.EADDRINUSE


class MessageTooLong(ApiError):
    errno = _errno.EMSGSIZE


class ArgumentTooBig(ApiError):
    errno = _errno.E2BIG


class InappropriateIoctl(ApiError):
    errno = _errno.ENOTTY


class BadFileDescriptor(ApiError):
    errno = _errno.EBADF


class IoError(ApiError):
    # Not an OSError: its errno attribute would clash with ApiError.errno.
    errno = _errno.EIO


class IllegalSeek(ApiError):
    errno = _errno.ESPIPE


class NoSuchAddress(ApiError):
    errno = _errno.ENXIO


class InvalidExchange(ApiError):
    errno = _errno.EBADE


class OutOfRange(ApiError):
    errno = _errno.ERANGE


class Deadlock(ApiError):
    # EDEADLOCK is EDEADLK on Linux.
    errno = _errno.EDEADLK


class TooManyOpenFiles(ApiError):
    errno = _errno.EMFILE


class BadFdState(ApiError):
    errno = _errno.EBADFD


class BusError(IommusimError):
    """A memory access completed with an error.

    ``kind`` is ``"access"`` (PMA/PMP-style access fault) or ``"corruption"`` (the read
    returned poisoned data); ``pa`` is the first byte of the failing access.
    """

    def __init__(self, kind: str, pa: int) -> None:
        super().__init__(f"{kind} fault at physical address {pa:#x}")
        self.kind = kind
        self.pa = pa
