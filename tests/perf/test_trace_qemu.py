"""Importing QEMU ``-trace`` logs: lines shaped by QEMU's own format strings become trace rows.

The event format strings are quoted from QEMU's ``hw/riscv/trace-events`` (``riscv_iommu_dma``)
and ``hw/arm/trace-events`` (``smmuv3_translate_success``, with ``sid=%d`` in older trees and
``stage=%d`` in newer ones); the line prefixes from ``scripts/tracetool/backend/log.py``
(``"%d@%zu.%06zu:NAME "``) and ``util/log.c`` (an ISO 8601 stamp and a space).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import FormatError
from iommusim.perf.trace import (
    FLAG_READ,
    FLAG_WRITE,
    QemuLogStats,
    check_rows,
    empty,
    iter_qemu_log,
    read_npz,
    read_qemu_log,
    write_npz,
)

# The format strings as the trace-events files spell them (C string concatenation and all).
RISCV_IOMMU_DMA = '"%s: translate %04x:%02x.%u #%u %s 0x%"PRIx64" -> 0x%"PRIx64'
SMMUV3_SUCCESS_OLD = '"%s sid=%d iova=0x%"PRIx64" translated=0x%"PRIx64" perm=0x%x"'
SMMUV3_SUCCESS_HEX = '"%s sid=0x%x iova=0x%"PRIx64" translated=0x%"PRIx64" perm=0x%x"'
SMMUV3_SUCCESS_STAGE = '"%s sid=0x%x iova=0x%"PRIx64" translated=0x%"PRIx64" perm=0x%x stage=%d"'
# Other events of the same files that share words with the imported ones.
RISCV_IOMMU_MSI = '"%s: translate %04x:%02x.%u MSI 0x%"PRIx64" -> 0x%"PRIx64'
SMMUV3_ABORT = '"%s sid=0x%x abort on iova:0x%"PRIx64" is_write=%d"'


def c_format(fmt: str, *args: object) -> str:
    """printf as QEMU's trace point does it: the literal joined, PRIx64 is ``x``, and Python's
    ``%`` takes ``%u``, ``%04x`` and ``%d`` alike."""
    literal = fmt.replace('"PRIx64"', "x").replace('"PRIx64', "x").strip('"')
    return literal % args


def log_line(name: str, args: str, tid: int | None = None, sec: int = 0, usec: int = 0) -> str:
    # scripts/tracetool/backend/log.py: "%d@%zu.%06zu:NAME " fmt "\n", or "NAME " fmt "\n".
    prefix = "" if tid is None else f"{tid}@{sec}.{usec:06d}:"
    return f"{prefix}{name} {args}\n"


def rows_of(chunks: list[np.ndarray]) -> list[tuple[int, int, int, int, int, int]]:
    return [tuple(r) for c in chunks for r in c.tolist()]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "qemu.log"
    path.write_text("".join(lines))
    return path


def test_a_stamped_riscv_iommu_log_imports_its_dma_translations(tmp_path: Path) -> None:
    dma = "riscv_iommu_dma"
    lines = [
        "qemu-system-riscv64: warning: disk image format was not specified\n",
        log_line(
            dma,
            c_format(RISCV_IOMMU_DMA, "iommu0", 0, 1, 0, 0, "RO", 0x8000_1000, 0x1000),
            tid=4242,
            sec=1753122905,
            usec=917608,
        ),
        log_line(
            "riscv_iommu_cmd", "iommu0: command 0x3 0x0", tid=4242, sec=1753122905, usec=917610
        ),
        log_line(
            dma,
            c_format(RISCV_IOMMU_DMA, "iommu0", 0x3, 0x1F, 7, 5, "WR", 0x10_0ABC, 0),
            tid=4243,
            sec=1753122905,
            usec=917650,
        ),
        log_line(
            "riscv_iommu_msi",
            c_format(RISCV_IOMMU_MSI, "iommu0", 0, 1, 0, 0x2400_0000, 0x2800_0000),
            tid=4242,
            sec=1753122905,
            usec=917700,
        ),
        log_line(
            dma,
            c_format(RISCV_IOMMU_DMA, "iommu0", 0, 1, 0, 0, "NA", 0x8000_2000, 0),
            tid=4242,
            sec=1753122906,
            usec=1,
        ),
        "[    0.000000] Linux version 6.12 (guest console on the same stream)\n",
        log_line(
            dma,
            c_format(RISCV_IOMMU_DMA, "iommu0", 0, 1, 0, 0, "RW", 0x8000_3FFF, 0),
            tid=4242,
            sec=1753122906,
            usec=2,
        ),
    ]
    stats = QemuLogStats()
    got = rows_of(list(read_qemu_log(write(tmp_path, lines), stats=stats)))
    # riscv-iommu.c: #0 is RISCV_IOMMU_NOPROCID (no process_id); the requester id is
    # bus << 8 | device << 3 | function.
    assert got == [
        (0, 0x0008, -1, 0x8000_1000, 4096, FLAG_READ),
        (42_000, 0x3FF, 5, 0x10_0ABC, 4096 - 0xABC, FLAG_WRITE),
        (1_000_000_000 - 917_608_000 + 2_000, 0x0008, -1, 0x8000_3FFF, 1, FLAG_WRITE),
    ]
    assert stats == QemuLogStats(
        lines=8, rows=3, riscv_iommu_dma=3, no_access=1, skipped=4, reordered=0
    )


def test_the_shape_of_the_line_before_the_args_is_the_log_backends() -> None:
    line = c_format(RISCV_IOMMU_DMA, "iommu0", 0, 0, 1, 0, "RO", 0x1000, 0x1000)
    assert line == "iommu0: translate 0000:00.1 #0 RO 0x1000 -> 0x1000"
    assert log_line("riscv_iommu_dma", line, tid=7, sec=12, usec=34) == (
        "7@12.000034:riscv_iommu_dma iommu0: translate 0000:00.1 #0 RO 0x1000 -> 0x1000\n"
    )


def test_an_unstamped_smmuv3_log_numbers_its_rows_by_line(tmp_path: Path) -> None:
    name = "smmuv3_translate_success"
    mr = "smmuv3-iommu-memory-region-0-8"
    lines = [
        log_line(
            "smmuv3_config_cache_hit", "Config cache HIT for sid 8 (hits=1, misses=1, hit rate=50)"
        ),
        log_line(name, c_format(SMMUV3_SUCCESS_OLD, mr, 8, 0xFFFF_F000, 0x4_0000_0000, 1)),
        log_line(name, c_format(SMMUV3_SUCCESS_HEX, mr, 0x108, 0x1234, 0x5_0000_1234, 2)),
        log_line("smmuv3_translate_abort", c_format(SMMUV3_ABORT, mr, 0x108, 0x9000, 1)),
        log_line(name, c_format(SMMUV3_SUCCESS_STAGE, mr, 0xFFFF, 0x7000, 0x7000, 3, 2)),
        log_line(name, c_format(SMMUV3_SUCCESS_STAGE, mr, 0x10, 0x8000, 0x8000, 0, 1)),
    ]
    stats = QemuLogStats()
    got = rows_of(list(read_qemu_log(write(tmp_path, lines), stats=stats)))
    # perm is IOMMUAccessFlags: RO 1, WO 2, RW 3 (a write); 0 is no access and no row.
    assert got == [
        (2, 8, -1, 0xFFFF_F000, 4096, FLAG_READ),
        (3, 0x108, -1, 0x1234, 4096 - 0x234, FLAG_WRITE),
        (5, 0xFFFF, -1, 0x7000, 4096, FLAG_WRITE),
    ]
    assert stats.smmuv3_translate_success == 3
    assert stats.no_access == 1
    assert stats.skipped == 2


def test_iso_8601_stamps_count_nanoseconds_from_the_first_event() -> None:
    # util/log.c: g_date_time_format_iso8601() then a space before the event's own text.
    args = c_format(SMMUV3_SUCCESS_STAGE, "smmuv3", 8, 0x1000, 0x1000, 1, 1)
    lines = [
        f"2025-07-21T18:43:28.089797Z smmuv3_translate_success {args}",
        "2025-07-21T18:43:28.089815Z qemu-system-aarch64: a message with a stamp too",
        f"2025-07-21T18:43:29.000001Z smmuv3_translate_success {args}",
        f"2025-07-21T18:43:29.000002Z (4242) smmuv3_translate_success {args}",
        f"2025-07-21T18:43:30Z smmuv3_translate_success {args}",
    ]
    got = rows_of(list(iter_qemu_log(lines)))
    assert [r[0] for r in got] == [0, 910_204_000, 910_205_000, 1_910_203_000]


def test_a_stamp_that_goes_back_takes_its_predecessors_time() -> None:
    # QEMU takes the stamp outside the log lock: two threads may log out of order.
    args = c_format(SMMUV3_SUCCESS_HEX, "smmuv3", 8, 0x1000, 0x1000, 1)
    lines = [
        log_line("smmuv3_translate_success", args, tid=1, sec=10, usec=5),
        log_line("smmuv3_translate_success", args, tid=2, sec=10, usec=3),
        log_line("smmuv3_translate_success", args, tid=1, sec=10, usec=9),
    ]
    stats = QemuLogStats()
    got = rows_of(list(iter_qemu_log(lines, stats=stats)))
    assert [r[0] for r in got] == [0, 0, 4000]
    assert stats.reordered == 1


def test_the_import_streams_in_chunks_of_the_asked_size() -> None:
    lines = [
        log_line(
            "riscv_iommu_dma",
            c_format(RISCV_IOMMU_DMA, "iommu0", 0, 2, 0, 1, "RO", 0x1000 * i, 0),
        )
        for i in range(5)
    ]
    chunks = list(iter_qemu_log(lines, chunk_rows=2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert [r[3] for r in rows_of(chunks)] == [0x1000 * i for i in range(5)]


def test_an_imported_log_is_a_trace_the_writers_take(tmp_path: Path) -> None:
    lines = [
        log_line("riscv_iommu_dma", c_format(RISCV_IOMMU_DMA, "i", 1, 0, 0, 9, "WR", 0xABC, 0))
    ]
    chunks = list(iter_qemu_log(lines))
    assert write_npz(tmp_path / "t.npz", chunks) == 1
    assert rows_of(list(read_npz(tmp_path / "t.npz"))) == rows_of(chunks)


def test_an_empty_log_yields_nothing() -> None:
    assert list(iter_qemu_log(["", "unrelated\n"])) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "riscv_iommu_dma iommu0: translate 0000:00.0 #0 XX 0x1000 -> 0x1000",
            "line 2: riscv_iommu_dma arguments must read",
        ),
        (
            "riscv_iommu_dma iommu0: translate 0100:00.0 #0 RO 0x1000 -> 0x1000",
            "line 2: riscv_iommu_dma bus:device.function must be 8:5:3 bits, not 0100:00.0",
        ),
        (
            "riscv_iommu_dma iommu0: translate 0000:00.0 #1048576 RO 0x1000 -> 0x1000",
            "line 2: riscv_iommu_dma process_id must be 20-bit, not 1048576",
        ),
        (
            "smmuv3_translate_success smmuv3 sid=0x8 iova=0x1000 perm=0x1",
            "line 2: smmuv3_translate_success arguments must read",
        ),
        (
            "smmuv3_translate_success smmuv3 sid=0x10000 iova=0x0 translated=0x0 perm=0x1",
            "line 2: smmuv3_translate_success sid must be 16-bit and perm 0x0..0x3, "
            "not sid=0x10000 perm=0x1",
        ),
    ],
)
def test_a_malformed_event_names_its_line(line: str, message: str) -> None:
    with pytest.raises(FormatError, match="^" + re.escape(message)):
        list(iter_qemu_log(["unrelated\n", line + "\n"]))


def test_a_log_must_not_mix_stamped_and_unstamped_events() -> None:
    args = c_format(SMMUV3_SUCCESS_HEX, "smmuv3", 8, 0x1000, 0x1000, 1)
    lines = [
        log_line("smmuv3_translate_success", args, tid=1, sec=10, usec=5),
        log_line("smmuv3_translate_success", args),
    ]
    with pytest.raises(FormatError, match=r"^line 2: smmuv3_translate_success must be stamped"):
        list(iter_qemu_log(lines))


#: One event as QEMU prints it, and the row it stands for: (name, args, (did, pasid, iova, flags)).
Event = tuple[str, str, tuple[int, int, int, int]]


@st.composite
def riscv_dma_events(draw: st.DrawFn) -> Event:
    b, d, f = draw(st.integers(0, 0xFF)), draw(st.integers(0, 0x1F)), draw(st.integers(0, 7))
    pasid = draw(st.integers(0, (1 << 20) - 1))
    dirn = draw(st.sampled_from(["RO", "WR", "RW"]))
    iova = draw(st.integers(0, (1 << 64) - 1))
    args = c_format(RISCV_IOMMU_DMA, "iommu0", b, d, f, pasid, dirn, iova, 0)
    flags = FLAG_READ if dirn == "RO" else FLAG_WRITE
    return "riscv_iommu_dma", args, (b << 8 | d << 3 | f, pasid or -1, iova, flags)


@st.composite
def smmuv3_success_events(draw: st.DrawFn) -> Event:
    fmt = draw(st.sampled_from([SMMUV3_SUCCESS_OLD, SMMUV3_SUCCESS_HEX, SMMUV3_SUCCESS_STAGE]))
    sid, perm = draw(st.integers(0, 0xFFFF)), draw(st.integers(1, 3))
    iova = draw(st.integers(0, (1 << 64) - 1))
    stage = (draw(st.integers(1, 2)),) if fmt is SMMUV3_SUCCESS_STAGE else ()
    args = c_format(fmt, "smmuv3", sid, iova, iova, perm, *stage)
    flags = FLAG_READ if perm == 1 else FLAG_WRITE
    return "smmuv3_translate_success", args, (sid, -1, iova, flags)


@settings(max_examples=50, deadline=None)
@given(
    evs=st.lists(st.one_of(riscv_dma_events(), smmuv3_success_events()), max_size=20),
    stamps=st.booleans(),
    chunk=st.integers(1, 5),
)
def test_any_event_qemu_formats_imports_as_its_fields(
    evs: list[Event], stamps: bool, chunk: int
) -> None:
    lines: list[str] = []
    want = empty(len(evs))
    for i, (name, args, (did, pasid, iova, flags)) in enumerate(evs):
        lines.append("noise\n")
        if stamps:
            lines.append(log_line(name, args, tid=99, sec=1000, usec=i))
        else:
            lines.append(log_line(name, args))
        t = i * 1000 if stamps else len(lines)
        want[i] = (t, did, pasid, iova, 4096 - (iova & 0xFFF), flags)
    got = list(iter_qemu_log(lines, chunk_rows=chunk))
    assert all(len(c) <= chunk for c in got)
    rows = np.concatenate(got) if got else empty(0)
    check_rows(rows)
    assert rows.tolist() == want.tolist()
