"""``iommusim explain --memory``: one request explained against raw memory images and register
values (riscv-iommu: "Process to translate an IOVA"), with the explainer vectors use."""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any, Literal

import pytest

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.regs import cap
from iommusim.bits.riscv.structures import DC_FSC, DC_TA, DC_TC
from iommusim.cli.main import main
from iommusim.conformance import rawmem
from iommusim.conformance.explain import explain_vector
from iommusim.conformance.rawexplain import REGISTERS, RegisterValueError, explain_raw
from iommusim.conformance.rawmem import parse_image
from iommusim.conformance.vectors import params_from_json, request_from_json
from iommusim.hw.riscv.params import PRESETS
from iommusim.hw.riscv.transaction import Request
from testsupport.vectors import VECTORS

S1 = VECTORS / "s1" / "s1-000001.json"
_COMPARED = ("request", "ddtp", "walk", "outcome")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# -- vectors as dumps ------------------------------------------------------------------------


def dump_memory(vec: dict[str, Any], tmp_path: Path) -> list[str]:
    """Write a vector's memory chunks as raw files; return their FILE@ADDR specs."""
    specs = []
    for k, chunk in enumerate(vec["memory"]):
        f = tmp_path / f"chunk{k}.bin"
        f.write_bytes(bytes.fromhex(chunk["data"]))
        specs.append(f"{f}@{chunk['addr']}")
    return specs


def vector_registers(vec: dict[str, Any], upto: int) -> dict[str, int] | None:
    """The values the vector's steps before ``upto`` wrote to the registers ``--reg`` takes,
    or None if it wrote them some other way (a 4-byte half)."""
    by_offset = {v: k for k, v in REGISTERS.items()}
    offsets = {off for off, _ in REGISTERS.values()}
    regs: dict[str, int] = {}
    for step in vec["steps"][:upto]:
        if step["op"] != "write_reg":
            continue
        key = (step["offset"], step["size"])
        if key in by_offset:
            regs[by_offset[key]] = int(step["value"], 0)
        elif step["offset"] in offsets or step["offset"] - 4 in offsets:
            return None
    return regs


def request_flags(req: dict[str, Any]) -> list[str]:
    flags = ["--device-id", str(req["device_id"]), "--iova", req["iova"], "--at", req["at"]]
    if req["pid_valid"]:
        flags += ["--pasid", str(req["process_id"])]
        if req["priv_req"]:
            flags.append("--priv")
    if req["rw"] == "write" or (req["at"] == "ats" and not req["no_write"]):
        flags.append("--write")
    if req["exec_req"]:
        flags.append("--exec")
    return flags


@pytest.mark.parametrize(
    ("step", "status", "cause", "pa"),
    [
        (7, "ur", 15, None),  # a write to a leaf without W: "Write/AMO page fault"
        (37, "success", None, "0xada55973e078"),  # with a PASID (PDTV = 1)
    ],
)
def test_cli_explains_a_dump_as_the_vector_step(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    step: int,
    status: str,
    cause: int | None,
    pa: str | None,
) -> None:
    """The vector's memory as raw files, its register writes as --reg and its capabilities
    give the same request, walk, outcome and fault record as explaining the vector step."""
    vec = json.loads(S1.read_text(encoding="utf-8"))
    regs = vector_registers(vec, step)
    assert regs is not None and "ddtp" in regs
    argv = ["explain", "--json", "--capabilities", vec["params"]["capabilities"]]
    for spec in dump_memory(vec, tmp_path):
        argv += ["--memory", spec]
    for name, value in regs.items():
        argv += ["--reg", f"{name}={value:#x}"]
    argv += request_flags(vec["steps"][step]["req"])
    rc, out, err = run(argv, capsys)
    assert (rc, err) == (0, "")
    data = json.loads(out)
    assert (data["status"], data["cause"], data["pa"]) == (status, cause, pa)
    (want,) = explain_vector(S1, step)["steps"]
    (got,) = data["steps"]
    assert {k: got[k] for k in _COMPARED} == {k: want[k] for k in _COMPARED}
    assert data["fault_queue"]["scratch"] is False


def test_library_agrees_with_sampled_vectors(tmp_path: Path) -> None:
    """riscv-iommu: "Process to translate an IOVA", on every tenth public vector: the first
    request of each device, before any fault, explained from a dump equals the vector step's
    explanation (same parameters, same memory, same registers)."""
    compared = 0
    for path in sorted(VECTORS.glob("*/*1.json")):
        vec = json.loads(path.read_text(encoding="utf-8"))
        seen: set[int] = set()
        steps: list[int] = []
        for i, st in enumerate(vec["steps"]):
            if st["op"] == "translate":
                if st["req"]["device_id"] not in seen:
                    steps.append(i)
                seen.add(st["req"]["device_id"])
                if st["expect"]["status"] != "success":
                    break  # later requests see the fault queue this one advanced
            elif st["op"] not in ("write_reg", "read_reg", "read_mem"):
                break
        regs = {i: vector_registers(vec, i) for i in steps}
        steps = [i for i in steps if regs[i] is not None and "ddtp" in (regs[i] or {})]
        if not steps:
            continue
        out = tmp_path / path.stem
        out.mkdir()
        images = [parse_image(s) for s in dump_memory(vec, out)]
        params = params_from_json(vec["params"])
        explained = {s["step"]: s for s in explain_vector(path, None)["steps"]}
        for i in steps:
            req = request_from_json(vec["steps"][i]["req"], "req")
            data = explain_raw(images, params, regs[i] or {}, req, source="vector")
            want = explained[i]
            got = data["steps"][0]
            if "fqb" not in (regs[i] or {}):  # the scratch queue holds the record instead
                for o in (got["outcome"], want["outcome"]):
                    o.pop("fault_record", None)
                    o.pop("record_note", None)
            assert {k: got[k] for k in _COMPARED} == {k: want[k] for k in _COMPARED}, (path, i)
            compared += 1
    assert compared >= 40


# -- a dump built here -----------------------------------------------------------------------

DID = 5
ROOT = 0x10000  # 1LVL device directory: 64 extended device contexts
S1_ROOT, S1_L1, S1_L0 = 0x11000, 0x12000, 0x13000
RO_PAGE, RWX_PAGE, NO_A_PAGE = 0x200000, 0x201000, 0x202000
RO_PA, RWX_PA = 0x8000_0000, 0x8000_1000
DDTP = (ROOT >> 12) << 10 | 2  # iommu_mode 1LVL


def build_dump(tmp_path: Path, *, en_ats: int = 1, big_endian: bool = False) -> list[str]:
    """An Sv39 device (riscv-iommu: "Device-context fields"): a read-only page, an RWX page
    and a page whose A bit the IOMMU sets (DC.tc.SADE = 1). The device context lies in its
    own page-unaligned image. ``big_endian``: every doubleword stored big-endian, for
    fctl.BE = DC.tc.SBE = 1 (riscv-iommu: "Endianness of memory-resident data structures")."""
    order: Literal["big", "little"] = "big" if big_endian else "little"
    tables = bytearray(0x3000)

    def put(pa: int, value: int) -> None:
        off = pa - S1_ROOT
        tables[off : off + 8] = value.to_bytes(8, order)

    put(S1_ROOT, PTE.encode(v=1, ppn=S1_L1 >> 12))
    put(S1_L1 + 8, PTE.encode(v=1, ppn=S1_L0 >> 12))  # VPN[1] = 1
    put(S1_L0 + 0, PTE.encode(v=1, r=1, u=1, a=1, ppn=RO_PA >> 12))
    put(S1_L0 + 8, PTE.encode(v=1, r=1, w=1, x=1, u=1, a=1, d=1, ppn=RWX_PA >> 12))
    put(S1_L0 + 16, PTE.encode(v=1, r=1, u=1, ppn=0x8000_2))
    dc = [
        DC_TC.encode(v=1, en_ats=en_ats, sade=1, sbe=int(big_endian)),
        0,  # iohgatp: Bare
        DC_TA.encode(pscid=0x42),
        DC_FSC.encode(mode=8, ppn=S1_ROOT >> 12),  # iosatp Sv39
        0,
        0,
        0,
        0,
    ]
    (tmp_path / "tables.bin").write_bytes(bytes(tables))
    (tmp_path / "dc.bin").write_bytes(b"".join(w.to_bytes(8, order) for w in dc))
    return [
        "--memory",
        f"{tmp_path / 'tables.bin'}@{S1_ROOT:#x}",
        "--memory",
        f"{tmp_path / 'dc.bin'}@{ROOT + DID * 64}",  # decimal, not page-aligned
    ]


def explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str, en_ats: int = 1
) -> dict[str, Any]:
    argv = ["explain", "--json", *build_dump(tmp_path, en_ats=en_ats), "--reg", f"ddtp={DDTP:#x}"]
    rc, out, err = run([*argv, "--device-id", str(DID), *flags], capsys)
    assert (rc, err) == (0, "")
    data: dict[str, Any] = json.loads(out)
    return data


def test_read_walk_and_json_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "Process to locate the Device-context" (1LVL) then the Sv39 walk: the
    JSON names the status, no cause and the PA, and lists every structure read."""
    data = explain(tmp_path, capsys, "--iova", f"{RO_PAGE + 0x123:#x}")
    assert (data["status"], data["cause"], data["cause_name"], data["pa"]) == (
        "success",
        None,
        None,
        f"{RO_PA + 0x123:#x}",
    )
    (step,) = data["steps"]
    walk = step["walk"]
    assert [e["kind"] for e in walk] == ["dc", "pte", "pte", "pte"]
    assert walk[0]["pa"] == f"{ROOT + DID * 64:#x}" and walk[0]["format"] == "extended"
    assert [(e["level"], e["role"]) for e in walk[1:]] == [
        (2, "pointer"),
        (1, "pointer"),
        (0, "leaf"),
    ]
    assert data["registers"]["ddtp"] == f"{DDTP:#x}"
    assert data["fault_queue"]["scratch"] is True


def test_write_to_a_read_only_page_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Privileged spec "Virtual Address Translation Process": a write through a leaf without
    W is a store page fault, cause 15 (riscv-iommu: "Fault record CAUSE field encodings"),
    recorded in the scratch fault queue with TTYP 3."""
    data = explain(tmp_path, capsys, "--iova", f"{RO_PAGE:#x}", "--write")
    assert (data["status"], data["cause"], data["pa"]) == ("ur", 15, None)
    assert data["cause_name"] == "Write/AMO page fault"
    rec = data["steps"][0]["outcome"]["fault_record"]
    assert rec["pa"] == data["fault_queue"]["pa"]
    assert (rec["fields"]["cause"], rec["fields"]["ttyp"]) == (15, 3)
    assert rec["fields"]["iotval"] == f"{RO_PAGE:#x}"


def test_text_output_names_the_cause(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", *build_dump(tmp_path), "--reg", f"ddtp={DDTP:x}"]  # hex without 0x
    rc, out, err = run([*argv, "--device-id", "5", "--iova", f"{RO_PAGE}", "--write"], capsys)
    assert (rc, err) == (0, "")
    assert "iommu: preset full, capabilities 0x" in out
    assert "(scratch: no fqb/fqh/fqcsr given)" in out
    assert "first stage PTE, level 0," in out
    assert "fault: cause 15 (Write/AMO page fault), status ur" in out
    assert "ttyp=3 (untranslated write/AMO)" in out


def test_exec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A read for execute (TTYP 1) needs X (cause 12, "Instruction page fault", without)."""
    data = explain(tmp_path, capsys, "--iova", f"{RO_PAGE:#x}", "--exec")
    assert data["steps"][0]["request"]["ttyp"] == 1
    assert (data["status"], data["cause"]) == ("ur", 12)
    data = explain(tmp_path, capsys, "--iova", f"{RWX_PAGE + 8:#x}", "--exec")
    assert (data["status"], data["pa"]) == ("success", f"{RWX_PA + 8:#x}")


def test_ats_translation_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "PCIe ATS translation request handling": the completion carries the
    permissions and the translated PPN; with EN_ATS = 0 the request is disallowed (260)."""
    data = explain(tmp_path, capsys, "--iova", f"{RWX_PAGE:#x}", "--at", "ats", "--write")
    o = data["steps"][0]["outcome"]
    assert data["steps"][0]["request"]["no_write"] == 0
    assert (o["r"], o["w"], o["ppn"], o["s"]) == (1, 1, f"{RWX_PA >> 12:#x}", 0)
    assert data["pa"] == f"{RWX_PA:#x}"
    data = explain(tmp_path, capsys, "--iova", f"{RO_PAGE:#x}", "--at", "ats")
    assert data["steps"][0]["request"]["no_write"] == 1
    assert (data["steps"][0]["outcome"]["r"], data["steps"][0]["outcome"]["w"]) == (1, 0)
    data = explain(tmp_path, capsys, "--iova", f"{RO_PAGE:#x}", "--at", "ats", en_ats=0)
    assert (data["status"], data["cause"]) == ("ur", 260)


def test_translated_request_without_t2gpa(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """riscv-iommu: "Process to translate an IOVA": a Translated request with T2GPA = 0
    completes with the address as given (step "go to step 20")."""
    data = explain(tmp_path, capsys, "--iova", "0x123456000", "--at", "translated")
    assert (data["status"], data["pa"]) == ("success", "0x123456000")
    assert data["steps"][0]["request"]["ttyp"] == 6


def test_pasid_without_pdtv_is_disallowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """riscv-iommu: "Process to translate an IOVA": a valid process_id with DC.tc.PDTV = 0
    is "Transaction type disallowed" (cause 260)."""
    data = explain(tmp_path, capsys, "--iova", f"{RO_PAGE:#x}", "--pasid", "0x17", "--priv")
    r = data["steps"][0]["request"]
    assert (r["pid_valid"], r["process_id"], r["priv_req"]) == (1, "0x17", 1)
    assert (data["status"], data["cause"]) == ("ur", 260)


def test_ad_update_goes_to_memory_not_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates": with SADE = 1
    the IOMMU sets A in the leaf; the walk shows it, the dump file is untouched."""
    data = explain(tmp_path, capsys, "--iova", f"{NO_A_PAGE:#x}")
    assert data["status"] == "success"
    ad = [e for e in data["steps"][0]["walk"] if e["kind"] == "ad"]
    assert len(ad) == 1 and ad[0]["set"] == ["A"]
    leaf = (tmp_path / "tables.bin").read_bytes()[S1_L0 - S1_ROOT + 16 :][:8]
    assert not PTE["a"].get(int.from_bytes(leaf, "little"))


def test_user_fault_queue_and_fctl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Given fqb/fqh/fqcsr, the record goes to that queue ("Fault/Event-Queue (FQ)"); fctl is
    written first, while the IOMMU is Off ("Features-control register (fctl)")."""
    fq = 0x40000
    data = explain(
        tmp_path,
        capsys,
        "--iova",
        f"{RO_PAGE:#x}",
        "--write",
        "--reg",
        f"fqb={(fq >> 12) << 10 | 3:#x}",
        "--reg",
        "fqh=0x5",
        "--reg",
        "fqcsr=0x1",
        "--reg",
        "fctl=0x4",  # GXL = 1: writable in the full preset; the Bare G-stage is unaffected
    )
    assert data["fault_queue"] == {"pa": f"{fq:#x}", "entries": 16, "on": 1, "scratch": False}
    assert data["registers"]["fctl"] == "0x4"
    assert data["steps"][0]["outcome"]["fault_record"]["pa"] == f"{fq:#x}"


def test_fault_queue_off_records_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = explain(tmp_path, capsys, "--iova", f"{RO_PAGE:#x}", "--write", "--reg", "fqcsr=0")
    o = data["steps"][0]["outcome"]
    assert data["cause"] == 15 and o["fault_record"] is None
    assert o["record_note"] == "fault record suppressed: queue off"


# -- bad flags: exit 2, one line naming the flag ----------------------------------------------

BAD: list[tuple[list[str], str]] = [
    (["--memory", "{missing}@0x1000"], "--memory {missing}@0x1000: no such file"),
    (["--memory", "{dir}@0x1000"], "--memory {dir}@0x1000: is a directory, not a file"),
    (["--memory", "{dc}"], "--memory {dc}: an image must be FILE@ADDR, not '{dc}'"),
    (["--memory", "{dc}@0xzz"], "--memory {dc}@0xzz: the address must be a hex (0x...) or"),
    (["--memory", "{dc}@-8"], "--memory {dc}@-8: the address must be a hex (0x...) or"),
    (
        ["--memory", "{dc}@0xfffffffffffffff8"],
        "--memory {dc}@0xfffffffffffffff8: the image must end at or below 2^64",
    ),
    (["--memory", "{dc}@0x11100"], "--memory {dc}@0x11100: images must not overlap"),
    (["--reg", "cqb=0"], "--reg cqb=0: the register must be one of ddtp, fctl, fqb, fqcsr, fqh"),
    (["--reg", "capabilities=0"], "--reg capabilities=0: capabilities is read-only"),
    (["--reg", "ddtp=0xzz"], "--reg ddtp=0xzz: ddtp must be a hex number, not '0xzz'"),
    (["--reg", "ddtp"], "--reg ddtp: a register must be NAME=HEX, not 'ddtp'"),
    (["--reg", "ddtp=2", "--reg", "ddtp=0x2"], "--reg ddtp=0x2: ddtp must be given once, not"),
    (["--reg", "ddtp=0x7"], "--reg ddtp=0x7: ddtp.iommu_mode must be 0..4 (Off, Bare, 1LVL,"),
    (["--reg", "ddtp=0x12"], "--reg ddtp=0x12: ddtp.busy must be 0"),
    (["--reg", "ddtp=0x8000000000000002"], "--reg ddtp=0x8000000000000002: ddtp reserved bits"),
    (
        ["--preset", "minimal", "--reg", "ddtp=0x4000000000002"],
        "--reg ddtp=0x4000000000002: ddtp.PPN must fit capabilities.PAS (48 bits), not "
        "0x10000000000",
    ),
    (["--reg", "fctl=0x8"], "--reg fctl=0x8: fctl bits 31:3 (reserved and custom) must be 0"),
    (["--reg", "fctl=0x100000000"], "--reg fctl=0x100000000: fctl must be a 32-bit value"),
    (["--reg", "fqcsr=0x201"], "--reg fqcsr=0x201: fqcsr.fqmf and fqcsr.fqof must be 0"),
    (["--reg", "fqb=0x20"], "--reg fqb=0x20: fqb reserved bits must be 0, not 0x20"),
    (["--reg", "fqh=0x5"], "--reg fqh=0x5: fqh must be below the fault queue's 2 entries"),
    (
        ["--preset", "minimal", "--reg", "fctl=1"],
        "--reg fctl=0x1: fctl.BE must be 1, but this IOMMU (preset minimal) does not let "
        "software change it: it reads 0",
    ),
    (["--preset", "huge"], "--preset huge: the preset must be one of full, linux-virt, minimal"),
    (["--preset", "full", "--capabilities", "0x1"], "--preset and --capabilities are mutually"),
    (["--capabilities", "0x10"], "--capabilities 0x10: capabilities.PAS must be in 13..56, not 0"),
    (["--capabilities", "xyz"], "--capabilities xyz: capabilities must be a hex number"),
    (["--device-id", "0x1000000"], "--device-id 0x1000000: device_id must be at most 0xffffff"),
    (["--device-id", "five"], "--device-id five: device_id must be a hex (0x...) or decimal"),
    (["--iova", "0x1_0000_0000_0000_0000"], "--iova 0x1_0000_0000_0000_0000: the IOVA must be"),
    (["--pasid", "0x100000"], "--pasid 0x100000: the PASID must be at most 0xfffff"),
    (["--priv"], "--priv needs --pasid"),
    (["--write", "--exec"], "--write and --exec are mutually exclusive"),
    (["--exec", "--at", "ats"], "--exec with --at ats needs --pasid"),
    (["--at", "physical"], "--at physical: the address type must be one of untranslated,"),
    (["--step", "3"], "--step applies only to a VECTOR, not with --memory"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_flag_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    dump = build_dump(tmp_path)
    names = {"missing": tmp_path / "missing.bin", "dir": tmp_path, "dc": tmp_path / "dc.bin"}
    extra = [a.format(**names) for a in extra]
    argv = ["explain", *dump, "--device-id", "5", "--iova", "0x0"]
    if not any(a.startswith("ddtp=") for a in extra):
        argv += ["--reg", f"ddtp={DDTP:#x}"]
    argv += extra  # a later --device-id or --iova replaces the valid one given first
    rc, out, err = run(argv, capsys)
    assert (rc, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("iommusim: error: " + message.format(**names)), err


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("--reg", "--reg ddtp=HEX is required with --memory"),
        ("--device-id", "--device-id N is required with --memory"),
        ("--iova", "--iova ADDR is required with --memory"),
    ],
)
def test_missing_flag_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: str, message: str
) -> None:
    flags = {"--reg": f"ddtp={DDTP:#x}", "--device-id": "5", "--iova": "0x0"}
    del flags[drop]
    argv = ["explain", *build_dump(tmp_path)]
    for k, v in flags.items():
        argv += [k, v]
    rc, out, err = run(argv, capsys)
    assert (rc, out) == (2, "")
    assert err.startswith(f"iommusim: error: {message}")


def test_unreadable_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that exists but cannot be opened (mode 000 for a user; simulated, since root
    opens anything)."""
    f = tmp_path / "secret.bin"
    f.write_bytes(bytes(8))

    def denied(path: object, mode: str = "r") -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rawmem, "open", denied, raising=False)
    argv = ["explain", "--memory", f"{f}@0", "--reg", "ddtp=2", "--device-id", "0", "--iova", "0"]
    rc, out, err = run(argv, capsys)
    assert (rc, out) == (2, "")
    assert err == f"iommusim: error: --memory {f}@0: cannot read it (Permission denied)\n"


def test_file_that_cannot_be_mapped_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image readable when parsed but not mappable (a file replaced meanwhile, a device
    node) is named as a --memory error too, and no map is left open."""
    dump = build_dump(tmp_path)
    opened: list[Any] = []
    real = mmap.mmap

    def flaky(fileno: int, length: int, **kw: Any) -> mmap.mmap:
        if opened:
            raise OSError(19, "No such device")
        m = real(fileno, length, **kw)
        opened.append(m)
        return m

    monkeypatch.setattr(mmap, "mmap", flaky)
    argv = ["explain", *dump, "--reg", f"ddtp={DDTP:#x}", "--device-id", "5", "--iova", "0"]
    rc, out, err = run(argv, capsys)
    assert (rc, out) == (2, "")
    assert err.startswith(f"iommusim: error: --memory {dump[3]}: cannot read it (No such device)")
    assert opened[0].closed


def test_modes_are_exclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exactly one of VECTOR or --memory; the flags of one mode are refused in the other."""
    dump = build_dump(tmp_path)
    cases = [
        (["explain", str(S1), *dump], "explain takes a VECTOR or --memory FILE@ADDR, not both"),
        (["explain"], "explain needs a VECTOR or --memory FILE@ADDR"),
        (["explain", "--iova", "0x0"], "explain needs a VECTOR or --memory FILE@ADDR, not --iova"),
        (["explain", str(S1), "--device-id", "1"], "--device-id applies only with --memory"),
    ]
    for argv, message in cases:
        rc, out, err = run(argv, capsys)
        assert (rc, out) == (2, "")
        assert err.startswith(f"iommusim: error: {message}"), err


def test_vector_mode_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    """``iommusim explain VECTOR --step N`` still explains the vector step."""
    rc, out, _ = run(["explain", str(S1), "--step", "19"], capsys)
    assert rc == 0
    assert "success: PA 0xd70d6cdd6030" in out
    assert "matches the vector's expectation" in out


def test_mrif_msi_data_from_a_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """AIA "MSI PTE, MRIF mode" (riscv-iommu: "Process to translate addresses of MSIs"):
    --msi-data locates the MRIF bit on a dump as on the vector."""
    path = VECTORS / "msi" / "msi-000021.json"
    vec = json.loads(path.read_text(encoding="utf-8"))
    regs = vector_registers(vec, 7)
    assert regs is not None
    argv = [
        "explain",
        "--json",
        "--capabilities",
        vec["params"]["capabilities"],
        "--msi-data",
        "70",
    ]
    for spec in dump_memory(vec, tmp_path):
        argv += ["--memory", spec]
    for name, value in regs.items():
        argv += ["--reg", f"{name}={value:#x}"]
    rc, out, err = run([*argv, *request_flags(vec["steps"][7]["req"])], capsys)
    assert (rc, err) == (0, "")
    data = json.loads(out)
    assert (data["status"], data["pa"]) == ("success", None)  # an MRIF, not a PA
    m = data["steps"][0]["outcome"]["mrif"]
    assert (m["identity"], m["bit"], m["pending_pa"]) == (70, 6, "0x53e39917610")
    (want,) = explain_vector(path, 7, msi_data=70)["steps"]
    assert data["steps"][0]["outcome"] == want["outcome"]


def test_big_endian_only_iommu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "Features-control register (fctl)": with capabilities.END = 0 the IOMMU
    has one endianness, so fctl.BE reads as dumped; it is written before ddtp, while the
    IOMMU is Off, and the walk reads the big-endian device context and PTEs (DC.tc.SBE)."""
    caps = PRESETS["full"].capabilities & ~(1 << cap.END)
    argv = ["explain", "--json", *build_dump(tmp_path, big_endian=True), "--reg", f"ddtp={DDTP:#x}"]
    argv += ["--capabilities", f"{caps:#x}", "--reg", "fctl=0x1", "--device-id", str(DID)]
    rc, out, err = run([*argv, "--iova", f"{RO_PAGE + 4:#x}"], capsys)
    assert (rc, err) == (0, "")
    data = json.loads(out)
    assert data["registers"]["fctl"] == "0x1"
    assert (data["status"], data["pa"]) == ("success", f"{RO_PA + 4:#x}")
    # Dumped with fctl.BE = 0, the IOMMU is a little-endian-only one: it reads the big-endian
    # tc doubleword as little-endian, whose V bit (in the last byte) is 0.
    argv[argv.index("fctl=0x1")] = "fctl=0"
    rc, out, _ = run([*argv, "--iova", f"{RO_PAGE + 4:#x}"], capsys)
    data = json.loads(out)
    assert (rc, data["registers"]["fctl"]) == (0, "0x0")
    assert (data["status"], data["cause"]) == ("ur", 258)


def test_big_endian_fault_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """riscv-iommu: "Fault/Event-Queue (FQ)": with fctl.BE = 1 (writable in the full preset)
    the record is written big-endian and decoded as such."""
    argv = ["explain", "--json", *build_dump(tmp_path, big_endian=True), "--reg", f"ddtp={DDTP:#x}"]
    argv += ["--reg", "fctl=1", "--device-id", str(DID), "--iova", f"{RO_PAGE:#x}", "--write"]
    rc, out, err = run(argv, capsys)
    assert (rc, err) == (0, "")
    rec = json.loads(out)["steps"][0]["outcome"]["fault_record"]["fields"]
    assert (rec["cause"], rec["ttyp"], rec["did"], rec["iotval"]) == (15, 3, "0x5", f"{RO_PAGE:#x}")


def test_unsupported_ddtp_mode_is_reported(tmp_path: Path) -> None:
    """riscv-iommu: "Device-directory-table pointer (ddtp)": iommu_mode is WARL; a mode above
    the implementation's leaves ddtp unchanged, which explain reports rather than explaining
    an Off IOMMU."""
    (tmp_path / "x.bin").write_bytes(b"")
    im = parse_image(f"{tmp_path / 'x.bin'}@0")
    params = PRESETS["full"].with_(max_mode=3)  # at most 2LVL
    with pytest.raises(
        RegisterValueError,
        match=r"^ddtp=0x4004: ddtp.iommu_mode 3LVL is not "
        r"supported by this IOMMU \(preset 2lvl\): ddtp keeps 0x0$",
    ):
        explain_raw(
            [im], params, {"ddtp": 0x4004}, Request(device_id=0, iova=0), source="preset 2lvl"
        )
