"""Ring arithmetic of the in-memory queues, written once for the CQ, the FQ and the PQ.

riscv-iommu: "In-memory queue interface": each queue is a power-of-two ring of fixed-size
entries at ``PPN << 12``, its size ``2 ** (LOG2SZ-1 + 1)`` entries, both from the queue's base
register (``cqb`` / ``fqb`` / ``pqb``). "If the head and tail are equal the queue is empty";
the producer leaves one entry free, so ``(tail + 1) mod size == head`` means full. An entry is
a sequence of doublewords, each little-endian unless ``fctl.BE`` is 1.

Entries travel as one wide ``int`` (doubleword ``i`` in bits ``64i + 63 .. 64i``), the shape
the record and command layouts of :mod:`iommusim.bits.riscv.queues` describe.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv.regs import CQB, QB_PPN_SHIFT, queue_index_mask
from iommusim.errors import BusError
from iommusim.hw.riscv.translate import swap64
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["FULL", "MEM_FAULT", "advance", "consume", "entry_pa", "produce"]

_PPN_MASK: Final = (1 << CQB["ppn"].width) - 1
_M64: Final = (1 << 64) - 1

#: :func:`produce` results other than the new tail.
FULL: Final = -1
MEM_FAULT: Final = -2


def advance(qb: int, index: int) -> int:
    """The index after ``index``, wrapping at the end of the ring."""
    return (index + 1) & queue_index_mask(qb)


def entry_pa(qb: int, index: int, entry_bytes: int) -> int:
    """The physical address of entry ``index``."""
    return ((qb >> QB_PPN_SHIFT & _PPN_MASK) << 12) + index * entry_bytes


def produce(
    mem: PhysicalMemory, qb: int, head: int, tail: int, entry: int, entry_bytes: int, be: int
) -> int:
    """Write ``entry`` at ``tail`` as a producer (the FQ and PQ, written by the IOMMU).

    Returns the new tail, :data:`FULL` when the ring has no free entry (nothing written) or
    :data:`MEM_FAULT` when the write faulted; the caller sets its queue's overflow or
    memory-fault bit ("fqof"/"fqmf", "pqof"/"pqmf")."""
    nxt = (tail + 1) & queue_index_mask(qb)
    if nxt == head:
        return FULL
    if be:
        data = b"".join(
            (entry >> s & _M64).to_bytes(8, "big") for s in range(0, entry_bytes * 8, 64)
        )
    else:
        data = entry.to_bytes(entry_bytes, "little")
    try:
        mem.write(entry_pa(qb, tail, entry_bytes), data)
    except BusError:
        return MEM_FAULT
    return nxt


def consume(mem: PhysicalMemory, qb: int, head: int, entry_bytes: int, be: int) -> int | None:
    """The entry at ``head``, read one doubleword at a time as a consumer (the CQ, read by the
    IOMMU), or ``None`` when a read faulted ("cqmf")."""
    pa = entry_pa(qb, head, entry_bytes)
    entry = 0
    try:
        for i in range(entry_bytes // 8):
            w = mem.read64(pa + 8 * i)
            entry |= (swap64(w) if be else w) << (64 * i)
    except BusError:
        return None
    return entry
