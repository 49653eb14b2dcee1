"""riscv-iommu: "Process to locate the Process-context", "Process-context fields" and
"Process-context configuration checks"."""

from __future__ import annotations

import pytest

from iommusim.bits.riscv.structures import DC_FSC, PC_FSC, PC_TA
from iommusim.hw.riscv.transaction import STATUS_UR
from iommusim.mem import ACCESS, CORRUPTION

DID = 0x42
IOVA = 0x40_3000


def _pdt_device(soc, pdt="pd20", *, dpe=0, pids=(), ta=None, **pc_kw):
    """A DC with PDTV = 1 in ``pdt`` mode and one Sv39 table shared by the given ``pids``;
    IOVA maps to a data page. Returns (pdt_root, pt_root, data_pa)."""
    pdt_root = soc.new_pdt()
    soc.write_dc(
        DID,
        tc=soc.tc(pdtv=1, dpe=dpe),
        fsc=DC_FSC.encode(mode=soc.PDTP_MODE[pdt], ppn=pdt_root >> 12),
    )
    pt = soc.new_pt("sv39")
    data = soc.DATA_BASE + 0x5000
    soc.map(pt, IOVA, data, **pc_kw)
    for pid in pids:
        soc.write_pc(
            pdt_root, pid, pdt, ta=ta, fsc=PC_FSC.encode(mode=soc.SATP_MODE["sv39"], ppn=pt >> 12)
        )
    return pdt_root, pt, data


@pytest.mark.parametrize(
    ("pdt", "pid"),
    [
        ("pd8", 0xAB),
        ("pd17", 0x1ABCD),
        ("pd20", 0xABCDE),
        ("pd20", 0xFFFFF),
    ],
)
def test_pdt_walk(soc, pdt, pid):
    """riscv-iommu: "Process to locate the Process-context": PD8/PD17/PD20 use 1/2/3 levels
    indexed by PDI[0] = pid[7:0], PDI[1] = pid[16:8], PDI[2] = pid[19:17]; the PC's fsc
    gives the first-stage table."""
    _, _, data = _pdt_device(soc, pdt, pids=[pid])
    resp = soc.translate(DID, IOVA + 0x123, pid_valid=True, process_id=pid)
    assert resp.ok and resp.pa == data + 0x123
    # A neighbouring process_id has no PC (V = 0): "PDT entry not valid".
    other = pid ^ 1
    bad = soc.translate(DID, IOVA, pid_valid=True, process_id=other)
    assert bad.status == STATUS_UR and bad.cause == 266
    (rec,) = soc.faults()
    assert (rec["cause"], rec["pv"], rec["pid"], rec["did"]) == (266, 1, other, DID)


@pytest.mark.parametrize("level", [1, 2])
def test_invalid_nonleaf_pdte_is_266(soc, level):
    """riscv-iommu: "Process to locate the Process-context" step 7: pdte.V == 0 -> 266."""
    pid = 0xABCDE
    root, _, _ = _pdt_device(soc, "pd20", pids=[pid])
    # Find the PDTE at `level` by walking the PDT the builder wrote.
    a = root + (pid >> 17 & 7) * 8
    if level == 1:
        a = (soc.rd64(a) >> 10 << 12) + (pid >> 8 & 0x1FF) * 8
    soc.wr64(a, soc.rd64(a) & ~1)
    assert soc.translate(DID, IOVA, pid_valid=True, process_id=pid).cause == 266
    assert soc.causes() == [266]


@pytest.mark.parametrize("bit", [1, 9, 54, 63])
def test_reserved_bits_in_pdte_are_267(soc, bit):
    """riscv-iommu: "Process to locate the Process-context" step 8 and "Non-leaf PDT entry"."""
    pid = 0x300
    root, _, _ = _pdt_device(soc, "pd17", pids=[pid])
    a = root + (pid >> 8 & 0x1FF) * 8
    soc.wr64(a, soc.rd64(a) | 1 << bit)
    assert soc.translate(DID, IOVA, pid_valid=True, process_id=pid).cause == 267
    assert soc.causes() == [267]


@pytest.mark.parametrize(
    ("ta", "fsc_mode"),
    [
        (PC_TA.encode(v=1) | 1 << 3, 8),  # reserved bit in PC.ta
        (PC_TA.encode(v=1) | 1 << 40, 8),  # reserved bit in PC.ta
        (PC_TA.encode(v=1), 1),  # reserved iosatp encoding
        (PC_TA.encode(v=1), 11),  # Sv64: reserved for future use
    ],
    ids=["ta-bit3", "ta-bit40", "mode-1", "mode-11"],
)
def test_misconfigured_pc_is_267(soc, ta, fsc_mode):
    """riscv-iommu: "Process-context configuration checks" -> "PDT entry misconfigured"."""
    root, pt, _ = _pdt_device(soc, "pd8")
    soc.write_pc(root, 5, "pd8", ta=ta, fsc=PC_FSC.encode(mode=fsc_mode, ppn=pt >> 12))
    resp = soc.translate(DID, IOVA, pid_valid=True, process_id=5)
    assert resp.status == STATUS_UR and resp.cause == 267
    assert soc.causes() == [267]


def test_pc_fsc_reserved_bits_are_267(soc):
    """riscv-iommu: "Process-context configuration checks" rule 1: PC.fsc bits 59:44."""
    root, pt, _ = _pdt_device(soc, "pd8")
    soc.write_pc(root, 5, "pd8", fsc=PC_FSC.encode(mode=8, ppn=pt >> 12) | 1 << 50)
    assert soc.translate(DID, IOVA, pid_valid=True, process_id=5).cause == 267


@pytest.mark.parametrize(("kind", "cause"), [(ACCESS, 265), (CORRUPTION, 269)])
def test_pdt_access_fault_and_corruption(soc, kind, cause):
    """riscv-iommu: "Process to locate the Process-context" steps 5, 6 and 10: 265 / 269."""
    root, _, _ = _pdt_device(soc, "pd8", pids=[7])
    soc.mem.inject(soc.pc_addr(root, 7, "pd8"), 16, kind)
    resp = soc.translate(DID, IOVA, pid_valid=True, process_id=7)
    assert resp.status == STATUS_UR and resp.cause == cause
    assert soc.causes() == [cause]


@pytest.mark.parametrize(("pdt", "pid"), [("pd8", 0x100), ("pd17", 1 << 17), ("pd8", 0xFFFFF)])
def test_process_id_too_wide_is_260(soc, pdt, pid):
    """riscv-iommu: "Process to translate an IOVA" step 7: a process_id wider than pdtp.MODE
    supports -> "Transaction type disallowed" (260)."""
    _pdt_device(soc, pdt, pids=[0])
    resp = soc.translate(DID, IOVA, pid_valid=True, process_id=pid)
    assert resp.status == STATUS_UR and resp.cause == 260
    (rec,) = soc.faults()
    assert (rec["cause"], rec["pv"], rec["pid"]) == (260, 1, pid)


def test_process_id_without_pdtv_is_260(soc):
    """riscv-iommu: "Process to translate an IOVA" step 7: a valid process_id with PDTV = 0."""
    soc.write_dc(DID, tc=soc.tc())
    assert soc.translate(DID, 0x1000, pid_valid=True, process_id=1).cause == 260


def test_supervisor_request_needs_ens(soc):
    """riscv-iommu: "Process to translate an IOVA" step 15 and PC.ta.ENS: a supervisor
    request with ENS = 0 -> 260; a user request to the same PC is translated."""
    _, _, data = _pdt_device(soc, "pd8", pids=[3], ta=PC_TA.encode(v=1, ens=0))
    assert soc.translate(DID, IOVA, pid_valid=True, process_id=3).pa == data
    resp = soc.translate(DID, IOVA, pid_valid=True, process_id=3, priv_req=True)
    assert resp.status == STATUS_UR and resp.cause == 260
    (rec,) = soc.faults()
    assert (rec["cause"], rec["pv"], rec["pid"], rec["priv"]) == (260, 1, 3, 1)


@pytest.mark.parametrize("dpe", [0, 1])
def test_dpe_default_process_id(soc, dpe):
    """riscv-iommu: "Process to translate an IOVA" steps 11-12: without a process_id, DPE = 1
    uses process_id 0's PC; DPE = 0 makes the first stage Bare."""
    _, _, data = _pdt_device(soc, "pd20", dpe=dpe, pids=[0])
    resp = soc.translate(DID, IOVA + 8)
    assert resp.ok
    assert resp.pa == (data + 8 if dpe else IOVA + 8)


def test_bare_pdtp_mode_means_bare_first_stage(soc):
    """riscv-iommu: "Process to translate an IOVA" step 13: pdtp.MODE = Bare -> Bare first
    stage even for a request with a process_id."""
    soc.write_dc(DID, tc=soc.tc(pdtv=1), fsc=DC_FSC.encode(mode=0))
    resp = soc.translate(DID, 0x7777_7000, pid_valid=True, process_id=0xFFFFF)
    assert resp.ok and resp.pa == 0x7777_7000


@pytest.mark.parametrize(("sum_", "ok"), [(0, False), (1, True)])
def test_sum_lets_supervisor_access_user_pages(soc, sum_, ok):
    """riscv-iommu: "Process-context fields" (ta.SUM): a supervisor access to a U = 1 page
    faults unless SUM = 1; supervisor execute of a U page faults regardless."""
    _, _, data = _pdt_device(soc, "pd8", pids=[9], ta=PC_TA.encode(v=1, ens=1, sum=sum_), x=1)
    resp = soc.translate(DID, IOVA, pid_valid=True, process_id=9, priv_req=True)
    if ok:
        assert resp.ok and resp.pa == data
    else:
        assert resp.cause == 13
    ex = soc.translate(DID, IOVA, pid_valid=True, process_id=9, priv_req=True, exec_req=True)
    assert ex.cause == 12


def test_supervisor_page_denied_to_user(soc):
    """Privileged spec via riscv-iommu "Process to translate an IOVA" step 17: a user request
    to a U = 0 page page-faults; a supervisor request with ENS = 1 succeeds."""
    _, _, data = _pdt_device(soc, "pd8", pids=[9], u=0)
    assert soc.translate(DID, IOVA, pid_valid=True, process_id=9, is_write=True).cause == 15
    sup = soc.translate(DID, IOVA, pid_valid=True, process_id=9, priv_req=True, is_write=True)
    assert sup.ok and sup.pa == data


def test_cached_pc_meeting_a_rewritten_dc_with_another_sxl_is_267(make_soc):
    """Fuzzer-class finding (KeyError in first_stage): software rewrites a DC (SXL 0 -> 1)
    without IODIR.INVAL_DDT; once the one-entry DDTC evicts it, the fresh DC meets the PC still
    in the PDTC, whose Sv48 mode SXL = 1 does not have. riscv-iommu: "Caching in-memory data
    structures" lets stale entries be used, never an exception: the PC is misconfigured for
    this DC -- "PDT entry misconfigured" (267, "Process-context configuration checks")."""
    from iommusim.hw.riscv.params import PRESETS, CacheParams

    p = PRESETS["full"]
    soc = make_soc(p.with_(caches=CacheParams(ddtc_entries=1, pdtc_entries=8, iotlb_entries=0)))
    pdt = soc.new_pdt()
    pt = soc.new_pt("sv48")
    fsc = soc.PDTP_MODE["pd8"] << 60 | pdt >> 12
    soc.write_dc(0x31, tc=soc.tc(pdtv=1), fsc=fsc)
    soc.write_pc(pdt, 7, "pd8", fsc=PC_FSC.encode(mode=soc.SATP_MODE["sv48"], ppn=pt >> 12))
    soc.map(pt, 0x5000, soc.DATA_BASE, "sv48")
    assert soc.translate(0x31, 0x5000, pid_valid=True, process_id=7).ok
    soc.write_dc(0x31, tc=soc.tc(pdtv=1, sxl=1), fsc=fsc)  # no invalidation
    soc.write_dc(0x32, tc=soc.tc())
    soc.translate(0x32, 0x1000)  # evicts DC 0x31 from the DDTC
    resp = soc.translate(0x31, 0x5008, pid_valid=True, process_id=7)
    assert (resp.status, resp.cause) == (STATUS_UR, 267)
    assert soc.causes() == [267]
