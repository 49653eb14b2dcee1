"""Fault causes, transaction types and fault records (riscv-iommu: "Fault/Event-Queue (FQ)").

Inside the hardware model a translation that must stop raises :class:`TranslationFault`;
the top level turns it into the spec's data (a :class:`FaultRecord` in the fault queue and a
response status). The exception never leaves :mod:`iommusim.hw`.
"""

from __future__ import annotations

from typing import Final, NamedTuple

# The encodings are the spec's tables in bits/; the hardware model names them through this
# module (``faults.DDT_INVALID``), beside the exception that carries one.
from iommusim.bits.riscv.causes import (
    ACCESS_FAULT,
    ALL_DISALLOWED,
    CAUSE_NAMES,
    DDT_CORRUPTION,
    DDT_INVALID,
    DDT_LOAD_FAULT,
    DDT_MISCONFIGURED,
    DTF_REPORTED,
    GUEST_PAGE_FAULT,
    INTERNAL_DATAPATH_ERROR,
    MRIF_ACCESS_FAULT,
    MRIF_CORRUPTION,
    MSI_PT_CORRUPTION,
    MSI_PTE_INVALID,
    MSI_PTE_LOAD_FAULT,
    MSI_PTE_MISCONFIGURED,
    MSI_WRITE_FAULT,
    PAGE_FAULT,
    PDT_CORRUPTION,
    PDT_INVALID,
    PDT_LOAD_FAULT,
    PDT_MISCONFIGURED,
    PT_CORRUPTION,
    TTYP_NAMES,
    TTYPE_DISALLOWED,
)
from iommusim.bits.riscv.queues import FQ_RECORD

__all__ = [
    "ACCESS_FAULT",
    "ALL_DISALLOWED",
    "CAUSE_NAMES",
    "DDT_CORRUPTION",
    "DDT_INVALID",
    "DDT_LOAD_FAULT",
    "DDT_MISCONFIGURED",
    "DTF_REPORTED",
    "GUEST_PAGE_FAULT",
    "INTERNAL_DATAPATH_ERROR",
    "MRIF_ACCESS_FAULT",
    "MRIF_CORRUPTION",
    "MSI_PTE_INVALID",
    "MSI_PTE_LOAD_FAULT",
    "MSI_PTE_MISCONFIGURED",
    "MSI_PT_CORRUPTION",
    "MSI_WRITE_FAULT",
    "PAGE_FAULT",
    "PDT_CORRUPTION",
    "PDT_INVALID",
    "PDT_LOAD_FAULT",
    "PDT_MISCONFIGURED",
    "PT_CORRUPTION",
    "TTYPE_DISALLOWED",
    "TTYP_NAMES",
    "FaultRecord",
    "TranslationFault",
]

# Access classes of a request: index into the per-class cause tuples.
ACC_READ: Final = 0
ACC_WRITE: Final = 1
ACC_EXEC: Final = 2

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
