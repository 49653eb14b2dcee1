"""Register file: access rules and WARL choices of every register.

riscv-iommu: "Memory-mapped register interface" (all register sections) and "Reset behavior";
the WARL choices are those of the conformance format (FORMAT.md section 6.5).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iommusim.bits.riscv.regs import (
    CQCSR_CIE,
    CQCSR_CMD_ILL,
    CQCSR_CMD_TO,
    CQCSR_CQEN,
    CQCSR_CQMF,
    CQCSR_CQON,
    CQCSR_FENCE_W_IP,
    FQCSR_FIE,
    FQCSR_FQEN,
    FQCSR_FQMF,
    FQCSR_FQOF,
    FQCSR_FQON,
    IGS_BOTH,
    IGS_MSI,
    IGS_WSI,
    MODE_1LVL,
    MODE_2LVL,
    MODE_3LVL,
    MODE_BARE,
    MODE_NAMES,
    MODE_OFF,
    OFF_CQB,
    OFF_CQH,
    OFF_DDTP,
    OFF_TR_REQ_IOVA,
    PQCSR_PQEN,
    PQCSR_PQOF,
    PQCSR_PQON,
    cap,
)
from iommusim.errors import ModelError
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.hw.riscv.regs import Registers
from testsupport.vectors import VECTORS


class FakeHost:
    """Records everything the register file asks of the core."""

    def __init__(self) -> None:
        self.msis: list[tuple[int, int]] = []
        self.wired: list[int] = []
        self.debug_requests: list[tuple[int, int]] = []
        self.regs: Registers | None = None

    def send_msi(self, addr: int, data: int) -> None:
        self.msis.append((addr, data))

    def wired_interrupt(self, vector: int) -> None:
        self.wired.append(vector)

    def debug_translate(self) -> None:
        assert self.regs is not None
        self.debug_requests.append((self.regs.tr_req_iova, self.regs.tr_req_ctl))
        self.regs.tr_response = 0x1234 << 10
        self.regs.tr_req_ctl &= ~1


def caps(*bits: int, pas: int = 48, igs: int = IGS_MSI) -> int:
    value = 0x10 | pas << cap.PAS | igs << cap.IGS
    for b in bits:
        value |= 1 << b
    return value


def make(params: RiscvIommuParams | None = None, **changes: object) -> tuple[Registers, FakeHost]:
    p = params or PRESETS["full"]
    if changes:
        p = p.with_(**changes)
    host = FakeHost()
    regs = Registers(p, host)
    host.regs = regs
    return regs, host


MINIMAL = RiscvIommuParams(capabilities=caps(cap.SV39, pas=40), num_vec_bits=0)


# -- riscv-iommu: "Memory-mapped register interface" -------------------------------------------


def _state(regs: Registers) -> list[tuple[str, int]]:
    return regs.dump()


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (0, 2),  # sub-word
        (8, 1),
        (16, 0),
        (16, 3),
        (16, 16),
        (16, -8),
        (20, 8),  # 8-byte access to the upper half: misaligned
        (17, 4),  # misaligned 4-byte access inside ddtp
        (4096, 4),  # outside the page
        (4092, 8),
        (-4, 4),
        (1 << 40, 8),
    ],
)
def test_unspecified_accesses_read_zero_and_ignore_writes(offset: int, size: int) -> None:
    """riscv-iommu: "Memory-mapped register interface": accesses that are misaligned, not 4 or
    8 bytes, or outside the page are UNSPECIFIED; the model's bus-level answer (regs.py
    docstring) is a read of 0 and an ignored write -- no register changes, no exception."""
    regs, host = make()
    regs.write(OFF_DDTP, 8, 0x77 << 10 | 1)  # Bare, with a PPN: ddtp reads non-zero
    before = _state(regs)
    assert regs.read(offset, size) == 0
    regs.write(offset, size, (1 << 64) - 1)
    assert _state(regs) == before
    assert host.msis == [] and host.debug_requests == []


def test_reserved_and_custom_offsets_read_zero_and_ignore_writes() -> None:
    """riscv-iommu: "Register layout": offset 12 and 688..759 are "Designated for custom use",
    which "should be implemented as read-only zero" with no custom use defined; reserved
    offsets read 0 likewise."""
    regs, _ = make()
    before = _state(regs)
    for off in (12, 688, 752, 4088):
        regs.write(off, 4, 0xFFFF_FFFF)
        assert regs.read(off, 4) == 0
    assert _state(regs) == before


@pytest.mark.parametrize(
    ("value", "stored"),
    [(1 << 70 | 0x123, 0x123), (-1, 0xFFFF_FFFF)],
)
def test_write_values_are_taken_modulo_the_access_size(value: int, stored: int) -> None:
    """riscv-iommu: "Memory-mapped register interface": a 4-byte access carries 32 bits, so a
    wider or negative value is written as its low 32 bits (two's complement) before the
    register's own rules: tr_req_iova's low half keeps bits 31:12 (bits 11:0 read 0)."""
    regs, _ = make()
    regs.write(OFF_TR_REQ_IOVA, 4, value)
    assert regs.read(OFF_TR_REQ_IOVA, 8) == stored & ~0xFFF


def test_eight_byte_access_spanning_two_registers_is_two_halves() -> None:
    """riscv-iommu: "Memory-mapped register interface": an 8-byte access spanning two 4-byte
    registers is UNSPECIFIED; the model performs it as the two 4-byte accesses (high half
    first), so cqh (read-only) keeps its value and cqt takes the high word."""
    regs, _ = make()
    regs.write(OFF_CQB, 8, 7)  # LOG2SZ-1 = 7: 256 entries
    regs.write(OFF_CQH, 8, 0x05 << 32 | 0x09)
    assert (regs.cqh, regs.cqt) == (0, 5)
    assert regs.read(OFF_CQH, 8) == 5 << 32


def test_four_byte_halves_of_eight_byte_register() -> None:
    """riscv-iommu: "Memory-mapped register interface": 4-byte accesses to each half."""
    regs, _ = make()
    regs.write(24, 8, 0x0000_0012_3456_7C05)  # cqb
    assert regs.read(24, 4) == 0x3456_7C05
    assert regs.read(28, 4) == 0x12
    regs.write(28, 4, 0xFFFF_FFFF)
    assert regs.read(24, 8) == (0x003F_FFFF_3456_7C05 & ~0x3E0)
    regs.write(24, 4, 0x1)
    assert regs.read(24, 8) == 0x003F_FFFF_0000_0001


def test_reserved_space_reads_zero_and_ignores_writes() -> None:
    """riscv-iommu: "Register layout": reserved/custom offsets (12, 628..759, 1024..4095)."""
    regs, _ = make()
    for off in (12, 628, 688, 756, 1024, 2048, 4092):
        regs.write(off, 4, 0xFFFF_FFFF)
        assert regs.read(off, 4) == 0
    regs.write(4088, 8, 2**64 - 1)
    assert regs.read(4088, 8) == 0


def test_capabilities_read_only() -> None:
    """riscv-iommu: "IOMMU capabilities (capabilities)": RO."""
    regs, _ = make()
    before = regs.read(0, 8)
    regs.write(0, 8, 0x1234_5678_9ABC_DEF0)
    regs.write(4, 4, 0xFFFF_FFFF)
    assert regs.read(0, 8) == before == PRESETS["full"].capabilities


# -- riscv-iommu: "Reset behavior" --------------------------------------------------------------


@pytest.mark.parametrize("mode", [MODE_OFF, MODE_BARE])
def test_reset_values(mode: int) -> None:
    """riscv-iommu: "Reset behavior": queue CSRs en/ie/on/busy, ipsr, ddtp.busy, Go/Busy are
    0; ddtp.iommu_mode is Off or Bare."""
    regs, _ = make(reset_mode=mode, fctl=0x1)
    assert regs.read(16, 8) & 0x1F == mode
    for off in (72, 76, 80, 84):
        assert regs.read(off, 4) == 0
    assert regs.read(608, 8) & 1 == 0
    assert regs.fctl == 0x1


# -- riscv-iommu: "Features-control register (fctl)" -----------------------------------------


def test_fctl_writable_fields_follow_params() -> None:
    """riscv-iommu: "Features-control register (fctl)": BE/WSI/GXL WARL (FORMAT.md 6.5)."""
    regs, _ = make()  # full: END, IGS = both, GXL writable
    regs.write(8, 4, 0xFFFF_FFFF)
    assert regs.read(8, 4) == 0x7
    regs.write(8, 4, 0)
    assert regs.read(8, 4) == 0
    p = RiscvIommuParams(capabilities=caps(cap.SV39, igs=IGS_WSI), fctl=0x2)
    regs, _ = make(p)
    regs.write(8, 4, 0x5)
    assert regs.read(8, 4) == 0x2  # WSI fixed at 1 with IGS = WSI; BE, GXL not writable
    regs, _ = make(p.with_(gxl_writable=True, fctl_be_writable=True))
    regs.write(8, 4, 0x5)
    assert regs.read(8, 4) == 0x7


# -- riscv-iommu: "Device-directory-table pointer (ddtp)" --------------------------------------


def test_ddtp_ppn_truncated_to_pas_and_reserved_zero() -> None:
    """riscv-iommu: "Device-directory-table pointer (ddtp)": PPN WARL, busy 0, reserved 0."""
    regs, _ = make(MINIMAL)  # PAS 40: PPN has 28 bits
    regs.write(16, 8, 2**64 - 1 & ~0xF | MODE_BARE)
    assert regs.read(16, 8) == ((1 << 28) - 1) << 10 | MODE_BARE


@pytest.mark.parametrize("mode", [5, 9, 13, 14, 15])
def test_ddtp_illegal_mode_write_ignored(mode: int) -> None:
    """riscv-iommu: "Device-directory-table pointer (ddtp)": reserved/custom modes; the write is
    ignored entirely (FORMAT.md 6.5)."""
    regs, _ = make()
    regs.write(16, 8, 0x1234 << 10 | MODE_1LVL)
    regs.write(16, 8, 0x5678 << 10 | mode)
    assert regs.read(16, 8) == 0x1234 << 10 | MODE_1LVL


def test_ddtp_mode_above_max_mode_ignored() -> None:
    """riscv-iommu: "Device-directory-table pointer (ddtp)": "An IOMMU is allowed to support a
    subset of directory-table levels"."""
    regs, _ = make(max_mode=MODE_2LVL)
    regs.write(16, 8, 0x42 << 10 | MODE_2LVL)
    regs.write(16, 8, 0x43 << 10 | MODE_3LVL)
    assert regs.read(16, 8) == 0x42 << 10 | MODE_2LVL
    regs.write(16, 8, MODE_OFF)
    assert regs.read(16, 8) == MODE_OFF


# -- riscv-iommu: "Command-queue base (cqb)", "Fault queue base", "Page-request-queue base" ---


@pytest.mark.parametrize(("base", "index", "ro"), [(24, 36, 32), (40, 48, 52), (56, 64, 68)])
def test_queue_base_index_warl(base: int, index: int, ro: int) -> None:
    """riscv-iommu: "Command-queue base (cqb)" .. "Page-request-queue tail (pqt)": PPN limited to
    the PAS, LOG2SZ-1 5 bits, software index keeps LOG2SZ bits, IOMMU index is RO."""
    regs, _ = make(MINIMAL.with_(capabilities=caps(cap.SV39, cap.ATS, pas=40)))
    regs.write(base, 8, 2**64 - 1)
    assert regs.read(base, 8) == ((1 << 28) - 1) << 10 | 0x1F
    regs.write(index, 4, 0xFFFF_FFFF)
    assert regs.read(index, 4) == 0xFFFF_FFFF  # LOG2SZ = 32
    regs.write(base, 8, 0x1000 << 10 | 2)  # 8 entries: bits 31:3 of the index become 0
    assert regs.read(index, 4) == 0x7
    regs.write(index, 4, 0xE2AB_9637)
    assert regs.read(index, 4) == 0x7
    regs.write(ro, 4, 5)
    assert regs.read(ro, 4) == 0


def test_pq_registers_absent_without_ats() -> None:
    """riscv-iommu: "Register layout": pqb/pqh/pqt/pqcsr optional if capabilities.ATS == 0."""
    regs, _ = make(MINIMAL)
    for off, size in ((56, 8), (64, 4), (68, 4), (80, 4)):
        regs.write(off, size, 0x3)
        assert regs.read(off, size) == 0
    assert regs.pqcsr == 0


# -- riscv-iommu: "Command-queue CSR (cqcsr)", "Fault queue CSR", "Page-request-queue CSR" -----


def test_cqcsr_enable_resets_head_and_errors() -> None:
    """riscv-iommu: "Command-queue CSR (cqcsr)": cqen 0 -> 1 sets cqh and the errors to 0; on
    follows en; busy reads 0; errors RW1C."""
    regs, _ = make()
    regs.cqh = 5
    regs.cqcsr = CQCSR_CQMF | CQCSR_CMD_ILL
    regs.write(72, 4, CQCSR_CQEN)
    assert regs.read(72, 4) == CQCSR_CQEN | CQCSR_CQON
    assert regs.cqh == 0
    regs.cqh = 3
    regs.cq_error(CQCSR_CMD_ILL)
    regs.cq_error(CQCSR_CMD_TO)
    regs.write(72, 4, CQCSR_CQEN | CQCSR_CMD_ILL)  # RW1C: clears cmd_ill, keeps cmd_to
    assert regs.read(72, 4) == CQCSR_CQEN | CQCSR_CQON | CQCSR_CMD_TO
    assert regs.cqh == 3  # en stayed 1: no reset
    regs.write(72, 4, 0xFFFF_FFFF & ~CQCSR_CQEN)
    assert regs.read(72, 4) == CQCSR_CIE  # custom/reserved/RO bits not written
    regs.cq_error(CQCSR_FENCE_W_IP)
    regs.write(72, 4, CQCSR_FENCE_W_IP)
    assert regs.read(72, 4) == 0


def test_fqcsr_enable_resets_tail_and_errors() -> None:
    """riscv-iommu: "Fault queue CSR (fqcsr)": fqen 0 -> 1 sets fqt, fqof and fqmf to 0."""
    regs, _ = make()
    regs.fqt = 7
    regs.fqcsr = FQCSR_FQOF | FQCSR_FQMF
    regs.write(76, 4, FQCSR_FQEN | FQCSR_FIE)
    assert regs.read(76, 4) == FQCSR_FQEN | FQCSR_FIE | FQCSR_FQON
    assert regs.fqt == 0
    regs.write(76, 4, 0)
    assert regs.read(76, 4) == 0


def test_pqcsr_enable_resets_tail_and_errors() -> None:
    """riscv-iommu: "Page-request-queue CSR (pqcsr)": pqen 0 -> 1 sets pqt, pqof, pqmf to 0."""
    regs, _ = make()
    regs.pqt = 2
    regs.pqcsr = PQCSR_PQOF
    regs.write(80, 4, PQCSR_PQEN)
    assert regs.read(80, 4) == PQCSR_PQEN | PQCSR_PQON
    assert regs.pqt == 0


def test_cq_error_rejects_non_error_bits() -> None:
    regs, _ = make()
    with pytest.raises(ModelError, match="cqcsr error bit"):
        regs.cq_error(CQCSR_CIE)


# -- riscv-iommu: "Translation-request IOVA/control", "Translation-response" -------------------


def test_debug_interface() -> None:
    """riscv-iommu: "Translation-request control (tr_req_ctl)": Go/Busy starts a translation;
    tr_req_iova bits 11:0 reserved; tr_response RO; reserved 11:4, 35:33 and custom 39:36 read 0."""
    regs, host = make()
    regs.write(600, 8, 0xFFFF_FFFF_FFFF_FFFF)
    assert regs.read(600, 8) == 0xFFFF_FFFF_FFFF_F000
    regs.write(612, 4, 0xFFFF_FFFF)  # upper half: DID, PV, no Go
    assert host.debug_requests == []
    assert regs.read(608, 8) == 0xFFFF_FF01_0000_0000
    regs.write(608, 4, 0xFFFF_FFFF)
    assert host.debug_requests == [(0xFFFF_FFFF_FFFF_F000, 0xFFFF_FF01_FFFF_F00F)]
    assert regs.read(608, 8) == 0xFFFF_FF01_FFFF_F00E
    assert regs.read(616, 8) == 0x1234 << 10
    regs.write(616, 8, 0)
    assert regs.read(616, 8) == 0x1234 << 10


def test_debug_absent_reads_zero() -> None:
    """riscv-iommu: "Register layout": tr_* optional if capabilities.DBG == 0."""
    regs, host = make(MINIMAL)
    regs.write(608, 8, 1)
    regs.write(600, 8, 0x5000)
    assert regs.read(608, 8) == regs.read(600, 8) == 0
    assert host.debug_requests == []


# -- riscv-iommu: "IOMMU QoS ID (iommu_qosid)" -------------------------------------------------


def test_iommu_qosid_mask() -> None:
    """riscv-iommu: "IOMMU QoS ID (iommu_qosid)": RCID/MCID WARL, reserved bits 0."""
    regs, _ = make(qosid_mask=0x00FF_007F)
    regs.write(624, 4, 0xFFFF_FFFF)
    assert regs.read(624, 4) == 0x00FF_007F
    regs, _ = make(MINIMAL)
    regs.write(624, 4, 0xFFFF_FFFF)
    assert regs.read(624, 4) == 0


# -- riscv-iommu: "Interrupt-cause-to-vector register (icvec)", "MSI configuration table" -----


@pytest.mark.parametrize("nvb", [0, 1, 2, 3, 4])
def test_icvec_fields_keep_num_vec_bits(nvb: int) -> None:
    """riscv-iommu: "Interrupt-cause-to-vector register (icvec)": WARL fields."""
    regs, _ = make(num_vec_bits=nvb)
    regs.write(760, 8, 2**64 - 1)
    field = (1 << nvb) - 1
    assert regs.read(760, 8) == field * 0x1111


def test_icvec_pmiv_piv_zero_without_hpm_ats() -> None:
    """FORMAT.md 6.5: pmiv reads 0 without HPM, piv reads 0 without ATS."""
    regs, _ = make(RiscvIommuParams(capabilities=caps(cap.SV39), num_vec_bits=4))
    regs.write(760, 8, 0xFFFF)
    assert regs.read(760, 8) == 0xFF


def test_msi_cfg_tbl_entries() -> None:
    """riscv-iommu: "MSI configuration table (msi_cfg_tbl)": ADDR 55:2 (PAS-limited), data 32
    bits, vector control M only; entries beyond 2^num_vec_bits read 0."""
    regs, _ = make(MINIMAL.with_(num_vec_bits=1))
    for x in range(16):
        regs.write(768 + 16 * x, 8, 2**64 - 1)
        regs.write(776 + 16 * x, 8, 2**64 - 1)
    for x in range(2):
        assert regs.read(768 + 16 * x, 8) == (1 << 40) - 4
        assert regs.read(776 + 16 * x, 4) == 0xFFFF_FFFF
        assert regs.read(780 + 16 * x, 4) == 1
    for x in range(2, 16):
        assert regs.read(768 + 16 * x, 8) == regs.read(776 + 16 * x, 8) == 0


def test_msi_cfg_tbl_absent_with_wsi_only() -> None:
    """riscv-iommu: "MSI configuration table": hardwired to 0 if capabilities.IGS == WSI."""
    regs, _ = make(RiscvIommuParams(capabilities=caps(cap.SV39, igs=IGS_WSI), fctl=2))
    regs.write(768, 8, 0x1000)
    regs.write(776, 4, 0x55)
    assert regs.read(768, 8) == regs.read(776, 4) == 0


def test_dump_names_registers() -> None:
    regs, _ = make(RiscvIommuParams(capabilities=caps(cap.SV39, igs=IGS_BOTH), num_vec_bits=1))
    names = [n for n, _ in regs.dump()]
    assert names[:3] == ["capabilities", "fctl", "ddtp"]
    assert "pqb" not in names
    assert "iohpmcycles" not in names
    assert names[-3:] == ["msi_addr_1", "msi_data_1", "msi_vec_ctl_1"]


# -- properties -----------------------------------------------------------------------------

_ANY_PARAMS = st.sampled_from([*PRESETS.values(), MINIMAL])


@given(
    _ANY_PARAMS,
    st.lists(
        st.tuples(st.integers(0, 4095 // 4), st.booleans(), st.integers(0, 2**64 - 1)), max_size=40
    ),
)
def test_no_write_raises_and_reads_fit(
    params: RiscvIommuParams, writes: list[tuple[int, bool, int]]
) -> None:
    """riscv-iommu: "Memory-mapped register interface": any naturally aligned 4/8-byte write in
    the page is accepted; reads return a value of the access size."""
    regs, _ = make(params)
    for word, wide, value in writes:
        size = 8 if wide else 4
        offset = word * 4 & ~(size - 1)
        regs.write(offset, size, value)
        assert 0 <= regs.read(offset, size) < 1 << (8 * size)


# -- the conformance vectors of the regs family ---------------------------------------------


def _h(x: str | int) -> int:
    return int(x, 16) if isinstance(x, str) else x


def params_from_vector(d: dict[str, object]) -> RiscvIommuParams:
    """RiscvIommuParams of a vector's ``params`` (FORMAT.md section 2)."""
    g = d.get
    return RiscvIommuParams(
        capabilities=_h(g("capabilities")),  # type: ignore[arg-type]
        fctl=_h(g("fctl", 0)),  # type: ignore[arg-type]
        num_hpm=int(g("num_hpm", 0)),  # type: ignore[call-overload]
        hpmctr_bits=int(g("hpmctr_bits", 0)) or 64,  # type: ignore[call-overload]
        eventid_limit=int(g("eventid_limit", 0)),  # type: ignore[call-overload]
        num_vec_bits=int(g("num_vec_bits", 0)),  # type: ignore[call-overload]
        reset_mode=MODE_NAMES[str(g("reset_mode", "off"))],
        max_mode=MODE_NAMES[str(g("max_mode", "3lvl"))],
        gxl_writable=bool(g("gxl_writable", False)),
        fctl_be_writable=bool(g("fctl_be_writable", False)),
        qosid_mask=_h(g("qosid_mask", 0)),  # type: ignore[arg-type]
    )


def _vectors(family: str) -> list[Path]:
    return sorted((VECTORS / family).glob("*.json"))


@pytest.mark.parametrize("path", _vectors("regs"), ids=lambda p: p.stem)
def test_regs_vector(path: Path) -> None:
    """FORMAT.md section 10, family ``regs``: register-only vectors replayed on the file."""
    vector = json.loads(path.read_text())
    regs, _ = make(params_from_vector(vector["params"]))
    for i, step in enumerate(vector["steps"]):
        if step["op"] == "write_reg":
            regs.write(step["offset"], step["size"], _h(step["value"]))
        elif step["op"] == "read_reg":
            mask = _h(step.get("mask", (1 << 8 * step["size"]) - 1))
            got = regs.read(step["offset"], step["size"])
            assert (got ^ _h(step["expect"])) & mask == 0, f"step {i}: {step} read {got:#x}"


@pytest.mark.parametrize(
    ("igs", "fctl", "message"),
    [
        (IGS_WSI, 0, "fctl.WSI must be 1 with capabilities.IGS WSI, not 0"),
        (IGS_MSI, 2, "fctl.WSI must be 0 with capabilities.IGS MSI, not 1"),
        (3, 0, "IGS must be MSI, WSI or BOTH"),
    ],
)
def test_fctl_wsi_reset_value_must_fit_igs(igs: int, fctl: int, message: str) -> None:
    """riscv-iommu: "Features-control register (fctl)": WSI is WARL -- an IOMMU that only
    signals wires (or only messages) cannot reset to the other; "IOMMU capabilities": IGS 3 is
    reserved."""
    with pytest.raises(ModelError, match=message):
        RiscvIommuParams(capabilities=caps(cap.SV39, igs=igs), fctl=fctl)
