"""The upstream port: what a PCIe endpoint sees of the IOMMU above it.

DESIGN "The platform speaks PCIe" (STYLE house rule 5, after an httpx transport): endpoints
depend on :class:`UpstreamPort` alone, and each IOMMU model adapts to it (the RISC-V one in
:mod:`iommusim.hw.riscv.upstream`). Requests carry PCIe's fields -- requester id, PASID
(``-1`` for none, "no PASID TLP prefix"), the privileged-mode bit -- and answers carry a PCIe
Completion Status (:data:`iommusim.bits.pcie.CPL_SC` ...) plus, when the IOMMU faulted, its
own fault record (:attr:`UpstreamPort.last_fault`: architecture-specific, named by its
``name``). Message bodies use the layouts of :mod:`iommusim.bits.pcie`.

Downstream, the IOMMU's messages to a device (:class:`InvalidateRequest`,
:class:`PrgResponse`) name the requester id they are routed to.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = [
    "InvalidateRequest",
    "IommuFault",
    "PrgResponse",
    "TranslationCompletion",
    "UpstreamPort",
]


class IommuFault(Protocol):
    """An IOMMU's own record of a fault (RISC-V: a fault-queue record)."""

    @property
    def name(self) -> str:
        """The architecture's name of the fault (its cause or event)."""
        ...


class TranslationCompletion(NamedTuple):
    """An ATS Translation Completion: ``status`` and, on success, the fields R, W, U
    ("untranslated access only"), Exe, Priv, Global, the translated address as an S-encoded
    page number ``ppn`` with ``s`` (:func:`iommusim.bits.pcie.translation_range`). ``fault``
    is the IOMMU's record when the translation stopped at a fault (also for a success that
    grants nothing), else ``None``."""

    status: int
    r: bool = False
    w: bool = False
    u: bool = False
    exe: bool = False
    priv: bool = False
    g: bool = False
    ppn: int = 0
    s: bool = False
    fault: IommuFault | None = None


class InvalidateRequest(NamedTuple):
    """A PCIe Invalidate Request to requester ``rid``: its body (``payload``,
    :data:`iommusim.bits.pcie.INVAL_REQUEST`), the PASID (-1 for none) and the ITAG its
    Invalidation Completion must name."""

    rid: int
    pasid: int
    payload: int
    itag: int


class PrgResponse(NamedTuple):
    """A PCIe Page Request Group Response to requester ``rid`` (body
    :data:`iommusim.bits.pcie.PRG_RESPONSE`, PASID -1 for none)."""

    rid: int
    pasid: int
    payload: int


class UpstreamPort(Protocol):
    """The requests an endpoint sends upstream, as one IOMMU answers them."""

    @property
    def last_fault(self) -> IommuFault | None:
        """The IOMMU's record of the fault that ended the last failed request."""
        ...

    def memory_read(
        self, rid: int, pasid: int, priv: bool, addr: int, size: int, translated: bool
    ) -> bytes | int:
        """A Memory Read of ``size`` bytes at ``addr`` (within one 4 KiB page): untranslated,
        or ``translated`` (an address from an ATS completion). Returns the data, or the
        Completion Status when it is not Successful (with :attr:`last_fault` the IOMMU's
        record, or ``None`` when the IOMMU saw no fault: nothing decodes the address)."""
        ...

    def memory_write(
        self, rid: int, pasid: int, priv: bool, addr: int, data: bytes, translated: bool
    ) -> int:
        """A Memory Write of ``data`` at ``addr`` (within one 4 KiB page). PCIe writes are
        posted; the model still answers with the status the request would complete with
        (:data:`~iommusim.bits.pcie.CPL_SC` when it reached memory)."""
        ...

    def translation_request(
        self, rid: int, pasid: int, priv: bool, addr: int, no_write: bool
    ) -> TranslationCompletion:
        """An ATS Translation Request for the page at ``addr`` (NW: read access only)."""
        ...

    def page_request(self, rid: int, pasid: int, priv: bool, payload: int) -> None:
        """A PRI Page Request message (body :data:`iommusim.bits.pcie.PAGE_REQUEST`)."""
        ...

    def invalidation_completion(self, rid: int, itag: int, cc: int) -> None:
        """An ATS Invalidation Completion for the request ``itag`` (``cc``: completions the
        device sends for it, 0 meaning 8)."""
        ...
