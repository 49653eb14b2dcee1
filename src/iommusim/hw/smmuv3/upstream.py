"""The Arm SMMUv3 behind the PCIe upstream port (:mod:`iommusim.hw.common.upstream`), and the
PCIe side below it that its ATS invalidations and PRI responses go out through.

IHI 0070 3.9 / 3.10: for PCIe the StreamID is the Requester ID and the SubstreamID the
PASID. :class:`Smmuv3UpstreamPort` turns memory requests into
:class:`~iommusim.hw.smmuv3.transaction.Request` s (untranslated, or translated with
PCIe AT), ATS Translation Requests into completions (the S-encoded range of the
translation), Page Requests into the PRI queue and Invalidation Completions into the command
queue's CMD_SYNC wait; :class:`Smmuv3DevicePort`, the SMMU's
:class:`~iommusim.hw.smmuv3.ports.DevicePort`, sends Invalidate Requests and Page Request
Group Responses downstream.

Completion Status: a transaction the SMMU terminated with an abort completes UR (as for the
RISC-V IOMMU: a translation fault is not the completer's own abort); a Translation Request
answered with a Completer Abort stays CA; RAZ/WI (CD.A = 0) completes successfully -- reads
return zeros, writes are dropped (IHI 0070 3.12.1).

Stalls (IHI 0070 3.12.2): a stalled transaction is a pending transaction of the platform --
the requester waits, in virtual time, while software (the driver's event-queue handler)
resumes or terminates it; when no completion comes within ``completion_timeout_ns`` (PCIe
Completion Timeout) the requester gives up with UR while the SMMU still holds the stall.
An ATS Invalidate Request whose completion has not arrived after ``atc_timeout_ns`` fails
the next CMD_SYNC (CERROR_ATC_INV_SYNC).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from iommusim.bits.arm.smmuv3_pmcg import PMCG_OFFSET
from iommusim.bits.arm.smmuv3_queues import PRI_RESP_DENY, PRI_RESP_SUCCESS
from iommusim.bits.arm.smmuv3_regs import OFF
from iommusim.bits.pcie import (
    CPL_CA,
    CPL_SC,
    CPL_UR,
    PRG_INVALID_REQUEST,
    PRG_RESPONSE_FAILURE,
    PRG_SUCCESS,
    decode_page_request,
    encode_range,
    inval_payload,
    prg_response_payload,
)
from iommusim.errors import BusError
from iommusim.hw.common.upstream import InvalidateRequest, PrgResponse, TranslationCompletion
from iommusim.hw.smmuv3.ports import AtcStatus
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.hw.smmuv3.transaction import AT_ATS_REQUEST, AT_TRANSLATED, Event, Request, Response
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sim.clock import Event as ClockEvent
from iommusim.sim.clock import VirtualClock

__all__ = ["KIND", "REGISTERS_SIZE", "Smmuv3DevicePort", "Smmuv3UpstreamPort"]

#: The IOMMU kind this adapter serves (the platform's and the kernel's registry key).
KIND: Final = "smmuv3"
#: Register pages 0 and 1 (IHI 0070 6.1), then the model's PMCG page.
REGISTERS_SIZE: Final = PMCG_OFFSET + 0x1000
#: PCIe Completion Timeout the requester applies to a stalled transaction (the PCIe default
#: range is 50 us to 50 ms).
COMPLETION_TIMEOUT_NS: Final = 50_000_000
#: How long the SMMU waits for an Invalidation Completion before CMD_SYNC fails.
ATC_TIMEOUT_NS: Final = 10_000_000
#: CMD_PRI_RESP Resp (IHI 0070 4.5) -> PCIe PRG Response Code (Fail: Response Failure).
_PRG_CODE: Final = {PRI_RESP_SUCCESS: PRG_SUCCESS, PRI_RESP_DENY: PRG_INVALID_REQUEST}

#: Where the device-bound messages go: the message and the PCIe message it carries.
Sink = Callable[[object, InvalidateRequest | PrgResponse | None], None]


class Smmuv3DevicePort:
    """The SMMU's downstream side on the platform: ``sink`` takes each message; ``smmu``
    is set once the SMMU exists (the two are built together), so that an Invalidate Request
    left unanswered times out."""

    __slots__ = ("_timers", "atc_timeout_ns", "clock", "sink", "smmu")

    def __init__(self, sink: Sink, clock: VirtualClock, atc_timeout_ns: int = ATC_TIMEOUT_NS):
        self.sink = sink
        self.clock = clock
        self.atc_timeout_ns = atc_timeout_ns
        self.smmu: Smmuv3 | None = None
        self._timers: dict[int, ClockEvent] = {}

    def atc_invalidate(
        self, sid: int, ssv: bool, ssid: int, addr: int, size_lg2: int, global_: bool, itag: int
    ) -> AtcStatus:
        base = addr >> size_lg2 << size_lg2
        payload = inval_payload(base, 1 << size_lg2, global_)
        smmu = self.smmu
        if smmu is not None:
            self._timers[itag] = self.clock.call_after(
                self.atc_timeout_ns, lambda: smmu.cmdq.atc_timeout(itag)
            )
        msg = InvalidateRequest(sid & 0xFFFF, ssid if ssv else -1, payload, itag)
        self.sink(msg, msg)
        return "pending"

    def completed(self, itag: int) -> None:
        """The Invalidation Completion for ``itag`` arrived: its timeout is cancelled."""
        t = self._timers.pop(itag, None)
        if t is not None:
            t.cancel()

    def pri_response(self, sid: int, ssv: bool, ssid: int, prgi: int, resp: int) -> None:
        code = _PRG_CODE.get(resp, PRG_RESPONSE_FAILURE)
        msg = PrgResponse(sid & 0xFFFF, ssid if ssv else -1, prg_response_payload(prgi, code))
        self.sink(msg, msg)


class Smmuv3UpstreamPort:
    """An endpoint's upstream port into ``smmu``; ``mem`` is what translated requests reach
    (the platform's bus), ``clock`` the virtual time a stalled requester waits in."""

    kind: Final = KIND
    registers_size: Final = REGISTERS_SIZE

    __slots__ = ("_fault", "clock", "completion_timeout_ns", "mem", "smmu")

    def __init__(
        self,
        smmu: Smmuv3,
        mem: PhysicalMemory,
        clock: VirtualClock,
        completion_timeout_ns: int = COMPLETION_TIMEOUT_NS,
    ) -> None:
        self.smmu = smmu
        self.mem = mem
        self.clock = clock
        self.completion_timeout_ns = completion_timeout_ns
        self._fault: Event | None = None

    @property
    def last_fault(self) -> Event | None:
        return self._fault

    def _request(
        self, rid: int, pasid: int, priv: bool, addr: int, write: bool, at: int
    ) -> Response:
        pv = pasid >= 0
        req = Request(rid, addr, write, pv, pasid if pv else 0, priv, at=at)
        resp = self.smmu.translate(req)
        fault = resp.event
        if resp.outcome == "stalled":
            resp = self._wait(rid, resp.stag)
            fault = resp.event or fault
        self._fault = fault
        return resp

    def _wait(self, sid: int, stag: int) -> Response:
        """Let virtual time run until software ends the stall (its completion appears in
        :attr:`Smmuv3.completions`) or the requester's completion timeout expires."""
        smmu = self.smmu
        clock = self.clock
        deadline = clock.now + self.completion_timeout_ns
        while True:
            if clock.running:
                return Response("abort")  # inside an event: no time can pass to wait in
            for i, (s, t, out) in enumerate(smmu.completions):
                if (s, t) == (sid, stag):
                    del smmu.completions[i]
                    return out
            nxt = clock.next_event_ns()
            if nxt is None or nxt > deadline:
                clock.run_until(deadline)
                return Response("abort")
            clock.run_until(nxt)

    # -- memory requests -------------------------------------------------------------------

    def memory_read(
        self, rid: int, pasid: int, priv: bool, addr: int, size: int, translated: bool
    ) -> bytes | int:
        resp = self._request(rid, pasid, priv, addr, False, AT_TRANSLATED if translated else 0)
        if resp.outcome == "raz_wi":
            return bytes(size)
        if not resp.ok:
            return CPL_UR
        try:
            return self.mem.read(resp.pa, size)
        except BusError:
            self._fault = None
            return CPL_UR

    def memory_write(
        self, rid: int, pasid: int, priv: bool, addr: int, data: bytes, translated: bool
    ) -> int:
        resp = self._request(rid, pasid, priv, addr, True, AT_TRANSLATED if translated else 0)
        if resp.outcome == "raz_wi":
            return CPL_SC
        if not resp.ok:
            return CPL_UR
        try:
            self.mem.write(resp.pa, data)
        except BusError:
            self._fault = None
            return CPL_UR
        return CPL_SC

    # -- ATS and PRI -----------------------------------------------------------------------

    def translation_request(
        self, rid: int, pasid: int, priv: bool, addr: int, no_write: bool
    ) -> TranslationCompletion:
        """IHI 0070 3.9.1: the completion carries the translation's permissions and its
        range, S-encoded (a block gives a larger range than the page)."""
        pv = pasid >= 0
        req = Request(
            rid,
            addr & ~0xFFF,
            False,
            pv,
            pasid if pv else 0,
            priv,
            at=AT_ATS_REQUEST,
            no_write=no_write,
        )
        resp = self.smmu.translate(req)
        self._fault = resp.event
        if resp.outcome == "abort":
            return TranslationCompletion(CPL_CA, fault=resp.event)
        if resp.outcome != "ok":
            return TranslationCompletion(CPL_UR, fault=resp.event)
        if not (resp.r or resp.w):
            return TranslationCompletion(CPL_SC, fault=resp.event)
        size = 1 << resp.size_lg2
        pn, s = encode_range(resp.pa & ~(size - 1), size)
        return TranslationCompletion(
            CPL_SC, resp.r, resp.w, False, resp.x, resp.priv, False, pn, s, None
        )

    def page_request(self, rid: int, pasid: int, priv: bool, payload: int) -> None:
        pr = decode_page_request(payload)
        pv = pasid >= 0
        self.smmu.page_request(
            rid,
            pv,
            pasid if pv else 0,
            pr.addr,
            pr.read,
            pr.write,
            False,
            priv,
            pr.last,
            pr.prgi,
        )

    def invalidation_completion(self, rid: int, itag: int, cc: int) -> None:
        port = self.smmu.port
        if isinstance(port, Smmuv3DevicePort):
            port.completed(itag)
        self.smmu.invalidation_completion(rid, itag)

    # -- doorbell --------------------------------------------------------------------------

    @staticmethod
    def is_doorbell(offset: int) -> bool:
        """Whether a register write at ``offset`` asks the SMMU to work: CMDQ_PROD."""
        return offset == OFF.CMDQ_PROD

    def run_commands(self) -> int:
        """Let the SMMU consume what it can of its command queue; how many ran."""
        return self.smmu.cmdq.run()
