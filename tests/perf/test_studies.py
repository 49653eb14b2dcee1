"""The studies of ``iommusim study``: each quick sweep writes its files with numbers that say
what the study is about, and the sweep's rows do not depend on where the points ran."""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path

import pytest

from iommusim.cli.main import main
from iommusim.cli.study import STUDY_NAMES
from iommusim.errors import IommusimError
from iommusim.perf.engine import JIT_AVAILABLE
from iommusim.perf.studies import STUDIES, Row, run_study, write_study
from iommusim.perf.studies.iotlb_reach import knee


@cache
def quick(name: str) -> tuple[list[Row], dict[str, object]]:
    return run_study(name, quick=True, progress=False)


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_a_quick_run_writes_the_plot_the_csv_and_the_json(name: str, tmp_path: Path) -> None:
    rows, summary = quick(name)
    paths = write_study(name, rows, summary, tmp_path)
    assert [p.name for p in paths] == [f"{name}.csv", f"{name}.json", f"{name}.png"]
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = paths[0].read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1
    doc = json.loads(paths[1].read_text())
    assert doc["study"] == name and len(doc["rows"]) == len(rows)


@pytest.mark.skipif(not JIT_AVAILABLE, reason="numba is not importable")
def test_iotlb_reach_walks_rise_once_the_working_set_exceeds_the_iotlb() -> None:
    """pcie-bench's cliff: within the IOTLB's reach (entries x 4 KiB) no request walks after
    the warm-up; beyond it, uniform access misses with probability 1 - entries / set."""
    rows, summary = quick("iotlb-reach")
    assert all(r["faults"] == 0 for r in rows)
    for r in rows:
        if r["pattern"] != "uniform":
            continue
        ws, entries = int(r["working_set_pages"]), int(r["iotlb_entries"])
        walks = float(r["walks_per_request"])
        if int(r["iotlb_superpages"]):
            # Whole-superpage entries: at most 256 pages -- one 2 MiB leaf -- all in reach.
            assert walks == 0.0
        elif ws <= entries:
            assert walks == 0.0
        else:
            assert walks == pytest.approx(1 - entries / ws, abs=0.05)
    knees = summary["knees"]
    assert isinstance(knees, list)
    for k in knees:
        if k["pattern"] == "uniform" and not k["iotlb_superpages"]:
            # 10 % of requests walk at 1/0.9 of the reach.
            assert k["knee_over_entries"] == pytest.approx(1 / 0.9, rel=0.05)
        elif k["iotlb_superpages"]:
            assert k["knee_pages"] is None and k["reach_bytes"] == k["iotlb_entries"] << 21
    # A 2 MiB leaf is one load shorter: beyond the knee, fewer loads per walk.
    by = {
        (
            r["pattern"],
            r["page_bytes"],
            r["iotlb_superpages"],
            r["policy"],
            r["iotlb_entries"],
            r["working_set_pages"],
        ): r
        for r in rows
    }
    big = by[("uniform", 4096, 0, "lru", 16, 256)], by[("uniform", 2 << 20, 0, "lru", 16, 256)]
    assert (big[0]["pte_loads_per_walk"], big[1]["pte_loads_per_walk"]) == (3.0, 2.0)
    assert float(big[1]["throughput_gbps"]) > float(big[0]["throughput_gbps"])
    huge = by[("uniform", 2 << 20, 1, "lru", 16, 256)]
    assert float(huge["throughput_gbps"]) > float(big[1]["throughput_gbps"])


def test_knee_interpolates_between_the_points_around_the_threshold() -> None:
    rows: list[Row] = [
        {"working_set_pages": 16, "walks_per_request": 0.0},
        {"working_set_pages": 64, "walks_per_request": 0.2},
        {"working_set_pages": 256, "walks_per_request": 0.9},
    ]
    assert knee(rows) == pytest.approx(32.0)
    assert knee(rows, threshold=0.95) is None


def test_invalidation_lazy_is_faster_and_exposes_what_strict_does_not() -> None:
    rows, summary = quick("invalidation")
    strict = next(r for r in rows if r["mode"] == "strict")
    assert strict["max_stale_iovas"] == 0 and strict["max_exposure_ns"] == 0
    assert strict["stale_accesses"] == 0
    for r in rows:
        if r["mode"] == "lazy":
            assert float(r["ns_per_io"]) < float(strict["ns_per_io"])
            assert float(r["commands_per_io"]) < float(strict["commands_per_io"])
            assert 0 < int(r["max_stale_iovas"]) < int(r["fq_size"])
            # Nothing stays exposed longer than the flush-queue timer.
            assert 0 < int(r["max_exposure_ns"]) <= int(r["fq_timeout_ns"])
    assert isinstance(summary["speedup_best_lazy_over_strict"], float)
    assert summary["speedup_best_lazy_over_strict"] > 1.5


@pytest.mark.skipif(not JIT_AVAILABLE, reason="numba is not importable")
def test_nested_walks_cost_the_textbook_loads_plus_the_pdt_walk_without_a_pdtc() -> None:
    """A miss walks n first-stage levels, each PTE address through an m-level G-stage, and
    the final GPA: n(m+1)+m loads; without a PDTC the process context (1 load, its address
    through the G-stage: m more) comes on top."""
    rows, _ = quick("nested")
    assert all(r["faults"] == 0 for r in rows)
    for r in rows:
        per_miss = float(r["accesses_per_miss"])
        textbook = int(r["textbook_walk"])
        m = 3 if r["gstage"] == "sv39x4" else 0
        extra = 0 if int(r["pdtc"]) or r["first"] == "bare" else 1 + m
        assert per_miss == pytest.approx(textbook + extra, abs=0.02), r
        if int(r["iotlb"]):
            assert float(r["misses_per_request"]) < 1.0
        else:
            assert float(r["misses_per_request"]) == 1.0


#: Levels a walk reads (DDI 0487 D8 "Translation table walk"): stage 1 by granule and input
#: size; stage 2 by granule and IPA size, a 4KB 40-bit stage 2 from two concatenated level-1
#: tables ("Concatenated translation tables") rather than from level 0.
S1_LEVELS = {(4, 48): 4, (64, 42): 2}
S2_LEVELS = {(4, 40): 3, (64, 48): 3}


def test_nested_smmuv3_misses_read_n_m_plus_1_plus_m_without_the_walk_cache() -> None:
    """IHI 0070 3.4, DDI 0487 D8: a TLB miss reads n stage 1 descriptors, each address (an
    IPA) and the output IPA through an m-level stage 2 -- n(m+1)+m reads (PMCG event 0x4 per
    TLB miss, 0x2). The walk cache holds the stage 2 translations of the table addresses, so
    once it is warm a nested miss reads n + m. The quick working set fits in the TLB, so
    with it every miss is a first touch and walks in full."""
    rows, _ = quick("nested-smmuv3")
    assert all(r["faults"] == 0 and r["config_misses"] == 0 for r in rows)
    if JIT_AVAILABLE:  # the STE and CD are prefetched: the kernels answer every row
        assert all(r["kernel_rows"] == r["requests"] for r in rows)
    for r in rows:
        g = int(r["granule"])
        n = S1_LEVELS[(g, int(r["s1_bits"]))] if r["stages"] != "s2" else 0
        m = S2_LEVELS[(g, int(r["s2_bits"]))] if r["stages"] != "s1" else 0
        assert (r["s1_levels"], r["s2_levels"]) == (n, m), r
        per_miss = float(r["reads_per_miss"])
        misses = float(r["misses_per_request"]) * int(r["requests"])
        if int(r["walk"]) and r["stages"] == "nested":
            # n + m, and an m-level walk per stage 1 table page when the walk cache first
            # meets it (the CD's page was walked by the prefetch, before the counts).
            warm = (int(r["walk_cache_entries"]) - 1) * m
            assert per_miss * misses == pytest.approx(misses * (n + m) + warm), r
            assert 0 < warm < misses
        else:
            assert per_miss == n * (m + 1) + m == r["textbook_walk"], r
        if int(r["tlb"]):
            assert misses <= int(r["pages"])
            # Each miss with a stage 2 caches the output IPA's stage 2 translation (nested:
            # apart from the combined entry).
            assert r["tlb_stage2_entries"] == (0 if r["stages"] == "s1" else round(misses)), r
        else:
            assert misses == int(r["requests"])
    # Concatenation saves a stage 2 level: 3 reads, not the 4 of a level-0 start.
    s2 = next(r for r in rows if r["stages"] == "s2" and not int(r["walk"]) + int(r["tlb"]))
    assert (s2["reads_per_miss"], s2["textbook_unconcatenated"]) == (3.0, 4)


def test_ats_an_atc_that_holds_the_buffer_saves_translation_requests() -> None:
    rows, _ = quick("ats")
    assert all(r["data_ok"] == 1 and r["stale_accesses"] == 0 for r in rows)
    small = min(rows, key=lambda r: r["atc_entries"])
    large = max(rows, key=lambda r: r["atc_entries"])
    assert int(large["translation_requests"]) < int(small["translation_requests"])
    # Page requests are taken once per page on first touch, whatever the ATC holds.
    assert large["round_trips"] == small["round_trips"]
    assert float(large["atc_hit_rate"]) > float(small["atc_hit_rate"])


def test_the_cli_writes_the_files_and_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["study", "ats", "--out", str(tmp_path), "--quick", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"] == "ats"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ats.csv", "ats.json", "ats.png"]


def test_the_cli_rejects_a_bad_jobs_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["study", "ats", "--out", str(tmp_path), "--quick", "--jobs", "0"]) == 2
    assert "--jobs must be >= 1, not 0" in capsys.readouterr().err


def test_the_cli_offers_every_study() -> None:
    assert tuple(STUDIES) == STUDY_NAMES


def test_without_ray_the_message_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(IommusimError, match=r"pip install 'iommusim\[ray\]'"):
        run_study("ats", quick=True, ray_address="local", progress=False)


def test_serial_and_two_local_processes_give_the_same_rows() -> None:
    serial, summary = quick("nested")
    parallel, summary2 = run_study("nested", quick=True, jobs=2, progress=False)
    assert parallel == serial and summary2 == summary


def test_ray_gives_the_same_rows_as_a_serial_run() -> None:
    ray = pytest.importorskip("ray")
    serial, summary = quick("ats")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray, summary2 = run_study("ats", quick=True, ray_address="local", progress=False)
    finally:
        ray.shutdown()
    assert on_ray == serial and summary2 == summary
