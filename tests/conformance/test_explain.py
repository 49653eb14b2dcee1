"""``iommusim explain``: the walk of one conformance-vector request, decoded structure by
structure (riscv-iommu: "Process to translate an IOVA" and the processes it uses)."""

from __future__ import annotations

import json

import pytest

from iommusim.cli.main import main
from iommusim.conformance.explain import explain_vector, explain_vector_step
from iommusim.conformance.explain.decode import g_labels
from iommusim.errors import IommusimError
from iommusim.hw.pgtable import PteRead
from iommusim.hw.riscv.translate import PcRead, TraceRecord
from testsupport.vectors import VECTORS

S1 = VECTORS / "s1" / "s1-000001.json"
PDT = VECTORS / "pdt" / "pdt-000001.json"
AD = VECTORS / "ad" / "ad-000009.json"


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


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    """The --json rendering carries the same walk and outcome (riscv-iommu: "Process to
    translate an IOVA")."""
    explain_vector_step(S1, 19, json_out=True)
    data = json.loads(capsys.readouterr().out)
    (step,) = data["steps"]
    assert step["step"] == 19
    assert step["outcome"] == {
        "status": "success",
        "pbmt": 0,
        "pbmt_name": "PMA",
        "is_msi": 0,
        "is_mrif": 0,
        "pa": "0xd70d6cdd6030",
        "size_lg2": 21,
    }
    ptes = [e for e in step["walk"] if e["kind"] == "pte"]
    assert [(e["stage"], e["level"], e["role"]) for e in ptes] == [
        ("s1", 3, "pointer"),
        ("s1", 2, "pointer"),
        ("s1", 1, "leaf"),
    ]
    fsc = next(
        d for e in step["walk"] if e["kind"] == "dc" for d in e["doublewords"] if d["name"] == "fsc"
    )
    assert (fsc["as"], fsc["mode_name"]) == ("iosatp", "Sv48")
    assert step["vector_expectation"]["matches"] is True


def test_json_fault_record() -> None:
    """riscv-iommu: "Fault/Event-Queue (FQ)": the record written for the fault is decoded."""
    (step,) = explain_vector(PDT, 18)["steps"]
    o = step["outcome"]
    assert (o["status"], o["cause"], o["cause_name"]) == ("ur", 269, "PDT data corruption")
    rec = o["fault_record"]["fields"]
    assert (rec["cause"], rec["ttyp"], rec["did"], rec["pid"]) == (269, 1, "0x69", "0xb4501")


def test_every_translate_step() -> None:
    """Without --step every translate step of the vector is explained, in order."""
    data = explain_vector(S1, None)
    vec = json.loads(S1.read_text(encoding="utf-8"))
    want = [i for i, s in enumerate(vec["steps"]) if s["op"] == "translate"]
    assert [s["step"] for s in data["steps"]] == want
    assert all(s["vector_expectation"]["matches"] for s in data["steps"])


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
    assert (
        kinds[1:]
        == [implicit] * 3
        + [("pte", "first stage")]
        + [implicit] * 3
        + [("pte", "first stage")]
        + [ad_write] * 3
        + [("ad", "")]
        + [data] * 2
    )
    ad = next(e for e in step["walk"] if e["kind"] == "ad")
    assert ad["set"] == ["A"]


def test_g_labels_without_first_stage() -> None:
    """A G-stage walk of a PDT address is implicit; with a Bare first stage the walk of the
    IOVA itself is the request's (riscv-iommu: "Process to locate the Process-context")."""
    trace: list[TraceRecord] = [
        PteRead("g", "implicit-read", 0, 0x5000, 0x8000, 0x9000, 0xCF, 8),
        PcRead(0x5000, 0x9000, 1, 0),
        PteRead("g", "request", 0, 0x7123, 0x8008, 0x9008, 0xCF, 8),
    ]
    assert g_labels(trace) == [
        "G-stage (implicit access for the next structure)",
        "",
        "G-stage (the request's guest-physical address)",
    ]
    # The same walk ending the trace: a structure read failed after it.
    assert g_labels(trace[:1]) == ["G-stage (implicit access for the next structure)"]


def test_non_translate_step_is_an_error() -> None:
    """A step that is not a translate step, or out of range, is a one-line error."""
    with pytest.raises(IommusimError, match="step 0 is a 'write_reg' step, not a translate"):
        explain_vector_step(S1, 0, json_out=False)
    with pytest.raises(IommusimError, match="step 100000 is out of range"):
        explain_vector_step(S1, 100000, json_out=False)


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


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``iommusim explain VECTOR --step N --json`` prints one JSON object, exit code 0."""
    assert main(["explain", str(PDT), "--step", "18", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"][0]["outcome"]["cause"] == 269


# -- MSI translations and page requests -------------------------------------------------------

MSI_BASIC = VECTORS / "msi" / "msi-000001.json"
MSI_MRIF = VECTORS / "msi" / "msi-000021.json"
MSI_MRIF_OFFSET = VECTORS / "msi" / "msi-000004.json"
MSI_OUTSIDE = VECTORS / "msi" / "msi-000003.json"
PRI_QUEUED = VECTORS / "pri" / "pri-000003.json"
PRI_OFF = VECTORS / "pri" / "pri-000001.json"


def test_msi_basic_names_the_interrupt_file(capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "Process to translate addresses of MSIs": the GPA page matches the window
    (mask/pattern), the interrupt file number is extract(GPA >> 12, mask), and a basic-mode PTE
    sends the write to the interrupt file at PPN << 12."""
    (step,) = explain_vector(MSI_BASIC, 7)["steps"]
    (pte,) = [e for e in step["walk"] if e["kind"] == "msipte"]
    assert pte["window"]["matches"] is True
    assert pte["window"]["file_index"] == pte["file_index"] == 6
    assert (pte["window"]["mask"], pte["window"]["pattern"]) == ("0xe", "0x8f3d224a8fa")
    assert pte["interrupt_file_pa"] == "0xdff17b4f0000"
    explain_vector_step(MSI_BASIC, 7, json_out=False)
    out = capsys.readouterr().out
    assert "interrupt file number 6 = extract(GPA >> 12, mask)" in out
    assert "(MSI to the interrupt file at 0xdff17b4f0000)" in out


def test_mrif_names_the_bit(capsys: pytest.CaptureFixture[str]) -> None:
    """AIA "Format of a memory-resident interrupt file" / "MSI PTE, MRIF mode": with the
    write's data, explain shows the identity, the pending doubleword and bit it sets, the
    enable bit, and the notice MSI (NID little-endian at NPPN << 12)."""
    (step,) = explain_vector(MSI_MRIF, 7, msi_data=70)["steps"]
    m = step["outcome"]["mrif"]
    assert (m["identity"], m["bit"]) == (70, 6)
    assert (m["pending_pa"], m["enable_pa"]) == ("0x53e39917610", "0x53e39917618")
    assert (m["notice_pa"], m["notice_data"], m["notice"]) == ("0x3600aa1e000", 198, "sent")
    assert step["vector_expectation"]["matches"] is True
    explain_vector_step(MSI_MRIF, 7, json_out=False, msi_data=0x1_0000)
    out = capsys.readouterr().out
    assert "data 0x10000: discarded (data 0x10000 has bits 31:11 set" in out
    assert "then the notice MSI" not in out


def test_mrif_write_offset_rules(capsys: pytest.CaptureFixture[str]) -> None:
    """AIA "MSI PTE, MRIF mode": a write whose A[11:3] is not 0 is discarded; without data the
    MRIF layout rule is printed."""
    explain_vector_step(MSI_MRIF_OFFSET, 19, json_out=False)
    out = capsys.readouterr().out
    assert "MRIF at 0xe61b2ce5e00: identity D: pending bit D mod 64" in out
    assert "page offset 0x30: A[11:3] is not 0, the write is discarded" in out


def test_outside_msi_window() -> None:
    """riscv-iommu: "Process to translate addresses of MSIs": a GPA outside the window is
    translated by the regular tables; explain shows the GPA and why it did not match."""
    (step,) = explain_vector(MSI_OUTSIDE, 25)["steps"]
    win = step["outcome"]["msi_window"]
    assert win["matches"] is False and win["gpa"] == "0x11fe78329b048"
    assert step["outcome"]["pa"] == "0x3a755fd3b048"


def test_page_request_queued(capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "PCIe ATS Page Request handling": with EN_ATS = EN_PRI = 1 the message is
    queued; "Page-Request-Queue (PQ)": the record carries DID, PID, PRIV, EXEC and the payload,
    and pip is set when pie is 1."""
    (step,) = explain_vector(PRI_QUEUED, 18)["steps"]
    assert step["op"] == "page_request"
    assert step["request"]["fields"] == {
        "r": 1,
        "w": 1,
        "l": 1,
        "prgi": "0xde",
        "page_address": "0xa35f6f4df98ca000",
    }
    o = step["outcome"]
    assert o["status"] == "queued" and o["dc_checks"] == {"en_ats": 1, "en_pri": 1, "prpr": 1}
    assert o["record"]["fields"]["did"] == "0x11" and o["record"]["fields"]["pid"] == "0x28be4"
    assert o["responses"] == [] and "pip" in o["interrupt"]
    assert step["vector_expectation"]["matches"] is True
    assert main(["explain", str(PRI_QUEUED), "--step", "18"]) == 0
    out = capsys.readouterr().out
    assert "message: Page Request (last in its group: needs a response) from rid 0x11" in out
    assert "queued: record 0 at PA 0x822fd6000" in out


def test_page_request_automatic_response(capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "PCIe ATS Page Request handling": with ddtp Off the request is not queued,
    cause 256 is recorded (TTYP 9) and the IOMMU answers Response Failure itself."""
    explain_vector_step(PRI_OFF, 6, json_out=False)
    out = capsys.readouterr().out
    assert "not queued: ddtp.iommu_mode is Off (cause 256): Response Failure" in out
    assert "cause=256 (All inbound transactions disallowed) ttyp=9" in out
    assert "automatic Page Request Group Response: Response Failure (code 0xf), with PASID" in out
    assert "matches the vector's expectation" in out
