"""The software-API state machine (tests/testsupport/swfuzz.py), briefly and deterministically:
every call that raises an ApiError leaves an identical snapshot, no other exception escapes,
and a device reaches only what its domain maps (issue 10: "a failed call changes nothing";
``make fuzz SECONDS=N`` runs it for longer)."""

from __future__ import annotations

from testsupport.swfuzz import fuzz


def test_the_software_api_state_machine_finds_nothing() -> None:
    stats = fuzz(examples=15, seed=0)  # seed 0: derandomized, the same inputs every run
    assert stats.examples >= 15
    assert stats.inputs > stats.examples
    assert not stats.findings, "\n\n".join(f"{f.error}\n{f.reproducer}" for f in stats.findings)
