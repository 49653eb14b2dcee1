"""MMU notifiers: how a secondary TLB learns that a process address space changed (after Linux
``include/linux/mmu_notifier.h``).

With Shared Virtual Addressing the IOMMU walks the process's own CPU page table through a
process context, so it may cache its leaf and non-leaf entries. The SVA layer registers a
notifier on the :class:`~iommusim.sw.mm.Mm` and turns each callback into IOMMU commands.

Ordering the :class:`~iommusim.sw.mm.Mm` guarantees (Linux
``mmu_notifier_arch_invalidate_secondary_tlbs``, called from the architecture's TLB flush):
:meth:`MmuNotifier.invalidate` runs *after* the PTEs were cleared or downgraded -- with a
shared table the IOMMU must be invalidated after the PTE store, or it could re-walk and
re-cache the old entry (riscv-iommu: "Guidelines for invalidations") -- and *before* any data
page or page-table page of the range is freed and before ``munmap``/``mprotect`` returns, so
no device access can reach a page after it was handed to someone else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from iommusim.sw.mm.mm import Mm

__all__ = ["MmuNotifier"]


class MmuNotifier(Protocol):
    """A secondary TLB that caches translations of an :class:`~iommusim.sw.mm.Mm`."""

    def invalidate(self, mm: Mm, start: int, end: int, tables_freed: bool) -> None:
        """The translations of ``[start, end)`` changed: PTEs were cleared (munmap, mmap
        with ``fixed`` over existing pages, mprotect to ``PROT_NONE``) or lost a permission
        (mprotect). ``tables_freed`` is True when page-table pages were unlinked as well:
        the IOMMU may cache non-leaf entries, so the whole address space must then be
        invalidated (riscv-iommu: "IOMMU Page-Table cache invalidation commands").

        Must not call back into ``mm``'s mapping operations.
        """
        ...

    def release(self, mm: Mm) -> None:
        """The address space is going away (process exit): stop using it. Called once, before
        the mappings are torn down; no :meth:`invalidate` follows (Linux
        ``mmu_notifier_release``)."""
        ...
