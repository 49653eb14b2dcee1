"""RISC-V IOMMU fault causes and transaction types (riscv-iommu: "Fault/Event-Queue (FQ)":
"Fault record CAUSE field encodings" and "Fault record TTYP field encodings").

The values a fault record's CAUSE and TTYP fields carry (:data:`iommusim.bits.riscv.queues.
FQ_RECORD`); the first-stage and G-stage faults are the privileged spec's exception codes.
"""

from __future__ import annotations

from typing import Final

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
]

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
