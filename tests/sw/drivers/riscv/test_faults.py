"""Fault reporting: hardware fault queue -> MSI -> interrupt sink -> driver -> core -> device.

riscv-iommu "Fault/Event-Queue (FQ)": the IOMMU writes a record and sets ipsr.fip, which
sends the MSI of the icvec.fiv vector (riscv-iommu "Interrupt pending status register",
"MSI configuration table"); on overflow it sets fqcsr.fqof and drops records until software
clears it. Linux ``riscv_iommu_fltq_process``: clear ipsr.fip, consume the records between
the shadow head and fqt, move fqh, W1C fqmf/fqof. The model also forwards each record to the
core, which calls the device's fault handler (``iommu_report_device_fault``, unrecoverable).
"""

from __future__ import annotations

from typing import Any

from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import FQCSR_FQOF, OFF_FQCSR, OFF_FQH, OFF_FQT, OFF_IPSR
from iommusim.hw.riscv.params import PRESETS
from iommusim.platform.system import EndpointConfig
from iommusim.sw.core.device import Fault
from iommusim.sw.prot import IOMMU_READ

PAGE = 4096
READ_PAGE_FAULT = 13
WRITE_PAGE_FAULT = 15
DDT_ENTRY_INVALID = 258
TTYP_DISALLOWED = 260
FIV = 1  # Linux: icvec.fiv = 1 % n


def collect(m: Any, name: str) -> list[Fault]:
    got: list[Fault] = []
    m.core.register_fault_handler(m.dev(name), got.append)
    return got


def test_fault_travels_to_the_device_handler_after_the_interrupt_latency(machine: Any) -> None:
    m = machine()
    got = collect(m, "nic")
    ep = m.ep("nic")
    res = ep.dma_write(0x5000, b"unmapped")
    assert res.fault.cause == WRITE_PAGE_FAULT
    t_fault = m.system.clock.now
    # The record is in the queue at once; the handler has not run yet.
    assert m.reg32(OFF_FQT) == 1
    assert got == []
    latency = m.system.costs.irq_latency_ns
    irq = m.driver.irq_base + FIV
    assert m.system.sink.received == {irq: 1}
    m.system.settle()
    remaining = t_fault + latency - m.system.clock.now
    assert remaining > 0
    m.system.run_for(remaining - 1)
    assert got == []
    m.system.run_for(1)
    assert got == [
        Fault(
            rid=0x08,
            iova=0x5000,
            pasid=None,
            write=True,
            reason="Write/AMO page fault",
            # riscv-iommu: "Fault/Event-Queue (FQ)": the record the driver read, TTYP 3
            # "untranslated write/AMO", iotval the faulting IOVA.
            record=FaultRecord(
                cause=WRITE_PAGE_FAULT,
                ttyp=3,
                did=0x08,
                pv=False,
                pid=0,
                priv=False,
                iotval=0x5000,
                iotval2=0,
            ),
        )
    ]
    assert m.driver.faults_seen == 1
    assert m.driver.stats["irqs"] == 1
    # The driver consumed the record and cleared fip.
    assert m.reg32(OFF_FQH) == m.reg32(OFF_FQT) == 1
    assert not m.reg32(OFF_IPSR) & 2
    assert m.core.unhandled_faults == []


def test_read_fault_fields(machine: Any) -> None:
    m = machine()
    got = collect(m, "nvme")
    dom = m.paging("nvme")
    m.core.map(dom, 0x10000, m.RAM, PAGE, IOMMU_READ)
    res = m.ep("nvme").dma_read(0x10F00, 0x200)  # crosses into an unmapped page
    assert (res.done, res.fault.cause) == (0x100, READ_PAGE_FAULT)
    assert m.ep("nvme").dma_write(0x10000, b"ro").fault.cause == WRITE_PAGE_FAULT
    m.system.run_for(10_000)
    assert [(f.rid, f.record.cause, f.iova, f.write) for f in got] == [
        (0x10, READ_PAGE_FAULT, 0x11000, False),
        (0x10, WRITE_PAGE_FAULT, 0x10000, True),
    ]


def test_blocked_and_pasid_faults(machine: Any) -> None:
    m = machine(
        mode="passthrough",
        endpoints=(EndpointConfig("nic", 0x08, pasid_bits=8), EndpointConfig("nvme", 0x10)),
    )
    got = collect(m, "nic")
    ep = m.ep("nic")
    assert ep.dma_read(m.RAM, 4, pasid=5).fault.cause == TTYP_DISALLOWED
    m.core.attach_device(m.driver.blocked_domain, m.dev("nic"))
    assert ep.dma_write(m.RAM, b"x").fault.cause == DDT_ENTRY_INVALID
    m.system.run_for(10_000)
    assert [(f.record.cause, f.pasid, f.write, f.reason) for f in got] == [
        (TTYP_DISALLOWED, 5, False, "Transaction type disallowed"),
        (DDT_ENTRY_INVALID, None, True, "DDT entry not valid"),
    ]


def test_faults_go_to_the_faulting_device_only(machine: Any) -> None:
    m = machine()
    nic, nvme = collect(m, "nic"), collect(m, "nvme")
    m.ep("nvme").dma_read(0x7000, 4)
    m.system.run_for(10_000)
    assert nic == []
    assert [f.rid for f in nvme] == [0x10]


def test_fault_without_handler_is_kept_as_unhandled(machine: Any) -> None:
    m = machine()
    m.ep("nic").dma_read(0x7000, 4)
    m.system.run_for(10_000)
    assert m.driver.faults_seen == 1
    [u] = m.core.unhandled_faults
    assert u.driver == m.driver.name
    assert (u.fault.rid, u.fault.record.cause, u.fault.iova) == (0x08, READ_PAGE_FAULT, 0x7000)


def test_several_faults_one_interrupt(machine: Any) -> None:
    # fip stays set until software clears it: faults before the handler runs share its MSI.
    m = machine()
    got = collect(m, "nic")
    ep = m.ep("nic")
    for k in range(5):
        ep.dma_read(0x1000 * (k + 1), 4)
    assert m.system.sink.received == {m.driver.irq_base + FIV: 1}
    m.system.run_for(10_000)
    assert [f.iova for f in got] == [0x1000 * (k + 1) for k in range(5)]
    assert m.driver.stats["irqs"] == 1


def test_fault_queue_overflow_is_counted_and_recovers(machine: Any) -> None:
    # A 4-entry queue holds 3 records; the 4th sets fqof and it and later faults are lost
    # until the driver clears fqof (riscv-iommu "Fault queue CSR (fqcsr)").
    m = machine(fq_entries=4)
    assert m.driver.fltq.entries == 4
    got = collect(m, "nic")
    ep = m.ep("nic")
    for k in range(6):
        assert ep.dma_read(0x1000 * (k + 1), 4).fault.cause == READ_PAGE_FAULT
    assert m.reg32(OFF_FQCSR) & FQCSR_FQOF
    m.system.run_for(100_000)
    assert [f.iova for f in got] == [0x1000, 0x2000, 0x3000]
    assert m.driver.fltq.overflows == 1
    assert not m.reg32(OFF_FQCSR) & FQCSR_FQOF
    # Recording resumes, and the ring wraps.
    for k in range(5):
        ep.dma_write(0x9000 + 0x1000 * k, b"w")
        m.system.run_for(100_000)
    assert [f.iova for f in got[3:]] == [0x9000 + 0x1000 * k for k in range(5)]
    assert m.driver.fltq.overflows == 1
    assert m.driver.faults_seen == 8


def test_single_vector_machines_route_faults_too(machine: Any) -> None:
    # "minimal" has no icvec bits: every cause shares vector 0.
    m = machine(PRESETS["minimal"])
    assert m.driver.vectors == 1
    got = collect(m, "nic")
    m.ep("nic").dma_write(0x3000, b"x")
    m.system.run_for(10_000)
    assert [(f.record.cause, f.iova) for f in got] == [(WRITE_PAGE_FAULT, 0x3000)]
    assert m.system.sink.received == {m.driver.irq_base: 1}


def test_illegal_command_is_reported_not_hidden(machine: Any) -> None:
    # riscv-iommu "Command-queue CSR (cqcsr)": an illegal command sets cmd_ill and stops the
    # queue; IOFENCE.C behind it never completes. The driver reports the failure (Linux
    # logs it; neither recovers the queue).
    m = machine()
    assert m.driver.sync() is True
    m.driver.command((0x7F, 0))
    assert m.driver.sync() is False
    assert any("cqcsr" in e for e in m.driver.cq_errors)
    assert m.driver.cmdq.errors
