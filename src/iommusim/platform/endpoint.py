"""PCIe-like endpoints whose DMA goes through the IOMMU.

Each endpoint has a requester id (the IOMMU's ``device_id``), optional PASID support and DMA
engines. A DMA of a buffer is split at 4 KiB boundaries; each piece is translated by the IOMMU
(an untranslated request, riscv-iommu: "Process to translate an IOVA") and then carried out on
the bus. A translation fault aborts the DMA at that piece, as a completer abort does on a real
bus: the pieces before it have already reached memory, nothing after it does.

An endpoint may also implement PCIe ATS with an address translation cache (:class:`Atc`) and
PRI. Once software enables ATS (:meth:`Endpoint.enable_ats`, the config-space enable), each
piece is looked up in the ATC; a miss sends an ATS Translation Request (riscv-iommu: "PCIe ATS
translation request handling") and the access itself is a Translated request. A completion
that grants no access starts a Page Request Group when PRI is enabled (riscv-iommu: "PCIe ATS
Page Request handling") and the DMA waits on the virtual clock for the group's response. The
IOMMU's Invalidate Requests (riscv-iommu: "IOMMU PCIe ATS commands") drop ATC entries.

The endpoint talks to the IOMMU above it only through its upstream port
(:class:`~iommusim.hw.common.upstream.UpstreamPort`, which every IOMMU model adapts to). A DMA
that stops early says why in PCIe terms (:class:`DmaResult`): the Completion Status of the
request that ended it, the IOMMU's own fault record, and -- when the device gave up on its own
(ATS denied, a Page Request Group that failed) -- an :data:`DmaAbort` reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from iommusim.bits.pcie import (
    CPL_SC,
    CPL_STATUS_NAMES,
    PRG_INVALID_REQUEST,
    PRG_RESPONSE_FAILURE,
    PRG_SUCCESS,
    decode_prg_response,
    inval_range,
    page_request_payload,
    translation_range,
)
from iommusim.errors import InvalidArgument, ModelError
from iommusim.hw.common.upstream import (
    InvalidateRequest,
    IommuFault,
    PrgResponse,
    TranslationCompletion,
    UpstreamPort,
)
from iommusim.platform.atc import Atc

if TYPE_CHECKING:
    from iommusim.platform.system import System

__all__ = [
    "DEFAULT_MAX_DMA_BYTES",
    "DMA_ABORT_NAMES",
    "MAX_DMA_BYTES_LIMIT",
    "DmaAbort",
    "DmaResult",
    "Endpoint",
    "EndpointStats",
    "check_ats_params",
]

_PAGE: Final = 4096

#: Why a device gave up a DMA on its own, with no failed completion behind it (PCIe ATS/PRI):
#: ``"ats_denied"`` a Translation Completion without the needed permission while PRI is
#: disabled or stopped; ``"prg_invalid"`` / ``"prg_failure"`` the Page Request Group was
#: answered Invalid Request / Response Failure (PRI then stops until re-enabled);
#: ``"prg_timeout"`` no response within ``prg_timeout_ns``; ``"prg_retries"`` the page still
#: grants nothing after two successful groups.
DmaAbort = Literal["ats_denied", "prg_invalid", "prg_failure", "prg_timeout", "prg_retries"]
DMA_ABORT_NAMES: Final[dict[str, str]] = {
    "ats_denied": "ATS denied",
    "prg_invalid": "PRG Invalid Request",
    "prg_failure": "PRG Response Failure",
    "prg_timeout": "PRG timeout",
    "prg_retries": "PRG retries exhausted",
}
# How a piece ended when it did not complete: (status, IOMMU fault, device's own reason).
_Stop = tuple[int, IommuFault | None, DmaAbort | None]

#: Default largest transfer one DMA call carries out (``max_dma_bytes``). PCIe itself bounds
#: each request at 4 KiB (Max_Read_Request_Size and Max_Payload_Size are at most 4096 bytes),
#: so a transfer is a train of requests whose length is the device's own, implementation-
#: defined limit (DESIGN rule 5: a parameter). 16 MiB = 4096 request-sized pieces covers
#: what storage and network devices move per command (NVMe MDTS is typically 128 KiB -
#: 2 MiB) and keeps the work one call can cause bounded.
DEFAULT_MAX_DMA_BYTES: Final = 16 << 20
#: The largest ``max_dma_bytes`` allowed: the length of a Linux DMA segment is an
#: ``unsigned int`` (``struct scatterlist.length``, ``dma_set_max_seg_size``), < 4 GiB.
MAX_DMA_BYTES_LIMIT: Final = (1 << 32) - 1
_TOP: Final = 1 << 64
_MSI_DATA_LIMIT: Final = 1 << 32

#: Successful PRG rounds per piece before the DMA gives up ("prg_retries").
_PRG_ROUNDS: Final = 2
_PRGI_COUNT: Final = 1 << 9


def check_ats_params(
    name: str,
    *,
    ats: bool,
    pri: bool,
    atc_entries: int,
    prg_max_pages: int,
    prg_timeout_ns: int,
    ats_inval_delay_ns: int,
    max_dma_bytes: int = DEFAULT_MAX_DMA_BYTES,
) -> None:
    """EINVAL unless the ATS/PRI and DMA parameters of endpoint ``name`` are consistent."""
    if not _PAGE <= max_dma_bytes <= MAX_DMA_BYTES_LIMIT:
        raise InvalidArgument(
            f"endpoint {name!r} max_dma_bytes must be in [{_PAGE}, {MAX_DMA_BYTES_LIMIT}], "
            f"not {max_dma_bytes}"
        )
    if pri and not ats:
        raise InvalidArgument(
            f"endpoint {name!r} pri must be False when ats is False, not True (PCIe PRI needs ATS)"
        )
    if atc_entries < 1:
        raise InvalidArgument(
            f"endpoint {name!r} atc_entries must be at least 1, not {atc_entries}"
        )
    if not 1 <= prg_max_pages <= _PRGI_COUNT:
        raise InvalidArgument(
            f"endpoint {name!r} prg_max_pages must be in [1, {_PRGI_COUNT}], not {prg_max_pages}"
        )
    if prg_timeout_ns <= 0:
        raise InvalidArgument(
            f"endpoint {name!r} prg_timeout_ns must be positive, not {prg_timeout_ns}"
        )
    if ats_inval_delay_ns < 0:
        raise InvalidArgument(
            f"endpoint {name!r} ats_inval_delay_ns must be non-negative, not {ats_inval_delay_ns}"
        )


@dataclass(frozen=True, slots=True)
class DmaResult:
    """What one DMA did: ``done`` bytes moved (``data`` the bytes read). A DMA that stopped
    early did so at ``fault_iova``: ``status`` is the PCIe Completion Status of the request
    that ended it (:data:`~iommusim.bits.pcie.CPL_SC` when the device gave up on its own,
    ``abort`` saying why); ``fault`` is the IOMMU's own record of the fault behind it (``None``
    when the IOMMU saw none: an address nothing decodes)."""

    done: int
    status: int = CPL_SC
    fault: IommuFault | None = None
    abort: DmaAbort | None = None
    fault_iova: int = 0
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == CPL_SC and self.abort is None

    @property
    def outcome(self) -> str:
        """How the DMA ended, by name: ``"none"`` when it completed, else the device's reason,
        the IOMMU's fault or the completion status."""
        if self.ok:
            return "none"
        if self.abort is not None:
            return DMA_ABORT_NAMES[self.abort]
        if self.fault is not None:
            return self.fault.name
        return f"completion {CPL_STATUS_NAMES.get(self.status, hex(self.status))}"


@dataclass(slots=True)
class EndpointStats:
    """What an endpoint did. ``faults`` counts aborted DMAs, whatever the cause.

    ATS and PRI: ``ats_requests`` Translation Requests sent; ``atc_hits`` / ``atc_misses``
    pieces that found / did not find a usable ATC entry; ``translated`` Translated requests;
    ``ats_untranslated`` completions with U = 1 (the piece went untranslated);
    ``page_requests`` and ``prgs`` Page Requests and groups sent; ``prg_success``,
    ``prg_invalid``, ``prg_failure`` responses received for outstanding groups by code;
    ``prg_timeouts`` groups nobody answered in time; ``unexpected_prgr`` responses naming no
    outstanding group (PCIe "Unexpected PRG Index"); ``prg_wait_ns`` virtual time from sending
    a group to its response or timeout; ``ats_invals`` Invalidate Requests received and
    ``atc_dropped`` the ATC entries they removed.
    """

    dmas: int = 0
    bytes: int = 0
    pages: int = 0
    faults: int = 0
    ats_requests: int = 0
    atc_hits: int = 0
    atc_misses: int = 0
    translated: int = 0
    ats_untranslated: int = 0
    page_requests: int = 0
    prgs: int = 0
    prg_success: int = 0
    prg_invalid: int = 0
    prg_failure: int = 0
    prg_timeouts: int = 0
    unexpected_prgr: int = 0
    prg_wait_ns: int = 0
    ats_invals: int = 0
    atc_dropped: int = 0


@dataclass(slots=True)
class _Prg:
    """An outstanding Page Request Group: its response code once one arrives."""

    code: int | None = None


class Endpoint:
    """A bus-mastering device at requester id ``rid``.

    ``ats`` and ``pri`` are the device's capabilities; software turns them on with
    :meth:`enable_ats` and :meth:`enable_pri` (the PCIe config-space enables, off at reset).
    ``atc_entries`` sizes the ATC; ``prg_max_pages`` bounds a Page Request Group;
    ``prg_timeout_ns`` is how long the device waits for a group's response;
    ``ats_inval_delay_ns`` how long it takes to carry out an Invalidate Request (its ATC keeps
    answering from the entries meanwhile). ``max_dma_bytes`` is the largest transfer one
    :meth:`dma_read` / :meth:`dma_write` carries out; a larger one is refused (EINVAL) before
    anything is sent.
    """

    def __init__(
        self,
        system: System,
        name: str,
        rid: int,
        *,
        pasid_bits: int = 0,
        kind: str = "generic",
        ats: bool = False,
        pri: bool = False,
        atc_entries: int = 64,
        prg_max_pages: int = 4,
        prg_timeout_ns: int = 10_000_000,
        ats_inval_delay_ns: int = 0,
        max_dma_bytes: int = DEFAULT_MAX_DMA_BYTES,
    ) -> None:
        check_ats_params(
            name,
            ats=ats,
            pri=pri,
            atc_entries=atc_entries,
            prg_max_pages=prg_max_pages,
            prg_timeout_ns=prg_timeout_ns,
            ats_inval_delay_ns=ats_inval_delay_ns,
            max_dma_bytes=max_dma_bytes,
        )
        self.system = system
        self.name = name
        self.rid = rid
        #: The IOMMU above this endpoint, as PCIe sees it.
        self.port: UpstreamPort = system.upstream_port(rid)
        self.pasid_bits = pasid_bits
        self.kind = kind
        self.stats = EndpointStats()
        self.ats_capable = ats
        self.pri_capable = pri
        self.ats_enabled = False
        self.pri_enabled = False
        #: Set by a "Response Failure": PCIe stops the page request interface until software
        #: enables PRI again.
        self.pri_stopped = False
        self.atc = Atc(atc_entries)
        self.prg_max_pages = prg_max_pages
        self.prg_timeout_ns = prg_timeout_ns
        self.ats_inval_delay_ns = ats_inval_delay_ns
        self.max_dma_bytes = max_dma_bytes
        self._prgs: dict[int, _Prg] = {}  # PRGI -> outstanding group
        self._next_prgi = 0

    # ------------------------------------------------------------------ config space
    def enable_ats(self, on: bool) -> None:
        """Set the ATS Enable bit; EINVAL without the capability or, to disable, while PRI is
        enabled (disable PRI first). Disabling ATS empties the ATC."""
        if not self.ats_capable:
            raise InvalidArgument(
                f"{self.name}: ATS must be supported to be enabled or disabled, not absent"
            )
        if not on and self.pri_enabled:
            raise InvalidArgument(f"{self.name}: PRI must be disabled before ATS, not enabled")
        self.ats_enabled = on
        if not on:
            self.atc.clear()

    def enable_pri(self, on: bool) -> None:
        """Set the PRI Enable bit; EINVAL without the capability or, to enable, with ATS
        disabled. Enabling clears :attr:`pri_stopped`."""
        if not self.pri_capable:
            raise InvalidArgument(
                f"{self.name}: PRI must be supported to be enabled or disabled, not absent"
            )
        if on and not self.ats_enabled:
            raise InvalidArgument(f"{self.name}: ATS must be enabled before PRI, not disabled")
        self.pri_enabled = on
        if on:
            self.pri_stopped = False

    def _pieces(self, iova: int, size: int) -> list[tuple[int, int]]:
        """The 4 KiB pieces of a DMA, after refusing (EINVAL, nothing sent) an empty or
        oversized transfer and one outside the 64-bit address space: a request cannot
        carry a negative address, nor one whose range wraps past 2^64 (PCIe addresses are
        64-bit and a request must not cross the top of the address space)."""
        if size <= 0:
            raise InvalidArgument(f"DMA size must be positive, not {size}")
        if size > self.max_dma_bytes:
            raise InvalidArgument(
                f"{self.name}: DMA size must be at most max_dma_bytes "
                f"{self.max_dma_bytes:#x}, not {size:#x}"
            )
        if iova < 0 or iova + size > _TOP:
            raise InvalidArgument(
                f"{self.name}: DMA range {iova:#x}+{size:#x} must lie within [0, 2^64)"
            )
        out = []
        end = iova + size
        while iova < end:
            n = min(end, (iova | (_PAGE - 1)) + 1) - iova
            out.append((iova, n))
            iova += n
        return out

    def _pid(self, pasid: int | None) -> int:
        if pasid is None:
            return -1
        if not self.pasid_bits or not 0 <= pasid < (1 << self.pasid_bits):  # no PASID cap
            raise InvalidArgument(
                f"{self.name}: PASID must be below 2**{self.pasid_bits}, not {pasid}"
            )
        return pasid

    def dma_read(
        self, iova: int, size: int, pasid: int | None = None, priv: bool = False
    ) -> DmaResult:
        """Read ``size`` bytes at ``iova`` through the IOMMU."""
        return self._run(iova, size, None, self._pid(pasid), priv)

    def dma_write(
        self, iova: int, data: bytes, pasid: int | None = None, priv: bool = False
    ) -> DmaResult:
        """Write ``data`` at ``iova`` through the IOMMU."""
        return self._run(iova, len(data), data, self._pid(pasid), priv)

    def msi(self, addr: int, data: int, pasid: int | None = None) -> DmaResult:
        """Signal a message-signalled interrupt: a 32-bit little-endian write of ``data``.

        EINVAL, nothing sent, for ``data`` outside 32 bits or an ``addr`` that is not
        4-byte aligned (PCIe "MSI Capability": the Message Data is 16 or 32 bits, the Message
        Address is DWORD aligned, bits 1:0 reserved)."""
        if not 0 <= data < _MSI_DATA_LIMIT:
            raise InvalidArgument(f"{self.name}: MSI data must fit 32 bits, not {data:#x}")
        if addr & 3:
            raise InvalidArgument(f"{self.name}: MSI address must be 4-byte aligned, not {addr:#x}")
        return self.dma_write(addr, data.to_bytes(4, "little"), pasid)

    def _request(
        self,
        addr: int,
        n: int,
        data: bytes | None,
        pid: int,
        priv: bool,
        chunks: list[bytes],
        translated: bool,
    ) -> _Stop | None:
        """One memory request of the DMA upstream: a read of ``n`` bytes (appended to
        ``chunks``) or a write of ``data``. ``None`` when it completed, else how it ended."""
        port = self.port
        if data is None:
            got = port.memory_read(self.rid, pid, priv, addr, n, translated)
            if isinstance(got, int):
                return got, port.last_fault, None
            chunks.append(got)
            return None
        status = port.memory_write(self.rid, pid, priv, addr, data, translated)
        return None if status == CPL_SC else (status, port.last_fault, None)

    def _run(self, iova: int, size: int, data: bytes | None, pid: int, priv: bool) -> DmaResult:
        """A DMA: each piece an untranslated request, or with ATS enabled a Translated one
        after the ATC or a Translation Request (:meth:`_ats_piece`)."""
        system = self.system
        ledger = system.ledger
        cost = system.costs.dma_page_ns
        stats = self.stats
        pieces = self._pieces(iova, size)  # EINVAL before anything is counted
        stats.dmas += 1
        ats = self.ats_enabled
        if ats:
            # A completion's Priv is 0 for a request without a PASID (riscv-iommu: "PCIe ATS
            # translation request handling"), so such requests share the unprivileged entries.
            priv = priv and pid >= 0
        done = 0
        chunks: list[bytes] = []
        for i, (va, n) in enumerate(pieces):
            chunk = None if data is None else data[done : done + n]
            if ats:
                stop = self._ats_piece(pieces, i, chunk, pid, priv, chunks)
            else:
                stop = self._request(va, n, chunk, pid, priv, chunks, False)
            if stop is not None:
                stats.faults += 1
                return DmaResult(done, *stop, va, b"".join(chunks))
            ledger.charge("dma_data", cost)
            stats.pages += 1
            stats.bytes += n
            done += n
        return DmaResult(done, data=b"".join(chunks))

    # ------------------------------------------------------------------ ATS and PRI
    def _ats_piece(
        self,
        pieces: list[tuple[int, int]],
        i: int,
        data: bytes | None,
        pid: int,
        priv: bool,
        chunks: list[bytes],
    ) -> _Stop | None:
        """Piece ``i``: its translated page from the ATC or a Translation Request, then a
        Translated request. ``None`` when it completed, else how it ended."""
        va, n = pieces[i]
        stop, pa_base = self._ats_translate(pieces, i, pid, priv, data is not None)
        if stop is not None:
            return stop
        if pa_base < 0:
            # U = 1, "Untranslated access only" (an MRIF-mode MSI page, riscv-iommu: "PCIe
            # ATS translation request handling"): an untranslated request.
            return self._request(va, n, data, pid, priv, chunks, False)
        # The Translated request carries no PASID: PCIe makes a PASID on Translated requests
        # optional and this device does not send one.
        self.stats.translated += 1
        return self._request(pa_base | (va & 0xFFF), n, data, -1, False, chunks, True)

    def _ats_translate(
        self, pieces: list[tuple[int, int]], i: int, pid: int, priv: bool, is_write: bool
    ) -> tuple[_Stop | None, int]:
        """``(how the piece ended or None, translated page base)`` of piece ``i``; base -1
        without a stop means "untranslated access only".

        riscv-iommu: "PCIe ATS translation request handling": UR and CA completions end the
        DMA with that status; a Success completion without the needed permission (a page
        fault, a read-only page) starts a Page Request Group when PRI is enabled and running,
        and the Translation Request is repeated after a Success response.
        """
        va = pieces[i][0]
        vpn = va >> 12
        stats = self.stats
        hit = self.atc.lookup(pid, vpn, priv)
        if hit is not None and hit.allows(is_write):
            stats.atc_hits += 1
            return None, hit.pa_page_base
        stats.atc_misses += 1
        rounds = 0
        while True:
            cpl = self._translation_request(va, pid, priv, is_write)
            if cpl.status != CPL_SC:
                return (cpl.status, cpl.fault, None), -1
            if cpl.u:
                stats.ats_untranslated += 1
                return None, -1
            if cpl.w if is_write else cpl.r:
                base, size = translation_range(cpl.ppn, cpl.s)
                pa_base = base | (va & (size - 1) & ~0xFFF)
                self.atc.insert(pid, vpn, pa_base, cpl.r, cpl.w, priv)
                return None, pa_base
            abort: DmaAbort | None
            if not self.pri_enabled or self.pri_stopped:
                abort = "ats_denied"
            elif rounds == _PRG_ROUNDS:
                abort = "prg_retries"
            else:
                rounds += 1
                abort = self._prg_round(pieces, i, pid, priv, is_write)
            if abort is not None:
                return (CPL_SC, cpl.fault, abort), -1

    def _translation_request(
        self, va: int, pid: int, priv: bool, is_write: bool
    ) -> TranslationCompletion:
        system = self.system
        system.ledger.charge("ats", system.costs.pcie_msg_ns, 2)  # request and completion
        self.stats.ats_requests += 1
        # NW (no-write) asks for read access only; a write needs NW = 0.
        return self.port.translation_request(self.rid, pid, priv, va & ~0xFFF, not is_write)

    def _prg_round(
        self, pieces: list[tuple[int, int]], i: int, pid: int, priv: bool, is_write: bool
    ) -> DmaAbort | None:
        """One Page Request Group for piece ``i``: ``None`` once answered Success, else why
        the DMA gives up."""
        code, pages = self._page_request_group(pieces, i, pid, priv, is_write, self.prg_max_pages)
        if code == PRG_INVALID_REQUEST and pages > 1:
            # The group also asked for pages ahead of the fault that the DMA has not reached
            # and may never reach (it can abort first); software may have refused one of
            # those (beyond the end of a mapping) and answered for the group as a whole. Ask
            # once more for the faulting page alone, so that the outcome of this piece does
            # not depend on pages the DMA never reached.
            code, _ = self._page_request_group(pieces, i, pid, priv, is_write, 1)
        if code is None:
            return "prg_timeout"
        if code == PRG_SUCCESS:
            return None
        if code == PRG_INVALID_REQUEST:
            return "prg_invalid"
        # Response Failure: PCIe treats it as a catastrophic error of the page request
        # interface, which stops ("Stopped") until software enables PRI again.
        self.pri_stopped = True
        return "prg_failure"

    def _page_request_group(
        self,
        pieces: list[tuple[int, int]],
        i: int,
        pid: int,
        priv: bool,
        is_write: bool,
        max_pages: int,
    ) -> tuple[int | None, int]:
        """Send a Page Request Group for piece ``i`` and the next pieces of the DMA that the
        ATC cannot serve, up to ``max_pages``, then wait for its response.

        riscv-iommu: "PCIe ATS Page Request handling": one Page Request per page, L set on
        the last only; the IOMMU queues them in the PQ (or answers itself). Returns the
        response code (``None`` on timeout) and the number of pages asked for.
        """
        atc = self.atc
        vpns = [pieces[i][0] >> 12]
        for va, _ in pieces[i + 1 :]:
            if len(vpns) >= max_pages:
                break
            hit = atc.peek(pid, va >> 12, priv)
            if hit is None or not hit.allows(is_write):
                vpns.append(va >> 12)
        system = self.system
        port = self.port
        stats = self.stats
        prgi = self._alloc_prgi()
        group = _Prg()
        self._prgs[prgi] = group  # before sending: the IOMMU may answer during the call
        stats.prgs += 1
        rid = self.rid
        last = len(vpns) - 1
        system.settle()  # the wait starts when the group leaves the device
        start = system.clock.now
        for k, vpn in enumerate(vpns):
            payload = page_request_payload(
                vpn << 12, prgi, read=not is_write, write=is_write, last=k == last
            )
            stats.page_requests += 1
            system.ledger.charge("ats", system.costs.pcie_msg_ns)
            port.page_request(rid, pid, priv, payload)
        system.settle()  # the requests' legs and the IOMMU's work on them
        # The device's timer runs from when the group left it.
        left = max(0, self.prg_timeout_ns - (system.clock.now - start))
        system.wait_for(lambda: group.code is not None, left)
        stats.prg_wait_ns += system.clock.now - start
        if group.code is None:
            # Give the index up: a response that still arrives is an Unexpected PRG Index.
            self._prgs.pop(prgi, None)
            stats.prg_timeouts += 1
        return group.code, len(vpns)

    def _alloc_prgi(self) -> int:
        """The next of the 9-bit Page Request Group Indices that is not outstanding, in
        rotation, so a late response is unlikely to match a newer group."""
        for _ in range(_PRGI_COUNT):
            prgi = self._next_prgi
            self._next_prgi = (prgi + 1) % _PRGI_COUNT
            if prgi not in self._prgs:
                return prgi
        raise ModelError(
            f"{self.name}: all {_PRGI_COUNT} page request group indices are outstanding"
        )

    def prg_response(self, msg: PrgResponse) -> None:
        """A Page Request Group Response arrived (an ``ATS.PRGR`` command or the IOMMU's own
        response, riscv-iommu: "IOMMU PCIe ATS commands", "PCIe ATS Page Request handling").

        The group is matched by its index alone. A response naming no outstanding group is
        counted as an "Unexpected PRG Index" and otherwise ignored. Response codes other
        than Success and Invalid Request count as Response Failure.
        """
        system = self.system
        system.ledger.charge("ats", system.costs.pcie_msg_ns)
        prgi, code = decode_prg_response(msg.payload)
        group = self._prgs.pop(prgi, None)
        stats = self.stats
        if group is None:
            stats.unexpected_prgr += 1
            return
        if code == PRG_SUCCESS:
            stats.prg_success += 1
        elif code == PRG_INVALID_REQUEST:
            stats.prg_invalid += 1
        else:
            code = PRG_RESPONSE_FAILURE
            stats.prg_failure += 1
        group.code = code

    def ats_invalidate(self, msg: InvalidateRequest) -> None:
        """An Invalidate Request arrived (``ATS.INVAL``, riscv-iommu: "IOMMU PCIe ATS
        commands"): drop the ATC entries of the range and send the Invalidation Completion.

        With ``ats_inval_delay_ns`` the device takes that long: its ATC keeps answering from
        the old entries until then, and the completion (and with it an ``IOFENCE.C`` stalled
        behind the request) waits as long. A device without the ATS capability ignores the
        request (an Unsupported Request; the IOMMU's ATS.INVAL timeout, if any, applies).
        """
        if not self.ats_capable:
            return
        system = self.system
        costs = system.costs
        system.ledger.charge("ats", costs.pcie_msg_ns, 2)  # request and completion
        system.ledger.charge("ats", costs.atc_inval_ns)
        self.stats.ats_invals += 1
        start, size = inval_range(msg.payload)
        # With a PASID, G (bit 0) also asks for the global translations of every PASID; the
        # ATC does not remember G, so such a request drops the range for every PASID.
        pasid = msg.pasid if msg.pasid >= 0 and not msg.payload & 1 else None
        itag = msg.itag
        if not self.ats_inval_delay_ns:
            # Safe inside the IOMMU's command processing: the ATS.INVAL is pending before its
            # message goes out, so this completion retires it.
            self._finish_invalidation(pasid, start, size, itag)
            return

        def finish_late() -> None:
            self._finish_invalidation(pasid, start, size, itag)
            # An IOFENCE.C may be waiting for this completion: let the queue move on.
            system.run_commands()

        system.clock.call_after(self.ats_inval_delay_ns, finish_late)

    def _finish_invalidation(self, pasid: int | None, start: int, size: int, itag: int) -> None:
        self.stats.atc_dropped += self.atc.invalidate(pasid, start, size)
        self.port.invalidation_completion(self.rid, itag, 1)
