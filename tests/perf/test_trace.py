"""The trace format: CSV and .npz round trips in chunks, row validation, the generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import FormatError, InvalidArgument
from iommusim.perf.trace import (
    FLAG_EXEC,
    FLAG_PRIV,
    FLAG_READ,
    FLAG_WRITE,
    TRACE_DTYPE,
    SyntheticTrace,
    check_rows,
    empty,
    read_csv,
    read_npz,
    write_csv,
    write_npz,
)


@st.composite
def traces(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(0, 40))
    rows = empty(n)
    for i in range(n):
        page = draw(st.integers(0, (1 << 52) - 1))
        size = draw(st.integers(1, 4096))
        off = draw(st.integers(0, 4096 - size))
        pasid = draw(st.integers(-1, (1 << 20) - 1))
        flags = draw(st.sampled_from([FLAG_READ, FLAG_WRITE, FLAG_EXEC]))
        if pasid >= 0 and draw(st.booleans()):
            flags |= FLAG_PRIV
        rows[i] = (
            draw(st.integers(0, (1 << 64) - 1)),
            draw(st.integers(0, (1 << 24) - 1)),
            pasid,
            page << 12 | off,
            size,
            flags,
        )
    return rows


def _cat(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else empty(0)


@settings(max_examples=30, deadline=None)
@given(rows=traces(), chunk=st.integers(1, 7))
def test_a_csv_trace_round_trips_in_chunks(
    tmp_path_factory: pytest.TempPathFactory, rows: np.ndarray, chunk: int
) -> None:
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    assert write_csv(path, [rows[:5], rows[5:]]) == len(rows)
    chunks = list(read_csv(path, chunk_rows=chunk))
    assert all(len(c) <= chunk for c in chunks)
    assert np.array_equal(_cat(chunks), rows)


@settings(max_examples=30, deadline=None)
@given(rows=traces(), compress=st.booleans())
def test_an_npz_trace_round_trips_one_member_per_chunk(
    tmp_path_factory: pytest.TempPathFactory, rows: np.ndarray, compress: bool
) -> None:
    path = tmp_path_factory.mktemp("npz") / "t.npz"
    parts = [rows[:3], rows[3:10], rows[10:]]
    assert write_npz(path, parts, compress=compress) == len(rows)
    got = list(read_npz(path))
    assert [len(c) for c in got] == [len(p) for p in parts]
    assert np.array_equal(_cat(got), rows)


def test_csv_rows_read_as_people_write_them(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "time_ns,device_id,pasid,iova,size,flags\n5,0x12,-1,0x8000,64,w\n6,3,7,4096,8,rp\n"
    )
    (rows,) = read_csv(path)
    assert rows.tolist() == [
        (5, 0x12, -1, 0x8000, 64, FLAG_WRITE),
        (6, 3, 7, 4096, 8, FLAG_READ | FLAG_PRIV),
    ]


def test_a_bad_csv_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("time_ns,device_id,pasid,iova,size,flags\n5,1,-1,0x8000,64,q\n")
    with pytest.raises(FormatError, match="line 2: flags must be one of"):
        list(read_csv(path))
    path.write_text("time,device\n")
    with pytest.raises(FormatError, match="header must be"):
        list(read_csv(path))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device_id", 1 << 24, "device_id must be below 2\\*\\*24"),
        ("pasid", -2, "pasid must be -1 or 20-bit"),
        ("flags", FLAG_READ | FLAG_WRITE, "flags must name one of"),
        ("flags", 0, "flags must name one of"),
        ("flags", FLAG_READ | 0x10, "flags has undefined bits"),
        ("size", 0, "size must be 1..4096"),
        ("iova", 0xFC1, "size must be 1..4096 and stay inside one 4 KiB page"),
    ],
)
def test_a_row_no_device_could_send_is_refused(field: str, value: int, message: str) -> None:
    rows = empty(3)
    rows["flags"] = FLAG_READ
    rows["size"] = 64
    rows[field][1] = value
    with pytest.raises(FormatError, match=f"trace row 11: {message}"):
        check_rows(rows, first_row=10)


@pytest.mark.parametrize("pattern", ["uniform", "zipf", "ring"])
def test_synthetic_traces_are_seeded_and_stay_in_the_working_set(pattern: str) -> None:
    spec = SyntheticTrace(pattern, rows=10_000, working_set=300, seed=4)  # type: ignore[arg-type]
    a = np.concatenate(list(spec.chunks(chunk_rows=999)))
    assert a.dtype == TRACE_DTYPE and len(a) == 10_000
    check_rows(a)
    pages = (a["iova"] - np.uint64(spec.base_iova)) >> np.uint64(12)
    assert int(pages.max()) < 300
    if pattern == "ring":
        assert pages[:600].tolist() == list(range(300)) * 2
    else:
        assert len(np.unique(pages)) > 200
    assert np.all(np.diff(a["time_ns"].astype(np.int64)) == spec.interval_ns)
    again = np.concatenate(list(spec.chunks(chunk_rows=999)))
    assert np.array_equal(a, again)


def test_zipf_traces_favour_few_pages() -> None:
    rows = np.concatenate(list(SyntheticTrace("zipf", rows=50_000, working_set=10_000).chunks()))
    _, counts = np.unique(rows["iova"] >> np.uint64(12), return_counts=True)
    top = np.sort(counts)[::-1]
    assert top[:100].sum() > 0.4 * len(rows)


def test_a_synthetic_trace_checks_its_parameters() -> None:
    with pytest.raises(InvalidArgument, match="working_set must be > 0 pages, not 0"):
        SyntheticTrace("ring", rows=1, working_set=0)
    with pytest.raises(InvalidArgument, match="pattern must be uniform, zipf or ring"):
        SyntheticTrace("loop", rows=1, working_set=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="priv must be False"):
        SyntheticTrace("ring", rows=1, working_set=1, priv=True)
