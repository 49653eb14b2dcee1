"""IHI 0070 7.2-7.4 "Event queue": recording, suppression, overflow, write aborts and the
Event queue interrupt; IHI 0070 3.12.2 for stalls whose event cannot be recorded."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommusim.bits.arm.smmuv3_queues import C_BAD_STREAMID, F_TRANSLATION
from iommusim.bits.arm.smmuv3_regs import GERROR, OFF, QUEUE_OVFLG
from iommusim.hw.smmuv3.transaction import Event, Request, Response
from iommusim.mem import ACCESS

_FAULT = Event(F_TRANSLATION, streamid=1, inputaddr=0x8000, rnw=False, class_=2)


def _faulting(b, sid=1, **kw):
    ev = _FAULT._replace(streamid=sid)
    b.t.responses[sid] = Response("abort", event=ev, **kw)
    return ev


def test_event_record_written_bit_exact(bench):
    """IHI 0070 7.3: the 32-byte record of the response's event lands at EVENTQ_PROD, and
    PROD advances."""
    ev = _faulting(bench)
    assert bench.smmu.translate(Request(1, 0x8000, is_write=True)).outcome == "abort"
    assert bench.ram.read(bench.EVENTQ_PA, 32) == ev.record()
    assert bench.read(OFF.EVENTQ_PROD) == 1
    assert bench.events() == [ev]


def test_suppressed_event_not_recorded(bench):
    """IHI 0070 3.12.1: an event the CD.R / STE.S2R rules suppress is not recorded."""
    _faulting(bench, recorded=False)
    bench.smmu.translate(Request(1, 0))
    assert bench.events() == []


def test_no_events_while_eventq_disabled(bench):
    """IHI 0070 6.3 SMMU_CR0.EVENTQEN = 0: events are not recorded."""
    bench.enable(smmuen=1, cmdqen=1)
    _faulting(bench)
    bench.smmu.translate(Request(1, 0))
    assert bench.read(OFF.EVENTQ_PROD) == 0


def test_overflow_toggles_ovflg_once_and_loses_events(make_bench):
    """IHI 0070 7.4: a record that finds the queue full is lost and PROD.OVFLG toggles; while
    the overflow is active (OVFLG != CONS.OVACKFLG) further losses do not toggle it again."""
    b = make_bench(eventq_lg2=1)
    _faulting(b)
    for _ in range(4):
        b.smmu.translate(Request(1, 0))
    prod = b.read(OFF.EVENTQ_PROD)
    assert prod == QUEUE_OVFLG | 0b10
    assert len(b.events()) == 2


def test_events_recorded_again_once_there_is_space(make_bench):
    """IHI 0070 7.4: records are written again when software has consumed some; software
    acknowledges the overflow by copying OVFLG to OVACKFLG, and the next overflow toggles
    OVFLG back."""
    b = make_bench(eventq_lg2=1)
    _faulting(b)
    for _ in range(3):
        b.smmu.translate(Request(1, 0))
    b.events()
    b.write(OFF.EVENTQ_CONS, 4, b.read(OFF.EVENTQ_CONS) | QUEUE_OVFLG)
    b.smmu.translate(Request(1, 0))
    assert len(b.events()) == 1
    for _ in range(3):
        b.smmu.translate(Request(1, 0))
    assert not b.read(OFF.EVENTQ_PROD) & QUEUE_OVFLG
    assert b.read(OFF.EVENTQ_CONS) & QUEUE_OVFLG


def test_write_abort_is_eventq_abt_err(bench):
    """IHI 0070 7.5 / 6.3 SMMU_GERROR.EVENTQ_ABT_ERR: an aborted record write activates the
    error; records are then discarded until software acknowledges it."""
    bench.mem.inject(bench.EVENTQ_PA, 32, ACCESS)
    _faulting(bench)
    bench.smmu.translate(Request(1, 0))
    assert bench.read(OFF.GERROR) == GERROR.mask("eventq_abt_err")
    assert bench.read(OFF.EVENTQ_PROD) == 0
    bench.mem.clear(bench.EVENTQ_PA, 32)
    bench.smmu.translate(Request(1, 0))
    assert bench.read(OFF.EVENTQ_PROD) == 0
    bench.write(OFF.GERRORN, 4, bench.read(OFF.GERROR))
    bench.smmu.translate(Request(1, 0))
    assert bench.read(OFF.EVENTQ_PROD) == 1


def test_eventq_wired_interrupt(make_bench):
    """IHI 0070 3.18: without MSI, each new record pulses the Event queue line when
    IRQ_CTRL.EVENTQ_IRQEN is 1."""
    b = make_bench("qemu-like")
    lines = []
    b.smmu.irq.add_observer(lines.append)
    b.t.responses[1] = Response("abort", event=Event(C_BAD_STREAMID, streamid=1))
    b.smmu.translate(Request(1, 0))
    b.irq_enable(eventq_irqen=1)
    b.smmu.translate(Request(1, 0))
    assert lines == ["eventq"]


def test_eventq_msi(bench):
    """IHI 0070 6.3 SMMU_EVENTQ_IRQ_CFG0/1: with IDR0.MSI the interrupt is a write of DATA to
    ADDR; an MSI write that aborts activates GERROR.MSI_EVENTQ_ABT_ERR."""
    bench.write(OFF.EVENTQ_IRQ_CFG0, 8, bench.MSI_PA)
    bench.write(OFF.EVENTQ_IRQ_CFG1, 4, 0xABCD)
    bench.irq_enable(eventq_irqen=1)
    _faulting(bench)
    bench.smmu.translate(Request(1, 0))
    assert bench.ram.read32(bench.MSI_PA) == 0xABCD
    bench.mem.inject(bench.MSI_PA, 4, ACCESS)
    bench.smmu.translate(Request(1, 0))
    assert bench.read(OFF.GERROR) == GERROR.mask("msi_eventq_abt_err")


def test_stall_without_room_for_its_event_is_terminated(make_bench):
    """IHI 0070 3.12.2: a stalled transaction whose stall record cannot be recorded is
    terminated (aborted) at once, since software could never resume it."""
    b = make_bench(eventq_lg2=0)
    ev = _FAULT._replace(stall=True, stag=4)
    b.t.responses[1] = Response("stalled", event=ev, stag=4)
    b.t.responses[2] = Response("stalled", event=ev._replace(streamid=2, stag=5), stag=5)
    assert b.smmu.translate(Request(1, 0)).outcome == "stalled"
    assert b.smmu.translate(Request(2, 0)).outcome == "abort"
    assert b.calls("resume") == [("resume", 2, 5, False)]
    assert [s for s, _, _ in b.t.stalled()] == [1]


def test_page_request_hint_is_e_page_request(bench):
    """IHI 0070 7.3.19: a client's speculative page request hint is recorded as
    E_PAGE_REQUEST -- StreamID, SubstreamID, InputAddr[63:12] at bit 140, Span at 115:108,
    the access flags pR/pW/pX at 103:101 and uR/uW/uX at 99:97 (golden bits) -- and asks
    for no response: no translation happens."""
    assert bench.smmu.page_request_hint(0x12, 0xABCDE123, 3, "rx", ssv=True, ssid=5)
    (ev,) = bench.events()
    assert ev.name == "E_PAGE_REQUEST"
    assert (ev.streamid, ev.ssv, ev.substreamid, ev.inputaddr, ev.span) == (
        0x12,
        True,
        5,
        0xABCDE000,
        3,
    )
    assert ev.hinted == ("ur", "ux")
    golden = 0x24 | 1 << 11 | 5 << 12 | 0x12 << 32 | 1 << 99 | 1 << 97 | 3 << 108
    golden |= 0xABCDE << 140
    assert int.from_bytes(bench.ram.read(bench.EVENTQ_PA, 32), "little") == golden
    assert bench.smmu.page_request_hint(1, 0x5000, 1000, "w", priv=True)
    (ev,) = bench.events()
    assert (ev.hinted, ev.span) == (("pw",), 0xFF)  # Span is 8 bits wide
    assert not bench.t.calls


def test_no_page_request_hint_while_the_smmu_is_disabled(make_bench):
    b = make_bench()
    b.enable(eventqen=1)  # SMMUEN = 0
    assert not b.smmu.page_request_hint(1, 0x1000, 1)
    assert b.events() == []


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(-(1 << 70), 1 << 70),
    st.integers(-(1 << 70), 1 << 70),
    st.integers(-(1 << 20), 1 << 20),
    st.text("rwxq", max_size=4),
    st.booleans(),
    st.booleans(),
    st.integers(-(1 << 40), 1 << 40),
)
def test_any_page_request_hint_is_a_record(make_bench, sid, addr, span, access, priv, ssv, ssid):
    """Whatever a client sends, the hint is an E_PAGE_REQUEST holding what its fields can
    carry -- never an exception."""
    b = make_bench()
    assert b.smmu.page_request_hint(sid, addr, span, access, priv, ssv, ssid)
    (ev,) = b.events()
    assert ev.streamid == sid & 0xFFFF_FFFF and ev.inputaddr == addr & ~0xFFF & (1 << 64) - 1
    assert ev.span == min(max(span, 0), 255)
    assert ev.substreamid == (ssid & 0xFFFFF if ssv else 0)
