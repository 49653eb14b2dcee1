"""Inbound requests, their completions, and outbound messages of the RISC-V IOMMU.

riscv-iommu: "Process to translate an IOVA", "PCIe ATS translation request handling",
"Fault record TTYP field encodings".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "AT_NAMES",
    "STATUS_CA",
    "STATUS_SUCCESS",
    "STATUS_UR",
    "Message",
    "Request",
    "Response",
]

STATUS_SUCCESS: Final = "success"
STATUS_UR: Final = "ur"
STATUS_CA: Final = "ca"

#: Request address types by name; values are the ``at`` codes of the translation engine.
AT_NAMES: Final = {"untranslated": 0, "translated": 1, "ats": 2}


@dataclass(frozen=True, slots=True)
class Request:
    """A device transaction presented to the IOMMU.

    ``at`` is 0 untranslated, 1 translated, 2 PCIe ATS translation request. ``no_write`` is
    the ATS NW flag; ``is_write`` the direction of an untranslated/translated access.
    """

    device_id: int
    iova: int
    is_write: bool = False
    at: int = 0
    pid_valid: bool = False
    process_id: int = 0
    priv_req: bool = False
    exec_req: bool = False
    no_write: bool = True

    @property
    def reads(self) -> bool:
        return not self.is_write and not (self.exec_req and self.at == 0)

    @property
    def writes(self) -> bool:
        return self.is_write or (self.at == 2 and not self.no_write)

    @property
    def executes(self) -> bool:
        return not self.is_write and self.exec_req and (self.at == 0 or self.pid_valid)

    @property
    def ttyp(self) -> int:
        """riscv-iommu: "Fault record TTYP field encodings"."""
        if self.at == 2:
            return 8
        base = 1 if self.at == 0 else 5
        if self.executes:
            return base
        return base + 2 if self.writes else base + 1

    @property
    def supervisor(self) -> bool:
        return self.pid_valid and self.priv_req


@dataclass(frozen=True, slots=True)
class Response:
    """The IOMMU's answer to a :class:`Request`.

    For untranslated/translated requests: ``pa``, ``pbmt``, ``is_msi``, ``is_mrif`` (and the
    MRIF fields). For ATS: the completion's ``r``, ``w``, ``exe``, ``priv``, ``u``, ``g``,
    ``ppn`` (S-encoded) and ``s``. ``cause`` is the fault cause when one occurred (also for
    ATS success-without-permission completions), else 0.
    """

    status: Literal["success", "ur", "ca"]
    pa: int = 0
    pbmt: int = 0
    is_msi: bool = False
    is_mrif: bool = False
    mrif_addr: int = 0
    notice_ppn: int = 0
    notice_nid: int = 0
    size_lg2: int = 12
    r: bool = False
    w: bool = False
    exe: bool = False
    priv: bool = False
    u: bool = False
    g: bool = False
    ppn: int = 0
    s: bool = False
    cause: int = 0

    @property
    def ok(self) -> bool:
        return self.status == STATUS_SUCCESS


@dataclass(frozen=True, slots=True)
class Message:
    """An outbound PCIe message or IO-bridge request.

    ``kind`` is ``"ats_inval_req"``, ``"prgr"`` or ``"sync"``; ``itag`` names an
    invalidation request so its completion can be matched.
    """

    kind: Literal["ats_inval_req", "prgr", "sync"]
    rid: int = 0
    dsv: bool = False
    dseg: int = 0
    pv: bool = False
    pid: int = 0
    payload: int = 0
    pr: bool = False
    pw: bool = False
    itag: int = -1
