"""Hardware performance monitor registers and counting.

riscv-iommu: "Performance-monitoring counter overflow status (iocountovf)", "... inhibits
(iocountinh)", "... cycles counter (iohpmcycles)", "... event counters (iohpmctr1-31)",
"... event selectors (iohpmevt1-31)"; FORMAT.md 6.5 and the HPM rows of section 8.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iommusim.errors import ModelError
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import MODE_NAMES, PRESETS, RiscvIommuParams, cap
from iommusim.hw.riscv.regs import IPSR_PMIP, Registers
from iommusim.mem import SparseMemory
from iommusim.sim import VirtualClock

VECTORS = Path(__file__).resolve().parents[4].parent / "shared/conformance/riscv-iommu/vectors"

OVF, INH, CYC = 88, 92, 96


def ctr(n: int) -> int:
    return 104 + 8 * (n - 1)


def evt(n: int) -> int:
    return 352 + 8 * (n - 1)


class FakeHost:
    def __init__(self) -> None:
        self.msis: list[tuple[int, int]] = []
        self.wired: list[int] = []

    def send_msi(self, addr: int, data: int) -> None:
        self.msis.append((addr, data))

    def wired_interrupt(self, vector: int) -> None:
        self.wired.append(vector)

    def debug_translate(self) -> None:
        raise AssertionError("not expected")


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


def clocked(hz: int = 1_000_000_000, bits: int = 64) -> tuple[RiscvIommu, VirtualClock,
                                                               SparseMemory]:
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
    return sorted((VECTORS / "hpm").glob("*.json")) if VECTORS.is_dir() else []


@pytest.mark.skipif(not VECTORS.is_dir(), reason="conformance vectors not present")
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
