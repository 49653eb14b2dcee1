"""Shared Virtual Addressing end to end: one process, one accelerator with ATS and PRI.

The scene ``make demo`` closes with (Linux ``iommu_sva_bind_device``, ``iommu/io-pgfault.c``;
riscv-iommu: "PCIe ATS translation request handling", "PCIe ATS Page Request handling",
"IOMMU PCIe ATS commands"):

1. A process maps a buffer lazily (no page is resident) and an accelerator binds to it.
2. First pass: the device writes the buffer in DMA chunks and reads it back; the CPU checks
   the device's data. Every page reaches the device by a Page Request: its ATS Translation
   Request finds no valid PTE, the device sends a Page Request Group, the kernel faults the
   page in for the process (a remote fault) and answers Success, the device asks again.
3. Second pass: the device writes and reads the buffer again; every piece hits its ATC.
4. The process unmaps the second half. The kernel's MMU notifier invalidates the IOTLB and the
   device's ATC (``ATS.INVAL``, then ``IOFENCE.C``); one probe per unmapped page then faults:
   the Page Request Group is answered "Invalid Request". The first half still works.
5. ``mprotect`` makes the first quarter read-only: a device write there faults, a read works.

The same steps run a second time with a device that completes Invalidate Requests later
(``ats_inval_delay_ns``) than the driver waits for ``IOFENCE.C``: the *broken*
configuration. ``munmap`` returns with the fence timed out and the pages freed while the
device's ATC still maps them, so the probes reach freed memory: stale accesses.

Page-request round trips are the groups that got a response. Their mean latency is the
device's ``prg_wait_ns / prgs`` (virtual time from the group leaving the device to its
response). The maximum is measured here: ``prg_wait_ns`` is sampled around every DMA, and a
DMA's difference is the wait of the group it sent (a DMA that sends several groups
contributes their sum, an upper bound; in this scene each DMA sends at most one group except
when a multi-page group is refused and the device asks again for the faulting page alone).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Final

from iommusim.bits.arm.smmuv3_queues import (
    CERROR_ATC_INV_SYNC,
    CERROR_NAMES,
    CMD_ATC_INV,
    COMMANDS_BY_OPCODE,
)
from iommusim.errors import InvalidArgument
from iommusim.hw.smmuv3.params import PRESETS as SMMUV3_PRESETS
from iommusim.platform.endpoint import DmaResult, Endpoint
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE

__all__ = ["SvaConfig", "SvaReport", "SvaRunReport", "run_sva_run", "run_sva_workload"]

_PAGE: Final = 4096
_DEVICE: Final = "accel"
_DEVICE_RID: Final = 0x10
_FENCE_TIMEOUT: Final = "IOFENCE.C timed out"


@dataclass(frozen=True, slots=True)
class SvaConfig:
    """The scene's sizes. ``buffer_bytes`` must split into page-aligned quarters (a multiple
    of 16 KiB); ``late_inval_delay_ns`` is the broken device's Invalidate Request latency and
    must exceed the driver's patience for ``IOFENCE.C`` (64 polls of ``cqh``, about 13 us
    with the default costs) for the broken run to show anything. ``atc_entries`` sizes the
    device's ATC (default: the whole buffer, at least 64 entries, so the second pass hits on
    every piece)."""

    buffer_bytes: int = 256 << 10
    chunk_bytes: int = 16 << 10
    seed: int = 1
    late_inval_delay_ns: int = 50_000
    atc_entries: int | None = None

    def __post_init__(self) -> None:
        if self.buffer_bytes <= 0 or self.buffer_bytes % (4 * _PAGE):
            raise InvalidArgument(
                f"sva.buffer_bytes must be a positive multiple of 16384, not {self.buffer_bytes}"
            )
        if self.chunk_bytes <= 0 or self.chunk_bytes % _PAGE:
            raise InvalidArgument(
                f"sva.chunk_bytes must be a positive multiple of 4096, not {self.chunk_bytes}"
            )
        if self.late_inval_delay_ns <= 0:
            raise InvalidArgument(
                f"sva.late_inval_delay_ns must be positive, not {self.late_inval_delay_ns}"
            )
        if self.atc_entries is not None and self.atc_entries < 1:
            raise InvalidArgument(f"sva.atc_entries must be >= 1, not {self.atc_entries}")


@dataclass(slots=True)
class SvaRunReport:
    """One run of the scene. Counts are over the whole run, boot and bind included, unless
    named after a step (``pass1_*``, ``pass2_*``)."""

    label: str
    ats_inval_delay_ns: int = 0
    pages: int = 0
    chunk_bytes: int = 0
    pasid: int = 0
    # First pass: every page by a page request.
    pass1_page_requests: int = 0
    pass1_prgs: int = 0
    cpu_faults_before_device: int = 0
    remote_faults: int = 0
    device_data_ok: bool = False
    cpu_data_ok: bool = False
    # Second pass: everything from the ATC.
    pass2_page_requests: int = 0
    pass2_atc_hits: int = 0
    pass2_atc_misses: int = 0
    pass2_data_ok: bool = False
    # Page requests over the whole run.
    page_requests: int = 0
    prgs: int = 0
    responses: dict[str, int] = field(default_factory=dict)
    prg_timeouts: int = 0
    round_trips: int = 0
    round_trip_mean_ns: float = 0.0
    round_trip_max_ns: int = 0
    # ATS.
    ats_requests: int = 0
    atc_hits: int = 0
    atc_misses: int = 0
    ats_inval_commands: int = 0  # ATS.INVAL commands the driver queued
    ats_invals_received: int = 0  # Invalidate Requests the device received
    atc_dropped: int = 0  # ATC entries they removed
    iotlb_invalidations: int = 0  # IOTINVAL commands
    # After munmap of the second half: one probe per unmapped page.
    unmapped_pages: int = 0
    probes: int = 0
    faults_after_munmap: int = 0
    fault_abort: str = ""  # the first fault's DmaResult.abort, "" for none
    fault_cause_name: str = "none"  # its DmaResult.outcome
    stale_accesses: int = 0  # probes that reached the freed pages
    first_half_ok: bool = False
    # mprotect of the first quarter to read-only.
    mprotect_write_ok: bool = False
    mprotect_write_cause_name: str = "none"
    mprotect_read_ok: bool = False
    fence_timeouts: int = 0
    virtual_ns: int = 0

    @property
    def virtual_ms(self) -> float:
        return self.virtual_ns / 1e6

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["virtual_ms"] = round(self.virtual_ms, 6)
        return d


@dataclass(slots=True)
class SvaReport:
    """The scene on a correct device and on the broken one (late ATS invalidations)."""

    correct: SvaRunReport
    late: SvaRunReport

    def as_dict(self) -> dict[str, object]:
        return {"correct": self.correct.as_dict(), "late": self.late.as_dict()}


class _Tracker:
    """Samples the device's ``prg_wait_ns`` around each DMA for the maximum round trip."""

    def __init__(self, ep: Endpoint, pasid: int) -> None:
        self.ep = ep
        self.pasid = pasid
        self.max_wait = 0

    def _track(self, groups: int, wait: int, res: DmaResult) -> DmaResult:
        stats = self.ep.stats
        if stats.prgs > groups:
            self.max_wait = max(self.max_wait, stats.prg_wait_ns - wait)
        return res

    def read(self, va: int, size: int) -> DmaResult:
        s = self.ep.stats
        groups, wait = s.prgs, s.prg_wait_ns
        return self._track(groups, wait, self.ep.dma_read(va, size, pasid=self.pasid))

    def write(self, va: int, data: bytes) -> DmaResult:
        s = self.ep.stats
        groups, wait = s.prgs, s.prg_wait_ns
        return self._track(groups, wait, self.ep.dma_write(va, data, pasid=self.pasid))


def _stream(dma: _Tracker, buf: int, data: bytes, chunk: int) -> bool:
    """Write ``data`` at ``buf`` in chunks, read it back; True when every DMA completed and
    the data read back is byte-exact."""
    ok = True
    for off in range(0, len(data), chunk):
        ok = dma.write(buf + off, data[off : off + chunk]).ok and ok
    got = []
    for off in range(0, len(data), chunk):
        r = dma.read(buf + off, min(chunk, len(data) - off))
        ok = r.ok and ok
        got.append(r.data)
    return ok and b"".join(got) == data


def _driver_counts(kernel: Kernel) -> tuple[int, int, int]:
    """(ATS invalidation commands, TLB invalidation commands, sync timeouts) of the first
    IOMMU's driver: RISC-V ATS.INVAL / IOTINVAL / IOFENCE.C timeouts, or SMMUv3 CMD_ATC_INV /
    CMD_TLBI_* / CMD_SYNCs failed with CERROR_ATC_INV_SYNC."""
    drv = kernel.drivers[0]
    if isinstance(drv, Smmuv3Driver):
        assert drv.cmdq is not None
        issued = drv.cmdq.issued
        tlbi = sum(n for op, n in issued.items() if "TLBI" in COMMANDS_BY_OPCODE[op].name)
        timeouts = drv.cmdq.errors.count(CERROR_NAMES[CERROR_ATC_INV_SYNC])
        return issued.get(CMD_ATC_INV.opcode, 0), tlbi, timeouts
    rv = kernel.iommu
    timeouts = sum(e == _FENCE_TIMEOUT for e in rv.cq_errors)
    return rv.stats["ats_inval"], rv.stats["iotinval"], timeouts


def _run(label: str, cfg: SvaConfig, inval_delay_ns: int, iommu: str = "riscv") -> SvaRunReport:
    pages = cfg.buffer_bytes // _PAGE
    atc = cfg.atc_entries if cfg.atc_entries is not None else max(64, pages)
    ep_cfg = EndpointConfig(
        _DEVICE,
        _DEVICE_RID,
        kind="accel",
        pasid_bits=20,
        ats=True,
        pri=True,
        atc_entries=atc,
        ats_inval_delay_ns=inval_delay_ns,
    )
    sc = SystemConfig(endpoints=(ep_cfg,))
    if iommu == "smmuv3":
        sc = replace(sc, iommu=SMMUV3_PRESETS["full"])
    system = System(sc)
    kernel = Kernel(system)
    ep = system.endpoint(_DEVICE)
    rng = random.Random(cfg.seed)
    rep = SvaRunReport(
        label, ats_inval_delay_ns=inval_delay_ns, pages=pages, chunk_bytes=cfg.chunk_bytes
    )
    n = cfg.buffer_bytes
    half, quarter = n // 2, n // 4

    mm = kernel.new_process("proc", "arm64-4k" if iommu == "smmuv3" else "sv48")
    buf = mm.mmap(n, PROT_READ | PROT_WRITE)  # lazily: no page resident yet
    handle = kernel.sva.bind(kernel.device(_DEVICE), mm)
    rep.pasid = handle.pasid
    dma = _Tracker(ep, handle.pasid)
    st = ep.stats

    # 1. First pass: every page arrives by a page request.
    pr0, groups0 = st.page_requests, st.prgs
    data = rng.randbytes(n)
    rep.device_data_ok = _stream(dma, buf, data, cfg.chunk_bytes)
    rep.pass1_page_requests = st.page_requests - pr0
    rep.pass1_prgs = st.prgs - groups0
    rep.cpu_faults_before_device = mm.stats.cpu_faults
    rep.remote_faults = mm.stats.remote_faults
    rep.cpu_data_ok = mm.read(buf, n) == data

    # 2. Second pass: a new pattern, all from the ATC.
    pr0, hits0, misses0 = st.page_requests, st.atc_hits, st.atc_misses
    data = rng.randbytes(n)
    rep.pass2_data_ok = _stream(dma, buf, data, cfg.chunk_bytes) and mm.read(buf, n) == data
    rep.pass2_page_requests = st.page_requests - pr0
    rep.pass2_atc_hits = st.atc_hits - hits0
    rep.pass2_atc_misses = st.atc_misses - misses0

    # 3. munmap the second half; the device's next access to each of its pages must fault.
    mm.munmap(buf + half, half)
    rep.unmapped_pages = half // _PAGE
    for va in range(buf + half, buf + n, _PAGE):
        r = dma.read(va, 16)
        rep.probes += 1
        if r.ok:
            rep.stale_accesses += 1  # through a stale ATC entry, to a freed page
        else:
            if not rep.faults_after_munmap:
                rep.fault_abort = r.abort or ""
                rep.fault_cause_name = r.outcome
            rep.faults_after_munmap += 1
    r = dma.read(buf, half)
    rep.first_half_ok = r.ok and r.data == data[:half]

    # 4. mprotect the first quarter read-only.
    mm.mprotect(buf, quarter, PROT_READ)
    poke = b"\xa5" * 16
    w = dma.write(buf, poke)
    rep.mprotect_write_ok = w.ok
    rep.mprotect_write_cause_name = w.outcome
    # A write that went through (a stale ATC entry) changed what the read sees.
    expect = poke + data[len(poke) : quarter] if w.ok else data[:quarter]
    r = dma.read(buf, quarter)
    rep.mprotect_read_ok = r.ok and r.data == expect
    system.settle()

    rep.page_requests = st.page_requests
    rep.prgs = st.prgs
    rep.responses = {
        "success": st.prg_success,
        "invalid": st.prg_invalid,
        "failure": st.prg_failure,
    }
    rep.prg_timeouts = st.prg_timeouts
    rep.round_trips = st.prg_success + st.prg_invalid + st.prg_failure
    rep.round_trip_mean_ns = round(st.prg_wait_ns / st.prgs, 1) if st.prgs else 0.0
    rep.round_trip_max_ns = dma.max_wait
    rep.ats_requests = st.ats_requests
    rep.atc_hits = st.atc_hits
    rep.atc_misses = st.atc_misses
    rep.ats_inval_commands, rep.iotlb_invalidations, rep.fence_timeouts = _driver_counts(kernel)
    rep.ats_invals_received = st.ats_invals
    rep.atc_dropped = st.atc_dropped
    rep.virtual_ns = system.clock.now
    return rep


def run_sva_run(
    cfg: SvaConfig | None = None, inval_delay_ns: int = 0, iommu: str = "riscv"
) -> SvaRunReport:
    """One run of the scene with a device whose ATS invalidations complete after
    ``inval_delay_ns`` (0: at once, the correct device), behind ``iommu`` ("riscv" with an
    Sv48 process, or "smmuv3" with an arm64 one)."""
    cfg = cfg if cfg is not None else SvaConfig()
    if inval_delay_ns < 0:
        raise InvalidArgument(f"inval_delay_ns must be >= 0, not {inval_delay_ns}")
    if iommu not in ("riscv", "smmuv3"):
        raise InvalidArgument(f"iommu must be riscv or smmuv3, not {iommu!r}")
    label = "correct" if not inval_delay_ns else "late ATS invalidation"
    return _run(label, cfg, inval_delay_ns, iommu)


def run_sva_workload(cfg: SvaConfig | None = None, iommu: str = "riscv") -> SvaReport:
    """Run the scene on a correct device, then on one whose ATS invalidations complete after
    ``cfg.late_inval_delay_ns`` (the broken configuration), behind ``iommu``. Deterministic
    for a given ``cfg``."""
    cfg = cfg if cfg is not None else SvaConfig()
    return SvaReport(
        correct=run_sva_run(cfg, 0, iommu),
        late=run_sva_run(cfg, cfg.late_inval_delay_ns, iommu),
    )
