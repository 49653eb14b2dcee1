"""The VMM scene (perf/vmm_scene.py): a guest's NIC through iommufd with nested RISC-V
translation; its outcomes are measured, not assumed, and a bad layout is refused."""

from __future__ import annotations

import errno

import pytest

from iommusim.errors import ApiError, FormatError
from iommusim.perf.vmm_scene import VmmConfig, run_vmm_scene
from iommusim.scenario.loader import parse_scenario


def test_the_scene_runs_guest_dma_a_guest_fault_and_an_invalidation() -> None:
    r = run_vmm_scene()
    assert r.guest_dma_ok and r.fault_served and r.nic_returned
    assert not r.stale_after_invalidate
    assert r.ioctls == 14 and r.errors == 0
    # The device's write while tracking was on dirtied exactly the guest page it wrote.
    data_gpa = next(int(st.result.split()[-1], 16) for st in r.steps if st.call == "builds Sv39")
    assert r.dirty_gpas == [data_gpa]
    calls = [s.call for s in r.steps]
    assert calls[0] == "VFIO_DEVICE_BIND_IOMMUFD(nic)"
    assert "IOMMU_HWPT_ALLOC(NEST_PARENT|DIRTY_TRACKING)" in calls
    answers = [s.result for s in r.steps if s.actor == "VMM+guest"]
    assert answers == ["SUCCESS", "INVALID"]  # the fault page, then the unmapped one
    assert r.steps[-2].result == "fault" and r.steps[-2].detail == "PRG Invalid Request"


def test_another_layout_gives_the_same_outcomes() -> None:
    r = run_vmm_scene(
        VmmConfig(
            guest_ram_gpa=0x1_0000_0000,
            guest_ram_pages=8,
            gva=0x1000,
            fault_gva=0x7000,
            guest_pscid=0xFFFFF,
        )
    )
    assert r.guest_dma_ok and r.fault_served and not r.stale_after_invalidate


@pytest.mark.parametrize(
    "kw",
    [
        {"guest_ram_pages": 4},
        {"guest_ram_gpa": 0x123},
        {"gva": 0x1001},
        {"fault_gva": 1 << 38},
        {"gva": 0x5000, "fault_gva": 0x5000},
        {"guest_pscid": 1 << 20},
    ],
)
def test_a_layout_the_scene_cannot_run_is_einval(kw: dict[str, int]) -> None:
    with pytest.raises(ApiError) as e:
        VmmConfig(**kw)
    assert e.value.errno == errno.EINVAL


def test_the_scenario_file_sets_the_scene_and_names_bad_keys() -> None:
    sc = parse_scenario("version = 1\n[vmm]\nguest_ram_pages = 16\ngva = 0x2000\n")
    assert sc.vmm == VmmConfig(guest_ram_pages=16, gva=0x2000)
    with pytest.raises(FormatError, match="vmm"):
        parse_scenario("version = 1\n[vmm]\nguest_pages = 16\n")
    with pytest.raises(FormatError, match="at least 8"):
        parse_scenario("version = 1\n[vmm]\nguest_ram_pages = 2\n")
