"""The fault queue's producer side (riscv-iommu: "Fault/Event-Queue (FQ)").

The IOMMU appends :class:`~iommusim.hw.riscv.faults.FaultRecord` s at ``fqt`` while the queue
is on and free of errors: a full queue sets ``fqof`` and a faulting write ``fqmf``, and either
stops further records until software clears it (riscv-iommu: "Fault queue CSR (fqcsr)").
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import FQCSR_FQMF, FQCSR_FQOF, FQCSR_FQON
from iommusim.hw.riscv.queues import FULL, MEM_FAULT, produce
from iommusim.hw.riscv.regs import Registers
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["FQ_ENTRY_BYTES", "FaultQueue"]

#: Size of a fault-queue record (four doublewords).
FQ_ENTRY_BYTES: Final = 32


class FaultQueue:
    """Writes fault records into the FQ the registers describe."""

    __slots__ = ("mem", "regs")

    def __init__(self, mem: PhysicalMemory, regs: Registers) -> None:
        self.mem = mem
        self.regs = regs

    def report(self, record: FaultRecord) -> None:
        """Append ``record`` (riscv-iommu: "Fault/Event-Queue (FQ)"); raises fip if fie."""
        r = self.regs
        csr = r.fqcsr
        if not csr & FQCSR_FQON or csr & (FQCSR_FQMF | FQCSR_FQOF):
            return
        tail = produce(self.mem, r.fqb, r.fqh, r.fqt, record.encode(), FQ_ENTRY_BYTES, r.fctl & 1)
        if tail == FULL:
            r.fq_error(FQCSR_FQOF)
        elif tail == MEM_FAULT:
            r.fq_error(FQCSR_FQMF)
        else:
            r.fqt = tail
            r.fq_record_written()
