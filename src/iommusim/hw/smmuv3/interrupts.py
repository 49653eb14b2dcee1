"""SMMUv3 interrupts: global errors, the four interrupt sources, MSIs and wired pulses.

IHI 0070 3.18 "Interrupts and notifications": the Event queue, the PRI queue, CMD_SYNC
completion and global errors each interrupt either by a message-signalled write (when IDR0.MSI
is 1 and the source's MSI address is not 0: the 32-bit ``*_IRQ_CFG1.DATA`` written to
``*_IRQ_CFG0.ADDR``) or on its wired line (a pulse the model counts and hands to its
observers). An MSI write that aborts activates the source's ``GERROR.MSI_*_ABT_ERR`` (IHI
0070 6.3 SMMU_GERROR); the GERROR interrupt's own MSI failing activates MSI_GERROR_ABT_ERR
without a further interrupt.

Global errors (IHI 0070 7.5 "Global error recording", 6.3 SMMU_GERROR): an error is active
while its GERROR and GERRORN bits differ. The SMMU activates one by toggling its GERROR bit
(an error already active stays as it is) and then signals the GERROR interrupt when
IRQ_CTRL.GERROR_IRQEN is 1. The CMD_SYNC SEV completion signal (IHI 0070 4.6 CMD_SYNC, with
IDR0.SEV) is counted in :attr:`Interrupts.sev_count`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from iommusim.bits.arm.smmuv3_regs import GERROR, IRQ_CFG0, IRQ_CTRL
from iommusim.errors import BusError, ModelError
from iommusim.hw.smmuv3.registers import Registers
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["IRQ_LINES", "Interrupts", "IrqLine", "IrqObserver"]

#: The wired interrupt lines (IHI 0070 3.18; the Linux binding names them "eventq", "priq",
#: "cmdq-sync" and "gerror").
IrqLine = Literal["eventq", "priq", "cmdq_sync", "gerror"]
IRQ_LINES: Final[tuple[IrqLine, ...]] = ("eventq", "priq", "cmdq_sync", "gerror")
#: Called with the line on every wired pulse.
IrqObserver = Callable[[IrqLine], None]

_ADDR: Final = IRQ_CFG0.mask("addr")
_GERROR_IRQEN: Final = IRQ_CTRL.mask("gerror_irqen")
_EVENTQ_IRQEN: Final = IRQ_CTRL.mask("eventq_irqen")
_PRIQ_IRQEN: Final = IRQ_CTRL.mask("priq_irqen")
_MSI_CMDQ_ABT: Final = GERROR.mask("msi_cmdq_abt_err")
_MSI_EVENTQ_ABT: Final = GERROR.mask("msi_eventq_abt_err")
_MSI_PRIQ_ABT: Final = GERROR.mask("msi_priq_abt_err")
_MSI_GERROR_ABT: Final = GERROR.mask("msi_gerror_abt_err")
_M32: Final = 0xFFFF_FFFF


class Interrupts:
    """Raises the SMMU's interrupts from the register file's configuration."""

    __slots__ = ("_msi", "_observers", "counts", "mem", "regs", "sev_count")

    def __init__(self, mem: PhysicalMemory, regs: Registers) -> None:
        self.mem = mem
        self.regs = regs
        self._msi = bool(regs.params.idr0_field("msi"))
        self._observers: list[IrqObserver] = []
        #: Wired pulses per line.
        self.counts: dict[IrqLine, int] = dict.fromkeys(IRQ_LINES, 0)
        self.sev_count = 0

    def add_observer(self, observer: IrqObserver) -> None:
        """Call ``observer(line)`` on every wired pulse."""
        self._observers.append(observer)

    def remove_observer(self, observer: IrqObserver) -> None:
        for i, registered in enumerate(self._observers):
            if registered == observer:  # equal, not identical: bound methods are rebuilt
                del self._observers[i]
                return
        raise ModelError(f"interrupt observer {observer!r} must be registered to be removed")

    def active_errors(self) -> int:
        """The active global errors (GERROR bits that differ from GERRORN)."""
        r = self.regs
        return r.gerror ^ r.gerrorn

    def activate(self, bit: int) -> None:
        """Activate global error ``bit`` (a GERROR mask) and signal the GERROR interrupt
        (IHI 0070 7.5)."""
        r = self.regs
        if self.active_errors() & bit:
            return
        r.gerror ^= bit
        if r.irq_ctrl & _GERROR_IRQEN:
            self._signal("gerror", r.gerror_irq_cfg0 & _ADDR, r.gerror_irq_cfg1, _MSI_GERROR_ABT)

    def eventq(self) -> None:
        """The Event queue interrupt (IRQ_CTRL.EVENTQ_IRQEN, EVENTQ_IRQ_CFG0-2)."""
        r = self.regs
        if r.irq_ctrl & _EVENTQ_IRQEN:
            self._signal("eventq", r.eventq_irq_cfg0 & _ADDR, r.eventq_irq_cfg1, _MSI_EVENTQ_ABT)

    def priq(self) -> None:
        """The PRI queue interrupt (IRQ_CTRL.PRIQ_IRQEN, PRIQ_IRQ_CFG0-2)."""
        r = self.regs
        if r.irq_ctrl & _PRIQ_IRQEN:
            self._signal("priq", r.priq_irq_cfg0 & _ADDR, r.priq_irq_cfg1, _MSI_PRIQ_ABT)

    def cmd_sync(self, msi_addr: int, msi_data: int) -> None:
        """CMD_SYNC with CS = SIG_IRQ: the command's own MSI, or the "cmdq_sync" line (IHI
        0070 4.6 CMD_SYNC)."""
        self._signal("cmdq_sync", msi_addr & _ADDR, msi_data, _MSI_CMDQ_ABT)

    def sev(self) -> None:
        """CMD_SYNC with CS = SIG_SEV: a send-event to the PEs (IDR0.SEV)."""
        self.sev_count += 1

    def _signal(self, line: IrqLine, addr: int, data: int, abt: int) -> None:
        if self._msi and addr:
            try:
                self.mem.write32(addr, data & _M32)
            except BusError:
                if abt == _MSI_GERROR_ABT:
                    if not self.active_errors() & abt:
                        self.regs.gerror ^= abt
                else:
                    self.activate(abt)
            return
        self.counts[line] += 1
        for observer in tuple(self._observers):
            observer(line)
