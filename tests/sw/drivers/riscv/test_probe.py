"""Driver probe: interrupts, queues, device-directory mode discovery, probe_device.

Linux ``riscv_iommu_init`` (reference digest 4.1): init_check (busy or translating -> EBUSY),
icvec CIV=0, FIV=1%n, PIV=2%n, PMIV=3%n, queues enabled with EN|IE, then
``riscv_iommu_iodir_set_mode`` asking for 3LVL and stepping down while the WARL ddtp refuses,
followed by IODIR.INVAL_DDT + IOTINVAL.VMA + IOFENCE.C. riscv-iommu "Guidelines for
initialization" is the spec side of the same sequence.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.riscv.regs import (
    CQCSR_CIE,
    CQCSR_CQEN,
    CQCSR_CQON,
    CQCSR_ERRORS,
    FCTL_BE,
    FCTL_WSI,
    FQCSR_ERRORS,
    FQCSR_FIE,
    FQCSR_FQEN,
    FQCSR_FQON,
    MODE_1LVL,
    MODE_2LVL,
    MODE_3LVL,
    MODE_BARE,
    MODE_OFF,
    OFF_CQB,
    OFF_CQCSR,
    OFF_DDTP,
    OFF_FCTL,
    OFF_FQB,
    OFF_FQCSR,
    OFF_ICVEC,
    OFF_MSI_CFG_TBL,
    cap,
)
from iommusim.errors import Busy, NoDevice
from iommusim.hw.riscv.params import PRESETS
from iommusim.platform.endpoint import Endpoint
from iommusim.platform.system import RamRegion, System, SystemConfig
from iommusim.sw.core.device import Device
from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver
from iommusim.sw.kernel import Kernel
from iommusim.sw.pages import PageAllocator

PAGE = 4096
# Device-id bits a directory of each depth covers (riscv-iommu "Device-Directory-Table
# (DDT)"; Linux riscv_iommu_get_dc): base format DDI widths 7/9/8, extended 6/9/9.
DID_BITS = {
    ("full", MODE_1LVL): 6,
    ("full", MODE_2LVL): 15,
    ("full", MODE_3LVL): 24,
    ("minimal", MODE_1LVL): 7,
    ("minimal", MODE_2LVL): 16,
    ("minimal", MODE_3LVL): 24,
}


def test_probe_enables_both_queues_and_a_3lvl_directory(machine: Any) -> None:
    m = machine()
    drv = m.driver
    cq, fq = drv.cmdq, drv.fltq
    cqcsr = m.reg32(OFF_CQCSR)
    fqcsr = m.reg32(OFF_FQCSR)
    assert cqcsr & (CQCSR_CQEN | CQCSR_CIE | CQCSR_CQON) == CQCSR_CQEN | CQCSR_CIE | CQCSR_CQON
    assert fqcsr & (FQCSR_FQEN | FQCSR_FIE | FQCSR_FQON) == FQCSR_FQEN | FQCSR_FIE | FQCSR_FQON
    assert not cqcsr & CQCSR_ERRORS
    assert not fqcsr & FQCSR_ERRORS
    ddtp = m.reg64(OFF_DDTP)
    assert ddtp & 0xF == MODE_3LVL == drv.mode
    assert ddtp >> 10 << 12 == drv.ddt.root_pa
    assert drv.ddt.levels == 3
    # Little-endian, message-signalled (fctl.BE = fctl.WSI = 0).
    assert not m.reg32(OFF_FCTL) & (FCTL_BE | FCTL_WSI)
    # Linux defaults: 8192 commands, 4096 fault records; cqb/fqb hold LOG2SZ-1 and the PPN of
    # a buffer aligned to its size (riscv-iommu "Command-queue base (cqb)").
    assert (cq.entries, fq.entries) == (8192, 4096)
    assert m.reg64(OFF_CQB) == (cq.base_pa >> 12) << 10 | 12
    assert m.reg64(OFF_FQB) == (fq.base_pa >> 12) << 10 | 11
    assert cq.base_pa % (8192 * 16) == 0
    assert fq.base_pa % (4096 * 32) == 0


def test_probe_flushes_everything_after_setting_the_mode(machine: Any) -> None:
    # riscv_iommu_iodir_set_mode: IODIR.INVAL_DDT (all), IOTINVAL.VMA (all), IOFENCE.C.
    m = machine()
    first = m.commands_since(0)[:3]
    assert [c["op"] for c in first] == ["iodir", "iotinval", "iofence"]
    assert first[0]["func3"] == 0 and first[0]["dv"] == 0
    assert first[1]["func3"] == 0 and first[1]["pscv"] == 0 and first[1]["av"] == 0
    assert first[1]["gv"] == 0
    assert first[2]["pr"] == 1 and first[2]["pw"] == 1


@pytest.mark.parametrize(
    ("preset", "vectors", "icvec"),
    [("full", 16, 0x2310), ("linux-virt", 4, 0x2310), ("minimal", 1, 0)],
)
def test_interrupt_vectors_follow_linux(
    machine: Any, preset: str, vectors: int, icvec: int
) -> None:
    # Linux riscv_iommu_init: CIV = 0, FIV = 1 % n, PIV = 2 % n, PMIV = 3 % n, where n is
    # how many vectors icvec can name (riscv-iommu "Interrupt-cause-to-vector register").
    m = machine(PRESETS[preset])
    assert m.driver.vectors == vectors
    assert m.reg64(OFF_ICVEC) == icvec
    imsic = m.system.config.imsic_base_pa
    for v in range(vectors):
        # riscv-iommu "MSI configuration table": address, data, vector control (unmasked).
        base = OFF_MSI_CFG_TBL + 16 * v
        assert m.reg64(base) == imsic
        assert m.reg32(base + 8) == m.driver.irq_base + v
        assert m.reg32(base + 12) == 0
    assert sorted(m.system.sink._handlers) == [m.driver.irq_base + v for v in range(vectors)]


@pytest.mark.parametrize("preset", ["full", "minimal"])
@pytest.mark.parametrize("max_mode", [MODE_1LVL, MODE_2LVL, MODE_3LVL])
def test_directory_mode_steps_down_to_what_ddtp_accepts(
    machine: Any, preset: str, max_mode: int
) -> None:
    # riscv-iommu "Device-directory-table pointer (ddtp)": iommu_mode is WARL; the driver
    # asks for 3LVL and retries one level down while the register reads back Off.
    m = machine(PRESETS[preset].with_(max_mode=max_mode), mode="passthrough")
    drv = m.driver
    assert drv.mode == max_mode
    assert m.reg64(OFF_DDTP) & 0xF == max_mode
    assert drv.ddt.levels == max_mode - MODE_1LVL + 1
    bits = DID_BITS[preset, max_mode]
    assert drv.ddt.did_bits == bits
    assert drv.ddt.dc_bytes == (64 if preset == "full" else 32)
    # The directory the driver builds is the one the hardware walks: the highest device id
    # that fits translates, the next one is refused by probe_device.
    top = (1 << bits) - 1
    m.kernel.core.probe_device(Device("top", top))
    assert Endpoint(m.system, "top", top).dma_read(m.RAM, 8).ok
    # (With 3LVL a 25-bit rid is no PCIe requester id: no IOMMU claims it at all.)
    why = f"does not fit the {bits}-bit DDT" if bits < 24 else "behind no registered IOMMU"
    with pytest.raises(NoDevice, match=why) as e:
        m.kernel.core.probe_device(Device("beyond", 1 << bits))
    assert e.value.errno == errno.ENODEV


@settings(max_examples=25, deadline=None)
@given(
    preset=st.sampled_from(["full", "minimal"]),
    max_mode=st.sampled_from([MODE_1LVL, MODE_2LVL, MODE_3LVL]),
    rids=st.lists(st.integers(0, (1 << 24) - 1), min_size=2, max_size=4, unique=True),
)
def test_software_directory_matches_the_hardware_walk(
    preset: str, max_mode: int, rids: list[int]
) -> None:
    # Differential: DeviceDirectory (Linux riscv_iommu_get_dc) against the IOMMU's "Process to
    # locate the Device-context". Every rid gets its own context: blocking one leaves the
    # others translating.
    params = PRESETS[preset].with_(max_mode=max_mode)
    system = System(SystemConfig(ram=(RamRegion(0x8000_0000, 16 << 20),), iommu=params))
    kernel = Kernel(system, dma_mode="passthrough")
    bits = DID_BITS[preset, max_mode]
    rids = [r & ((1 << bits) - 1) for r in rids]
    rids = list(dict.fromkeys(rids))
    devs = [Device(f"d{r:x}", r) for r in rids]
    for d in devs:
        kernel.core.probe_device(d)
    eps = [Endpoint(system, d.name, d.rid) for d in devs]
    system.ram.write(0x8000_0000, b"marker!!")
    assert all(ep.dma_read(0x8000_0000, 8).data == b"marker!!" for ep in eps)
    dcs = {kernel.iommu.ddt.dc_pa(r, alloc=False) for r in rids}
    assert len(dcs) == len(rids)
    kernel.core.attach_device(kernel.iommu.blocked_domain, devs[0])
    assert eps[0].dma_read(0x8000_0000, 8).fault.cause == 258
    assert all(ep.dma_read(0x8000_0000, 8).ok for ep in eps[1:])


def test_intermediate_tables_are_allocated_on_first_use(machine: Any) -> None:
    # Extended format, 3LVL: DDI[0] = rid[5:0], DDI[1] = rid[14:6], DDI[2] = rid[23:15].
    m = machine()
    ddt = m.driver.ddt
    assert ddt.tables == 3  # root, one level-1 table, one leaf holding rids 0x08 and 0x10
    free = m.kernel.pages.nr_free
    m.core.probe_device(Device("same-leaf", 0x3F))
    assert ddt.tables == 3
    m.core.probe_device(Device("next-leaf", 0x40))
    assert ddt.tables == 4
    m.core.probe_device(Device("far", 1 << 15))
    assert ddt.tables == 6
    # Default DMA domains take pages too; the directory took exactly three.
    assert free - m.kernel.pages.nr_free >= 3
    assert ddt.dc_pa(0x41, alloc=False) is not None  # same leaf as 0x40
    assert ddt.dc_pa(0x80, alloc=False) is None  # leaf never made
    assert ddt.tables == 6


def test_probe_of_a_translating_iommu_is_busy(machine: Any) -> None:
    # Linux riscv_iommu_init_check: an IOMMU already translating at boot -> EBUSY.
    m = machine()
    ddtp = m.reg64(OFF_DDTP)
    handlers = dict(m.system.sink._handlers)
    free = m.kernel.pages.nr_free
    second = RiscvIommuDriver(
        m.bus,
        m.system.config.iommu_base_pa,
        m.kernel.pages,
        m.system.sink,
        msi_pa=m.system.config.imsic_base_pa,
        name="again",
    )
    with pytest.raises(Busy, match="already translating") as e:
        second.probe()
    assert e.value.errno == errno.EBUSY
    assert m.reg64(OFF_DDTP) == ddtp
    assert m.system.sink._handlers == handlers
    assert m.kernel.pages.nr_free == free
    assert second.cmdq is None and second.ddt is None
    # The first driver still works.
    assert m.ep("nic").dma_read(0x1000, 4).fault.cause == 13


def test_unprobed_driver_refuses_devices_and_commands() -> None:
    system = System()
    pages = PageAllocator(system.bus, 0x8000_0000, 1 << 20)
    drv = RiscvIommuDriver(
        system.bus,
        system.config.iommu_base_pa,
        pages,
        system.sink,
        msi_pa=system.config.imsic_base_pa,
    )
    with pytest.raises(NoDevice, match="not translating"):
        drv.probe_device(Device("x", 1))
    with pytest.raises(NoDevice, match="not probed"):
        drv.sync()
    with pytest.raises(NoDevice, match="not probed"):
        drv.command((3, 0))


def test_probe_device_of_a_rid_not_behind_this_iommu() -> None:
    system = System()
    pages = PageAllocator(system.bus, 0x8000_0000, 4 << 20)
    drv = RiscvIommuDriver(
        system.bus,
        system.config.iommu_base_pa,
        pages,
        system.sink,
        msi_pa=system.config.imsic_base_pa,
        rids=range(0x100, 0x200),
    )
    drv.probe()
    assert drv.owns(Device("in", 0x100)) and not drv.owns(Device("out", 0x200))
    dev = Device("out", 0x200)
    with pytest.raises(NoDevice, match="is not behind riscv-iommu0"):
        drv.probe_device(dev)
    assert dev.iommu is None


@pytest.mark.parametrize(("want", "got"), [(4, 4), (2, 2), (1, 2), (5000, 4096)])
def test_queue_sizes_are_powers_of_two(machine: Any, want: int, got: int) -> None:
    m = machine(cq_entries=want, fq_entries=want)
    assert m.driver.cmdq.entries == got
    assert m.driver.fltq.entries == got
    assert m.reg64(OFF_CQB) & 0x1F == got.bit_length() - 2
    # The machine works with the smallest queues too: commands wrap around the ring.
    dom = m.paging("nic")
    for k in range(3 * got):
        m.core.map(dom, k * PAGE, m.RAM, PAGE, 1)
        m.core.unmap(dom, k * PAGE, PAGE)
    assert m.driver.cq_errors == []


def test_no_first_stage_mode_is_enodev() -> None:
    # Linux: page-table mode from caps Sv57 > Sv48 > Sv39, none -> ENODEV.
    full = PRESETS["full"]
    caps = full.capabilities & ~(1 << cap.SV39 | 1 << cap.SV48 | 1 << cap.SV57)
    system = System(SystemConfig(iommu=full.with_(capabilities=caps)))
    pages = PageAllocator(system.bus, 0x8000_0000, 4 << 20)
    drv = RiscvIommuDriver(
        system.bus,
        system.config.iommu_base_pa,
        pages,
        system.sink,
        msi_pa=system.config.imsic_base_pa,
    )
    with pytest.raises(NoDevice, match="no Sv39/Sv48/Sv57") as e:
        drv.probe()
    assert e.value.errno == errno.ENODEV


def test_no_directory_mode_is_enodev() -> None:
    system = System(SystemConfig(iommu=PRESETS["full"].with_(max_mode=MODE_BARE)))
    pages = PageAllocator(system.bus, 0x8000_0000, 4 << 20)
    drv = RiscvIommuDriver(
        system.bus,
        system.config.iommu_base_pa,
        pages,
        system.sink,
        msi_pa=system.config.imsic_base_pa,
    )
    with pytest.raises(NoDevice, match="no device-directory mode accepted"):
        drv.probe()
    assert system.bus.read64(system.config.iommu_base_pa + OFF_DDTP) & 0xF == MODE_OFF


@pytest.mark.parametrize("why", ["no-first-stage", "no-directory-mode"])
def test_failed_probe_leaves_nothing_behind(why: str) -> None:
    full = PRESETS["full"]
    if why == "no-first-stage":
        caps = full.capabilities & ~(1 << cap.SV39 | 1 << cap.SV48 | 1 << cap.SV57)
        params = full.with_(capabilities=caps)
    else:
        params = full.with_(max_mode=MODE_BARE)
    system = System(SystemConfig(iommu=params))
    pages = PageAllocator(system.bus, 0x8000_0000, 4 << 20)
    free = pages.nr_free
    drv = RiscvIommuDriver(
        system.bus,
        system.config.iommu_base_pa,
        pages,
        system.sink,
        msi_pa=system.config.imsic_base_pa,
    )
    with pytest.raises(NoDevice):
        drv.probe()
    with pytest.raises(NoDevice):
        drv.probe()  # the same answer again, not a leftover-state error
    assert system.sink._handlers == {}
    assert pages.nr_free == free
    assert not system.bus.read32(system.config.iommu_base_pa + OFF_CQCSR) & CQCSR_CQON


def test_oversized_queue_request_shrinks_to_what_can_be_allocated(machine: Any) -> None:
    m = machine(cq_entries=1 << 20)
    assert m.driver.cmdq.entries < 1 << 20
    assert m.ep("nic").dma_read(0x1000, 4).fault.cause == 13
