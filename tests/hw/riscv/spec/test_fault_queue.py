"""riscv-iommu: "Fault/Event-Queue (FQ)" and "Fault queue CSR (fqcsr)"."""

from __future__ import annotations

from iommusim.bits.riscv.queues import FQ_RECORD
from iommusim.bits.riscv.regs import (
    FQCSR_FQEN,
    FQCSR_FQMF,
    FQCSR_FQOF,
    OFF_FCTL,
    OFF_FQCSR,
    OFF_FQH,
    OFF_FQT,
)
from iommusim.mem import ACCESS


def _fault(soc, did=9, iova=0x1000, **kw):
    """Provoke one "DDT entry not valid" (258) fault for ``did``."""
    soc.translate(did, iova, **kw)


def test_record_layout_in_memory(soc):
    """riscv-iommu: "Fault/Event-Queue (FQ)": a 32-byte record of four little-endian
    doublewords: CAUSE/PID/PV/PRIV/TTYP/DID, custom+reserved, iotval, iotval2."""
    _fault(soc, did=0xABCDE, iova=0xFEDC_BA98_7654_3210, is_write=True)
    dw = [soc.rd64(soc.fq_base + 8 * k) for k in range(4)]
    assert dw[0] == 258 | 3 << 34 | 0xABCDE << 40
    assert dw[1] == 0
    assert dw[2] == 0xFEDC_BA98_7654_3210
    assert dw[3] == 0
    assert soc.faults()[0] == FQ_RECORD.decode(sum(w << (64 * k) for k, w in enumerate(dw)))


def test_record_is_big_endian_with_fctl_be(soc):
    """riscv-iommu: "Fault/Event-Queue (FQ)": the byte order of each doubleword is fctl.BE."""
    soc.set_reg(OFF_FCTL, 1)
    assert soc.reg(OFF_FCTL) & 1
    _fault(soc, did=5, iova=0x1122_3344_5566_7788)
    raw = soc.ram.read(soc.fq_base, 32)
    assert int.from_bytes(raw[0:8], "big") == 258 | 2 << 34 | 5 << 40
    assert int.from_bytes(raw[16:24], "big") == 0x1122_3344_5566_7788


def test_fqt_advances_per_record(soc):
    """riscv-iommu: "Fault/Event-Queue (FQ)": the IOMMU writes at fqt then advances it by 1;
    fqh is software's."""
    for n in range(3):
        _fault(soc, did=n + 1)
    assert soc.reg(OFF_FQT) == 3 and soc.reg(OFF_FQH) == 0
    assert [r["did"] for r in soc.faults()] == [1, 2, 3]
    soc.set_reg(OFF_FQH, 2)
    assert [r["did"] for r in soc.faults()] == [3]


def test_overflow_sets_fqof_and_discards(soc):
    """riscv-iommu: "Fault/Event-Queue (FQ)": full is fqt == fqh - 1; a record that finds the
    queue full sets fqof and is discarded, as is every record while fqof is 1."""
    soc.enable_fq(log2sz=2)  # 4 entries: holds 3 records
    for n in range(3):
        _fault(soc, did=n + 1)
    assert soc.reg(OFF_FQT) == 3 and not soc.reg(OFF_FQCSR) & FQCSR_FQOF
    _fault(soc, did=4)
    assert soc.reg(OFF_FQCSR) & FQCSR_FQOF
    assert soc.reg(OFF_FQT) == 3
    assert soc.rd64(soc.fq_base + 3 * 32) == 0  # the slot was not written

    soc.set_reg(OFF_FQH, 3)  # software drained the queue; fqof still discards
    _fault(soc, did=5)
    assert soc.reg(OFF_FQT) == 3

    soc.set_reg(OFF_FQCSR, FQCSR_FQEN | FQCSR_FQOF)  # RW1C
    assert not soc.reg(OFF_FQCSR) & FQCSR_FQOF
    _fault(soc, did=6)
    assert soc.reg(OFF_FQT) == 0  # wrapped
    assert [r["did"] for r in soc.faults()] == [6]


def test_record_write_fault_sets_fqmf(soc):
    """riscv-iommu: "Fault/Event-Queue (FQ)": a fault writing the queue sets fqmf; fqt does not
    move and later records are discarded until fqmf is cleared."""
    soc.mem.inject(soc.fq_base, 32, ACCESS)
    _fault(soc, did=1)
    assert soc.reg(OFF_FQCSR) & FQCSR_FQMF
    assert soc.reg(OFF_FQT) == 0
    soc.mem.clear(soc.fq_base, 32)
    _fault(soc, did=2)
    assert soc.reg(OFF_FQT) == 0
    soc.set_reg(OFF_FQCSR, FQCSR_FQEN | FQCSR_FQMF)
    _fault(soc, did=3)
    assert [r["did"] for r in soc.faults()] == [3]


def test_queue_off_writes_no_record(make_soc):
    """riscv-iommu: "Fault queue CSR (fqcsr)": with fqon = 0 no record is written."""
    soc = make_soc(fq=False)
    base = soc.alloc()
    soc.set_reg(40, (base >> 12) << 10 | 3, 8)  # fqb, but fqen stays 0
    _fault(soc, did=1)
    assert soc.reg(OFF_FQT) == 0
    assert soc.ram.read(base, 32) == bytes(32)


def test_disabling_queue_stops_records(soc):
    """riscv-iommu: "Fault queue CSR (fqcsr)": clearing fqen turns the queue off."""
    _fault(soc, did=1)
    soc.set_reg(OFF_FQCSR, 0)
    _fault(soc, did=2)
    assert soc.reg(OFF_FQT) == 1
    assert soc.rd64(soc.fq_base + 32) == 0


def test_reenabling_resets_fqt_and_errors(soc):
    """riscv-iommu: "Fault queue CSR (fqcsr)": fqen 0 -> 1 resets fqt to 0 and clears
    fqof/fqmf."""
    soc.mem.inject(soc.fq_base, 32, ACCESS)
    _fault(soc, did=1)
    soc.mem.clear(soc.fq_base, 32)
    _fault(soc)
    soc.set_reg(OFF_FQCSR, 0)
    soc.set_reg(OFF_FQCSR, FQCSR_FQEN)
    assert soc.reg(OFF_FQCSR) & (FQCSR_FQMF | FQCSR_FQOF) == 0
    _fault(soc, did=7)
    assert soc.reg(OFF_FQT) == 1 and soc.faults()[0]["did"] == 7


def test_request_fields_wider_than_the_bus_are_taken_modulo_their_widths(soc):
    """Fuzzer finding (OverflowError writing the record; a PID spilling into PV/TTYP): a
    request's device_id (24 bits), process_id (20 bits) and IOVA (64 bits) are what the bus
    carries, so wider or negative values are taken modulo those widths (regs.py's UNSPECIFIED
    list), and the record's fields keep their widths (riscv-iommu: "Fault/Event-Queue (FQ)")."""
    soc.translate((1 << 30) | 0xABCDE, -0x1000)
    assert soc.iommu.translate_pa((1 << 30) | 0xABCDE, (1 << 64) + 0x2008) == -258
    soc.write_dc(0x21, tc=soc.tc(pdtv=1), fsc=soc.PDTP_MODE["pd8"] << 60 | soc.new_pdt() >> 12)
    soc.translate(0x21, 0x3000, pid_valid=True, process_id=(1 << 20) | 0x5)
    recs = soc.faults()
    assert [(r["cause"], r["did"], r["iotval"]) for r in recs] == [
        (258, 0xABCDE, (1 << 64) - 0x1000),
        (258, 0xABCDE, 0x2008),
        (266, 0x21, 0x3000),
    ]
    assert (recs[2]["pid"], recs[2]["pv"], recs[2]["ttyp"]) == (0x5, 1, 2)
