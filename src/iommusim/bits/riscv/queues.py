"""RISC-V IOMMU in-memory queue formats (riscv-iommu: "In-memory queue interface"): commands,
fault-queue records and page-request records.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.fields import Access, layout

__all__ = [
    "CMD_ATS",
    "CMD_IODIR",
    "CMD_IOFENCE",
    "CMD_IOTINVAL",
    "FQ_RECORD",
    "PQ_RECORD",
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
