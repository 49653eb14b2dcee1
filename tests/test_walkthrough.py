"""``iommusim walkthrough``: its memory image is built with the one page-table writer
(sw/pgtable) and translates as the scenario says (riscv-iommu: "Process to translate an
IOVA", "Two-Stage Address Translation" in the privileged spec)."""

from __future__ import annotations

import json

import pytest

from iommusim.walkthrough import build_demo_vector, run_walkthrough


def test_walkthrough_outcomes(capsys: pytest.CaptureFixture[str]) -> None:
    run_walkthrough(json_out=True)
    out = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["cause"]) for r in out["translations"]] == [
        ("success", ""),
        ("success", ""),
        ("ur", "15 Write/AMO page fault"),
        ("ur", "13 Read page fault"),
        ("success", ""),
        ("success", ""),
        ("success", ""),
        ("ur", "21 Read guest-page fault"),
        ("ur", "266 PDT entry not valid"),
        ("ur", "258 DDT entry not valid"),
    ]
    assert out["translations"][0]["pa"] == "0x200000123"
    assert out["translations"][6]["pa"] == "0x304003ff8"  # G_OFF + the guest page + offset
    assert out["fault_records"] == 5


def test_guest_tables_live_in_guest_memory() -> None:
    """The guest's first-stage table and PDT are written at SPA = GPA + 0x3_0000_0000."""
    vec = build_demo_vector()
    addrs = {int(c["addr"], 16) for c in vec["memory"]}
    assert any(0x3_0100_0000 <= a < 0x3_0101_0000 for a in addrs)
    assert all(a < 0x3_0000_0000 or a >= 0x3_0100_0000 for a in addrs)
