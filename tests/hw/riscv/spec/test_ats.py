"""riscv-iommu: "PCIe ATS translation request handling" and translated requests ("Process to
translate an IOVA" steps 7-8)."""

from __future__ import annotations

import pytest

from iommusim.bits.riscv.structures import DC_IOHGATP, PC_FSC, PC_TA
from iommusim.hw.riscv.transaction import STATUS_CA, STATUS_SUCCESS, STATUS_UR
from iommusim.mem import ACCESS

DID = 0x21
ATS = {"at": 2}


def test_4k_completion(soc):
    """riscv-iommu: "PCIe ATS translation request handling": a Success completion carries the
    translated PPN with S = 0 for a 4 KiB translation, R/W from the PTE, no fault record."""
    root = soc.s1_device(DID, en_ats=1)
    soc.map(root, 0x5000, soc.DATA_BASE + 0x7000)
    resp = soc.translate(DID, 0x5123, no_write=False, **ATS)
    assert resp.status == STATUS_SUCCESS
    assert (resp.r, resp.w, resp.exe, resp.s) == (True, True, False, False)
    assert resp.ppn == (soc.DATA_BASE + 0x7000) >> 12
    assert soc.faults() == []


@pytest.mark.parametrize(("level", "size_lg2"), [(1, 21), (2, 30)])
def test_superpage_completion_uses_s_encoding(soc, level, size_lg2):
    """PCIe ATS range encoding (riscv-iommu: "PCIe ATS translation request handling"): S = 1
    and the address bits 12 .. size-2 set to 1, bit size-1 = 0 give a 2^size range."""
    root = soc.s1_device(DID, en_ats=1)
    size = 1 << size_lg2
    pa = 0x40 << 30
    soc.map(root, 5 * size, pa, level=level)
    resp = soc.translate(DID, 5 * size + 0x1234, **ATS)
    assert resp.ok and resp.s
    ones = (1 << (size_lg2 - 13)) - 1
    assert resp.ppn == (pa >> 12) | ones
    assert not resp.ppn >> (size_lg2 - 13) & 1  # the first 0 bit marks the size
    assert resp.ppn & ~((1 << (size_lg2 - 12)) - 1) == pa >> 12


@pytest.mark.parametrize(("d", "nw", "w"), [(1, True, True), (0, True, False), (1, False, True)])
def test_write_permission_needs_dirty_page(soc, d, nw, w):
    """riscv-iommu: "PCIe ATS translation request handling": W is granted only for a page
    that is already dirty when no-write (NW = 1) is requested (without SADE no D update)."""
    root = soc.s1_device(DID, en_ats=1)
    soc.map(root, 0x5000, soc.DATA_BASE, d=d)
    resp = soc.translate(DID, 0x5000, no_write=nw, **ATS)
    assert resp.ok and resp.r and resp.w is w


def test_write_request_with_sade_sets_dirty(soc):
    """riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates": an ATS request
    with NW = 0 and SADE = 1 marks the page dirty and is granted W."""
    root = soc.s1_device(DID, en_ats=1, sade=1)
    pte = soc.map(root, 0x5000, soc.DATA_BASE, a=0, d=0)
    resp = soc.translate(DID, 0x5000, no_write=False, **ATS)
    assert resp.ok and resp.w
    assert soc.rd64(pte) >> 6 & 3 == 3  # A and D


def test_user_denial_is_success_with_no_permissions(soc):
    """riscv-iommu: "PCIe ATS translation request handling": no PASID and U = 0 -> Success
    with R = W = 0 and no fault record."""
    root = soc.s1_device(DID, en_ats=1)
    soc.map(root, 0x5000, soc.DATA_BASE, u=0)
    resp = soc.translate(DID, 0x5000, no_write=False, **ATS)
    assert resp.status == STATUS_SUCCESS and not resp.r and not resp.w
    assert soc.faults() == []


@pytest.mark.parametrize(("sum_", "granted"), [(0, False), (1, True)])
def test_supervisor_request_to_user_page(soc, sum_, granted):
    """riscv-iommu: "PCIe ATS translation request handling": Privilege Mode Requested with a
    U = 1 page and SUM = 0 -> Success, R = W = 0; Priv in the completion follows the request."""
    pdt = soc.new_pdt()
    pt = soc.new_pt()
    soc.write_dc(DID, tc=soc.tc(en_ats=1, pdtv=1), fsc=soc.PDTP_MODE["pd8"] << 60 | pdt >> 12)
    soc.write_pc(pdt, 4, "pd8", ta=PC_TA.encode(v=1, ens=1, sum=sum_), fsc=8 << 60 | pt >> 12)
    soc.map(pt, 0x5000, soc.DATA_BASE)
    resp = soc.translate(DID, 0x5000, pid_valid=True, process_id=4, priv_req=True, **ATS)
    assert resp.status == STATUS_SUCCESS and resp.priv
    assert resp.r is granted
    assert soc.faults() == []


def test_page_fault_is_success_without_permission(soc):
    """riscv-iommu: "PCIe ATS translation request handling": page faults (12/13/15) give a
    Success response with R = W = 0; nothing is logged."""
    soc.s1_device(DID, en_ats=1)
    resp = soc.translate(DID, 0x5000, no_write=False, **ATS)
    assert resp.status == STATUS_SUCCESS and not (resp.r or resp.w)
    assert soc.faults() == []


def test_access_fault_is_completer_abort(soc):
    """riscv-iommu: "PCIe ATS translation request handling": an access fault (cause 5) is a
    Completer Abort and is reported with TTYP 8."""
    root = soc.s1_device(DID, en_ats=1)
    soc.mem.inject(soc.pte_addr(root, 0x5000), 8, ACCESS)
    resp = soc.translate(DID, 0x5000, **ATS)
    assert resp.status == STATUS_CA
    (rec,) = soc.faults()
    assert (rec["cause"], rec["ttyp"], rec["iotval"]) == (5, 8, 0x5000)


@pytest.mark.parametrize("at", [1, 2])
def test_ats_disabled_is_unsupported_request(soc, at):
    """riscv-iommu: "Process to translate an IOVA" step 7: a Translated or ATS request with
    DC.tc.EN_ATS = 0 -> UR and "Transaction type disallowed" (260) is recorded."""
    soc.s1_device(DID)
    resp = soc.translate(DID, 0x5000, at=at)
    assert resp.status == STATUS_UR and resp.cause == 260
    (rec,) = soc.faults()
    assert (rec["cause"], rec["ttyp"]) == (260, 8 if at == 2 else 6)


@pytest.mark.parametrize("write", [False, True])
def test_translated_request_passes_through(soc, write):
    """riscv-iommu: "Process to translate an IOVA" step 8: a Translated request with EN_ATS = 1
    and T2GPA = 0 completes with the address as given, without a page-table walk."""
    soc.s1_device(DID, en_ats=1)  # empty table: an untranslated request would fault
    addr = 0xDEAD_B000
    resp = soc.translate(DID, addr + 4, at=1, is_write=write)
    assert resp.ok and resp.pa == addr + 4
    assert soc.faults() == []


def test_ats_in_bare_mode_is_260(make_soc):
    """riscv-iommu: "Process to translate an IOVA" step 2: ddtp Bare and an ATS request ->
    "Transaction type disallowed"."""
    soc = make_soc(ddt_levels=None)
    soc.set_reg(16, 1, 8)  # ddtp.iommu_mode = Bare
    assert soc.translate(DID, 0x5000, **ATS).cause == 260
    assert soc.translate(DID, 0x5000).pa == 0x5000
    assert soc.causes() == [260]


# ---------------------------------------------------------------------------------------------
# riscv-iommu: "PCIe ATS translation request handling": "If the translation could be
# successfully completed but the requested permissions are not present in either stage
# (Execute requested but no execute permission; no-write not requested and no write
# permission; no read permission) then a Success response is returned with the denied
# permission (R, W or X) set to 0 and the other permission bits set to the value determined
# from the page tables." Both stages are walked to their end first, with their A/D updates
# ("IOMMU updating of PTE accessed (A) and dirty (D) updates").

PID = 0x2B
IOVA = 0x7000
GPA = 0x1_2000_5000  # outside the identity-mapped gigabyte of the G-stage
SPA = 0x2_4000_9000
#: Leaf flags that deny one permission (A = 0 so the walk's A update shows; D = 1 so a
#: writable leaf never needs a D update). A leaf without R is execute-only.
DENY = {"r": {"r": 0, "w": 0, "x": 1}, "w": {"w": 0}, "x": {"x": 0}}
#: The request asking for each permission: read (NW = 1), write (NW = 0), execute (NW = 1).
ASK = {"r": {"no_write": True}, "w": {"no_write": False}, "x": {"exec_req": True}}


def _two_stage_ats(soc, *, pasid, s1_flags, g_flags):
    """A device with SADE = GADE = 1, an Sv39x4 G-stage and an Sv39 first stage (in DC.fsc,
    or in a PD8 process context for ``pasid``) mapping IOVA -> GPA -> SPA with one 4 KiB leaf
    per stage. Returns the addresses of the first-stage and G-stage leaves."""
    groot = soc.new_pt("sv39x4")
    soc.identity_gstage(groot)
    pt = soc.new_pt()
    iohgatp = DC_IOHGATP.encode(mode=8, gscid=3, ppn=groot >> 12)
    iosatp = PC_FSC.encode(mode=soc.SATP_MODE["sv39"], ppn=pt >> 12)
    if pasid:
        pdt = soc.new_pdt()
        soc.write_dc(
            DID,
            tc=soc.tc(en_ats=1, pdtv=1, sade=1, gade=1),
            iohgatp=iohgatp,
            fsc=soc.PDTP_MODE["pd8"] << 60 | pdt >> 12,
        )
        soc.write_pc(pdt, PID, "pd8", fsc=iosatp)
    else:
        soc.write_dc(DID, tc=soc.tc(en_ats=1, sade=1, gade=1), iohgatp=iohgatp, fsc=iosatp)
    s1 = soc.map(pt, IOVA, GPA, **{"x": 1, "a": 0, "g": 1, **s1_flags})
    g = soc.map(groot, GPA, SPA, "sv39x4", **{"x": 1, "a": 0, **g_flags})
    return s1, g


def _ats(soc, pasid, **kw):
    if pasid:
        kw.update(pid_valid=True, process_id=PID)
    return soc.translate(DID, IOVA + 0x24, at=2, **kw)


@pytest.mark.parametrize("pasid", [False, True])
@pytest.mark.parametrize("denied_by", [None, "s1", "g", "both"])
@pytest.mark.parametrize("perm", ["r", "w", "x"])
def test_requested_permission_granted_or_denied_by_each_stage(soc, perm, denied_by, pasid):
    """riscv-iommu: "PCIe ATS translation request handling": a denied permission is 0 in the
    Success completion, the others come from the page tables of both stages; X only with R
    and an execute request (which needs a PASID); U = 0, Priv as requested (0), G is the
    first-stage G for a PASID request that completed (also when permissions are denied:
    public vector ats-000001 step 29), the range is the 4 KiB leaf of both stages; no fault
    is recorded, and both leaves get A set by the walk (SADE = GADE = 1)."""
    deny = DENY[perm]
    s1, g = _two_stage_ats(
        soc,
        pasid=pasid,
        s1_flags=deny if denied_by in ("s1", "both") else {},
        g_flags=deny if denied_by in ("g", "both") else {},
    )
    resp = _ats(soc, pasid, **ASK[perm])
    denied = denied_by is not None
    executes = perm == "x" and pasid
    want_r = not (denied and perm == "r")
    want_w = want_r and not (denied and perm == "w")
    want_x = want_r and executes and not (denied and perm == "x")
    assert resp.status == STATUS_SUCCESS
    assert (resp.r, resp.w, resp.exe) == (want_r, want_w, want_x)
    assert (resp.u, resp.priv, resp.g) == (False, False, pasid)
    if want_r:
        assert (resp.ppn, resp.s, resp.size_lg2) == (SPA >> 12, False, 12)
    assert soc.faults() == []
    for pte in (s1, g):
        assert soc.rd64(pte) >> 6 & 3 == 3  # A set by the walk, D kept


@pytest.mark.parametrize("pasid", [False, True])
def test_first_stage_denial_still_walks_the_g_stage_to_its_fault(soc, pasid):
    """riscv-iommu: "PCIe ATS translation request handling": a first-stage leaf granting none
    of the requested permissions does not end the translation: a G-stage guest-page fault
    (cause 21) then means the translation "could not be completed" -- Success with R = W = 0
    and G = 0 (Global only for a completed translation), nothing logged."""
    _two_stage_ats(soc, pasid=pasid, s1_flags=DENY["r"], g_flags={"v": 0})
    resp = _ats(soc, pasid)
    assert resp.status == STATUS_SUCCESS and resp.cause == 21
    assert (resp.r, resp.w, resp.exe, resp.g) == (False, False, False, False)
    assert soc.faults() == []


def test_first_stage_denial_then_g_stage_access_fault_is_completer_abort(soc):
    """riscv-iommu: "PCIe ATS translation request handling": the G-stage walk after a
    first stage that grants nothing can still end in an access fault (cause 5): Completer
    Abort, recorded with TTYP 8."""
    _s1, g = _two_stage_ats(soc, pasid=True, s1_flags=DENY["r"], g_flags={})
    soc.mem.inject(g, 8, ACCESS)
    resp = _ats(soc, True)
    assert resp.status == STATUS_CA
    (rec,) = soc.faults()
    assert (rec["cause"], rec["ttyp"], rec["iotval"]) == (5, 8, IOVA + 0x24)


@pytest.mark.parametrize("nw", [True, False])
def test_write_denied_by_first_stage_leaves_g_stage_clean(soc, nw):
    """riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates" (the privileged
    spec's rules) with "PCIe ATS translation request handling": when the first stage denies
    W, the completion grants no W, so the writable clean G-stage leaf is not marked dirty,
    whatever NW says; R is granted and A set in both stages."""
    s1, g = _two_stage_ats(soc, pasid=False, s1_flags={"w": 0}, g_flags={"d": 0})
    resp = _ats(soc, False, no_write=nw)
    assert resp.ok and resp.r and not resp.w
    assert soc.rd64(s1) >> 6 & 3 == 3
    assert soc.rd64(g) >> 6 & 3 == 1  # A only


def test_write_request_dirties_both_stages(soc):
    """riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates": an ATS request
    with NW = 0 granted W by both (clean, writable) stages under SADE = GADE = 1 sets A and D
    in both leaves and is granted W."""
    s1, g = _two_stage_ats(soc, pasid=False, s1_flags={"d": 0}, g_flags={"d": 0})
    resp = _ats(soc, False, no_write=False)
    assert resp.ok and resp.r and resp.w
    assert soc.rd64(s1) >> 6 & 3 == 3
    assert soc.rd64(g) >> 6 & 3 == 3
