"""Fault causes, transaction types and fault records (riscv-iommu: "Fault/Event-Queue (FQ)").

Inside the hardware model a translation that must stop raises :class:`TranslationFault`;
the top level turns it into the spec's data (a :class:`FaultRecord` in the fault queue and a
response status). The exception never leaves :mod:`iommusim.hw`.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from iommusim.bits.riscv.queues import FQ_RECORD

__all__ = ["CAUSE_NAMES", "DTF_REPORTED", "TTYP_NAMES", "FaultRecord", "TranslationFault"]

# Access classes of a request: index into the per-class cause tuples.
ACC_READ: Final = 0
ACC_WRITE: Final = 1
ACC_EXEC: Final = 2

# Privileged-spec exception codes by access class (read, write, exec).
ACCESS_FAULT: Final = (5, 7, 1)
PAGE_FAULT: Final = (13, 15, 12)
GUEST_PAGE_FAULT: Final = (21, 23, 20)

ALL_DISALLOWED: Final = 256
DDT_LOAD_FAULT: Final = 257
DDT_INVALID: Final = 258
DDT_MISCONFIGURED: Final = 259
TTYPE_DISALLOWED: Final = 260
MSI_PTE_LOAD_FAULT: Final = 261
MSI_PTE_INVALID: Final = 262
MSI_PTE_MISCONFIGURED: Final = 263
MRIF_ACCESS_FAULT: Final = 264
PDT_LOAD_FAULT: Final = 265
PDT_INVALID: Final = 266
PDT_MISCONFIGURED: Final = 267
DDT_CORRUPTION: Final = 268
PDT_CORRUPTION: Final = 269
MSI_PT_CORRUPTION: Final = 270
MRIF_CORRUPTION: Final = 271
INTERNAL_DATAPATH_ERROR: Final = 272
MSI_WRITE_FAULT: Final = 273
PT_CORRUPTION: Final = 274

#: riscv-iommu: "Fault record CAUSE field encodings".
CAUSE_NAMES: Final[dict[int, str]] = {
    1: "Instruction access fault",
    4: "Read address misaligned",
    5: "Read access fault",
    6: "Write/AMO address misaligned",
    7: "Write/AMO access fault",
    12: "Instruction page fault",
    13: "Read page fault",
    15: "Write/AMO page fault",
    20: "Instruction guest page fault",
    21: "Read guest-page fault",
    23: "Write/AMO guest-page fault",
    256: "All inbound transactions disallowed",
    257: "DDT entry load access fault",
    258: "DDT entry not valid",
    259: "DDT entry misconfigured",
    260: "Transaction type disallowed",
    261: "MSI PTE load access fault",
    262: "MSI PTE not valid",
    263: "MSI PTE misconfigured",
    264: "MRIF access fault",
    265: "PDT entry load access fault",
    266: "PDT entry not valid",
    267: "PDT entry misconfigured",
    268: "DDT data corruption",
    269: "PDT data corruption",
    270: "MSI PT data corruption",
    271: "MSI MRIF data corruption",
    272: "Internal data path error",
    273: "IOMMU MSI write access fault",
    274: "First/second-stage PT data corruption",
}

#: Causes still reported when DC.tc.DTF = 1 (the "Reported if DTF is 1?" column).
DTF_REPORTED: Final = frozenset({256, 257, 258, 259, 268, 272, 273})

#: riscv-iommu: "Fault record TTYP field encodings".
TTYP_NAMES: Final[dict[int, str]] = {
    0: "none",
    1: "untranslated read for execute",
    2: "untranslated read",
    3: "untranslated write/AMO",
    5: "translated read for execute",
    6: "translated read",
    7: "translated write/AMO",
    8: "PCIe ATS translation request",
    9: "PCIe message request",
}

# riscv-iommu: "PCIe ATS translation request handling": cause categories.
# Data-corruption causes (268-271, 274) are in neither list of the spec; they are answered
# with CA like the other configuration/data errors, as the conformance expectations show.
ATS_CA_CAUSES: Final = frozenset({1, 5, 7, 261, 263, 265, 267, 268, 269, 270, 271, 274})
ATS_SUCCESS_CAUSES: Final = frozenset({12, 13, 15, 20, 21, 23, 266, 262})
#: riscv-iommu: "Reliability, Availability, and Serviceability": causes of a transaction
#: aborted by corrupted data or a data-path error, for which "a Completer Abort (CA) response
#: is appropriate" (others abort as Unsupported Request).
CORRUPTION_CAUSES: Final = frozenset({268, 269, 270, 271, 272, 274})


class TranslationFault(Exception):
    """Stops a translation with a fault cause (internal to the hardware model)."""

    __slots__ = ("cause", "iotval2")

    def __init__(self, cause: int, iotval2: int = 0) -> None:
        self.cause = cause
        self.iotval2 = iotval2


# (lsb, width mask) of each FQ record field, from the layout (riscv-iommu: "Fault/Event-Queue
# (FQ)", the fault-record diagram).
_FQ: Final = {f.name: (f.lsb, (1 << f.width) - 1) for f in FQ_RECORD.fields}


class FaultRecord(NamedTuple):
    """One fault-queue record (riscv-iommu: "Fault/Event-Queue (FQ)"): the CAUSE and TTYP
    codes, the device and process IDs of the transaction (PID and PRIV only valid with PV),
    ``iotval`` (the IOVA, or the address a memory fault was at) and ``iotval2``."""

    cause: int
    ttyp: int
    did: int
    pv: bool
    pid: int
    priv: bool
    iotval: int
    iotval2: int = 0

    @property
    def name(self) -> str:
        """The spec's name of the cause (riscv-iommu: "Fault record CAUSE field encodings")."""
        return CAUSE_NAMES.get(self.cause, f"cause {self.cause}")

    def encode(self) -> int:
        """The 256-bit record. Each field keeps its width (DID 24 bits, PID 20, ...), whatever
        the integers: a record never spills into its neighbours; PID and PRIV are 0 without
        PV."""
        pv = self.pv
        value = 0
        for name, v in (
            ("cause", self.cause),
            ("pid", self.pid if pv else 0),
            ("pv", int(pv)),
            ("priv", int(pv and self.priv)),
            ("ttyp", self.ttyp),
            ("did", self.did),
            ("iotval", self.iotval),
            ("iotval2", self.iotval2),
        ):
            lsb, mask = _FQ[name]
            value |= (v & mask) << lsb
        return value
