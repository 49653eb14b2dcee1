"""``make demo``: boot a machine, probe the driver, run a DMA workload strict and lazy.

The machine is the embedded default (RAM, a RISC-V IOMMU with every capability, a NIC-like
and an NVMe-like endpoint) or a TOML scenario. Each mode boots a fresh machine, runs the same
seeded workload with a progress bar, and the summary puts the modes side by side.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from iommusim.perf.dma_workload import RunReport, WorkloadConfig, default_system, run_workload
from iommusim.scenario.loader import Scenario, load_scenario

__all__ = ["run_demo"]

_ROWS = (
    ("operations (map, DMA, unmap)", "ops", "{:,}"),
    ("DMAs", "dmas", "{:,}"),
    ("bytes moved", "bytes", "{:,}"),
    ("translations (HPM: untranslated requests)", "translations", "{:,}"),
    ("IOTLB hit rate", "iotlb_hit_rate", "{:.2%}"),
    ("IOTLB misses (HPM)", "iotlb_misses", "{:,}"),
    ("first-stage walks (HPM)", "page_walks", "{:,}"),
    ("device-directory walks (HPM)", "ddt_walks", "{:,}"),
    ("commands", "commands", "{:,}"),
    ("IOTINVAL commands", "invalidations", "{:,}"),
    ("IOFENCE.C", "fences", "{:,}"),
    ("flush-queue flushes", "fq_flushes", "{:,}"),
    ("most IOVAs awaiting flush", "fq_max_pending", "{:,}"),
    ("faults (fault queue)", "faults", "{:,}"),
    ("stale-access probes", "stale_probes", "{:,}"),
    ("stale accesses that succeeded", "stale_accesses", "{:,}"),
    ("virtual time", "virtual_ns", "{:,} ns"),
)


def _value(r: RunReport, key: str) -> object:
    return r.iotlb_hit_rate if key == "iotlb_hit_rate" else getattr(r, key)


def run_demo(json_out: bool = False, scenario: Path | None = None, ops: int | None = None,
             console: Console | None = None) -> list[RunReport]:
    sc = load_scenario(scenario) if scenario is not None else Scenario(
        default_system(), WorkloadConfig())
    workload = sc.workload if ops is None else replace(sc.workload, ops=ops)
    out = console if console is not None else Console(stderr=json_out)
    reports = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out, transient=json_out,
                  disable=not out.is_terminal and json_out) as progress:
        for mode in sc.modes:
            task = progress.add_task(f"{mode:>11}", total=workload.ops)

            def advance(n: int, task: TaskID = task) -> None:
                progress.advance(task, n)

            reports.append(run_workload(mode, workload, sc.system, advance, ncpus=sc.ncpus,
                                        fq=sc.fq))
    if json_out:
        json.dump({"reports": [r.as_dict() for r in reports]}, sys.stdout, indent=2)
        print()
        return reports
    table = Table(title="RISC-V IOMMU, Linux-style driver and DMA API: "
                  + " vs ".join(sc.modes))
    table.add_column("metric")
    for r in reports:
        table.add_column(r.mode, justify="right")
    for label, key, fmt in _ROWS:
        table.add_row(label, *(fmt.format(_value(r, key)) for r in reports))
    out.print(table)
    if len(reports) >= 2 and reports[0].virtual_ns:
        base = reports[0]
        for r in reports[1:]:
            out.print(f"{r.mode}: {base.virtual_ns / r.virtual_ns:.2f}x the speed of "
                      f"{base.mode} in virtual time, {r.stale_accesses} of {r.stale_probes} "
                      f"stale-access probes reached memory (vs {base.stale_accesses}).")
    return reports

