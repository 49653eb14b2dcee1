"""The selftest's in-kernel access (``selftest.c``: ``struct selftest_access``).

IOMMU_TEST_OP_CREATE_ACCESS gives user space a file (``[iommufd_test_staccess]``) standing
for an emulated device's access to an IOAS; ACCESS_PAGES pins ranges through it (each an
*item* with an id), DESTROY_ACCESS_PAGES unpins one, ACCESS_RW copies through it, and an
unmap of the IOAS unpins every item it overlaps (``iommufd_test_access_unmap``). Closing the
file destroys the access.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from iommusim.errors import BadFdState, InvalidArgument, InvalidExchange, NotFound
from iommusim.sw.iommufd.access import Access
from iommusim.sw.iommufd.iopt import ULONG_MAX

if TYPE_CHECKING:
    from iommusim.sw.iommufd.file import IommufdFile

__all__ = ["STACCESS_NAME", "SelftestAccess", "staccess_get"]

STACCESS_NAME = "[iommufd_test_staccess]"


@dataclass(slots=True)
class _Item:
    iova: int
    length: int
    id: int


@dataclass(eq=False)
class SelftestAccess:
    """The access and its pinned items; also the file's operations."""

    needs_pin_pages: bool
    access: Access | None = None
    #: The context the access keeps alive (``iommufd_ctx_get`` in ``iommufd_access_create``).
    ictx: IommufdFile | None = None
    items: list[_Item] = field(default_factory=list)
    next_id: int = 0

    # ------------------------------------------------------------------ AccessOps
    def unmap(self, iova: int, length: int) -> None:
        """``iommufd_test_access_unmap``: unpin every item overlapping the range."""
        last = iova + length - 1
        for item in list(self.items):
            if iova > item.iova + item.length - 1 or last < item.iova:
                continue
            self.items.remove(item)
            if self.access is not None:
                self.access.unpin_pages(item.iova, item.length)

    # ------------------------------------------------------------------ items
    def add(self, iova: int, length: int) -> int:
        item = _Item(iova, length, self.next_id)
        self.next_id += 1
        self.items.append(item)
        return item.id

    def destroy_item(self, item_id: int) -> None:
        """``iommufd_test_access_item_destroy``: ENOENT for no such item."""
        for item in self.items:
            if item.id == item_id:
                self.items.remove(item)
                if self.access is not None:
                    self.access.unpin_pages(item.iova, item.length)
                return
        raise NotFound(f"no access item {item_id}")

    def check_pages(self, ictx: IommufdFile, uptr: int, pas: list[int]) -> None:
        """``iommufd_test_check_pages``: the pinned pages are the user VA's own (EBADE)."""
        for i, pa in enumerate(pas):
            va = uptr + i * 4096
            got = ictx.user.pin_pages(va, 1, False)
            ictx.user.unpin_pages(va, 1)
            if got[0] != pa:
                raise InvalidExchange(f"pinned page {i} is not the page at {va:#x}")

    # ------------------------------------------------------------------ FileOps
    def fops_read(self, count: int, ppos: int) -> bytes:
        raise InvalidArgument("the staccess file has no read (vfs_read: EINVAL)")

    def fops_write(self, data: bytes, ppos: int) -> int:
        raise InvalidArgument("the staccess file has no write (vfs_write: EINVAL)")

    def fops_poll(self) -> int:
        return 0

    def fops_release(self) -> None:
        """``iommufd_test_staccess_release``: unpin everything, destroy the access (and
        drop the context reference the access held)."""
        if self.access is not None:
            self.unmap(0, ULONG_MAX)
            self.access.destroy_user()
            self.access = None
            if self.ictx is not None:
                self.ictx.ctx_put()
                self.ictx = None


def staccess_get(ictx: IommufdFile, fd: int) -> SelftestAccess:
    """``iommufd_access_get``: EBADFD unless ``fd`` is an open staccess file."""
    if fd not in ictx.fds:
        raise BadFdState(f"fd {fd} is not open")
    ops = ictx.fds[fd].ops
    if not isinstance(ops, SelftestAccess) or ops.access is None:
        raise BadFdState(f"fd {fd} is not a selftest access")
    return ops
