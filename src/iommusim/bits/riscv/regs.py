"""The RISC-V IOMMU register file as tables (riscv-iommu: "Memory-mapped register interface").

Each register is a :class:`Register`: its offset in the 4 KiB page, its size, the capability
that makes an optional register exist, and a :class:`Layout` whose fields carry the spec's
access attribute (RO, RW, RW1C, RW1S, WARL; bits in no field are WPRI and read 0). The
register file in :mod:`iommusim.hw.riscv.regs` builds its dispatch table, write masks and
clear-on-write behaviour from these tables, and binds a legaliser to every WARL field; the
``Final`` offsets and masks below are derived from the same tables for code that works on
plain ints (the core, the driver, the explainers, the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iommusim.bits.fields import Access, Layout, layout

__all__ = [
    "CAPABILITIES",
    "CQB",
    "CQCSR",
    "CQCSR_BUSY",
    "CQCSR_CIE",
    "CQCSR_CMD_ILL",
    "CQCSR_CMD_TO",
    "CQCSR_CQEN",
    "CQCSR_CQMF",
    "CQCSR_CQON",
    "CQCSR_ERRORS",
    "CQCSR_FENCE_W_IP",
    "CQH",
    "CQT",
    "DDTP",
    "DDTP_BUSY",
    "DDTP_MODE_MASK",
    "DDTP_PPN_SHIFT",
    "EVENTS_WITH_IDT1",
    "FCTL",
    "FCTL_BE",
    "FCTL_GXL",
    "FCTL_WSI",
    "FQB",
    "FQCSR",
    "FQCSR_BUSY",
    "FQCSR_ERRORS",
    "FQCSR_FIE",
    "FQCSR_FQEN",
    "FQCSR_FQMF",
    "FQCSR_FQOF",
    "FQCSR_FQON",
    "FQH",
    "FQT",
    "HPM_OF",
    "ICVEC",
    "ICVEC_CIV_SHIFT",
    "ICVEC_FIV_SHIFT",
    "ICVEC_PIV_SHIFT",
    "ICVEC_PMIV_SHIFT",
    "IGS_BOTH",
    "IGS_MSI",
    "IGS_WSI",
    "IOCOUNTINH",
    "IOCOUNTOVF",
    "IOHPMCTR",
    "IOHPMCYCLES",
    "IOHPMEVT",
    "IOMMU_QOSID",
    "IPSR",
    "IPSR_CIP",
    "IPSR_FIP",
    "IPSR_MASK",
    "IPSR_PIP",
    "IPSR_PMIP",
    "M32",
    "M64",
    "MODE_1LVL",
    "MODE_2LVL",
    "MODE_3LVL",
    "MODE_BARE",
    "MODE_NAMES",
    "MODE_OFF",
    "MSI_ADDR",
    "MSI_DATA",
    "MSI_TABLE_MAX",
    "MSI_VEC_CTL",
    "MSI_VEC_CTL_M",
    "OFF_CAPABILITIES",
    "OFF_CQB",
    "OFF_CQCSR",
    "OFF_CQH",
    "OFF_CQT",
    "OFF_DDTP",
    "OFF_FCTL",
    "OFF_FQB",
    "OFF_FQCSR",
    "OFF_FQH",
    "OFF_FQT",
    "OFF_ICVEC",
    "OFF_IOCOUNTINH",
    "OFF_IOCOUNTOVF",
    "OFF_IOHPMCTR",
    "OFF_IOHPMCYCLES",
    "OFF_IOHPMEVT",
    "OFF_IOMMU_QOSID",
    "OFF_IPSR",
    "OFF_MSI_CFG_TBL",
    "OFF_PQB",
    "OFF_PQCSR",
    "OFF_PQH",
    "OFF_PQT",
    "OFF_TR_REQ_CTL",
    "OFF_TR_REQ_IOVA",
    "OFF_TR_RESPONSE",
    "PQB",
    "PQCSR",
    "PQCSR_BUSY",
    "PQCSR_ERRORS",
    "PQCSR_PIE",
    "PQCSR_PQEN",
    "PQCSR_PQMF",
    "PQCSR_PQOF",
    "PQCSR_PQON",
    "PQH",
    "PQT",
    "QB_LOG2SZM1_MASK",
    "QB_PPN_SHIFT",
    "REGISTERS",
    "REGISTERS_SIZE",
    "TR_REQ_CTL",
    "TR_REQ_CTL_GO",
    "TR_REQ_IOVA",
    "TR_RESPONSE",
    "WALK_EVENTS",
    "Register",
    "cap",
    "queue_index_mask",
]

_RO = Access.RO
_RW = Access.RW
_W1C = Access.RW1C
_W1S = Access.RW1S
_WARL = Access.WARL


@dataclass(frozen=True, slots=True)
class Register:
    """One register, or an array of ``count`` alike registers ``stride`` bytes apart.

    ``requires`` names the ``capabilities`` field that must be non-zero for the register to
    exist (riscv-iommu: "Register layout", the "Compatibility" column: an optional register
    that is not implemented reads 0 and ignores writes). ``first`` is the index of the first
    array element (``iohpmctr1-31`` start at 1).
    """

    name: str
    offset: int
    layout: Layout
    requires: str = ""
    count: int = 1
    stride: int = 0
    first: int = 0

    @property
    def size(self) -> int:
        """Size in bytes (4 or 8)."""
        return self.layout.width // 8


#: riscv-iommu: "Memory-mapped register interface": one 4 KiB page.
REGISTERS_SIZE: Final = 4096
M32: Final = 0xFFFF_FFFF
M64: Final = 0xFFFF_FFFF_FFFF_FFFF

# riscv-iommu: "IOMMU capabilities (capabilities)" -- read-only, every field RO.
CAPABILITIES: Final = layout(
    "capabilities",
    64,
    "IOMMU capabilities (capabilities)",
    ("version", 0, 8, _RO),
    ("sv32", 8, 1, _RO),
    ("sv39", 9, 1, _RO),
    ("sv48", 10, 1, _RO),
    ("sv57", 11, 1, _RO),
    ("svrsw60t59b", 14, 1, _RO),
    ("svpbmt", 15, 1, _RO),
    ("sv32x4", 16, 1, _RO),
    ("sv39x4", 17, 1, _RO),
    ("sv48x4", 18, 1, _RO),
    ("sv57x4", 19, 1, _RO),
    ("amo_mrif", 21, 1, _RO),
    ("msi_flat", 22, 1, _RO),
    ("msi_mrif", 23, 1, _RO),
    ("amo_hwad", 24, 1, _RO),
    ("ats", 25, 1, _RO),
    ("t2gpa", 26, 1, _RO),
    ("end", 27, 1, _RO),
    ("igs", 28, 2, _RO),
    ("hpm", 30, 1, _RO),
    ("dbg", 31, 1, _RO),
    ("pas", 32, 6, _RO),
    ("pd8", 38, 1, _RO),
    ("pd17", 39, 1, _RO),
    ("pd20", 40, 1, _RO),
    ("qosid", 41, 1, _RO),
    ("nl", 42, 1, _RO),
    ("s", 43, 1, _RO),
    ("custom", 56, 8, Access.CUSTOM),
)


class cap:
    """Bit positions of the ``capabilities`` fields (riscv-iommu: "IOMMU capabilities"),
    derived from :data:`CAPABILITIES`; ``IGS`` and ``PAS`` are the low bits of wider fields."""

    VERSION: Final = CAPABILITIES["version"].lsb
    SV32: Final = CAPABILITIES["sv32"].lsb
    SV39: Final = CAPABILITIES["sv39"].lsb
    SV48: Final = CAPABILITIES["sv48"].lsb
    SV57: Final = CAPABILITIES["sv57"].lsb
    SVRSW60T59B: Final = CAPABILITIES["svrsw60t59b"].lsb
    SVPBMT: Final = CAPABILITIES["svpbmt"].lsb
    SV32X4: Final = CAPABILITIES["sv32x4"].lsb
    SV39X4: Final = CAPABILITIES["sv39x4"].lsb
    SV48X4: Final = CAPABILITIES["sv48x4"].lsb
    SV57X4: Final = CAPABILITIES["sv57x4"].lsb
    AMO_MRIF: Final = CAPABILITIES["amo_mrif"].lsb
    MSI_FLAT: Final = CAPABILITIES["msi_flat"].lsb
    MSI_MRIF: Final = CAPABILITIES["msi_mrif"].lsb
    AMO_HWAD: Final = CAPABILITIES["amo_hwad"].lsb
    ATS: Final = CAPABILITIES["ats"].lsb
    T2GPA: Final = CAPABILITIES["t2gpa"].lsb
    END: Final = CAPABILITIES["end"].lsb
    IGS: Final = CAPABILITIES["igs"].lsb
    HPM: Final = CAPABILITIES["hpm"].lsb
    DBG: Final = CAPABILITIES["dbg"].lsb
    PAS: Final = CAPABILITIES["pas"].lsb
    PD8: Final = CAPABILITIES["pd8"].lsb
    PD17: Final = CAPABILITIES["pd17"].lsb
    PD20: Final = CAPABILITIES["pd20"].lsb
    QOSID: Final = CAPABILITIES["qosid"].lsb
    NL: Final = CAPABILITIES["nl"].lsb
    S: Final = CAPABILITIES["s"].lsb


# capabilities.IGS encodings (riscv-iommu: "IOMMU capabilities"; 3 is reserved).
IGS_MSI: Final = 0
IGS_WSI: Final = 1
IGS_BOTH: Final = 2

# riscv-iommu: "Features-control register (fctl)"
FCTL: Final = layout(
    "fctl",
    32,
    "Features-control register (fctl)",
    ("be", 0, 1, _WARL),
    ("wsi", 1, 1, _WARL),
    ("gxl", 2, 1, _WARL),
)

# riscv-iommu: "Device-directory-table pointer (ddtp)"
DDTP: Final = layout(
    "ddtp",
    64,
    "Device-directory-table pointer (ddtp)",
    ("iommu_mode", 0, 4, _WARL),
    ("busy", 4, 1, _RO),
    ("ppn", 10, 44, _WARL),
)

# ddtp.iommu_mode encodings (riscv-iommu: "Device-directory-table pointer (ddtp)").
MODE_OFF: Final = 0
MODE_BARE: Final = 1
MODE_1LVL: Final = 2
MODE_2LVL: Final = 3
MODE_3LVL: Final = 4
MODE_NAMES: Final = {
    "off": MODE_OFF,
    "bare": MODE_BARE,
    "1lvl": MODE_1LVL,
    "2lvl": MODE_2LVL,
    "3lvl": MODE_3LVL,
}


def _queue_base(name: str, spec: str) -> Layout:
    return layout(name, 64, spec, ("log2szm1", 0, 5, _WARL), ("ppn", 10, 44, _WARL))


def _queue_index(name: str, spec: str, access: Access) -> Layout:
    return layout(name, 32, spec, ("index", 0, 32, access))


def _queue_csr(q: str, ie: str, errors: tuple[str, ...], spec: str) -> Layout:
    fields: list[tuple[str, int, int, Access]] = [(f"{q}en", 0, 1, _RW), (ie, 1, 1, _RW)]
    fields += [(e, 8 + i, 1, _W1C) for i, e in enumerate(errors)]
    fields += [(f"{q}on", 16, 1, _RO), ("busy", 17, 1, _RO), ("custom", 28, 4, Access.CUSTOM)]
    return layout(f"{q}csr", 32, spec, *fields)


# riscv-iommu: "Command-queue base (cqb)", "Fault queue base (fqb)", "Page-request-queue base".
CQB: Final = _queue_base("cqb", "Command-queue base (cqb)")
FQB: Final = _queue_base("fqb", "Fault queue base (fqb)")
PQB: Final = _queue_base("pqb", "Page-request-queue base (pqb)")
# The producer's index is RO; the consumer's is WARL (only LOG2SZ-1:0 are writable).
CQH: Final = _queue_index("cqh", "Command-queue head (cqh)", _RO)
CQT: Final = _queue_index("cqt", "Command-queue tail (cqt)", _WARL)
FQH: Final = _queue_index("fqh", "Fault queue head (fqh)", _WARL)
FQT: Final = _queue_index("fqt", "Fault queue tail (fqt)", _RO)
PQH: Final = _queue_index("pqh", "Page-request-queue head (pqh)", _WARL)
PQT: Final = _queue_index("pqt", "Page-request-queue tail (pqt)", _RO)

# riscv-iommu: "Command-queue CSR (cqcsr)", "Fault queue CSR (fqcsr)", "Page-request-queue CSR".
CQCSR: Final = _queue_csr(
    "cq", "cie", ("cqmf", "cmd_to", "cmd_ill", "fence_w_ip"), "Command-queue CSR (cqcsr)"
)
FQCSR: Final = _queue_csr("fq", "fie", ("fqmf", "fqof"), "Fault queue CSR (fqcsr)")
PQCSR: Final = _queue_csr("pq", "pie", ("pqmf", "pqof"), "Page-request-queue CSR (pqcsr)")

# riscv-iommu: "Interrupt pending status register (ipsr)"
IPSR: Final = layout(
    "ipsr",
    32,
    "Interrupt pending status register (ipsr)",
    ("cip", 0, 1, _W1C),
    ("fip", 1, 1, _W1C),
    ("pmip", 2, 1, _W1C),
    ("pip", 3, 1, _W1C),
    ("custom", 8, 8, Access.CUSTOM),
)

# riscv-iommu: "Performance-monitoring counter overflow status (iocountovf)" and
# "Performance-monitoring counter inhibits (iocountinh)".
IOCOUNTOVF: Final = layout("iocountovf", 32, "iocountovf", ("cy", 0, 1, _RO), ("hpm", 1, 31, _RO))
IOCOUNTINH: Final = layout("iocountinh", 32, "iocountinh", ("cy", 0, 1, _RW), ("hpm", 1, 31, _WARL))
# riscv-iommu: "Performance-monitoring cycles counter (iohpmcycles)"
IOHPMCYCLES: Final = layout(
    "iohpmcycles", 64, "iohpmcycles", ("counter", 0, 63, _WARL), ("of", 63, 1, _RW)
)
# riscv-iommu: "Performance-monitoring event counters (iohpmctr1-31)"
IOHPMCTR: Final = layout("iohpmctr", 64, "iohpmctr1-31", ("counter", 0, 64, _WARL))
# riscv-iommu: "Performance-monitoring event selectors (iohpmevt1-31)"
IOHPMEVT: Final = layout(
    "iohpmevt",
    64,
    "iohpmevt1-31",
    ("eventid", 0, 15, _WARL),
    ("dmask", 15, 1, _RW),
    ("pid_pscid", 16, 20, _RW),
    ("did_gscid", 36, 24, _RW),
    ("pv_pscv", 60, 1, _RW),
    ("dv_gscv", 61, 1, _RW),
    ("idt", 62, 1, _RW),
    ("of", 63, 1, _RW),
)

# riscv-iommu: "Translation-request IOVA (tr_req_iova)"
TR_REQ_IOVA: Final = layout("tr_req_iova", 64, "tr_req_iova", ("vpn", 12, 52, _WARL))
# riscv-iommu: "Translation-request control (tr_req_ctl)"
TR_REQ_CTL: Final = layout(
    "tr_req_ctl",
    64,
    "Translation-request control (tr_req_ctl)",
    ("go_busy", 0, 1, _W1S),
    ("priv", 1, 1, _WARL),
    ("exe", 2, 1, _WARL),
    ("nw", 3, 1, _WARL),
    ("pid", 12, 20, _WARL),
    ("pv", 32, 1, _WARL),
    ("custom", 36, 4, Access.CUSTOM),
    ("did", 40, 24, _WARL),
)
# riscv-iommu: "Translation-response (tr_response)"
TR_RESPONSE: Final = layout(
    "tr_response",
    64,
    "Translation-response (tr_response)",
    ("fault", 0, 1, _RO),
    ("pbmt", 7, 2, _RO),
    ("s", 9, 1, _RO),
    ("ppn", 10, 44, _RO),
    ("custom", 60, 4, Access.CUSTOM),
)
# riscv-iommu: "IOMMU QoS ID (iommu_qosid)"
IOMMU_QOSID: Final = layout(
    "iommu_qosid", 32, "IOMMU QoS ID (iommu_qosid)", ("rcid", 0, 12, _WARL), ("mcid", 16, 12, _WARL)
)
# riscv-iommu: "Interrupt-cause-to-vector register (icvec)"
ICVEC: Final = layout(
    "icvec",
    64,
    "Interrupt-cause-to-vector register (icvec)",
    ("civ", 0, 4, _WARL),
    ("fiv", 4, 4, _WARL),
    ("pmiv", 8, 4, _WARL),
    ("piv", 12, 4, _WARL),
    ("custom", 32, 32, Access.CUSTOM),
)
# riscv-iommu: "MSI configuration table (msi_cfg_tbl)": per entry an address, data and control.
MSI_ADDR: Final = layout("msi_addr", 64, "msi_cfg_tbl: message address", ("addr", 2, 54, _WARL))
MSI_DATA: Final = layout("msi_data", 32, "msi_cfg_tbl: message data", ("data", 0, 32, _WARL))
MSI_VEC_CTL: Final = layout("msi_vec_ctl", 32, "msi_cfg_tbl: vector control", ("m", 0, 1, _RW))
#: The table holds at most 16 entries (icvec's 4-bit vectors).
MSI_TABLE_MAX: Final = 16

#: riscv-iommu: "Register layout", in address order.
REGISTERS: Final[tuple[Register, ...]] = (
    Register("capabilities", 0, CAPABILITIES),
    Register("fctl", 8, FCTL),
    Register("ddtp", 16, DDTP),
    Register("cqb", 24, CQB),
    Register("cqh", 32, CQH),
    Register("cqt", 36, CQT),
    Register("fqb", 40, FQB),
    Register("fqh", 48, FQH),
    Register("fqt", 52, FQT),
    Register("pqb", 56, PQB, requires="ats"),
    Register("pqh", 64, PQH, requires="ats"),
    Register("pqt", 68, PQT, requires="ats"),
    Register("cqcsr", 72, CQCSR),
    Register("fqcsr", 76, FQCSR),
    Register("pqcsr", 80, PQCSR, requires="ats"),
    Register("ipsr", 84, IPSR),
    Register("iocountovf", 88, IOCOUNTOVF, requires="hpm"),
    Register("iocountinh", 92, IOCOUNTINH, requires="hpm"),
    Register("iohpmcycles", 96, IOHPMCYCLES, requires="hpm"),
    Register("iohpmctr", 104, IOHPMCTR, requires="hpm", count=31, stride=8, first=1),
    Register("iohpmevt", 352, IOHPMEVT, requires="hpm", count=31, stride=8, first=1),
    Register("tr_req_iova", 600, TR_REQ_IOVA, requires="dbg"),
    Register("tr_req_ctl", 608, TR_REQ_CTL, requires="dbg"),
    Register("tr_response", 616, TR_RESPONSE, requires="dbg"),
    Register("iommu_qosid", 624, IOMMU_QOSID, requires="qosid"),
    Register("icvec", 760, ICVEC),
    # The MSI table exists unless capabilities.IGS is WSI: a rule on a field's value, which
    # the register file applies itself.
    Register("msi_addr", 768, MSI_ADDR, count=MSI_TABLE_MAX, stride=16),
    Register("msi_data", 776, MSI_DATA, count=MSI_TABLE_MAX, stride=16),
    Register("msi_vec_ctl", 780, MSI_VEC_CTL, count=MSI_TABLE_MAX, stride=16),
)

_BY_NAME: Final = {r.name: r for r in REGISTERS}

# -- offsets and masks for plain-int code, derived from the tables ----------------------------

OFF_CAPABILITIES: Final = _BY_NAME["capabilities"].offset
OFF_FCTL: Final = _BY_NAME["fctl"].offset
OFF_DDTP: Final = _BY_NAME["ddtp"].offset
OFF_CQB: Final = _BY_NAME["cqb"].offset
OFF_CQH: Final = _BY_NAME["cqh"].offset
OFF_CQT: Final = _BY_NAME["cqt"].offset
OFF_FQB: Final = _BY_NAME["fqb"].offset
OFF_FQH: Final = _BY_NAME["fqh"].offset
OFF_FQT: Final = _BY_NAME["fqt"].offset
OFF_PQB: Final = _BY_NAME["pqb"].offset
OFF_PQH: Final = _BY_NAME["pqh"].offset
OFF_PQT: Final = _BY_NAME["pqt"].offset
OFF_CQCSR: Final = _BY_NAME["cqcsr"].offset
OFF_FQCSR: Final = _BY_NAME["fqcsr"].offset
OFF_PQCSR: Final = _BY_NAME["pqcsr"].offset
OFF_IPSR: Final = _BY_NAME["ipsr"].offset
OFF_IOCOUNTOVF: Final = _BY_NAME["iocountovf"].offset
OFF_IOCOUNTINH: Final = _BY_NAME["iocountinh"].offset
OFF_IOHPMCYCLES: Final = _BY_NAME["iohpmcycles"].offset
OFF_IOHPMCTR: Final = _BY_NAME["iohpmctr"].offset  # iohpmctrN at OFF_IOHPMCTR + 8 * (N - 1)
OFF_IOHPMEVT: Final = _BY_NAME["iohpmevt"].offset  # iohpmevtN at OFF_IOHPMEVT + 8 * (N - 1)
OFF_TR_REQ_IOVA: Final = _BY_NAME["tr_req_iova"].offset
OFF_TR_REQ_CTL: Final = _BY_NAME["tr_req_ctl"].offset
OFF_TR_RESPONSE: Final = _BY_NAME["tr_response"].offset
OFF_IOMMU_QOSID: Final = _BY_NAME["iommu_qosid"].offset
OFF_ICVEC: Final = _BY_NAME["icvec"].offset
OFF_MSI_CFG_TBL: Final = _BY_NAME["msi_addr"].offset  # entry x: addr +16x, data +8, vec_ctl +12

FCTL_BE: Final = FCTL.mask("be")
FCTL_WSI: Final = FCTL.mask("wsi")
FCTL_GXL: Final = FCTL.mask("gxl")

DDTP_MODE_MASK: Final = DDTP.mask("iommu_mode")
DDTP_BUSY: Final = DDTP.mask("busy")
DDTP_PPN_SHIFT: Final = DDTP["ppn"].lsb

# The three queue bases share one layout.
QB_LOG2SZM1_MASK: Final = CQB.mask("log2szm1")
QB_PPN_SHIFT: Final = CQB["ppn"].lsb


def queue_index_mask(qb: int) -> int:
    """The mask of a head or tail index of the queue whose base register holds ``qb``: bits
    LOG2SZ-1:0 (riscv-iommu: "cqb": "the number of entries ... is 2^(LOG2SZ-1+1)")."""
    return (1 << ((qb & QB_LOG2SZM1_MASK) + 1)) - 1


CQCSR_CQEN: Final = CQCSR.mask("cqen")
CQCSR_CIE: Final = CQCSR.mask("cie")
CQCSR_CQMF: Final = CQCSR.mask("cqmf")
CQCSR_CMD_TO: Final = CQCSR.mask("cmd_to")
CQCSR_CMD_ILL: Final = CQCSR.mask("cmd_ill")
CQCSR_FENCE_W_IP: Final = CQCSR.mask("fence_w_ip")
CQCSR_CQON: Final = CQCSR.mask("cqon")
CQCSR_BUSY: Final = CQCSR.mask("busy")
CQCSR_ERRORS: Final = CQCSR.access_mask(Access.RW1C)

FQCSR_FQEN: Final = FQCSR.mask("fqen")
FQCSR_FIE: Final = FQCSR.mask("fie")
FQCSR_FQMF: Final = FQCSR.mask("fqmf")
FQCSR_FQOF: Final = FQCSR.mask("fqof")
FQCSR_FQON: Final = FQCSR.mask("fqon")
FQCSR_BUSY: Final = FQCSR.mask("busy")
FQCSR_ERRORS: Final = FQCSR.access_mask(Access.RW1C)

PQCSR_PQEN: Final = PQCSR.mask("pqen")
PQCSR_PIE: Final = PQCSR.mask("pie")
PQCSR_PQMF: Final = PQCSR.mask("pqmf")
PQCSR_PQOF: Final = PQCSR.mask("pqof")
PQCSR_PQON: Final = PQCSR.mask("pqon")
PQCSR_BUSY: Final = PQCSR.mask("busy")
PQCSR_ERRORS: Final = PQCSR.access_mask(Access.RW1C)

IPSR_CIP: Final = IPSR.mask("cip")
IPSR_FIP: Final = IPSR.mask("fip")
IPSR_PMIP: Final = IPSR.mask("pmip")
IPSR_PIP: Final = IPSR.mask("pip")
IPSR_MASK: Final = IPSR.access_mask(Access.RW1C)

HPM_OF: Final = IOHPMCYCLES.mask("of")

TR_REQ_CTL_GO: Final = TR_REQ_CTL.mask("go_busy")

ICVEC_CIV_SHIFT: Final = ICVEC["civ"].lsb
ICVEC_FIV_SHIFT: Final = ICVEC["fiv"].lsb
ICVEC_PMIV_SHIFT: Final = ICVEC["pmiv"].lsb
ICVEC_PIV_SHIFT: Final = ICVEC["piv"].lsb

MSI_VEC_CTL_M: Final = MSI_VEC_CTL.mask("m")

#: Standard events that support IDT = 1 (riscv-iommu: "Standard Events list"): TLB miss,
#: first-stage and second-stage page-table walks. All others support IDT = 0 only.
EVENTS_WITH_IDT1: Final = frozenset({4, 7, 8})
#: Standard events counted during table walks: device-directory (5), process-directory (6),
#: first-stage (7) and second-stage (8) page-table walks.
WALK_EVENTS: Final = frozenset({5, 6, 7, 8})
