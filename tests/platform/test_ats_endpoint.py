"""Endpoints with PCIe ATS, an address translation cache, PRI page requests and ATS
invalidation (platform/endpoint.py, platform/atc.py, platform/system.py).

riscv-iommu: "PCIe ATS translation request handling" (Translation Requests and their
completions), "PCIe ATS Page Request handling" (page requests queued in the PQ or answered by
the IOMMU), "IOMMU PCIe ATS commands" (ATS.INVAL, ATS.PRGR) and "IOMMU Command-queue Fence
commands" (an IOFENCE.C waits for earlier ATS.INVAL completions).

The tests play the system software with :class:`Host`, which reaches the hardware only as a
driver does (DESIGN rule 2): MMIO through the bus, tables and queues in RAM, and a page-request
handler run from the PQ interrupt (an MSI into the interrupt sink).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.pcie import (
    CPL_UR,
    PRG_INVALID_REQUEST,
    PRG_RESPONSE_FAILURE,
    PRG_SUCCESS,
    PageRequest,
    decode_page_request,
    inval_payload,
)
from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.queues import CMD_ATS, CMD_IOFENCE, PQ_RECORD
from iommusim.bits.riscv.regs import (
    CQCSR_CQEN,
    FQCSR_FQEN,
    IPSR_PIP,
    MODE_1LVL,
    OFF_CQB,
    OFF_CQCSR,
    OFF_CQH,
    OFF_CQT,
    OFF_DDTP,
    OFF_FQB,
    OFF_FQCSR,
    OFF_ICVEC,
    OFF_IPSR,
    OFF_MSI_CFG_TBL,
    OFF_PQB,
    OFF_PQCSR,
    OFF_PQH,
    OFF_PQT,
    PQCSR_PIE,
    PQCSR_PQEN,
)
from iommusim.bits.riscv.structures import DC_FSC, DC_TC, PC_FSC, PC_TA
from iommusim.errors import InvalidArgument, ModelError
from iommusim.hw.riscv.transaction import Request, Response
from iommusim.platform.atc import Atc
from iommusim.platform.costs import CostModel
from iommusim.platform.endpoint import Endpoint
from iommusim.platform.system import EndpointConfig, System, SystemConfig

PAGE = 4096
RAM = 0x8000_0000
TABLES = RAM + 0x10_0000  # page-table and queue pages
DATA = RAM + 0x100_0000  # data pages
IRQ_PQ = 9  # interrupt identity of the page-request-queue MSI
QLOG2 = 4  # 16-entry queues
DEV = 0x08
READ_PAGE_FAULT = 13  # riscv-iommu: "Fault/Event-Queue (FQ)", cause codes
WRITE_PAGE_FAULT = 15
TTYP_DISALLOWED = 260
SV39 = 8  # iosatp / PC.fsc MODE
PD8 = 1  # pdtp MODE

Group = list[tuple[dict[str, int], PageRequest]]


class Host:
    """The system software of these tests: programs the IOMMU through MMIO and RAM only.

    ``on_group(group)`` decides the response to each complete Page Request Group (a list of
    (PQ record, page request) pairs): a response code, or ``None`` for no response.
    """

    def __init__(self, system: System, *, pq: bool = True, pq_irq: bool = True) -> None:
        self.system = system
        self.bus = system.bus
        self.base = system.config.iommu_base_pa
        self._next = TABLES
        self.cq = self._queue(OFF_CQB, OFF_CQCSR, CQCSR_CQEN)
        self.fq = self._queue(OFF_FQB, OFF_FQCSR, FQCSR_FQEN)
        if pq:
            self.pq = self._queue(OFF_PQB, OFF_PQCSR, PQCSR_PQEN | (PQCSR_PIE if pq_irq else 0))
        if pq_irq:
            # riscv-iommu: "Interrupt-cause-to-vector register (icvec)" and "MSI configuration
            # table": the PQ interrupt (PIV) on vector 1, an MSI into the interrupt sink.
            self.w64(OFF_ICVEC, 1 << 12)
            self.w64(OFF_MSI_CFG_TBL + 16, system.config.imsic_base_pa)
            self.w32(OFF_MSI_CFG_TBL + 16 + 8, IRQ_PQ)
            self.w32(OFF_MSI_CFG_TBL + 16 + 12, 0)
            system.sink.request_irq(IRQ_PQ, self._on_pq)
        self.ddt = self.alloc()
        self.w64(OFF_DDTP, (self.ddt >> 12) << 10 | MODE_1LVL)
        self.on_group: Callable[[Group], int | None] = lambda group: PRG_SUCCESS
        self.requests: Group = []  # every page request seen, in order
        self._open: dict[tuple[int, int], Group] = {}

    # -- memory and registers --------------------------------------------------------------
    def alloc(self) -> int:
        pa = self._next
        self._next += PAGE
        return pa

    def w32(self, off: int, v: int) -> None:
        self.bus.write32(self.base + off, v)

    def w64(self, off: int, v: int) -> None:
        self.bus.write64(self.base + off, v)

    def r32(self, off: int) -> int:
        return self.bus.read32(self.base + off)

    def _queue(self, off_b: int, off_csr: int, csr: int) -> int:
        pa = self.alloc()
        self.w64(off_b, (pa >> 12) << 10 | (QLOG2 - 1))
        self.w32(off_csr, csr)
        return pa

    # -- contexts and page tables ------------------------------------------------------------
    def device(self, rid: int, *, en_ats: int = 1, en_pri: int = 1, pasids: bool = False) -> int:
        """A device context (extended format, 1LVL DDT); returns its Sv39 root, or with
        ``pasids`` its PD8 process directory (riscv-iommu: "Device-context fields")."""
        root = self.alloc()
        tc = DC_TC.encode(v=1, en_ats=en_ats, en_pri=en_pri, pdtv=int(pasids))
        fsc = DC_FSC.encode(mode=PD8 if pasids else SV39, ppn=root >> 12)
        dc = self.ddt + (rid & 0x3F) * 64
        self.bus.write64(dc, tc)
        self.bus.write64(dc + 24, fsc)
        return root

    def process(self, pdt: int, pasid: int) -> int:
        """A process context for ``pasid`` in a PD8 directory; returns its Sv39 root."""
        root = self.alloc()
        self.bus.write64(pdt + pasid * 16, PC_TA.encode(v=1, ens=1))
        self.bus.write64(pdt + pasid * 16 + 8, PC_FSC.encode(mode=SV39, ppn=root >> 12))
        return root

    def _pte(self, root: int, va: int, level: int = 0) -> int:
        """Address of the Sv39 PTE for ``va`` at ``level``, allocating tables above it."""
        a = root
        for i in range(2, level, -1):
            pa = a + (va >> (12 + 9 * i) & 0x1FF) * 8
            pte = self.bus.read64(pa)
            if not pte & 1:
                pte = PTE.encode(v=1, ppn=self.alloc() >> 12)
                self.bus.write64(pa, pte)
            a = PTE.decode(pte)["ppn"] << 12
        return a + (va >> (12 + 9 * level) & 0x1FF) * 8

    def map(self, root: int, va: int, pa: int, *, w: int = 1, level: int = 0) -> None:
        self.bus.write64(
            self._pte(root, va, level), PTE.encode(v=1, r=1, w=w, u=1, a=1, d=1, ppn=pa >> 12)
        )

    # -- command queue -----------------------------------------------------------------------
    def submit(self, *cmds: int) -> None:
        """Write commands at cqt and ring the doorbell (riscv-iommu: "Command-Queue (CQ)")."""
        tail = self.r32(OFF_CQT)
        for cmd in cmds:
            self.bus.write64(self.cq + tail * 16, cmd & (1 << 64) - 1)
            self.bus.write64(self.cq + tail * 16 + 8, cmd >> 64)
            tail = (tail + 1) % (1 << QLOG2)
        self.w32(OFF_CQT, tail)

    @staticmethod
    def ats_inval(rid: int, start: int, size: int, pasid: int | None = None) -> int:
        return CMD_ATS.encode(
            opcode=4,
            func3=0,
            rid=rid,
            pv=int(pasid is not None),
            pid=pasid or 0,
            payload=inval_payload(start, size),
        )

    @staticmethod
    def prgr(rid: int, prgi: int, code: int, pasid: int | None = None) -> int:
        return CMD_ATS.encode(
            opcode=4,
            func3=1,
            rid=rid,
            pv=int(pasid is not None),
            pid=pasid or 0,
            payload=prgi << 32 | code << 44,
        )

    @staticmethod
    def iofence(addr: int, data: int) -> int:
        return CMD_IOFENCE.encode(opcode=2, func3=0, av=1, addr=addr >> 2, data=data)

    # -- the page-request handler ----------------------------------------------------------
    def _on_pq(self) -> None:
        # Clear ipsr.pip first (RW1C): a record written from now on raises a new MSI.
        self.w32(OFF_IPSR, IPSR_PIP)
        head, tail = self.r32(OFF_PQH), self.r32(OFF_PQT)
        cmds = []
        while head != tail:
            raw = int.from_bytes(self.bus.read(self.pq + head * 16, 16), "little")
            rec = PQ_RECORD.decode(raw)
            req = decode_page_request(rec["payload"])
            self.requests.append((rec, req))
            key = (rec["did"], req.prgi)
            self._open.setdefault(key, []).append((rec, req))
            if req.last:
                code = self.on_group(self._open.pop(key))
                if code is not None:
                    cmds.append(
                        self.prgr(rec["did"], req.prgi, code, rec["pid"] if rec["pv"] else None)
                    )
            head = (head + 1) % (1 << QLOG2)
        self.w32(OFF_PQH, head)
        if cmds:
            self.submit(*cmds)


def machine(**ep: object) -> System:
    cfg: dict[str, object] = dict(ats=True, pri=True)
    cfg.update(ep)
    return System(
        SystemConfig(
            endpoints=(
                EndpointConfig("dev", DEV, pasid_bits=8, **cfg),  # type: ignore[arg-type]
                EndpointConfig("plain", 0x10, pasid_bits=8),
            )
        )
    )


def ats_setup(**ep: object) -> tuple[System, Host, Endpoint, int]:
    """A machine whose ATS/PRI endpoint has a first-stage table (root returned), both
    enabled in config space."""
    system = machine(**ep)
    host = Host(system)
    root = host.device(DEV)
    dev = system.endpoint("dev")
    dev.enable_ats(True)
    dev.enable_pri(True)
    return system, host, dev, root


def fill(system: System, pa: int, byte: int, n: int = PAGE) -> None:
    system.ram.write(pa, bytes([byte]) * n)


def spy(system: System) -> list[Request]:
    """Record every request the endpoints present through ``iommu.translate``."""
    seen: list[Request] = []
    real = system.iommu.translate

    def translate(req: Request) -> Response:
        seen.append(req)
        return real(req)

    system.iommu.translate = translate  # type: ignore[method-assign]
    return seen


# ------------------------------------------------------------------ the ATC in the DMA path
def test_atc_misses_then_hits() -> None:
    """riscv-iommu: "PCIe ATS translation request handling": the first access to each page
    sends a Translation Request; the ATC answers the next ones, and every access is a
    Translated request."""
    system, host, dev, root = ats_setup()
    for k in range(2):
        host.map(root, 0x10_0000 + k * PAGE, DATA + k * PAGE)
        fill(system, DATA + k * PAGE, 0xA0 + k)
    res = dev.dma_read(0x10_0800, PAGE)
    assert res.ok and res.data == b"\xa0" * 0x800 + b"\xa1" * 0x800
    s = dev.stats
    assert (s.atc_misses, s.atc_hits, s.ats_requests, s.translated) == (2, 0, 2, 2)
    assert len(dev.atc) == 2
    assert dev.dma_read(0x10_0000, 2 * PAGE).ok
    assert (s.atc_misses, s.atc_hits, s.ats_requests, s.translated) == (2, 2, 2, 4)
    # Two legs (request and completion) per Translation Request.
    assert system.ledger.counts["ats"] == 4
    assert system.ledger.ns["ats"] == 4 * system.costs.pcie_msg_ns
    assert s.page_requests == 0


def test_write_needs_a_writable_entry() -> None:
    """A read fills the entry with the page's permissions; a write hits it when W was
    granted (NW = 0 is only needed when the entry lacks W)."""
    system, host, dev, root = ats_setup()
    host.map(root, 0x10_0000, DATA)
    host.map(root, 0x20_0000, DATA + PAGE, w=0)
    assert dev.dma_read(0x10_0000, 8).ok
    assert dev.dma_write(0x10_0000, b"x" * 8).ok
    assert (dev.stats.atc_misses, dev.stats.atc_hits) == (1, 1)
    assert system.ram.read(DATA, 8) == b"x" * 8
    # Read-only page: the read is cached with R only; the write misses, asks again (NW = 0)
    # and is refused without a cause. With PRI disabled the DMA aborts.
    dev.enable_pri(False)
    assert dev.dma_read(0x20_0000, 8).ok
    res = dev.dma_write(0x20_0000, b"y" * 8)
    assert (res.done, res.abort, res.fault, res.fault_iova) == (0, "ats_denied", None, 0x20_0000)
    assert dev.stats.atc_misses == 3


def test_translated_request_uses_the_atc_address() -> None:
    """The ATC's address is used as is: a page-table change without ATS.INVAL leaves the
    device on the old page (the stale translation a missing invalidation shows)."""
    system, host, dev, root = ats_setup()
    host.map(root, 0x10_0000, DATA)
    fill(system, DATA, 0x11)
    fill(system, DATA + PAGE, 0x22)
    seen = spy(system)
    assert dev.dma_read(0x10_0010, 4).data == b"\x11" * 4
    assert [(r.at, r.iova, r.pid_valid) for r in seen] == [
        (2, 0x10_0000, False),
        (1, DATA + 0x10, False),
    ]
    host.map(root, 0x10_0000, DATA + PAGE)  # no invalidation
    seen.clear()
    assert dev.dma_read(0x10_0010, 4).data == b"\x11" * 4
    assert [(r.at, r.iova) for r in seen] == [(1, DATA + 0x10)]


def test_superpage_completion_is_cached_per_4k_page() -> None:
    """riscv-iommu: "PCIe ATS translation request handling": a 2 MiB translation comes back
    S-encoded; the ATC caches the page that was asked for at its offset in the range."""
    system, host, dev, root = ats_setup()
    host.map(root, 0x4000_0000, 0x8020_0000, level=1)
    fill(system, 0x8020_0000 + 0x5_3000, 0x5A)
    seen = spy(system)
    assert dev.dma_read(0x4005_3008, 8).data == b"\x5a" * 8
    assert seen[1].at == 1 and seen[1].iova == 0x8025_3008
    assert dev.atc.peek(-1, 0x4005_3) == (0x8025_3000, True, True)


def test_ats_capable_but_disabled_uses_untranslated_requests() -> None:
    _system, host, dev, root = ats_setup()
    dev.enable_pri(False)
    dev.enable_ats(False)
    host.map(root, 0x10_0000, DATA)
    assert dev.dma_read(0x10_0000, 8).ok
    assert (dev.stats.ats_requests, dev.stats.translated, len(dev.atc)) == (0, 0, 0)


def test_unsupported_request_aborts_with_its_cause() -> None:
    """riscv-iommu: "Process to translate an IOVA" step 7: with DC.tc.EN_ATS = 0 the
    Translation Request is answered UR, cause 260; the DMA aborts with it."""
    system = machine()
    host = Host(system)
    host.device(DEV, en_ats=0, en_pri=0)
    dev = system.endpoint("dev")
    dev.enable_ats(True)
    res = dev.dma_write(0x10_0000, b"z" * 16)
    assert (res.done, res.status, res.fault.cause) == (0, CPL_UR, TTYP_DISALLOWED)
    assert dev.stats.faults == 1


def test_not_present_without_pri_aborts_with_the_page_fault_cause() -> None:
    """A Success completion with R = W = 0 carries the page fault's cause (no fault record:
    riscv-iommu: "PCIe ATS translation request handling")."""
    _system, _host, dev, _root = ats_setup()
    dev.enable_pri(False)
    r, w = dev.dma_read(0x10_0000, 8), dev.dma_write(0x10_0000, b"1")
    assert (r.abort, r.fault.cause) == ("ats_denied", READ_PAGE_FAULT)
    assert (w.abort, w.fault.cause) == ("ats_denied", WRITE_PAGE_FAULT)
    assert dev.stats.page_requests == 0


# ------------------------------------------------------------------ page requests
def test_page_request_success_then_retry_succeeds() -> None:
    """riscv-iommu: "PCIe ATS Page Request handling": the not-present page is requested,
    software maps it and answers Success (ATS.PRGR), the device asks again and completes."""
    system, host, dev, root = ats_setup()
    fill(system, DATA, 0x77)

    def handler(group: Group) -> int:
        for _, req in group:
            host.map(root, req.addr, DATA)
        return PRG_SUCCESS

    host.on_group = handler
    res = dev.dma_read(0x30_0100, 16)
    assert res.ok and res.data == b"\x77" * 16
    ((rec, req),) = host.requests
    assert (rec["did"], rec["pv"], req.addr, req.read, req.write, req.last) == (
        DEV,
        0,
        0x30_0000,
        True,
        False,
        True,
    )
    s = dev.stats
    assert (s.prgs, s.page_requests, s.prg_success, s.ats_requests) == (1, 1, 1, 2)
    # The wait covers at least the interrupt latency before the handler ran.
    assert s.prg_wait_ns >= system.costs.irq_latency_ns
    assert system.clock.now >= s.prg_wait_ns


def test_multi_page_group_sets_last_on_the_final_request_only() -> None:
    """The group asks for the faulting page and the following pieces the ATC cannot serve
    (up to prg_max_pages), all with one PRGI; L only on the last (PCIe Page Request)."""
    _system, host, dev, root = ats_setup(prg_max_pages=3)
    host.map(root, 0x50_1000, DATA + PAGE)
    assert dev.dma_read(0x50_1000, 8).ok  # page 1 is in the ATC

    def handler(group: Group) -> int:
        for _, req in group:
            host.map(root, req.addr, DATA)
        return PRG_SUCCESS

    host.on_group = handler
    res = dev.dma_write(0x50_0000, b"w" * (5 * PAGE))
    assert res.ok
    groups = [
        [(req.addr, req.last, req.write) for _, req in host.requests[:3]],
        [(req.addr, req.last, req.write) for _, req in host.requests[3:]],
    ]
    assert groups == [
        [(0x50_0000, False, True), (0x50_2000, False, True), (0x50_3000, True, True)],
        [(0x50_4000, True, True)],
    ]
    assert len({req.prgi for _, req in host.requests[:3]}) == 1
    assert host.requests[3][1].prgi != host.requests[0][1].prgi
    assert (dev.stats.prgs, dev.stats.page_requests) == (2, 4)


def test_invalid_response_aborts_after_the_earlier_pieces() -> None:
    """An Invalid Request response ends the DMA at the faulting piece; the pieces before it
    reached memory."""
    system, host, dev, root = ats_setup(prg_max_pages=1)
    for k in range(2):
        host.map(root, 0x60_0000 + k * PAGE, DATA + k * PAGE)
    host.on_group = lambda group: PRG_INVALID_REQUEST
    res = dev.dma_write(0x60_0800, b"q" * (2 * PAGE))
    assert (res.done, res.abort, res.fault_iova) == (0x1800, "prg_invalid", 0x60_2000)
    assert system.ram.read(DATA + 0x800, 0x1800) == b"q" * 0x1800
    assert (dev.stats.prg_invalid, dev.stats.faults) == (1, 1)


def test_invalid_multi_page_group_is_retried_for_the_faulting_page_alone() -> None:
    """Software refuses any group naming the page beyond its mapping. The device asks again
    for the faulting page alone, so the piece it has reached still completes; the DMA stops
    at the refused page."""
    _system, host, dev, root = ats_setup(prg_max_pages=4)
    limit = 0x70_1000  # software will map pages below this only

    def handler(group: Group) -> int:
        if any(req.addr >= limit for _, req in group):
            return PRG_INVALID_REQUEST
        for _, req in group:
            host.map(root, req.addr, DATA)
        return PRG_SUCCESS

    host.on_group = handler
    res = dev.dma_read(0x70_0000, 2 * PAGE)
    assert (res.done, res.abort, res.fault_iova) == (PAGE, "prg_invalid", limit)
    groups: list[list[int]] = [[]]
    for _, req in host.requests:
        groups[-1].append(req.addr)
        if req.last:
            groups.append([])
    assert groups[:-1] == [[0x70_0000, limit], [0x70_0000], [limit]]
    assert (dev.stats.prg_invalid, dev.stats.prg_success) == (2, 1)


def test_success_without_mapping_gives_up_after_two_rounds() -> None:
    _system, host, dev, _root = ats_setup()
    host.on_group = lambda group: PRG_SUCCESS  # but maps nothing
    res = dev.dma_read(0x80_0000, 8)
    assert res.abort == "prg_retries"
    assert (dev.stats.prgs, dev.stats.ats_requests) == (2, 3)


def test_timeout_when_nobody_answers_then_the_late_response_is_unexpected() -> None:
    """No handler: the device waits prg_timeout_ns of virtual time and aborts. A response that
    comes later names no outstanding group: PCIe "Unexpected PRG Index"."""
    system = machine(prg_timeout_ns=1_000_000)
    host = Host(system, pq_irq=False)
    host.device(DEV)
    dev = system.endpoint("dev")
    dev.enable_ats(True)
    dev.enable_pri(True)
    t0 = system.clock.now
    res = dev.dma_read(0x90_0000, 8)
    assert res.abort == "prg_timeout"
    assert dev.stats.prg_timeouts == 1
    assert dev.stats.prg_wait_ns == 1_000_000
    assert system.clock.now - t0 >= 1_000_000
    raw = int.from_bytes(system.bus.read(host.pq, 16), "little")
    prgi = decode_page_request(PQ_RECORD.decode(raw)["payload"]).prgi
    host.submit(host.prgr(DEV, prgi, PRG_SUCCESS))
    assert dev.stats.unexpected_prgr == 1
    assert dev.stats.prg_success == 0


def test_unexpected_prgi_is_counted_and_ignored() -> None:
    system, host, dev, _root = ats_setup()
    host.submit(host.prgr(DEV, 0x123, PRG_SUCCESS), host.prgr(0x33, 1, PRG_SUCCESS))
    assert dev.stats.unexpected_prgr == 1
    assert [m.kind for m in system.messages] == ["prgr", "prgr"]  # both kept


def test_response_failure_stops_pri_until_reenabled() -> None:
    """riscv-iommu: "PCIe ATS Page Request handling": with the PQ off the IOMMU itself answers
    Response Failure. PCIe: the device's page request interface stops; further faults abort
    without page requests until software enables PRI again."""
    system = machine()
    host = Host(system, pq=False, pq_irq=False)
    host.device(DEV)
    dev = system.endpoint("dev")
    dev.enable_ats(True)
    dev.enable_pri(True)
    res = dev.dma_read(0xA0_0000, 8)
    assert res.abort == "prg_failure"
    assert dev.pri_stopped and dev.stats.prg_failure == 1
    # Answered at once: the wait is the request's and the response's legs.
    assert dev.stats.prg_wait_ns == 2 * system.costs.pcie_msg_ns
    r = dev.dma_read(0xA0_0000, 8)
    assert (r.abort, r.fault.cause) == ("ats_denied", READ_PAGE_FAULT)
    assert dev.stats.page_requests == 1
    dev.enable_pri(True)
    assert not dev.pri_stopped
    assert dev.dma_read(0xA0_0000, 8).abort == "prg_failure"
    assert dev.stats.page_requests == 2


def test_en_pri_clear_is_invalid_request_from_the_iommu() -> None:
    """riscv-iommu: "PCIe ATS Page Request handling": EN_PRI = 0 -> the IOMMU answers
    Invalid Request (cause 260) itself."""
    system = machine()
    host = Host(system)
    host.device(DEV, en_pri=0)
    dev = system.endpoint("dev")
    dev.enable_ats(True)
    dev.enable_pri(True)
    assert dev.dma_read(0xB0_0000, 8).abort == "prg_invalid"
    assert host.requests == []


def test_page_requests_with_pasid_carry_it() -> None:
    system = machine()
    host = Host(system)
    pdt = host.device(DEV, pasids=True)
    root = host.process(pdt, 5)
    dev = system.endpoint("dev")
    dev.enable_ats(True)
    dev.enable_pri(True)

    def handler(group: Group) -> int:
        for _, req in group:
            host.map(root, req.addr, DATA)
        return PRG_SUCCESS

    host.on_group = handler
    assert dev.dma_read(0xC0_0000, 8, pasid=5).ok
    ((rec, _),) = host.requests
    assert (rec["pv"], rec["pid"]) == (1, 5)
    assert dev.atc.peek(5, 0xC0_0) is not None and dev.atc.peek(-1, 0xC0_0) is None


# ------------------------------------------------------------------ ATS invalidation
def test_ats_inval_drops_the_range_and_the_fence_completes() -> None:
    """riscv-iommu: "IOMMU PCIe ATS commands": ATS.INVAL sends an Invalidate Request; the
    device drops the entries and completes, so the IOFENCE.C behind it completes too."""
    system, host, dev, root = ats_setup()
    for va in (0x10_0000, 0x10_1000, 0x40_0000):
        host.map(root, va, DATA)
    for va in (0x10_0000, 0x10_1000, 0x40_0000):
        assert dev.dma_read(va, 8).ok
    fence = host.alloc()
    before = dict(system.ledger.counts)
    host.submit(host.ats_inval(DEV, 0x10_0000, 2 * PAGE), host.iofence(fence, 0xF00D))
    assert host.r32(OFF_CQH) == host.r32(OFF_CQT)
    assert system.bus.read32(fence) == 0xF00D
    assert system.iommu.invalidations_outstanding == 0
    assert (dev.stats.ats_invals, dev.stats.atc_dropped) == (1, 2)
    assert dev.atc.peek(-1, 0x40_0) is not None and len(dev.atc) == 1
    # Two legs and the device's invalidation work.
    assert system.ledger.counts["ats"] - before["ats"] == 3
    assert [m.kind for m in system.messages] == ["ats_inval_req"]
    # The next access asks again and sees the new mapping.
    host.map(root, 0x10_0000, DATA + PAGE)
    fill(system, DATA + PAGE, 0x42)
    assert dev.dma_read(0x10_0000, 4).data == b"\x42" * 4


def test_ats_inval_with_pasid_drops_that_pasid_only_without_drops_all() -> None:
    system = machine()
    host = Host(system)
    pdt = host.device(DEV, pasids=True)
    dev = system.endpoint("dev")
    dev.enable_ats(True)
    for pasid in (1, 2):
        host.map(host.process(pdt, pasid), 0x10_0000, DATA)
        assert dev.dma_read(0x10_0000, 8, pasid=pasid).ok
    host.submit(host.ats_inval(DEV, 0x10_0000, PAGE, pasid=1))
    assert dev.atc.peek(1, 0x10_0) is None and dev.atc.peek(2, 0x10_0) is not None
    assert dev.dma_read(0x10_0000, 8, pasid=1).ok
    # Without a PASID: every PASID's entries for the range go (over-invalidation).
    host.submit(host.ats_inval(DEV, 0, 1 << 64))
    assert len(dev.atc) == 0 and dev.stats.atc_dropped == 3


def test_late_invalidation_serves_stale_entries_and_stalls_the_fence() -> None:
    """A slow device (ats_inval_delay_ns): until it completes, its ATC still answers from the
    old entry and the IOFENCE.C behind the ATS.INVAL waits; afterwards the fence completes
    and the device sees the new mapping."""
    system, host, dev, root = ats_setup(ats_inval_delay_ns=50_000)
    host.map(root, 0x10_0000, DATA)
    fill(system, DATA, 0x01)
    fill(system, DATA + PAGE, 0x02)
    assert dev.dma_read(0x10_0000, 4).data == b"\x01" * 4
    host.map(root, 0x10_0000, DATA + PAGE)  # the driver remaps, then invalidates
    fence = host.alloc()
    host.submit(host.ats_inval(DEV, 0x10_0000, PAGE), host.iofence(fence, 0xBEEF))
    assert host.r32(OFF_CQH) == 1  # stalled at the IOFENCE.C
    assert system.iommu.invalidations_outstanding == 1
    assert system.bus.read32(fence) == 0
    assert dev.dma_read(0x10_0000, 4).data == b"\x01" * 4  # stale
    system.run_for(50_000)
    assert host.r32(OFF_CQH) == 2
    assert system.bus.read32(fence) == 0xBEEF
    assert system.iommu.invalidations_outstanding == 0
    assert dev.dma_read(0x10_0000, 4).data == b"\x02" * 4
    assert system.ledger.counts["command"] >= 2


def test_inval_for_an_unknown_rid_is_only_recorded() -> None:
    system, host, dev, _root = ats_setup()
    host.submit(host.ats_inval(0x3F, 0, PAGE), host.iofence(host.alloc(), 1))
    assert [m.kind for m in system.messages] == ["ats_inval_req"]
    assert system.iommu.invalidations_outstanding == 1  # nobody completes it
    assert host.r32(OFF_CQH) == 1
    assert dev.stats.ats_invals == 0


def test_inval_to_a_device_without_ats_gets_no_completion() -> None:
    system, host, _dev, _root = ats_setup()
    host.submit(host.ats_inval(0x10, 0, PAGE))
    assert system.iommu.invalidations_outstanding == 1


# ------------------------------------------------------------------ cache vs. no cache
@settings(max_examples=25, deadline=None)
@given(
    mapped=st.sets(st.integers(0, 7)),
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 8 * PAGE - 1), st.integers(1, 3 * PAGE)),
        min_size=1,
        max_size=12,
    ),
)
def test_atc_changes_no_result_with_correct_software(
    mapped: set[int], ops: list[tuple[bool, int, int]]
) -> None:
    """With page tables that do not change, a 2-entry ATC gives the same DMA results as
    untranslated requests (STYLE: cache-vs-no-cache equivalence)."""
    system = System(
        SystemConfig(
            endpoints=(
                EndpointConfig("ats", DEV, ats=True, atc_entries=2),
                EndpointConfig("plain", 0x10),
            )
        )
    )
    host = Host(system)
    root = host.device(DEV)
    dc_plain = host.ddt + 0x10 * 64
    system.bus.write64(dc_plain, DC_TC.encode(v=1))
    system.bus.write64(dc_plain + 24, DC_FSC.encode(mode=SV39, ppn=root >> 12))
    base = 0x20_0000
    for k in mapped:
        host.map(root, base + k * PAGE, DATA + k * PAGE)
    ats, plain = system.endpoint("ats"), system.endpoint("plain")
    ats.enable_ats(True)
    for write, off, size in ops:
        size = min(size, 8 * PAGE - off)
        if write:
            data = bytes((off + i) & 0xFF for i in range(size))
            a, b = ats.dma_write(base + off, data), plain.dma_write(base + off, data)
        else:
            a, b = ats.dma_read(base + off, size), plain.dma_read(base + off, size)
        # The same bytes, the same stop and the same fault cause; the fault records differ
        # only in what the request was (TTYP: an ATS Translation Request or an untranslated
        # access) and the completions in who gave up (the ATS device, or the IOMMU with UR).
        assert (a.done, a.data, a.fault_iova, a.ok) == (b.done, b.data, b.fault_iova, b.ok)
        assert (a.fault and a.fault.cause) == (b.fault and b.fault.cause)
    assert len(ats.atc) <= 2


# ------------------------------------------------------------------ wait_for
def test_wait_for_runs_events_until_the_predicate_holds() -> None:
    system = System()
    hits: list[int] = []
    for t in (100, 200, 300):
        system.clock.call_at(t, lambda t=t: hits.append(t))
    assert system.wait_for(lambda: len(hits) == 2, 1_000)
    assert system.clock.now == 200 and hits == [100, 200]
    assert not system.wait_for(lambda: len(hits) == 5, 1_000)
    assert system.clock.now == 1_200 and hits == [100, 200, 300]


def test_wait_for_from_a_clock_callback_is_a_model_error() -> None:
    system = System()
    system.clock.call_at(10, lambda: system.wait_for(lambda: False, 100))
    with pytest.raises(ModelError):
        system.run_for(20)


# ------------------------------------------------------------------ configuration
BAD_ENDPOINTS = [
    (dict(pri=True), "endpoint 'e' pri must be False when ats is False, not True"),
    (dict(ats=True, atc_entries=0), "endpoint 'e' atc_entries must be at least 1, not 0"),
    (dict(ats=True, prg_max_pages=0), "endpoint 'e' prg_max_pages must be in [1, 512], not 0"),
    (dict(ats=True, prg_timeout_ns=0), "endpoint 'e' prg_timeout_ns must be positive, not 0"),
    (
        dict(ats=True, ats_inval_delay_ns=-1),
        "endpoint 'e' ats_inval_delay_ns must be non-negative, not -1",
    ),
]


@pytest.mark.parametrize(("kw", "message"), BAD_ENDPOINTS)
def test_bad_ats_configs_are_einval(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        SystemConfig(endpoints=(EndpointConfig("e", 1, **kw),))  # type: ignore[arg-type]
    assert message in str(e.value)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        Endpoint(System(), "e", 1, **kw)  # type: ignore[arg-type]


def test_config_space_enables() -> None:
    system, host, dev, root = ats_setup()
    plain = system.endpoint("plain")
    assert (plain.ats_capable, plain.pri_capable) == (False, False)
    with pytest.raises(InvalidArgument, match="plain: ATS must be supported") as e:
        plain.enable_ats(True)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(InvalidArgument, match="plain: PRI must be supported"):
        plain.enable_pri(False)
    with pytest.raises(InvalidArgument, match="dev: PRI must be disabled before ATS"):
        dev.enable_ats(False)
    assert dev.ats_enabled and dev.pri_enabled
    dev.enable_pri(False)
    host.map(root, 0x10_0000, DATA)
    assert dev.dma_read(0x10_0000, 8).ok and len(dev.atc) == 1
    dev.enable_ats(False)
    assert not dev.ats_enabled and len(dev.atc) == 0
    with pytest.raises(InvalidArgument, match="dev: ATS must be enabled before PRI"):
        dev.enable_pri(True)
    fresh = machine().endpoint("dev")
    assert (fresh.ats_capable, fresh.pri_capable, fresh.ats_enabled, fresh.pri_enabled) == (
        True,
        True,
        False,
        False,
    )
    assert isinstance(fresh.atc, Atc) and fresh.atc.capacity == 64


def test_costs_have_ats_defaults() -> None:
    costs = CostModel()
    assert (costs.pcie_msg_ns, costs.atc_inval_ns) == (250, 500)


def test_prg_response_failure_code_via_the_command_queue() -> None:
    """Software may answer Response Failure itself (ATS.PRGR code 0xF)."""
    _system, host, dev, _root = ats_setup()
    host.on_group = lambda group: PRG_RESPONSE_FAILURE
    assert dev.dma_read(0xD0_0000, 8).abort == "prg_failure"
    assert dev.pri_stopped
