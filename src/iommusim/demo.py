"""``make demo``: boot a machine, probe the driver, run a DMA workload strict and lazy, then
Shared Virtual Addressing.

The VMM scene (perf/vmm_scene.py) closes: a VMM hands the NIC to a guest through iommufd
with nested translation, a guest page fault and a guest invalidation included.

The machine is the embedded default (RAM, a RISC-V IOMMU with every capability, a NIC-like
and an NVMe-like endpoint) or a TOML scenario. Each mode boots a fresh machine, runs the same
seeded workload with a progress bar, and the summary puts the modes side by side. The SVA
scene (perf/sva_workload.py) boots machines of its own with one accelerator: a process, a
device bound to it, page requests, munmap and mprotect, on a correct device and on one that
completes ATS invalidations too late (the broken configuration).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
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

from iommusim.hw.smmuv3.params import PRESETS as SMMUV3_PRESETS
from iommusim.perf.dma_workload import RunReport, WorkloadConfig, default_system, run_workload
from iommusim.perf.sva_workload import SvaReport, SvaRunReport, run_sva_workload
from iommusim.perf.vmm_scene import VmmReport, run_vmm_scene
from iommusim.perf.vmm_smmuv3 import GuestSceneReport, run_guest_scene, run_host_baseline
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


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _ok(flag: bool) -> str:
    return "byte-exact" if flag else "MISMATCH"


def _after_munmap(r: SvaRunReport) -> str:
    if not r.faults_after_munmap:
        return f"0 of {r.probes}"
    return f"{r.faults_after_munmap} of {r.probes}: {r.fault_cause_name}"


def _mprotect_write(r: SvaRunReport) -> str:
    return "went through" if r.mprotect_write_ok else f"faults: {r.mprotect_write_cause_name}"


_SVA_ROWS: tuple[tuple[str, Callable[[SvaRunReport], str]], ...] = (
    ("pages mapped lazily (no page resident)", lambda r: f"{r.pages:,}"),
    ("pass 1: page requests (one per page)", lambda r: f"{r.pass1_page_requests:,}"),
    ("pass 1: page-request groups", lambda r: f"{r.pass1_prgs:,}"),
    ("pass 1: CPU faults before the device", lambda r: f"{r.cpu_faults_before_device:,}"),
    ("pass 1: data, device and CPU read-back", lambda r: _ok(r.device_data_ok and r.cpu_data_ok)),
    ("pass 2: new page requests", lambda r: f"{r.pass2_page_requests:,}"),
    ("pass 2: ATC hits / misses", lambda r: f"{r.pass2_atc_hits:,} / {r.pass2_atc_misses:,}"),
    ("page requests", lambda r: f"{r.page_requests:,}"),
    ("page-request round trips (answered)", lambda r: f"{r.round_trips:,}"),
    (
        "responses success / invalid / failure",
        lambda r: " / ".join(f"{r.responses[k]:,}" for k in ("success", "invalid", "failure")),
    ),
    (
        "round trip mean / max",
        lambda r: f"{r.round_trip_mean_ns:,.0f} / {r.round_trip_max_ns:,} ns",
    ),
    ("ATS translation requests", lambda r: f"{r.ats_requests:,}"),
    ("ATC hits / misses", lambda r: f"{r.atc_hits:,} / {r.atc_misses:,}"),
    ("ATS.INVAL commands (driver)", lambda r: f"{r.ats_inval_commands:,}"),
    ("Invalidate Requests received (device)", lambda r: f"{r.ats_invals_received:,}"),
    ("ATC entries dropped", lambda r: f"{r.atc_dropped:,}"),
    ("IOTINVAL commands", lambda r: f"{r.iotlb_invalidations:,}"),
    ("munmap 2nd half: probes that fault", _after_munmap),
    ("munmap 2nd half: 1st half still works", lambda r: "yes" if r.first_half_ok else "NO"),
    ("stale accesses to freed pages", lambda r: f"{r.stale_accesses:,} of {r.probes:,}"),
    ("mprotect read-only: device write", _mprotect_write),
    ("mprotect read-only: device read", lambda r: "works" if r.mprotect_read_ok else "FAILS"),
    ("IOFENCE.C timeouts", lambda r: f"{r.fence_timeouts:,}"),
    ("virtual time", lambda r: f"{r.virtual_ms:.3f} ms"),
)


def _print_sva(out: Console, sva: SvaReport, on: str = "RISC-V IOMMU") -> None:
    good, late = sva.correct, sva.late
    table = Table(title=f"Shared Virtual Addressing (one process, one accelerator) on {on}")
    table.add_column("metric")
    table.add_column("correct device", justify="right")
    table.add_column(
        f"BROKEN: ATS inval {late.ats_inval_delay_ns / 1000:g} us late", justify="right"
    )
    for label, fmt in _SVA_ROWS:
        table.add_row(label, fmt(good), fmt(late))
    out.print(table)
    out.print(
        f"SVA: {good.pages} lazily mapped pages reached the device by "
        f"{good.pass1_page_requests} page requests in {good.pass1_prgs} page-request "
        f"round trips; {good.round_trips} round trips in all "
        f"({good.responses['success']} success, {good.responses['invalid']} invalid), "
        f"mean {good.round_trip_mean_ns:,.0f} ns, max {good.round_trip_max_ns:,} ns "
        f"virtual; after munmap {good.faults_after_munmap} of {good.probes} probes "
        f"faulted ({good.fault_cause_name})."
    )
    out.print(
        f"Broken configuration: the device completes ATS invalidations "
        f"{late.ats_inval_delay_ns:,} ns late, longer than the driver waits: "
        f"{late.fence_timeouts} IOFENCE.C timeouts, and {late.stale_accesses} of "
        f"{late.probes} probes reached freed pages through its stale ATC."
    )


def _value(r: RunReport, key: str) -> object:
    return r.iotlb_hit_rate if key == "iotlb_hit_rate" else getattr(r, key)


def run_demo(
    json_out: bool = False,
    scenario: Path | None = None,
    ops: int | None = None,
    console: Console | None = None,
) -> list[RunReport]:
    sc = (
        load_scenario(scenario)
        if scenario is not None
        else Scenario(default_system(), WorkloadConfig())
    )
    workload = sc.workload if ops is None else replace(sc.workload, ops=ops)
    out = console if console is not None else Console(stderr=json_out)
    reports = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=json_out,
        disable=not out.is_terminal and json_out,
    ) as progress:
        for mode in sc.modes:
            task = progress.add_task(f"{mode:>11}", total=workload.ops)

            def advance(n: int, task: TaskID = task) -> None:
                progress.advance(task, n)

            reports.append(
                run_workload(mode, workload, sc.system, advance, ncpus=sc.ncpus, fq=sc.fq)
            )
        # The same workload with an Arm SMMUv3 (full preset) as the machine's IOMMU.
        arm = replace(sc.system, iommu=SMMUV3_PRESETS["full"])
        smmu_reports = []
        for mode in sc.modes:
            task = progress.add_task(f"{mode + ' smmu':>11}", total=workload.ops)

            def advance_smmu(n: int, task: TaskID = task) -> None:
                progress.advance(task, n)

            smmu_reports.append(
                run_workload(mode, workload, arm, advance_smmu, ncpus=sc.ncpus, fq=sc.fq)
            )
        sva_task = progress.add_task(f"{'sva':>11}", total=1)
        sva = run_sva_workload()
        sva_arm = run_sva_workload(iommu="smmuv3")
        progress.advance(sva_task)
        vmm_task = progress.add_task(f"{'vmm':>11}", total=1)
        vmm = run_vmm_scene(sc.vmm)
        guest, native = run_guest_scene(), run_host_baseline()
        progress.advance(vmm_task)
    if json_out:
        json.dump(
            {
                "reports": [r.as_dict() for r in reports],
                "smmuv3_reports": [r.as_dict() for r in smmu_reports],
                "sva": sva.as_dict(),
                "sva_smmuv3": sva_arm.as_dict(),
                "vmm": vmm.as_dict(),
                "guest_smmuv3": {"guest": asdict(guest), "host": asdict(native)},
            },
            sys.stdout,
            indent=2,
        )
        print()
        return reports
    table = Table(title="RISC-V IOMMU, Linux-style driver and DMA API: " + " vs ".join(sc.modes))
    table.add_column("metric")
    for r in reports:
        table.add_column(r.mode, justify="right")
    for label, key, fmt in _ROWS:
        table.add_row(label, *(fmt.format(_value(r, key)) for r in reports))
    out.print(table)
    if len(reports) >= 2 and reports[0].virtual_ns:
        base = reports[0]
        for r in reports[1:]:
            out.print(
                f"{r.mode}: {base.virtual_ns / r.virtual_ns:.2f}x the speed of "
                f"{base.mode} in virtual time, {r.stale_accesses} of {r.stale_probes} "
                f"stale-access probes reached memory (vs {base.stale_accesses})."
            )
    _print_side_by_side(out, reports, smmu_reports)
    _print_sva(out, sva)
    _print_sva(out, sva_arm, "Arm SMMUv3 (arm64 process, shared ASID, PRI, CMD_SYNC waits)")
    _print_vmm(out, vmm)
    _print_guest(out, guest, native)
    return reports


def _print_guest(out: Console, guest: GuestSceneReport, host: GuestSceneReport) -> None:
    """The SMMUv3 guest scene beside the same steps on the host (issue 15)."""
    table = Table(title="A guest kernel on a virtual SMMUv3 (VMM, iommufd vIOMMU, nested)")
    table.add_column("metric")
    table.add_column("on the host", justify="right")
    table.add_column("in the guest", justify="right")
    rows: tuple[tuple[str, Callable[[GuestSceneReport], str]], ...] = (
        ("device read at the IOVA", lambda r: "data" if r.guest_dma_ok else "FAILED"),
        ("after a strict unmap", lambda r: "STALE" if r.stale_after_unmap else "faults"),
        ("faults the driver saw", lambda r: r.fault_delivered or "none"),
        ("driver commands", lambda r: f"{r.guest_commands:,}"),
        ("commands forwarded by the VMM", lambda r: f"{r.forwarded_commands:,}"),
        ("guest STEs installed (nested HWPTs)", lambda r: f"{r.ste_installs:,}"),
        ("SMMU descriptor reads per TLB miss", lambda r: f"{r.host_walk_reads_per_miss:g}"),
    )
    for label, fmt in rows:
        table.add_row(label, fmt(host), fmt(guest))
    out.print(table)


#: The rows both architectures report, each with what the counter is on each.
_BOTH_ROWS = (
    ("DMAs", "dmas", "{:,}"),
    ("translations (HPM / PMCG transactions)", "translations", "{:,}"),
    ("TLB misses (HPM / PMCG)", "iotlb_misses", "{:,}"),
    ("context fetches (DDT walks / STE+CD fetches)", "ddt_walks", "{:,}"),
    ("table walks (HPM walks / PMCG descriptor reads)", "page_walks", "{:,}"),
    ("commands", "commands", "{:,}"),
    ("TLB invalidations (IOTINVAL / CMD_TLBI_*)", "invalidations", "{:,}"),
    ("syncs (IOFENCE.C / CMD_SYNC)", "fences", "{:,}"),
    ("faults (fault queue / event queue)", "faults", "{:,}"),
    ("stale accesses that succeeded", "stale_accesses", "{:,}"),
    ("virtual time", "virtual_ns", "{:,} ns"),
)


def _print_side_by_side(out: Console, rv: list[RunReport], arm: list[RunReport]) -> None:
    """The same seeded workload on the RISC-V IOMMU and on the Arm SMMUv3, mode by mode."""
    table = Table(title="The same DMA workload on both IOMMUs (Linux-style drivers)")
    table.add_column("metric")
    cols = [r for pair in zip(rv, arm, strict=True) for r in pair]
    for r in cols:
        table.add_column(
            f"{r.mode} {'RISC-V' if r.iommu == 'riscv' else 'SMMUv3'}", justify="right"
        )
    for label, key, fmt in _BOTH_ROWS:
        table.add_row(label, *(fmt.format(_value(r, key)) for r in cols))
    out.print(table)


def _print_vmm(out: Console, vmm: VmmReport) -> None:
    table = Table(title="A VMM assigns the NIC to a guest: iommufd, nested RISC-V translation")
    for col in ("who", "call", "result", "detail"):
        table.add_column(col)
    for s in vmm.steps:
        table.add_row(s.actor, s.call, s.result, s.detail)
    out.print(table)
    out.print(
        f"vmm: {vmm.ioctls} ioctls ({vmm.errors} failed); guest DMA "
        f"{_yes(vmm.guest_dma_ok)}, guest page fault served {_yes(vmm.fault_served)}, "
        f"stale after the guest's invalidation {_yes(vmm.stale_after_invalidate)}, NIC "
        f"back with the kernel {_yes(vmm.nic_returned)}."
    )
