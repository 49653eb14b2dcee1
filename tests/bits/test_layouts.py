"""Bit layouts (iommusim.bits): round trips of every RISC-V IOMMU layout and the import-time
validation (riscv-iommu: "Data Structures", "In-memory queue interface")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iommusim.bits.arm import ALL_LAYOUTS as ARM_LAYOUTS
from iommusim.bits.fields import Access, Field, Layout
from iommusim.bits.riscv import ALL_LAYOUTS as RISCV_LAYOUTS
from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.queues import FQ_RECORD
from iommusim.errors import ModelError

#: Every architecture's layouts: the table-wide properties hold for all of them.
ALL_LAYOUTS = (*RISCV_LAYOUTS, *ARM_LAYOUTS)
LAYOUTS = pytest.mark.parametrize("lay", ALL_LAYOUTS, ids=[lay.name for lay in ALL_LAYOUTS])


@LAYOUTS
@given(data=st.data())
def test_encode_decode_round_trip(lay, data):
    """encode(decode(v)) keeps exactly the bits of defined (non-reserved) fields."""
    v = data.draw(st.integers(0, (1 << lay.width) - 1))
    fields = lay.decode(v)
    assert lay.encode(fields) == v & lay.defined_mask
    assert lay.decode(lay.encode(fields)) == fields


@LAYOUTS
@given(data=st.data())
def test_decode_encode_round_trip(lay, data):
    """decode(encode(f)) == f for any in-range value of each defined field."""
    f = {
        fl.name: data.draw(st.integers(0, (1 << fl.width) - 1), label=fl.name)
        for fl in lay.fields
        if fl.access is not Access.RSVD
    }
    assert lay.decode(lay.encode(f)) == f


@LAYOUTS
def test_masks_partition_the_layout(lay):
    """Defined and reserved masks are disjoint and together cover the whole width."""
    assert lay.defined_mask & lay.reserved_mask == 0
    assert lay.defined_mask | lay.reserved_mask == (1 << lay.width) - 1
    assert lay.defined_mask == sum(f.mask for f in lay.fields if f.access is not Access.RSVD)


def test_fq_record_matches_spec_positions():
    """riscv-iommu: "Fault/Event-Queue (FQ)": CAUSE 11:0, PID 31:12, PV 32, PRIV 33, TTYP 39:34,
    DID 63:40, iotval doubleword 2, iotval2 doubleword 3."""
    v = FQ_RECORD.encode(cause=0xFFF, pid=1, pv=1, priv=1, ttyp=9, did=2, iotval=3, iotval2=4)
    assert v == 0xFFF | 1 << 12 | 1 << 32 | 1 << 33 | 9 << 34 | 2 << 40 | 3 << 128 | 4 << 192


def test_overlapping_fields_raise():
    with pytest.raises(ModelError, match=r"bad\.b overlaps"):
        Layout("bad", 16, (Field("a", 0, 4), Field("b", 3, 2)))


def test_field_beyond_width_raises():
    with pytest.raises(ModelError, match="beyond 8"):
        Layout("bad", 8, (Field("a", 4, 5),))


def test_duplicate_field_raises():
    with pytest.raises(ModelError, match="defined twice"):
        Layout("bad", 16, (Field("a", 0, 4), Field("a", 8, 4)))


@pytest.mark.parametrize(("lsb", "width"), [(0, 0), (-1, 4)])
def test_bad_field_geometry_raises(lsb, width):
    with pytest.raises(ModelError):
        Field("f", lsb, width)


def test_encode_value_too_wide_raises():
    with pytest.raises(ModelError, match="does not fit"):
        PTE.encode(v=2)


def test_unknown_field_raises():
    with pytest.raises(ModelError, match="no field 'nope'"):
        PTE.encode(nope=1)


def test_fault_record_round_trips_and_keeps_field_widths() -> None:
    """riscv-iommu: "Fault/Event-Queue (FQ)": what the IOMMU encodes is what the driver
    decodes; a field never spills into its neighbour; PID and PRIV are 0 without PV."""
    from iommusim.bits.riscv.queues import FaultRecord

    rec = FaultRecord(13, 2, 0xABCDEF, True, 0x12345, True, 0x8000_1000, 0x4000)
    assert FaultRecord.decode(rec.encode()) == rec
    assert rec.encode() & 0xFFFF_FFFF_FFFF_FFFF == (
        13 | 0x12345 << 12 | 1 << 32 | 1 << 33 | 2 << 34 | 0xABCDEF << 40
    )
    wide = FaultRecord(0x1FFF, 0, 1 << 24, False, 7, True, 1 << 64, 0)
    assert FaultRecord.decode(wide.encode()) == FaultRecord(0xFFF, 0, 0, False, 0, False, 0, 0)
