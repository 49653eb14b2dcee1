"""IHI 0070 4 "Commands" and 7.1 "Command queue errors": what each command asks of the
translator or the PCIe side, CMD_SYNC completion signals, and the error protocol."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommusim.bits.arm.smmuv3_queues import (
    CERROR_ABT,
    CERROR_ATC_INV_SYNC,
    CERROR_ILL,
    CMD_ATC_INV,
    CMD_CFGI_ALL,
    CMD_CFGI_CD,
    CMD_CFGI_CD_ALL,
    CMD_CFGI_STE,
    CMD_CFGI_VMS_PIDM,
    CMD_PREFETCH_ADDR,
    CMD_PREFETCH_CONFIG,
    CMD_PRI_RESP,
    CMD_RESUME,
    CMD_STALL_TERM,
    CMD_SYNC,
    CMD_TLBI_EL2_ASID,
    CMD_TLBI_EL3_ALL,
    CMD_TLBI_NH_ALL,
    CMD_TLBI_NH_ASID,
    CMD_TLBI_NH_VA,
    CMD_TLBI_NSNH_ALL,
    CMD_TLBI_S2_IPA,
    CMD_TLBI_S12_VMALL,
    CMDQ_ENTRY_BYTES,
    COMMANDS,
    PRI_RESP_SUCCESS,
    SYNC_CS_IRQ,
    SYNC_CS_SEV,
)
from iommusim.bits.arm.smmuv3_regs import CMDQ_CONS, GERROR, IRQ_CTRL, OFF
from iommusim.hw.smmuv3.maintenance import Tlbi
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.transaction import Event, Request, Response
from iommusim.mem import ACCESS

_CMDQ_ERR = GERROR.mask("cmdq_err")


def _err(b) -> int:
    return CMDQ_CONS["err"].get(b.cmdq_cons())


def _rd(b) -> int:
    return CMDQ_CONS["rd"].get(b.cmdq_cons())


def test_commands_consumed_on_prod_write(bench):
    """IHI 0070 3.5 / 4.8 "Command consumption summary": commands between CONS and PROD are
    consumed in order; CONS then equals PROD."""
    c = bench.cmd
    bench.submit(
        c(CMD_CFGI_STE, streamid=7, leaf=1),
        c(CMD_CFGI_CD, streamid=7, substreamid=3),
        c(CMD_CFGI_CD_ALL, streamid=9),
        c(CMD_CFGI_ALL, range=31),
        c(CMD_PREFETCH_CONFIG, streamid=2, ssv=1, substreamid=5),
        c(CMD_PREFETCH_ADDR, streamid=2, address=0x1234),
    )
    assert bench.t.calls == [
        ("cfgi_ste", 7, True),
        ("cfgi_cd", 7, 3, False),
        ("cfgi_cd_all", 9),
        ("cfgi_ste_range", 0, 31),
        ("prefetch_config", 2, True, 5),
    ]
    assert bench.cmdq_cons() == bench.read(OFF.CMDQ_PROD) == 6


def test_commands_wait_for_cmdqen(make_bench):
    """IHI 0070 6.3 SMMU_CR0.CMDQEN: commands are consumed only while the queue is enabled;
    enabling it consumes what is already there."""
    b = make_bench(enable=False)
    b.submit(b.cmd(CMD_CFGI_STE, streamid=1))
    assert b.t.calls == []
    b.enable(cmdqen=1)
    assert b.t.calls == [("cfgi_ste", 1, False)]


def test_queue_wraps(make_bench):
    """IHI 0070 3.5: indexes wrap with the wrap bit toggled; a 2-entry queue runs 5 commands."""
    b = make_bench(cmdq_lg2=1)
    for sid in range(5):
        b.submit(b.cmd(CMD_CFGI_STE, streamid=sid))
    assert [c[1] for c in b.calls("cfgi_ste")] == [0, 1, 2, 3, 4]
    assert b.cmdq_cons() == 5 & 0b11


def test_tlbi_scopes(bench):
    """IHI 0070 4.4: each TLBI command becomes one Tlbi of its scope."""
    c = bench.cmd
    bench.submit(
        c(CMD_TLBI_NH_ALL, vmid=3),
        c(CMD_TLBI_NH_ASID, vmid=3, asid=0x1234),
        c(CMD_TLBI_EL2_ASID, asid=9),
        c(CMD_TLBI_S12_VMALL, vmid=4),
        c(CMD_TLBI_S2_IPA, vmid=4, address=0x8_0000, leaf=1),
        c(CMD_TLBI_NSNH_ALL),
    )
    assert [x[1] for x in bench.calls("tlbi")] == [
        Tlbi("nh_all", vmid=3),
        Tlbi("nh_asid", vmid=3, asid=0x1234),
        Tlbi("el2_asid", asid=9),
        Tlbi("s12_vmall", vmid=4),
        Tlbi("s2_ipa", vmid=4, addr=0x8_0000 << 12, leaf=True),
        Tlbi("nsnh_all"),
    ]


def test_tlbi_range_fields_with_ril(bench):
    """IHI 0070 4.4.1 range invalidation (IDR3.RIL): TG, NUM, SCALE, TTL reach the Tlbi."""
    bench.submit(
        bench.cmd(CMD_TLBI_NH_VA, vmid=1, asid=2, address=0x40, leaf=1, tg=1, num=3, scale=2, ttl=3)
    )
    assert bench.calls("tlbi") == [
        ("tlbi", Tlbi("nh_va", 1, 2, 0x40 << 12, True, tg=1, num=3, scale=2, ttl=3))
    ]


def test_tlbi_range_fields_ignored_without_ril(make_bench):
    """IHI 0070 4.4.1: without IDR3.RIL every TLBI is a single-address one (minimal preset:
    8-bit ASIDs too, ASID[15:8] ignored)."""
    b = make_bench("minimal")
    b.submit(b.cmd(CMD_TLBI_NH_VA, asid=0x1FF, address=0x40, tg=1, num=3, scale=2, ttl=3))
    assert b.calls("tlbi") == [("tlbi", Tlbi("nh_va", asid=0xFF, addr=0x40 << 12))]


@pytest.mark.parametrize(
    ("preset", "command", "fields"),
    [
        ("full", None, {}),  # opcode 0x00 is not a command
        ("full", CMD_TLBI_EL3_ALL, {}),  # EL3: the Secure queue's
        ("full", CMD_CFGI_VMS_PIDM, {}),  # VMS not implemented
        ("full", CMD_CFGI_STE, {"ssec": 1}),  # SSec on the non-secure queue
        ("full", CMD_SYNC, {"cs": 0b11}),  # reserved CS
        ("full", CMD_PRI_RESP, {"resp": 0b11}),  # reserved Resp
        ("minimal", CMD_TLBI_S2_IPA, {}),  # no stage 2
        ("minimal", CMD_TLBI_EL2_ASID, {}),  # no EL2
        ("minimal", CMD_ATC_INV, {}),  # no ATS
        ("minimal", CMD_RESUME, {}),  # terminate model only
    ],
)
def test_illegal_commands(make_bench, preset, command, fields):
    """IHI 0070 4.1.3 and 7.1: an illegal command stops consumption with CERROR_ILL in
    CONS.ERR, CONS.RD on it, and GERROR.CMDQ_ERR active."""
    b = make_bench(preset)
    bad = 0 if command is None else b.cmd(command, **fields)
    b.submit(b.cmd(CMD_CFGI_STE, streamid=1), bad, b.cmd(CMD_CFGI_STE, streamid=2))
    assert b.calls("cfgi_ste") == [("cfgi_ste", 1, False)]
    assert _rd(b) == 1
    assert _err(b) == CERROR_ILL
    assert b.read(OFF.GERROR) & _CMDQ_ERR


def test_res0_bit_is_illegal(bench):
    """IHI 0070 4.1.3: a non-zero RES0 field is CONSTRAINED UNPREDICTABLE; the model reports
    CERROR_ILL."""
    bench.submit(bench.cmd(CMD_CFGI_STE, streamid=1) | 1 << 100)
    assert _err(bench) == CERROR_ILL
    assert bench.t.calls == []


def test_error_stops_queue_until_gerrorn_ack(bench):
    """IHI 0070 7.1: consumption stops until software acknowledges CMDQ_ERR in GERRORN; the
    SMMU then resumes from CONS.RD (software has replaced the bad command)."""
    bench.submit(0xFF, bench.cmd(CMD_CFGI_STE, streamid=2))
    bench.submit(bench.cmd(CMD_CFGI_STE, streamid=3))
    assert bench.t.calls == []
    pa = bench.CMDQ_PA + _rd(bench) * CMDQ_ENTRY_BYTES
    bench.ram.write(pa, bench.cmd(CMD_SYNC).to_bytes(16, "little"))
    bench.write(OFF.GERRORN, 4, bench.read(OFF.GERROR))
    assert [c[1] for c in bench.calls("cfgi_ste")] == [2, 3]
    assert _rd(bench) == bench.read(OFF.CMDQ_PROD)


def test_fetch_abort_is_cerror_abt(bench):
    """IHI 0070 7.1: an external abort on the command fetch is CERROR_ABT; CONS stays on the
    command (aborts on command reads are synchronous)."""
    bench.mem.inject(bench.CMDQ_PA + CMDQ_ENTRY_BYTES, CMDQ_ENTRY_BYTES, ACCESS)
    bench.submit(bench.cmd(CMD_CFGI_STE, streamid=1), bench.cmd(CMD_CFGI_STE, streamid=2))
    assert _rd(bench) == 1
    assert _err(bench) == CERROR_ABT
    assert bench.read(OFF.GERROR) & _CMDQ_ERR


def test_atc_inv_goes_to_the_port(bench):
    """IHI 0070 4.5 CMD_ATC_INV: an ATS invalidation of 2**Size pages at Address."""
    bench.submit(
        bench.cmd(CMD_ATC_INV, streamid=0x12, ssv=1, substreamid=4, address=0x80, size=3),
        bench.cmd(CMD_SYNC),
    )
    assert bench.port.atc == [(0x12, True, 4, 0x80 << 12, 15, False)]
    assert _err(bench) == 0


def test_cmd_sync_waits_for_pending_atc_completions(bench):
    """IHI 0070 4.7 CMD_SYNC: it completes only after every earlier CMD_ATC_INV's completion
    has arrived -- until then CONS stays at the SYNC and later commands wait; the
    completion lets them run."""
    bench.port.atc_status = "pending"
    bench.submit(
        bench.cmd(CMD_ATC_INV, streamid=1),
        bench.cmd(CMD_ATC_INV, streamid=2),
        bench.cmd(CMD_SYNC),
        bench.cmd(CMD_CFGI_STE, streamid=3),
    )
    assert _rd(bench) == 2 and _err(bench) == 0
    first, second = bench.port.itags
    assert bench.smmu.invalidation_completion(1, first) == 0
    assert _rd(bench) == 2
    assert bench.smmu.invalidation_completion(2, second) == 2
    assert _rd(bench) == 4 and _err(bench) == 0


def test_atc_inv_without_completion_fails_the_sync(bench):
    """IHI 0070 7.1 CERROR_ATC_INV_SYNC: the CMD_SYNC after an ATC invalidation that did not
    complete fails; the error is reported once."""
    bench.port.atc_ok = False
    bench.submit(bench.cmd(CMD_ATC_INV, streamid=1), bench.cmd(CMD_SYNC))
    assert _rd(bench) == 1
    assert _err(bench) == CERROR_ATC_INV_SYNC
    bench.write(OFF.GERRORN, 4, bench.read(OFF.GERROR))
    assert _rd(bench) == 2


def test_pri_resp_goes_to_the_port(bench):
    """IHI 0070 4.5 CMD_PRI_RESP: the PRG response for StreamID, SubstreamID and PRGI."""
    bench.submit(
        bench.cmd(CMD_PRI_RESP, streamid=5, ssv=1, substreamid=2, prgi=0x1AB, resp=PRI_RESP_SUCCESS)
    )
    assert bench.port.pri == [(5, True, 2, 0x1AB, PRI_RESP_SUCCESS)]


def test_sync_msi_completion(bench):
    """IHI 0070 4.6 CMD_SYNC: CS = SIG_IRQ with an MSI address writes MSIData there."""
    bench.submit(
        bench.cmd(CMD_SYNC, cs=SYNC_CS_IRQ, msidata=0xC0FFEE, msiaddress=bench.MSI_PA >> 2)
    )
    assert bench.ram.read32(bench.MSI_PA) == 0xC0FFEE
    assert bench.smmu.irq.counts["cmdq_sync"] == 0


def test_sync_wired_completion_without_msi(make_bench):
    """IHI 0070 4.6 CMD_SYNC: CS = SIG_IRQ without MSI support pulses the CMD_SYNC line."""
    b = make_bench("qemu-like")
    lines = []
    b.smmu.irq.add_observer(lines.append)
    b.submit(b.cmd(CMD_SYNC, cs=SYNC_CS_IRQ, msiaddress=b.MSI_PA >> 2, msidata=1))
    assert lines == ["cmdq_sync"]
    assert b.ram.read32(b.MSI_PA) == 0


def test_sync_msi_abort_is_a_global_error(bench):
    """IHI 0070 6.3 SMMU_GERROR.MSI_CMDQ_ABT_ERR: a CMD_SYNC MSI write that aborts."""
    bench.mem.inject(bench.MSI_PA, 4, ACCESS)
    bench.submit(bench.cmd(CMD_SYNC, cs=SYNC_CS_IRQ, msiaddress=bench.MSI_PA >> 2))
    assert bench.read(OFF.GERROR) == GERROR.mask("msi_cmdq_abt_err")
    assert _err(bench) == 0


def test_sync_sev(bench):
    """IHI 0070 4.6 CMD_SYNC: CS = SIG_SEV sends an event (IDR0.SEV)."""
    bench.submit(bench.cmd(CMD_SYNC, cs=SYNC_CS_SEV))
    assert bench.smmu.irq.sev_count == 1


def test_cmdq_error_raises_gerror_irq(bench):
    """IHI 0070 7.5: activating a global error signals the GERROR interrupt (MSI when
    GERROR_IRQ_CFG0.ADDR is set)."""
    bench.write(OFF.GERROR_IRQ_CFG0, 8, bench.MSI_PA)
    bench.write(OFF.GERROR_IRQ_CFG1, 4, 0x77)
    bench.write(OFF.IRQ_CTRL, 4, IRQ_CTRL.encode(gerror_irqen=1))
    bench.submit(0xFF)
    assert bench.ram.read32(bench.MSI_PA) == 0x77


def test_resume_retries_or_aborts(bench):
    """IHI 0070 4.6 CMD_RESUME: Ac = 1 retries the stalled transaction, Ac = 0 terminates it;
    CMD_STALL_TERM terminates every stalled transaction of a stream."""
    ev = Event(0x10, streamid=3, stall=True, stag=7)
    bench.t.responses[3] = Response("stalled", event=ev, stag=7)
    bench.smmu.translate(Request(3, 0x1000))
    bench.submit(bench.cmd(CMD_RESUME, streamid=3, stag=7, ac=1))
    bench.submit(bench.cmd(CMD_RESUME, streamid=3, stag=7))
    bench.submit(bench.cmd(CMD_STALL_TERM, streamid=3))
    assert bench.t.calls == [
        ("resume", 3, 7, True),
        ("resume", 3, 7, False),
        ("stall_term", 3),
    ]
    assert [e.stag for e in bench.events()] == [7]


def _well_formed(command):
    """Commands of one opcode with random values in every field but SSec."""
    fields = {
        f.name: st.integers(0, (1 << f.width) - 1)
        for f in command.layout.fields
        if f.name not in ("opcode", "ssec")
    }
    return st.fixed_dictionaries(fields).map(
        lambda d: command.layout.encode(opcode=command.opcode, **d)
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(st.integers(0, (1 << 128) - 1), *(_well_formed(c) for c in COMMANDS)),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(sorted(PRESETS)),
)
def test_no_command_image_raises(make_bench, words, preset):
    """IHI 0070 4, 7.1: any command queue contents end in commands run or a command error,
    never an exception; after an error, CONS.RD names the failing entry."""
    b = make_bench(preset)
    b.submit(*words)
    rd, prod = _rd(b), b.read(OFF.CMDQ_PROD)
    assert rd == prod or (_err(b) and b.read(OFF.GERROR) & _CMDQ_ERR)
