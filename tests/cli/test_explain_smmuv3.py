"""``iommusim explain --iommu smmuv3``: one SMMUv3 transaction explained against a raw memory
dump -- every STE / CD field, every descriptor of both stages (IHI 0070 3.3-3.4), the
outcome and the event record (7.3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import pytest

from iommusim.bits.arm.smmuv3_queues import F_TRANSLATION
from iommusim.cli.main import main
from iommusim.hw.smmuv3.transaction import Event
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.smmuv3_scene import POOL, Scene

RW: Final = IOMMU_READ | IOMMU_WRITE


def nested_dump(tmp_path: Path) -> list[str]:
    """A nested stream 5 (stage 1 over stage 2) in a 1 MiB dump at POOL; the argv prefix."""
    s = Scene(log2size=8)
    s1, s2 = s.s1(4, 48), s.s2(4, 40)
    s2.map(POOL, POOL, 1 << 28, RW)
    s2.map(0x1000_0000, 0x4800_0000, 0x1_0000, RW)
    s1.map(0x7000_0000, 0x1000_0000, 0x1000, RW)
    s.stream_nested(5, s1, s2, s.cd_table({0: s.cd_image(s1)}))
    img = tmp_path / "ram.bin"
    img.write_bytes(s.mem.read(POOL, 1 << 20))
    return [
        "explain",
        "--iommu",
        "smmuv3",
        "--memory",
        f"{img}@{POOL:#x}",
        "--reg",
        f"strtab_base={s.strtab:#x}",
        "--reg",
        "strtab_base_cfg=0x8",
    ]


def test_nested_walk_explained_structure_by_structure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*nested_dump(tmp_path), "--device-id", "5", "--iova", "0x70000010", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["outcome"], data["pa"]) == ("ok", "0x48000010")
    kinds = [s["step"] for s in data["steps"]]
    assert kinds[0] == "ste" and "cd" in kinds
    ste = data["steps"][0]
    assert ste["fields"]["config"] == "0x7" and ste["spec"].startswith("IHI 0070 5.2")
    descs = [s for s in data["steps"] if s["step"] == "descriptor"]
    # Four stage 1 levels, each table address translated by stage 2, then the output.
    assert [d["level"] for d in descs if d["stage"] == "s1"] == [0, 1, 2, 3]
    assert {d["for"] for d in descs if d["stage"] == "s2"} == {"cd", "s1 table", "request"}
    assert descs[-1]["stage"] == "s2" and descs[-1]["type"] == "page"


def test_fault_explained_with_its_event_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*nested_dump(tmp_path), "--device-id", "5", "--iova", "0x70001000"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "event: F_TRANSLATION (0x10)" in out
    assert main([*argv, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)["event"]
    rec = Event.from_record(bytes.fromhex(ev["record"]))
    assert (rec.type, rec.streamid, rec.inputaddr, rec.s2) == (F_TRANSLATION, 5, 0x7000_1000, False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reg", "ddtp=0x1"], "--reg ddtp=0x1: an SMMUv3 register must be one of"),
        (["--preset", "nope"], "--preset nope: not one of full, qemu-like, minimal"),
        (["--iommu", "x86"], "--iommu x86: the IOMMU must be riscv or smmuv3"),
    ],
)
def test_bad_flags_name_themselves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = [*nested_dump(tmp_path), "--device-id", "5", "--iova", "0x0", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
