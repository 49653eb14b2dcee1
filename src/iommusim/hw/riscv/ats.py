"""PCIe ATS in the RISC-V IOMMU: translation completions and invalidation tracking.

riscv-iommu: "PCIe ATS translation request handling" (the completion's fields, built by
:func:`ats_response`) and "IOMMU PCIe ATS commands" (an ATS.INVAL is outstanding until its
Invalidation Completions arrive or a protocol-defined timeout passes; an IOFENCE.C behind it
waits, :class:`InvalidationTracker`).
"""

from __future__ import annotations

from iommusim.errors import ModelError
from iommusim.hw.riscv.transaction import STATUS_SUCCESS, Response
from iommusim.hw.riscv.translate import P_R, P_W, P_X
from iommusim.sim.clock import Event, VirtualClock

__all__ = ["InvalidationTracker", "ats_response"]


def ats_response(
    executes: bool, priv: bool, perms: int, addr: int, size_lg2: int, g: int, msi: bool
) -> Response:
    """riscv-iommu: "PCIe ATS translation request handling": completion fields
    (``executes`` and ``priv`` as the request's).

    ``perms`` are what both stages grant: a denied permission is 0, the others as the
    page tables say; X only with R and an execute request. ``g`` is the first-stage
    Global bit (0 without PASID, with a Bare first stage or for an MSI). Global is "set
    to the value determined from the first-stage page tables if translation could be
    successfully completed and the request had a PASID present. In all other cases ...
    set to 0". A permission denial is a translation that "could be successfully
    completed" (the spec's words for it), so it keeps the first-stage G even when it
    grants nothing (public vector ats-000001 step 29 pins that); a translation that
    could not be completed -- a fault in either stage -- is answered with G = 0. Priv is
    the request's (0 without PASID); N, CXL.io and AMA are 0."""
    r = bool(perms & P_R)
    w = bool(perms & P_W)
    x = bool(perms & P_X) and r and executes
    base = addr & ~((1 << size_lg2) - 1)
    if size_lg2 > 12:
        ppn = base >> 12 | ((1 << (size_lg2 - 13)) - 1)
        s = True
    else:
        ppn = base >> 12
        s = False
    return Response(
        STATUS_SUCCESS,
        r=r,
        w=w,
        exe=x,
        priv=priv,
        g=bool(g),
        ppn=ppn,
        s=s,
        size_lg2=size_lg2,
        pa=addr,
        is_msi=msi,
    )


class InvalidationTracker:
    """The ATS.INVAL requests in flight, by ITAG.

    riscv-iommu: "IOMMU PCIe ATS commands": ATS.INVAL "completes when an Invalidation
    Completion response message is received from the device or a protocol-defined timeout
    occurs while waiting for a response". With ``timeout_ns`` (which needs a ``clock``) a
    request times out after that long; the timeout is "reported when a subsequent IOFENCE.C is
    executed" (:meth:`take_timeouts`).
    """

    __slots__ = (
        "_clock",
        "_completions",
        "_next_itag",
        "_pending",
        "_received",
        "_timed_out",
        "_timeout_ns",
        "_timers",
    )

    def __init__(self, clock: VirtualClock | None, timeout_ns: int | None) -> None:
        if timeout_ns is not None and clock is None:
            raise ModelError("ats_inval_timeout_ns needs a clock: pass clock= or set it to None")
        self._clock = clock
        self._timeout_ns = timeout_ns
        self._next_itag = 0
        self._pending: dict[int, int] = {}  # itag -> completions still expected
        self._completions: dict[int, int] = {}  # itag -> completions needed (cc)
        self._received: dict[int, int] = {}  # itag -> completions received
        self._timers: dict[int, Event] = {}
        self._timed_out: set[int] = set()  # itags whose invalidation timed out, unreported

    @property
    def outstanding(self) -> int:
        """Requests still waiting for their completions."""
        return len(self._pending)

    def start(self) -> int:
        """A new ATS.INVAL request: its ITAG, with its timeout armed."""
        itag = self._next_itag
        self._next_itag += 1
        self._pending[itag] = 1
        clock = self._clock
        if self._timeout_ns is not None and clock is not None:
            self._timers[itag] = clock.call_after(
                self._timeout_ns, lambda: self._timed_out_now(itag)
            )
        return itag

    def completion(self, itags: list[int], cc: int) -> None:
        """A PCIe "Invalidation Completion" for the given ITAGs arrived (cc = 0 means 8)."""
        for t in itags:
            if t not in self._pending:
                continue
            # First completion fixes how many completions the request needs (cc).
            need = self._completions.setdefault(t, cc or 8)
            got = self._received.get(t, 0) + 1
            self._received[t] = got
            if got >= need:
                del self._pending[t], self._completions[t], self._received[t]
                timer = self._timers.pop(t, None)
                if timer is not None:
                    timer.cancel()

    def take_timeouts(self) -> bool:
        """Whether some request timed out since the last call (which forgets them)."""
        if not self._timed_out:
            return False
        self._timed_out.clear()
        return True

    def _timed_out_now(self, itag: int) -> None:
        self._timers.pop(itag, None)
        if self._pending.pop(itag, None) is not None:
            self._completions.pop(itag, None)
            self._received.pop(itag, None)
            self._timed_out.add(itag)
