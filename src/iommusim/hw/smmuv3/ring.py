"""Index arithmetic of the SMMUv3's circular queues, written once for the command, event and
PRI queues.

IHI 0070 3.5 "Command and Event queues" and 6.3 (SMMU_*Q_BASE, SMMU_*Q_PROD/CONS): a queue
holds ``2**LOG2SIZE`` entries at ``ADDR``; its PROD and CONS indexes are ``LOG2SIZE`` bits of
entry index with a wrap bit just above. Equal indexes with equal wrap bits: empty; equal
indexes with different wrap bits: full. Index bits above the wrap bit are ignored. LOG2SIZE
above the implemented maximum (SMMU_IDR1.CMDQS/EVENTQS/PRIQS) takes the maximum as its
effective value, and ADDR is taken as aligned to the queue's size (low bits treated as 0: the
CONSTRAINED UNPREDICTABLE choice for a misaligned base).
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm.smmuv3_regs import CMDQ_BASE

__all__ = ["advance", "entry_pa", "is_empty", "is_full", "log2size"]

_LOG2SIZE: Final = CMDQ_BASE["log2size"]
_ADDR_MASK: Final = CMDQ_BASE.mask("addr")


def log2size(base: int, max_lg2: int) -> int:
    """The effective LOG2SIZE of a queue whose BASE register is ``base``."""
    return min(_LOG2SIZE.get(base), max_lg2)


def entry_pa(base: int, lg2: int, index: int, entry_bytes: int) -> int:
    """The physical address of the entry ``index`` (wrap bit and above ignored)."""
    ring_bytes = entry_bytes << lg2
    return (base & _ADDR_MASK & ~(ring_bytes - 1)) + (index & ((1 << lg2) - 1)) * entry_bytes


def is_empty(prod: int, cons: int, lg2: int) -> bool:
    """PROD and CONS name the same entry with the same wrap."""
    return not (prod ^ cons) & ((2 << lg2) - 1)


def is_full(prod: int, cons: int, lg2: int) -> bool:
    """PROD and CONS name the same entry on different wraps."""
    return (prod ^ cons) & ((2 << lg2) - 1) == 1 << lg2


def advance(index: int, lg2: int) -> int:
    """The index (with wrap bit) after ``index``."""
    return (index + 1) & ((2 << lg2) - 1)
