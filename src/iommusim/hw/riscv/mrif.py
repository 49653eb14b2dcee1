"""Recording an MSI in a memory-resident interrupt file (MRIF) and sending its notice MSI.

riscv-iommu: "Process to translate addresses of MSIs" stops at the MRIF-mode MSI PTE and hands
the rest to the AIA: "In MRIF mode, the Advanced Interrupt Architecture Specification defines the
operation to store the incoming MSIs into the destination MRIF and to generate the notice MSI.
These operations may be performed by the IOMMU itself or [by] the I/O bridge". In this model the
IOMMU performs them, as the AIA chapter "IOMMU Support for MSIs to Virtual Machines" says:

* "Format of a memory-resident interrupt file": 512 bytes, 32 pairs of little-endian
  doublewords (always little-endian, "even for systems where all harts are big-endian-only");
  the pair at offsets ``16k`` / ``16k + 8`` holds the interrupt-pending / interrupt-enable bits
  of identities ``64k .. 64k + 63``, bit ``i mod 64``. Identity 0 is treated as valid.
* "MSI PTE, MRIF mode": only a naturally aligned 32-bit access is supported ("should be aborted
  as unsupported" otherwise); the data is little-endian when bit 2 of the address is 0 and
  big-endian when it is 1. "If either A[11:3] or D[31:11] is not zero, or if bit 2 of A is one
  and big-endian MSIs are not supported, then the incoming write is accepted but discarded."
  Else the pending bit of identity D is set "using an AMOOR operation, if atomic updates are
  supported [capabilities.AMO_MRIF]; or a non-atomic read-modify-write sequence", and then "the
  11-bit NID value is zero-extended to 32 bits, and this value is written to the address
  NPPN<<12 ... in little-endian byte order" -- the notice MSI, an ordinary memory write the IOMMU
  makes (so it reaches whatever the platform maps there, typically an IMSIC interrupt file).
* "Recording of incoming MSIs to memory-resident interrupt files", note: the IOMMU "is required
  always to send a notice MSI ..., even when the corresponding enable bit ... is zero"; whether it
  may examine the enable bit instead is left open. ``RiscvIommuParams.mrif_notice`` chooses
  (``"always"``, the default, or ``"enabled"``).

Faults (riscv-iommu: "Fault record CAUSE field encodings"): an access fault on the MRIF update
is "MRIF access fault" (264) and poisoned MRIF data is "MSI MRIF data corruption" (271), both
recorded with the device write's TTYP, DID, PID and IOVA and suppressed by ``DC.tc.DTF`` like
the other MSI causes. The spec names no cause for a failed notice-MSI write; the model reports it
as 264 too, since it is part of the MRIF-mode processing of the same device write (cause 273 is
specified for the ``msi_cfg_tbl`` messages only, with TTYP 0). A faulting update sends no notice.

MSIs are rare, so this module favours clarity over speed: it builds an :class:`MrifOutcome` per
write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal, Protocol

from iommusim.bits.riscv import causes as C
from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import cap
from iommusim.errors import BusError
from iommusim.hw.riscv.params import RiscvIommuParams
from iommusim.hw.riscv.transaction import Request, Response
from iommusim.mem.faults import ACCESS
from iommusim.mem.protocol import PhysicalMemory

__all__ = [
    "MRIF_DISCARDED",
    "MRIF_FAULT",
    "MRIF_RECORDED",
    "MRIF_SIZE_BYTES",
    "MRIF_UNSUPPORTED",
    "MrifOutcome",
    "deliver",
    "identity_of",
    "mrif_slot",
]

#: AIA: "A memory-resident interrupt file occupies 512 bytes of memory".
MRIF_SIZE_BYTES: Final = 512
#: AIA: identities 0..2047 (D[31:11] must be 0).
MRIF_IDENTITIES: Final = 2048

MRIF_RECORDED: Final = "recorded"
MRIF_DISCARDED: Final = "discarded"
MRIF_UNSUPPORTED: Final = "unsupported"
MRIF_FAULT: Final = "fault"

_M64: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class MrifOutcome:
    """What the IOMMU did with one device write to an MRIF-mode interrupt-file page.

    ``status``: ``"recorded"`` (pending bit set; ``notice_sent`` tells whether the notice MSI
    went out), ``"discarded"`` (accepted but not an MSI: ``reason`` says why), ``"unsupported"``
    (not a naturally aligned 32-bit access: the bus should abort it) or ``"fault"`` (``cause``
    was recorded in the fault queue as ``record``, unless DTF suppressed it). ``identity`` is
    the interrupt identity D (-1 when the write was not recognised as an MSI);
    ``pending_pa`` / ``enable_pa`` and ``bit`` locate its bits in the MRIF.
    """

    status: Literal["recorded", "discarded", "unsupported", "fault"]
    identity: int = -1
    big_endian: bool = False
    pending_pa: int = 0
    enable_pa: int = 0
    bit: int = 0
    enabled: bool | None = None
    notice_pa: int = 0
    notice_data: int = 0
    notice_sent: bool = False
    cause: int = 0
    reason: str = ""
    record: FaultRecord | None = None


class MrifHost(Protocol):
    """What MRIF delivery needs from the IOMMU core."""

    params: RiscvIommuParams
    mem: PhysicalMemory

    def report_fault(self, record: FaultRecord) -> None: ...


def mrif_slot(mrif_addr: int, identity: int) -> tuple[int, int, int]:
    """``(pending_pa, enable_pa, bit)`` of ``identity`` in the MRIF at ``mrif_addr`` (AIA:
    "Format of a memory-resident interrupt file")."""
    pending = mrif_addr + (identity >> 6) * 16
    return pending, pending + 8, identity & 63


def identity_of(offset: int, data: int, be_supported: bool) -> tuple[int, bool, str]:
    """Classify a 32-bit write of ``data`` at page offset ``offset`` (AIA: "MSI PTE, MRIF mode").

    ``data`` is the value of the four bytes written, read little-endian (as the bus carries
    them). Returns ``(identity, big_endian, reason)``; ``identity`` is -1 and ``reason`` says
    why when the write is discarded.
    """
    offset &= 0xFFF
    big_endian = bool(offset & 4)
    if offset >> 3:
        return -1, big_endian, f"address bits 11:3 are not 0 (page offset {offset:#x})"
    if big_endian and not be_supported:
        return -1, True, "big-endian MSI (address bit 2 is 1) and big-endian MSIs not supported"
    d = (
        int.from_bytes((data & 0xFFFF_FFFF).to_bytes(4, "little"), "big")
        if big_endian
        else data & 0xFFFF_FFFF
    )
    if d >= MRIF_IDENTITIES:
        return -1, big_endian, f"data {d:#x} has bits 31:11 set (identities are 0..2047)"
    return d, big_endian, ""


def _or64(mem: PhysicalMemory, pa: int, mask: int, atomic: bool) -> int:
    """Set ``mask`` in the little-endian doubleword at ``pa``: an AMOOR (a CAS loop on the
    memory's compare-and-swap) or a read-modify-write. Returns the old value."""
    old = mem.read64(pa)
    if not atomic:
        mem.write64(pa, (old | mask) & _M64)
        return old
    while True:
        found = mem.cas64(pa, old, (old | mask) & _M64)
        if found == old:
            return old
        old = found


def deliver(
    host: MrifHost, req: Request, resp: Response, data: int, size: int, dtf: bool
) -> MrifOutcome:
    """Process a device write that translated to an MRIF-mode MSI PTE (see the module
    docstring). ``resp`` is the MRIF-mode :class:`Response` of ``req``; ``dtf`` is the device
    context's ``tc.DTF``. Never raises for any memory image."""
    offset = req.iova & 0xFFF
    if size != 4 or offset & 3:
        return MrifOutcome(
            MRIF_UNSUPPORTED,
            reason=f"a {size}-byte access at page offset {offset:#x} is not a "
            "naturally aligned 32-bit access",
        )
    p = host.params
    identity, big_endian, reason = identity_of(offset, data, p.mrif_be_msi)
    if identity < 0:
        return MrifOutcome(MRIF_DISCARDED, big_endian=big_endian, reason=reason)
    pending_pa, enable_pa, bit = mrif_slot(resp.mrif_addr, identity)
    notice_pa = resp.notice_ppn << 12
    base = MrifOutcome(
        MRIF_RECORDED,
        identity,
        big_endian,
        pending_pa,
        enable_pa,
        bit,
        notice_pa=notice_pa,
        notice_data=resp.notice_nid,
    )
    mem = host.mem
    enabled: bool | None = None
    try:
        _or64(mem, pending_pa, 1 << bit, p.has(cap.AMO_MRIF))
        if p.mrif_notice == "enabled":
            enabled = bool(mem.read64(enable_pa) >> bit & 1)
            if not enabled:
                return replace(base, enabled=False)
        # AIA: "written to the address NPPN<<12 ... in little-endian byte order".
        mem.write32(notice_pa, resp.notice_nid)
    except BusError as e:
        cause = C.MRIF_ACCESS_FAULT if e.kind == ACCESS else C.MRIF_CORRUPTION
        rec = FaultRecord(
            cause, req.ttyp, req.device_id, req.pid_valid, req.process_id, req.priv_req, req.iova
        )
        if not dtf:
            host.report_fault(rec)
        return replace(
            base,
            status=MRIF_FAULT,
            enabled=enabled,
            cause=cause,
            reason=f"{e.kind} fault at {e.pa:#x}",
            record=rec,
        )
    return replace(base, enabled=enabled, notice_sent=True)
