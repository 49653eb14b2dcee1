"""The hardware mutation fuzzer (tests/testsupport/hwfuzz.py), briefly and deterministically:
DESIGN rule 3, "Hardware faults are data, never exceptions", for mutated conformance vectors.
``python -m testsupport.hwfuzz --seconds N`` runs it for as long as asked."""

from __future__ import annotations

import pytest

from iommusim.errors import FormatError
from testsupport import hwfuzz

#: A fixed number of inputs (not a time budget), so every run replays the same ones.
ITERATIONS = 400


def test_mutated_vectors_raise_nothing() -> None:
    """No exception escapes the model for any of the inputs, and the mutator never built a
    malformed vector (a FormatError from the reader would hide what the hardware does)."""
    stats = hwfuzz.fuzz(iterations=ITERATIONS, seed=0)
    assert stats.inputs == ITERATIONS
    assert stats.malformed == 0
    assert [str(f) for f in stats.findings] == []
    assert stats.steps > 10 * ITERATIONS  # the inputs ran their steps, not just their setup


def test_inputs_are_reproducible_from_seed_and_iteration() -> None:
    """A finding's reproducer is (seed, iteration): the same input every time, different
    inputs for different iterations or seeds."""
    assert hwfuzz.mutated_vector(3, 17) == hwfuzz.mutated_vector(3, 17)
    assert hwfuzz.mutated_vector(3, 17) != hwfuzz.mutated_vector(3, 18)
    assert hwfuzz.mutated_vector(3, 17) != hwfuzz.mutated_vector(4, 17)


def test_an_escaping_exception_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzzer reports what escapes, with the seed, the iteration and the last line of the
    traceback -- a model bug planted in translate() is found."""
    from iommusim.hw.riscv.iommu import RiscvIommu

    def broken(self: RiscvIommu, req: object) -> object:
        raise KeyError("planted")

    monkeypatch.setattr(RiscvIommu, "translate", broken)
    stats = hwfuzz.fuzz(iterations=5, seed=0)
    assert stats.findings
    f = stats.findings[0]
    assert (f.seed, f.iteration, f.op, f.error) == (0, 0, "translate", "KeyError: 'planted'")


def test_a_format_error_from_the_hardware_is_not_taken_for_a_malformed_vector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a FormatError raised by the vector reader itself counts as a malformed input;
    one raised by the model is a finding like any other exception."""
    from iommusim.hw.riscv.iommu import RiscvIommu

    def broken(self: RiscvIommu, req: object) -> object:
        raise FormatError("from the hardware")

    monkeypatch.setattr(RiscvIommu, "translate", broken)
    stats = hwfuzz.fuzz(iterations=5, seed=0)
    assert stats.malformed == 0
    assert stats.findings and "from the hardware" in stats.findings[0].error


def test_main_prints_counts_and_exits_zero_without_findings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert hwfuzz.main(["--iterations", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("hw fuzz: 20 inputs, 0 findings")
