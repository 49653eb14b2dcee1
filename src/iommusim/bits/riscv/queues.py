"""RISC-V IOMMU in-memory queue formats (riscv-iommu: "In-memory queue interface"): commands,
fault-queue records and page-request records.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from iommusim.bits.fields import Access, layout
from iommusim.bits.riscv.causes import CAUSE_NAMES

__all__ = [
    "CMD_ATS",
    "CMD_IODIR",
    "CMD_IOFENCE",
    "CMD_IOTINVAL",
    "FQ_RECORD",
    "FUNC_ATS_INVAL",
    "FUNC_ATS_PRGR",
    "FUNC_IODIR_INVAL_DDT",
    "FUNC_IODIR_INVAL_PDT",
    "FUNC_IOFENCE_C",
    "FUNC_IOTINVAL_GVMA",
    "FUNC_IOTINVAL_VMA",
    "OP_ATS",
    "OP_IODIR",
    "OP_IOFENCE",
    "OP_IOTINVAL",
    "PQ_RECORD",
    "FaultRecord",
]

_C = Access.CUSTOM

# riscv-iommu: "Fault/Event-Queue (FQ)", fault-queue record (four doublewords).
FQ_RECORD: Final = layout(
    "fq.record",
    256,
    "Fault-queue record",
    ("cause", 0, 12),
    ("pid", 12, 20),
    ("pv", 32, 1),
    ("priv", 33, 1),
    ("ttyp", 34, 6),
    ("did", 40, 24),
    ("custom", 64, 32, _C),
    ("iotval", 128, 64),
    ("iotval2", 192, 64),
)

# riscv-iommu: "Page-Request-Queue (PQ)" record (two doublewords).
PQ_RECORD: Final = layout(
    "pq.record",
    128,
    "Page-request-queue record",
    ("pid", 12, 20),
    ("pv", 32, 1),
    ("priv", 33, 1),
    ("exec", 34, 1),
    ("did", 40, 24),
    ("payload", 64, 64),
)

# riscv-iommu: "IOMMU command opcodes" and their function codes (func3).
OP_IOTINVAL: Final = 1
OP_IOFENCE: Final = 2
OP_IODIR: Final = 3
OP_ATS: Final = 4
FUNC_IOTINVAL_VMA: Final = 0
FUNC_IOTINVAL_GVMA: Final = 1
FUNC_IOFENCE_C: Final = 0
FUNC_IODIR_INVAL_DDT: Final = 0
FUNC_IODIR_INVAL_PDT: Final = 1
FUNC_ATS_INVAL: Final = 0
FUNC_ATS_PRGR: Final = 1

# riscv-iommu: "Command-Queue (CQ)" command formats (two doublewords, 128 bits).
CMD_IOTINVAL: Final = layout(
    "cmd.iotinval",
    128,
    "IOMMU Page-Table cache invalidation commands",
    ("opcode", 0, 7),
    ("func3", 7, 3),
    ("av", 10, 1),
    ("pscid", 12, 20),
    ("pscv", 32, 1),
    ("gv", 33, 1),
    ("nl", 34, 1),
    ("gscid", 44, 16),
    ("s", 73, 1),
    ("addr", 74, 52),
)
CMD_IOFENCE: Final = layout(
    "cmd.iofence",
    128,
    "IOMMU Command-queue Fence commands",
    ("opcode", 0, 7),
    ("func3", 7, 3),
    ("av", 10, 1),
    ("wsi", 11, 1),
    ("pr", 12, 1),
    ("pw", 13, 1),
    ("data", 32, 32),
    ("addr", 64, 62),
)
CMD_IODIR: Final = layout(
    "cmd.iodir",
    128,
    "IOMMU directory cache invalidation commands",
    ("opcode", 0, 7),
    ("func3", 7, 3),
    ("pid", 12, 20),
    ("dv", 33, 1),
    ("did", 40, 24),
)
CMD_ATS: Final = layout(
    "cmd.ats",
    128,
    "IOMMU PCIe ATS commands",
    ("opcode", 0, 7),
    ("func3", 7, 3),
    ("pid", 12, 20),
    ("pv", 32, 1),
    ("dsv", 33, 1),
    ("rid", 40, 16),
    ("dseg", 56, 8),
    ("payload", 64, 64),
)


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

    @classmethod
    def decode(cls, raw: int) -> FaultRecord:
        """The record in the 256-bit value ``raw`` as the IOMMU wrote it."""
        f = FQ_RECORD.decode(raw)
        return cls(
            f["cause"],
            f["ttyp"],
            f["did"],
            bool(f["pv"]),
            f["pid"],
            bool(f["priv"]),
            f["iotval"],
            f["iotval2"],
        )
