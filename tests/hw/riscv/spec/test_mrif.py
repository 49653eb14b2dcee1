"""MRIF mode: recording a device MSI in a memory-resident interrupt file and the notice MSI.

riscv-iommu: "Process to translate addresses of MSIs" (MRIF mode: "the Advanced Interrupt
Architecture Specification defines the operation to store the incoming MSIs into the destination
MRIF and to generate the notice MSI"); AIA "IOMMU Support for MSIs to Virtual Machines":
"Format of a memory-resident interrupt file", "Recording of incoming MSIs to memory-resident
interrupt files", "MSI PTE, MRIF mode"; riscv-iommu "Fault record CAUSE field encodings"
(264 MRIF access fault, 271 MSI MRIF data corruption).
"""

from __future__ import annotations

import pytest

from iommusim.bits.riscv.regs import cap
from iommusim.bits.riscv.structures import DC_IOHGATP, DC_MSIPTP, MSIPTE_MRIF
from iommusim.errors import ModelError
from iommusim.hw.riscv.mrif import identity_of, mrif_slot
from iommusim.hw.riscv.params import PRESETS
from iommusim.hw.riscv.transaction import Request
from iommusim.mem import TracingMemory

DID = 5
#: Guest-physical page of virtual interrupt file 0; mask 0x7 gives files 0..7.
MSI_GPA = 0x2800_0000
FILE = 3
NID = 0x5A3  # N10 = 1, N[9:0] = 0x1A3
SENTINEL = 0xFFFF_FFFF


def mrif_soc(make_soc, params=None, *, dtf=0, nid=NID):
    """A device whose MSI window maps interrupt file FILE to an MRIF-mode PTE."""
    soc = make_soc(params)
    g = soc.new_pt("sv39x4")
    soc.identity_gstage(g)
    msipt = soc.alloc()
    soc.mrif = soc.alloc()
    soc.notice = soc.alloc()
    soc.write_dc(
        DID,
        tc=soc.tc(dtf=dtf),
        iohgatp=DC_IOHGATP.encode(mode=8, ppn=g >> 12, gscid=9),
        msiptp=DC_MSIPTP.encode(mode=1, ppn=msipt >> 12),
        msi_mask=0x7,
        msi_pattern=MSI_GPA >> 12,
    )
    pte = MSIPTE_MRIF.encode(
        v=1, m=1, mrif_addr=soc.mrif >> 9, nppn=soc.notice >> 12, n90=nid & 0x3FF, n10=nid >> 10
    )
    soc.wr64(msipt + 16 * FILE, pte & (1 << 64) - 1)
    soc.wr64(msipt + 16 * FILE + 8, pte >> 64)
    soc.ram.write32(soc.notice, SENTINEL)
    return soc


def msi(soc, data, offset=0, size=4):
    req = Request(device_id=DID, iova=MSI_GPA + FILE * 0x1000 + offset, is_write=True)
    return soc.iommu.device_write(req, data, size)


def mrif_words(soc):
    return [soc.rd64(soc.mrif + 8 * k) for k in range(64)]


def test_msi_sets_pending_bit_and_notice_arrives(make_soc):
    """AIA "MSI PTE, MRIF mode": a 32-bit write of D sets the pending bit of identity D
    (bit D mod 64 of the doubleword at 16 * (D div 64)), keeping the bits already set, and then
    NID is written to NPPN << 12 -- the end-to-end path of issue 3."""
    soc = mrif_soc(make_soc)
    soc.wr64(soc.mrif + 16, 1 << 1)  # identity 65 already pending
    soc.wr64(soc.mrif + 24, 1 << 6)  # identity 70 enabled
    resp, out = msi(soc, 70)
    assert resp.ok and resp.is_mrif and resp.mrif_addr == soc.mrif
    assert out is not None and out.status == "recorded" and out.notice_sent
    assert (out.identity, out.pending_pa, out.enable_pa, out.bit) == (
        70,
        soc.mrif + 16,
        soc.mrif + 24,
        6,
    )
    words = mrif_words(soc)
    assert words[2] == 1 << 6 | 1 << 1
    assert words[3] == 1 << 6  # enable bits untouched
    assert not any(w for k, w in enumerate(words) if k not in (2, 3))
    # The notice MSI: NID zero-extended to 32 bits, little-endian, at page offset 0.
    assert soc.ram.read(soc.notice, 4) == bytes([0xA3, 0x05, 0, 0])
    assert soc.causes() == []


@pytest.mark.parametrize("identity", [0, 1, 63, 64, 127, 1000, 2047])
def test_identity_to_mrif_bit(make_soc, identity):
    """AIA "Format of a memory-resident interrupt file": identities 0..2047 (0 is treated as
    valid: "setting bit 0 of the target MRIF's first doubleword and sending a notice MSI")."""
    soc = mrif_soc(make_soc)
    _, out = msi(soc, identity)
    assert out.status == "recorded" and out.notice_sent
    words = mrif_words(soc)
    assert words[2 * (identity // 64)] == 1 << (identity % 64)
    assert sum(bin(w).count("1") for w in words) == 1
    assert mrif_slot(soc.mrif, identity) == (out.pending_pa, out.enable_pa, out.bit)


def test_notice_sent_even_when_not_enabled_by_default(make_soc):
    """AIA "Recording of incoming MSIs": "an IOMMU is required always to send a notice MSI after
    storing an MSI to an MRIF, even when the corresponding enable bit ... is zero"."""
    soc = mrif_soc(make_soc)
    _, out = msi(soc, 5)
    assert out.notice_sent and out.enabled is None
    assert soc.ram.read32(soc.notice) == NID


def test_notice_only_when_enabled_option(make_soc):
    """The option the AIA leaves open (mrif_notice = "enabled"): the IOMMU examines the enable
    bit and sends the notice only when it is 1; the pending bit is recorded either way."""
    soc = mrif_soc(make_soc, PRESETS["full"].with_(mrif_notice="enabled"))
    _, out = msi(soc, 5)
    assert out.status == "recorded" and out.enabled is False and not out.notice_sent
    assert soc.rd64(soc.mrif) == 1 << 5
    assert soc.ram.read32(soc.notice) == SENTINEL  # no notice MSI arrived
    soc.wr64(soc.mrif + 8, 1 << 5)  # software enables identity 5
    _, out = msi(soc, 5)
    assert out.enabled is True and out.notice_sent
    assert soc.ram.read32(soc.notice) == NID


@pytest.mark.parametrize(
    ("offset", "data", "why"),
    [
        (8, 5, "address bits 11:3"),
        (0xFFC, 5, "address bits 11:3"),
        (0, 2048, "bits 31:11"),
        (0, 0x8000_0001, "bits 31:11"),
        (4, 5 << 24, "big-endian MSIs not supported"),
    ],
)
def test_discarded_writes(make_soc, offset, data, why):
    """AIA "MSI PTE, MRIF mode": "If either A[11:3] or D[31:11] is not zero, or if bit 2 of A is
    one and big-endian MSIs are not supported, then the incoming write is accepted but
    discarded" -- no MRIF update, no notice, no fault."""
    soc = mrif_soc(make_soc)
    resp, out = msi(soc, data, offset)
    assert resp.ok
    assert out.status == "discarded" and why in out.reason
    assert not any(mrif_words(soc))
    assert soc.ram.read32(soc.notice) == SENTINEL
    assert soc.causes() == []


def test_big_endian_msi_when_supported(make_soc):
    """AIA "MSI PTE, MRIF mode": with seteipnum_be in the system, bit 2 of the address selects
    big-endian data."""
    soc = mrif_soc(make_soc, PRESETS["full"].with_(mrif_be_msi=True))
    _, out = msi(soc, int.from_bytes((300).to_bytes(4, "big"), "little"), offset=4)
    assert out.status == "recorded" and out.big_endian and out.identity == 300
    assert soc.rd64(soc.mrif + 16 * 4) == 1 << (300 % 64)
    assert identity_of(4, 0x2C01_0000, True) == (300, True, "")


@pytest.mark.parametrize(("offset", "size"), [(0, 2), (0, 8), (2, 4), (1, 1)])
def test_not_an_aligned_32_bit_access(make_soc, offset, size):
    """AIA "MSI PTE, MRIF mode": "If a memory access ... is not for 32 bits of data, or if the
    access address is not aligned to a 4-byte boundary ..., the access should be aborted as
    unsupported"."""
    soc = mrif_soc(make_soc)
    _, out = msi(soc, 5, offset, size)
    assert out.status == "unsupported"
    assert not any(mrif_words(soc))
    assert soc.ram.read32(soc.notice) == SENTINEL


@pytest.mark.parametrize(("amo", "kinds"), [(True, ["r", "cas", "w"]), (False, ["r", "w", "w"])])
def test_atomic_update_with_amo_mrif(make_soc, amo, kinds):
    """AIA: the pending bit is set "using an AMOOR operation, if atomic updates are supported
    [capabilities.AMO_MRIF]; or a non-atomic read-modify-write sequence"; then the notice write."""
    caps = PRESETS["full"].capabilities
    caps = caps | 1 << cap.AMO_MRIF if amo else caps & ~(1 << cap.AMO_MRIF)
    soc = mrif_soc(make_soc, PRESETS["full"].with_(capabilities=caps))
    log = []
    soc.iommu.mem = TracingMemory(soc.iommu.mem, log)
    msi(soc, 9)
    assert [a.kind for a in log] == kinds
    assert [a.pa for a in log] == [soc.mrif, soc.mrif, soc.notice]
    assert soc.rd64(soc.mrif) == 1 << 9


@pytest.mark.parametrize(
    ("where", "kind", "cause"),
    [("mrif", "access", 264), ("mrif", "corruption", 271), ("notice", "access", 264)],
)
def test_memory_faults(make_soc, where, kind, cause):
    """riscv-iommu: "Fault record CAUSE field encodings": 264 "MRIF access fault", 271 "MSI MRIF
    data corruption" (the failed notice write is reported as 264 too), recorded with the
    write's TTYP (3), device_id and IOVA; a failed MRIF update sends no notice."""
    soc = mrif_soc(make_soc)
    soc.mem.inject(soc.mrif if where == "mrif" else soc.notice, 512, kind)
    resp, out = msi(soc, 7)
    assert resp.ok and out.status == "fault" and out.cause == cause and not out.notice_sent
    (rec,) = soc.faults()
    assert (rec["cause"], rec["ttyp"], rec["did"], rec["iotval"]) == (
        cause,
        3,
        DID,
        MSI_GPA + FILE * 0x1000,
    )
    if where == "mrif":
        assert soc.ram.read32(soc.notice) == SENTINEL


def test_dtf_suppresses_mrif_faults(make_soc):
    """riscv-iommu: "Fault record CAUSE field encodings": 264 is not reported when DC.tc.DTF
    is 1."""
    soc = mrif_soc(make_soc, dtf=1)
    soc.mem.inject(soc.mrif, 8, "access")
    _, out = msi(soc, 7)
    assert out.status == "fault" and out.cause == 264
    assert soc.causes() == []


def test_nid_eleven_bits(make_soc):
    """riscv-iommu: "Process to translate addresses of MSIs": NID = (N10 << 10) | N[9:0],
    zero-extended to 32 bits."""
    soc = mrif_soc(make_soc, nid=0x7FF)
    _, out = msi(soc, 1)
    assert out.notice_data == 0x7FF
    assert soc.ram.read32(soc.notice) == 0x7FF


def test_ordinary_writes_are_left_to_the_bus(make_soc):
    """device_write of a write outside the MSI window: the response carries the PA and the
    IOMMU writes nothing; a read request is API misuse."""
    soc = mrif_soc(make_soc)
    resp, out = soc.iommu.device_write(Request(DID, 0x8000_1000, is_write=True), 5)
    assert resp.ok and not resp.is_msi and resp.pa == 0x8000_1000 and out is None
    with pytest.raises(ModelError, match="write request"):
        soc.iommu.device_write(Request(DID, MSI_GPA + FILE * 0x1000), 5)


def test_notice_policy_parameter():
    """RiscvIommuParams.mrif_notice names one of the two behaviours the AIA allows."""
    with pytest.raises(ModelError, match="mrif_notice must be 'always' or 'enabled', not 'x'"):
        PRESETS["full"].with_(mrif_notice="x")
