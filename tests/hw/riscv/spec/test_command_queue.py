"""riscv-iommu: "Command-Queue (CQ)" and its commands ("IOMMU Page-Table cache invalidation
commands", "IOMMU Command-queue Fence commands", "IOMMU directory cache invalidation
commands"), with "Command-queue CSR (cqcsr)"."""

from __future__ import annotations

import pytest

from iommusim.bits.riscv.queues import CMD_ATS, CMD_IODIR, CMD_IOFENCE, CMD_IOTINVAL
from iommusim.bits.riscv.regs import (
    CQCSR_CIE,
    CQCSR_CMD_ILL,
    CQCSR_CMD_TO,
    CQCSR_CQEN,
    CQCSR_CQMF,
    IPSR_CIP,
    OFF_CQCSR,
    OFF_CQH,
    OFF_IPSR,
)
from iommusim.errors import ModelError
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS
from iommusim.mem import ACCESS, SparseMemory
from iommusim.sim import VirtualClock

DID = 0x33


def _fence(soc, **kw):
    return soc.cmd(CMD_IOFENCE, opcode=soc.OP_IOFENCE, func3=0, **kw)


def test_iofence_av_writes_data(soc):
    """riscv-iommu: "IOMMU Command-queue Fence commands": AV = 1 stores DATA as 4 bytes at
    ADDR[63:2] * 4 on completion; cqh moves past the fence."""
    flag = soc.alloc() + 0x44
    _fence(soc, av=1, data=0xCAFE_F00D, addr=flag >> 2)
    assert soc.run() == 1
    assert soc.ram.read32(flag) == 0xCAFE_F00D
    assert soc.ram.read32(flag + 4) == 0  # exactly four bytes
    assert soc.reg(OFF_CQH) == 1


def test_iofence_without_av_writes_nothing(soc):
    """riscv-iommu: "IOMMU Command-queue Fence commands": AV = 0 ignores ADDR and DATA."""
    flag = soc.alloc()
    _fence(soc, av=0, data=0x1234, addr=flag >> 2)
    assert soc.run() == 1
    assert soc.ram.read32(flag) == 0


@pytest.mark.parametrize(("pr", "pw"), [(1, 0), (0, 1), (1, 1)])
def test_iofence_pr_pw_request_sync(soc, pr, pw):
    """riscv-iommu: "IOMMU Command-queue Fence commands": PR/PW ask for previous reads/writes
    to be committed -- a sync request to the IO bridge with the same flags."""
    _fence(soc, pr=pr, pw=pw)
    soc.run()
    assert [(m.kind, m.pr, m.pw) for m in soc.messages] == [("sync", bool(pr), bool(pw))]


@pytest.mark.parametrize(
    ("layout", "fields"),
    [
        (CMD_IOFENCE, {"opcode": 0}),  # no such opcode
        (CMD_IOFENCE, {"opcode": 2, "func3": 1}),  # IOFENCE with a reserved func3
        (CMD_IODIR, {"opcode": 3, "func3": 0, "pid": 5}),  # IODIR.INVAL_DDT: PID is reserved
        (CMD_IODIR, {"opcode": 3, "func3": 1, "dv": 0}),  # IODIR.INVAL_PDT needs DV = 1
        (CMD_IOTINVAL, {"opcode": 1, "func3": 2}),  # reserved IOTINVAL func3
    ],
    ids=["opcode-0", "iofence-func3", "iodir-ddt-pid", "iodir-pdt-dv0", "iotinval-func3"],
)
def test_illegal_command_stops_queue(soc, layout, fields):
    """riscv-iommu: "Command-Queue (CQ)": an illegal or unsupported command sets
    cqcsr.cmd_ill and cqh keeps the index of that command; later commands wait."""
    flag = soc.alloc()
    _fence(soc, av=1, data=1, addr=flag >> 2)
    bad = soc.cmd(layout, **fields)
    _fence(soc, av=1, data=2, addr=(flag + 4) >> 2)
    assert soc.run() == 1
    assert soc.reg(OFF_CQCSR) & CQCSR_CMD_ILL
    assert soc.reg(OFF_CQH) == bad
    assert soc.ram.read32(flag) == 1 and soc.ram.read32(flag + 4) == 0
    assert soc.run() == 0  # stays stopped


def test_reserved_bit_in_iotinval_is_illegal(soc):
    """riscv-iommu: "IOMMU Page-Table cache invalidation commands": reserved bits set ->
    cmd_ill (here IOTINVAL.GVMA with PSCV = 1)."""
    i = soc.cmd(CMD_IOTINVAL, opcode=soc.OP_IOTINVAL, func3=1, pscv=1)
    assert soc.run() == 0
    assert soc.reg(OFF_CQCSR) & CQCSR_CMD_ILL and soc.reg(OFF_CQH) == i


def test_clearing_cmd_ill_resumes(soc):
    """riscv-iommu: "Command-queue CSR (cqcsr)": cmd_ill is RW1C; once software replaces the
    offending command and clears the bit, the queue resumes at cqh."""
    flag = soc.alloc()
    bad = soc.cmd(CMD_IOFENCE, opcode=0)
    _fence(soc, av=1, data=7, addr=flag >> 2)
    soc.run()
    # Repair the command in place, then write 1 to cmd_ill (cqen stays 1).
    fixed = CMD_IOFENCE.encode(opcode=soc.OP_IOFENCE, av=1, data=6, addr=(flag + 8) >> 2)
    soc.ram.write(soc.cq_base + bad * 16, fixed.to_bytes(16, "little"))
    soc.set_reg(OFF_CQCSR, CQCSR_CQEN | CQCSR_CMD_ILL)
    assert not soc.reg(OFF_CQCSR) & CQCSR_CMD_ILL
    assert soc.run() == 2
    assert (soc.ram.read32(flag + 8), soc.ram.read32(flag)) == (6, 7)
    assert soc.reg(OFF_CQH) == 2


def test_writing_zero_does_not_clear_cmd_ill(soc):
    """riscv-iommu: "Command-queue CSR (cqcsr)": RW1C -- writing 0 leaves cmd_ill set."""
    soc.cmd(CMD_IOFENCE, opcode=0)
    soc.run()
    soc.set_reg(OFF_CQCSR, CQCSR_CQEN)
    assert soc.reg(OFF_CQCSR) & CQCSR_CMD_ILL
    assert soc.run() == 0


def test_command_fetch_access_fault_sets_cqmf(soc):
    """riscv-iommu: "Command-queue CSR (cqcsr)": a memory fault fetching a command sets cqmf;
    cqh is not advanced and processing stops."""
    _fence(soc)
    i = _fence(soc)
    soc.mem.inject(soc.cq_base + 16 * i, 16, ACCESS)
    assert soc.run() == 1
    assert soc.reg(OFF_CQCSR) & CQCSR_CQMF
    assert soc.reg(OFF_CQH) == i


def test_iofence_data_write_fault_sets_cqmf(soc):
    """riscv-iommu: "IOMMU Command-queue Fence commands": a fault on the AV write sets cmd_mf
    (cqmf) and cqh holds the IOFENCE.C's index."""
    flag = soc.alloc()
    soc.mem.inject(flag, 4, ACCESS)
    i = _fence(soc, av=1, data=1, addr=flag >> 2)
    assert soc.run() == 0
    assert soc.reg(OFF_CQCSR) & CQCSR_CQMF and soc.reg(OFF_CQH) == i


@pytest.mark.parametrize("scope", ["all", "pscid", "addr"])
def test_iotinval_vma_makes_changed_pte_visible(soc, scope):
    """riscv-iommu: "IOMMU Page-Table cache invalidation commands" (IOTINVAL.VMA, GV = 0):
    after a PTE changes, an IOTINVAL.VMA covering it and IOFENCE.C make the IOMMU use the new
    PTE, whatever it cached from the first translation."""
    root = soc.s1_device(DID)
    soc.wr64(soc.dc_addr(DID) + 16, 0x7 << 12)  # DC.ta.PSCID = 7
    old, new = soc.DATA_BASE, soc.DATA_BASE + 0x10_0000
    soc.map(root, 0x9000, old)
    assert soc.translate(DID, 0x9008).pa == old + 8
    assert soc.translate(DID, 0x9008, is_write=True).pa == old + 8
    soc.map(root, 0x9000, new)
    kw = {
        "all": {},
        "pscid": {"pscv": 1, "pscid": 7},
        "addr": {"pscv": 1, "pscid": 7, "av": 1, "addr": 0x9},
    }[scope]
    soc.cmd(CMD_IOTINVAL, opcode=soc.OP_IOTINVAL, func3=0, **kw)
    _fence(soc)
    assert soc.run() == 2
    assert soc.translate(DID, 0x9008).pa == new + 8
    assert soc.translate(DID, 0x9008, is_write=True).pa == new + 8


def test_iotinval_vma_makes_removed_mapping_fault(soc):
    """riscv-iommu: "IOMMU Command-queue Fence commands" note: unmap, IOTINVAL.VMA, IOFENCE.C
    -- afterwards the device can no longer reach the page."""
    root = soc.s1_device(DID)
    pte = soc.map(root, 0x9000, soc.DATA_BASE)
    assert soc.translate(DID, 0x9000, is_write=True).ok
    soc.wr64(pte, 0)
    soc.cmd(CMD_IOTINVAL, opcode=soc.OP_IOTINVAL, func3=0)
    _fence(soc)
    soc.run()
    assert soc.translate(DID, 0x9000, is_write=True).cause == 15
    assert soc.translate(DID, 0x9000).cause == 13


def test_iodir_inval_ddt_makes_changed_dc_visible(soc):
    """riscv-iommu: "IOMMU directory cache invalidation commands" (IODIR.INVAL_DDT, DV = 1):
    after a DC changes, the IOMMU reads it again."""
    soc.write_dc(DID, tc=soc.tc())
    assert soc.translate(DID, 0x1000).ok
    soc.write_dc(DID, tc=0)  # DC.tc.V = 0
    soc.cmd(CMD_IODIR, opcode=soc.OP_IODIR, func3=0, dv=1, did=DID)
    _fence(soc)
    assert soc.run() == 2
    # A page never translated before, so only the device-context lookup is involved.
    assert soc.translate(DID, 0x5_5000).cause == 258


def test_iodir_inval_ddt_all_devices(soc):
    """riscv-iommu: "IOMMU directory cache invalidation commands": DV = 0 invalidates the
    cached DCs of every device."""
    for did in (1, 2):
        soc.write_dc(did, tc=soc.tc())
        assert soc.translate(did, 0x1000).ok
        soc.write_dc(did, tc=soc.tc() | 1 << 12)  # now misconfigured
    soc.cmd(CMD_IODIR, opcode=soc.OP_IODIR, func3=0, dv=0)
    soc.run()
    assert [soc.translate(did, 0x2_2000).cause for did in (1, 2)] == [259, 259]


def test_iodir_inval_pdt_makes_changed_pc_visible(soc):
    """riscv-iommu: "IOMMU directory cache invalidation commands" (IODIR.INVAL_PDT)."""
    pdt = soc.new_pdt()
    pt = soc.new_pt()
    soc.write_dc(DID, tc=soc.tc(pdtv=1), fsc=soc.PDTP_MODE["pd8"] << 60 | pdt >> 12)
    pc = soc.write_pc(pdt, 3, "pd8", fsc=8 << 60 | pt >> 12)
    soc.map(pt, 0x9000, soc.DATA_BASE)
    assert soc.translate(DID, 0x9000, pid_valid=True, process_id=3).ok
    soc.wr64(pc, 0)  # PC.ta.V = 0
    soc.cmd(CMD_IODIR, opcode=soc.OP_IODIR, func3=1, dv=1, did=DID, pid=3)
    soc.cmd(CMD_IOTINVAL, opcode=soc.OP_IOTINVAL, func3=0)
    soc.run()
    assert soc.translate(DID, 0x9000, pid_valid=True, process_id=3).cause == 266


def test_cqh_wraps_around(soc):
    """riscv-iommu: "Command-Queue (CQ)": cqh and cqt are indices modulo the queue size."""
    soc.enable_cq(log2sz=2)  # four entries (nothing was queued yet: cqh = cqt = 0)
    flag = soc.alloc()
    for rnd in range(3):
        for k in range(3):
            n = rnd * 3 + k
            _fence(soc, av=1, data=n + 1, addr=(flag + 4 * n) >> 2)
        assert soc.run() == 3
        assert soc.reg(OFF_CQH) == (rnd + 1) * 3 % 4
    assert [soc.ram.read32(flag + 4 * n) for n in range(9)] == list(range(1, 10))


# -- ATS.INVAL completions, IOFENCE.C waiting for them, and command timeouts (cmd_to) --------

TIMEOUT_NS = 1000


def _ats_inval(soc, rid=0x21):
    return soc.cmd(CMD_ATS, opcode=soc.OP_ATS, func3=0, rid=rid, payload=0x7000)


def _itags(soc):
    return [m.itag for m in soc.messages if m.kind == "ats_inval_req"]


def test_iofence_waits_for_invalidation_completions(soc):
    """riscv-iommu: "IOMMU PCIe ATS commands": ATS.INVAL completes when its "Invalidation
    Completion" arrives (cc completions: 0 means 8); "IOMMU Command-queue Fence commands": the
    IOFENCE.C does not complete before, and cqh stays at it."""
    _ats_inval(soc)
    flag = soc.alloc()
    fence = _fence(soc, av=1, data=1, addr=flag >> 2)
    assert soc.run() == 1
    assert soc.reg(OFF_CQH) == fence and soc.iommu.invalidations_outstanding == 1
    (itag,) = _itags(soc)
    soc.iommu.ats_inval_completion([itag], 2)
    assert soc.run() == 0 and soc.ram.read32(flag) == 0  # one of two completions
    soc.iommu.ats_inval_completion([itag], 2)
    assert soc.iommu.invalidations_outstanding == 0
    assert soc.run() == 1 and soc.ram.read32(flag) == 1


def test_invalidation_timeout_sets_cmd_to(make_soc):
    """riscv-iommu: "IOMMU PCIe ATS commands": on a "protocol-defined timeout" (the parameter
    ats_inval_timeout_ns) the ATS.INVAL completes, "reported when a subsequent IOFENCE.C
    command is executed": cqcsr.cmd_to is set, cqh holds the IOFENCE.C, the queue stops, and
    cip is raised when cie is 1 ("Command-queue CSR (cqcsr)", "ipsr")."""
    clock = VirtualClock()
    soc = make_soc(PRESETS["full"].with_(ats_inval_timeout_ns=TIMEOUT_NS), clock=clock)
    soc.set_reg(OFF_CQCSR, CQCSR_CQEN | CQCSR_CIE)
    _ats_inval(soc)
    flag = soc.alloc()
    fence = _fence(soc, av=1, data=1, addr=flag >> 2)
    assert soc.run() == 1
    clock.advance(TIMEOUT_NS - 1)
    assert soc.run() == 0 and not soc.reg(OFF_CQCSR) & CQCSR_CMD_TO
    clock.advance(1)
    assert soc.iommu.invalidations_outstanding == 0
    assert soc.run() == 0
    assert soc.reg(OFF_CQCSR) & CQCSR_CMD_TO
    assert soc.reg(OFF_CQH) == fence and soc.ram.read32(flag) == 0
    assert soc.reg(OFF_IPSR) & IPSR_CIP
    # A late completion for the timed-out request is ignored.
    soc.iommu.ats_inval_completion(_itags(soc), 1)
    assert soc.run() == 0
    # Software clears cmd_to (RW1C): the fence runs again and completes.
    soc.set_reg(OFF_CQCSR, CQCSR_CQEN | CQCSR_CIE | CQCSR_CMD_TO)
    assert soc.run() == 1 and soc.ram.read32(flag) == 1


def test_fence_waits_for_all_before_reporting_timeout(make_soc):
    """riscv-iommu: "cqcsr": "cmd_to is set when a IOFENCE.C command detects that one or more
    previous commands that are specified to have timeouts have timed out but all other
    commands previous to the IOFENCE.C have completed"."""
    clock = VirtualClock()
    soc = make_soc(PRESETS["full"].with_(ats_inval_timeout_ns=TIMEOUT_NS), clock=clock)
    _ats_inval(soc, rid=1)
    soc.run()
    clock.advance(TIMEOUT_NS // 2)
    _ats_inval(soc, rid=2)
    _fence(soc)
    soc.run()
    clock.advance(TIMEOUT_NS // 2)  # the first request times out, the second is pending
    assert soc.run() == 0 and not soc.reg(OFF_CQCSR) & CQCSR_CMD_TO
    soc.iommu.ats_inval_completion([_itags(soc)[1]], 1)
    assert soc.run() == 0 and soc.reg(OFF_CQCSR) & CQCSR_CMD_TO


def test_completion_in_time_cancels_the_timeout(make_soc):
    """An invalidation completed before its deadline leaves nothing on the clock and the fence
    completes without cmd_to."""
    clock = VirtualClock()
    soc = make_soc(PRESETS["full"].with_(ats_inval_timeout_ns=TIMEOUT_NS), clock=clock)
    _ats_inval(soc)
    _fence(soc)
    soc.run()
    soc.iommu.ats_inval_completion(_itags(soc), 1)
    clock.advance(10 * TIMEOUT_NS)
    assert soc.run() == 1 and not soc.reg(OFF_CQCSR) & CQCSR_CMD_TO
    assert clock.pending == 1  # only the iohpmcycles overflow event


def test_timeout_parameter_needs_a_clock():
    """Without a clock no time passes, so a timeout could never fire: refused."""
    with pytest.raises(ModelError, match="ats_inval_timeout_ns needs a clock"):
        RiscvIommu(SparseMemory(), PRESETS["full"].with_(ats_inval_timeout_ns=5))
    with pytest.raises(ModelError, match="must be positive or None, not 0"):
        PRESETS["full"].with_(ats_inval_timeout_ns=0)
