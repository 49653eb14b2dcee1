"""Hardware performance monitor registers and counting.

riscv-iommu: "Performance-monitoring counter overflow status (iocountovf)", "... inhibits
(iocountinh)", "... cycles counter (iohpmcycles)", "... event counters (iohpmctr1-31)",
"... event selectors (iohpmevt1-31)"; FORMAT.md 6.5 and the HPM rows of section 8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iommusim.bits.riscv.queues import CMD_IODIR
from iommusim.bits.riscv.regs import IPSR_PMIP, MODE_NAMES, cap
from iommusim.bits.riscv.structures import DC_FSC, DC_IOHGATP, DC_TA, PC_FSC
from iommusim.errors import ModelError
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.hw.riscv.regs import Registers
from iommusim.mem import SparseMemory
from iommusim.sim import VirtualClock
from testsupport.fakehost import FakeHost
from testsupport.vectors import VECTORS

OVF, INH, CYC = 88, 92, 96


def ctr(n: int) -> int:
    return 104 + 8 * (n - 1)


def evt(n: int) -> int:
    return 352 + 8 * (n - 1)


def make(hpmctr_bits: int = 40) -> tuple[Registers, FakeHost]:
    p = PRESETS["full"].with_(num_hpm=4, hpmctr_bits=hpmctr_bits, eventid_limit=8)
    host = FakeHost()
    regs = Registers(p, host)
    regs.write(CYC, 8, 1 << 63)
    for n in range(1, 4):
        regs.write(evt(n), 8, 0)
    regs.write(INH, 4, 0)
    return regs, host


def selector(
    event_id: int,
    *,
    did: int | None = None,
    pid: int | None = None,
    dmask: bool = False,
    idt: bool = False,
) -> int:
    value = event_id | int(dmask) << 15 | int(idt) << 62
    if did is not None:
        value |= did << 36 | 1 << 61
    if pid is not None:
        value |= pid << 16 | 1 << 60
    return value


def count(regs: Registers, event_id: int, did: int = 0, pid: int | None = None) -> None:
    regs.hpm_count(event_id, did, pid is not None, pid or 0, False, 0, False, 0)


def test_widths_and_absent_counters() -> None:
    """FORMAT.md 6.5: iohpmctrN hpmctr_bits wide; N >= num_hpm read 0; iocountinh keeps bits
    0..num_hpm-1."""
    regs, _ = make()
    regs.write(ctr(1), 8, 2**64 - 1)
    assert regs.read(ctr(1), 8) == 2**40 - 1
    regs.write(ctr(4), 8, 5)
    regs.write(evt(4), 8, 1)
    assert regs.read(ctr(4), 8) == regs.read(evt(4), 8) == 0
    regs.write(INH, 4, 0xFFFF_FFFF)
    assert regs.read(INH, 4) == 0xF
    regs.write(OVF, 4, 0xFFFF_FFFF)
    assert regs.read(OVF, 4) == 1  # RO shadow of the OF bits (iohpmcycles.OF set at init)


def test_hpm_absent_reads_zero() -> None:
    """riscv-iommu: "Register layout": HPM registers optional if capabilities.HPM == 0."""
    p = RiscvIommuParams(capabilities=PRESETS["full"].capabilities & ~(1 << cap.HPM))
    regs = Registers(p, FakeHost())
    for off in (OVF, INH, CYC, ctr(1), evt(1)):
        regs.write(off, 8 if off >= CYC else 4, 0xFFFF)
        assert regs.read(off, 8 if off >= CYC else 4) == 0
    regs.write(760, 8, 0xFFFF)
    assert regs.read(760, 8) == 0xF0FF  # pmiv reads 0


def test_eventid_above_limit_keeps_eventid() -> None:
    """riscv-iommu: "iohpmevt1-31": eventID WARL; FORMAT.md 6.5: other fields written."""
    regs, _ = make()
    regs.write(evt(1), 8, selector(2, did=0x42))
    regs.write(evt(1), 8, selector(9, did=0x43))
    assert regs.read(evt(1), 8) == selector(2, did=0x43)


def test_counts_selected_event() -> None:
    """riscv-iommu: "iohpmevt1-31": the counter increments for its eventID, not others."""
    regs, _ = make()
    regs.write(evt(1), 8, selector(1))
    regs.write(evt(2), 8, selector(3))
    regs.write(ctr(1), 8, 10)
    for _ in range(3):
        count(regs, 1)
    count(regs, 2)
    assert regs.read(ctr(1), 8) == 13
    assert regs.read(ctr(2), 8) == 0


def test_did_filter_with_dmask() -> None:
    """riscv-iommu: "iohpmevt1-31": DMASK masks DID_GSCID bits up to the first low-order 0."""
    regs, _ = make()
    regs.write(evt(1), 8, selector(1, did=0x7A07, dmask=True))  # 0x7a00..0x7a0f
    regs.write(evt(2), 8, selector(1, did=0x7A07))
    for did in (0x7A06, 0x7A0F, 0x7A00, 0x7A10, 0x609A, 0x7A07):
        count(regs, 1, did=did)
    assert regs.read(ctr(1), 8) == 4
    assert regs.read(ctr(2), 8) == 1


def test_pid_filter_requires_valid_process_id() -> None:
    """riscv-iommu: filtering options, IDT 0 / PV_PSCV 1: "If the transaction has a valid
    process_id, counter increments if process_id matches"."""
    regs, _ = make()
    regs.write(evt(1), 8, selector(1, pid=6))
    regs.write(evt(2), 8, selector(1, did=5, pid=6))
    count(regs, 1, did=5, pid=6)
    count(regs, 1, did=5, pid=7)
    count(regs, 1, did=5)
    count(regs, 1, did=4, pid=6)
    assert regs.read(ctr(1), 8) == 2
    assert regs.read(ctr(2), 8) == 1


def test_idt_unsupported_does_not_count() -> None:
    """riscv-iommu: "When the programmed IDT setting is not supported for an event then the
    associated counter does not increment" (events 1-3 support IDT = 0 only)."""
    regs, _ = make()
    regs.write(evt(1), 8, selector(1, did=3, idt=True))
    regs.write(evt(2), 8, selector(4, did=3, idt=True))
    regs.hpm_count(1, 0, False, 0, True, 3, False, 0)
    regs.hpm_count(4, 0, False, 0, True, 3, False, 0)
    regs.hpm_count(4, 0, False, 0, False, 3, False, 0)  # GSCID not valid
    assert regs.read(ctr(1), 8) == 0
    assert regs.read(ctr(2), 8) == 1


def test_inhibit() -> None:
    """riscv-iommu: "iocountinh": bit X inhibits iohpmctrX, bit 0 iohpmcycles."""
    regs, _ = make()
    regs.write(evt(1), 8, selector(1))
    regs.write(evt(2), 8, selector(1))
    regs.write(INH, 4, 0b100)
    count(regs, 1)
    assert (regs.read(ctr(1), 8), regs.read(ctr(2), 8)) == (1, 0)
    regs.write(CYC, 8, 0)
    regs.write(INH, 4, 1)
    regs.advance_cycles(5)
    assert regs.read(CYC, 8) == 0
    regs.write(INH, 4, 0)
    regs.advance_cycles(5)
    assert regs.read(CYC, 8) == 5


def test_overflow_sets_of_and_pmip_on_edge_only() -> None:
    """riscv-iommu: "iohpmevt1-31": OF set on unsigned overflow; pmip only if OF was 0;
    iocountovf mirrors OF."""
    regs, host = make()
    regs.write(760, 8, 0x0200)  # pmiv = 2
    regs.write(768 + 32, 8, 0xF000)
    regs.write(776 + 32, 4, 0x77)
    regs.write(evt(1), 8, selector(1))
    regs.write(ctr(1), 8, 2**40 - 2)
    count(regs, 1)
    assert regs.read(OVF, 4) == 1
    count(regs, 1)
    assert regs.read(ctr(1), 8) == 0
    assert regs.read(evt(1), 8) >> 63 == 1
    assert regs.read(OVF, 4) == 0b11
    assert regs.read(84, 4) == IPSR_PMIP
    assert host.msis == [(0xF000, 0x77)]
    regs.write(84, 4, IPSR_PMIP)  # pmip is not a level: stays clear
    regs.write(ctr(1), 8, 2**40 - 1)
    count(regs, 1)  # OF already 1: no interrupt
    assert regs.read(84, 4) == 0
    assert host.msis == [(0xF000, 0x77)]
    regs.write(evt(1) + 4, 4, 0)  # clear OF through the upper half
    assert regs.read(OVF, 4) == 1
    assert regs.read(evt(1), 8) == selector(1)


def test_cycles_overflow() -> None:
    """riscv-iommu: "iohpmcycles": 63-bit counter (no wider than the counters) and OF."""
    regs, host = make(hpmctr_bits=64)
    regs.write(CYC, 8, 2**63 - 3)
    regs.advance_cycles(5)
    assert regs.read(CYC, 8) == 1 << 63 | 2
    assert regs.read(OVF, 4) == 1
    assert regs.read(84, 4) == IPSR_PMIP
    assert len(host.msis) == 1


# -- iohpmcycles on the virtual clock ---------------------------------------------------------


def clocked(
    hz: int = 1_000_000_000, bits: int = 64
) -> tuple[RiscvIommu, VirtualClock, SparseMemory]:
    """An IOMMU on a virtual clock with iohpmcycles cleared (OF = 0) and pmip routed to MSI
    vector 2 (address 0x9000, data 0x42)."""
    clock = VirtualClock()
    ram = SparseMemory()
    p = PRESETS["full"].with_(num_hpm=4, hpmctr_bits=bits, clock_hz=hz)
    iommu = RiscvIommu(ram, p, clock=clock)
    iommu.write_register(760, 8, 0x0200)  # pmiv = 2
    iommu.write_register(768 + 32, 8, 0x9000)
    iommu.write_register(776 + 32, 4, 0x42)
    iommu.write_register(CYC, 8, 0)
    return iommu, clock, ram


def test_cycles_follow_the_clock() -> None:
    """riscv-iommu: "iohpmcycles": "a free running clock cycle counter" -- cycles of the
    IOMMU clock (params.clock_hz) as virtual time passes, without drift."""
    iommu, clock, _ = clocked(hz=300_000_000)
    clock.advance(10)
    assert iommu.read_register(CYC, 8) == 3
    for _ in range(10):
        clock.advance(1)
    assert iommu.read_register(CYC, 8) == 6
    iommu.write_register(CYC, 8, 1000)
    clock.advance(100)
    assert iommu.read_register(CYC, 8) == 1030


def test_cycles_inhibit_on_the_clock() -> None:
    """riscv-iommu: "iocountinh": CY inhibits iohpmcycles; time passed while inhibited is not
    counted, counting resumes when CY is cleared."""
    iommu, clock, _ = clocked()
    clock.advance(5)
    iommu.write_register(INH, 4, 1)
    clock.advance(1000)
    assert iommu.read_register(CYC, 8) == 5
    iommu.write_register(INH, 4, 0)
    clock.advance(7)
    assert iommu.read_register(CYC, 8) == 12


def test_cycles_overflow_interrupt_on_time() -> None:
    """riscv-iommu: "iohpmcycles": on unsigned overflow with OF = 0 the OF bit is set,
    iocountovf.CY mirrors it and pmip is set -- at the cycle of the wrap, with no register
    access (the MSI lands in memory)."""
    iommu, clock, ram = clocked(bits=32)  # iohpmcycles no wider than the 32-bit counters
    iommu.write_register(CYC, 8, 2**32 - 100)
    clock.advance(99)
    assert iommu.regs.ipsr == 0 and ram.read32(0x9000) == 0
    clock.advance(1)
    assert iommu.regs.ipsr == IPSR_PMIP
    assert ram.read32(0x9000) == 0x42
    assert iommu.read_register(CYC, 8) == 1 << 63
    assert iommu.read_register(OVF, 4) == 1
    assert clock.pending == 0  # OF is 1: a later wrap raises nothing, nothing is scheduled
    clock.advance(2**32)
    assert iommu.read_register(CYC, 8) == 1 << 63
    assert iommu.read_register(84, 4) == IPSR_PMIP


def test_cycles_rearm_after_of_cleared_or_inhibit() -> None:
    """riscv-iommu: "iohpmcycles": "the OF bit also functions as a count overflow interrupt
    disable"; a new value with OF = 0 arms the next interrupt, an inhibited counter never
    wraps."""
    iommu, clock, ram = clocked(bits=32)
    iommu.write_register(INH, 4, 1)
    iommu.write_register(CYC, 8, 2**32 - 1)
    assert clock.pending == 0
    clock.advance(10)
    assert iommu.regs.ipsr == 0
    iommu.write_register(INH, 4, 0)
    clock.advance(1)
    assert iommu.regs.ipsr == IPSR_PMIP and ram.read32(0x9000) == 0x42
    iommu.write_register(84, 4, IPSR_PMIP)
    iommu.write_register(CYC, 8, 2**32 - 2)  # OF cleared by software
    clock.run_all()
    assert clock.now == 13 and iommu.regs.ipsr == IPSR_PMIP


def test_tick_without_clock() -> None:
    """Without a clock no time passes (FORMAT.md: "iohpmcycles does not advance") unless the
    user ticks the IOMMU; with a clock, tick is refused."""
    iommu = RiscvIommu(SparseMemory(), PRESETS["full"])
    iommu.write_register(CYC, 8, 0)
    iommu.tick(25)
    assert iommu.read_register(CYC, 8) == 25
    with pytest.raises(ModelError, match="non-negative"):
        iommu.tick(-1)
    clocked_iommu, _, _ = clocked()
    with pytest.raises(ModelError, match="without a clock"):
        clocked_iommu.tick(1)


def test_clock_hz_must_be_positive() -> None:
    with pytest.raises(ModelError, match="clock_hz must be positive, not 0"):
        PRESETS["full"].with_(clock_hz=0)


# -- the conformance vectors of the hpm family (requests stand in for the translation core) --


def _h(x: str | int) -> int:
    return int(x, 16) if isinstance(x, str) else x


_EVENT = {"untranslated": 1, "translated": 2, "ats": 3}


def _vectors() -> list[Path]:
    return sorted((VECTORS / "hpm").glob("*.json"))


@pytest.mark.parametrize("path", _vectors(), ids=lambda p: p.stem)
def test_hpm_vector(path: Path) -> None:
    """FORMAT.md section 10, family ``hpm``: every request translates successfully, so a
    translate step is one event 1/2/3 with the request's device_id and process_id; MSIs are
    observed through memory (byte order per fctl.BE)."""
    vector = json.loads(path.read_text())
    d = vector["params"]
    params = RiscvIommuParams(
        capabilities=_h(d["capabilities"]),
        fctl=_h(d["fctl"]),
        num_hpm=d["num_hpm"],
        hpmctr_bits=d["hpmctr_bits"] or 64,
        eventid_limit=d["eventid_limit"],
        num_vec_bits=d["num_vec_bits"],
        reset_mode=MODE_NAMES[d["reset_mode"]],
        max_mode=MODE_NAMES[d["max_mode"]],
        gxl_writable=d["gxl_writable"],
        fctl_be_writable=d["fctl_be_writable"],
        qosid_mask=_h(d["qosid_mask"]),
    )
    memory: dict[int, int] = {}

    class Host(FakeHost):
        def send_msi(self, addr: int, data: int) -> None:
            raw = data.to_bytes(4, "big" if regs.fctl & 1 else "little")
            for k, byte in enumerate(raw):
                memory[addr + k] = byte

    regs = Registers(params, Host())
    for i, step in enumerate(vector["steps"]):
        op = step["op"]
        if op == "write_reg":
            regs.write(step["offset"], step["size"], _h(step["value"]))
        elif op == "read_reg":
            mask = _h(step.get("mask", (1 << 8 * step["size"]) - 1))
            got = regs.read(step["offset"], step["size"])
            assert (got ^ _h(step["expect"])) & mask == 0, f"step {i}: {step} read {got:#x}"
        elif op == "translate":
            req = step["req"]
            regs.hpm_count(
                _EVENT[req["at"]],
                req["device_id"],
                bool(req["pid_valid"]),
                req["process_id"],
                False,
                0,
                False,
                0,
            )
        elif op == "write_mem":
            data = bytes.fromhex(step["data"])
            for k, byte in enumerate(data):
                memory[_h(step["addr"]) + k] = byte
        elif op == "read_mem":
            expect = bytes.fromhex(step["expect"])
            mask_b = bytes.fromhex(step["mask"]) if "mask" in step else b"\xff" * len(expect)
            got_b = bytes(memory.get(_h(step["addr"]) + k, 0) for k in range(step["size"]))
            assert all((a ^ b) & m == 0 for a, b, m in zip(got_b, expect, mask_b, strict=True)), (
                f"step {i}: {step.get('what')} {got_b.hex()} != {step['expect']}"
            )


# -- events counted by the translation path (riscv-iommu: "Standard Events list") ----------
#
# A walk is one table-entry load: riscv-iommu glossary, "Walk": "A single memory access by the
# IOMMU to load a table entry. Each entry load--leaf or non-leaf--is one walk." The `soc`
# fixture (conftest) has PRESETS["full"]: 7 event counters, a 3-level DDT, extended (64-byte)
# DCs, and DDTC, PDTC and IOTLB enabled.

DID = 0x2A5
IOVA = 0x4000_3000
GPA_DATA = 0x1_0000_0000  # a guest-physical data page outside the identity-mapped gigabyte


def _select(soc: Any, n: int, value: int) -> None:
    soc.set_reg(evt(n), value, 8)


def _ctr(soc: Any, n: int) -> int:
    return int(soc.reg(ctr(n), 8))


def _s1_device(soc: Any, did: int = DID, mode: str = "sv39", pscid: int = 0) -> int:
    """A PDTV = 0 device with a first-stage table mapping IOVA; returns the data PA."""
    root = soc.new_pt(mode)
    soc.write_dc(
        did,
        tc=soc.tc(en_ats=1),
        ta=DC_TA.encode(pscid=pscid),
        fsc=DC_FSC.encode(mode=soc.SATP_MODE[mode], ppn=root >> 12),
    )
    data = soc.DATA_BASE + (did & 0xFF) * soc.PAGE
    soc.map(root, IOVA, data, mode)
    return int(data)


def _g_device(soc: Any, did: int = DID, *, gscid: int = 5, s1: bool = True) -> None:
    """A device with an Sv39x4 G-stage (GSCID ``gscid``; the allocator's gigabyte mapped by one
    gigapage) and, with ``s1``, an Sv39 first stage in guest memory; IOVA reaches GPA_DATA."""
    groot = soc.new_pt("sv39x4")
    soc.identity_gstage(groot)
    soc.map(groot, GPA_DATA, soc.DATA_BASE, "sv39x4")
    fsc = 0
    if s1:
        s1root = soc.new_pt("sv39")  # GPA = SPA inside the identity gigabyte
        soc.map(s1root, IOVA, GPA_DATA)
        fsc = DC_FSC.encode(mode=soc.SATP_MODE["sv39"], ppn=s1root >> 12)
    soc.write_dc(
        did, tc=soc.tc(), fsc=fsc, iohgatp=DC_IOHGATP.encode(mode=8, gscid=gscid, ppn=groot >> 12)
    )


def test_untranslated_requests_count_iotlb_hits_walks_and_faults(soc: Any) -> None:
    """Event 1 "Untranslated requests" counts every untranslated request: served by the IOTLB
    (translate and the translate_pa fast path), by a walk, or faulting."""
    _select(soc, 1, selector(1))
    _select(soc, 2, selector(1, did=DID + 1))  # DID filter (IDT = 0)
    data = _s1_device(soc)
    assert soc.translate(DID, IOVA).pa == data  # walk, IOTLB fill
    assert soc.translate(DID, IOVA + 8).pa == data + 8  # IOTLB hit
    assert soc.iommu.translate_pa(DID, IOVA + 16) == data + 16  # IOTLB hit, fast path
    assert soc.iommu.translate_pa(DID, IOVA + soc.PAGE) < 0  # unmapped: a page fault
    assert not soc.translate(DID, IOVA + soc.PAGE).ok
    assert _ctr(soc, 1) == 5
    assert _ctr(soc, 2) == 0


def test_translated_and_ats_requests_count(soc: Any) -> None:
    """Events 2 "Translated requests" and 3 "ATS Translation requests"; neither counts as an
    untranslated request."""
    _select(soc, 1, selector(1))
    _select(soc, 2, selector(2))
    _select(soc, 3, selector(3))
    _s1_device(soc)
    assert soc.translate(DID, soc.DATA_BASE, at=1).ok
    assert soc.translate(DID, IOVA, at=2).ok
    assert soc.translate(DID, IOVA, at=2).ok
    assert [_ctr(soc, n) for n in (1, 2, 3)] == [0, 1, 2]


def test_tlb_miss_then_hit(soc: Any) -> None:
    """Event 4 "TLB miss" (glossary, TLB: "On a TLB miss, a page table walk is performed"):
    once per translation the IOTLB does not supply; a hit and a translated request (no
    translation, T2GPA = 0) do not count."""
    _select(soc, 1, selector(4))
    _select(soc, 2, selector(7))
    _s1_device(soc)
    assert soc.translate(DID, IOVA).ok
    assert (_ctr(soc, 1), _ctr(soc, 2)) == (1, 3)
    assert soc.translate(DID, IOVA + 4).ok
    assert soc.iommu.translate_pa(DID, IOVA + 8) > 0
    assert soc.translate(DID, soc.DATA_BASE, at=1).ok
    assert (_ctr(soc, 1), _ctr(soc, 2)) == (1, 3)
    # A miss that walks and faults is still a miss.
    assert not soc.translate(DID, IOVA + soc.PAGE).ok
    assert (_ctr(soc, 1), _ctr(soc, 2)) == (2, 6)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_ddt_walks_on_ddtc_miss_only(make_soc: Any, levels: int) -> None:
    """Event 5 "Device Directory Walks": one per DDT entry loaded (each non-leaf DDTE and the
    DC), only when the DDTC misses; IODIR.INVAL_DDT makes the next request walk again."""
    soc = make_soc(ddt_levels=levels)
    _select(soc, 1, selector(5))
    did = 0x25
    _s1_device(soc, did)
    assert soc.translate(did, IOVA).ok
    assert _ctr(soc, 1) == levels
    assert soc.translate(did, IOVA + soc.PAGE).cause == 13  # DDTC hit (then a page fault)
    assert _ctr(soc, 1) == levels
    soc.cmd(CMD_IODIR, opcode=soc.OP_IODIR, func3=0, dv=1, did=did)
    assert soc.run() == 1
    assert soc.translate(did, IOVA).ok
    assert _ctr(soc, 1) == 2 * levels


def test_ddt_walk_filters(soc: Any) -> None:
    """Event 5 supports IDT = 0 only: filtered by device_id (DMASK too); "When the programmed
    IDT setting is not supported for an event then the associated counter does not
    increment"."""
    _select(soc, 1, selector(5, did=DID))
    _select(soc, 2, selector(5, did=DID | 1, dmask=True))  # DID_GSCID 0x2a5: 0x2a4..0x2a7
    _select(soc, 3, selector(5, idt=True))
    for did in (DID, DID - 1, DID + 3):
        _s1_device(soc, did)
        assert soc.translate(did, IOVA).ok
    assert [_ctr(soc, n) for n in (1, 2, 3)] == [3, 6, 0]


@pytest.mark.parametrize(("pdt", "walks"), [("pd8", 1), ("pd17", 2), ("pd20", 3)])
def test_pdt_walks_for_pdtv_contexts(soc: Any, pdt: str, walks: int) -> None:
    """Event 6 "Process Directory Walks": one per PDT entry loaded (each non-leaf PDTE and the
    PC) on a PDTC miss; none for a PDTV = 0 device; filtered by process_id."""
    _select(soc, 1, selector(6))
    _select(soc, 2, selector(6, pid=7))
    pdt_root = soc.new_pdt()
    soc.write_dc(
        DID, tc=soc.tc(pdtv=1), fsc=DC_FSC.encode(mode=soc.PDTP_MODE[pdt], ppn=pdt_root >> 12)
    )
    pt = soc.new_pt("sv39")
    soc.map(pt, IOVA, soc.DATA_BASE)
    for pid in (7, 8):
        soc.write_pc(pdt_root, pid, pdt, fsc=PC_FSC.encode(mode=8, ppn=pt >> 12))
    assert soc.translate(DID, IOVA, pid_valid=True, process_id=7).ok
    assert soc.translate(DID, IOVA + soc.PAGE, pid_valid=True, process_id=7).cause == 13
    assert soc.translate(DID, IOVA, pid_valid=True, process_id=8).ok
    assert (_ctr(soc, 1), _ctr(soc, 2)) == (2 * walks, walks)
    _s1_device(soc, DID + 1)
    assert soc.translate(DID + 1, IOVA).ok
    assert _ctr(soc, 1) == 2 * walks


@pytest.mark.parametrize(
    ("mode", "level", "walks"), [("sv39", 0, 3), ("sv48", 0, 4), ("sv39", 1, 2), ("sv57", 1, 4)]
)
def test_first_stage_walks(soc: Any, mode: str, level: int, walks: int) -> None:
    """Event 7 "First-stage Page Table Walks": one per first-stage PTE loaded, leaf or
    non-leaf (a superpage leaf ends the walk early); none on an IOTLB hit."""
    _select(soc, 1, selector(7))
    root = soc.new_pt(mode)
    soc.write_dc(DID, tc=soc.tc(), fsc=DC_FSC.encode(mode=soc.SATP_MODE[mode], ppn=root >> 12))
    soc.map(root, 0, soc.DATA_BASE, mode, level=level)  # a 4 KiB or 2 MiB page at VA 0
    assert soc.translate(DID, 0x123).ok
    assert _ctr(soc, 1) == walks
    assert soc.translate(DID, 0x456).ok  # IOTLB hit
    assert _ctr(soc, 1) == walks


def test_second_stage_walks_include_implicit_accesses(soc: Any) -> None:
    """Event 8 "Second-stage Page Table Walks": one per G-stage PTE loaded, for the GPA of the
    request and for the implicit reads of first-stage PTEs (each a table-entry load: a walk).
    Here each first-stage PTE's GPA is a gigapage (1 load) and the data GPA a 4 KiB page (3)."""
    _select(soc, 1, selector(8))
    _select(soc, 2, selector(7))
    _g_device(soc)
    assert soc.translate(DID, IOVA).pa == soc.DATA_BASE
    assert (_ctr(soc, 1), _ctr(soc, 2)) == (3 + 3, 3)
    assert soc.translate(DID, IOVA + 8).ok  # IOTLB hit
    assert (_ctr(soc, 1), _ctr(soc, 2)) == (6, 3)
    _g_device(soc, DID + 1, s1=False)  # first stage Bare: the request's GPA only
    assert soc.translate(DID + 1, GPA_DATA).pa == soc.DATA_BASE
    assert (_ctr(soc, 1), _ctr(soc, 2)) == (9, 3)


def test_second_stage_walks_for_pdt_entries(soc: Any) -> None:
    """Event 8 counts the G-stage walks that translate PDT entry addresses (implicit reads),
    event 6 the PDT entries themselves: PD8, one PC, a gigapage (1 load) per implicit read."""
    _select(soc, 1, selector(8))
    _select(soc, 2, selector(6))
    groot = soc.new_pt("sv39x4")
    soc.identity_gstage(groot)
    soc.map(groot, GPA_DATA, soc.DATA_BASE, "sv39x4")
    pdt_root = soc.new_pdt()
    s1root = soc.new_pt("sv39")
    soc.map(s1root, IOVA, GPA_DATA)
    soc.write_pc(pdt_root, 3, "pd8", fsc=PC_FSC.encode(mode=8, ppn=s1root >> 12))
    soc.write_dc(
        DID,
        tc=soc.tc(pdtv=1),
        fsc=DC_FSC.encode(mode=1, ppn=pdt_root >> 12),
        iohgatp=DC_IOHGATP.encode(mode=8, gscid=9, ppn=groot >> 12),
    )
    assert soc.translate(DID, IOVA, pid_valid=True, process_id=3).pa == soc.DATA_BASE
    assert (_ctr(soc, 1), _ctr(soc, 2)) == (1 + 3 + 3, 1)


def test_gscid_and_pscid_filters(soc: Any) -> None:
    """Events 4, 7 and 8 support IDT = 1: filtered by GSCID (valid only with a non-Bare
    G-stage; DMASK too) and PSCID (valid only with a non-Bare first stage) -- the filtering
    options table, "Counter increments if GSCID is valid and matches DID_GSCID"."""
    gscid = selector(4, did=5, idt=True)
    _select(soc, 1, gscid)  # TLB misses of GSCID 5
    _select(soc, 2, gscid & ~0x7FFF | 7)  # first-stage walks of GSCID 5
    _select(soc, 3, gscid & ~0x7FFF | 8)  # G-stage walks of GSCID 5
    _select(soc, 4, selector(8, did=5, dmask=True, idt=True))  # GSCIDs 4..7
    _select(soc, 5, selector(7, pid=0x77, idt=True))  # first-stage walks of PSCID 0x77
    _select(soc, 6, selector(4, pid=0x77, did=6, idt=True))  # GSCID 6 and PSCID 0x77
    _g_device(soc, DID, gscid=5)
    _g_device(soc, DID + 1, gscid=4)
    _s1_device(soc, DID + 2, pscid=0x77)  # no G-stage: no valid GSCID
    _s1_device(soc, DID + 3, pscid=0x78)
    for did in (DID, DID + 1, DID + 2, DID + 3):
        assert soc.translate(did, IOVA).ok
    assert [_ctr(soc, n) for n in range(1, 7)] == [1, 3, 6, 12, 3, 0]
    # A DC's PSCID (ta.PSCID, first stage in DC.fsc) with a G-stage: both IDs valid.
    groot = soc.new_pt("sv39x4")
    soc.identity_gstage(groot)
    soc.map(groot, GPA_DATA, soc.DATA_BASE, "sv39x4")
    s1root = soc.new_pt("sv39")
    soc.map(s1root, IOVA, GPA_DATA)
    soc.write_dc(
        DID + 4,
        tc=soc.tc(),
        ta=DC_TA.encode(pscid=0x77),
        fsc=DC_FSC.encode(mode=8, ppn=s1root >> 12),
        iohgatp=DC_IOHGATP.encode(mode=8, gscid=6, ppn=groot >> 12),
    )
    assert soc.translate(DID + 4, IOVA).ok
    assert [_ctr(soc, n) for n in range(1, 7)] == [1, 3, 6, 18, 6, 1]


def test_walk_counting_off_leaves_counters(soc: Any) -> None:
    """eventID 0 "Do not count": with no walk event selected, walks change no counter."""
    _select(soc, 1, selector(1))
    _g_device(soc)
    assert soc.translate(DID, IOVA).ok
    assert soc.iommu.engine.hpm is None
    assert [_ctr(soc, n) for n in range(1, 8)] == [1, 0, 0, 0, 0, 0, 0]
