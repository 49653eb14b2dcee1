"""riscv-iommu: "Process to translate an IOVA" step 17 -- the first-stage (single-stage) walk of
the privileged spec ("Sv39", "Sv48", Svnapot, Svpbmt) -- and "IOMMU updating of PTE accessed
(A) and dirty (D) updates"."""

from __future__ import annotations

import pytest

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.regs import cap
from iommusim.bits.riscv.structures import PC_FSC, PC_TA
from iommusim.hw.riscv.params import PRESETS
from iommusim.hw.riscv.transaction import STATUS_UR

DID = 0x10
KIB4, MIB2, GIB1 = 1 << 12, 1 << 21, 1 << 30

ACCESSES = {  # name -> (Request kwargs, page-fault cause, TTYP)
    "exec": ({"exec_req": True}, 12, 1),
    "read": ({}, 13, 2),
    "write": ({"is_write": True}, 15, 3),
}


@pytest.mark.parametrize("mode", ["sv39", "sv48"])
def test_4k_page(soc, mode):
    """Privileged spec "Virtual Address Translation Process" for Sv39/Sv48 via DC.fsc (iosatp)
    (riscv-iommu: "Process to translate an IOVA" step 10)."""
    root = soc.s1_device(DID, mode)
    iova = 0x7F_1234_5000 if mode == "sv48" else 0x12_3456_7000
    soc.map(root, iova, soc.DATA_BASE + 0x3000, mode)
    resp = soc.translate(DID, iova + 0xABC)
    assert resp.ok and resp.pa == soc.DATA_BASE + 0x3ABC and resp.size_lg2 == 12
    # The next page is not mapped.
    assert soc.translate(DID, iova + KIB4).cause == 13


@pytest.mark.parametrize(
    ("mode", "level", "size"),
    [
        ("sv39", 1, MIB2),
        ("sv39", 2, GIB1),
        ("sv48", 1, MIB2),
        ("sv48", 2, GIB1),
        ("sv48", 3, 1 << 39),
    ],
)
def test_superpages(soc, mode, level, size):
    """Privileged spec "Virtual Address Translation Process" step 6: a leaf at level i maps
    2^(12 + 9i) bytes; the offset within the superpage comes from the IOVA."""
    root = soc.s1_device(DID, mode)
    iova = 3 * size
    pa = 0x40 * (1 << 39)  # aligned for every size here
    soc.map(root, iova, pa, mode, level=level)
    off = size - 8
    resp = soc.translate(DID, iova + off, is_write=True)
    assert resp.ok and resp.pa == pa + off
    # The Bare G-stage contributes its implementation-defined page size (1 GiB in the preset).
    bare = soc.params.bare_page_size["sv57x4"].bit_length() - 1
    assert resp.size_lg2 == min(size.bit_length() - 1, bare)


@pytest.mark.parametrize("access", ACCESSES)
@pytest.mark.parametrize("level", [1, 2])
def test_misaligned_superpage_is_page_fault(soc, access, level):
    """Privileged spec step 6: a superpage leaf with nonzero low PPN bits is misaligned ->
    page fault of the access type (12/13/15)."""
    kw, cause, ttyp = ACCESSES[access]
    root = soc.s1_device(DID)
    size = 1 << (12 + 9 * level)
    soc.map(root, size, size + KIB4, level=level, x=1)  # PPN[0] = 1
    resp = soc.translate(DID, size + 0x10, **kw)
    assert resp.status == STATUS_UR and resp.cause == cause
    (rec,) = soc.faults()
    assert (rec["cause"], rec["ttyp"], rec["iotval"]) == (cause, ttyp, size + 0x10)


def test_napot_64k(soc):
    """Svnapot: N = 1 with PPN[3:0] = 1000 maps a 64 KiB NAPOT range; the IOVA supplies
    bits 15:12 of the address."""
    root = soc.s1_device(DID)
    base = soc.DATA_BASE + 0x10000
    iova = 0x5_0000
    for k in range(16):
        pte = PTE.encode(v=1, r=1, w=1, u=1, a=1, d=1, n=1, ppn=(base >> 12) | 8)
        soc.map(root, iova + k * KIB4, 0, pte=pte)
    resp = soc.translate(DID, iova + 0x7123)
    assert resp.ok and resp.pa == base + 0x7123


@pytest.mark.parametrize("low", [0, 1, 4, 0xC])
def test_napot_reserved_encodings_fault(soc, low):
    """Svnapot: N = 1 with PPN[3:0] other than 1000 is reserved -> page fault."""
    root = soc.s1_device(DID)
    pte = PTE.encode(v=1, r=1, u=1, a=1, n=1, ppn=(soc.DATA_BASE >> 12) | low)
    soc.map(root, 0x5_0000, 0, pte=pte)
    assert soc.translate(DID, 0x5_0000).cause == 13


@pytest.mark.parametrize("pbmt", [0, 1, 2])
def test_pbmt_is_reported(soc, pbmt):
    """Svpbmt: the leaf's PBMT reaches the response; riscv-iommu step 17."""
    root = soc.s1_device(DID)
    soc.map(root, 0x9000, soc.DATA_BASE, pbmt=pbmt)
    resp = soc.translate(DID, 0x9000)
    assert resp.ok and resp.pbmt == pbmt


def test_pbmt_reserved_encoding_and_missing_svpbmt(make_soc):
    """Svpbmt: PBMT = 3 is reserved -> page fault; without capabilities.Svpbmt the PBMT bits
    are reserved -> page fault."""
    soc = make_soc()
    root = soc.s1_device(DID)
    soc.map(root, 0x9000, soc.DATA_BASE, pbmt=3)
    assert soc.translate(DID, 0x9000).cause == 13

    full = PRESETS["full"]
    nopbmt = make_soc(full.with_(capabilities=full.capabilities & ~(1 << cap.SVPBMT)))
    root = nopbmt.s1_device(DID)
    nopbmt.map(root, 0x9000, nopbmt.DATA_BASE, pbmt=1)
    assert nopbmt.translate(DID, 0x9000).cause == 13


@pytest.mark.parametrize("bit", [54, 58])
def test_reserved_leaf_bits_fault(soc, bit):
    """Privileged spec: PTE bits 60:54 reserved for future standard use -> page fault."""
    root = soc.s1_device(DID)
    a = soc.map(root, 0x9000, soc.DATA_BASE)
    soc.wr64(a, soc.rd64(a) | 1 << bit)
    assert soc.translate(DID, 0x9000, is_write=True).cause == 15


@pytest.mark.parametrize("field", ["a", "d", "u"])
def test_nonleaf_with_leaf_only_bits_faults(soc, field):
    """Privileged spec: for a non-leaf PTE the D, A and U bits are reserved -> page fault."""
    root = soc.s1_device(DID)
    soc.map(root, 0x9000, soc.DATA_BASE)
    a = root  # level-2 entry for IOVA 0x9000 is index 0
    soc.wr64(a, soc.rd64(a) | PTE.mask(field))
    assert soc.translate(DID, 0x9000).cause == 13


def test_write_only_encoding_is_reserved(soc):
    """Privileged spec: R = 0, W = 1 is reserved (riscv-iommu: xwr = 010 stays reserved for
    IO transactions) -> page fault even for a write."""
    root = soc.s1_device(DID)
    soc.map(root, 0x9000, soc.DATA_BASE, r=0, w=1)
    assert soc.translate(DID, 0x9000, is_write=True).cause == 15


@pytest.mark.parametrize(
    ("flags", "access", "ok"),
    [
        ({"r": 1, "w": 0}, "write", False),
        ({"r": 1, "x": 0}, "exec", False),
        ({"r": 0, "w": 0, "x": 1}, "read", False),
        ({"r": 0, "w": 0, "x": 1}, "exec", True),
        ({"u": 0}, "read", False),  # no process_id: a user access
        ({"u": 1, "r": 1, "w": 1}, "write", True),
    ],
)
def test_permissions_and_user_bit(soc, flags, access, ok):
    """Privileged spec leaf permission checks; requests without a process_id are user-mode
    (riscv-iommu: "Process to translate an IOVA")."""
    kw, cause, _ = ACCESSES[access]
    root = soc.s1_device(DID)
    soc.map(root, 0x9000, soc.DATA_BASE, **flags)
    resp = soc.translate(DID, 0x9000, **kw)
    assert resp.ok is ok
    if not ok:
        assert resp.cause == cause


@pytest.mark.parametrize(
    ("mode", "iova", "canonical"),
    [
        ("sv39", 1 << 39, False),
        ("sv39", (1 << 64) - (1 << 38), True),
        ("sv39", (1 << 63) | 0x1000, False),
        ("sv48", 1 << 48, False),
        ("sv48", (1 << 64) - (1 << 47), True),
    ],
)
def test_canonical_iova(soc, mode, iova, canonical):
    """Privileged spec: bits 63:VALEN-1 of the IOVA must all equal bit VALEN-1, else a page
    fault; iotval reports the full IOVA."""
    root = soc.s1_device(DID, mode)
    soc.map(root, iova, soc.DATA_BASE, mode)
    resp = soc.translate(DID, iova)
    if canonical:
        assert resp.ok and resp.pa == soc.DATA_BASE
    else:
        assert resp.cause == 13
        assert soc.faults()[0]["iotval"] == iova


@pytest.mark.parametrize(("access", "a", "d"), [("read", 1, 0), ("write", 1, 1)])
def test_sade_updates_pte_in_memory(soc, access, a, d):
    """riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates" and tc.SADE:
    with SADE = 1 the IOMMU sets A (and D for a write) in the PTE in memory."""
    kw, _, _ = ACCESSES[access]
    root = soc.s1_device(DID, sade=1)
    pte_pa = soc.map(root, 0x9000, soc.DATA_BASE, a=0, d=0)
    resp = soc.translate(DID, 0x9000, **kw)
    assert resp.ok and resp.pa == soc.DATA_BASE
    pte = PTE.decode(soc.rd64(pte_pa))
    assert (pte["a"], pte["d"]) == (a, d)
    assert pte["ppn"] == soc.DATA_BASE >> 12  # nothing else changed


@pytest.mark.parametrize(("access", "a", "d"), [("read", 0, 1), ("write", 0, 1), ("write", 1, 0)])
def test_no_sade_clear_ad_faults(soc, access, a, d):
    """riscv-iommu: "Translation control (tc)": with SADE = 0 a clear A, or a clear D on a
    write, is a page fault of the access type; memory is not modified."""
    kw, cause, _ = ACCESSES[access]
    root = soc.s1_device(DID)
    pte_pa = soc.map(root, 0x9000, soc.DATA_BASE, a=a, d=d)
    before = soc.rd64(pte_pa)
    assert soc.translate(DID, 0x9000, **kw).cause == cause
    assert soc.rd64(pte_pa) == before


def test_write_after_read_of_clean_page_sets_d(soc):
    """riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates": a write must
    find D = 1 in memory; a translation cached by an earlier read of a clean page must not let
    the write skip the D update (SADE = 1)."""
    root = soc.s1_device(DID, sade=1)
    pte_pa = soc.map(root, 0x9000, soc.DATA_BASE, a=1, d=0)
    assert soc.translate(DID, 0x9000).ok
    assert PTE.decode(soc.rd64(pte_pa))["d"] == 0
    assert soc.translate(DID, 0x9000, is_write=True).ok
    assert PTE.decode(soc.rd64(pte_pa))["d"] == 1


def test_write_after_read_of_clean_page_faults_without_sade(soc):
    """riscv-iommu: "Translation control (tc)": SADE = 0 and a store to a page with D = 0 is a
    page fault -- also after a read of that page was translated (and possibly cached)."""
    root = soc.s1_device(DID)
    soc.map(root, 0x9000, soc.DATA_BASE, a=1, d=0)
    assert soc.translate(DID, 0x9000).ok
    assert soc.translate(DID, 0x9000, is_write=True).cause == 15


@pytest.mark.parametrize("access", ACCESSES)
def test_fault_record_fields(soc, access):
    """riscv-iommu: "Fault/Event-Queue (FQ)": CAUSE, TTYP (1/2/3 untranslated exec/read/
    write), DID, PV, PID, PRIV and iotval = the full IOVA (page offset included)."""
    kw, cause, ttyp = ACCESSES[access]
    pdt = soc.new_pdt()
    pt = soc.new_pt()
    soc.write_dc(0xBEEF, tc=soc.tc(pdtv=1), fsc=(soc.PDTP_MODE["pd20"] << 60) | pdt >> 12)
    soc.write_pc(pdt, 0x12345, ta=PC_TA.encode(v=1, ens=1), fsc=PC_FSC.encode(mode=8, ppn=pt >> 12))
    iova = 0x3F_FFFF_F123  # unmapped, canonical, offset bits nonzero
    resp = soc.translate(0xBEEF, iova, pid_valid=True, process_id=0x12345, priv_req=True, **kw)
    assert resp.status == STATUS_UR
    (rec,) = soc.faults()
    assert rec == {
        "cause": cause,
        "pid": 0x12345,
        "pv": 1,
        "priv": 1,
        "ttyp": ttyp,
        "did": 0xBEEF,
        "custom": 0,
        "iotval": iova,
        "iotval2": 0,
    }


def test_fault_record_without_process_id(soc):
    """riscv-iommu: "Fault/Event-Queue (FQ)": PV = 0 -> PID and PRIV are 0."""
    soc.s1_device(DID)
    soc.translate(DID, 0x5000, priv_req=True)
    (rec,) = soc.faults()
    assert (rec["pv"], rec["pid"], rec["priv"], rec["did"]) == (0, 0, 0, DID)
