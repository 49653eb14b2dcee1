"""Arm SMMUv3 queue formats: commands (IHI 0070 chapter 4), event records (IHI 0070 7.3) and PRI
queue entries (IHI 0070 chapter 8), with the command-error codes (IHI 0070 7.1).

Each command is a 16-byte little-endian entry whose bits 7:0 are its opcode (IHI 0070 4.1.1).
Commands that share a field share its position, so the tables are built from one set of field
tuples. Event records are 32 bytes; every event starts with its number, SSV, SubstreamID and
StreamID, and the fault-shaped events add the transaction's attributes and addresses.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from iommusim.bits.fields import Layout, layout

__all__ = [
    "CERROR_ABT",
    "CERROR_ATC_INV_SYNC",
    "CERROR_ILL",
    "CERROR_NAMES",
    "CERROR_NONE",
    "CFGI_ALL_RANGE",
    "CLASS_CD",
    "CLASS_IN",
    "CLASS_TT",
    "CMDQ_ENTRY_BYTES",
    "CMD_ATC_INV",
    "CMD_CFGI_ALL",
    "CMD_CFGI_CD",
    "CMD_CFGI_CD_ALL",
    "CMD_CFGI_STE",
    "CMD_CFGI_STE_RANGE",
    "CMD_CFGI_VMS_PIDM",
    "CMD_OPCODE_MASK",
    "CMD_PREFETCH_ADDR",
    "CMD_PREFETCH_CONFIG",
    "CMD_PRI_RESP",
    "CMD_RESUME",
    "CMD_STALL_TERM",
    "CMD_SYNC",
    "CMD_TLBI_EL2_ALL",
    "CMD_TLBI_EL2_ASID",
    "CMD_TLBI_EL2_VA",
    "CMD_TLBI_EL2_VAA",
    "CMD_TLBI_EL3_ALL",
    "CMD_TLBI_EL3_VA",
    "CMD_TLBI_NH_ALL",
    "CMD_TLBI_NH_ASID",
    "CMD_TLBI_NH_VA",
    "CMD_TLBI_NH_VAA",
    "CMD_TLBI_NSNH_ALL",
    "CMD_TLBI_S2_IPA",
    "CMD_TLBI_S12_VMALL",
    "COMMANDS",
    "COMMANDS_BY_OPCODE",
    "C_BAD_CD",
    "C_BAD_STE",
    "C_BAD_STREAMID",
    "C_BAD_SUBSTREAMID",
    "EVENTQ_ENTRY_BYTES",
    "EVENT_LAYOUTS",
    "EVENT_NAMES",
    "EVT_COMMON",
    "EVT_FAULT",
    "EVT_FETCH",
    "EVT_PAGE_REQUEST",
    "EVT_TYPE_MASK",
    "EVT_WALK_EABT",
    "E_PAGE_REQUEST",
    "F_ACCESS",
    "F_ADDR_SIZE",
    "F_BAD_ATS_TREQ",
    "F_CD_FETCH",
    "F_CFG_CONFLICT",
    "F_PERMISSION",
    "F_STE_FETCH",
    "F_STREAM_DISABLED",
    "F_TLB_CONFLICT",
    "F_TRANSLATION",
    "F_TRANSL_FORBIDDEN",
    "F_UUT",
    "F_VMS_FETCH",
    "F_WALK_EABT",
    "PAGE_HINT_FLAGS",
    "PRIQ_ENTRY",
    "PRIQ_ENTRY_BYTES",
    "PRI_RESP_DENY",
    "PRI_RESP_FAIL",
    "PRI_RESP_SUCCESS",
    "SYNC_CS_IRQ",
    "SYNC_CS_NONE",
    "SYNC_CS_SEV",
    "Command",
]

#: Entry sizes (IHI 0070 4.1.1, 7.3, 8.1).
CMDQ_ENTRY_BYTES: Final = 16
EVENTQ_ENTRY_BYTES: Final = 32
PRIQ_ENTRY_BYTES: Final = 16

_Spec = tuple[str, int, int]

# -- command fields shared between opcodes (IHI 0070 4.2-4.7) ------------------------------------

_OPCODE: Final[_Spec] = ("opcode", 0, 8)
_SSEC: Final[_Spec] = ("ssec", 10, 1)
_SSV: Final[_Spec] = ("ssv", 11, 1)
_SSID: Final[_Spec] = ("substreamid", 12, 20)
_SID: Final[_Spec] = ("streamid", 32, 32)
_VMID: Final[_Spec] = ("vmid", 32, 16)
_ASID: Final[_Spec] = ("asid", 48, 16)
_LEAF: Final[_Spec] = ("leaf", 64, 1)
# Range invalidation (IHI 0070 4.4): NUM and SCALE give (NUM + 1) * 2^SCALE granules from
# the address; TG = 0 means a single-address invalidation, TTL hints the leaf level.
_NUM: Final[_Spec] = ("num", 12, 5)
_SCALE: Final[_Spec] = ("scale", 20, 5)
_TTL: Final[_Spec] = ("ttl", 72, 2)
_TG: Final[_Spec] = ("tg", 74, 2)
_VA: Final[_Spec] = ("address", 76, 52)  # Address[63:12]
_IPA: Final[_Spec] = ("address", 76, 40)  # Address[51:12]


class Command(NamedTuple):
    """One command of IHI 0070 4.1.1: its name, opcode and 128-bit layout."""

    name: str
    opcode: int
    layout: Layout


def _cmd(name: str, opcode: int, spec: str, *fields: _Spec) -> Command:
    return Command(name, opcode, layout(name.lower(), 128, spec, _OPCODE, *fields))


_RANGE_VA: Final = (_NUM, _SCALE, _LEAF, _TTL, _TG, _VA)

# IHI 0070 4.2 Prefetch
CMD_PREFETCH_CONFIG: Final = _cmd(
    "CMD_PREFETCH_CONFIG", 0x01, "IHI 0070 4.2 CMD_PREFETCH_CONFIG", _SSEC, _SSV, _SSID, _SID
)
CMD_PREFETCH_ADDR: Final = _cmd(
    "CMD_PREFETCH_ADDR",
    0x02,
    "IHI 0070 4.2 CMD_PREFETCH_ADDR",
    _SSEC,
    _SSV,
    _SSID,
    _SID,
    ("size", 64, 5),
    _VA,
)
# IHI 0070 4.3 Configuration structure invalidation
CMD_CFGI_STE: Final = _cmd("CMD_CFGI_STE", 0x03, "IHI 0070 4.3 CMD_CFGI_STE", _SSEC, _SID, _LEAF)
CMD_CFGI_STE_RANGE: Final = _cmd(
    "CMD_CFGI_STE_RANGE",
    0x04,
    "IHI 0070 4.3 CMD_CFGI_STE_RANGE",
    _SSEC,
    _SID,
    ("range", 64, 5),
)
#: CMD_CFGI_ALL is CMD_CFGI_STE_RANGE with Range = 31 (IHI 0070 4.1.1, 4.3): same opcode, same
#: layout -- not a command of its own (0x07 is CMD_CFGI_VMS_PIDM).
CMD_CFGI_ALL: Final = CMD_CFGI_STE_RANGE
CFGI_ALL_RANGE: Final = 31
CMD_CFGI_CD: Final = _cmd(
    "CMD_CFGI_CD", 0x05, "IHI 0070 4.3 CMD_CFGI_CD", _SSEC, _SSID, _SID, _LEAF
)
CMD_CFGI_CD_ALL: Final = _cmd("CMD_CFGI_CD_ALL", 0x06, "IHI 0070 4.3 CMD_CFGI_CD_ALL", _SSEC, _SID)
CMD_CFGI_VMS_PIDM: Final = _cmd(
    "CMD_CFGI_VMS_PIDM", 0x07, "IHI 0070 4.3 CMD_CFGI_VMS_PIDM", _SSEC, _VMID
)
# IHI 0070 4.4 TLB invalidation
CMD_TLBI_NH_ALL: Final = _cmd("CMD_TLBI_NH_ALL", 0x10, "IHI 0070 4.4 CMD_TLBI_NH_ALL", _VMID)
CMD_TLBI_NH_ASID: Final = _cmd(
    "CMD_TLBI_NH_ASID", 0x11, "IHI 0070 4.4 CMD_TLBI_NH_ASID", _VMID, _ASID
)
CMD_TLBI_NH_VA: Final = _cmd(
    "CMD_TLBI_NH_VA", 0x12, "IHI 0070 4.4 CMD_TLBI_NH_VA", _VMID, _ASID, *_RANGE_VA
)
CMD_TLBI_NH_VAA: Final = _cmd(
    "CMD_TLBI_NH_VAA", 0x13, "IHI 0070 4.4 CMD_TLBI_NH_VAA", _VMID, *_RANGE_VA
)
CMD_TLBI_EL3_ALL: Final = _cmd("CMD_TLBI_EL3_ALL", 0x18, "IHI 0070 4.4 CMD_TLBI_EL3_ALL")
CMD_TLBI_EL3_VA: Final = _cmd("CMD_TLBI_EL3_VA", 0x1A, "IHI 0070 4.4 CMD_TLBI_EL3_VA", *_RANGE_VA)
CMD_TLBI_EL2_ALL: Final = _cmd("CMD_TLBI_EL2_ALL", 0x20, "IHI 0070 4.4 CMD_TLBI_EL2_ALL")
CMD_TLBI_EL2_ASID: Final = _cmd("CMD_TLBI_EL2_ASID", 0x21, "IHI 0070 4.4 CMD_TLBI_EL2_ASID", _ASID)
CMD_TLBI_EL2_VA: Final = _cmd(
    "CMD_TLBI_EL2_VA", 0x22, "IHI 0070 4.4 CMD_TLBI_EL2_VA", _ASID, *_RANGE_VA
)
CMD_TLBI_EL2_VAA: Final = _cmd(
    "CMD_TLBI_EL2_VAA", 0x23, "IHI 0070 4.4 CMD_TLBI_EL2_VAA", *_RANGE_VA
)
CMD_TLBI_S12_VMALL: Final = _cmd(
    "CMD_TLBI_S12_VMALL", 0x28, "IHI 0070 4.4 CMD_TLBI_S12_VMALL", _VMID
)
CMD_TLBI_S2_IPA: Final = _cmd(
    "CMD_TLBI_S2_IPA",
    0x2A,
    "IHI 0070 4.4 CMD_TLBI_S2_IPA",
    _NUM,
    _SCALE,
    _VMID,
    _LEAF,
    _TTL,
    _TG,
    _IPA,
)
CMD_TLBI_NSNH_ALL: Final = _cmd("CMD_TLBI_NSNH_ALL", 0x30, "IHI 0070 4.4 CMD_TLBI_NSNH_ALL")
# IHI 0070 4.5 ATS and PRI
CMD_ATC_INV: Final = _cmd(
    "CMD_ATC_INV",
    0x40,
    "IHI 0070 4.5 CMD_ATC_INV",
    ("global", 9, 1),
    _SSV,
    _SSID,
    _SID,
    ("size", 64, 6),
    _VA,
)
CMD_PRI_RESP: Final = _cmd(
    "CMD_PRI_RESP",
    0x41,
    "IHI 0070 4.5 CMD_PRI_RESP",
    _SSV,
    _SSID,
    _SID,
    ("prgi", 64, 9),
    ("resp", 76, 2),
)
# IHI 0070 4.6 Fault response and synchronization
CMD_RESUME: Final = _cmd(
    "CMD_RESUME",
    0x44,
    "IHI 0070 4.6 CMD_RESUME",
    _SSEC,
    ("ac", 12, 1),  # retry the stalled transaction
    ("ab", 13, 1),  # abort it (with Ac = 0; both 0 terminates)
    _SID,
    ("stag", 64, 16),
)
CMD_STALL_TERM: Final = _cmd("CMD_STALL_TERM", 0x45, "IHI 0070 4.6 CMD_STALL_TERM", _SSEC, _SID)
CMD_SYNC: Final = _cmd(
    "CMD_SYNC",
    0x46,
    "IHI 0070 4.6 CMD_SYNC",
    ("cs", 12, 2),
    ("msh", 22, 2),
    ("msiattr", 24, 4),
    ("msidata", 32, 32),
    ("msiaddress", 66, 50),  # MSIAddress[51:2]
)

#: Every command, in opcode order (IHI 0070 4.1.1).
COMMANDS: Final[tuple[Command, ...]] = (
    CMD_PREFETCH_CONFIG,
    CMD_PREFETCH_ADDR,
    CMD_CFGI_STE,
    CMD_CFGI_STE_RANGE,
    CMD_CFGI_CD,
    CMD_CFGI_CD_ALL,
    CMD_CFGI_VMS_PIDM,
    CMD_TLBI_NH_ALL,
    CMD_TLBI_NH_ASID,
    CMD_TLBI_NH_VA,
    CMD_TLBI_NH_VAA,
    CMD_TLBI_EL3_ALL,
    CMD_TLBI_EL3_VA,
    CMD_TLBI_EL2_ALL,
    CMD_TLBI_EL2_ASID,
    CMD_TLBI_EL2_VA,
    CMD_TLBI_EL2_VAA,
    CMD_TLBI_S12_VMALL,
    CMD_TLBI_S2_IPA,
    CMD_TLBI_NSNH_ALL,
    CMD_ATC_INV,
    CMD_PRI_RESP,
    CMD_RESUME,
    CMD_STALL_TERM,
    CMD_SYNC,
)
COMMANDS_BY_OPCODE: Final = {c.opcode: c for c in COMMANDS}
CMD_OPCODE_MASK: Final = CMD_SYNC.layout.mask("opcode")

#: CMD_SYNC.CS (IHI 0070 4.6): completion signal.
SYNC_CS_NONE: Final = 0b00
SYNC_CS_IRQ: Final = 0b01
SYNC_CS_SEV: Final = 0b10
#: CMD_PRI_RESP.Resp (IHI 0070 4.5), the PCIe PRG response codes.
PRI_RESP_DENY: Final = 0b00
PRI_RESP_FAIL: Final = 0b01
PRI_RESP_SUCCESS: Final = 0b10

#: SMMU_CMDQ_CONS.ERR codes (IHI 0070 7.1 "Command queue errors").
CERROR_NONE: Final = 0x00
CERROR_ILL: Final = 0x01
CERROR_ABT: Final = 0x02
CERROR_ATC_INV_SYNC: Final = 0x03
CERROR_NAMES: Final = {
    CERROR_NONE: "CERROR_NONE",
    CERROR_ILL: "CERROR_ILL",
    CERROR_ABT: "CERROR_ABT",
    CERROR_ATC_INV_SYNC: "CERROR_ATC_INV_SYNC",
}

# -- event records (IHI 0070 7.3) ----------------------------------------------------------------

#: Event numbers (IHI 0070 7.3 "Event records").
F_UUT: Final = 0x01
C_BAD_STREAMID: Final = 0x02
F_STE_FETCH: Final = 0x03
C_BAD_STE: Final = 0x04
F_BAD_ATS_TREQ: Final = 0x05
F_STREAM_DISABLED: Final = 0x06
F_TRANSL_FORBIDDEN: Final = 0x07
C_BAD_SUBSTREAMID: Final = 0x08
F_CD_FETCH: Final = 0x09
C_BAD_CD: Final = 0x0A
F_WALK_EABT: Final = 0x0B
F_TRANSLATION: Final = 0x10
F_ADDR_SIZE: Final = 0x11
F_ACCESS: Final = 0x12
F_PERMISSION: Final = 0x13
F_TLB_CONFLICT: Final = 0x20
F_CFG_CONFLICT: Final = 0x21
E_PAGE_REQUEST: Final = 0x24
F_VMS_FETCH: Final = 0x25

EVENT_NAMES: Final = {
    F_UUT: "F_UUT",
    C_BAD_STREAMID: "C_BAD_STREAMID",
    F_STE_FETCH: "F_STE_FETCH",
    C_BAD_STE: "C_BAD_STE",
    F_BAD_ATS_TREQ: "F_BAD_ATS_TREQ",
    F_STREAM_DISABLED: "F_STREAM_DISABLED",
    F_TRANSL_FORBIDDEN: "F_TRANSL_FORBIDDEN",
    C_BAD_SUBSTREAMID: "C_BAD_SUBSTREAMID",
    F_CD_FETCH: "F_CD_FETCH",
    C_BAD_CD: "C_BAD_CD",
    F_WALK_EABT: "F_WALK_EABT",
    F_TRANSLATION: "F_TRANSLATION",
    F_ADDR_SIZE: "F_ADDR_SIZE",
    F_ACCESS: "F_ACCESS",
    F_PERMISSION: "F_PERMISSION",
    F_TLB_CONFLICT: "F_TLB_CONFLICT",
    F_CFG_CONFLICT: "F_CFG_CONFLICT",
    E_PAGE_REQUEST: "E_PAGE_REQUEST",
    F_VMS_FETCH: "F_VMS_FETCH",
}

_EVT_HEAD: Final[tuple[_Spec, ...]] = (
    ("type", 0, 8),
    ("ssv", 11, 1),
    ("substreamid", 12, 20),
    ("streamid", 32, 32),
)
# The transaction that faulted: its stall tag, whether it is stalled, its PnU/InD/RnW
# attributes, whether stage 2 faulted and the CLASS of the access (CD fetch, table walk, input).
_EVT_TXN: Final[tuple[_Spec, ...]] = (
    ("stag", 64, 16),
    ("stall", 95, 1),
    ("pnu", 97, 1),
    ("ind", 98, 1),
    ("rnw", 99, 1),
    ("s2", 103, 1),
    ("class", 104, 2),
)
_EVT_INPUT_ADDR: Final[_Spec] = ("inputaddr", 128, 64)
_EVT_FETCH_ADDR: Final[_Spec] = ("fetchaddr", 195, 49)  # FetchAddr[51:3]

# IHI 0070 7.3: the header every record starts with (and all that C_BAD_* records define).
EVT_COMMON: Final = layout("evt.common", 256, "IHI 0070 7.3 Event records", *_EVT_HEAD)
# IHI 0070 7.3: F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION.
EVT_FAULT: Final = layout(
    "evt.fault",
    256,
    "IHI 0070 7.3 F_TRANSLATION / F_ADDR_SIZE / F_ACCESS / F_PERMISSION",
    *_EVT_HEAD,
    *_EVT_TXN,
    ("ttrnw", 108, 1),
    _EVT_INPUT_ADDR,
    ("ipa", 204, 40),  # IPA[51:12], valid when S2 = 1
)
# IHI 0070 7.3: F_WALK_EABT -- the transaction, its address and the descriptor fetch address.
EVT_WALK_EABT: Final = layout(
    "evt.walk_eabt",
    256,
    "IHI 0070 7.3 F_WALK_EABT",
    *_EVT_HEAD,
    *_EVT_TXN,
    _EVT_INPUT_ADDR,
    _EVT_FETCH_ADDR,
)
# IHI 0070 7.3: F_STE_FETCH, F_CD_FETCH, F_VMS_FETCH -- the structure fetch that aborted.
EVT_FETCH: Final = layout(
    "evt.fetch",
    256,
    "IHI 0070 7.3 F_STE_FETCH / F_CD_FETCH / F_VMS_FETCH",
    *_EVT_HEAD,
    _EVT_FETCH_ADDR,
)

# IHI 0070 7.3.19: E_PAGE_REQUEST -- a client's speculative page request hint: the pages
# (InputAddr[63:12], Span x 4 KiB) and the accesses it expects, privileged and unprivileged.
EVT_PAGE_REQUEST: Final = layout(
    "evt.page_request",
    256,
    "IHI 0070 7.3.19 E_PAGE_REQUEST",
    *_EVT_HEAD,
    ("ux", 97, 1),
    ("uw", 98, 1),
    ("ur", 99, 1),
    ("px", 101, 1),
    ("pw", 102, 1),
    ("pr", 103, 1),
    ("span", 108, 8),
    ("inputaddr_pn", 140, 52),  # InputAddr[63:12]
)

#: E_PAGE_REQUEST's access flags, privileged then unprivileged read / write / execute.
PAGE_HINT_FLAGS: Final = ("pr", "pw", "px", "ur", "uw", "ux")

#: The layout of each event number whose record this package describes beyond the header.
EVENT_LAYOUTS: Final = {
    F_STE_FETCH: EVT_FETCH,
    F_CD_FETCH: EVT_FETCH,
    F_VMS_FETCH: EVT_FETCH,
    F_WALK_EABT: EVT_WALK_EABT,
    F_TRANSLATION: EVT_FAULT,
    F_ADDR_SIZE: EVT_FAULT,
    F_ACCESS: EVT_FAULT,
    F_PERMISSION: EVT_FAULT,
    E_PAGE_REQUEST: EVT_PAGE_REQUEST,
}
EVT_TYPE_MASK: Final = EVT_COMMON.mask("type")

#: Event CLASS (IHI 0070 7.3): what the faulting access was.
CLASS_CD: Final = 0b00
CLASS_TT: Final = 0b01
CLASS_IN: Final = 0b10

# -- PRI queue (IHI 0070 8.1) --------------------------------------------------------------------

# IHI 0070 8.1 "PRI queue entry format": one PCIe page request.
PRIQ_ENTRY: Final = layout(
    "priq.entry",
    128,
    "IHI 0070 8.1 PRI queue entry format",
    ("streamid", 0, 32),
    ("substreamid", 32, 20),
    ("priv", 58, 1),
    ("exec", 59, 1),
    ("read", 60, 1),
    ("write", 61, 1),
    ("last", 62, 1),
    ("ssv", 63, 1),
    ("prg_index", 64, 9),
    ("address", 76, 52),  # Page address[63:12]
)
