"""Inbound transactions of an Arm SMMUv3, their outcomes, and event records as data.

IHI 0070 3.2 "Translation" (the attributes a client transaction carries into the SMMU: StreamID,
SubstreamID, RnW, InD, PnU), 3.9 "Address Translation Services" (translated transactions and
Translation Requests), 3.12 "Fault models, recording and reporting" (terminate: abort or
RAZ/WI; stall) and 7.3 "Event records" (:class:`Event`, encoded bit-exactly by
:meth:`Event.record` from the layouts of :mod:`iommusim.bits.arm.smmuv3_queues`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from iommusim.bits.arm.smmuv3_queues import (
    EVENT_LAYOUTS,
    EVENT_NAMES,
    EVT_COMMON,
    PAGE_HINT_FLAGS,
)

__all__ = [
    "AT_ATS_REQUEST",
    "AT_TRANSLATED",
    "AT_UNTRANSLATED",
    "Event",
    "Outcome",
    "Request",
    "Response",
]

#: Request kinds: an untranslated transaction, a transaction on an address an ATS Translation
#: Completion gave (PCIe AT=translated), an ATS Translation Request (IHI 0070 3.9).
AT_UNTRANSLATED: Final = 0
AT_TRANSLATED: Final = 1
AT_ATS_REQUEST: Final = 2


@dataclass(frozen=True, slots=True)
class Request:
    """A client transaction presented to the SMMU (IHI 0070 3.2): ``sid`` (StreamID),
    ``ssid`` when ``ssv`` (SubstreamID valid), the input ``addr``, ``is_write`` (not RnW),
    ``instr`` (InD: instruction fetch), ``priv`` (PnU: privileged), ``at`` one of ``AT_*``,
    and for an ATS Translation Request ``no_write`` (PCIe NW: read-only access requested)."""

    sid: int
    addr: int
    is_write: bool = False
    ssv: bool = False
    ssid: int = 0
    priv: bool = False
    instr: bool = False
    at: int = AT_UNTRANSLATED
    no_write: bool = True


class Event(NamedTuple):
    """One event record (IHI 0070 7.3), field by field; :meth:`record` gives its 32 bytes.
    Fields a record type does not define are ignored when encoding (``EVT_COMMON``: the
    C_BAD_* configuration errors carry only the header)."""

    type: int
    streamid: int
    ssv: bool = False
    substreamid: int = 0
    stag: int = 0
    stall: bool = False
    pnu: bool = False
    ind: bool = False
    rnw: bool = True
    s2: bool = False
    class_: int = 0
    ttrnw: bool = False
    inputaddr: int = 0
    ipa: int = 0
    fetchaddr: int = 0
    #: E_PAGE_REQUEST (IHI 0070 7.3.19): the span in 4 KiB pages and the accesses hinted,
    #: named as the record's flags (``"pr"`` privileged read ... ``"ux"`` unprivileged
    #: execute: :data:`~iommusim.bits.arm.smmuv3_queues.PAGE_HINT_FLAGS`).
    span: int = 0
    hinted: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The event's name (IHI 0070 7.3), e.g. ``"F_TRANSLATION"``."""
        return EVENT_NAMES.get(self.type, f"event {self.type:#x}")

    def record(self) -> bytes:
        """The 32-byte little-endian record (IHI 0070 7.3): IPA and FetchAddr are given as
        byte addresses and stored as IPA[51:12] and FetchAddr[51:3]."""
        lay = EVENT_LAYOUTS.get(self.type, EVT_COMMON)
        values = {
            "type": self.type,
            "ssv": int(self.ssv),
            "substreamid": self.substreamid if self.ssv else 0,
            "streamid": self.streamid,
            "stag": self.stag,
            "stall": int(self.stall),
            "pnu": int(self.pnu),
            "ind": int(self.ind),
            "rnw": int(self.rnw),
            "s2": int(self.s2),
            "class": self.class_,
            "ttrnw": int(self.ttrnw),
            "inputaddr": self.inputaddr,
            "ipa": self.ipa >> 12,
            "fetchaddr": self.fetchaddr >> 3,
            "inputaddr_pn": self.inputaddr >> 12,
            "span": self.span,
            **{flag: int(flag in self.hinted) for flag in PAGE_HINT_FLAGS},
        }
        names = {f.name for f in lay.fields}
        v = lay.encode({k: x for k, x in values.items() if k in names})
        return v.to_bytes(32, "little")

    @classmethod
    def from_record(cls, raw: bytes) -> Event:
        """Decode a 32-byte record (the inverse of :meth:`record` on the fields its type
        defines)."""
        v = int.from_bytes(raw[:32], "little")
        t = EVT_COMMON["type"].get(v)
        f = EVENT_LAYOUTS.get(t, EVT_COMMON).decode(v)
        return cls(
            type=t,
            streamid=f["streamid"],
            ssv=bool(f["ssv"]),
            substreamid=f["substreamid"],
            stag=f.get("stag", 0),
            stall=bool(f.get("stall", 0)),
            pnu=bool(f.get("pnu", 0)),
            ind=bool(f.get("ind", 0)),
            rnw=bool(f.get("rnw", 1)),
            s2=bool(f.get("s2", 0)),
            class_=f.get("class", 0),
            ttrnw=bool(f.get("ttrnw", 0)),
            inputaddr=f.get("inputaddr", f.get("inputaddr_pn", 0) << 12),
            ipa=f.get("ipa", 0) << 12,
            fetchaddr=f.get("fetchaddr", 0) << 3,
            span=f.get("span", 0),
            hinted=tuple(flag for flag in PAGE_HINT_FLAGS if f.get(flag)),
        )


#: How a transaction ended: translated; terminated with an abort; terminated RAZ/WI (reads
#: return zero, writes are ignored: CD.A=0 under IDR0.TERM_MODEL=0); held stalled (IHI 0070
#: 3.12.2 "Stall model") until CMD_RESUME or CMD_STALL_TERM; passed through untranslated
#: (bypass); for an ATS Translation Request, "abort" is a Completer Abort and "ur" an
#: Unsupported Request completion (IHI 0070 3.9.1), "ok" a successful completion (whose
#: permissions may all be 0: a translation fault on an ATS request).
Outcome = Literal["ok", "bypass", "abort", "raz_wi", "stalled", "ur"]


class Response(NamedTuple):
    """The SMMU's answer to a :class:`Request`: the ``outcome``, the output ``pa`` and the
    log2 ``size_lg2`` of the translation it came from, the permissions granted (``r``, ``w``,
    ``x``, ``priv``: what an ATS Translation Completion reports), the ``event`` the SMMU
    generated for it, whether that event is to be ``recorded`` in the event queue (``False``:
    suppressed by CD.R / STE.S2R, IHI 0070 3.12.1) and the ``stag`` of a stalled
    transaction. A NamedTuple: built once per transaction on the hot path."""

    outcome: Outcome
    pa: int = 0
    size_lg2: int = 12
    r: bool = False
    w: bool = False
    x: bool = False
    priv: bool = False
    event: Event | None = None
    recorded: bool = True
    stag: int = -1

    @property
    def ok(self) -> bool:
        """The transaction completed with its translation or in bypass."""
        return self.outcome in ("ok", "bypass")
