"""TOML scenarios (scenario/loader.py): version 1, unknown keys refused, errors name the key.

STYLE "CLI": TOML scenarios with a ``version`` key and error messages that name the key path;
every error is a :class:`FormatError`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iommusim.errors import FormatError
from iommusim.hw.riscv.params import PRESETS, CacheParams, RiscvIommuParams
from iommusim.hw.smmuv3.params import Smmuv3Params
from iommusim.perf.dma_workload import WorkloadConfig, default_system
from iommusim.platform.costs import CostModel
from iommusim.platform.system import EndpointConfig, RamRegion
from iommusim.scenario import Scenario, load_scenario, parse_scenario
from iommusim.sw.core.fq import FqOptions

EXAMPLE = Path(__file__).resolve().parents[2] / "scenarios" / "nic-nvme.toml"


def test_version_only_is_the_default_machine() -> None:
    sc = parse_scenario("version = 1\n")
    assert sc == Scenario(default_system(), WorkloadConfig())
    assert sc.modes == ("strict", "lazy")
    assert sc.ncpus == 1


def test_a_full_scenario() -> None:
    sc = parse_scenario("""
version = 1
[system]
ram = [{base = 0x4000_0000, size = 0x200_0000}, {base = 0x1_0000_0000, size = 0x10_0000}]
iommu_base = 0x3000_0000
imsic_base = 0x3001_0000
[iommu]
preset = "minimal"
iotlb_entries = 2
ddtc_entries = 0
pdtc_entries = 1
replacement = "fifo"
[costs]
mmio_ns = 1
irq_latency_ns = 0
[[endpoint]]
name = "eth0"
rid = 0x100
kind = "nic"
pasid_bits = 8
[[endpoint]]
name = "disk"
rid = 0x200
[kernel]
modes = ["lazy", "passthrough"]
ncpus = 4
fq_size = 64
fq_timeout_ns = 500
fq_single = true
[workload]
ops = 10
seed = 7
nic_fraction = 1
packet_bytes = 64
block_bytes = 8192
stale_probe_rate = 0.5
think_ns = 0
buffers = 2
""")
    s = sc.system
    assert s.ram == (RamRegion(0x4000_0000, 0x200_0000), RamRegion(0x1_0000_0000, 0x10_0000))
    assert (s.iommu_base_pa, s.imsic_base_pa) == (0x3000_0000, 0x3001_0000)
    assert s.iommu == PRESETS["minimal"].with_(caches=CacheParams(0, 1, 2, "fifo"))
    assert s.costs == CostModel(mmio_ns=1, irq_latency_ns=0)
    assert s.endpoints == (
        EndpointConfig("eth0", 0x100, "nic", 8),
        EndpointConfig("disk", 0x200, "generic", 0),
    )
    assert sc.modes == ("lazy", "passthrough")
    assert sc.ncpus == 4
    assert sc.fq == FqOptions(single=True, size=64, timeout_ns=500)
    assert sc.workload == WorkloadConfig(
        ops=10,
        seed=7,
        nic_fraction=1.0,
        packet_bytes=64,
        block_bytes=8192,
        stale_probe_rate=0.5,
        think_ns=0,
        buffers=2,
    )
    assert isinstance(sc.workload.nic_fraction, float)


def test_the_shipped_example_is_the_default_machine_spelled_out() -> None:
    sc = load_scenario(EXAMPLE)
    assert sc.system == default_system()
    assert sc.workload == WorkloadConfig()
    assert sc.modes == ("strict", "lazy")
    assert sc.ncpus == 1
    assert (sc.fq.single, sc.fq.entries, sc.fq.timeout) == (False, 256, 10_000_000)
    assert (FqOptions().entries, FqOptions().timeout) == (sc.fq.entries, sc.fq.timeout)


BAD = [
    # (file body after "version = 1", text the message must contain)
    ("colour = 1", "colour is not a known key"),
    ("[system]\nram_size = 1", "system.ram_size is not a known key"),
    (
        "[system]\nram = [{base = 0x8000_0000, size = 4096, speed = 1}]",
        "system.ram[0].speed is not a known key",
    ),
    ("[[endpoint]]\nname = 'a'\nrid = 1\nbus = 0", "endpoint[0].bus is not a known key"),
    ("[workload]\nopz = 3", "workload.opz is not a known key"),
    ("[costs]\nmmio = 3", "costs.mmio is not a known key"),
    ("[kernel]\nmode = 'strict'", "kernel.mode is not a known key"),
    ("[system]\niommu_base = 'x'", "system.iommu_base must be an integer, not 'x'"),
    (
        "[system]\nram = [{base = 0x8000_0000, size = 1.5}]",
        "system.ram[0].size must be an integer, not 1.5",
    ),
    ("[iommu]\niotlb_entries = true", "iommu.iotlb_entries must be an integer, not True"),
    ("[costs]\nmmio_ns = '200'", "costs.mmio_ns must be an integer, not '200'"),
    (
        "[[endpoint]]\nname = 'a'\nrid = 1\n[[endpoint]]\nname = 'b'\nrid = 'two'",
        "endpoint[1].rid must be an integer, not 'two'",
    ),
    ("[[endpoint]]\nname = 3\nrid = 1", "endpoint[0].name must be a string, not 3"),
    ("[kernel]\nfq_single = 1", "kernel.fq_single must be a boolean, not 1"),
    ("[kernel]\nncpus = 2.0", "kernel.ncpus must be an integer, not 2.0"),
    ("[workload]\nnic_fraction = 'most'", "workload.nic_fraction must be a number, not 'most'"),
    (
        "[iommu]\npreset = 'huge'",
        "iommu.preset must be one of full, minimal, linux-virt, not 'huge'",
    ),
    (
        "[kernel]\nmodes = ['strict', 'eager']",
        "kernel.modes must be a non-empty array of "
        "strict, lazy, passthrough, not ['strict', 'eager']",
    ),
    ("[kernel]\nmodes = []", "kernel.modes must be a non-empty array"),
    ("[kernel]\nmodes = 'strict'", "kernel.modes must be a non-empty array"),
    ("system = 3", "system must be a table, not int"),
    ("[system]\nram = {base = 1}", "system.ram must be an array of tables"),
    ("[system]\nram = [3]", "system.ram[0] must be a table, not int"),
    ("[system]\nram = [{base = 0x8000_0000}]", "system.ram[0] needs base and size"),
    ("[system]\nram = []", "system.ram must name at least one region"),
    ("[system]\nram = [{base = 0x8000_0001, size = 4096}]", "system.ram[0] must be page-aligned"),
    ("[system]\niommu_base = 0x8000_0000", "system.iommu_base_pa must not overlap"),
    ("[endpoint]\nname = 'a'", "endpoint must be an array of tables"),
    ("[[endpoint]]\nname = 'a'", "endpoint[0] needs name and rid"),
    ("[workload]\nops = -1", "workload.ops must be >= 0, not -1"),
    ("[workload]\npacket_bytes = 5000", "workload.packet_bytes must be in [1, 4096], not 5000"),
    ("[workload]\nblock_bytes = 1000", "workload.block_bytes must be a positive multiple"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_errors_name_the_key_path(body: str, message: str) -> None:
    with pytest.raises(FormatError) as e:
        parse_scenario("version = 1\n" + body + "\n")
    assert message in str(e.value)
    assert str(e.value).startswith("scenario")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[system]\niommu_base = 0x1000_0000\n", "version is missing (expected version = 1)"),
        ("version = 2\n", "version must be 1, not 2"),
        ("version = '1'\n", "version must be 1, not '1'"),
        ("version = true\n", "version must be 1, not True"),
        ("version = 1.0\n", "version must be 1, not 1.0"),
    ],
)
def test_version_must_be_the_integer_1(text: str, message: str) -> None:
    with pytest.raises(FormatError) as e:
        parse_scenario(text)
    assert message in str(e.value)


def test_invalid_toml_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"scenario <string>: not valid TOML"):
        parse_scenario("version = \n")
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n[system\n")
    with pytest.raises(FormatError, match=r"bad.toml: not valid TOML"):
        load_scenario(bad)
    with pytest.raises(FormatError, match=r"nope.toml: cannot read it"):
        load_scenario(tmp_path / "nope.toml")


def test_format_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="version is missing"):
        parse_scenario("")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ("[iommu]\niotlb_entries = -1", "iommu.iotlb_entries"),
        ("[iommu]\nreplacement = 'mru'", "iommu.replacement"),
        ("[iommu]\niotlb_superpages = 1", "iommu.iotlb_superpages"),
        ("[costs]\nmmio_ns = -1", "costs.mmio_ns"),
        ("[kernel]\nfq_size = 3", "kernel.fq_size"),
        ("[[endpoint]]\nname = 'a'\nrid = 1\npasid_bits = 30", "endpoint[0].pasid_bits"),
    ],
)
def test_range_errors_name_the_key_path(body: str, path: str) -> None:
    with pytest.raises(FormatError) as e:
        parse_scenario("version = 1\n" + body + "\n")
    assert path in str(e.value)


def test_ncpus_must_be_positive() -> None:
    with pytest.raises(FormatError, match=r"kernel\.ncpus"):
        parse_scenario("version = 1\n[kernel]\nncpus = 0\n")


def test_an_smmuv3_scenario() -> None:
    """issue 12: ``[iommu] kind = "smmuv3"`` boots an Arm SMMUv3 with a preset and its cache
    sizes; a RISC-V-only key is an error naming it."""
    sc = parse_scenario(
        'version = 1\n[iommu]\nkind = "smmuv3"\npreset = "qemu-like"\ntlb_entries = 32\n'
    )
    assert isinstance(sc.system.iommu, Smmuv3Params)
    assert sc.system.iommu.caches.tlb_entries == 32
    assert sc.system.iommus[0].kind == "smmuv3"
    with pytest.raises(FormatError, match="iotlb_entries"):
        parse_scenario('version = 1\n[iommu]\nkind = "smmuv3"\niotlb_entries = 4\n')
    with pytest.raises(FormatError, match=r"iommu\.kind must be riscv or smmuv3"):
        parse_scenario('version = 1\n[iommu]\nkind = "vtd"\n')


def test_cache_organisation_keys() -> None:
    """Seeded random replacement, whole-superpage IOTLB entries (RISC-V) and STE.CONT span
    entries (SMMUv3) are scenario keys."""
    sc = parse_scenario(
        'version = 1\n[iommu]\nreplacement = "random"\nseed = 7\niotlb_superpages = true\n'
    )
    assert isinstance(sc.system.iommu, RiscvIommuParams)
    c = sc.system.iommu.caches
    assert (c.replacement, c.seed, c.iotlb_superpages) == ("random", 7, True)
    sc = parse_scenario(
        'version = 1\n[iommu]\nkind = "smmuv3"\nste_cont_entries = 0\nreplacement = "random"\n'
    )
    assert isinstance(sc.system.iommu, Smmuv3Params)
    assert (sc.system.iommu.caches.ste_cont_entries, sc.system.iommu.caches.replacement) == (
        0,
        "random",
    )
