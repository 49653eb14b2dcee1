"""The driver's side of the in-memory queues (riscv-iommu: "In-memory queue interface").

Like the Linux driver: the size is discovered by writing all-ones to ``LOG2SZ-1`` (WARL) and
clamped; the buffer is a naturally aligned allocation; the queue is enabled with EN|IE while
the error bits are written 1 to clear them, and software waits for ON with no memory fault.
The command queue keeps a software producer index and a shadow of the hardware head; the
fault queue is drained from the interrupt handler between the shadow head and ``fqt``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from iommusim.bits.pcie import decode_page_request
from iommusim.bits.riscv.queues import PQ_RECORD, FaultRecord
from iommusim.bits.riscv.regs import (
    CQCSR_BUSY,
    CQCSR_CIE,
    CQCSR_CMD_ILL,
    CQCSR_CMD_TO,
    CQCSR_CQEN,
    CQCSR_CQMF,
    CQCSR_CQON,
    CQCSR_FENCE_W_IP,
    FQCSR_FQOF,
    OFF_CQB,
    OFF_CQCSR,
    OFF_CQH,
    OFF_CQT,
    OFF_FQB,
    OFF_FQCSR,
    OFF_FQH,
    OFF_FQT,
    OFF_PQB,
    OFF_PQCSR,
    OFF_PQH,
    OFF_PQT,
    PQCSR_PQOF,
    QB_LOG2SZM1_MASK,
    QB_PPN_SHIFT,
)
from iommusim.errors import Busy, InvalidArgument, NoDevice, OutOfMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.drivers.mmio import Mmio
from iommusim.sw.drivers.riscv.commands import Command, iofence_c
from iommusim.sw.pages import PageAllocator

__all__ = ["CommandQueue", "FaultQueue", "PageRequestQueue", "PageRequestRecord"]

# The enable handshake bits sit at the same positions in cqcsr, fqcsr and pqcsr.
_CSR_EN: Final = CQCSR_CQEN
_CSR_IE: Final = CQCSR_CIE
_CSR_MF: Final = CQCSR_CQMF
_CSR_ON: Final = CQCSR_CQON
_CSR_BUSY: Final = CQCSR_BUSY
_CQ_ERRORS: Final = CQCSR_CQMF | CQCSR_CMD_TO | CQCSR_CMD_ILL | CQCSR_FENCE_W_IP
#: How many times software polls a busy bit or a head index before it gives up (the model's
#: stand-in for the Linux driver's timeouts: the hardware model answers synchronously, so a
#: poll that does not finish within this many reads never will).
POLL_LIMIT: Final = 64
_PAGE: Final = 4096


class _Queue:
    """Allocation and the enable handshake shared by the command and fault queues."""

    def __init__(
        self,
        mmio: Mmio,
        mem: PhysicalMemory,
        pages: PageAllocator,
        *,
        off_base: int,
        off_csr: int,
        entry_bytes: int,
        want_entries: int,
        name: str,
    ) -> None:
        self.mmio = mmio
        self.mem = mem
        self.name = name
        self.entry_bytes = entry_bytes
        self.off_csr = off_csr
        # Discover the largest size the hardware accepts (WARL), then clamp.
        mmio.writeq(off_base, QB_LOG2SZM1_MASK)
        max_lg2 = (mmio.readq(off_base) & QB_LOG2SZM1_MASK) + 1
        lg2 = min(max_lg2, max(1, want_entries.bit_length() - 1))
        # riscv_iommu_queue_alloc: on allocation failure retry with half the entries, down
        # to what fits in one page.
        while True:
            size = (1 << lg2) * entry_bytes
            order = max(0, (max(size, _PAGE) // _PAGE - 1).bit_length())
            try:
                self.base_pa = pages.alloc_pages(order)
                break
            except (OutOfMemory, InvalidArgument):
                if order == 0:
                    raise
                lg2 -= 1
        self.pages = pages
        self.order = order
        self.entries = 1 << lg2
        self.mask = self.entries - 1
        mmio.writeq(off_base, (self.base_pa >> 12) << QB_PPN_SHIFT | (lg2 - 1))
        if mmio.readq(off_base) >> QB_PPN_SHIFT != self.base_pa >> 12:
            pages.free_pages(self.base_pa, order)
            raise NoDevice(f"{name}: the hardware did not accept the queue base {self.base_pa:#x}")

    def enable(self, extra_w1c: int) -> None:
        """Turn the queue on; on failure turn it off again and free its buffer."""
        try:
            self._enable(extra_w1c)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Disable the queue and free its buffer (probe failure or driver removal)."""
        self.disable()
        self.pages.free_pages(self.base_pa, self.order)

    def _enable(self, extra_w1c: int) -> None:
        self.mmio.writel(self.off_csr, _CSR_EN | _CSR_IE | _CSR_MF | extra_w1c)
        for _ in range(POLL_LIMIT):
            csr = self.mmio.readl(self.off_csr)
            if not csr & _CSR_BUSY:
                break
        else:
            raise Busy(f"{self.name}: busy did not clear after enable")
        if not csr & _CSR_ON or csr & _CSR_MF:
            raise NoDevice(f"{self.name}: queue did not come on (csr {csr:#x})")

    def disable(self) -> None:
        self.mmio.writel(self.off_csr, 0)


class CommandQueue(_Queue):
    """Producer side of the command queue, with IOFENCE.C completion."""

    def __init__(
        self, mmio: Mmio, mem: PhysicalMemory, pages: PageAllocator, want_entries: int
    ) -> None:
        super().__init__(
            mmio,
            mem,
            pages,
            off_base=OFF_CQB,
            off_csr=OFF_CQCSR,
            entry_bytes=16,
            want_entries=want_entries,
            name="command queue",
        )
        mmio.writel(OFF_CQT, 0)
        self.tail = 0
        self.head = 0  # shadow of cqh
        self.sent = 0
        self.syncs = 0
        self.errors: list[str] = []
        self.enable(_CQ_ERRORS)

    def _wait_space(self) -> None:
        for _ in range(POLL_LIMIT):
            if (self.tail + 1) & self.mask != self.head:
                return
            self.head = self.mmio.readl(OFF_CQH)
        raise Busy("command queue: no space (the IOMMU stopped consuming commands)")

    def send(self, cmd: Command) -> int:
        """Write one command and ring the doorbell; returns its queue index."""
        self._wait_space()
        idx = self.tail
        pa = self.base_pa + idx * 16
        # The command is complete in memory before cqt makes it visible (dma_wmb).
        self.mem.write64(pa, cmd[0])
        self.mem.write64(pa + 8, cmd[1])
        self.tail = (idx + 1) & self.mask
        self.mmio.writel(OFF_CQT, self.tail)
        self.sent += 1
        return idx

    def sync(self) -> bool:
        """IOFENCE.C and wait for the head to pass it (riscv-iommu: "IOFENCE.C").

        Returns False, and records why, when the queue reports an error or the fence does not
        complete (the Linux driver logs and carries on; so does this one).
        """
        idx = self.send(iofence_c(pr=True, pw=True))
        self.syncs += 1
        for _ in range(POLL_LIMIT):
            self.head = self.mmio.readl(OFF_CQH)
            if 0 < (self.head - idx) & self.mask <= (self.tail - idx) & self.mask:
                return True
            csr = self.mmio.readl(OFF_CQCSR)
            if csr & (CQCSR_CQMF | CQCSR_CMD_TO | CQCSR_CMD_ILL):
                self.errors.append(f"command queue error, cqcsr {csr:#x}")
                self.mmio.writel(OFF_CQCSR, _CSR_EN | _CSR_IE | (csr & _CQ_ERRORS))
                return False
        self.errors.append("IOFENCE.C timed out")
        return False


class _ConsumerQueue(_Queue):
    """A queue the hardware produces into and software drains (fault and page-request
    queues): records between the shadow head and the hardware tail, then the head moves and
    the memory-fault and overflow bits are written 1 to clear them."""

    def __init__(
        self,
        mmio: Mmio,
        mem: PhysicalMemory,
        pages: PageAllocator,
        want_entries: int,
        *,
        off_base: int,
        off_csr: int,
        off_head: int,
        off_tail: int,
        entry_bytes: int,
        overflow_bit: int,
        name: str,
    ) -> None:
        super().__init__(
            mmio,
            mem,
            pages,
            off_base=off_base,
            off_csr=off_csr,
            entry_bytes=entry_bytes,
            want_entries=want_entries,
            name=name,
        )
        self.off_head = off_head
        self.off_tail = off_tail
        self.overflow_bit = overflow_bit
        mmio.writel(off_head, 0)
        self.head = 0
        self.overflows = 0
        self.memory_faults = 0
        self.enable(overflow_bit)  # the overflow bit is W1C too

    def _drain_raw(self, take: Callable[[int], None]) -> tuple[int, int]:
        """Hand every record (as one little-endian int) to ``take``; returns how many and the
        error bits found (already cleared)."""
        tail = self.mmio.readl(self.off_tail)
        n = 0
        size = self.entry_bytes
        while self.head != tail:
            take(int.from_bytes(self.mem.read(self.base_pa + self.head * size, size), "little"))
            self.head = (self.head + 1) & self.mask
            n += 1
        if n:
            self.mmio.writel(self.off_head, self.head)
        csr = self.mmio.readl(self.off_csr)
        errs = csr & (_CSR_MF | self.overflow_bit)
        if errs:
            self.memory_faults += bool(errs & _CSR_MF)
            self.overflows += bool(errs & self.overflow_bit)
            self.mmio.writel(self.off_csr, _CSR_EN | _CSR_IE | errs)
        return n, errs


class FaultQueue(_ConsumerQueue):
    """Consumer side of the fault queue."""

    def __init__(
        self, mmio: Mmio, mem: PhysicalMemory, pages: PageAllocator, want_entries: int
    ) -> None:
        super().__init__(
            mmio,
            mem,
            pages,
            want_entries,
            off_base=OFF_FQB,
            off_csr=OFF_FQCSR,
            off_head=OFF_FQH,
            off_tail=OFF_FQT,
            entry_bytes=32,
            overflow_bit=FQCSR_FQOF,
            name="fault queue",
        )

    def drain(self, report: Callable[[FaultRecord], None]) -> int:
        """Consume every record between the shadow head and fqt; returns how many."""
        return self._drain_raw(lambda raw: report(FaultRecord.decode(raw)))[0]


@dataclass(frozen=True, slots=True)
class PageRequestRecord:
    """One decoded page-request-queue record (riscv-iommu: "Page-Request-Queue (PQ)"): the
    header fields and the PCIe Page Request payload (R, W, L, PRGI, page address)."""

    did: int
    pv: bool
    pid: int
    priv: bool
    exec_: bool
    read: bool
    write: bool
    last: bool
    prgi: int
    addr: int


class PageRequestQueue(_ConsumerQueue):
    """Consumer side of the page-request queue."""

    def __init__(
        self, mmio: Mmio, mem: PhysicalMemory, pages: PageAllocator, want_entries: int
    ) -> None:
        super().__init__(
            mmio,
            mem,
            pages,
            want_entries,
            off_base=OFF_PQB,
            off_csr=OFF_PQCSR,
            off_head=OFF_PQH,
            off_tail=OFF_PQT,
            entry_bytes=16,
            overflow_bit=PQCSR_PQOF,
            name="page-request queue",
        )

    def drain(self, report: Callable[[PageRequestRecord], None]) -> tuple[int, bool]:
        """Consume every record between the shadow head and pqt; returns how many and whether
        the queue overflowed (pqcsr.pqof: requests were lost, so partial groups must go)."""
        dec = PQ_RECORD.decode

        def take(raw: int) -> None:
            f = dec(raw)
            body = decode_page_request(f["payload"])  # PCIe "Page Request Message"
            report(
                PageRequestRecord(
                    f["did"],
                    bool(f["pv"]),
                    f["pid"],
                    bool(f["priv"]),
                    bool(f["exec"]),
                    body.read,
                    body.write,
                    body.last,
                    body.prgi,
                    body.addr,
                )
            )

        n, errs = self._drain_raw(take)
        return n, bool(errs & PQCSR_PQOF)
