"""The SVA scene of ``make demo`` (perf/sva_workload.py): one process, one accelerator with
ATS and PRI, on a correct device and on one that completes ATS invalidations too late.

riscv-iommu: "PCIe ATS translation request handling", "PCIe ATS Page Request handling",
"IOMMU PCIe ATS commands".
"""

from __future__ import annotations

import json

import pytest

from iommusim.errors import InvalidArgument
from iommusim.perf.sva_workload import SvaConfig, SvaReport, run_sva_workload
from iommusim.platform.endpoint import DMA_ABORT_NAMES

SMALL = SvaConfig(buffer_bytes=64 << 10, chunk_bytes=16 << 10)  # 16 pages


@pytest.fixture(scope="module")
def report() -> SvaReport:
    return run_sva_workload(SMALL)


def test_every_page_arrives_by_a_page_request(report: SvaReport) -> None:
    r = report.correct
    assert r.pages == 16
    assert r.pass1_page_requests == r.pages
    assert r.pass1_prgs == r.pages // 4  # a 16 KiB chunk is one group of 4 pages
    assert r.cpu_faults_before_device == 0
    assert r.remote_faults == r.pages
    assert r.device_data_ok and r.cpu_data_ok


def test_second_pass_hits_the_atc(report: SvaReport) -> None:
    r = report.correct
    assert r.pass2_page_requests == 0
    assert r.pass2_atc_hits == 2 * r.pages  # written, then read back
    assert r.pass2_atc_misses == 0
    assert r.pass2_data_ok


def test_munmap_faults_with_prg_invalid_and_the_first_half_works(report: SvaReport) -> None:
    r = report.correct
    assert r.unmapped_pages == r.probes == r.pages // 2
    assert r.faults_after_munmap == r.probes
    assert r.fault_abort == "prg_invalid"
    assert r.fault_cause_name == DMA_ABORT_NAMES["prg_invalid"] == "PRG Invalid Request"
    assert r.stale_accesses == 0
    assert r.first_half_ok
    assert r.ats_inval_commands >= 2  # the bind's and the munmap's
    assert r.ats_invals_received == r.ats_inval_commands
    assert r.atc_dropped >= r.pages // 2
    assert r.iotlb_invalidations > 0
    assert r.fence_timeouts == 0


def test_mprotect_read_only_refuses_device_writes(report: SvaReport) -> None:
    r = report.correct
    assert not r.mprotect_write_ok
    assert r.mprotect_write_cause_name == "PRG Invalid Request"
    assert r.mprotect_read_ok


def test_page_request_round_trips(report: SvaReport) -> None:
    r = report.correct
    # Pass 1's groups answered Success; each munmap probe and the mprotect write, Invalid.
    assert r.responses == {"success": r.pass1_prgs, "invalid": r.probes + 1, "failure": 0}
    assert r.round_trips == r.prgs == sum(r.responses.values())
    assert r.prg_timeouts == 0
    assert 0 < r.round_trip_mean_ns <= r.round_trip_max_ns
    assert r.page_requests >= r.pass1_page_requests + r.probes + 1
    assert r.ats_requests > 0 and r.atc_hits > 0 and r.atc_misses > 0
    assert r.virtual_ns > 0


def test_late_ats_invalidation_leaves_stale_accesses(report: SvaReport) -> None:
    late = report.late
    assert late.ats_inval_delay_ns == SMALL.late_inval_delay_ns
    # Up to munmap the broken device behaves like the correct one.
    assert late.pass1_page_requests == late.pages
    assert late.device_data_ok and late.pass2_page_requests == 0
    # The driver gives up on IOFENCE.C, frees the pages; the device's ATC still maps them.
    assert late.fence_timeouts > 0
    assert late.stale_accesses > 0
    assert late.faults_after_munmap + late.stale_accesses == late.probes


def test_deterministic_and_json_able() -> None:
    a, b = run_sva_workload(SMALL), run_sva_workload(SMALL)
    assert a.as_dict() == b.as_dict()
    doc = json.loads(json.dumps(a.as_dict()))
    assert doc["correct"]["pass1_page_requests"] == 16
    assert doc["late"]["stale_accesses"] == a.late.stale_accesses


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer_bytes": 4096}, "sva.buffer_bytes must be a positive multiple of 16384, not 4096"),
        ({"chunk_bytes": 100}, "sva.chunk_bytes must be a positive multiple of 4096, not 100"),
        ({"late_inval_delay_ns": 0}, "sva.late_inval_delay_ns must be positive, not 0"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        SvaConfig(**kwargs)
