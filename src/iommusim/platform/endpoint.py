"""PCIe-like endpoints whose DMA goes through the IOMMU.

Each endpoint has a requester id (the IOMMU's ``device_id``), optional PASID support and DMA
engines. A DMA of a buffer is split at 4 KiB boundaries; each piece is translated by the IOMMU
(an untranslated request, riscv-iommu: "Process to translate an IOVA") and then carried out on
the bus. A translation fault aborts the DMA at that piece, as a completer abort does on a real
bus: the pieces before it have already reached memory, nothing after it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from iommusim.errors import BusError, InvalidArgument
from iommusim.hw.riscv.transaction import Request

if TYPE_CHECKING:
    from iommusim.platform.system import System

__all__ = ["DmaResult", "Endpoint", "EndpointStats"]

_PAGE: Final = 4096
#: ``DmaResult.cause`` when the IOMMU translated but the bus answered the data access with an
#: error (an unmapped physical address): no IOMMU cause applies, so a value above them all.
CAUSE_BUS_ERROR: Final = 0x10000


@dataclass(frozen=True, slots=True)
class DmaResult:
    """What one DMA did: ``done`` bytes moved; ``cause`` is 0 or the IOMMU fault cause."""

    done: int
    cause: int = 0
    fault_iova: int = 0
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.cause == 0


@dataclass(slots=True)
class EndpointStats:
    dmas: int = 0
    bytes: int = 0
    pages: int = 0
    faults: int = 0


class Endpoint:
    """A bus-mastering device at requester id ``rid``."""

    def __init__(self, system: System, name: str, rid: int, *, pasid_bits: int = 0,
                 kind: str = "generic") -> None:
        self.system = system
        self.name = name
        self.rid = rid
        self.pasid_bits = pasid_bits
        self.kind = kind
        self.stats = EndpointStats()

    def _pieces(self, iova: int, size: int) -> list[tuple[int, int]]:
        if size <= 0:
            raise InvalidArgument(f"DMA size must be positive, not {size}")
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
                f"{self.name}: PASID must be below 2**{self.pasid_bits}, not {pasid}")
        return pasid

    def dma_read(self, iova: int, size: int, pasid: int | None = None,
                 priv: bool = False) -> DmaResult:
        """Read ``size`` bytes at ``iova`` through the IOMMU."""
        pid = self._pid(pasid)
        return self._run(iova, size, None, pid, priv)

    def dma_write(self, iova: int, data: bytes, pasid: int | None = None,
                  priv: bool = False) -> DmaResult:
        """Write ``data`` at ``iova`` through the IOMMU."""
        pid = self._pid(pasid)
        return self._run(iova, len(data), data, pid, priv)

    def msi(self, addr: int, data: int, pasid: int | None = None) -> DmaResult:
        """Signal a message-signalled interrupt: a 32-bit little-endian write of ``data``."""
        return self.dma_write(addr, data.to_bytes(4, "little"), pasid)

    def _mrif_piece(self, va: int, n: int, data: bytes | None, pid: int, priv: bool,
                    chunks: list[bytes]) -> int:
        """A piece that landed on an MRIF-mode interrupt-file page (the fast path's -1): the
        IOMMU itself records a write as an interrupt, a read returns zeros (AIA: "MSI PTE,
        MRIF mode"). Re-presenting the write gives the IOMMU the data it needs. Returns 0 or
        the cause that aborts the DMA."""
        if data is None:
            chunks.append(bytes(n))
            return 0
        req = Request(self.rid, va, True, 0, pid >= 0, max(pid, 0), priv)
        _, out = self.system.iommu.device_write(req, int.from_bytes(data, "little"), n)
        if out is None or out.status == "unsupported":
            return CAUSE_BUS_ERROR
        return out.cause if out.status == "fault" else 0

    def _run(self, iova: int, size: int, data: bytes | None, pid: int,
             priv: bool) -> DmaResult:
        system = self.system
        translate = system.iommu.translate_pa
        bus = system.bus
        ledger = system.ledger
        cost = system.costs.dma_page_ns
        stats = self.stats
        pieces = self._pieces(iova, size)  # EINVAL before anything is counted
        stats.dmas += 1
        is_write = data is not None
        done = 0
        chunks: list[bytes] = []
        for va, n in pieces:
            pa = translate(self.rid, va, is_write, pid, priv)
            if pa == -1:
                cause = self._mrif_piece(va, n, None if data is None else data[done:done + n],
                                         pid, priv, chunks)
            elif pa < 0:
                cause = -pa
            else:
                cause = 0
                try:
                    if data is not None:
                        bus.write(pa, data[done:done + n])
                    else:
                        chunks.append(bus.read(pa, n))
                except BusError:
                    cause = CAUSE_BUS_ERROR
            if cause:
                stats.faults += 1
                return DmaResult(done, cause, va, b"".join(chunks))
            ledger.charge("dma_data", cost)
            stats.pages += 1
            stats.bytes += n
            done += n
        return DmaResult(done, 0, 0, b"".join(chunks))
