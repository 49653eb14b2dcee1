"""The memory-mapped register file of a RISC-V IOMMU.

riscv-iommu: "Memory-mapped register interface". One 4 KiB page of little-endian registers;
4- and 8-byte naturally aligned accesses, a 4-byte access reaching either half of an 8-byte
register. Every register is held as a plain ``int`` attribute named after its spec mnemonic, so
the core (``hw/riscv/iommu.py``) reads and advances them without decoding. ``read``/``write``
dispatch through a table built once at construction (one entry per 4-byte word of the page), and
each register's write legalisation uses masks precomputed from the implementation parameters;
the WARL choices are those of the conformance corpus (FORMAT.md section 6.5).

Optional registers whose ``capabilities`` bit is 0 are simply not mapped: "a read from the
memory-mapped register offset of the register returns 0 and writes to that offset are ignored".
Reserved and custom fields read 0 (no custom use is implemented).

UNSPECIFIED behaviours and the answer chosen
--------------------------------------------

riscv-iommu: "Memory-mapped register interface": "The IOMMU behavior for register accesses
where the address is not aligned to the size of the access, or if the access spans multiple
registers, or if the size of the access is not 4 bytes or 8 bytes, is UNSPECIFIED." The model
answers every access at the bus level -- never with an exception, whatever the offset, size or
value (a fuzzer's or a buggy driver's access is data, DESIGN rule 3):

* **an access size other than 4 or 8** (0, 1, 2, 3, 5..7, 16, negative, ...): a read returns
  0, a write is ignored (no register changes, no side effect). Sub-word accesses are not
  merged into a register: the spec defines no byte enables for this page;
* **an offset not aligned to the access size** (a 4-byte access at ``4k + 1..3``, an 8-byte
  access at ``8k + 4`` or any other non-multiple of 8): read 0, write ignored -- not
  "rounded down", which would reach a register the access did not name;
* **an offset outside the 4 KiB register page** (negative, or ``offset + size > 4096``): read
  0, write ignored (the access does not decode to this IOMMU);
* **an aligned 8-byte access spanning two 4-byte registers** (e.g. ``cqh``/``cqt`` at 32,
  ``msi_data``/``msi_vec_ctl`` at ``768 + 16x + 8``): performed as the two 4-byte accesses
  it covers -- a read composes ``low | high << 32``; a write goes to the high half first, then
  the low half, the order the spec gives for an 8-byte access seen "as if two separate 4 byte
  accesses";
* **reserved offsets, custom-use offsets** (12, 688..759, the tail of the page) **and the
  offsets of optional registers that are not implemented**: read 0, writes ignored (the spec's
  rule for optional registers; "designated for custom use should be implemented as read-only
  zero"); a 4- or 8-byte access half on an implemented register and half on such an offset
  reads 0 for that half and ignores the write to it;
* **a value wider than the access** (more than 32 or 64 bits) **or negative**: the bus carries
  only ``8 * size`` bits, so the value is taken modulo ``2**(8 * size)`` (a negative value as
  its two's complement) before the register's own access rules apply;
* **fctl written while ``ddtp.iommu_mode`` is not Off or a queue is on** (riscv-iommu:
  "Features-control register (fctl)"): the write is performed; cached device contexts are kept,
  and a request through one whose ``iohgatp.MODE`` the new ``fctl.GXL`` does not support ends
  in "DDT entry misconfigured" (259), as a fresh read of that DC would.

Outside this file, the same bus-level rule applies to what a device presents (``iommu.py``):
request and page-request fields wider than the bus's (device_id 24 bits, process_id 20, IOVA and
payload 64) are taken modulo those widths, and a fault record never carries more bits per field
than its layout has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from iommusim.errors import ModelError
from iommusim.hw.riscv.params import IGS_BOTH, IGS_WSI, MODE_3LVL, RiscvIommuParams, cap

__all__ = [
    "CQCSR_BUSY",
    "CQCSR_CIE",
    "CQCSR_CMD_ILL",
    "CQCSR_CMD_TO",
    "CQCSR_CQEN",
    "CQCSR_CQMF",
    "CQCSR_CQON",
    "CQCSR_FENCE_W_IP",
    "FQCSR_BUSY",
    "FQCSR_FIE",
    "FQCSR_FQEN",
    "FQCSR_FQMF",
    "FQCSR_FQOF",
    "FQCSR_FQON",
    "IPSR_CIP",
    "IPSR_FIP",
    "IPSR_PIP",
    "IPSR_PMIP",
    "PQCSR_BUSY",
    "PQCSR_PIE",
    "PQCSR_PQEN",
    "PQCSR_PQMF",
    "PQCSR_PQOF",
    "PQCSR_PQON",
    "REGISTERS_SIZE",
    "RegisterHost",
    "Registers",
    "WireObserver",
]

# ---------------------------------------------------------------------------------------------
# Register layout (riscv-iommu: "Register layout")

REGISTERS_SIZE: Final = 4096

OFF_CAPABILITIES: Final = 0
OFF_FCTL: Final = 8
OFF_DDTP: Final = 16
OFF_CQB: Final = 24
OFF_CQH: Final = 32
OFF_CQT: Final = 36
OFF_FQB: Final = 40
OFF_FQH: Final = 48
OFF_FQT: Final = 52
OFF_PQB: Final = 56
OFF_PQH: Final = 64
OFF_PQT: Final = 68
OFF_CQCSR: Final = 72
OFF_FQCSR: Final = 76
OFF_PQCSR: Final = 80
OFF_IPSR: Final = 84
OFF_IOCOUNTOVF: Final = 88
OFF_IOCOUNTINH: Final = 92
OFF_IOHPMCYCLES: Final = 96
OFF_IOHPMCTR: Final = 104  # iohpmctr1 (iohpmctrN at 104 + 8 * (N - 1))
OFF_IOHPMEVT: Final = 352  # iohpmevt1
OFF_TR_REQ_IOVA: Final = 600
OFF_TR_REQ_CTL: Final = 608
OFF_TR_RESPONSE: Final = 616
OFF_IOMMU_QOSID: Final = 624
OFF_ICVEC: Final = 760
OFF_MSI_CFG_TBL: Final = 768  # entry x: msi_addr at +16x, msi_data at +16x+8, msi_vec_ctl +16x+12

M32: Final = 0xFFFF_FFFF
M64: Final = 0xFFFF_FFFF_FFFF_FFFF

# fctl (riscv-iommu: "Features-control register (fctl)")
FCTL_BE: Final = 1 << 0
FCTL_WSI: Final = 1 << 1
FCTL_GXL: Final = 1 << 2

# ddtp (riscv-iommu: "Device-directory-table pointer (ddtp)")
DDTP_MODE_MASK: Final = 0xF
DDTP_BUSY: Final = 1 << 4
DDTP_PPN_SHIFT: Final = 10

# cqb/fqb/pqb (riscv-iommu: "Command-queue base (cqb)" and the FQ/PQ equivalents)
QB_LOG2SZM1_MASK: Final = 0x1F
QB_PPN_SHIFT: Final = 10

# cqcsr (riscv-iommu: "Command-queue CSR (cqcsr)")
CQCSR_CQEN: Final = 1 << 0
CQCSR_CIE: Final = 1 << 1
CQCSR_CQMF: Final = 1 << 8
CQCSR_CMD_TO: Final = 1 << 9
CQCSR_CMD_ILL: Final = 1 << 10
CQCSR_FENCE_W_IP: Final = 1 << 11
CQCSR_CQON: Final = 1 << 16
CQCSR_BUSY: Final = 1 << 17
CQCSR_ERRORS: Final = CQCSR_CQMF | CQCSR_CMD_TO | CQCSR_CMD_ILL | CQCSR_FENCE_W_IP

# fqcsr (riscv-iommu: "Fault queue CSR (fqcsr)")
FQCSR_FQEN: Final = 1 << 0
FQCSR_FIE: Final = 1 << 1
FQCSR_FQMF: Final = 1 << 8
FQCSR_FQOF: Final = 1 << 9
FQCSR_FQON: Final = 1 << 16
FQCSR_BUSY: Final = 1 << 17
FQCSR_ERRORS: Final = FQCSR_FQMF | FQCSR_FQOF

# pqcsr (riscv-iommu: "Page-request-queue CSR (pqcsr)")
PQCSR_PQEN: Final = 1 << 0
PQCSR_PIE: Final = 1 << 1
PQCSR_PQMF: Final = 1 << 8
PQCSR_PQOF: Final = 1 << 9
PQCSR_PQON: Final = 1 << 16
PQCSR_BUSY: Final = 1 << 17
PQCSR_ERRORS: Final = PQCSR_PQMF | PQCSR_PQOF

# The three queue CSRs share one layout: en at 0, ie at 1, errors in 11:8, on at 16, busy at 17.
_CSR_EN: Final = 1 << 0
_CSR_IE: Final = 1 << 1
_CSR_ON: Final = 1 << 16

# ipsr (riscv-iommu: "Interrupt pending status register (ipsr)")
IPSR_CIP: Final = 1
IPSR_FIP: Final = 2
IPSR_PMIP: Final = 4
IPSR_PIP: Final = 8
IPSR_MASK: Final = 0xF

# iohpmcycles (riscv-iommu: "Performance-monitoring cycles counter (iohpmcycles)")
HPM_OF: Final = 1 << 63

# iohpmevt (riscv-iommu: "Performance-monitoring event selectors (iohpmevt1-31)")
EVT_EVENTID_MASK: Final = 0x7FFF
EVT_DMASK: Final = 1 << 15
EVT_PID_PSCID_SHIFT: Final = 16
EVT_PID_PSCID_MASK: Final = 0xF_FFFF
EVT_DID_GSCID_SHIFT: Final = 36
EVT_DID_GSCID_MASK: Final = 0xFF_FFFF
EVT_PV_PSCV: Final = 1 << 60
EVT_DV_GSCV: Final = 1 << 61
EVT_IDT: Final = 1 << 62
EVT_OF: Final = 1 << 63
#: Standard events that support IDT = 1 (riscv-iommu: "Standard Events list"): TLB miss,
#: first-stage and second-stage page-table walks. All others support IDT = 0 only.
EVENTS_WITH_IDT1: Final = frozenset({4, 7, 8})
#: Standard events counted during table walks: device-directory (5), process-directory (6),
#: first-stage (7) and second-stage (8) page-table walks.
WALK_EVENTS: Final = frozenset({5, 6, 7, 8})

# tr_req_ctl (riscv-iommu: "Translation-request control (tr_req_ctl)")
TR_REQ_CTL_GO: Final = 1 << 0
TR_REQ_CTL_MASK: Final = (
    0xF  # Go/Busy, Priv, Exe, NW
    | 0xF_FFFF << 12  # PID
    | 1 << 32  # PV
    | 0xFF_FFFF << 40  # DID
)
TR_REQ_IOVA_MASK: Final = M64 & ~0xFFF

# icvec (riscv-iommu: "Interrupt-cause-to-vector register (icvec)")
ICVEC_CIV_SHIFT: Final = 0
ICVEC_FIV_SHIFT: Final = 4
ICVEC_PMIV_SHIFT: Final = 8
ICVEC_PIV_SHIFT: Final = 12

# msi_cfg_tbl (riscv-iommu: "MSI configuration table (msi_cfg_tbl)")
MSI_VEC_CTL_M: Final = 1
MSI_TABLE_MAX: Final = 16

# ipsr bit -> icvec field shift
_CAUSE_SHIFT: Final = {
    IPSR_CIP: ICVEC_CIV_SHIFT,
    IPSR_FIP: ICVEC_FIV_SHIFT,
    IPSR_PMIP: ICVEC_PMIV_SHIFT,
    IPSR_PIP: ICVEC_PIV_SHIFT,
}


class RegisterHost(Protocol):
    """What the register file needs from the IOMMU core."""

    def send_msi(self, addr: int, data: int) -> None:
        """Write the 4 ``data`` bytes to ``addr`` (byte order per ``fctl.BE``); on a memory
        fault the core writes the cause-273 fault record itself."""

    def wired_interrupt(self, vector: int) -> None:
        """The wire of ``vector`` was asserted (a rising edge, ``fctl.WSI`` = 1); level changes
        in both directions go to the observers of :meth:`Registers.add_wire_observer`."""

    def debug_translate(self) -> None:
        """Perform the debug translation set up in ``tr_req_iova``/``tr_req_ctl``; set
        ``tr_response`` and clear ``tr_req_ctl.Go/Busy``."""


_Reader = Callable[[], int]
_Writer = Callable[[int], None]
#: Called with ``(vector, level)`` whenever the wire of interrupt ``vector`` changes level.
WireObserver = Callable[[int, bool], None]


class _Reg:
    """One mapped register: name, byte offset, size and its access functions."""

    __slots__ = ("base", "name", "read", "size", "write")

    def __init__(self, name: str, base: int, size: int, read: _Reader, write: _Writer) -> None:
        self.name = name
        self.base = base
        self.size = size
        self.read = read
        self.write = write


def _ignore(_value: int) -> None:
    """Writer of a read-only register."""


class Registers:
    """The IOMMU register file (riscv-iommu: "Memory-mapped register interface")."""

    __slots__ = (
        "_by_event",
        "_ctr_mask",
        "_cyc_mask",
        "_eventid_limit",
        "_fctl_wmask",
        "_has_ats",
        "_has_hpm",
        "_host",
        "_icvec_mask",
        "_inh_mask",
        "_max_mode",
        "_msi_addr_mask",
        "_msi_entries",
        "_msi_pending",
        "_num_hpm",
        "_ppn_mask",
        "_qb_mask",
        "_qosid_mask",
        "_regs",
        "_table",
        "_wire_observers",
        "_wires",
        "_wsi_only",
        "capabilities",
        "cqb",
        "cqcsr",
        "cqh",
        "cqt",
        "ddtp",
        "fctl",
        "fqb",
        "fqcsr",
        "fqh",
        "fqt",
        "hpm_events",
        "hpm_walks",
        "icvec",
        "iocountinh",
        "iocountovf",
        "iohpmctr",
        "iohpmcycles",
        "iohpmevt",
        "iommu_qosid",
        "ipsr",
        "msi_addr",
        "msi_data",
        "msi_vec_ctl",
        "params",
        "pqb",
        "pqcsr",
        "pqh",
        "pqt",
        "tr_req_ctl",
        "tr_req_iova",
        "tr_response",
    )

    def __init__(self, params: RiscvIommuParams, host: RegisterHost) -> None:
        self.params = params
        self._host = host
        p = params

        # -- implementation-dependent masks, computed once ------------------------------------
        pas = p.pas
        self._ppn_mask = (1 << (pas - 12)) - 1
        self._qb_mask = QB_LOG2SZM1_MASK | self._ppn_mask << QB_PPN_SHIFT
        self._has_ats = p.has(cap.ATS)
        self._has_hpm = p.has(cap.HPM) and p.num_hpm > 0
        dbg = p.has(cap.DBG)
        igs = p.igs
        self._wsi_only = igs == IGS_WSI
        self._max_mode = min(p.max_mode, MODE_3LVL)
        # riscv-iommu: "Features-control register (fctl)" -- WARL; FORMAT.md 6.5 fixes which.
        self._fctl_wmask = (
            (FCTL_BE if p.fctl_be_writable else 0)
            | (FCTL_WSI if igs == IGS_BOTH else 0)
            | (FCTL_GXL if p.gxl_writable else 0)
        )
        self._num_hpm = p.num_hpm if self._has_hpm else 0
        self._inh_mask = (1 << self._num_hpm) - 1
        bits = p.hpmctr_bits if self._has_hpm else 0
        self._ctr_mask = (1 << bits) - 1
        # iohpmcycles: a 63-bit counter field, no wider than the implemented counters.
        self._cyc_mask = (1 << min(bits, 63)) - 1
        self._eventid_limit = min(p.eventid_limit, EVT_EVENTID_MASK)
        vmask = (1 << p.num_vec_bits) - 1
        icvec_mask = vmask << ICVEC_CIV_SHIFT | vmask << ICVEC_FIV_SHIFT
        if self._has_hpm:
            icvec_mask |= vmask << ICVEC_PMIV_SHIFT
        if self._has_ats:
            icvec_mask |= vmask << ICVEC_PIV_SHIFT
        self._icvec_mask = icvec_mask
        self._msi_entries = 0 if self._wsi_only else 1 << p.num_vec_bits
        self._msi_addr_mask = ((1 << min(pas, 56)) - 1) & ~3
        self._qosid_mask = p.qosid_mask & 0x0FFF_0FFF if p.has(cap.QOSID) else 0

        # -- reset state (riscv-iommu: "Reset behavior"; UNSPECIFIED fields reset to 0) -------
        self.capabilities = p.capabilities
        self.fctl = p.fctl & (FCTL_BE | FCTL_WSI | FCTL_GXL)
        self.ddtp = p.reset_mode
        self.cqb = self.cqh = self.cqt = 0
        self.fqb = self.fqh = self.fqt = 0
        self.pqb = self.pqh = self.pqt = 0
        self.cqcsr = self.fqcsr = self.pqcsr = 0
        self.ipsr = 0
        self.iocountovf = self.iocountinh = self.iohpmcycles = 0
        self.iohpmctr = [0] * 32
        self.iohpmevt = [0] * 32
        self.tr_req_iova = self.tr_req_ctl = self.tr_response = 0
        self.iommu_qosid = 0
        self.icvec = 0
        self.msi_addr = [0] * MSI_TABLE_MAX
        self.msi_data = [0] * MSI_TABLE_MAX
        self.msi_vec_ctl = [0] * MSI_TABLE_MAX
        self._msi_pending = [False] * MSI_TABLE_MAX
        self._by_event: dict[int, tuple[int, ...]] = {}
        self._wires = 0  # bit v: the wire of interrupt vector v is asserted
        self._wire_observers: list[WireObserver] = []
        #: Event IDs some iohpmevt selects: the translation path counts only these, so an
        #: event nothing counts costs it one set lookup.
        self.hpm_events: frozenset[int] = frozenset()
        #: Whether some iohpmevt selects a walk event (WALK_EVENTS): only then does the
        #: translation path hand the transaction's IDs to the table walks.
        self.hpm_walks = False

        # -- dispatch table: one slot per 4-byte word of the page -----------------------------
        regs: list[_Reg] = []

        def add(name: str, base: int, size: int, read: _Reader, write: _Writer) -> None:
            regs.append(_Reg(name, base, size, read, write))

        add("capabilities", OFF_CAPABILITIES, 8, lambda: self.capabilities, _ignore)
        add("fctl", OFF_FCTL, 4, lambda: self.fctl, self._w_fctl)
        add("ddtp", OFF_DDTP, 8, lambda: self.ddtp, self._w_ddtp)
        add("cqb", OFF_CQB, 8, lambda: self.cqb, self._w_cqb)
        add("cqh", OFF_CQH, 4, lambda: self.cqh, _ignore)
        add("cqt", OFF_CQT, 4, lambda: self.cqt, self._w_cqt)
        add("fqb", OFF_FQB, 8, lambda: self.fqb, self._w_fqb)
        add("fqh", OFF_FQH, 4, lambda: self.fqh, self._w_fqh)
        add("fqt", OFF_FQT, 4, lambda: self.fqt, _ignore)
        if self._has_ats:
            add("pqb", OFF_PQB, 8, lambda: self.pqb, self._w_pqb)
            add("pqh", OFF_PQH, 4, lambda: self.pqh, self._w_pqh)
            add("pqt", OFF_PQT, 4, lambda: self.pqt, _ignore)
        add("cqcsr", OFF_CQCSR, 4, lambda: self.cqcsr, self._w_cqcsr)
        add("fqcsr", OFF_FQCSR, 4, lambda: self.fqcsr, self._w_fqcsr)
        if self._has_ats:
            add("pqcsr", OFF_PQCSR, 4, lambda: self.pqcsr, self._w_pqcsr)
        add("ipsr", OFF_IPSR, 4, lambda: self.ipsr, self._w_ipsr)
        if self._has_hpm:
            add("iocountovf", OFF_IOCOUNTOVF, 4, lambda: self.iocountovf, _ignore)
            add("iocountinh", OFF_IOCOUNTINH, 4, lambda: self.iocountinh, self._w_iocountinh)
            add("iohpmcycles", OFF_IOHPMCYCLES, 8, lambda: self.iohpmcycles, self._w_iohpmcycles)
            for n in range(1, self._num_hpm):
                add(f"iohpmctr{n}", OFF_IOHPMCTR + 8 * (n - 1), 8, self._r_ctr(n), self._w_ctr(n))
            for n in range(1, self._num_hpm):
                add(f"iohpmevt{n}", OFF_IOHPMEVT + 8 * (n - 1), 8, self._r_evt(n), self._w_evt(n))
        if dbg:
            add("tr_req_iova", OFF_TR_REQ_IOVA, 8, lambda: self.tr_req_iova, self._w_tr_req_iova)
            add("tr_req_ctl", OFF_TR_REQ_CTL, 8, lambda: self.tr_req_ctl, self._w_tr_req_ctl)
            add("tr_response", OFF_TR_RESPONSE, 8, lambda: self.tr_response, _ignore)
        if p.has(cap.QOSID):
            add("iommu_qosid", OFF_IOMMU_QOSID, 4, lambda: self.iommu_qosid, self._w_iommu_qosid)
        add("icvec", OFF_ICVEC, 8, lambda: self.icvec, self._w_icvec)
        for x in range(self._msi_entries):
            base = OFF_MSI_CFG_TBL + 16 * x
            add(f"msi_addr_{x}", base, 8, self._r_msi_addr(x), self._w_msi_addr(x))
            add(f"msi_data_{x}", base + 8, 4, self._r_msi_data(x), self._w_msi_data(x))
            add(f"msi_vec_ctl_{x}", base + 12, 4, self._r_msi_vec_ctl(x), self._w_msi_vec_ctl(x))

        table: list[_Reg | None] = [None] * (REGISTERS_SIZE // 4)
        for reg in regs:
            for word in range(reg.base // 4, (reg.base + reg.size) // 4):
                if table[word] is not None:  # pragma: no cover - layout bug
                    raise ModelError(f"register {reg.name} overlaps {table[word]!r}")
                table[word] = reg
        self._regs = tuple(regs)
        self._table = table

    # -- the bus interface -------------------------------------------------------------------

    @staticmethod
    def decodes(offset: int, size: int) -> bool:
        """Whether an access of ``size`` bytes at ``offset`` is one the spec defines: 4 or 8
        bytes, naturally aligned, inside the page. Any other access reads 0 and ignores the
        write (the module docstring's UNSPECIFIED list)."""
        return size in (4, 8) and not offset & (size - 1) and 0 <= offset <= REGISTERS_SIZE - size

    def read(self, offset: int, size: int) -> int:
        """Read ``size`` (4 or 8) bytes at ``offset``; unmapped offsets read 0, and so does
        an access the spec leaves UNSPECIFIED (see the module docstring)."""
        if not self.decodes(offset, size):
            return 0
        reg = self._table[offset >> 2]
        if size == 8 and reg is not None and reg.size == 8:
            return reg.read()
        if size == 8:  # spans two 4-byte registers (UNSPECIFIED by the spec; compose)
            return self._read4(offset) | self._read4(offset + 4) << 32
        return self._read4(offset)

    def _read4(self, offset: int) -> int:
        reg = self._table[offset >> 2]
        if reg is None:
            return 0
        if reg.size == 8:
            return reg.read() >> (8 * (offset - reg.base)) & M32
        return reg.read()

    def write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` (4 or 8) bytes at ``offset``, applying every access rule.

        Bits above the access size are ignored; unmapped offsets ignore the write, and so
        does an access the spec leaves UNSPECIFIED (see the module docstring).
        """
        if not self.decodes(offset, size):
            return
        reg = self._table[offset >> 2]
        if size == 8:
            value &= M64
            if reg is not None and reg.size == 8:
                reg.write(value)
                return
            # Two 4-byte registers: high half first, as the spec's note on 8-byte accesses.
            self._write4(offset + 4, value >> 32)
            self._write4(offset, value & M32)
            return
        self._write4(offset, value & M32)

    def _write4(self, offset: int, value: int) -> None:
        reg = self._table[offset >> 2]
        if reg is None:
            return
        if reg.size == 8:
            # riscv-iommu: "Memory-mapped register interface" -- a 4-byte access to one half of
            # an 8-byte register leaves the other half as it reads.
            shift = 8 * (offset - reg.base)
            value = reg.read() & ~(M32 << shift) | value << shift
        reg.write(value)

    def dump(self) -> list[tuple[str, int]]:
        """(name, value) of every implemented register, in address order."""
        return [(reg.name, reg.read()) for reg in self._regs]

    # -- writers -----------------------------------------------------------------------------

    def _w_fctl(self, value: int) -> None:
        # riscv-iommu: "Features-control register (fctl)": writable fields per implementation.
        self.fctl = self.fctl & ~self._fctl_wmask | value & self._fctl_wmask
        self._update_wires()  # fctl.WSI decides whether the ipsr bits drive the wires

    def _w_ddtp(self, value: int) -> None:
        # riscv-iommu: "Device-directory-table pointer (ddtp)": iommu_mode is WARL; an
        # unsupported mode leaves the register unchanged (FORMAT.md 6.5). busy is 0 because
        # mode changes complete synchronously.
        mode = value & DDTP_MODE_MASK
        if mode > self._max_mode:
            return
        ppn = value >> DDTP_PPN_SHIFT & self._ppn_mask
        self.ddtp = ppn << DDTP_PPN_SHIFT | mode

    def _w_cqb(self, value: int) -> None:
        # riscv-iommu: "Command-queue base (cqb)": after a write, cqt bits 31:LOG2SZ are 0.
        self.cqb = value & self._qb_mask
        self.cqt &= self._index_mask(self.cqb)

    def _w_fqb(self, value: int) -> None:
        # riscv-iommu: "Fault queue base (fqb)": after a write, fqh bits 31:LOG2SZ are 0.
        self.fqb = value & self._qb_mask
        self.fqh &= self._index_mask(self.fqb)

    def _w_pqb(self, value: int) -> None:
        # riscv-iommu: "Page-request-queue base (pqb)": after a write, pqh bits 31:LOG2SZ are 0.
        self.pqb = value & self._qb_mask
        self.pqh &= self._index_mask(self.pqb)

    @staticmethod
    def _index_mask(qb: int) -> int:
        return (1 << ((qb & QB_LOG2SZM1_MASK) + 1)) - 1

    def _w_cqt(self, value: int) -> None:
        # riscv-iommu: "Command-queue tail (cqt)": only LOG2SZ-1:0 are writable.
        self.cqt = value & self._index_mask(self.cqb)

    def _w_fqh(self, value: int) -> None:
        # riscv-iommu: "Fault queue head (fqh)": only LOG2SZ-1:0 are writable.
        self.fqh = value & self._index_mask(self.fqb)

    def _w_pqh(self, value: int) -> None:
        # riscv-iommu: "Page-request-queue head (pqh)": only LOG2SZ-1:0 are writable.
        self.pqh = value & self._index_mask(self.pqb)

    @staticmethod
    def _csr_update(old: int, value: int, errors: int) -> tuple[int, bool, bool]:
        """New queue-CSR value, whether en went 0 -> 1 and whether ie went 0 -> 1.

        en/ie are RW, the error bits RW1C, on follows en, busy reads 0 (FORMAT.md 6.1).
        """
        new = value & (_CSR_EN | _CSR_IE) | old & errors & ~value
        enabled = bool(new & _CSR_EN and not old & _CSR_EN)
        if enabled:
            new &= ~errors
        if new & _CSR_EN:
            new |= _CSR_ON
        return new, enabled, bool(new & _CSR_IE and not old & _CSR_IE)

    def _w_cqcsr(self, value: int) -> None:
        # riscv-iommu: "Command-queue CSR (cqcsr)": cqen 0 -> 1 clears cqh and the errors.
        self.cqcsr, enabled, ie_on = self._csr_update(self.cqcsr, value, CQCSR_ERRORS)
        if enabled:
            self.cqh = 0
        if ie_on:
            self._reassert(IPSR_CIP)

    def _w_fqcsr(self, value: int) -> None:
        # riscv-iommu: "Fault queue CSR (fqcsr)": fqen 0 -> 1 clears fqt, fqof and fqmf.
        self.fqcsr, enabled, ie_on = self._csr_update(self.fqcsr, value, FQCSR_ERRORS)
        if enabled:
            self.fqt = 0
        if ie_on:
            self._reassert(IPSR_FIP)

    def _w_pqcsr(self, value: int) -> None:
        # riscv-iommu: "Page-request-queue CSR (pqcsr)": pqen 0 -> 1 clears pqt, pqof, pqmf.
        self.pqcsr, enabled, ie_on = self._csr_update(self.pqcsr, value, PQCSR_ERRORS)
        if enabled:
            self.pqt = 0
        if ie_on:
            self._reassert(IPSR_PIP)

    def _w_ipsr(self, value: int) -> None:
        # riscv-iommu: "Interrupt pending status register (ipsr)": RW1C; a cleared bit whose
        # set condition is still present transitions 0 -> 1 again (a new message).
        cleared = self.ipsr & value & IPSR_MASK
        if not cleared:
            return
        self.ipsr &= ~cleared
        # A wire driven only by the cleared bits falls, and rises again below if a cause
        # persists: observers see the re-assertion as a new interrupt.
        self._update_wires()
        for bit in (IPSR_CIP, IPSR_FIP, IPSR_PIP):
            if cleared & bit:
                self._reassert(bit)

    def _w_iocountinh(self, value: int) -> None:
        # riscv-iommu: "Performance-monitoring counter inhibits (iocountinh)": one bit per
        # implemented counter (bit 0: iohpmcycles).
        self.iocountinh = value & self._inh_mask

    def _w_iohpmcycles(self, value: int) -> None:
        # riscv-iommu: "Performance-monitoring cycles counter (iohpmcycles)": OF is RW.
        self.iohpmcycles = value & (HPM_OF | self._cyc_mask)
        self.iocountovf = self.iocountovf & ~1 | self.iohpmcycles >> 63

    def _r_ctr(self, n: int) -> _Reader:
        return lambda: self.iohpmctr[n]

    def _w_ctr(self, n: int) -> _Writer:
        mask = self._ctr_mask

        def write(value: int) -> None:
            # riscv-iommu: "Performance-monitoring event counters (iohpmctr1-31)": WARL width.
            self.iohpmctr[n] = value & mask

        return write

    def _r_evt(self, n: int) -> _Reader:
        return lambda: self.iohpmevt[n]

    def _w_evt(self, n: int) -> _Writer:
        def write(value: int) -> None:
            # riscv-iommu: "Performance-monitoring event selectors (iohpmevt1-31)": eventID is
            # WARL; an unsupported eventID keeps the previous one, other fields are written.
            if value & EVT_EVENTID_MASK > self._eventid_limit:
                value = value & ~EVT_EVENTID_MASK | self.iohpmevt[n] & EVT_EVENTID_MASK
            self.iohpmevt[n] = value
            self.iocountovf = self.iocountovf & ~(1 << n) | (value >> 63) << n
            self._index_events()

        return write

    def _index_events(self) -> None:
        by_event: dict[int, list[int]] = {}
        for n in range(1, self._num_hpm):
            event_id = self.iohpmevt[n] & EVT_EVENTID_MASK
            if event_id:
                by_event.setdefault(event_id, []).append(n)
        self._by_event = {e: tuple(ns) for e, ns in by_event.items()}
        self.hpm_events = frozenset(self._by_event)
        self.hpm_walks = not self.hpm_events.isdisjoint(WALK_EVENTS)

    def _w_tr_req_iova(self, value: int) -> None:
        # riscv-iommu: "Translation-request IOVA (tr_req_iova)": bits 11:0 are reserved.
        self.tr_req_iova = value & TR_REQ_IOVA_MASK

    def _w_tr_req_ctl(self, value: int) -> None:
        # riscv-iommu: "Translation-request control (tr_req_ctl)": ignored while Go/Busy is 1
        # (FORMAT.md 6.5); Go/Busy is RW1S and starts the (synchronous) translation.
        if self.tr_req_ctl & TR_REQ_CTL_GO:
            return
        self.tr_req_ctl = value & TR_REQ_CTL_MASK
        if self.tr_req_ctl & TR_REQ_CTL_GO:
            self._host.debug_translate()

    def _w_iommu_qosid(self, value: int) -> None:
        # riscv-iommu: "IOMMU QoS ID (iommu_qosid)": RCID/MCID are WARL.
        self.iommu_qosid = value & self._qosid_mask

    def _w_icvec(self, value: int) -> None:
        # riscv-iommu: "Interrupt-cause-to-vector register (icvec)": num_vec_bits per field.
        self.icvec = value & self._icvec_mask
        self._update_wires()

    def _r_msi_addr(self, x: int) -> _Reader:
        return lambda: self.msi_addr[x]

    def _w_msi_addr(self, x: int) -> _Writer:
        mask = self._msi_addr_mask

        def write(value: int) -> None:
            # riscv-iommu: "MSI configuration table": ADDR 55:2 (WARL, limited to the PAS).
            self.msi_addr[x] = value & mask

        return write

    def _r_msi_data(self, x: int) -> _Reader:
        return lambda: self.msi_data[x]

    def _w_msi_data(self, x: int) -> _Writer:
        def write(value: int) -> None:
            self.msi_data[x] = value & M32

        return write

    def _r_msi_vec_ctl(self, x: int) -> _Reader:
        return lambda: self.msi_vec_ctl[x]

    def _w_msi_vec_ctl(self, x: int) -> _Writer:
        def write(value: int) -> None:
            # riscv-iommu: "MSI configuration table": "Pending messages for that vector are
            # later generated if the corresponding mask bit is cleared to 0."
            self.msi_vec_ctl[x] = value & MSI_VEC_CTL_M
            if not value & MSI_VEC_CTL_M and self._msi_pending[x]:
                self._msi_pending[x] = False
                self._host.send_msi(self.msi_addr[x], self.msi_data[x])

        return write

    # -- interrupt generation ---------------------------------------------------------------

    def vector(self, ipsr_bit: int) -> int:
        """The interrupt vector ``icvec`` assigns to the cause of ``ipsr_bit``."""
        return self.icvec >> _CAUSE_SHIFT[ipsr_bit] & 0xF

    def _level(self, bit: int) -> bool:
        """Whether the level condition of ``ipsr`` bit ``bit`` holds (cip, fip, pip)."""
        if bit == IPSR_CIP:
            return bool(self.cqcsr & CQCSR_CIE and self.cqcsr & CQCSR_ERRORS)
        if bit == IPSR_FIP:
            return bool(self.fqcsr & FQCSR_FIE and self.fqcsr & FQCSR_ERRORS)
        if bit == IPSR_PIP:
            return bool(self.pqcsr & PQCSR_PIE and self.pqcsr & PQCSR_ERRORS)
        return False

    def _reassert(self, bit: int) -> None:
        if self._level(bit):
            self._raise(bit)

    def _raise(self, bit: int) -> None:
        """Set ``ipsr`` bit ``bit``; on its 0 -> 1 edge signal the interrupt.

        riscv-iommu: "Interrupt pending status register (ipsr)": with fctl.WSI = 1 the bit
        drives the wire of its icvec vector; otherwise an MSI from the msi_cfg_tbl entry of that
        vector is generated on the edge, held pending while the vector is masked.
        """
        if self.ipsr & bit:
            return
        self.ipsr |= bit
        if self.fctl & FCTL_WSI or self._wsi_only:
            self._update_wires()
            return
        vec = self.vector(bit)
        if vec < self._msi_entries:
            if self.msi_vec_ctl[vec] & MSI_VEC_CTL_M:
                self._msi_pending[vec] = True
            else:
                self._host.send_msi(self.msi_addr[vec], self.msi_data[vec])

    def msi_pending(self, vector: int) -> bool:
        """Whether a message is pending on masked ``vector``."""
        return self._msi_pending[vector]

    # -- wire-signaled interrupts (riscv-iommu: "ipsr", "icvec", fctl.WSI) ------------------

    @property
    def wires(self) -> int:
        """The asserted interrupt wires: bit ``v`` is the level of the wire of vector ``v``."""
        return self._wires

    def wire_level(self, vector: int) -> bool:
        """Whether the wire of interrupt ``vector`` is asserted."""
        return bool(self._wires >> vector & 1)

    def add_wire_observer(self, observer: WireObserver) -> None:
        """Call ``observer(vector, level)`` on every change of a wire's level."""
        self._wire_observers.append(observer)

    def remove_wire_observer(self, observer: WireObserver) -> None:
        for i, registered in enumerate(self._wire_observers):
            if registered == observer:  # equal, not identical: bound methods are rebuilt
                del self._wire_observers[i]
                return
        raise ModelError(f"wire observer {observer!r} must be registered to be removed")

    def _update_wires(self) -> None:
        """Recompute the wire levels: "When fctl.WSI is 1, the interrupt-pending bit drives the
        wire selected by the corresponding icvec field" -- a level, so a wire stays asserted
        while any ipsr bit routed to it is 1. Rising edges also go to the host's
        ``wired_interrupt``; observers see both edges, lowest vector first."""
        level = 0
        ipsr = self.ipsr
        if ipsr and (self.fctl & FCTL_WSI or self._wsi_only):
            for bit, shift in _CAUSE_SHIFT.items():
                if ipsr & bit:
                    level |= 1 << (self.icvec >> shift & 0xF)
        changed = level ^ self._wires
        if not changed:
            return
        self._wires = level
        for vec in range(16):
            if changed >> vec & 1:
                up = bool(level >> vec & 1)
                if up:
                    self._host.wired_interrupt(vec)
                for observer in tuple(self._wire_observers):
                    observer(vec, up)

    # -- called by the core ------------------------------------------------------------------

    def cq_error(self, bit: int) -> None:
        """Set cqcsr error ``bit`` (cqmf, cmd_to, cmd_ill, fence_w_ip); cip if cie.

        riscv-iommu: "Command-queue CSR (cqcsr)" and "ipsr" (cip).
        """
        if bit & ~CQCSR_ERRORS or not bit:
            raise ModelError(f"cq_error bit must be a cqcsr error bit, not {bit:#x}")
        self.cqcsr |= bit
        if self.cqcsr & CQCSR_CIE:
            self._raise(IPSR_CIP)

    def fq_error(self, bit: int) -> None:
        """Set fqcsr error ``bit`` (fqmf, fqof); fip if fie (riscv-iommu: "Fault queue CSR")."""
        if bit & ~FQCSR_ERRORS or not bit:
            raise ModelError(f"fq_error bit must be a fqcsr error bit, not {bit:#x}")
        self.fqcsr |= bit
        if self.fqcsr & FQCSR_FIE:
            self._raise(IPSR_FIP)

    def pq_error(self, bit: int) -> None:
        """Set pqcsr error ``bit`` (pqmf, pqof); pip if pie (riscv-iommu: "Page-request-queue
        CSR")."""
        if bit & ~PQCSR_ERRORS or not bit:
            raise ModelError(f"pq_error bit must be a pqcsr error bit, not {bit:#x}")
        self.pqcsr |= bit
        if self.pqcsr & PQCSR_PIE:
            self._raise(IPSR_PIP)

    def fq_record_written(self) -> None:
        """A new record was produced in the FQ: fip if fie (riscv-iommu: "ipsr")."""
        if self.fqcsr & FQCSR_FIE:
            self._raise(IPSR_FIP)

    def pq_record_written(self) -> None:
        """A new message was produced in the PQ: pip if pie (riscv-iommu: "ipsr")."""
        if self.pqcsr & PQCSR_PIE:
            self._raise(IPSR_PIP)

    # -- hardware performance monitor --------------------------------------------------------

    def hpm_count(
        self,
        event_id: int,
        did: int,
        pv: bool,
        pid: int,
        gscv: bool,
        gscid: int,
        pscv: bool,
        pscid: int,
    ) -> None:
        """Count one ``event_id`` event of a transaction in every matching counter.

        riscv-iommu: "Performance-monitoring event selectors (iohpmevt1-31)", the filtering
        options table and "Performance-monitoring counter inhibits (iocountinh)".
        """
        counters = self._by_event.get(event_id)
        if counters is None:
            return
        inh = self.iocountinh
        idt_ok = event_id in EVENTS_WITH_IDT1
        for n in counters:
            if inh >> n & 1:
                continue
            evt = self.iohpmevt[n]
            if evt & EVT_IDT and not idt_ok:
                # "When the programmed IDT setting is not supported for an event then the
                # associated counter does not increment."
                continue
            if evt & (EVT_DV_GSCV | EVT_PV_PSCV):
                f_pid = evt >> EVT_PID_PSCID_SHIFT & EVT_PID_PSCID_MASK
                f_did = evt >> EVT_DID_GSCID_SHIFT & EVT_DID_GSCID_MASK
                if evt & EVT_DMASK:
                    # Mask the low bits up to and including the first 0 bit of DID_GSCID.
                    dmask = ~(f_did ^ (f_did + 1))
                else:
                    dmask = -1
                if evt & EVT_IDT:
                    if evt & EVT_DV_GSCV and not (gscv and (gscid ^ f_did) & dmask == 0):
                        continue
                    if evt & EVT_PV_PSCV and not (pscv and pscid == f_pid):
                        continue
                else:
                    if evt & EVT_DV_GSCV and (did ^ f_did) & dmask:
                        continue
                    # "If the transaction has a valid process_id, counter increments if
                    # process_id matches": a transaction without one does not count.
                    if evt & EVT_PV_PSCV and not (pv and pid == f_pid):
                        continue
            value = self.iohpmctr[n] + 1
            if value > self._ctr_mask:
                value = 0
                self._overflow(n)
            self.iohpmctr[n] = value

    def _overflow(self, n: int) -> None:
        """Counter ``n`` (0 = iohpmcycles) wrapped: set OF; pmip on its 0 -> 1 edge only."""
        if n == 0:
            if self.iohpmcycles & HPM_OF:
                return
            self.iohpmcycles |= HPM_OF
        else:
            if self.iohpmevt[n] & EVT_OF:
                return
            self.iohpmevt[n] |= EVT_OF
        self.iocountovf |= 1 << n
        self._raise(IPSR_PMIP)

    def cycles_until_wrap(self) -> int | None:
        """Cycles until ``iohpmcycles`` wraps from its current value, or ``None`` when that
        wrap could raise no interrupt: no HPM, counting inhibited (iocountinh.CY) or OF
        already 1 (riscv-iommu: "iohpmcycles": "If the OF bit is already one, then no
        interrupt request is generated")."""
        if not self._has_hpm or self.iocountinh & 1 or self.iohpmcycles & HPM_OF:
            return None
        mask = self._cyc_mask
        return mask - (self.iohpmcycles & mask) + 1

    def advance_cycles(self, n: int) -> None:
        """Advance ``iohpmcycles`` by ``n`` cycles unless inhibited (iocountinh.CY).

        riscv-iommu: "Performance-monitoring cycles counter (iohpmcycles)".
        """
        if not self._has_hpm or self.iocountinh & 1 or n <= 0:
            return
        mask = self._cyc_mask
        value = (self.iohpmcycles & mask) + n
        wrapped = value > mask
        self.iohpmcycles = self.iohpmcycles & HPM_OF | value & mask
        if wrapped:
            self._overflow(0)
