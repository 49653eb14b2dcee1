"""IHI 0070 6 "Memory map and registers": the register file's access rules and the register
side effects on the translator."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iommusim.bits.arm.smmuv3_regs import (
    CMDQ_BASE,
    CR0,
    CR2,
    GBPA,
    GERROR,
    IRQ_CFG0,
    OFF,
    PAGE1,
    STRTAB_BASE,
    STRTAB_BASE_CFG,
)
from iommusim.hw.smmuv3.params import PRESETS


def test_id_registers_report_the_parameters(make_bench):
    """IHI 0070 6.3 SMMU_IDR0-5, SMMU_IIDR, SMMU_AIDR: read-only, from the implementation."""
    b = make_bench(enable=False)
    p = b.params
    assert [b.read(o) for o in (OFF.IDR0, OFF.IDR1, OFF.IDR3, OFF.IDR5)] == [
        p.idr0,
        p.idr1,
        p.idr3,
        p.idr5,
    ]
    assert b.read(OFF.IIDR) == p.iidr
    assert b.read(OFF.AIDR) == p.aidr
    b.write(OFF.IDR0, 4, 0)
    assert b.read(OFF.IDR0) == p.idr0


def test_cr0ack_follows_cr0(make_bench):
    """IHI 0070 6.3 SMMU_CR0ACK: each enable is acknowledged once in effect."""
    b = make_bench(enable=False)
    b.enable(smmuen=1, eventqen=1, cmdqen=1, priqen=1)
    want = CR0.encode(smmuen=1, eventqen=1, cmdqen=1, priqen=1)
    assert b.read(OFF.CR0) == want
    assert b.read(OFF.CR0ACK) == want
    assert b.t.enabled
    b.enable()
    assert b.read(OFF.CR0ACK) == 0
    assert not b.t.enabled


def test_cr0_enables_of_absent_features_are_res0(make_bench):
    """IHI 0070 6.3 SMMU_CR0: PRIQEN needs IDR0.PRI, ATSCHK needs IDR0.ATS."""
    b = make_bench("minimal", enable=False)
    b.enable(smmuen=1, priqen=1, atschk=1)
    assert b.read(OFF.CR0) == CR0.encode(smmuen=1)


def test_page1_holds_the_output_queue_indexes(make_bench):
    """IHI 0070 6.1: EVENTQ/PRIQ PROD and CONS live in page 1; their page-0 offsets are
    reserved."""
    b = make_bench()
    b.write(PAGE1 + 0xAC, 4, 5)
    assert b.read(OFF.EVENTQ_CONS) == 5
    assert b.read(0xAC) == 0
    b.write(0xAC, 4, 7)
    assert b.read(OFF.EVENTQ_CONS) == 5


def test_64bit_registers_take_32bit_halves(make_bench):
    """IHI 0070 6.2: 64-bit registers are accessible as two 32-bit halves."""
    b = make_bench(enable=False)
    b.write(OFF.STRTAB_BASE, 4, 0x1234_5000)
    b.write(OFF.STRTAB_BASE + 4, 4, 0x4000_0000)
    assert b.read(OFF.STRTAB_BASE, 8) == 0x4000_0000_1234_5000
    assert b.read(OFF.STRTAB_BASE + 4) == 0x4000_0000
    assert STRTAB_BASE["ra"].get(b.read(OFF.STRTAB_BASE, 8)) == 1


def test_unmapped_and_misaligned_accesses_read_zero(make_bench):
    """IHI 0070 6.2: reserved offsets read 0; the model's choice for misaligned or odd-size
    accesses is read 0, write ignored."""
    b = make_bench()
    assert b.read(0x30) == 0
    assert b.read(OFF.IDR0 + 1) == 0
    assert b.read(OFF.IDR0, 2) == 0
    assert b.read(2 * PAGE1) == 0
    assert b.read(-4) == 0


def test_priq_and_msi_registers_absent_without_the_features(make_bench):
    """IHI 0070 6.3: the PRIQ registers need IDR0.PRI, the IRQ_CFG MSI registers IDR0.MSI."""
    b = make_bench("minimal", enable=False)
    b.write(OFF.PRIQ_BASE, 8, 0x1000)
    b.write(OFF.EVENTQ_IRQ_CFG0, 8, 0x1000)
    assert b.read(OFF.PRIQ_BASE, 8) == 0
    assert b.read(OFF.EVENTQ_IRQ_CFG0, 8) == 0


def test_strtab_latched_when_smmuen_set(make_bench):
    """IHI 0070 6.3 SMMU_STRTAB_BASE/_CFG: the SMMU uses the values in place when SMMUEN goes
    to 1; LOG2SIZE above IDR1.SIDSIZE is SIDSIZE."""
    b = make_bench(enable=False)
    b.write(OFF.STRTAB_BASE, 8, b.STRTAB_PA)
    b.write(OFF.STRTAB_BASE_CFG, 4, STRTAB_BASE_CFG.encode(log2size=40, split=8, fmt=1))
    assert b.calls("set_stream_table") == []
    b.enable(smmuen=1)
    assert b.calls("set_stream_table") == [("set_stream_table", b.STRTAB_PA, 16, 1, 8)]


def test_strtab_writes_ignored_while_enabled(bench):
    """IHI 0070 6.3 SMMU_STRTAB_BASE: a write while SMMUEN is 1 is CONSTRAINED UNPREDICTABLE;
    the model ignores it."""
    bench.write(OFF.STRTAB_BASE, 8, bench.STRTAB_PA)
    bench.write(OFF.STRTAB_BASE_CFG, 4, 10)
    assert bench.read(OFF.STRTAB_BASE, 8) == 0
    assert bench.read(OFF.STRTAB_BASE_CFG) == 0


def test_strtab_cfg_fmt_and_split_are_legalised(make_bench):
    """IHI 0070 6.3 SMMU_STRTAB_BASE_CFG: FMT 2-level only with IDR0.ST_LEVEL; SPLIT is 6, 8
    or 10."""
    b = make_bench("minimal", enable=False)
    b.write(OFF.STRTAB_BASE_CFG, 4, STRTAB_BASE_CFG.encode(log2size=5, split=7, fmt=1))
    assert b.read(OFF.STRTAB_BASE_CFG) == STRTAB_BASE_CFG.encode(log2size=5, split=6)


def test_address_bits_above_oas_are_res0(make_bench):
    """IHI 0070 6.3: address fields hold only bits below IDR5.OAS (minimal: 40 bits)."""
    b = make_bench("minimal", enable=False)
    b.write(OFF.STRTAB_BASE, 8, (1 << 45) | b.STRTAB_PA)
    assert b.read(OFF.STRTAB_BASE, 8) == b.STRTAB_PA


def test_gbpa_update_protocol(make_bench):
    """IHI 0070 6.3 SMMU_GBPA: fields change only on a write with UPDATE = 1, which completes
    (reads 0); ABORT makes transactions abort while SMMUEN is 0."""
    b = make_bench(enable=False)
    b.write(OFF.GBPA, 4, GBPA.encode(abort=1))
    assert b.read(OFF.GBPA) == 0
    assert not b.t.gbpa_abort
    b.write(OFF.GBPA, 4, GBPA.encode(abort=1, update=1, shcfg=1))
    assert b.read(OFF.GBPA) == GBPA.encode(abort=1, shcfg=1)
    assert b.t.gbpa_abort


def test_cr2_sets_translator_attributes(make_bench):
    """IHI 0070 6.3 SMMU_CR2: E2H, RECINVSID and PTM, written while SMMUEN is 0."""
    b = make_bench(enable=False)
    b.write(OFF.CR2, 4, CR2.encode(e2h=1, recinvsid=1, ptm=1))
    assert (b.t.e2h, b.t.record_bad_sid, b.t.ptm) == (True, True, True)
    b.enable(smmuen=1)
    b.write(OFF.CR2, 4, 0)
    assert b.read(OFF.CR2) == CR2.encode(e2h=1, recinvsid=1, ptm=1)


def test_cr2_ptm_res1_and_e2h_res0_without_btm_and_hyp(make_bench):
    """IHI 0070 6.3 SMMU_CR2: without IDR0.BTM the SMMU never takes part in broadcast TLB
    maintenance (PTM reads 1); E2H needs IDR0.HYP."""
    b = make_bench("minimal", enable=False)
    assert b.read(OFF.CR2) == CR2.encode(ptm=1)
    b.write(OFF.CR2, 4, CR2.encode(e2h=1))
    assert b.read(OFF.CR2) == CR2.encode(ptm=1)
    assert b.t.ptm


def test_queue_base_ignored_while_queue_enabled(bench):
    """IHI 0070 6.3 SMMU_EVENTQ_BASE: a write while EVENTQEN is 1 is CONSTRAINED
    UNPREDICTABLE; the model ignores it."""
    before = bench.read(OFF.EVENTQ_BASE, 8)
    bench.write(OFF.EVENTQ_BASE, 8, 0)
    assert bench.read(OFF.EVENTQ_BASE, 8) == before
    assert CMDQ_BASE["addr"].get(before) << 5 == bench.EVENTQ_PA


def test_output_queue_prod_written_only_while_disabled(bench):
    """IHI 0070 6.3 SMMU_EVENTQ_PROD: software initialises it while EVENTQEN is 0."""
    bench.write(OFF.EVENTQ_PROD, 4, 3)
    assert bench.read(OFF.EVENTQ_PROD) == 0
    bench.enable(smmuen=1, cmdqen=1)
    bench.write(OFF.EVENTQ_PROD, 4, 3)
    assert bench.read(OFF.EVENTQ_PROD) == 3


def test_gerrorn_acknowledges_only_active_errors(bench):
    """IHI 0070 6.3 SMMU_GERRORN: toggling an active error's bit acknowledges it; toggling an
    inactive one is CONSTRAINED UNPREDICTABLE and the model ignores it."""
    bench.submit(0xFF)  # an unknown opcode: CMDQ_ERR
    err = GERROR.mask("cmdq_err")
    assert bench.read(OFF.GERROR) == err
    bench.write(OFF.GERRORN, 4, GERROR.mask("sfm_err"))
    assert bench.read(OFF.GERRORN) == 0
    bench.write(OFF.GERRORN, 4, err)
    assert bench.read(OFF.GERRORN) == err


def test_irq_cfg0_address_is_word_aligned(bench):
    """IHI 0070 6.3 SMMU_EVENTQ_IRQ_CFG0: ADDR[51:2]."""
    bench.write(OFF.EVENTQ_IRQ_CFG0, 8, 0x1003)
    assert bench.read(OFF.EVENTQ_IRQ_CFG0, 8) == IRQ_CFG0.encode(addr=0x1000 >> 2)


_OFFSETS = st.sampled_from(
    [o for o in vars(OFF).values() if isinstance(o, int)] + [0x30, 0x10000, 0xFFFC]
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(_OFFSETS, st.sampled_from([1, 2, 4, 8, 3]), st.integers(-(1 << 70), 1 << 70)),
        max_size=40,
    ),
    st.sampled_from(sorted(PRESETS)),
)
def test_no_register_sequence_raises(make_bench, accesses, preset):
    """IHI 0070 6: any access sequence (including ones the spec calls UNPREDICTABLE, and
    queues pointing at garbage) completes without an exception."""
    b = make_bench(preset, enable=False)
    for offset, size, value in accesses:
        b.write(offset, size, value)
        b.read(offset, size)
