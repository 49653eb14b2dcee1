"""IHI 0070 8 "Page request queue": PRI queue entries, overflow and the SMMU's automatic
responses, the PRI queue interrupt."""

from __future__ import annotations

from iommusim.bits.arm.smmuv3_queues import PRI_RESP_SUCCESS
from iommusim.bits.arm.smmuv3_regs import GERROR, OFF, QUEUE_OVFLG
from iommusim.mem import ACCESS


def test_page_request_entry(bench):
    """IHI 0070 8.1 "PRI queue entry format": every field of the request."""
    assert bench.smmu.page_request(
        0x42,
        True,
        9,
        0xDEAD_B000,
        read=True,
        write=True,
        exec_=True,
        priv=True,
        last=True,
        prgi=0x1FE,
    )
    assert bench.page_requests() == [
        {
            "streamid": 0x42,
            "substreamid": 9,
            "priv": 1,
            "exec": 1,
            "read": 1,
            "write": 1,
            "last": 1,
            "ssv": 1,
            "prg_index": 0x1FE,
            "address": 0xDEAD_B,
        }
    ]
    assert bench.port.pri == []


def test_no_pasid_means_no_exec_or_priv(bench):
    """IHI 0070 8.1: with SSV = 0 the X and Priv bits are 0."""
    bench.smmu.page_request(1, False, 5, 0x1000, read=True, write=False, exec_=True, priv=True)
    (entry,) = bench.page_requests()
    assert (entry["ssv"], entry["substreamid"], entry["exec"], entry["priv"]) == (0, 0, 0, 0)


def test_overflow_discards_and_answers_last_requests(make_bench):
    """IHI 0070 8.2: a request that finds the queue full is discarded and PROD.OVFLG
    toggles; while the overflow is active every request is discarded, and the SMMU answers
    those with Last = 1 itself (Success)."""
    b = make_bench(priq_lg2=1)
    for i in range(2):
        assert b.smmu.page_request(1, False, 0, i << 12, read=True, write=False)
    assert not b.smmu.page_request(1, False, 0, 0x5000, read=True, write=False, last=True, prgi=3)
    assert b.read(OFF.PRIQ_PROD) & QUEUE_OVFLG
    assert b.port.pri == [(1, False, 0, 3, PRI_RESP_SUCCESS)]
    assert len(b.page_requests()) == 2
    assert not b.smmu.page_request(1, False, 0, 0x6000, read=True, write=False)
    b.write(OFF.PRIQ_CONS, 4, b.read(OFF.PRIQ_CONS) | QUEUE_OVFLG)
    assert b.smmu.page_request(1, False, 0, 0x6000, read=True, write=False)


def test_stop_marker_gets_no_automatic_response(make_bench):
    """IHI 0070 8.1: a Stop Marker (SSV = 1, L/W/R = 1/0/0) needs no PRG response."""
    b = make_bench(enable=False)
    b.enable(smmuen=1)
    assert not b.smmu.page_request(1, True, 4, 0, read=False, write=False, last=True)
    assert b.port.pri == []


def test_disabled_queue_answers_last_requests(make_bench):
    """IHI 0070 8.2: with PRIQEN = 0 requests are discarded and a Last one answered."""
    b = make_bench(enable=False)
    b.enable(smmuen=1)
    assert not b.smmu.page_request(2, True, 4, 0, read=True, write=False, last=True, prgi=1)
    assert b.port.pri == [(2, True, 4, 1, PRI_RESP_SUCCESS)]


def test_write_abort_is_priq_abt_err(bench):
    """IHI 0070 6.3 SMMU_GERROR.PRIQ_ABT_ERR: an aborted PRI queue write."""
    bench.mem.inject(bench.PRIQ_PA, 16, ACCESS)
    assert not bench.smmu.page_request(1, False, 0, 0, read=True, write=False, last=True)
    assert bench.read(OFF.GERROR) == GERROR.mask("priq_abt_err")
    assert bench.port.pri == [(1, False, 0, 0, PRI_RESP_SUCCESS)]


def test_priq_interrupt(bench):
    """IHI 0070 6.3 SMMU_PRIQ_IRQ_CFG0/1 and IRQ_CTRL.PRIQ_IRQEN: an MSI per new entry."""
    bench.write(OFF.PRIQ_IRQ_CFG0, 8, bench.MSI_PA)
    bench.write(OFF.PRIQ_IRQ_CFG1, 4, 0x99)
    bench.irq_enable(priq_irqen=1)
    bench.smmu.page_request(1, False, 0, 0, read=True, write=False)
    assert bench.ram.read32(bench.MSI_PA) == 0x99
