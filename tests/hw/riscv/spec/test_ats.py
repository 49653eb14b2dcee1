"""riscv-iommu: "PCIe ATS translation request handling" and translated requests ("Process to
translate an IOVA" steps 7-8)."""

from __future__ import annotations

import pytest

from iommusim.bits.riscv import PC_TA
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
