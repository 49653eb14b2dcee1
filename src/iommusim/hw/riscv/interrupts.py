"""Interrupt generation of the RISC-V IOMMU register file: ``ipsr``, ``icvec``, the MSI
configuration table and wire-signaled interrupts.

riscv-iommu: "Interrupt pending status register (ipsr)", "Interrupt-cause-to-vector register
(icvec)", "MSI configuration table (msi_cfg_tbl)" and ``fctl.WSI``. The logic works on the
register values the register file (:class:`iommusim.hw.riscv.regs.Registers`) holds; it is a
separate class so that the register file keeps only the access rules and their side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from iommusim.bits.riscv.regs import (
    CQCSR_CIE,
    CQCSR_ERRORS,
    FCTL_WSI,
    FQCSR_ERRORS,
    FQCSR_FIE,
    ICVEC,
    IPSR_CIP,
    IPSR_FIP,
    IPSR_PIP,
    IPSR_PMIP,
    MSI_VEC_CTL_M,
    PQCSR_ERRORS,
    PQCSR_PIE,
)
from iommusim.errors import ModelError

__all__ = ["InterruptLogic", "RegisterHost", "WireObserver"]

#: Called with ``(vector, level)`` whenever the wire of interrupt ``vector`` changes level.
WireObserver = Callable[[int, bool], None]

#: ipsr bit -> shift of the icvec field that routes its cause.
_CAUSE_SHIFT: Final = {
    IPSR_CIP: ICVEC["civ"].lsb,
    IPSR_FIP: ICVEC["fiv"].lsb,
    IPSR_PMIP: ICVEC["pmiv"].lsb,
    IPSR_PIP: ICVEC["piv"].lsb,
}
_VEC_MASK: Final = (1 << ICVEC["civ"].width) - 1


class RegisterHost(Protocol):
    """What the register file needs from the IOMMU core."""

    def send_msi(self, addr: int, data: int) -> None:
        """Write the 4 ``data`` bytes to ``addr`` (byte order per ``fctl.BE``); on a memory
        fault the core writes the cause-273 fault record itself."""

    def wired_interrupt(self, vector: int) -> None:
        """The wire of ``vector`` was asserted (a rising edge, ``fctl.WSI`` = 1); level changes
        in both directions go to the observers of :meth:`Registers.add_wire_observer`."""

    def debug_translate(self) -> None:
        """Perform the debug translation set up in ``tr_req_iova``/``tr_req_ctl``; set
        ``tr_response`` and clear ``tr_req_ctl.Go/Busy``."""


class InterruptLogic:
    """ipsr edges, MSI generation and wire levels over the register file's values."""

    __slots__ = (
        "_host",
        "_msi_entries",
        "_msi_pending",
        "_wire_observers",
        "_wires",
        "_wsi_only",
        "cqcsr",
        "fctl",
        "fqcsr",
        "icvec",
        "ipsr",
        "msi_addr",
        "msi_data",
        "msi_vec_ctl",
        "pqcsr",
    )

    # State held for the register file, which sets it up.
    _host: RegisterHost
    _wsi_only: bool
    _msi_entries: int
    _msi_pending: list[bool]
    _wires: int
    _wire_observers: list[WireObserver]
    fctl: int
    ipsr: int
    icvec: int
    cqcsr: int
    fqcsr: int
    pqcsr: int
    msi_addr: list[int]
    msi_data: list[int]
    msi_vec_ctl: list[int]

    def vector(self, ipsr_bit: int) -> int:
        """The interrupt vector ``icvec`` assigns to the cause of ``ipsr_bit``."""
        return self.icvec >> _CAUSE_SHIFT[ipsr_bit] & _VEC_MASK

    def _level(self, bit: int) -> bool:
        """Whether the level condition of ``ipsr`` bit ``bit`` holds (cip, fip, pip)."""
        if bit == IPSR_CIP:
            return bool(self.cqcsr & CQCSR_CIE and self.cqcsr & CQCSR_ERRORS)
        if bit == IPSR_FIP:
            return bool(self.fqcsr & FQCSR_FIE and self.fqcsr & FQCSR_ERRORS)
        if bit == IPSR_PIP:
            return bool(self.pqcsr & PQCSR_PIE and self.pqcsr & PQCSR_ERRORS)
        return False

    def _reassert(self, bit: int) -> None:
        if self._level(bit):
            self._raise(bit)

    def _cleared(self, cleared: int) -> None:
        """``ipsr`` bits ``cleared`` were written 1 (RW1C): "If the condition that caused the
        bit to be set persists, the bit is set again" -- a new message or wire edge."""
        # A wire driven only by the cleared bits falls, and rises again below if a cause
        # persists: observers see the re-assertion as a new interrupt.
        self._update_wires()
        for bit in (IPSR_CIP, IPSR_FIP, IPSR_PIP):
            if cleared & bit:
                self._reassert(bit)

    def _raise(self, bit: int) -> None:
        """Set ``ipsr`` bit ``bit``; on its 0 -> 1 edge signal the interrupt.

        riscv-iommu: "Interrupt pending status register (ipsr)": with fctl.WSI = 1 the bit
        drives the wire of its icvec vector; otherwise an MSI from the msi_cfg_tbl entry of that
        vector is generated on the edge, held pending while the vector is masked.
        """
        if self.ipsr & bit:
            return
        self.ipsr |= bit
        if self.fctl & FCTL_WSI or self._wsi_only:
            self._update_wires()
            return
        vec = self.vector(bit)
        if vec < self._msi_entries:
            if self.msi_vec_ctl[vec] & MSI_VEC_CTL_M:
                self._msi_pending[vec] = True
            else:
                self._host.send_msi(self.msi_addr[vec], self.msi_data[vec])

    def _unmasked(self, x: int) -> None:
        """riscv-iommu: "MSI configuration table": "Pending messages for that vector are later
        generated if the corresponding mask bit is cleared to 0"."""
        if not self.msi_vec_ctl[x] & MSI_VEC_CTL_M and self._msi_pending[x]:
            self._msi_pending[x] = False
            self._host.send_msi(self.msi_addr[x], self.msi_data[x])

    def msi_pending(self, vector: int) -> bool:
        """Whether a message is pending on masked ``vector``."""
        return self._msi_pending[vector]

    # -- wire-signaled interrupts (riscv-iommu: "ipsr", "icvec", fctl.WSI) ------------------

    @property
    def wires(self) -> int:
        """The asserted interrupt wires: bit ``v`` is the level of the wire of vector ``v``."""
        return self._wires

    def wire_level(self, vector: int) -> bool:
        """Whether the wire of interrupt ``vector`` is asserted."""
        return bool(self._wires >> vector & 1)

    def add_wire_observer(self, observer: WireObserver) -> None:
        """Call ``observer(vector, level)`` on every change of a wire's level."""
        self._wire_observers.append(observer)

    def remove_wire_observer(self, observer: WireObserver) -> None:
        for i, registered in enumerate(self._wire_observers):
            if registered == observer:  # equal, not identical: bound methods are rebuilt
                del self._wire_observers[i]
                return
        raise ModelError(f"wire observer {observer!r} must be registered to be removed")

    def _update_wires(self) -> None:
        """Recompute the wire levels: "When fctl.WSI is 1, the interrupt-pending bit drives the
        wire selected by the corresponding icvec field" -- a level, so a wire stays asserted
        while any ipsr bit routed to it is 1. Rising edges also go to the host's
        ``wired_interrupt``; observers see both edges, lowest vector first."""
        level = 0
        ipsr = self.ipsr
        if ipsr and (self.fctl & FCTL_WSI or self._wsi_only):
            for bit, shift in _CAUSE_SHIFT.items():
                if ipsr & bit:
                    level |= 1 << (self.icvec >> shift & _VEC_MASK)
        changed = level ^ self._wires
        if not changed:
            return
        self._wires = level
        for vec in range(16):
            if changed >> vec & 1:
                up = bool(level >> vec & 1)
                if up:
                    self._host.wired_interrupt(vec)
                for observer in tuple(self._wire_observers):
                    observer(vec, up)

    # -- called by the core ------------------------------------------------------------------

    def cq_error(self, bit: int) -> None:
        """Set cqcsr error ``bit`` (cqmf, cmd_to, cmd_ill, fence_w_ip); cip if cie.

        riscv-iommu: "Command-queue CSR (cqcsr)" and "ipsr" (cip).
        """
        if bit & ~CQCSR_ERRORS or not bit:
            raise ModelError(f"cq_error bit must be a cqcsr error bit, not {bit:#x}")
        self.cqcsr |= bit
        if self.cqcsr & CQCSR_CIE:
            self._raise(IPSR_CIP)

    def fq_error(self, bit: int) -> None:
        """Set fqcsr error ``bit`` (fqmf, fqof); fip if fie (riscv-iommu: "Fault queue CSR")."""
        if bit & ~FQCSR_ERRORS or not bit:
            raise ModelError(f"fq_error bit must be a fqcsr error bit, not {bit:#x}")
        self.fqcsr |= bit
        if self.fqcsr & FQCSR_FIE:
            self._raise(IPSR_FIP)

    def pq_error(self, bit: int) -> None:
        """Set pqcsr error ``bit`` (pqmf, pqof); pip if pie (riscv-iommu: "Page-request-queue
        CSR")."""
        if bit & ~PQCSR_ERRORS or not bit:
            raise ModelError(f"pq_error bit must be a pqcsr error bit, not {bit:#x}")
        self.pqcsr |= bit
        if self.pqcsr & PQCSR_PIE:
            self._raise(IPSR_PIP)

    def fq_record_written(self) -> None:
        """A new record was produced in the FQ: fip if fie (riscv-iommu: "ipsr")."""
        if self.fqcsr & FQCSR_FIE:
            self._raise(IPSR_FIP)

    def pq_record_written(self) -> None:
        """A new message was produced in the PQ: pip if pie (riscv-iommu: "ipsr")."""
        if self.pqcsr & PQCSR_PIE:
            self._raise(IPSR_PIP)
