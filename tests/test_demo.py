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


def test_cli_demo_bad_scenario_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    proc = subprocess.run(
        [*cmd, "demo", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "system.iommu_base must be an integer, not 'x'" in proc.stderr
    assert proc.stdout == ""


def test_demo_prints_the_sva_scene() -> None:
    # perf/sva_workload.py at its default size: 64 pages, 16 KiB DMA chunks.
    console = quiet()
    run_demo(ops=2, console=console)
    full = console.file.getvalue()  # type: ignore[attr-defined]
    out, arm = full.split("on Arm SMMUv3", 1)
    assert "Shared Virtual Addressing (one process, one accelerator)" in out
    assert "BROKEN: ATS inval 50 us late" in out

    def table_rows(text: str) -> dict[str, list[str]]:
        return {
            line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in text.splitlines()
            if line.count("│") == 4
        }

    rows = table_rows(out)
    # On SMMUv3 the late device's invalidation is waited for (CMD_SYNC completes only after
    # the Invalidation Completion): no stale access either way.
    assert table_rows(arm)["stale accesses to freed pages"] == ["0 of 32", "0 of 32"]
    assert rows["pass 1: page requests (one per page)"] == ["64", "64"]
    assert rows["pass 1: page-request groups"] == ["16", "16"]
    assert rows["pass 2: new page requests"] == ["0", "0"]
    assert rows["pass 2: ATC hits / misses"] == ["128 / 0", "128 / 0"]
    assert rows["munmap 2nd half: probes that fault"][0] == "32 of 32: PRG Invalid Request"
    assert rows["stale accesses to freed pages"][0] == "0 of 32"
    assert rows["stale accesses to freed pages"][1] != "0 of 32"
    assert rows["IOFENCE.C timeouts"][0] == "0"
    assert rows["mprotect read-only: device write"][0] == "faults: PRG Invalid Request"
    assert rows["mprotect read-only: device read"][0] == "works"
    assert "64 page requests in 16 page-request round trips" in out
    assert "Broken configuration:" in out


def test_json_output_has_the_sva_scene(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--ops", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["ops"] for r in doc["reports"]] == [2, 2]  # the strict/lazy keys are intact
    good, late = doc["sva"]["correct"], doc["sva"]["late"]
    assert good["pages"] == good["pass1_page_requests"] == 64
    assert good["pass1_prgs"] == 16
    assert good["pass2_page_requests"] == 0 and good["pass2_atc_hits"] == 128
    assert good["responses"]["success"] == 16
    assert good["round_trips"] == good["prgs"]
    assert good["round_trip_max_ns"] >= good["round_trip_mean_ns"] > 0
    assert good["faults_after_munmap"] == 32 and good["stale_accesses"] == 0
    assert good["fault_cause_name"] == "PRG Invalid Request"
    assert good["ats_inval_commands"] >= 2 and good["atc_dropped"] >= 32
    assert not good["mprotect_write_ok"] and good["mprotect_read_ok"]
    assert late["ats_inval_delay_ns"] == 50_000
    assert late["stale_accesses"] > 0 and late["fence_timeouts"] > 0
    assert good["virtual_ms"] > 0


def test_demo_ends_with_the_vmm_scene(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--ops", "2", "--json"]) == 0
    vmm = json.loads(capsys.readouterr().out)["vmm"]
    assert vmm["guest_dma_ok"] and vmm["fault_served"] and vmm["nic_returned"]
    assert not vmm["stale_after_invalidate"] and vmm["errors"] == 0
    assert vmm["steps"][0]["call"] == "VFIO_DEVICE_BIND_IOMMUFD(nic)"


def test_the_demo_runs_the_workload_on_both_iommus(capsys: pytest.CaptureFixture[str]) -> None:
    """issue 12: the same seeded workload on the RISC-V IOMMU and the SMMUv3, side by side."""
    run_demo(json_out=True, ops=3)
    doc = json.loads(capsys.readouterr().out)
    arm = doc["smmuv3_reports"]
    assert [(r["mode"], r["iommu"]) for r in arm] == [("strict", "smmuv3"), ("lazy", "smmuv3")]
    rv = doc["reports"]
    assert [r["dmas"] for r in arm] == [r["dmas"] for r in rv]  # the same workload
    assert arm[0]["translations"] > 0 and arm[0]["invalidations"] > 0


def test_the_demo_has_the_smmuv3_guest_scene(capsys: pytest.CaptureFixture[str]) -> None:
    """issue 15: the guest kernel on a virtual SMMUv3 beside the same steps on the host."""
    run_demo(json_out=True, ops=2)
    doc = json.loads(capsys.readouterr().out)["guest_smmuv3"]
    assert doc["guest"]["guest_dma_ok"] and doc["host"]["guest_dma_ok"]
    assert not doc["guest"]["stale_after_unmap"]
    assert doc["guest"]["forwarded_commands"] > doc["host"]["forwarded_commands"] == 0
    assert doc["guest"]["host_walk_reads_per_miss"] > doc["host"]["host_walk_reads_per_miss"]
