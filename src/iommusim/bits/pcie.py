"""PCIe ATS and PRI message bodies: layouts and the ATS range encoding.

The RISC-V IOMMU passes these bodies through without interpreting them (riscv-iommu: "IOMMU
PCIe ATS commands": "The PAYLOAD operand of the command is used to form the message body and
its fields are as specified by the PCIe specification"), so the driver that builds them and
the endpoint that obeys them share this codec.

Range encoding (PCIe ATS; riscv-iommu: "PCIe ATS translation request handling" and the
``ATS.INVAL`` payload): an address with ``S = 0`` names one 4 KiB page. With ``S = 1`` the
address bits from 12 up to the first 0 bit are all 1 and that first 0 bit, at position
``log2(size) - 1``, marks the size: ``size = 2 ** (position + 1)``; the bits above it are the
naturally aligned base. An Invalidate Request with bits 62:12 set and bit 63 clear (S = 1)
covers the whole 64-bit address space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iommusim.bits.fields import layout
from iommusim.errors import InvalidArgument

__all__ = [
    "ALL_LAYOUTS",
    "CPL_CA",
    "CPL_SC",
    "CPL_STATUS_NAMES",
    "CPL_UR",
    "INVAL_REQUEST",
    "PAGE_REQUEST",
    "PRG_INVALID_REQUEST",
    "PRG_RESPONSE",
    "PRG_RESPONSE_FAILURE",
    "PRG_SUCCESS",
    "PageRequest",
    "covering_range",
    "decode_page_request",
    "decode_prg_response",
    "decode_range",
    "encode_range",
    "inval_payload",
    "inval_range",
    "page_request_payload",
    "prg_response_payload",
    "translation_range",
]

# riscv-iommu: "IOMMU PCIe ATS commands": PAYLOAD of an ATS.INVAL command (the PCIe
# Invalidate Request body).
INVAL_REQUEST: Final = layout(
    "pcie.inval_request",
    64,
    "PCIe Invalidate Request body (ATS.INVAL payload)",
    ("g", 0, 1),
    ("s", 11, 1),
    ("uaddr", 12, 52),
)
# riscv-iommu: "Page-Request-Queue (PQ)": the PAYLOAD of a PQ record is the PCIe Page Request
# message body: R, W, L, the Page Request Group Index and the page address.
PAGE_REQUEST: Final = layout(
    "pcie.page_request",
    64,
    "PCIe Page Request body (PQ record payload)",
    ("r", 0, 1),
    ("w", 1, 1),
    ("l", 2, 1),
    ("prgi", 3, 9),
    ("addr", 12, 52),
)
# riscv-iommu: "IOMMU PCIe ATS commands": PAYLOAD of an ATS.PRGR command. DST_ID (the
# requester id the response is routed to) is filled in by the IOMMU's own automatic responses
# (riscv-iommu: "PCIe ATS Page Request handling").
PRG_RESPONSE: Final = layout(
    "pcie.prg_response",
    64,
    "PCIe Page Request Group Response body (ATS.PRGR payload)",
    ("prgi", 32, 9),
    ("code", 44, 4),
    ("dst_id", 48, 16),
)

ALL_LAYOUTS: Final = (INVAL_REQUEST, PAGE_REQUEST, PRG_RESPONSE)

#: Page Request Group Response codes (riscv-iommu: "PCIe ATS Page Request handling").
PRG_SUCCESS: Final = 0
PRG_INVALID_REQUEST: Final = 1
PRG_RESPONSE_FAILURE: Final = 0xF

#: PCIe Completion Status codes (the Cpl header's 3-bit Completion Status field): Successful
#: Completion, Unsupported Request, Completer Abort. riscv-iommu: "Aborting transactions": for
#: a faulting read "the completion status field may be set to Unsupported Request (UR) or
#: Completer Abort (CA)"; "Reliability, Availability, and Serviceability": CA "is appropriate"
#: for a transaction aborted by corrupted data.
CPL_SC: Final = 0b000
CPL_UR: Final = 0b001
CPL_CA: Final = 0b100
CPL_STATUS_NAMES: Final[dict[int, str]] = {CPL_SC: "SC", CPL_UR: "UR", CPL_CA: "CA"}

_PAGE_LG2: Final = 12
_PN_BITS: Final = 52  # address bits 63:12
_PN_MASK: Final = (1 << _PN_BITS) - 1
_ALL: Final = 1 << 64


def covering_range(start: int, size: int) -> tuple[int, int]:
    """The smallest naturally aligned power-of-two range of at least 4 KiB that covers
    ``[start, start + size)``, as ``(base, size)``; EINVAL outside the 64-bit space."""
    if size <= 0 or start < 0 or start + size > _ALL:
        raise InvalidArgument(
            f"range must be non-empty within the 64-bit address space, not start {start:#x} "
            f"size {size:#x}"
        )
    last = start + size - 1
    lg2 = max(_PAGE_LG2, (start ^ last).bit_length())
    return start & ~((1 << lg2) - 1), 1 << lg2


def encode_range(base: int, size: int) -> tuple[int, bool]:
    """``(page number, S)`` naming the naturally aligned range ``[base, base + size)``.

    ``size`` must be a power of two of at least 4 KiB and ``base`` a multiple of it (EINVAL
    otherwise). The whole space (``size == 2**64``) is bits 62:12 set, bit 63 clear.
    """
    if size < 1 << _PAGE_LG2 or size & (size - 1) or size > _ALL:
        raise InvalidArgument(f"range size must be a power of two in [4 KiB, 2**64], not {size:#x}")
    if base < 0 or base % size or base + size > _ALL:
        raise InvalidArgument(
            f"range base must be a multiple of its size {size:#x} within "
            f"the 64-bit address space, not {base:#x}"
        )
    lg2 = size.bit_length() - 1
    if lg2 == _PAGE_LG2:
        return base >> _PAGE_LG2, False
    return (base >> _PAGE_LG2) | ((1 << (lg2 - _PAGE_LG2 - 1)) - 1), True


def decode_range(pn: int, s: bool) -> tuple[int, int]:
    """``(base, size)`` of an S-encoded page number (``pn`` is address bits 63:12)."""
    pn &= _PN_MASK
    if not s:
        return pn << _PAGE_LG2, 1 << _PAGE_LG2
    ones = (pn ^ (pn + 1)).bit_length() - 1  # trailing 1 bits
    if ones >= _PN_BITS - 1:  # bits 62:12 (or all of 63:12) set: everything
        return 0, _ALL
    size_lg2 = _PAGE_LG2 + ones + 1
    return (pn << _PAGE_LG2) & ~((1 << size_lg2) - 1), 1 << size_lg2


def inval_payload(start: int, size: int, global_: bool = False) -> int:
    """An Invalidate Request body (the ``ATS.INVAL`` PAYLOAD) for the smallest naturally
    aligned power-of-two range of at least 4 KiB covering ``[start, start + size)``; ``global_``
    sets G (riscv-iommu: "IOMMU PCIe ATS commands")."""
    pn, s = encode_range(*covering_range(start, size))
    return pn << _PAGE_LG2 | int(s) << 11 | int(global_)


def inval_range(payload: int) -> tuple[int, int]:
    """``(start, size)`` an Invalidate Request body names; ``size == 2**64`` means all."""
    return decode_range(payload >> _PAGE_LG2, bool(payload >> 11 & 1))


def translation_range(ppn_s_encoded: int, s: bool) -> tuple[int, int]:
    """``(base, size)`` of an ATS Translation Completion's translated address and S bit
    (riscv-iommu: "PCIe ATS translation request handling"; the ``ppn`` of a response)."""
    return decode_range(ppn_s_encoded, s)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A decoded Page Request body (PCIe R, W and L as ``read``, ``write``, ``last``); a Stop
    Marker is ``last`` with neither ``read`` nor ``write``."""

    addr: int
    prgi: int
    read: bool
    write: bool
    last: bool

    @property
    def stop_marker(self) -> bool:
        return self.last and not (self.read or self.write)


def page_request_payload(addr: int, prgi: int, *, read: bool, write: bool, last: bool) -> int:
    """A Page Request body for the page at ``addr`` in group ``prgi`` (9 bits)."""
    if not 0 <= prgi < 1 << 9:
        raise InvalidArgument(f"page request group index must fit 9 bits, not {prgi}")
    if not 0 <= addr < _ALL:
        raise InvalidArgument(f"page address must lie in the 64-bit space, not {addr:#x}")
    return (addr & ~0xFFF) | prgi << 3 | int(last) << 2 | int(write) << 1 | int(read)


def decode_page_request(payload: int) -> PageRequest:
    return PageRequest(
        payload & (_PN_MASK << _PAGE_LG2),
        payload >> 3 & 0x1FF,
        bool(payload & 1),
        bool(payload >> 1 & 1),
        bool(payload >> 2 & 1),
    )


def prg_response_payload(prgi: int, code: int, dst_id: int = 0) -> int:
    """A Page Request Group Response body (the ``ATS.PRGR`` PAYLOAD)."""
    if not (0 <= prgi < 1 << 9 and 0 <= code < 16 and 0 <= dst_id < 1 << 16):
        raise InvalidArgument(
            f"PRG response fields must fit (prgi 9 bits, code 4, dst_id 16), "
            f"not {prgi:#x}, {code:#x}, {dst_id:#x}"
        )
    return PRG_RESPONSE.encode(prgi=prgi, code=code, dst_id=dst_id)


def decode_prg_response(payload: int) -> tuple[int, int]:
    """``(prgi, response code)`` of a Page Request Group Response body."""
    return payload >> 32 & 0x1FF, payload >> 44 & 0xF
