"""``struct iommufd_ucmd``: one ioctl in flight -- its decoded command, the user's buffer
and size, and the object it is creating (finalized on success, aborted on failure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from iommusim.sw.iommufd.objects import IommufdObject
from iommusim.sw.iommufd.uapi import Struct

__all__ = ["Ucmd"]


@dataclass(slots=True)
class Ucmd:
    struct: Struct
    #: The kernel's copy of the struct (zero-extended to the kernel's size).
    cmd: dict[str, int]
    #: The user's buffer: the ioctl argument, ``user_size`` bytes of which are the struct.
    arg: bytearray
    user_size: int
    new_obj: IommufdObject | None = field(default=None)

    def respond(self) -> None:
        """``iommufd_ucmd_respond``: copy the struct back, up to the user's size."""
        n = min(self.user_size, self.struct.size)
        self.arg[:n] = self.struct.encode(self.cmd)[:n]
