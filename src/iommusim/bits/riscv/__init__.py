"""RISC-V IOMMU spec tables, one module per kind: in-memory structures, page-table entries,
queue records and commands (and, with them, the register file)."""

from __future__ import annotations

from typing import Final

from iommusim.bits.fields import Layout
from iommusim.bits.riscv.pgtable import PTE, PTE32
from iommusim.bits.riscv.queues import (
    CMD_ATS,
    CMD_IODIR,
    CMD_IOFENCE,
    CMD_IOTINVAL,
    FQ_RECORD,
    PQ_RECORD,
)
from iommusim.bits.riscv.regs import REGISTERS
from iommusim.bits.riscv.structures import (
    DC_FSC,
    DC_IOHGATP,
    DC_MSIPTP,
    DC_TA,
    DC_TC,
    DDTE,
    MSI_ADDR_MASK,
    MSIPTE_BASIC,
    MSIPTE_MRIF,
    PC_FSC,
    PC_TA,
    PDTE,
)

__all__ = ["ALL_LAYOUTS"]

#: Every RISC-V layout, for the table-wide tests.
ALL_LAYOUTS: Final[tuple[Layout, ...]] = (
    DDTE,
    DC_TC,
    DC_IOHGATP,
    DC_TA,
    DC_FSC,
    DC_MSIPTP,
    MSI_ADDR_MASK,
    PDTE,
    PC_TA,
    PC_FSC,
    PTE,
    PTE32,
    MSIPTE_BASIC,
    MSIPTE_MRIF,
    FQ_RECORD,
    PQ_RECORD,
    CMD_IOTINVAL,
    CMD_IOFENCE,
    CMD_IODIR,
    CMD_ATS,
    *(r.layout for r in REGISTERS),
)
