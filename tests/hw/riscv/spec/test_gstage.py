"""riscv-iommu: "Process to translate an IOVA" steps 17-19 with a non-Bare iohgatp: the G-stage
(privileged spec "Two-Stage Address Translation", Sv39x4) and guest-page-fault reporting
("Fault/Event-Queue (FQ)": iotval2)."""

from __future__ import annotations

import pytest

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.structures import DC_FSC, DC_IOHGATP
from iommusim.hw.riscv.transaction import STATUS_UR
from iommusim.mem import ACCESS

DID = 0x77
GPA_DATA = 0x1_0000_0000  # guest-physical page the tests map (outside the identity gigabyte)


def _g_device(soc, *, fsc=0, **tc_fields):
    """A DC with an Sv39x4 iohgatp (identity-mapped allocator gigabyte); returns its root."""
    groot = soc.new_pt("sv39x4")
    soc.identity_gstage(groot)
    soc.write_dc(
        DID,
        tc=soc.tc(**tc_fields),
        fsc=fsc,
        iohgatp=DC_IOHGATP.encode(mode=8, gscid=5, ppn=groot >> 12),
    )
    return groot


@pytest.mark.parametrize("gpa", [GPA_DATA + 0x234, (1 << 40) | 0x5678])
def test_sv39x4_with_bare_first_stage(soc, gpa):
    """Privileged spec "Two-Stage Address Translation": Sv39x4 translates a 41-bit GPA; the
    root table is 16 KiB (GPA bits 40:30 index it). The first stage is Bare, so GPA = IOVA."""
    groot = _g_device(soc)
    soc.map(groot, gpa & ~0xFFF, soc.DATA_BASE, "sv39x4")
    resp = soc.translate(DID, gpa)
    assert resp.ok and resp.pa == soc.DATA_BASE + (gpa & 0xFFF)


@pytest.mark.parametrize(("write", "cause"), [(False, 21), (True, 23)])
def test_gpa_too_wide_is_guest_page_fault(soc, write, cause):
    """Privileged spec: Sv39x4 GPA bits 63:41 must be 0, else a guest-page fault; riscv-iommu
    "Fault/Event-Queue (FQ)": iotval2[63:2] = GPA[63:2], bit 0 = 0 (explicit access)."""
    _g_device(soc)
    gpa = (1 << 41) | 0x1237
    resp = soc.translate(DID, gpa, is_write=write)
    assert resp.status == STATUS_UR and resp.cause == cause
    (rec,) = soc.faults()
    assert (rec["cause"], rec["iotval"], rec["iotval2"]) == (cause, gpa, gpa & ~3)


@pytest.mark.parametrize(("write", "cause"), [(False, 21), (True, 23)])
def test_gpte_without_u_is_guest_page_fault(soc, write, cause):
    """riscv-iommu: "Process to translate an IOVA": a G-stage PTE's U bit is checked as for a
    user access -- U = 0 is a guest-page fault."""
    groot = _g_device(soc)
    soc.map(groot, GPA_DATA, soc.DATA_BASE, "sv39x4", u=0)
    resp = soc.translate(DID, GPA_DATA + 0x46, is_write=write)
    assert resp.cause == cause
    (rec,) = soc.faults()
    assert rec["iotval2"] == GPA_DATA + 0x44


def test_gpte_read_only_denies_write(soc):
    """Privileged spec: a store to a G-stage page with W = 0 is a Write guest-page fault."""
    groot = _g_device(soc)
    soc.map(groot, GPA_DATA, soc.DATA_BASE, "sv39x4", w=0)
    assert soc.translate(DID, GPA_DATA).ok
    assert soc.translate(DID, GPA_DATA, is_write=True).cause == 23


def _two_stage(soc, *, s1_root_gpa=None, **tc_fields):
    """Sv39 first stage (tables in the identity-mapped gigabyte unless ``s1_root_gpa``) over
    Sv39x4; IOVA 0x9000 -> GPA_DATA -> DATA_BASE. Returns (groot, s1root, pte_gpa)."""
    s1root = soc.new_pt("sv39")
    root_gpa = s1root if s1_root_gpa is None else s1_root_gpa
    groot = _g_device(soc, fsc=DC_FSC.encode(mode=8, ppn=root_gpa >> 12), **tc_fields)
    pte_gpa = soc.map(s1root, 0x9000, GPA_DATA)
    soc.map(groot, GPA_DATA, soc.DATA_BASE, "sv39x4")
    return groot, s1root, pte_gpa


def test_two_stage_translation(soc):
    """riscv-iommu: "Process to translate an IOVA" steps 17 and 19: IOVA -> GPA -> SPA; the
    first-stage tables are themselves at GPAs translated by the G-stage."""
    _two_stage(soc)
    resp = soc.translate(DID, 0x9ABC, is_write=True)
    assert resp.ok and resp.pa == soc.DATA_BASE + 0xABC


@pytest.mark.parametrize(("write", "cause"), [(False, 21), (True, 23)])
def test_implicit_access_guest_page_fault_sets_iotval2_bit0(soc, write, cause):
    """riscv-iommu: "Fault/Event-Queue (FQ)": a guest-page fault on the implicit read of a
    first-stage PTE reports the original access type, iotval2 = PTE GPA | 1 (bit 1 = 0)."""
    root_gpa = 0x2_0000_0000  # not mapped by the G-stage
    _two_stage(soc, s1_root_gpa=root_gpa)
    iova = 0x40_0000_0000 - 0x1000  # root index 255
    resp = soc.translate(DID, iova, is_write=write)
    assert resp.status == STATUS_UR and resp.cause == cause
    (rec,) = soc.faults()
    assert rec["iotval"] == iova
    assert rec["iotval2"] == (root_gpa + 255 * 8) | 1


def test_implicit_ad_write_guest_page_fault_sets_iotval2_bits_1_0(soc):
    """riscv-iommu: "Fault/Event-Queue (FQ)": the A/D update of a first-stage PTE is an
    implicit write; a G-stage page without W gives iotval2 bits 1:0 = 11."""
    s1root = soc.new_pt("sv39")
    groot = soc.new_pt("sv39x4")
    pt_gpa = 0x3_0000_0000  # the first-stage tables live here, G-mapped read-only
    soc.write_dc(
        DID,
        tc=soc.tc(sade=1),
        fsc=DC_FSC.encode(mode=8, ppn=pt_gpa >> 12),
        iohgatp=DC_IOHGATP.encode(mode=8, ppn=groot >> 12),
    )
    soc.map(groot, pt_gpa, s1root, "sv39x4", w=0)
    soc.wr64(s1root, PTE.encode(v=1, r=1, w=1, u=1, a=0, ppn=GPA_DATA >> 30 << 18))  # 1 GiB
    soc.map(groot, GPA_DATA, soc.DATA_BASE, "sv39x4")
    resp = soc.translate(DID, 0x88)
    assert resp.cause == 21
    (rec,) = soc.faults()
    assert rec["iotval2"] == pt_gpa | 3


def test_implicit_access_fault_on_pte_page(soc):
    """riscv-iommu: "Process to translate an IOVA" step 17: an access fault reading a
    first-stage PTE (after its G-stage translation) is an access fault of the access type."""
    _, s1root, _ = _two_stage(soc)
    soc.mem.inject(s1root, 8, ACCESS)
    resp = soc.translate(DID, 0x9000, is_write=True)
    assert resp.status == STATUS_UR and resp.cause == 7
    (rec,) = soc.faults()
    assert rec["cause"] == 7 and rec["iotval2"] == 0


def test_gxl_changed_under_a_cached_dc_is_a_fault_not_an_exception(soc):
    """Fuzzer finding (KeyError in g_stage): riscv-iommu: "Features-control register (fctl)":
    enabling a feature "when the IOMMU is not OFF" is UNSPECIFIED; the model answers a request
    through a cached DC whose iohgatp.MODE (Sv48x4) the new fctl.GXL = 1 does not have with
    "DDT entry misconfigured" (259, recorded), as a fresh read of that DC would give
    ("Device-context configuration checks")."""
    groot = soc.new_pt("sv48x4")
    soc.write_dc(DID, tc=soc.tc(), iohgatp=DC_IOHGATP.encode(mode=9, ppn=groot >> 12))
    soc.map(groot, GPA_DATA, soc.DATA_BASE, "sv48x4")
    assert soc.translate(DID, GPA_DATA).ok  # the DC is now in the DDTC
    soc.set_reg(8, 1 << 2)  # fctl.GXL = 1 (writable in this preset)
    assert soc.reg(8) & 4
    resp = soc.translate(DID, GPA_DATA + 0x1008)  # another page: an IOTLB miss
    assert (resp.status, resp.cause) == (STATUS_UR, 259)
    assert soc.causes() == [259]
