"""IOMMU interrupt generation from the register file.

riscv-iommu: "Interrupt pending status register (ipsr)", "Interrupt-cause-to-vector register
(icvec)", "MSI configuration table (msi_cfg_tbl)"; FORMAT.md 6.5 (re-assertion, pending while
masked).
"""

from __future__ import annotations

import pytest

from iommusim.bits.riscv.regs import (
    CQCSR_CIE,
    CQCSR_CMD_ILL,
    CQCSR_CQEN,
    CQCSR_FENCE_W_IP,
    FQCSR_FIE,
    FQCSR_FQEN,
    FQCSR_FQMF,
    FQCSR_FQOF,
    IPSR_CIP,
    IPSR_FIP,
    IPSR_PIP,
    IPSR_PMIP,
    PQCSR_PIE,
    PQCSR_PQEN,
    PQCSR_PQOF,
)
from iommusim.errors import ModelError
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.hw.riscv.regs import Registers
from testsupport.fakehost import FakeHost

OFF_IPSR = 84
OFF_ICVEC = 760


def make(params: RiscvIommuParams | None = None) -> tuple[Registers, FakeHost]:
    host = FakeHost()
    regs = Registers(params or PRESETS["full"], host)
    # Vector x: address 0x1000 * (x + 1), data 0xD0 + x.
    for x in range(16):
        regs.write(768 + 16 * x, 8, 0x1000 * (x + 1))
        regs.write(776 + 16 * x, 4, 0xD0 + x)
    regs.write(OFF_ICVEC, 8, 0x3210)  # civ 0, fiv 1, pmiv 2, piv 3
    return regs, host


def msi(x: int) -> tuple[int, int]:
    return 0x1000 * (x + 1), 0xD0 + x


def test_cq_error_sets_cip_and_sends_msi_only_with_cie() -> None:
    """riscv-iommu: "ipsr": cip is set if cqcsr.cie and an error bit; MSI on the 0 -> 1 edge."""
    regs, host = make()
    regs.write(72, 4, CQCSR_CQEN)
    regs.cq_error(CQCSR_CMD_ILL)
    assert regs.read(OFF_IPSR, 4) == 0
    assert host.msis == []
    regs, host = make()
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CIE)
    regs.cq_error(CQCSR_CMD_ILL)
    regs.cq_error(CQCSR_FENCE_W_IP)  # already pending: no new edge
    assert regs.read(OFF_IPSR, 4) == IPSR_CIP
    assert host.msis == [msi(0)]


def test_ipsr_rw1c_reasserts_while_condition_persists() -> None:
    """riscv-iommu: "ipsr": "If the conditions to set that bit are still present ... that bit
    transitions again from 0->1" -- and a new MSI is sent (FORMAT.md 6.5)."""
    regs, host = make()
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE)
    regs.fq_error(FQCSR_FQOF)
    assert host.msis == [msi(1)]
    regs.write(OFF_IPSR, 4, IPSR_FIP)
    assert regs.read(OFF_IPSR, 4) == IPSR_FIP
    assert host.msis == [msi(1), msi(1)]
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE | FQCSR_FQOF)  # clear the cause (RW1C)
    regs.write(OFF_IPSR, 4, IPSR_FIP)
    assert regs.read(OFF_IPSR, 4) == 0
    assert len(host.msis) == 2


def test_new_record_is_an_edge() -> None:
    """riscv-iommu: "ipsr": "A new record is produced in the FQ" sets fip; not a level."""
    regs, host = make()
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE)
    regs.fq_record_written()
    regs.fq_record_written()
    assert host.msis == [msi(1)]
    regs.write(OFF_IPSR, 4, 0xFFFF_FFFF)
    assert regs.read(OFF_IPSR, 4) == 0
    regs.fq_record_written()
    assert host.msis == [msi(1), msi(1)]


def test_fq_record_without_fie_no_interrupt() -> None:
    regs, host = make()
    regs.write(76, 4, FQCSR_FQEN)
    regs.fq_record_written()
    regs.fq_error(FQCSR_FQMF)
    assert regs.read(OFF_IPSR, 4) == 0
    assert host.msis == []


def test_pq_interrupts() -> None:
    """riscv-iommu: "ipsr": pip for a new PQ message or pqof/pqmf when pie."""
    regs, host = make()
    regs.write(80, 4, PQCSR_PQEN | PQCSR_PIE)
    regs.pq_record_written()
    assert regs.read(OFF_IPSR, 4) == IPSR_PIP
    regs.pq_error(PQCSR_PQOF)
    regs.write(OFF_IPSR, 4, IPSR_PIP)
    assert regs.read(OFF_IPSR, 4) == IPSR_PIP  # pqof persists
    assert host.msis == [msi(3), msi(3)]


def test_masked_vector_pends_until_unmasked() -> None:
    """riscv-iommu: "MSI configuration table": "Pending messages for that vector are later
    generated if the corresponding mask bit is cleared to 0"."""
    regs, host = make()
    regs.write(768 + 16 * 1 + 12, 4, 1)  # mask vector 1
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE)
    regs.fq_record_written()
    assert regs.read(OFF_IPSR, 4) == IPSR_FIP
    assert host.msis == []
    assert regs.msi_pending(1)
    regs.write(768 + 16 * 1 + 12, 4, 1)  # still masked
    assert host.msis == []
    regs.write(768 + 16 * 1 + 12, 4, 0)
    assert host.msis == [msi(1)]
    regs.write(768 + 16 * 1 + 12, 4, 0)
    assert host.msis == [msi(1)]  # delivered once


def test_icvec_routes_causes_to_vectors() -> None:
    """riscv-iommu: "Interrupt-cause-to-vector register (icvec)"."""
    regs, host = make()
    regs.write(OFF_ICVEC, 8, 0x5555)  # everything to vector 5
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CIE)
    regs.cq_error(CQCSR_CMD_ILL)
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE)
    regs.fq_record_written()
    assert host.msis == [msi(5), msi(5)]
    assert regs.vector(IPSR_PMIP) == 5


def test_wired_interrupts() -> None:
    """riscv-iommu: "ipsr": with fctl.WSI = 1 the pending bit drives the wire of its vector."""
    regs, host = make()
    regs.write(8, 4, 0x2)  # WSI
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CIE)
    regs.cq_error(CQCSR_FENCE_W_IP)
    assert host.wired == [0]
    assert host.msis == []
    regs.write(OFF_IPSR, 4, IPSR_CIP)  # fence_w_ip persists: the wire is raised again
    assert host.wired == [0, 0]


def test_enabling_ie_with_error_pending_raises() -> None:
    """riscv-iommu: "ipsr": cip is a level of cie and the error bits (setting cie while an
    error is set makes the condition true)."""
    regs, host = make()
    regs.write(72, 4, CQCSR_CQEN)
    regs.cq_error(CQCSR_CMD_ILL)
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CIE)
    assert regs.read(OFF_IPSR, 4) == IPSR_CIP
    assert host.msis == [msi(0)]


def test_ipsr_reserved_bits_read_zero() -> None:
    """riscv-iommu: "ipsr": bits 31:4 reserved/custom."""
    regs, _ = make()
    regs.ipsr = IPSR_FIP
    regs.write(OFF_IPSR, 4, 0xFFFF_FFF0)
    assert regs.read(OFF_IPSR, 4) == IPSR_FIP


# -- wire-signaled interrupts as levels observers can see -------------------------------------


def wsi() -> tuple[Registers, FakeHost, list[tuple[int, bool]]]:
    regs, host = make()
    regs.write(8, 4, 0x2)  # fctl.WSI
    edges: list[tuple[int, bool]] = []
    regs.add_wire_observer(lambda vec, level: edges.append((vec, level)))
    return regs, host, edges


def test_wire_is_a_level_with_both_edges_observed() -> None:
    """riscv-iommu: "ipsr": "When fctl.WSI is 1, the interrupt-pending bit drives the wire
    selected by the corresponding icvec field": the wire is asserted while the bit is 1 and
    deasserted when software clears it; a cause that persists re-asserts it."""
    regs, host, edges = wsi()
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CIE)
    regs.cq_error(CQCSR_FENCE_W_IP)
    assert edges == [(0, True)] and regs.wire_level(0) and regs.wires == 1
    regs.write(OFF_IPSR, 4, IPSR_CIP)  # fence_w_ip persists
    assert edges == [(0, True), (0, False), (0, True)]
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CIE | CQCSR_FENCE_W_IP)  # clear the cause
    regs.write(OFF_IPSR, 4, IPSR_CIP)
    assert edges[-1] == (0, False) and not regs.wire_level(0) and regs.wires == 0
    assert host.wired == [0, 0]  # the host sees the rising edges
    assert host.msis == []


def test_causes_sharing_a_wire() -> None:
    """riscv-iommu: "icvec": "All causes can be mapped to the same vector": the shared wire
    stays asserted until every pending bit routed to it is cleared."""
    regs, _, edges = wsi()
    regs.write(OFF_ICVEC, 8, 0x1111)
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CIE)
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE)
    regs.cq_error(CQCSR_CMD_ILL)
    regs.fq_record_written()
    assert edges == [(1, True)]
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CIE | CQCSR_CMD_ILL)
    regs.write(OFF_IPSR, 4, IPSR_CIP)
    assert edges == [(1, True)] and regs.wire_level(1)
    regs.write(OFF_IPSR, 4, IPSR_FIP)
    assert edges == [(1, True), (1, False)]


def test_icvec_moves_the_wire() -> None:
    """riscv-iommu: "icvec": the pending bit drives the wire its icvec field selects."""
    regs, _, edges = wsi()
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE)
    regs.fq_record_written()
    assert edges == [(1, True)]
    regs.write(OFF_ICVEC, 8, 0x3290)  # fiv 1 -> 9
    assert edges == [(1, True), (1, False), (9, True)]
    assert regs.wires == 1 << 9


def test_pmip_wire_is_not_reasserted() -> None:
    """riscv-iommu: "ipsr": pmip is set on an OF 0 -> 1 transition only, so clearing it
    deasserts its wire for good."""
    regs, _, edges = wsi()
    regs.write(352, 8, 1)  # iohpmevt1: event 1
    regs.write(104, 8, (1 << 64) - 1)
    regs.hpm_count(1, 0, False, 0, False, 0, False, 0)
    assert edges == [(2, True)]
    regs.write(OFF_IPSR, 4, IPSR_PMIP)
    assert edges == [(2, True), (2, False)]


def test_msi_mode_drives_no_wire() -> None:
    """riscv-iommu: "ipsr": with fctl.WSI = 0 interrupts are messages; no wire moves."""
    regs, host = make()
    edges: list[tuple[int, bool]] = []
    regs.add_wire_observer(lambda vec, level: edges.append((vec, level)))
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE)
    regs.fq_record_written()
    assert edges == [] and host.msis == [msi(1)] and regs.wires == 0


def test_iommu_wire_observers(make_soc) -> None:
    """The IOMMU's observers see the fault-queue wire rise on a recorded fault and fall when
    software clears ipsr.fip (riscv-iommu: "ipsr", "Fault/Event-Queue (FQ)")."""
    soc = make_soc()
    iommu = soc.iommu
    soc.set_reg(8, 0x2)  # fctl.WSI (the queues are on: fine for the model)
    soc.set_reg(OFF_ICVEC, 0x10, 8)  # fiv = 1
    soc.set_reg(76, FQCSR_FQEN | FQCSR_FIE)
    edges: list[tuple[int, bool]] = []

    def observer(vec: int, level: bool) -> None:
        edges.append((vec, level))

    iommu.add_wire_observer(observer)
    soc.translate(0x7, 0x1000)  # no DC: cause 258, a new FQ record
    assert edges == [(1, True)] and iommu.wire_level(1)
    soc.set_reg(OFF_IPSR, IPSR_FIP)
    assert edges == [(1, True), (1, False)] and not iommu.wire_level(1)
    assert iommu.wired == [1]
    iommu.remove_wire_observer(observer)
    with pytest.raises(ModelError, match="must be registered"):
        iommu.remove_wire_observer(observer)
