"""Trace files that stream in chunks, so a trace larger than memory replays.

CSV (for people and other tools): a header line ``time_ns,device_id,pasid,iova,size,flags``,
then one request per line; integers in decimal or with a ``0x`` prefix; ``flags`` is one of
``r``, ``w``, ``x`` followed by ``p`` for a privileged request (``rp``). ``pasid`` is -1 for
none.

``.npz`` (compact binary): a zip of ``.npy`` members ``chunk_000000``, ``chunk_000001``, ...,
each a 1-D array of :data:`~iommusim.perf.trace.format.TRACE_DTYPE`, written and read one
member at a time.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import numpy as np

from iommusim.errors import FormatError
from iommusim.perf.trace.format import (
    FLAG_EXEC,
    FLAG_PRIV,
    FLAG_READ,
    FLAG_WRITE,
    TRACE_DTYPE,
    Trace,
    check_rows,
    empty,
)

__all__ = ["CHUNK_ROWS", "read_csv", "read_npz", "write_csv", "write_npz"]

#: Rows per chunk the readers yield by default (about 7.6 MB of rows).
CHUNK_ROWS: Final = 1 << 18

HEADER: Final = ("time_ns", "device_id", "pasid", "iova", "size", "flags")
_ACCESS_LETTER: Final = {FLAG_READ: "r", FLAG_WRITE: "w", FLAG_EXEC: "x"}
_FLAGS_OF: Final = {
    letter + priv: flag | (FLAG_PRIV if priv else 0)
    for flag, letter in _ACCESS_LETTER.items()
    for priv in ("", "p")
}
_TEXT_OF: Final = {v: k for k, v in _FLAGS_OF.items()}


def _int(text: str, line: int, name: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise FormatError(f"line {line}: {name} must be an integer, not {text!r}") from None


def read_csv(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[Trace]:
    """Yield the rows of the CSV trace at ``path`` in chunks of up to ``chunk_rows``."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise FormatError(f"{path}: the header must be {','.join(HEADER)}, not {header}")
        chunk = empty(chunk_rows)
        n = 0
        first = 0
        for line, row in enumerate(reader, start=2):
            if len(row) != len(HEADER):
                raise FormatError(f"line {line}: {len(HEADER)} fields expected, not {len(row)}")
            flags = _FLAGS_OF.get(row[5].strip())
            if flags is None:
                raise FormatError(
                    f"line {line}: flags must be one of r w x rp wp xp, not {row[5]!r}"
                )
            chunk[n] = (
                _int(row[0], line, "time_ns"),
                _int(row[1], line, "device_id"),
                _int(row[2], line, "pasid"),
                _int(row[3], line, "iova"),
                _int(row[4], line, "size"),
                flags,
            )
            n += 1
            if n == chunk_rows:
                check_rows(chunk, first)
                yield chunk
                first += n
                chunk = empty(chunk_rows)
                n = 0
        if n:
            check_rows(chunk[:n], first)
            yield chunk[:n]


def write_csv(path: str | Path, chunks: Iterable[Trace]) -> int:
    """Write ``chunks`` as a CSV trace; returns the number of rows."""
    total = 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        for chunk in chunks:
            check_rows(chunk, total)
            for t, did, pasid, iova, size, flags in chunk.tolist():
                w.writerow((t, did, pasid, f"{iova:#x}", size, _TEXT_OF[flags]))
            total += len(chunk)
    return total


def write_npz(path: str | Path, chunks: Iterable[Trace], compress: bool = False) -> int:
    """Write ``chunks`` as an ``.npz`` trace, one member per chunk; returns the number of rows."""
    total = 0
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=mode, allowZip64=True) as zf:
        for k, chunk in enumerate(chunks):
            check_rows(chunk, total)
            with zf.open(f"chunk_{k:06d}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(chunk), allow_pickle=False)
            total += len(chunk)
    return total


def read_npz(path: str | Path) -> Iterator[Trace]:
    """Yield the chunks of the ``.npz`` trace at ``path``, one member at a time."""
    first = 0
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("chunk_"))
        if not names:
            raise FormatError(f"{path}: no chunk_NNNNNN members: not a trace")
        for name in names:
            with zf.open(name) as member:
                rows = np.lib.format.read_array(member, allow_pickle=False)
            if rows.dtype != TRACE_DTYPE or rows.ndim != 1:
                raise FormatError(
                    f"{path}:{name}: rows must be 1-D {TRACE_DTYPE}, not {rows.dtype}"
                )
            check_rows(rows, first)
            first += len(rows)
            yield rows
