"""The bit tables of :mod:`iommusim.bits.riscv` against the spec's own bit diagrams.

Every register, structure and record of the RISC-V IOMMU spec is drawn as a ``[wavedrom]``
diagram; ``data/riscv_iommu_diagrams.json`` carries those diagrams (and the register attribute
tables) as the spec sources have them (regenerate with ``data/extract_diagrams.py``). Each
layout must name the same fields at the same bits as its diagram, and each register field must
have the access attribute of the spec's table. The tables are also pinned independently of the
diagrams by golden encodings written out from the spec text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from iommusim.bits.fields import Access, Layout
from iommusim.bits.riscv import regs as R
from iommusim.bits.riscv import structures as S
from iommusim.bits.riscv.queues import (
    CMD_ATS,
    CMD_IODIR,
    CMD_IOFENCE,
    CMD_IOTINVAL,
    FQ_RECORD,
    PQ_RECORD,
)

DATA = json.loads((Path(__file__).parent / "data" / "riscv_iommu_diagrams.json").read_text())
DIAGRAMS: list[dict[str, Any]] = DATA["diagrams"]

_REG = "iommu_registers.adoc"
_DS = "iommu_data_structures.adoc"
_Q = "iommu_in_memory_queues.adoc"

#: (layout, spec file, section heading, diagram caption or "" when the section has one).
CASES: list[tuple[Layout, str, str, str]] = [
    (R.CAPABILITIES, _REG, "IOMMU capabilities (`capabilities`)", ""),
    (R.FCTL, _REG, "Features-control register (`fctl`)", ""),
    (R.DDTP, _REG, "Device-directory-table pointer (`ddtp`)", ""),
    (R.CQB, _REG, "Command-queue base (`cqb`)", ""),
    (R.CQH, _REG, "Command-queue head (`cqh`)", ""),
    (R.CQT, _REG, "Command-queue tail (`cqt`)", ""),
    (R.FQB, _REG, "Fault queue base (`fqb`)", ""),
    (R.FQH, _REG, "Fault queue head (`fqh`)", ""),
    (R.FQT, _REG, "Fault queue tail (`fqt`)", ""),
    (R.PQB, _REG, "Page-request-queue base (`pqb`)", ""),
    (R.PQH, _REG, "Page-request-queue head (`pqh`)", ""),
    (R.PQT, _REG, "Page-request-queue tail (`pqt`)", ""),
    (R.CQCSR, _REG, "Command-queue CSR (`cqcsr`)", ""),
    (R.FQCSR, _REG, "Fault queue CSR (`fqcsr`)", ""),
    (R.PQCSR, _REG, "Page-request-queue CSR (`pqcsr`)", ""),
    (R.IPSR, _REG, "Interrupt pending status register (`ipsr`)", ""),
    (R.IOCOUNTOVF, _REG, "Performance-monitoring counter overflow status (`iocountovf`)", ""),
    (R.IOCOUNTINH, _REG, "Performance-monitoring counter inhibits (`iocountinh`)", ""),
    (R.IOHPMCYCLES, _REG, "Performance-monitoring cycles counter (`iohpmcycles`)", ""),
    (R.IOHPMCTR, _REG, "Performance-monitoring event counters (`iohpmctr1-31`)", ""),
    (R.IOHPMEVT, _REG, "Performance-monitoring event selectors (`iohpmevt1-31`)", ""),
    (R.TR_REQ_IOVA, _REG, "Translation-request IOVA (`tr_req_iova`)", ""),
    (R.TR_REQ_CTL, _REG, "Translation-request control (`tr_req_ctl`)", ""),
    (R.TR_RESPONSE, _REG, "Translation-response (`tr_response`)", ""),
    (R.IOMMU_QOSID, _REG, "IOMMU QoS ID (`iommu_qosid`)", ""),
    (R.ICVEC, _REG, "Interrupt-cause-to-vector register (`icvec`)", ""),
    (R.MSI_ADDR, _REG, "MSI configuration table (`msi_cfg_tbl`)", "Message address register"),
    (R.MSI_DATA, _REG, "MSI configuration table (`msi_cfg_tbl`)", "Message data register"),
    (R.MSI_VEC_CTL, _REG, "MSI configuration table (`msi_cfg_tbl`)", "Vector control register"),
    (S.DDTE, _DS, "Non-leaf DDT entry", ""),
    (S.DC_TC, _DS, "Translation control (`tc`)", ""),
    (S.DC_IOHGATP, _DS, "IO hypervisor guest address translation and protection (`iohgatp`)", ""),
    (S.DC_FSC, _DS, "First-Stage context (`fsc`)", "IO Supervisor address translation"),
    (S.DC_MSIPTP, _DS, "MSI page table pointer (`msiptp`)", ""),
    (S.MSI_ADDR_MASK, _DS, "MSI address mask (`msi_addr_mask`) and pattern", "address mask"),
    (S.PDTE, _DS, "Non-leaf PDT entry", ""),
    (S.PC_FSC, _DS, "First-Stage context (`fsc`)", "Process First-Stage context"),
    (FQ_RECORD, _Q, "Fault/Event-Queue (`FQ`)", "Fault-queue record"),
    (PQ_RECORD, _Q, "Page-Request-Queue (`PQ`)", "Page-request-queue record"),
    (CMD_IOTINVAL, _Q, "IOMMU Page-Table cache invalidation commands", ""),
    (CMD_IOFENCE, _Q, "IOMMU Command-queue Fence commands", ""),
    (CMD_IODIR, _Q, "IOMMU directory cache invalidation commands", ""),
]

# The two ``ta`` layouts share a section title: the DC's comes first in the chapter, the PC's
# second (riscv-iommu: "Device-context fields", "Process-context fields").
_TA = [d for d in DIAGRAMS if d["file"] == _DS and d["section"] == "Translation attributes (`ta`)"]
# The first diagram of the ATS-commands section is the command; the next two are PCIe payloads.
_ATS = [d for d in DIAGRAMS if d["file"] == _Q and d["section"] == "IOMMU PCIe ATS commands"]

#: Diagram names that name no field: reserved, custom or constant bits.
_NOT_FIELDS = re.compile(r"^(reserved|rsvd|wpri|0|custom.*|for custom use|operands)$")


def find(file: str, section: str, caption: str) -> dict[str, Any]:
    found = [
        d
        for d in DIAGRAMS
        if d["file"] == file and d["section"].startswith(section) and caption in d["caption"]
    ]
    assert len(found) == 1, f"{len(found)} diagrams in {file} / {section} / {caption!r}"
    return found[0]


def spec_name(name: str) -> str:
    """A diagram's field name as the tables spell it: lower case, ``LOG2SZ-1`` -> log2szm1,
    ``Go/Busy`` -> go_busy, a bit range such as ``ADDR[63:12]`` dropped."""
    name = re.sub(r"\[\d+(:\d+)?\]$", "", name.strip().lower())
    return name.replace("-1", "m1").replace("/", "_")


def spec_fields(diagram: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """lsb -> (name, width) of the named fields of a diagram."""
    return {
        f["lsb"]: (spec_name(f["name"]), f["width"])
        for f in diagram["fields"]
        if not _NOT_FIELDS.match(f["name"].strip().lower())
    }


def check(lay: Layout, diagram: dict[str, Any]) -> None:
    assert sum(f["width"] for f in diagram["fields"]) == lay.width, "total width"
    want = spec_fields(diagram)
    have = {f.lsb: (f.name, f.width) for f in lay.fields if f.access is not Access.CUSTOM}
    assert have == want
    # The custom-use fields of the tables are where the diagram says custom use.
    custom = {
        f["lsb"]: f["width"] for f in diagram["fields"] if "custom" in f["name"].strip().lower()
    }
    for f in lay.fields:
        if f.access is Access.CUSTOM:
            assert custom.get(f.lsb) == f.width, f"{lay.name}.{f.name} is not custom in the spec"


@pytest.mark.parametrize("lay,file,section,caption", CASES, ids=[c[0].name for c in CASES])
def test_layout_matches_spec_diagram(lay: Layout, file: str, section: str, caption: str) -> None:
    check(lay, find(file, section, caption))


@pytest.mark.parametrize(
    "lay,diagram",
    [(S.DC_TA, _TA[0]), (S.PC_TA, _TA[1]), (CMD_ATS, _ATS[0])],
    ids=["dc.ta", "pc.ta", "cmd.ats"],
)
def test_layout_matches_nth_diagram_of_its_section(lay: Layout, diagram: dict[str, Any]) -> None:
    check(lay, diagram)


def test_every_register_layout_is_checked() -> None:
    """Nothing in the register table escapes the diagram check."""
    checked = {id(c[0]) for c in CASES}
    assert [r.name for r in R.REGISTERS if id(r.layout) not in checked] == []


_ACCESS = {"RO": Access.RO, "RW": Access.RW, "RW1C": Access.RW1C, "RW1S": Access.RW1S}
_ACCESS["WARL"] = Access.WARL


@pytest.mark.parametrize(
    "lay,section,caption",
    [(c[0], c[2], c[3]) for c in CASES if c[1] == _REG],
    ids=[c[0].name for c in CASES if c[1] == _REG],
)
def test_register_access_matches_spec_attributes(lay: Layout, section: str, caption: str) -> None:
    """riscv-iommu: each register's field table gives the attribute (RO, RW, RW1C, RW1S,
    WARL; WPRI for reserved bits, which no field covers)."""
    rows = find(_REG, section, caption)["attributes"]
    assert rows, "the spec table has attribute rows"
    by_lsb = {f.lsb: f for f in lay.fields}
    for row in rows:
        if _NOT_FIELDS.match(row["name"].strip().lower()) or row["attr"] == "WPRI":
            continue
        f = by_lsb[row["lsb"]]
        assert (f.name, f.msb) == (spec_name(row["name"]), row["msb"])
        assert f.access is _ACCESS[row["attr"]], f"{lay.name}.{f.name}"


# -- golden encodings, written out from the spec text independently of the diagrams ----------


def test_golden_queue_csr_encodings() -> None:
    """riscv-iommu: "cqcsr": cqen 0, cie 1, cqmf 8, cmd_to 9, cmd_ill 10, fence_w_ip 11,
    cqon 16, busy 17; fqcsr/pqcsr: en 0, ie 1, mf 8, of 9, on 16, busy 17."""
    assert R.CQCSR.encode(cqen=1, cie=1, cqon=1, busy=1) == 0x3_0003
    assert R.CQCSR_ERRORS == 0xF00
    assert R.FQCSR.encode(fqen=1, fie=1, fqmf=1, fqof=1, fqon=1, busy=1) == 0x3_0303
    assert R.PQCSR.encode(pqen=1, pie=1, pqmf=1, pqof=1, pqon=1, busy=1) == 0x3_0303


def test_golden_pointer_and_base_encodings() -> None:
    """riscv-iommu: "ddtp": iommu_mode 3:0, busy 4, PPN 53:10; "cqb": LOG2SZ-1 4:0, PPN 53:10."""
    assert R.DDTP.encode(iommu_mode=4, busy=1, ppn=0xABCDE) == 0xABCDE << 10 | 0x14
    assert R.CQB.encode(log2szm1=9, ppn=(1 << 44) - 1) == 0x003F_FFFF_FFFF_FC09
    assert R.OFF_CQB == 24 and R.OFF_FQB == 40 and R.OFF_PQB == 56


def test_golden_register_offsets() -> None:
    """riscv-iommu: "Register layout" table, offsets as printed."""
    assert [(r.name, r.offset) for r in R.REGISTERS] == [
        ("capabilities", 0),
        ("fctl", 8),
        ("ddtp", 16),
        ("cqb", 24),
        ("cqh", 32),
        ("cqt", 36),
        ("fqb", 40),
        ("fqh", 48),
        ("fqt", 52),
        ("pqb", 56),
        ("pqh", 64),
        ("pqt", 68),
        ("cqcsr", 72),
        ("fqcsr", 76),
        ("pqcsr", 80),
        ("ipsr", 84),
        ("iocountovf", 88),
        ("iocountinh", 92),
        ("iohpmcycles", 96),
        ("iohpmctr", 104),
        ("iohpmevt", 352),
        ("tr_req_iova", 600),
        ("tr_req_ctl", 608),
        ("tr_response", 616),
        ("iommu_qosid", 624),
        ("icvec", 760),
        ("msi_addr", 768),
        ("msi_data", 776),
        ("msi_vec_ctl", 780),
    ]
    # iohpmctr1-31 and iohpmevt1-31 fill 248 bytes each; the MSI table 16 entries of 16 bytes.
    ctr = R.REGISTERS[19]
    assert ctr.count * ctr.stride == 248 and ctr.first == 1
    assert R.REGISTERS[-1].count * R.REGISTERS[-1].stride == 256


def test_golden_hpm_and_debug_encodings() -> None:
    """riscv-iommu: "iohpmevt1-31": eventID 14:0, DMASK 15, PID_PSCID 35:16, DID_GSCID 59:36,
    PV_PSCV 60, DV_GSCV 61, IDT 62, OF 63; "tr_req_ctl": Go/Busy 0, Priv 1, Exe 2, NW 3,
    PID 31:12, PV 32, DID 63:40; "icvec": civ 3:0, fiv 7:4, pmiv 11:8, piv 15:12."""
    evt = R.IOHPMEVT.encode(eventid=0x7FFF, dmask=1, pid_pscid=1, did_gscid=1, of=1)
    assert evt == 1 << 63 | 1 << 36 | 1 << 16 | 1 << 15 | 0x7FFF
    assert R.IOHPMEVT.encode(pv_pscv=1, dv_gscv=1, idt=1) == 0x7 << 60
    ctl = R.TR_REQ_CTL.encode(go_busy=1, priv=1, exe=1, nw=1, pid=0xFFFFF, pv=1, did=0xFFFFFF)
    assert ctl == 0xFFFF_FF01_FFFF_F00F
    assert R.ICVEC.encode(civ=1, fiv=2, pmiv=3, piv=4) == 0x4321
    assert R.CAPABILITIES.encode(pas=56, igs=2, ats=1) == 56 << 32 | 2 << 28 | 1 << 25
