"""The SMMUv3 driver's queues (after Linux ``arm-smmu-v3.c``: ``arm_smmu_init_one_queue``,
``arm_smmu_cmdq_issue_cmdlist``, ``arm_smmu_cmdq_skip_err``, the event and PRI threads).

IHI 0070 3.5 "Command and Event queues": a queue of ``2**log2size`` entries at a base the
queue's ``*_BASE`` register names; PROD and CONS are 20-bit indexes whose bit ``log2size`` is
the wrap flag (6.3). Software produces commands and consumes events and page requests; the
output queues' PROD carries an overflow flag software acknowledges by copying it into CONS
(7.4, 8.1). Queue sizes come from IDR1 and shrink when the memory cannot be allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from iommusim.bits.arm.smmuv3_queues import (
    CERROR_ABT,
    CERROR_ILL,
    CERROR_NAMES,
    CMD_SYNC,
    CMDQ_ENTRY_BYTES,
)
from iommusim.bits.arm.smmuv3_regs import (
    CMDQ_BASE,
    CMDQ_CONS,
    GERROR,
    OFF,
    QUEUE_OVFLG,
)
from iommusim.errors import Busy, OutOfMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.drivers.mmio import Mmio
from iommusim.sw.pages import PageAllocator

__all__ = ["CommandQueue", "OutputQueue"]

_PAGE: Final = 4096
_ERR: Final = CMDQ_CONS.mask("err")
_ERR_LSB: Final = CMDQ_CONS["err"].lsb
_CMDQ_ERR: Final = GERROR.mask("cmdq_err")
#: How many times a CONS poll may see no progress (the virtual clock runs between polls).
POLL_LIMIT: Final = 10_000
_SYNC: Final = CMD_SYNC.layout.encode(opcode=CMD_SYNC.opcode)


def _alloc(pages: PageAllocator, log2size: int, entry_bytes: int, name: str) -> tuple[int, int]:
    """Queue memory, shrinking the queue while the allocation fails (Linux
    ``arm_smmu_init_one_queue``); returns ``(pa, log2size)``."""
    while True:
        nbytes = max(entry_bytes << log2size, _PAGE)
        order = (nbytes // _PAGE - 1).bit_length()
        try:
            return pages.alloc_pages(order), log2size
        except OutOfMemory:
            if log2size <= 1:
                raise OutOfMemory(f"no memory for the {name} queue") from None
            log2size -= 1


class _Ring:
    """Index arithmetic of one queue (IHI 0070 6.3: wrap bit above ``log2size`` bits)."""

    __slots__ = ("log2size", "mask", "wrap")

    def __init__(self, log2size: int) -> None:
        self.log2size = log2size
        self.mask = (1 << log2size) - 1
        self.wrap = 1 << log2size

    def inc(self, i: int) -> int:
        return (i + 1) & (self.wrap | self.mask)

    def used(self, prod: int, cons: int) -> int:
        return (prod - cons) & (self.wrap | self.mask)


class CommandQueue:
    """Software's side of the Command queue. ``wait`` lets time pass (virtual time: the
    clock runs to its next event) while the SMMU has not consumed a CMD_SYNC -- which waits
    for ATC invalidation completions."""

    __slots__ = ("_prod", "base_pa", "errors", "issued", "mem", "mmio", "ring", "sync_hook", "wait")

    def __init__(
        self,
        mmio: Mmio,
        mem: PhysicalMemory,
        pages: PageAllocator,
        log2size: int,
        wait: Callable[[], bool],
    ) -> None:
        self.mmio = mmio
        self.mem = mem
        self.wait = wait
        self.base_pa, lg2 = _alloc(pages, log2size, CMDQ_ENTRY_BYTES, "command")
        self.ring = _Ring(lg2)
        self._prod = 0
        #: CERROR names seen (a command the SMMU refused), oldest first.
        self.errors: list[str] = []
        #: Commands issued, by opcode.
        self.issued: dict[int, int] = {}
        #: Called after each CMD_SYNC completed (tests record the structures there).
        self.sync_hook: Callable[[], None] | None = None
        mmio.writeq(OFF.CMDQ_BASE, CMDQ_BASE.encode(addr=self.base_pa >> 5, log2size=lg2))
        mmio.writel(OFF.CMDQ_PROD, 0)
        mmio.writel(OFF.CMDQ_CONS, 0)

    def issue(self, cmds: list[int], sync: bool = True) -> None:
        """Write ``cmds`` (then a CMD_SYNC when ``sync``) and let the SMMU consume them; returns
        once every one has been consumed (``arm_smmu_cmdq_issue_cmdlist``)."""
        batch = [*cmds, _SYNC] if sync else list(cmds)
        ring = self.ring
        for cmd in batch:
            op = cmd & 0xFF
            self.issued[op] = self.issued.get(op, 0) + 1
            while ring.used(self._prod, self._cons()) >= ring.wrap:
                self._poll_once()  # full: let the SMMU make room
            slot = self.base_pa + (self._prod & ring.mask) * CMDQ_ENTRY_BYTES
            self.mem.write(slot, cmd.to_bytes(CMDQ_ENTRY_BYTES, "little"))
            self._prod = ring.inc(self._prod)
        self.mmio.writel(OFF.CMDQ_PROD, self._prod)
        for _ in range(POLL_LIMIT):
            if self._cons() == self._prod:
                break
            self._poll_once()
        else:
            raise Busy(f"command queue stuck at CONS {self._cons():#x}, PROD {self._prod:#x}")
        if sync and self.sync_hook is not None:
            self.sync_hook()

    def _cons(self) -> int:
        return self.mmio.readl(OFF.CMDQ_CONS) & (self.ring.wrap | self.ring.mask)

    def _poll_once(self) -> None:
        """One poll of CONS: a command error is handled (``arm_smmu_cmdq_skip_err``),
        otherwise time passes."""
        cons = self.mmio.readl(OFF.CMDQ_CONS)
        if self.mmio.readl(OFF.GERROR) & _CMDQ_ERR != self.mmio.readl(OFF.GERRORN) & _CMDQ_ERR:
            self.skip_err(cons)
            return
        if not self.wait():
            raise Busy(f"command queue waits at CONS {cons:#x} and nothing will happen")

    def skip_err(self, cons: int) -> None:
        """IHI 0070 7.1: CONS.RD names the failed command; an illegal or aborted command is
        replaced by a CMD_SYNC (Linux does the same), then the error is acknowledged by
        toggling GERRORN.CMDQ_ERR, which restarts the queue."""
        code = (cons & _ERR) >> _ERR_LSB
        self.errors.append(CERROR_NAMES.get(code, f"cerror {code:#x}"))
        if code in (CERROR_ILL, CERROR_ABT):
            slot = self.base_pa + (cons & self.ring.mask) * CMDQ_ENTRY_BYTES
            self.mem.write(slot, _SYNC.to_bytes(CMDQ_ENTRY_BYTES, "little"))
        gerrorn = self.mmio.readl(OFF.GERRORN)
        self.mmio.writel(OFF.GERRORN, gerrorn ^ _CMDQ_ERR)


class OutputQueue:
    """Software's side of the Event queue or the PRI queue: ``base_off`` / ``prod_off`` /
    ``cons_off`` name its registers (PROD and CONS on page 1), ``entry_bytes`` its records."""

    __slots__ = (
        "_cons",
        "base_pa",
        "cons_off",
        "entry_bytes",
        "mem",
        "mmio",
        "overflows",
        "prod_off",
        "ring",
    )

    def __init__(
        self,
        mmio: Mmio,
        mem: PhysicalMemory,
        pages: PageAllocator,
        log2size: int,
        entry_bytes: int,
        offs: tuple[int, int, int],
        name: str,
    ) -> None:
        self.mmio = mmio
        self.mem = mem
        self.entry_bytes = entry_bytes
        base_off, self.prod_off, self.cons_off = offs
        self.base_pa, lg2 = _alloc(pages, log2size, entry_bytes, name)
        self.ring = _Ring(lg2)
        self._cons = 0
        #: How many overflows software saw (records were lost, IHI 0070 7.4 / 8.2).
        self.overflows = 0
        mmio.writeq(base_off, CMDQ_BASE.encode(addr=self.base_pa >> 5, log2size=lg2))
        mmio.writel(self.prod_off, 0)
        mmio.writel(self.cons_off, 0)

    def drain(self, handle: Callable[[bytes], None]) -> int:
        """Consume every record between CONS and PROD, then acknowledge an overflow (copy
        PROD.OVFLG into CONS.OVACKFLG); the number consumed."""
        ring = self.ring
        n = 0
        prod = self.mmio.readl(self.prod_off)
        if (prod ^ self.mmio.readl(self.cons_off)) & QUEUE_OVFLG:
            self.overflows += 1
        while prod & (ring.wrap | ring.mask) != self._cons:
            pa = self.base_pa + (self._cons & ring.mask) * self.entry_bytes
            handle(self.mem.read(pa, self.entry_bytes))
            self._cons = ring.inc(self._cons)
            self.mmio.writel(self.cons_off, self._cons | (prod & QUEUE_OVFLG))
            n += 1
            prod = self.mmio.readl(self.prod_off)
        self.mmio.writel(self.cons_off, self._cons | (prod & QUEUE_OVFLG))
        return n
