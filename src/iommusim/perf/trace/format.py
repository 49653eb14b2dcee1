"""The DMA trace row: one request per row, as a numpy structured array.

========== ======= ====================================================================
field      dtype   meaning
========== ======= ====================================================================
time_ns    uint64  arrival time in virtual nanoseconds (non-decreasing in a trace)
device_id  uint32  requester / device id (24 bits on the bus)
pasid      int32   PASID / process_id, or -1 for a request without one (20 bits)
iova       uint64  the untranslated address
size       uint32  bytes moved; a request never crosses a 4 KiB page (PCIe: a request
                   must not cross a 4 KiB boundary)
flags      uint8   exactly one of FLAG_READ, FLAG_WRITE, FLAG_EXEC, plus FLAG_PRIV for a
                   privileged (supervisor) request
========== ======= ====================================================================

A row is 29 bytes (the dtype is packed), so a million rows take 29 MB in memory.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from iommusim.errors import FormatError

__all__ = [
    "FLAG_EXEC",
    "FLAG_PRIV",
    "FLAG_READ",
    "FLAG_WRITE",
    "TRACE_DTYPE",
    "Trace",
    "check_rows",
    "empty",
]

FLAG_READ: Final = 1
FLAG_WRITE: Final = 2
FLAG_EXEC: Final = 4
FLAG_PRIV: Final = 8
_ACCESS: Final = FLAG_READ | FLAG_WRITE | FLAG_EXEC

TRACE_DTYPE: Final = np.dtype(
    [
        ("time_ns", "<u8"),
        ("device_id", "<u4"),
        ("pasid", "<i4"),
        ("iova", "<u8"),
        ("size", "<u4"),
        ("flags", "u1"),
    ]
)

#: A chunk of trace rows.
Trace = npt.NDArray[np.void]

_DID_LIMIT: Final = 1 << 24
_PASID_LIMIT: Final = 1 << 20


def empty(n: int) -> Trace:
    """``n`` zeroed rows."""
    return np.zeros(n, dtype=TRACE_DTYPE)


def check_rows(rows: Trace, first_row: int = 0) -> None:
    """Raise :class:`FormatError` naming the first bad row (numbered from ``first_row``) unless
    every row is a request a device could send: a 24-bit device id, a 20-bit PASID or -1, one
    access type, no undefined flag, and a size of 1..4096 bytes inside one 4 KiB page."""
    if rows.dtype != TRACE_DTYPE:
        raise FormatError(f"trace rows must have dtype {TRACE_DTYPE}, not {rows.dtype}")
    flags = rows["flags"]
    access = flags & _ACCESS
    size = rows["size"].astype(np.uint64)
    problems = (
        (rows["device_id"] >= _DID_LIMIT, "device_id must be below 2**24"),
        ((rows["pasid"] < -1) | (rows["pasid"] >= _PASID_LIMIT), "pasid must be -1 or 20-bit"),
        ((access & (access - 1)) != 0, "flags must name one of read, write, exec"),
        (access == 0, "flags must name one of read, write, exec"),
        ((flags & ~np.uint8(_ACCESS | FLAG_PRIV)) != 0, "flags has undefined bits"),
        (
            (size == 0) | ((rows["iova"] & np.uint64(0xFFF)) + size > 4096),
            "size must be 1..4096 and stay inside one 4 KiB page",
        ),
    )
    for bad, what in problems:
        if bad.any():
            i = int(np.argmax(bad))
            raise FormatError(f"trace row {first_row + i}: {what}, not {rows[i]}")
