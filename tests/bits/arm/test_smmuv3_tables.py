"""Arm SMMUv3 tables (iommusim.bits.arm): every layout round-trips, the register map is a
well-formed two-page map, and the command and event tables are consistent (IHI 0070 chapters
4-8)."""

from __future__ import annotations

import pytest

from iommusim.bits.arm import ALL_LAYOUTS
from iommusim.bits.arm import smmuv3_queues as q
from iommusim.bits.arm import smmuv3_regs as r
from iommusim.bits.fields import Access

LAYOUTS = pytest.mark.parametrize("lay", ALL_LAYOUTS, ids=[lay.name for lay in ALL_LAYOUTS])


@LAYOUTS
def test_every_layout_names_its_spec_section(lay):
    assert lay.spec.startswith("IHI 0070 ")


def test_entry_sizes_match_the_layouts():
    """IHI 0070 4.1.1: commands are 16 bytes; 7.3: event records 32; 8.1: PRI entries 16."""
    assert {c.layout.width for c in q.COMMANDS} == {q.CMDQ_ENTRY_BYTES * 8}
    assert q.EVT_COMMON.width == q.EVENTQ_ENTRY_BYTES * 8
    assert q.PRIQ_ENTRY.width == q.PRIQ_ENTRY_BYTES * 8


def test_registers_are_in_address_order_naturally_aligned_and_disjoint():
    """IHI 0070 6.2: no two registers share a byte, each is aligned to its size."""
    end = 0
    for reg in r.REGISTERS:
        assert reg.offset % reg.size == 0, reg.name
        assert reg.offset >= end, reg.name
        end = reg.offset + reg.size
    assert len({reg.name for reg in r.REGISTERS}) == len(r.REGISTERS)


def test_only_the_smmu_produced_indexes_live_in_page_1():
    """IHI 0070 6.1: EVENTQ_PROD/CONS at 0x100A8/0x100AC, PRIQ_PROD/CONS at 0x100C8/0x100CC;
    the page-0 offsets of the same names are reserved."""
    page1 = {reg.name: reg.offset for reg in r.REGISTERS if reg.page == 1}
    assert page1 == {
        "smmu_eventq_prod": 0x100A8,
        "smmu_eventq_cons": 0x100AC,
        "smmu_priq_prod": 0x100C8,
        "smmu_priq_cons": 0x100CC,
    }
    page0 = {reg.offset for reg in r.REGISTERS if reg.page == 0}
    assert page0.isdisjoint({0xA8, 0xAC, 0xC8, 0xCC})


def test_reset_values_only_set_defined_bits():
    for reg in r.REGISTERS:
        if reg.reset is not None:
            assert reg.reset & ~reg.layout.defined_mask == 0, reg.name


def test_id_registers_are_read_only():
    """IHI 0070 6.3: SMMU_IDR0-5, IIDR and AIDR are RO."""
    for lay in (r.IDR0, r.IDR1, r.IDR2, r.IDR3, r.IDR4, r.IDR5, r.IIDR, r.AIDR):
        assert lay.access_mask(Access.RO) == lay.defined_mask, lay.name


def test_ack_registers_mirror_their_control_registers_read_only():
    """IHI 0070 6.3, SMMU_CR0ACK / SMMU_IRQ_CTRLACK: the same fields, RO."""
    for ctrl, ack in ((r.CR0, r.CR0ACK), (r.IRQ_CTRL, r.IRQ_CTRLACK), (r.GERRORN, r.GERROR)):
        assert [(f.name, f.lsb, f.width) for f in ctrl.fields] == [
            (f.name, f.lsb, f.width) for f in ack.fields
        ]
        assert ack.access_mask(Access.RO) == ack.defined_mask


def test_producer_and_consumer_access():
    """IHI 0070 6.3: software writes CMDQ_PROD and the output queues' CONS; the SMMU owns the
    rest."""
    assert r.CMDQ_PROD["wr"].access is Access.RW
    assert r.CMDQ_CONS.access_mask(Access.RO) == r.CMDQ_CONS.defined_mask
    for prod, cons in ((r.EVENTQ_PROD, r.EVENTQ_CONS), (r.PRIQ_PROD, r.PRIQ_CONS)):
        assert prod.access_mask(Access.RO) == prod.defined_mask
        assert cons.access_mask(Access.RW) == cons.defined_mask


def test_the_derived_offsets_follow_the_table():
    by_name = {reg.name: reg.offset for reg in r.REGISTERS}
    assert by_name["smmu_cmdq_prod"] == r.OFF.CMDQ_PROD
    assert by_name["smmu_eventq_cons"] == r.OFF.EVENTQ_CONS
    assert by_name["smmu_priq_irq_cfg2"] == r.OFF.PRIQ_IRQ_CFG2


def test_opcodes_are_unique_and_in_order():
    """IHI 0070 4.1.1 "Command opcodes"."""
    opcodes = [c.opcode for c in q.COMMANDS]
    assert opcodes == sorted(set(opcodes))
    assert q.COMMANDS_BY_OPCODE[0x46] is q.CMD_SYNC


def test_every_command_starts_with_its_8_bit_opcode():
    for c in q.COMMANDS:
        assert c.layout["opcode"].lsb == 0 and c.layout["opcode"].width == 8
        assert c.layout.encode(opcode=c.opcode) & q.CMD_OPCODE_MASK == c.opcode


def test_every_event_record_starts_with_the_common_header():
    """IHI 0070 7.3: type, SSV, SubstreamID and StreamID in doubleword 0 of every record."""
    head = [(f.name, f.lsb, f.width) for f in q.EVT_COMMON.fields]
    for lay in set(q.EVENT_LAYOUTS.values()):
        assert [(f.name, f.lsb, f.width) for f in lay.fields[: len(head)]] == head
    assert set(q.EVENT_LAYOUTS) <= set(q.EVENT_NAMES)


def test_event_names_are_unique():
    assert len(set(q.EVENT_NAMES.values())) == len(q.EVENT_NAMES)
