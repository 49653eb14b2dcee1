"""dma-bufs for IOMMU_IOAS_MAP_FILE (``drivers/iommu/iommufd/pages.c``
``iopt_alloc_dmabuf_pages``, ``io_pagetable.c`` ``iopt_map_file_pages``) and the selftest's
exporter (``selftest.c`` ``iommufd_test_dmabuf_get`` / ``_revoke``).

A dma-buf is memory an exporter owns (physically contiguous here, as the selftest's
``kzalloc``), shared by file descriptor. IOAS_MAP_FILE of a dma-buf maps its physical range
-- no pages are pinned or charged (``IOPT_PAGES_ACCOUNT_NONE``). The exporter may *revoke*
it: every IOAS area built on it loses its translation in every domain at once
(``dma_buf_invalidate_mappings``), a new domain gets nothing for it, and a new MAP_FILE is
ENODEV until the exporter un-revokes; the old areas stay revoked (they are unmapped, not
remapped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.errors import InvalidArgument, NoDevice
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PAGE_SIZE

if TYPE_CHECKING:
    from iommusim.sw.iommufd.pages import IoPages

__all__ = ["DMABUF_NAME", "DmaBuf", "DmaBufSource"]

DMABUF_NAME: Final = "dmabuf:iommufd-selftest"


class DmaBuf:
    """An exported buffer of ``size`` bytes at physical ``pa`` in ``mem``; also its file's
    operations (no read/write: ``vfs_read`` EINVAL)."""

    __slots__ = ("mem", "pa", "revoked", "size", "users")

    def __init__(self, mem: PhysicalMemory, pa: int, size: int) -> None:
        self.mem = mem
        self.pa = pa
        self.size = size
        self.revoked = False
        #: IoPages built on this buffer (``pages->dmabuf`` attachments).
        self.users: list[IoPages] = []

    def source(self, start: int, length: int) -> DmaBufSource:
        """``iopt_alloc_dmabuf_pages`` + ``iopt_map_dmabuf``: EINVAL for a range past the
        end, ENODEV while revoked (the exporter's ``iommufd_map`` refuses)."""
        if self.size <= start + length - 1:
            raise InvalidArgument(
                f"{start:#x}+{length:#x} runs past the dma-buf's {self.size:#x} bytes"
            )
        if self.revoked:
            raise NoDevice("the dma-buf is revoked")
        return DmaBufSource(self)

    # ------------------------------------------------------------------ FileOps
    def fops_read(self, count: int, ppos: int) -> bytes:
        raise InvalidArgument("a dma-buf has no read")

    def fops_write(self, data: bytes, ppos: int) -> int:
        raise InvalidArgument("a dma-buf has no write")

    def fops_poll(self) -> int:
        return 0

    def fops_release(self) -> None:
        """The fd goes; areas mapping the buffer keep it (``dma_buf_get``'s reference)."""


class DmaBufSource:
    """The :class:`~iommusim.sw.iommufd.user.PageSource` of areas mapping a dma-buf: byte
    offsets into the buffer, "pins" that only name its physical pages."""

    __slots__ = ("buf",)

    def __init__(self, buf: DmaBuf) -> None:
        self.buf = buf

    @property
    def phys(self) -> PhysicalMemory:
        return self.buf.mem

    def alive(self) -> bool:
        return True

    def read(self, va: int, n: int) -> bytes:
        return self.buf.mem.read(self.buf.pa + va, n)

    def write(self, va: int, data: bytes) -> None:
        self.buf.mem.write(self.buf.pa + va, data)

    def pin_pages(self, va: int, npages: int, write: bool) -> list[int]:
        if va % PAGE_SIZE or va + npages * PAGE_SIZE > self.buf.size:
            raise InvalidArgument(f"{va:#x}+{npages} pages are outside the dma-buf")
        return [self.buf.pa + va + i * PAGE_SIZE for i in range(npages)]

    def unpin_pages(self, va: int, npages: int) -> None:
        """Nothing is pinned: the exporter owns the memory."""
