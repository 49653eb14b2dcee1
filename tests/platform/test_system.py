"""The machine builder (platform/system.py): configuration checks, the address map, time.

Error messages read "X must be Y, not Z" and name the configuration field (STYLE, after
Amaranth); the address map must not overlap (amaranth-soc memory maps check overlap).
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.riscv.regs import OFF_CQB, OFF_CQCSR, OFF_CQH, OFF_CQT, REGISTERS_SIZE
from iommusim.errors import ApiError, InvalidArgument
from iommusim.hw.riscv.params import PRESETS
from iommusim.platform.costs import CostModel
from iommusim.platform.system import EndpointConfig, RamRegion, System, SystemConfig
from iommusim.sw.drivers.riscv.commands import iofence_c

MiB = 1 << 20


def test_default_machine() -> None:
    system = System()
    cfg = system.config
    assert cfg.ram == (RamRegion(0x8000_0000, 256 * MiB),)
    assert cfg.iommu == PRESETS["full"]
    regions = {r.name: (r.base_pa, r.size_bytes) for r in system.bus.regions}
    assert regions == {
        "ram0": (0x8000_0000, 256 * MiB),
        "iommu": (cfg.iommu_base_pa, REGISTERS_SIZE),
        "imsic": (cfg.imsic_base_pa, 4096),
    }
    assert system.bus.frozen
    assert system.endpoints == {}
    # RAM works through the bus and is the memory the IOMMU sees.
    system.bus.write64(0x8000_1000, 0x1234)
    assert system.ram.read64(0x8000_1000) == 0x1234
    assert system.clock.now == 0


def test_endpoints_are_built_from_the_config() -> None:
    system = System(
        SystemConfig(
            endpoints=(
                EndpointConfig("nic", 8, kind="nic", pasid_bits=4),
                EndpointConfig("disk", 0x10),
            )
        )
    )
    nic = system.endpoint("nic")
    assert (nic.name, nic.rid, nic.kind, nic.pasid_bits) == ("nic", 8, "nic", 4)
    assert system.endpoint("disk").rid == 0x10
    with pytest.raises(InvalidArgument, match="no endpoint named 'gpu'") as e:
        system.endpoint("gpu")
    assert e.value.errno == errno.EINVAL


BAD_CONFIGS = [
    (dict(ram=()), "system.ram must name at least one region"),
    (
        dict(ram=(RamRegion(0x8000_0800, MiB),)),
        "system.ram[0] must be page-aligned with a positive size, not base 0x80000800 size "
        "0x100000",
    ),
    (dict(ram=(RamRegion(0x8000_0000, 0),)), "system.ram[0] must be page-aligned"),
    (
        dict(ram=(RamRegion(0x8000_0000, MiB), RamRegion(0x9000_0000, 100))),
        "system.ram[1] must be page-aligned",
    ),
    (
        dict(ram=(RamRegion(0x8000_0000, 2 * MiB), RamRegion(0x8010_0000, MiB))),
        "system.ram[1] must not overlap system.ram[0]",
    ),
    (dict(iommu_base_pa=0x8000_0000), "system.iommu_base_pa must not overlap system.ram[0]"),
    (dict(imsic_base_pa=0x1000_0000), "system.imsic_base_pa must not overlap system.iommu_base_pa"),
    (
        dict(ram=(RamRegion(-4096, 4096),)),
        "system.ram[0] must lie within the 56-bit physical address space, not at -0x1000",
    ),
    (
        dict(ram=(RamRegion((1 << 56) - 4096, 8192),)),
        "system.ram[0] must lie within the 56-bit physical address space",
    ),
    (dict(imsic_base_pa=1 << 56), "system.imsic_base_pa must lie within the 56-bit"),
    (
        dict(endpoints=(EndpointConfig("a", 1), EndpointConfig("b", 1))),
        "endpoint requester ids must be distinct, not [1, 1]",
    ),
    (
        dict(endpoints=(EndpointConfig("a", 1), EndpointConfig("a", 2))),
        "endpoint names must be distinct, not ['a', 'a']",
    ),
    (
        dict(endpoints=(EndpointConfig("a", 1 << 24),)),
        "endpoint 'a' rid must fit 24 bits, not 0x1000000",
    ),
    (dict(endpoints=(EndpointConfig("a", -1),)), "endpoint 'a' rid must fit 24 bits"),
    (
        dict(endpoints=(EndpointConfig("a", 1, pasid_bits=21),)),
        "endpoint 'a' pasid_bits must be in [0, 20], not 21",
    ),
]


@pytest.mark.parametrize(("kw", "message"), BAD_CONFIGS)
def test_bad_configs_are_refused_naming_the_field(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        SystemConfig(**kw)  # type: ignore[arg-type]
    assert message in str(e.value)
    assert isinstance(e.value, ApiError)
    assert e.value.errno == errno.EINVAL


def test_edge_configs_are_accepted() -> None:
    # Touching windows do not overlap; the top of the 56-bit space is usable; 24-bit rids and
    # 20-bit PASIDs fit.
    cfg = SystemConfig(
        ram=(
            RamRegion(0x8000_0000, MiB),
            RamRegion(0x8010_0000, MiB),
            RamRegion((1 << 56) - MiB, MiB),
        ),
        iommu_base_pa=0x8000_0000 - REGISTERS_SIZE,
        imsic_base_pa=0x8020_0000,
        endpoints=(EndpointConfig("a", (1 << 24) - 1, pasid_bits=20), EndpointConfig("b", 0)),
    )
    system = System(cfg)
    system.bus.write32((1 << 56) - 4, 7)
    assert system.bus.read32((1 << 56) - 4) == 7


@settings(max_examples=60, deadline=None)
@given(ram_page=st.integers(0, 64), ram_pages=st.integers(1, 16), iommu_page=st.integers(0, 96))
def test_ram_and_iommu_window_overlap_exactly_when_they_intersect(
    ram_page: int, ram_pages: int, iommu_page: int
) -> None:
    ram = RamRegion(0x4000_0000 + ram_page * 4096, ram_pages * 4096)
    iommu = 0x4000_0000 + iommu_page * 4096
    intersects = ram.base_pa < iommu + REGISTERS_SIZE and iommu < ram.base_pa + ram.size_bytes
    if intersects:
        with pytest.raises(InvalidArgument, match=r"iommu_base_pa must not overlap"):
            SystemConfig(ram=(ram,), iommu_base_pa=iommu, imsic_base_pa=0x2800_0000)
    else:
        SystemConfig(ram=(ram,), iommu_base_pa=iommu, imsic_base_pa=0x2800_0000)


def test_settle_and_run_for_turn_charges_into_time() -> None:
    system = System()
    ran: list[int] = []
    system.clock.call_at(300, lambda: ran.append(system.clock.now))
    system.bus.read64(system.config.iommu_base_pa)  # one MMIO access: 200 ns
    assert system.clock.now == 0
    system.settle()
    assert system.clock.now == 200
    assert ran == []
    system.bus.read64(system.config.iommu_base_pa)
    system.run_for(1_000)  # settles the 200 ns first, then idles
    assert system.clock.now == 1_400
    assert ran == [300]


def test_cqt_doorbell_runs_commands_and_charges_command_time() -> None:
    # riscv-iommu "Command-Queue (CQ)": the IOMMU consumes commands once cqt moves; the
    # platform runs them at once and charges command_ns per command.
    system = System(SystemConfig(costs=CostModel(command_ns=40)))
    base = system.config.iommu_base_pa
    cq = 0x8000_0000
    system.bus.write64(base + OFF_CQB, (cq >> 12) << 10 | 1)  # 4 entries
    system.bus.write32(base + OFF_CQCSR, 1)
    for k in range(2):
        lo, hi = iofence_c()
        system.bus.write64(cq + 16 * k, lo)
        system.bus.write64(cq + 16 * k + 8, hi)
    system.bus.write32(base + OFF_CQT, 2)
    assert system.bus.read32(base + OFF_CQH) == 2
    assert system.ledger.counts["command"] == 2
    assert system.ledger.ns["command"] == 80
    # A write to another register is no doorbell, even with commands waiting in the queue.
    lo, hi = iofence_c()
    system.bus.write64(cq + 32, lo)
    system.bus.write64(cq + 40, hi)
    system.bus.write32(base + OFF_CQCSR, 1)
    assert system.bus.read32(base + OFF_CQH) == 2
    assert system.ledger.counts["command"] == 2
