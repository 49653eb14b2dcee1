"""``struct iommufd_eventq``: what the FAULT and vEVENTQ objects share (Linux 7.3
``drivers/iommu/iommufd/eventq.c``, "Common Event Queue Functions").

An event queue is an object with a file: ``iommufd_eventq_init`` opens an anon-inode file
on it, and that file holds a ``users`` reference on the object and a reference on the
iommufd context (``iommufd_ctx_get``) until its release. So IOMMU_DESTROY of a queue whose
file is open is EBUSY, and closing the iommufd keeps the context (and every object) alive
until the last queue file is closed too; then ``iommufd_fops_release`` destroys them all.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

from iommusim.errors import InvalidArgument
from iommusim.sw.iommufd.fds import POLLIN, POLLOUT, POLLRDNORM, AnonFile
from iommusim.sw.iommufd.objects import IommufdObject

if TYPE_CHECKING:
    from iommusim.sw.iommufd.file import IommufdFile

__all__ = ["EventQueue"]


class EventQueue(IommufdObject, abc.ABC):
    """Base of :class:`~iommusim.sw.iommufd.fault.IommufdFault` and
    :class:`~iommusim.sw.iommufd.veventq.Veventq`: the file operations the fd table calls.

    Subclasses set :attr:`file_name` (the anon inode's name) and :attr:`poll_out` (the
    FAULT file is always writable) and implement :meth:`pending` (the deliver list is not
    empty), :meth:`fops_read` and, for a writable file, :meth:`fops_write`.
    """

    __slots__ = ("file", "ictx")

    file_name: ClassVar[str]
    #: ``EPOLLOUT`` is in every poll answer (``obj.type == IOMMUFD_OBJ_FAULT``).
    poll_out: ClassVar[bool] = False

    def __init__(self, ictx: IommufdFile) -> None:
        super().__init__()
        self.ictx = ictx
        #: The open file, until its release.
        self.file: AnonFile | None = None

    def init_file(self) -> int:
        """``iommufd_eventq_init``: install the file at the lowest free fd (EMFILE, nothing
        changed, when none is), then take its references on the object and the context.
        Returns the fd."""
        self.file = self.ictx.fds.install(self.file_name, self)
        self.ictx.ctx_get()
        self.ictx.objects.inc_users(self)
        return self.file.fd

    @abc.abstractmethod
    def pending(self) -> bool:
        """Whether the deliver list holds anything."""

    # ------------------------------------------------------------------ file operations
    @abc.abstractmethod
    def fops_read(self, count: int, ppos: int) -> bytes:
        """The file's read operation, after the VFS checks."""

    def fops_write(self, data: bytes, ppos: int) -> int:
        """No write operation: ``vfs_write`` answers EINVAL (no FMODE_CAN_WRITE)."""
        raise InvalidArgument(f"{self.file_name} has no write operation")

    def fops_poll(self) -> int:
        """``iommufd_eventq_fops_poll``."""
        mask = POLLOUT if self.poll_out else 0
        if self.pending():
            mask |= POLLIN | POLLRDNORM
        return mask

    def fops_release(self) -> None:
        """``iommufd_eventq_fops_release``: drop the file's reference on the object, then
        its reference on the context (the object may be gone once the first is dropped)."""
        self.file = None
        self.ictx.objects.dec_users(self)
        self.ictx.ctx_put()
