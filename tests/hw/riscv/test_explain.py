"""``iommusim explain``: the walk of one conformance-vector request, decoded structure by
structure (riscv-iommu: "Process to translate an IOVA" and the processes it uses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iommusim.cli.main import main
from iommusim.errors import IommusimError
from iommusim.hw.riscv.explain import _g_labels, explain_vector, explain_vector_step

VECTORS = Path("/work/shared/conformance/riscv-iommu/vectors")
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason="conformance vectors missing")

S1 = VECTORS / "s1" / "s1-000001.json"
PDT = VECTORS / "pdt" / "pdt-000001.json"
AD = VECTORS / "ad" / "ad-000009.json"


@needs_vectors
def test_first_stage_sv48_walk(capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "Process to translate an IOVA" with an Sv48 iosatp (FORMAT.md section 11
    item 1): three first-stage levels down to a 2 MiB leaf, PA = leaf base + IOVA[20:0]."""
    explain_vector_step(S1, 19, json_out=False)
    out = capsys.readouterr().out
    assert "Sv48" in out
    assert "iova 0xffffb2f5939d6030" in out
    assert "TTYP 2 (untranslated read)" in out
    for level in (3, 2, 1):
        assert f"first stage PTE, level {level}," in out
    assert "[leaf]" in out
    assert "flags V R - X U - A -" in out
    assert "success: PA 0xd70d6cdd6030" in out
    assert "matches the vector's expectation" in out


@needs_vectors
def test_pdt_data_corruption(capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "Process to locate the Process-context": a poisoned PDT read is cause 269
    and the fault record carries the request (FORMAT.md section 11 item 4;
    "Fault/Event-Queue (FQ)" record layout)."""
    explain_vector_step(PDT, 18, json_out=False)
    out = capsys.readouterr().out
    assert "fault: cause 269 (PDT data corruption), status ur" in out
    assert "PD20" in out
    assert "fsc (pdtp)" in out
    assert "pid=0xb4501 pv=1 priv=1 did=0x69 iotval=0x300d9c788010" in out
    assert "ttyp=1 (untranslated read for execute)" in out


@needs_vectors
def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    """The --json rendering carries the same walk and outcome (riscv-iommu: "Process to
    translate an IOVA")."""
    explain_vector_step(S1, 19, json_out=True)
    data = json.loads(capsys.readouterr().out)
    (step,) = data["steps"]
    assert step["step"] == 19
    assert step["outcome"] == {"status": "success", "pbmt": 0, "pbmt_name": "PMA",
                               "is_msi": 0, "is_mrif": 0, "pa": "0xd70d6cdd6030",
                               "size_lg2": 21}
    ptes = [e for e in step["walk"] if e["kind"] == "pte"]
    assert [(e["stage"], e["level"], e["role"]) for e in ptes] == [
        ("s1", 3, "pointer"), ("s1", 2, "pointer"), ("s1", 1, "leaf")]
    fsc = next(d for e in step["walk"] if e["kind"] == "dc" for d in e["doublewords"]
               if d["name"] == "fsc")
    assert (fsc["as"], fsc["mode_name"]) == ("iosatp", "Sv48")
    assert step["vector_expectation"]["matches"] is True


@needs_vectors
def test_json_fault_record() -> None:
    """riscv-iommu: "Fault/Event-Queue (FQ)": the record written for the fault is decoded."""
    (step,) = explain_vector(PDT, 18)["steps"]
    o = step["outcome"]
    assert (o["status"], o["cause"], o["cause_name"]) == ("ur", 269, "PDT data corruption")
    rec = o["fault_record"]["fields"]
    assert (rec["cause"], rec["ttyp"], rec["did"], rec["pid"]) == (269, 1, "0x69", "0xb4501")


@needs_vectors
def test_every_translate_step() -> None:
    """Without --step every translate step of the vector is explained, in order."""
    data = explain_vector(S1, None)
    vec = json.loads(S1.read_text(encoding="utf-8"))
    want = [i for i, s in enumerate(vec["steps"]) if s["op"] == "translate"]
    assert [s["step"] for s in data["steps"]] == want
    assert all(s["vector_expectation"]["matches"] for s in data["steps"])


@needs_vectors
def test_two_stage_labels() -> None:
    """Privileged spec "Two-Stage Address Translation": the G-stage walks of first-stage PTE
    addresses are implicit reads, the A/D update of a guest PTE is an implicit write, and the
    last walk translates the request's GPA (riscv-iommu: "IOMMU updating of PTE accessed (A)
    and dirty (D) updates")."""
    (step,) = explain_vector(AD, 11)["steps"]
    kinds = [(e["kind"], e.get("label", "")) for e in step["walk"]]
    implicit = ("pte", "G-stage (implicit access for the next structure)")
    ad_write = ("pte", "G-stage (implicit write for the A/D update)")
    data = ("pte", "G-stage (the request's guest-physical address)")
    assert kinds[1:] == [implicit] * 3 + [("pte", "first stage")] + [implicit] * 3 + [
        ("pte", "first stage")] + [ad_write] * 3 + [("ad", "")] + [data] * 2
    ad = next(e for e in step["walk"] if e["kind"] == "ad")
    assert ad["set"] == ["A"]


def test_g_labels_without_first_stage() -> None:
    """A G-stage walk of a PDT address is implicit; with a Bare first stage the walk of the
    IOVA itself is the request's (riscv-iommu: "Process to locate the Process-context")."""
    trace = [("pte", "g", 0, 0x5000, 0x9000, 0xCF, 8), ("pc", 0x5000, 0x9000, 1, 0),
             ("pte", "g", 0, 0x7123, 0x9008, 0xCF, 8)]
    assert _g_labels(trace, 0x7123) == [
        "G-stage (implicit access for the next structure)", "",
        "G-stage (the request's guest-physical address)"]
    # The same walk ending the trace with a GPA other than the IOVA: a structure read failed.
    assert _g_labels(trace[:1], 0x7123) == [
        "G-stage (implicit access for the next structure)"]


@needs_vectors
def test_non_translate_step_is_an_error() -> None:
    """A step that is not a translate step, or out of range, is a one-line error."""
    with pytest.raises(IommusimError, match="step 0 is a 'write_reg' step, not a translate"):
        explain_vector_step(S1, 0, json_out=False)
    with pytest.raises(IommusimError, match="step 100000 is out of range"):
        explain_vector_step(S1, 100000, json_out=False)


@needs_vectors
def test_cli_bad_step(capsys: pytest.CaptureFixture[str]) -> None:
    """CLI exit code 2 for bad input, with a one-line error naming the file."""
    assert main(["explain", str(S1), "--step", "0"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("iommusim: error: ")
    assert str(S1) in lines[0]
    assert "not a translate step" in lines[0]


@needs_vectors
def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``iommusim explain VECTOR --step N --json`` prints one JSON object, exit code 0."""
    assert main(["explain", str(PDT), "--step", "18", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"][0]["outcome"]["cause"] == 269
