"""The parts of the RISC-V IOMMU model on their own: queue rings, fault records, IOTLB
matching, ATS invalidation tracking (riscv-iommu: "In-memory queue interface",
"Fault/Event-Queue (FQ)", "IOMMU Page-Table cache invalidation commands",
"IOMMU PCIe ATS commands")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iommusim.bits.riscv.queues import FQ_RECORD, FaultRecord
from iommusim.errors import ModelError
from iommusim.hw.riscv.ats import InvalidationTracker
from iommusim.hw.riscv.iotlb import IotlbEntry, IotlbKey, match_gvma, match_vma
from iommusim.hw.riscv.queues import FULL, MEM_FAULT, advance, consume, entry_pa, produce
from iommusim.mem import FaultInjectingMemory, SparseMemory
from iommusim.sim import VirtualClock

QB = 0x8_0000 << 10 | 1  # PPN 0x8_0000 (PA 0x8000_0000), LOG2SZ-1 = 1: four entries


def test_ring_indices_wrap_at_the_queue_size() -> None:
    assert [advance(QB, i) for i in range(4)] == [1, 2, 3, 0]
    assert entry_pa(QB, 3, 16) == 0x8000_0030


def test_a_producer_leaves_one_entry_free_and_reports_full() -> None:
    mem = SparseMemory()
    tail = 0
    for i in range(3):
        tail = produce(mem, QB, 0, tail, 0x1111 * (i + 1), 16, 0)
    assert tail == 3
    assert produce(mem, QB, 0, tail, 0xDEAD, 16, 0) == FULL
    assert mem.read64(0x8000_0030) == 0  # nothing written when full
    assert consume(mem, QB, 2, 16, 0) == 0x3333


def test_entries_are_doublewords_in_the_queue_byte_order() -> None:
    mem = SparseMemory()
    entry = 0x0102030405060708 | 0x1112131415161718 << 64
    assert produce(mem, QB, 2, 0, entry, 16, 1) == 1
    assert mem.read(0x8000_0000, 16) == bytes.fromhex("01020304050607081112131415161718")
    assert consume(mem, QB, 0, 16, 1) == entry


def test_a_faulting_queue_write_or_read_is_reported_not_raised() -> None:
    mem = FaultInjectingMemory(SparseMemory())
    mem.inject(0x8000_0010, 8, "access")
    assert produce(mem, QB, 0, 1, 5, 16, 0) == MEM_FAULT
    assert consume(mem, QB, 1, 16, 0) is None


def test_fault_record_golden_encoding() -> None:
    """Fault-queue record: CAUSE 11:0, PID 31:12, PV 32, PRIV 33, TTYP 39:34, DID 63:40,
    iotval at 128, iotval2 at 192 (riscv-iommu: "Fault/Event-Queue (FQ)")."""
    rec = FaultRecord(13, 2, 0xABCDEF, True, 0x12345, True, 0x8000, 0x44)
    assert (
        rec.encode()
        == (0xABCDEF << 40 | 2 << 34 | 1 << 33 | 1 << 32 | 0x12345 << 12 | 13)
        | 0x8000 << 128
        | 0x44 << 192
    )
    assert FQ_RECORD.decode(rec.encode())["cause"] == 13
    assert rec.name == "Read page fault"


def test_fault_record_fields_keep_their_widths_and_pid_needs_pv() -> None:
    wide = FaultRecord(1 << 12 | 5, 1 << 6, 1 << 24 | 1, False, 0xFFFFF, True, -1, 1 << 64)
    f = FQ_RECORD.decode(wide.encode())
    assert (f["cause"], f["ttyp"], f["did"], f["pid"], f["priv"]) == (5, 0, 1, 0, 0)
    assert (f["iotval"], f["iotval2"]) == ((1 << 64) - 1, 0)


def _tlb() -> dict[IotlbKey, IotlbEntry]:
    return {
        (1, -1, False, 0x10): IotlbEntry(-1, 7, False, 0x1000, 3, 0, 12),
        (1, -1, False, 0x11): IotlbEntry(-1, 7, True, 0x2000, 3, 0, 12),
        (1, -1, False, 0x200): IotlbEntry(-1, 8, False, 0x3000, 3, 0, 21),
        (2, -1, False, 0x10): IotlbEntry(4, 7, False, 0x4000, 3, 0, 12),
    }


def test_iotlb_entries_are_named_records() -> None:
    e = IotlbEntry(4, 7, True, 0x4000, 3, 1, 12)
    assert e == IotlbEntry(gscid=4, pscid=7, glob=True, pa=0x4000, ok=3, pbmt=1, size_lg2=12)
    assert not hasattr(e, "__dict__")  # slotted: the hit path reads slots


def test_iotinval_vma_matches_by_gscid_pscid_global_and_range() -> None:
    tlb = _tlb()
    # Host (GV = 0), PSCID 7 (Global entries survive), the page at 0x10.
    assert list(match_vma(tlb, False, 0, True, 7, True, 0x10, 1)) == [(1, -1, False, 0x10)]
    # An address inside a 2 MiB entry's range matches that entry.
    assert list(match_vma(tlb, False, 0, False, 0, True, 0x3FF, 1)) == [(1, -1, False, 0x200)]
    # GV = 1 only reaches the guest's entries.
    assert list(match_vma(tlb, True, 4, False, 0, False, 0, 1)) == [(2, -1, False, 0x10)]


def test_iotinval_gvma_matches_every_entry_of_the_gscid() -> None:
    tlb = _tlb()
    assert list(match_gvma(tlb, True, 4)) == [(2, -1, False, 0x10)]
    assert list(match_gvma(tlb, True, 5)) == []
    assert list(match_gvma(tlb, False, 0)) == [(2, -1, False, 0x10)]


def test_ats_invalidation_needs_cc_completions_or_times_out() -> None:
    clock = VirtualClock()
    tracker = InvalidationTracker(clock, 1000)
    a, b = tracker.start(), tracker.start()
    tracker.completion([a], 2)
    assert tracker.outstanding == 2
    tracker.completion([a], 2)
    assert tracker.outstanding == 1
    assert not tracker.take_timeouts()
    clock.advance(1000)
    assert tracker.outstanding == 0
    assert tracker.take_timeouts() and not tracker.take_timeouts()
    tracker.completion([b], 1)  # a late completion names nothing outstanding
    assert tracker.outstanding == 0


def test_an_ats_timeout_needs_a_clock() -> None:
    with pytest.raises(ModelError, match="needs a clock"):
        InvalidationTracker(None, 10)


@given(
    st.integers(0, (1 << 12) - 1),
    st.integers(0, 63),
    st.integers(0, (1 << 24) - 1),
    st.booleans(),
    st.integers(0, (1 << 20) - 1),
    st.booleans(),
    st.integers(0, (1 << 64) - 1),
    st.integers(0, (1 << 64) - 1),
)
def test_fault_record_encoding_is_the_layouts(
    cause: int, ttyp: int, did: int, pv: bool, pid: int, priv: bool, iotval: int, iotval2: int
) -> None:
    rec = FaultRecord(cause, ttyp, did, pv, pid, priv, iotval, iotval2)
    fields = dict(cause=cause, ttyp=ttyp, did=did, iotval=iotval, iotval2=iotval2)
    if pv:
        fields.update(pv=1, pid=pid, priv=int(priv))
    assert rec.encode() == FQ_RECORD.encode(fields)
