"""``iommusim demo``: the DMA workload in strict and lazy mode (demo.py, perf/dma_workload.py,
cli/main.py).

STYLE "CLI": thin over the library, ``--json`` for machine output, documented exit codes
(2 for an error, with a message naming the scenario key).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from iommusim.cli.main import main
from iommusim.demo import run_demo

EXAMPLE = Path(__file__).resolve().parents[1] / "scenarios" / "nic-nvme.toml"


def quiet() -> Console:
    return Console(file=io.StringIO(), width=140, force_terminal=False)


def test_run_demo_reports_strict_and_lazy() -> None:
    console = quiet()
    reports = run_demo(ops=4, console=console)
    assert [r.mode for r in reports] == ["strict", "lazy"]
    for r in reports:
        assert r.ops == 4
        assert r.dmas >= 4
        assert r.translations > 0
        assert r.virtual_ns > 0
        assert r.ledger["counts"]["dma_data"] > 0
    strict, lazy = reports
    assert strict.fq_flushes == 0
    assert strict.invalidations > 0
    assert lazy.invalidations < strict.invalidations  # lazy batches them
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "IOTLB hit rate" in out and "strict" in out and "lazy" in out


def test_json_output_parses(capsys: pytest.CaptureFixture[str]) -> None:
    reports = run_demo(json_out=True, ops=3, console=quiet())
    doc = json.loads(capsys.readouterr().out)
    assert [r["mode"] for r in doc["reports"]] == ["strict", "lazy"]
    assert [r["ops"] for r in doc["reports"]] == [3, 3]
    assert doc["reports"][0]["commands"] == reports[0].commands
    assert 0.0 <= doc["reports"][1]["iotlb_hit_rate"] <= 1.0


def test_strict_closes_the_window_lazy_leaves_open(tmp_path: Path) -> None:
    # Every operation probes the buffer it just unmapped: strict mode faults every probe,
    # lazy mode (before its first flush: 12 ops take far less than 10 ms and fill far less
    # than 256 entries) lets every one through a stale IOTLB entry.
    sc = tmp_path / "probe.toml"
    sc.write_text("version = 1\n[workload]\nops = 12\nstale_probe_rate = 1.0\n")
    strict, lazy = run_demo(scenario=sc, console=quiet())
    assert strict.stale_probes == lazy.stale_probes == 12
    assert strict.stale_accesses == 0
    assert strict.faults == 12
    assert lazy.stale_accesses == 12
    assert lazy.faults == 0
    assert lazy.fq_max_pending >= 1


def test_runs_are_deterministic() -> None:
    a = run_demo(ops=5, console=quiet())
    b = run_demo(ops=5, console=quiet())
    assert [r.as_dict() for r in a] == [r.as_dict() for r in b]


def test_cli_demo_with_the_example_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", str(EXAMPLE), "--ops", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["ops"] for r in doc["reports"]] == [2, 2]


def test_cli_demo_bad_scenario_exits_2_naming_the_key(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n[iommu]\npreset = 'gigantic'\n")
    assert main(["demo", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iommusim: error: scenario: iommu.preset must be one of")
    assert main(["demo", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_installed_command_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n[system]\niommu_base = 'x'\n")
    exe = Path(sys.executable).with_name("iommusim")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "iommusim.cli.main"]
    proc = subprocess.run([*cmd, "demo", str(bad)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert "system.iommu_base must be an integer, not 'x'" in proc.stderr
    assert proc.stdout == ""
