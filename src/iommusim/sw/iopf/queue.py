"""Recoverable I/O page faults, after Linux ``drivers/iommu/io-pgfault.c``.

The IOMMU driver reads page requests from the hardware (for RISC-V the page-request queue,
riscv-iommu: "Page-Request-Queue (PQ)") and reports each one here as a :class:`PageFault`.
PCIe groups page requests into a Page Request Group (PRG) and answers only the request marked
last: a request without the last flag waits on its device's partial list; the last one
gathers every partial request with the same group index into an :class:`IopfGroup` and hands
the group to the ``iopf_handler`` of the domain attached where the fault happened (the PASID's
domain, or the device's domain without a PASID). The handler answers the group once with
:meth:`Iopf.respond`; the answer goes back to the device through the driver (for RISC-V the
ATS.PRGR command). A request no domain handles is answered "invalid" at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from iommusim.errors import ApiError, InvalidArgument

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device
    from iommusim.sw.core.domain import Domain

__all__ = [
    "PERM_EXEC",
    "PERM_PRIV",
    "PERM_READ",
    "PERM_WRITE",
    "RESP_FAILURE",
    "RESP_INVALID",
    "RESP_NAMES",
    "RESP_SUCCESS",
    "Iopf",
    "IopfGroup",
    "IopfStats",
    "PageFault",
]

# iommu_fault_page_request.perm
PERM_READ: Final = 1 << 0
PERM_WRITE: Final = 1 << 1
PERM_EXEC: Final = 1 << 2
PERM_PRIV: Final = 1 << 3
# iommu_page_response.code: PCIe "Success", "Invalid Request", "Response Failure".
RESP_SUCCESS: Final = 0
RESP_INVALID: Final = 1
RESP_FAILURE: Final = 2
RESP_NAMES: Final = {RESP_SUCCESS: "success", RESP_INVALID: "invalid", RESP_FAILURE: "failure"}


@dataclass(frozen=True, slots=True)
class PageFault:
    """One page request: ``addr`` is the page address, ``grpid`` the PRG index."""

    pasid: int | None
    grpid: int
    perm: int
    addr: int
    last: bool


@dataclass(eq=False)
class IopfGroup:
    """A whole Page Request Group, handed to one domain's handler and answered once."""

    dev: Device
    faults: list[PageFault]
    domain: Domain
    cookie: int
    reported_ns: int = 0

    @property
    def last(self) -> PageFault:
        return self.faults[-1]


@dataclass(slots=True)
class IopfStats:
    requests: int = 0
    groups: int = 0
    responses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESP_NAMES.values(), 0))
    unhandled: int = 0  # answered "invalid" at once: no domain handler
    discarded: int = 0  # partial requests dropped (queue overflow, device removal)


class Iopf:
    """The fault core of one machine.

    ``find_domain(dev, pasid)`` names the domain a fault belongs to; ``send(dev, fault, code)``
    delivers a response for the group whose last request is ``fault`` (the driver's
    ``page_response``); ``now()`` timestamps groups.
    """

    def __init__(
        self,
        find_domain: Callable[[Device, int | None], Domain | None],
        send: Callable[[Device, PageFault, int], None],
        now: Callable[[], int] = lambda: 0,
    ) -> None:
        self._find_domain = find_domain
        self._send = send
        self._now = now
        self._partial: dict[Device, list[PageFault]] = {}
        self.pending: dict[int, IopfGroup] = {}
        self._next_cookie = 1
        self.stats = IopfStats()

    def report(self, dev: Device, fault: PageFault) -> None:
        """iommu_report_device_fault for a page request."""
        self.stats.requests += 1
        domain = self._find_domain(dev, fault.pasid)
        if domain is None or domain.iopf_handler is None:
            # "bad iopf": nothing handles it; a request that ends a group gets "invalid".
            self.stats.unhandled += 1
            if fault.last:
                self._answer(dev, fault, RESP_INVALID)
            return
        if not fault.last:
            self._partial.setdefault(dev, []).append(fault)
            return
        partial = self._partial.get(dev, [])
        mine = [f for f in partial if f.grpid == fault.grpid]
        if mine:
            rest = [f for f in partial if f.grpid != fault.grpid]
            if rest:
                self._partial[dev] = rest
            else:
                del self._partial[dev]
        group = IopfGroup(dev, [*mine, fault], domain, self._next_cookie, self._now())
        self._next_cookie += 1
        self.pending[group.cookie] = group
        self.stats.groups += 1
        try:
            domain.iopf_handler(group)
        except ApiError:
            # The handler could not take the group: answer failure (Linux does the same when
            # iopf_handler returns an error).
            if group.cookie in self.pending:
                self.respond(group, RESP_FAILURE)

    def respond(self, group: IopfGroup, code: int) -> None:
        """iopf_group_response: answer ``group`` once (a second answer is EINVAL, as an
        iommufd fault-queue write for a cookie no longer pending)."""
        if code not in RESP_NAMES:
            raise InvalidArgument(f"response code must be one of {sorted(RESP_NAMES)}, not {code}")
        if self.pending.get(group.cookie) is not group:
            raise InvalidArgument(
                f"page-request group {group.cookie} (PRGI "
                f"{group.last.grpid}) is not pending: already answered"
            )
        del self.pending[group.cookie]
        self._answer(group.dev, group.last, code)

    def _answer(self, dev: Device, fault: PageFault, code: int) -> None:
        self.stats.responses[RESP_NAMES[code]] += 1
        self._send(dev, fault, code)

    def discard_partial(self, dev: Device | None = None) -> int:
        """iopf_queue_discard_partial: drop partial requests (all devices when ``dev`` is
        None), after the hardware queue overflowed and a last request may have been lost."""
        devs = list(self._partial) if dev is None else [dev]
        n = 0
        for d in devs:
            n += len(self._partial.pop(d, []))
        self.stats.discarded += n
        return n

    def remove_device(self, dev: Device, pasid: int | None = None) -> None:
        """iopf_queue_remove_device (or, with ``pasid``, the PASID's detach): drop its
        partial requests and answer every pending group "invalid"."""
        had = self._partial.pop(dev, [])
        keep = [f for f in had if pasid is not None and f.pasid != pasid]
        self.stats.discarded += len(had) - len(keep)
        if keep:
            self._partial[dev] = keep
        for g in [
            g
            for g in self.pending.values()
            if g.dev is dev and (pasid is None or g.last.pasid == pasid)
        ]:
            self.respond(g, RESP_INVALID)
