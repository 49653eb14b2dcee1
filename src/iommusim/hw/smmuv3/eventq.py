"""The SMMU's output queues: the Event queue (IHI 0070 7.2-7.4) and the PRI queue (IHI 0070
8), both produced by the SMMU into memory and consumed by software.

Records are little-endian (IHI 0070 3.5: the queues' entries have a fixed byte order). A
record is written at PROD, then PROD advances and the queue's interrupt is signalled
(:mod:`iommusim.hw.smmuv3.interrupts`). A record is not written, and is lost, when:

* the queue is disabled (CR0.EVENTQEN / PRIQEN = 0);
* an earlier write to the queue aborted and GERROR.EVENTQ_ABT_ERR / PRIQ_ABT_ERR is still
  active (IHI 0070 7.5: the queue is unwritable until software acknowledges the error -- the
  model discards records meanwhile); a write that aborts activates that error;
* the queue is full (IHI 0070 7.4 "Event queue overflow"): the overflow flag PROD.OVFLG is
  toggled, unless an overflow is already active (PROD.OVFLG differs from CONS.OVACKFLG), and
  the interrupt is signalled. Software acknowledges by copying OVFLG to CONS.OVACKFLG. Event
  records are written again as soon as there is space.

The PRI queue (IHI 0070 8.2 "Miscellaneous": PRI queue overflow) discards every Page Request
while its overflow is active, not only while it is full -- a Page Request Group part of which
was lost must not reach software partly. A discarded request with Last = 1 that is not a Stop
Marker is answered by the SMMU itself with a PRG Response of Success through the
:class:`~iommusim.hw.smmuv3.ports.DevicePort` (the device retries its translation), and so is
one that arrives while the queue is disabled or unwritable.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm.smmuv3_queues import (
    EVENTQ_ENTRY_BYTES,
    PRI_RESP_SUCCESS,
    PRIQ_ENTRY,
    PRIQ_ENTRY_BYTES,
)
from iommusim.bits.arm.smmuv3_regs import CR0_EVENTQEN, CR0_PRIQEN, GERROR, QUEUE_OVFLG
from iommusim.errors import BusError
from iommusim.hw.smmuv3.interrupts import Interrupts
from iommusim.hw.smmuv3.ports import DevicePort
from iommusim.hw.smmuv3.registers import Registers
from iommusim.hw.smmuv3.ring import advance, entry_pa, is_full, log2size
from iommusim.hw.smmuv3.transaction import Event
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["EventQueue", "PriQueue"]

_EVENTQ_ABT: Final = GERROR.mask("eventq_abt_err")
_PRIQ_ABT: Final = GERROR.mask("priq_abt_err")
_ADDR_PAGE: Final = (1 << PRIQ_ENTRY["address"].width) - 1
# What each ID field of a PRI queue entry holds (IHI 0070 8.1).
_SID: Final = (1 << PRIQ_ENTRY["streamid"].width) - 1
_SSID: Final = (1 << PRIQ_ENTRY["substreamid"].width) - 1
_PRGI: Final = (1 << PRIQ_ENTRY["prg_index"].width) - 1


class EventQueue:
    """Writes event records (IHI 0070 7.3) into the Event queue."""

    __slots__ = ("_max_lg2", "irq", "mem", "regs")

    def __init__(self, mem: PhysicalMemory, regs: Registers, irq: Interrupts) -> None:
        self.mem = mem
        self.regs = regs
        self.irq = irq
        self._max_lg2 = regs.params.idr1_field("eventqs")

    def record(self, event: Event) -> bool:
        """Append ``event``; whether it was written (the module docstring's rules)."""
        r = self.regs
        if not r.cr0 & CR0_EVENTQEN or self.irq.active_errors() & _EVENTQ_ABT:
            return False
        lg2 = log2size(r.eventq_base, self._max_lg2)
        prod = r.eventq_prod
        if is_full(prod, r.eventq_cons, lg2):
            if not (prod ^ r.eventq_cons) & QUEUE_OVFLG:
                r.eventq_prod = prod ^ QUEUE_OVFLG
                self.irq.eventq()
            return False
        try:
            self.mem.write(entry_pa(r.eventq_base, lg2, prod, EVENTQ_ENTRY_BYTES), event.record())
        except BusError:
            self.irq.activate(_EVENTQ_ABT)
            return False
        r.eventq_prod = (prod & QUEUE_OVFLG) | advance(prod, lg2)
        self.irq.eventq()
        return True


class PriQueue:
    """Queues PCIe Page Requests (IHI 0070 8.1) for software, or answers them itself."""

    __slots__ = ("_max_lg2", "irq", "mem", "port", "regs")

    def __init__(
        self, mem: PhysicalMemory, regs: Registers, irq: Interrupts, port: DevicePort
    ) -> None:
        self.mem = mem
        self.regs = regs
        self.irq = irq
        self.port = port
        self._max_lg2 = regs.params.idr1_field("priqs")

    def page_request(
        self,
        sid: int,
        ssv: bool,
        ssid: int,
        addr: int,
        read: bool,
        write: bool,
        exec_: bool = False,
        priv: bool = False,
        last: bool = False,
        prgi: int = 0,
    ) -> bool:
        """One PRI Page Request for the page at ``addr``; whether it entered the queue.

        IHI 0070 8.1: without a PASID (``ssv`` = 0) the X and Priv bits are 0; a request
        with a PASID and L, W, R = 1, 0, 0 is a Stop Marker."""
        ssid &= _SSID if ssv else 0
        exec_ = exec_ and ssv
        priv = priv and ssv
        entry = PRIQ_ENTRY.encode(
            streamid=sid & _SID,
            substreamid=ssid,
            priv=int(priv),
            exec=int(exec_),
            read=int(read),
            write=int(write),
            last=int(last),
            ssv=int(ssv),
            prg_index=prgi & _PRGI,
            address=addr >> 12 & _ADDR_PAGE,
        )
        if self._produce(entry):
            return True
        if last and not (ssv and not read and not write):
            self.port.pri_response(sid, ssv, ssid, prgi & _PRGI, PRI_RESP_SUCCESS)
        return False

    def _produce(self, entry: int) -> bool:
        r = self.regs
        if not r.cr0 & CR0_PRIQEN or self.irq.active_errors() & _PRIQ_ABT:
            return False
        lg2 = log2size(r.priq_base, self._max_lg2)
        prod = r.priq_prod
        if (prod ^ r.priq_cons) & QUEUE_OVFLG:
            return False
        if is_full(prod, r.priq_cons, lg2):
            r.priq_prod = prod ^ QUEUE_OVFLG
            self.irq.priq()
            return False
        try:
            self.mem.write(
                entry_pa(r.priq_base, lg2, prod, PRIQ_ENTRY_BYTES),
                entry.to_bytes(PRIQ_ENTRY_BYTES, "little"),
            )
        except BusError:
            self.irq.activate(_PRIQ_ABT)
            return False
        r.priq_prod = (prod & QUEUE_OVFLG) | advance(prod, lg2)
        self.irq.priq()
        return True
