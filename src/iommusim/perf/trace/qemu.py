"""Import QEMU ``-trace`` output of its riscv-iommu and smmuv3 translation events as trace rows.

QEMU's default ``log`` trace backend writes one line per event (to stderr, or to the ``-D``
file), ``NAME ARGS`` where ARGS is the event's format string from its ``trace-events`` file.
With ``-msg timestamp=on`` a time comes first, in one of two shapes:

* ``TID@SECONDS.MICROSECONDS:NAME ARGS``, written by ``scripts/tracetool/backend/log.py``;
* ``YYYY-MM-DDTHH:MM:SS.ffffffZ NAME ARGS``, since QEMU moved the stamp into ``qemu_log()``
  (``util/log.c``, July 2025) in ``error_report()``'s ISO 8601 form.

Two events carry the translation of a device access, and each becomes one row:

``riscv_iommu_dma`` (``hw/riscv/trace-events``, ``riscv-iommu.c``)::

    riscv_iommu_dma(const char *id, unsigned b, unsigned d, unsigned f, unsigned pasid,
                    const char *dir, uint64_t iova, uint64_t phys)
        "%s: translate %04x:%02x.%u #%u %s 0x%"PRIx64" -> 0x%"PRIx64

  ``device_id`` is the requester id ``b << 8 | d << 3 | f``. ``#N`` is the IOMMU index, the
  transaction's process_id, and 0 (``RISCV_IOMMU_NOPROCID``) for a transaction without one,
  so ``#0`` imports as pasid -1. ``dir`` is ``IOMMU_FLAG_STR[flag & IOMMU_RW]``, the caller's
  access: ``RO`` a read, ``WR`` a write, ``RW`` a write (the access needing both permissions),
  ``NA`` no access at all (a notifier replay) and so no row. The event fires for faulting
  requests too: the row is the request, whatever its answer.

``smmuv3_translate_success`` (``hw/arm/trace-events``, ``smmuv3.c``)::

    smmuv3_translate_success(const char *n, uint16_t sid, uint64_t iova,
                             uint64_t translated, int perm[, int stage])
        "%s sid=0x%x iova=0x%"PRIx64" translated=0x%"PRIx64" perm=0x%x[ stage=%d]"

  (older QEMU prints ``sid=%d`` and no ``stage``; every shape is read).
  ``device_id`` is the StreamID, pasid is -1 (the event has no SubstreamID). ``perm`` is
  ``IOMMUAccessFlags``: 0x1 a read, 0x2 a write, 0x3 a write, 0x0 no row. Since QEMU reports
  the IOTLB entry's permission here, a read through a read-write mapping shows 0x3 and imports
  as a write. Aborts and bypasses have their own events, whose ``is_write`` is not the
  direction (QEMU passes the access flags into a ``bool``), and are not imported.

Neither event has a length or a privilege: a row's ``size`` runs from the IOVA to the end of
its 4 KiB page (a request never crosses one) and its flags have no ``FLAG_PRIV``.

``time_ns`` counts from the first imported event's stamp (so the first row is at 0), kept
non-decreasing: QEMU takes the stamp before the log lock, so two threads can log slightly out
of order, and such a row takes its predecessor's time (counted in ``QemuLogStats.reordered``).
Without stamps, ``time_ns`` is the event's line number. Every other line -- other events,
guest output, QEMU's own messages -- is skipped and counted; an imported event whose
arguments do not read as its format string raises :class:`FormatError` naming the line, as do
a stamped and an unstamped event in one log.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from iommusim.errors import FormatError
from iommusim.perf.trace.format import FLAG_READ, FLAG_WRITE, Trace, check_rows, empty
from iommusim.perf.trace.io import CHUNK_ROWS

__all__ = ["QEMU_EVENTS", "QemuLogStats", "iter_qemu_log", "read_qemu_log"]

#: The events imported, by QEMU's name.
QEMU_EVENTS: Final = ("riscv_iommu_dma", "smmuv3_translate_success")

# scripts/tracetool/backend/log.py: "%d@%zu.%06zu:NAME " fmt (tid, tv_sec, tv_usec), or
# util/log.c since July 2025: g_date_time_format_iso8601() then a space (a tracetool change just
# before it wrote "...Z (TID) NAME "). The event name ends at the first space.
_LINE: Final = re.compile(
    r"(?:(?P<tid>\d+)@(?P<sec>\d+)\.(?P<usec>\d{1,6}):"
    r"|(?P<iso>(?P<Y>\d{4})-(?P<M>\d\d)-(?P<D>\d\d)T(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
    r"(?:\.(?P<frac>\d{1,9}))?Z) (?:\(\d+\) )?)?"
    r"(?P<name>riscv_iommu_dma|smmuv3_translate_success) (?P<args>.*)"
)
_RISCV_DMA: Final = re.compile(
    r"(?:.*?: )?translate (?P<b>[0-9a-f]{4,}):(?P<d>[0-9a-f]{2,})\.(?P<f>\d+) "
    r"#(?P<pasid>\d+) (?P<dir>NA|RO|WR|RW) 0x(?P<iova>[0-9a-f]+) -> 0x[0-9a-f]+"
)
_SMMUV3_SUCCESS: Final = re.compile(
    r".*? sid=(?P<sid>0x[0-9a-f]+|\d+) iova=0x(?P<iova>[0-9a-f]+) translated=0x[0-9a-f]+ "
    r"perm=0x(?P<perm>[0-9a-f]+)(?: stage=\d+)?"
)
# include/exec/memory.h IOMMUAccessFlags: IOMMU_NONE 0, IOMMU_RO 1, IOMMU_WO 2, IOMMU_RW 3.
_FLAGS_OF_DIR: Final = {"NA": 0, "RO": FLAG_READ, "WR": FLAG_WRITE, "RW": FLAG_WRITE}
_FLAGS_OF_PERM: Final = (0, FLAG_READ, FLAG_WRITE, FLAG_WRITE)
_PASID_LIMIT: Final = 1 << 20
_PAGE_MASK: Final = 0xFFF


@dataclass(slots=True)
class QemuLogStats:
    """What an import saw, counted as the chunks are read: lines read, rows imported (by event
    in ``riscv_iommu_dma`` and ``smmuv3_translate_success``), imported events that carry no
    access (``no_access``: riscv ``NA``, smmuv3 ``perm=0x0``), other lines skipped
    (``skipped``), and rows whose stamp went backwards and took their predecessor's
    (``reordered``)."""

    lines: int = 0
    rows: int = 0
    riscv_iommu_dma: int = 0
    smmuv3_translate_success: int = 0
    no_access: int = 0
    skipped: int = 0
    reordered: int = 0


def _stamp_ns(m: re.Match[str]) -> int | None:
    if m["sec"] is not None:
        return int(m["sec"]) * 1_000_000_000 + int(m["usec"].ljust(6, "0")) * 1000
    if m["iso"] is not None:
        seconds = calendar.timegm(
            (int(m["Y"]), int(m["M"]), int(m["D"]), int(m["h"]), int(m["m"]), int(m["s"]))
        )
        frac = m["frac"] or ""
        return seconds * 1_000_000_000 + int(frac.ljust(9, "0"))
    return None


def _riscv_dma(args: str, line: int) -> tuple[int, int, int, int]:
    m = _RISCV_DMA.fullmatch(args)
    if m is None:
        raise FormatError(
            f"line {line}: riscv_iommu_dma arguments must read "
            f"'ID: translate BBBB:DD.F #PASID RO|WR|RW|NA 0xIOVA -> 0xPHYS', not {args!r}"
        )
    b, d, f = int(m["b"], 16), int(m["d"], 16), int(m["f"])
    # PCI_BUS_NUM, PCI_SLOT and PCI_FUNC of the requester id: 8, 5 and 3 bits.
    if b > 0xFF or d > 0x1F or f > 7:
        raise FormatError(
            f"line {line}: riscv_iommu_dma bus:device.function must be 8:5:3 bits, "
            f"not {m['b']}:{m['d']}.{m['f']}"
        )
    pasid = int(m["pasid"])
    if pasid >= _PASID_LIMIT:
        raise FormatError(f"line {line}: riscv_iommu_dma process_id must be 20-bit, not {pasid}")
    # riscv-iommu.c: RISCV_IOMMU_NOPROCID (0) is the index of a request without a process_id.
    return b << 8 | d << 3 | f, pasid if pasid else -1, int(m["iova"], 16), _FLAGS_OF_DIR[m["dir"]]


def _smmuv3_success(args: str, line: int) -> tuple[int, int, int, int]:
    m = _SMMUV3_SUCCESS.fullmatch(args)
    if m is None:
        raise FormatError(
            f"line {line}: smmuv3_translate_success arguments must read "
            f"'MR sid=SID iova=0xIOVA translated=0xPA perm=0xPERM [stage=N]', not {args!r}"
        )
    sid = int(m["sid"], 0)
    perm = int(m["perm"], 16)
    if sid > 0xFFFF or perm > 3:
        raise FormatError(
            f"line {line}: smmuv3_translate_success sid must be 16-bit and perm 0x0..0x3, "
            f"not sid={m['sid']} perm=0x{m['perm']}"
        )
    return sid, -1, int(m["iova"], 16), _FLAGS_OF_PERM[perm]


def iter_qemu_log(
    lines: Iterable[str], chunk_rows: int = CHUNK_ROWS, stats: QemuLogStats | None = None
) -> Iterator[Trace]:
    """Yield the rows of the QEMU log ``lines`` (numbered from 1) in chunks of up to
    ``chunk_rows``, counting what was read into ``stats`` if given."""
    st = stats if stats is not None else QemuLogStats()
    chunk = empty(chunk_rows)
    n = 0
    first_row = 0
    origin: int | None = None
    stamped: bool | None = None
    last_t = 0
    for line, text in enumerate(lines, start=1):
        st.lines += 1
        m = _LINE.match(text.rstrip("\r\n"))
        if m is None:
            st.skipped += 1
            continue
        name = m["name"]
        if name == "riscv_iommu_dma":
            did, pasid, iova, flags = _riscv_dma(m["args"], line)
        else:
            did, pasid, iova, flags = _smmuv3_success(m["args"], line)
        if not flags:
            st.no_access += 1
            continue
        stamp = _stamp_ns(m)
        if stamped is None:
            stamped = stamp is not None
        elif stamped != (stamp is not None):
            raise FormatError(
                f"line {line}: {name} must be {'stamped' if stamped else 'unstamped'} like the "
                "log's first event (-msg timestamp=on throughout, or off throughout)"
            )
        if stamp is None:
            t = line
        else:
            if origin is None:
                origin = stamp
            t = stamp - origin
            if t < last_t:
                st.reordered += 1
                t = last_t
        last_t = t
        if name == "riscv_iommu_dma":
            st.riscv_iommu_dma += 1
        else:
            st.smmuv3_translate_success += 1
        chunk[n] = (t, did, pasid, iova, 4096 - (iova & _PAGE_MASK), flags)
        n += 1
        st.rows += 1
        if n == chunk_rows:
            check_rows(chunk, first_row)
            yield chunk
            first_row += n
            chunk = empty(chunk_rows)
            n = 0
    if n:
        check_rows(chunk[:n], first_row)
        yield chunk[:n]


def read_qemu_log(
    path: str | Path, chunk_rows: int = CHUNK_ROWS, stats: QemuLogStats | None = None
) -> Iterator[Trace]:
    """Yield the rows of the QEMU ``-trace`` log at ``path`` in chunks of up to
    ``chunk_rows``, counting what was read into ``stats`` if given."""
    # Guest output in the same stream need not be UTF-8; only skipped lines can hold it.
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        yield from iter_qemu_log(f, chunk_rows, stats)
