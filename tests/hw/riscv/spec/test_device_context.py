"""riscv-iommu: "Process to locate the Device-context" and "Device-context configuration checks"."""

from __future__ import annotations

import pytest

from iommusim.bits.riscv.queues import FQ_RECORD
from iommusim.bits.riscv.regs import cap
from iommusim.bits.riscv.structures import DC_FSC, DC_IOHGATP, DC_MSIPTP, DC_TA, DC_TC
from iommusim.hw.riscv.params import PRESETS
from iommusim.hw.riscv.transaction import STATUS_SUCCESS, STATUS_UR
from iommusim.mem import ACCESS, CORRUPTION

FULL = PRESETS["full"]
BASE_FORMAT = FULL.with_(capabilities=FULL.capabilities & ~(1 << cap.MSI_FLAT))

# device_ids that use every DDI level of each mode, in both formats.
DIDS = {1: 0x2A, 2: 0x1ABC, 3: 0xABCDEF}


def _without(*bits: int):
    caps = FULL.capabilities
    for b in bits:
        caps &= ~(1 << b)
    return FULL.with_(capabilities=caps)


@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("params", [FULL, BASE_FORMAT], ids=["extended", "base"])
def test_locate_dc_each_mode_and_format(make_soc, levels, params):
    """riscv-iommu: "Process to locate the Device-context" steps 1-11, with the DDI split of
    "Process to translate an IOVA" steps 3-4 (base: 7/9/8 bits, extended: 6/9/9 bits) and
    DC_SIZE 32 (base) or 64 (extended) bytes."""
    soc = make_soc(params, ddt_levels=levels)
    did = DIDS[levels]
    soc.write_dc(did, tc=soc.tc())
    # The neighbouring DC sits exactly DC_SIZE bytes further and is not valid: a wrong
    # stride or DDI split would read one for the other.
    soc.write_dc(did + 1, tc=0)
    assert soc.dc_addr(did + 1) - soc.dc_addr(did) == (64 if params is FULL else 32)

    ok = soc.translate(did, 0x1234_5678)
    assert ok.status == STATUS_SUCCESS
    assert ok.pa == 0x1234_5678  # Bare first and second stage
    bad = soc.translate(did + 1, 0x1000)
    assert bad.status == STATUS_UR and bad.cause == 258
    assert soc.causes() == [258]


@pytest.mark.parametrize("params", [FULL, BASE_FORMAT], ids=["extended", "base"])
def test_extended_only_uses_64_byte_dc(make_soc, params):
    """riscv-iommu: "Process to locate the Device-context" step 8: with MSI_FLAT = 0 only the
    first 32 bytes are the DC; garbage in the following 32 bytes is a different DC."""
    soc = make_soc(params, ddt_levels=1)
    pa = soc.write_dc(0, tc=soc.tc())
    soc.wr64(pa + 56, 1)  # extended format: DC doubleword 7 (reserved) is not zero
    resp = soc.translate(0, 0x5000)
    if params is FULL:
        assert resp.cause == 259
    else:
        # Base format: byte 56 is doubleword 3 of DC 1 (fsc), not part of DC 0.
        assert resp.ok and resp.pa == 0x5000


@pytest.mark.parametrize("level", [1, 2])
def test_invalid_nonleaf_ddte_is_258(soc, level):
    """riscv-iommu: "Process to locate the Device-context" step 5: ddte.V == 0 -> cause 258."""
    did = DIDS[3]
    soc.write_dc(did, tc=soc.tc())
    a = soc.ddte_addr(did, level)
    soc.wr64(a, soc.rd64(a) & ~1)
    resp = soc.translate(did, 0x1000, is_write=True)
    assert resp.status == STATUS_UR and resp.cause == 258
    (rec,) = soc.faults()
    assert rec["cause"] == 258 and rec["did"] == did and rec["ttyp"] == 3


def test_invalid_dc_is_258(soc):
    """riscv-iommu: "Process to locate the Device-context" step 9: DC.tc.V == 0 -> 258."""
    soc.write_dc(7, tc=DC_TC.encode(v=0, en_ats=1))
    assert soc.translate(7, 0x1000).cause == 258
    assert soc.causes() == [258]


@pytest.mark.parametrize("bit", [1, 9, 54, 63])
def test_reserved_bits_in_nonleaf_ddte_are_259(soc, bit):
    """riscv-iommu: "Process to locate the Device-context" step 6 and "Non-leaf DDT entry":
    reserved bits set in a valid non-leaf ddte -> cause 259."""
    did = DIDS[3]
    soc.write_dc(did, tc=soc.tc())
    a = soc.ddte_addr(did, 2)
    soc.wr64(a, soc.rd64(a) | 1 << bit)
    assert soc.translate(did, 0x1000).cause == 259
    assert soc.causes() == [259]


@pytest.mark.parametrize(("kind", "cause"), [(ACCESS, 257), (CORRUPTION, 268)])
@pytest.mark.parametrize("where", ["ddte", "dc"])
def test_ddt_access_fault_and_corruption(soc, kind, cause, where):
    """riscv-iommu: "Process to locate the Device-context" steps 3-4 and 8: a PMA/PMP
    violation reading a ddte or the DC is 257, poisoned data is 268."""
    did = DIDS[3]
    dc = soc.write_dc(did, tc=soc.tc())
    if where == "ddte":
        soc.mem.inject(soc.ddte_addr(did, 1), 8, kind)
    else:
        soc.mem.inject(dc + 8, 8, kind)  # one doubleword of the DC is enough
    resp = soc.translate(did, 0x3000)
    assert resp.status == STATUS_UR and resp.cause == cause
    (rec,) = soc.faults()
    assert rec["cause"] == cause and rec["iotval"] == 0x3000


@pytest.mark.parametrize(
    ("levels", "did"),
    [
        (1, 1 << 6),  # DDI[1] != 0
        (1, 1 << 15),  # DDI[2] != 0
        (2, 1 << 15),  # DDI[2] != 0
        (2, 0xFF_FFFF),
    ],
)
def test_device_id_too_wide_is_260(make_soc, levels, did):
    """riscv-iommu: "Process to translate an IOVA" step 5: device_id wider than the 1LVL/2LVL
    mode supports -> "Transaction type disallowed" (260), without reading the DDT."""
    soc = make_soc(ddt_levels=levels)
    soc.mem.inject(soc.ddt_root, 4096, ACCESS)  # a DDT read would give 257 instead
    resp = soc.translate(did, 0x1000)
    assert resp.status == STATUS_UR and resp.cause == 260
    (rec,) = soc.faults()
    assert rec["cause"] == 260 and rec["did"] == did


def test_widest_device_id_in_mode_is_accepted(make_soc):
    """riscv-iommu: "Process to translate an IOVA" step 5: in 2LVL (extended format) the
    largest device_id with DDI[2] == 0 is 2^15 - 1."""
    soc = make_soc(ddt_levels=2)
    soc.write_dc(0x7FFF, tc=soc.tc())
    assert soc.translate(0x7FFF, 0x2000).ok
    assert soc.causes() == []


# (id, params, DC fields) -- each row violates exactly one rule of the checks.
_SV39X4 = DC_IOHGATP.encode(mode=8, ppn=0x80000)
MISCONFIGURED = [
    ("tc-reserved-bit", FULL, {"tc": DC_TC.encode(v=1) | 1 << 12}),
    ("tc-reserved-high", FULL, {"tc": DC_TC.encode(v=1) | 1 << 40}),
    ("dpe-without-pdtv", FULL, {"tc": DC_TC.encode(v=1, dpe=1)}),
    ("ta-reserved", FULL, {"ta": 1}),
    ("fsc-reserved", FULL, {"fsc": 1 << 50}),
    ("en-ats-without-cap", _without(cap.ATS), {"tc": DC_TC.encode(v=1, en_ats=1)}),
    ("t2gpa-without-en-ats", FULL, {"tc": DC_TC.encode(v=1, t2gpa=1), "iohgatp": _SV39X4}),
    ("en-pri-without-en-ats", FULL, {"tc": DC_TC.encode(v=1, en_pri=1)}),
    ("prpr-without-en-pri", FULL, {"tc": DC_TC.encode(v=1, en_ats=1, prpr=1)}),
    (
        "t2gpa-without-cap",
        _without(cap.T2GPA),
        {"tc": DC_TC.encode(v=1, en_ats=1, t2gpa=1), "iohgatp": _SV39X4},
    ),
    ("t2gpa-with-bare-iohgatp", FULL, {"tc": DC_TC.encode(v=1, en_ats=1, t2gpa=1)}),
    ("pdtp-mode-reserved", FULL, {"tc": DC_TC.encode(v=1, pdtv=1), "fsc": DC_FSC.encode(mode=4)}),
    (
        "pdtp-pd20-without-cap",
        _without(cap.PD20),
        {"tc": DC_TC.encode(v=1, pdtv=1), "fsc": DC_FSC.encode(mode=3)},
    ),
    ("iosatp-mode-reserved", FULL, {"fsc": DC_FSC.encode(mode=1)}),
    ("iosatp-sv48-without-cap", _without(cap.SV48), {"fsc": DC_FSC.encode(mode=9)}),
    ("iohgatp-mode-reserved", FULL, {"iohgatp": DC_IOHGATP.encode(mode=1)}),
    ("iohgatp-sv39x4-without-cap", _without(cap.SV39X4), {"iohgatp": _SV39X4}),
    ("iohgatp-ppn-not-16k", FULL, {"iohgatp": DC_IOHGATP.encode(mode=8, ppn=0x80001)}),
    ("msiptp-mode-reserved", FULL, {"iohgatp": _SV39X4, "msiptp": DC_MSIPTP.encode(mode=2)}),
    ("msiptp-reserved-bits", FULL, {"iohgatp": _SV39X4, "msiptp": 1 << 50}),
    ("msi-addr-mask-reserved", FULL, {"msi_mask": 1 << 52}),
    ("dw7-not-zero", FULL, {"dw7": 1}),
    ("msiptp-flat-with-bare-iohgatp", FULL, {"msiptp": DC_MSIPTP.encode(mode=1)}),
    ("sade-without-amo-hwad", _without(cap.AMO_HWAD), {"tc": DC_TC.encode(v=1, sade=1)}),
    ("gade-without-amo-hwad", _without(cap.AMO_HWAD), {"tc": DC_TC.encode(v=1, gade=1)}),
    (
        "sbe-without-end",
        _without(cap.END).with_(fctl_be_writable=False),
        {"tc": DC_TC.encode(v=1, sbe=1)},
    ),
    ("sxl-with-gxl-not-writable", FULL.with_(gxl_writable=False), {"tc": DC_TC.encode(v=1, sxl=1)}),
    ("rcid-too-wide", FULL.with_(qosid_mask=0x00FF_00FF), {"ta": DC_TA.encode(rcid=0x100)}),
    ("mcid-too-wide", FULL.with_(qosid_mask=0x00FF_00FF), {"ta": DC_TA.encode(mcid=0x100)}),
    ("rcid-without-qosid", _without(cap.QOSID), {"ta": DC_TA.encode(rcid=1)}),
]


@pytest.mark.parametrize(
    ("params", "fields"), [pytest.param(p, f, id=i) for i, p, f in MISCONFIGURED]
)
def test_misconfigured_dc_is_259(make_soc, params, fields):
    """riscv-iommu: "Device-context configuration checks": a valid DC violating any rule
    -> "DDT entry misconfigured" (259), reported in the fault queue."""
    soc = make_soc(params)
    soc.write_dc(5, **{"tc": DC_TC.encode(v=1), **fields})
    resp = soc.translate(5, 0x7000)
    assert resp.status == STATUS_UR and resp.cause == 259
    (rec,) = soc.faults()
    assert rec["cause"] == 259 and rec["did"] == 5 and rec["ttyp"] == 2


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"tc": DC_TC.encode(v=1, en_ats=1, en_pri=1, prpr=1)},
        {"tc": DC_TC.encode(v=1, en_ats=1, t2gpa=1), "iohgatp": _SV39X4},
        {"tc": DC_TC.encode(v=1, pdtv=1, dpe=1), "fsc": DC_FSC.encode(mode=3)},
        {"ta": DC_TA.encode(pscid=0xFFFFF, rcid=0xFFF, mcid=0xFFF)},
        {"tc": DC_TC.encode(v=1, sade=1, gade=1, sbe=1, sxl=1)},
        {"iohgatp": _SV39X4, "msiptp": DC_MSIPTP.encode(mode=1)},
    ],
    ids=["plain", "pri", "t2gpa", "pdtv-dpe", "ta-full", "tc-flags", "msi-flat"],
)
def test_well_configured_dc_passes_checks(make_soc, fields):
    """riscv-iommu: "Device-context configuration checks": legal settings near each rule are
    not misconfigured (the control group of the table above)."""
    soc = make_soc()
    soc.write_dc(5, **{"tc": DC_TC.encode(v=1), **fields})
    soc.translate(5, 0x7000)
    assert 259 not in soc.causes()


def test_dtf_suppresses_translation_faults_but_not_259(soc):
    """riscv-iommu: "Fault record CAUSE field encodings" ("Reported if DTF is 1?") and
    "Translation control (tc)": DTF = 1 hides page faults and 260 but not 259; the response
    is still an error."""
    root = soc.s1_device(1, dtf=1)  # empty Sv39 table: every access page-faults
    assert root
    pf = soc.translate(1, 0x4000)
    assert pf.status == STATUS_UR and pf.cause == 13
    ttd = soc.translate(1, 0x4000, pid_valid=True, process_id=3)  # PDTV = 0
    assert ttd.status == STATUS_UR and ttd.cause == 260
    assert soc.faults() == []

    soc.write_dc(2, tc=DC_TC.encode(v=1, dtf=1) | 1 << 12)  # misconfigured: DTF not trusted
    assert soc.translate(2, 0x4000).cause == 259
    assert soc.causes() == [259]

    soc.s1_device(3)  # DTF = 0: the same page fault is reported
    assert soc.translate(3, 0x4000).cause == 13
    assert soc.causes() == [259, 13]


def test_fault_record_decodes_with_layout(soc):
    """riscv-iommu: "Fault/Event-Queue (FQ)": the record is four doublewords, CAUSE in 11:0."""
    soc.write_dc(9, tc=0)
    soc.translate(9, 0xABC000)
    raw = int.from_bytes(soc.ram.read(soc.fq_base, 32), "little")
    assert raw & 0xFFF == 258
    assert FQ_RECORD.decode(raw)["iotval"] == 0xABC000
