"""What the SMMUv3 front end (registers, queues, interrupts) talks to.

Two op tables (STYLE house rule 4): :class:`TranslatorPort`, the translation engine and its
caches as the command queue and the register file drive them (the split of
``notes/smmuv3-contract.md``: :class:`iommusim.hw.smmuv3.translator.Smmuv3Translator`
implements it), and :class:`DevicePort`, the PCIe side below the SMMU that ATS invalidations
and PRI responses go out through (IHI 0070 3.9 "Address Translation Services", 8 "Page
request queue"). :class:`NullDevicePort` is the port of an SMMU with no endpoint attached.
"""

from __future__ import annotations

from typing import Literal, Protocol

from iommusim.hw.smmuv3.maintenance import CacheMaintenance, TranslationCounts
from iommusim.hw.smmuv3.transaction import Request, Response

__all__ = ["AtcStatus", "DevicePort", "NullDevicePort", "TranslatorPort"]

#: What became of an ATS Invalidate Request (see :meth:`DevicePort.atc_invalidate`).
AtcStatus = Literal["done", "pending", "failed"]


class TranslatorPort(CacheMaintenance, Protocol):
    """The translator as the front end sees it; none of these raises for any argument.

    Attributes mirror register state the front end owns: ``enabled`` is CR0.SMMUEN,
    ``gbpa_abort`` GBPA.ABORT (what a transaction meets while SMMUEN is 0, IHI 0070 6.3
    SMMU_GBPA), ``record_bad_sid``/``e2h``/``ptm`` the CR2 fields."""

    enabled: bool
    gbpa_abort: bool
    record_bad_sid: bool
    ptm: bool
    e2h: bool
    counts: TranslationCounts

    def set_stream_table(self, base: int, log2size: int, fmt: int, split: int) -> None:
        """Latch STRTAB_BASE (byte address) and STRTAB_BASE_CFG (IHI 0070 6.3)."""
        ...

    def translate(self, req: Request) -> Response:
        """One transaction (IHI 0070 3.2); the event to record rides on the response."""
        ...

    def resume(self, sid: int, stag: int, retry: bool) -> Response | None:
        """CMD_RESUME of the stalled transaction ``sid``/``stag``: retried or terminated
        with an abort (IHI 0070 4.6); ``None`` when no such transaction is stalled."""
        ...

    def stall_term(self, sid: int) -> list[int]:
        """CMD_STALL_TERM: terminate every stalled transaction of ``sid``; the count."""
        ...

    def stalled(self) -> list[tuple[int, int, Request]]:
        """The stalled transactions, as ``(sid, stag, request)``."""
        ...

    def invalidate_all(self) -> None:
        """Drop every cached structure and translation."""
        ...


class DevicePort(Protocol):
    """The downstream PCIe side: messages the SMMU sends to endpoints by StreamID (IHI 0070
    3.9: StreamID[15:0] is the PCIe RequesterID)."""

    def atc_invalidate(
        self, sid: int, ssv: bool, ssid: int, addr: int, size_lg2: int, global_: bool, itag: int
    ) -> AtcStatus:
        """CMD_ATC_INV: an ATS Invalidate Request for ``2**size_lg2`` bytes at ``addr``
        (PASID ``ssid`` when ``ssv``), tagged ``itag``. ``"done"``: its Invalidation
        Completion has arrived; ``"pending"``: it will arrive later, through
        :meth:`iommusim.hw.smmuv3.smmu.Smmuv3.invalidation_completion` -- a CMD_SYNC waits
        for it; ``"failed"``: none will (no ATS function answers), and the next CMD_SYNC
        fails with CERROR_ATC_INV_SYNC (IHI 0070 4.5, 7.1)."""
        ...

    def pri_response(self, sid: int, ssv: bool, ssid: int, prgi: int, resp: int) -> None:
        """A PRG Response (``resp``: :data:`~iommusim.bits.arm.smmuv3_queues.PRI_RESP_DENY`,
        ``_FAIL`` or ``_SUCCESS``), from CMD_PRI_RESP or the SMMU's own automatic response
        (IHI 0070 4.5, 8.2)."""
        ...


class NullDevicePort:
    """No endpoint: invalidations complete at once, responses go nowhere."""

    __slots__ = ()

    def atc_invalidate(
        self, sid: int, ssv: bool, ssid: int, addr: int, size_lg2: int, global_: bool, itag: int
    ) -> AtcStatus:
        return "done"

    def pri_response(self, sid: int, ssv: bool, ssid: int, prgi: int, resp: int) -> None:
        return None
