"""A process address space whose page table the IOMMU can share (after Linux ``struct
mm_struct``, ``mm/mmap.c``, ``mm/mprotect.c`` and ``mm/memory.c``).

The CPU page table is a table of the address space's format (an :class:`MmFormat`: by
default the CPU's RISC-V Sv39/Sv48/Sv57) in simulated RAM, written by the radix writer of
:mod:`iommusim.sw.pgtable` -- exactly the first-stage format the IOMMU walks, so a device
bound to the process (Shared Virtual Addressing) translates through this very table; the
IOMMU driver points a process context at it in its own encoding (RISC-V:
:func:`~iommusim.sw.pgtable.riscv.riscv_atp`, riscv-iommu: "Process-context fields"; Linux
``riscv_iommu_sva`` shares ``mm->pgd``).

What is modelled, and what is left out:

* Anonymous private mappings only, 4 KiB pages only (no huge pages, no THP), no swap and no
  file mappings. Pages are allocated on first touch (demand paging, Linux
  ``do_anonymous_page``); a read fault allocates a zeroed page of its own, there is no shared
  zero page and no copy-on-write (no ``fork``).
* Every leaf is a user page (U = 1) with A preset, and D preset on writable pages, so neither
  the CPU nor the IOMMU ever has to update A/D (riscv-iommu: "IOMMU updating of PTE accessed
  (A) and dirty (D) updates"). Permissions follow Linux RISC-V ``protection_map``:
  ``PROT_WRITE`` implies R (W without R is reserved), X only with ``PROT_EXEC``.
* ``PROT_NONE``: RISC-V Linux keeps a non-present PTE (V = 0) that still holds the PFN; the
  page-table writer keeps no such entries, so here the PTE is cleared and the page stays
  resident in the address space's own bookkeeping, to be mapped again (a minor fault, no new
  page, the data kept) once the protection allows access. For the IOMMU both look the same:
  V = 0.
* ``populate`` is best effort, as ``MAP_POPULATE``: pages that cannot be allocated stay
  absent and are faulted in on use.

Every call that raises an :class:`~iommusim.errors.ApiError` leaves the address space, the
page table, the memory and the allocator exactly as before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from iommusim.bits.pgformat import PtFormat
from iommusim.errors import BadAddress, Busy, InvalidArgument, NotFound, OutOfMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.mm.notifier import MmuNotifier
from iommusim.sw.mm.vma import MappedFile, Vma, VmaList
from iommusim.sw.pages import PAGE_SIZE, PageAllocator
from iommusim.sw.pgtable import ARM64_MM_FORMATS, FORMATS, IotlbGather
from iommusim.sw.pgtable.radix import RadixPageTable
from iommusim.sw.prot import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE

__all__ = [
    "MMAP_MIN_ADDR",
    "MM_FORMATS",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "Mm",
    "MmFormat",
    "MmStats",
]

# Linux include/uapi/asm-generic/mman-common.h.
PROT_NONE: Final = 0
PROT_READ: Final = 1
PROT_WRITE: Final = 2
PROT_EXEC: Final = 4
_PROT_MASK: Final = PROT_READ | PROT_WRITE | PROT_EXEC

#: Lowest address a mapping may use (Linux ``vm.mmap_min_addr`` default, 64 KiB): page 0 is
#: never mapped, so NULL dereferences fault.
MMAP_MIN_ADDR: Final = 0x10000
#: CPU page-table formats a process may name: RISC-V satp modes, and arm64 TTBR0 formats.
MM_FORMATS: Final = ("sv39", "sv48", "sv57", *ARM64_MM_FORMATS)


class MmFormat(Protocol):
    """A CPU page-table format: its name, and an empty table of it whose leaves carry A (and
    D when writable) preset, for a process."""

    @property
    def name(self) -> str: ...

    @property
    def pt(self) -> PtFormat:
        """The format descriptor."""
        ...

    def page_table(self, mem: PhysicalMemory, pages: PageAllocator) -> RadixPageTable: ...


_PAGE_MASK: Final = PAGE_SIZE - 1
_G1: Final = 1 << 30


def _iommu_prot(prot: int) -> int | None:
    """Leaf ``IOMMU_*`` prot for a VMA's ``PROT_*`` bits, None for no PTE (PROT_NONE).

    Linux RISC-V ``protection_map``: write-only is R|W, exec-only is X. Never
    ``IOMMU_PRIV``: process pages are user pages.
    """
    if not prot:
        return None
    iprot = 0
    if prot & PROT_READ:
        iprot |= IOMMU_READ
    if prot & PROT_WRITE:
        iprot |= IOMMU_READ | IOMMU_WRITE
    if not prot & PROT_EXEC:
        iprot |= IOMMU_NOEXEC
    return iprot


def _allows(prot: int, write: bool, exec_: bool) -> bool:
    """Linux ``access_error``: may an access of this kind use an area with ``prot``?"""
    if write and not prot & PROT_WRITE:
        return False
    if exec_ and not prot & PROT_EXEC:
        return False
    if not write and not exec_:
        return bool(prot & (PROT_READ | PROT_WRITE))
    return True


def _lost(old: int, new: int) -> bool:
    """Does going from ``old`` to ``new`` remove a permission a present PTE had?"""
    readable_old = bool(old & (PROT_READ | PROT_WRITE))
    readable_new = bool(new & (PROT_READ | PROT_WRITE))
    return (readable_old and not readable_new) or bool(old & ~new & (PROT_WRITE | PROT_EXEC))


def _page_align(length: int) -> int:
    return (length + _PAGE_MASK) & ~_PAGE_MASK


@dataclass(slots=True)
class MmStats:
    """Counters of one address space.

    ``faults`` counts pages faulted in (a new page, or a resident page mapped again after
    ``PROT_NONE``), split into ``remote_faults`` (:meth:`Mm.fault_in` with ``remote``: a
    device's page request) and ``cpu_faults`` (everything else: CPU loads and stores,
    ``populate``, local ``fault_in``). ``invalidations`` counts notifier rounds: each time
    the address space needed the secondary TLBs invalidated, whether or not a notifier was
    registered. ``pages`` is the data pages resident now, ``peak_pages`` its maximum.
    """

    faults: int = 0
    cpu_faults: int = 0
    remote_faults: int = 0
    invalidations: int = 0
    pages: int = 0
    peak_pages: int = 0


class Mm:
    """A process address space: areas, a page table in ``mem`` and data pages, both from
    ``pages``.

    ``fmt`` is the page-table format (:class:`MmFormat`, a first-stage one: sign-extended
    addresses) or the name of a CPU ``satp`` mode: ``"sv39"``, ``"sv48"`` or ``"sv57"``.
    User space is the lower canonical half, ``[0, task_size)`` with
    ``task_size = 2**(va_bits - 1)``; ``mmap`` without an address places areas top-down below
    ``mmap_base = task_size - 1 GiB`` and never below :data:`MMAP_MIN_ADDR`.
    """

    __slots__ = (
        "_exited",
        "_notifiers",
        "_released",
        "_resident",
        "_shared",
        "_vmas",
        "asid",
        "cpu_tlb_flush",
        "mem",
        "mmap_base",
        "name",
        "pages",
        "pasid",
        "pgtable",
        "stats",
        "task_size",
    )

    def __init__(
        self,
        mem: PhysicalMemory,
        pages: PageAllocator,
        fmt: MmFormat | str = "sv48",
        *,
        name: str = "mm",
    ) -> None:
        if isinstance(fmt, str):
            if fmt not in MM_FORMATS:
                raise InvalidArgument(f"fmt must be one of {', '.join(MM_FORMATS)}, not {fmt!r}")
            fmt = ARM64_MM_FORMATS[fmt] if fmt in ARM64_MM_FORMATS else FORMATS[fmt]
        self.mem = mem
        self.pages = pages
        self.name = name
        if fmt.pt.input != "sign" and fmt.name not in ARM64_MM_FORMATS:
            # User space is the lower half of a sign-extended address space (RISC-V), or the
            # TTBR0 range (arm64), never a G-stage / stage 2 table.
            raise InvalidArgument(f"fmt must be a first-stage format, not {fmt.name}")
        self.pgtable = fmt.page_table(mem, pages)
        self.stats = MmStats()
        #: PASID the SVA layer bound to this address space (Linux ``mm->iommu_mm->pasid``);
        #: only held here.
        self.pasid: int | None = None
        #: The CPU ASID of an arm64 address space (the kernel's allocator), which an SMMUv3
        #: shares for SVA; None for RISC-V processes.
        self.asid: int | None = None
        #: The CPU's TLB flush of a range (set by the kernel for arm64 address spaces: a
        #: broadcast TLBI by ASID); None: the model has no CPU TLB for this process.
        self.cpu_tlb_flush: Callable[[Mm, int, int, bool], None] | None = None
        self.task_size = 1 << (self.pgtable.va_bits - 1)
        self.mmap_base = self.task_size - _G1
        self._vmas = VmaList()
        # Data page of every resident page, present in the page table or not (PROT_NONE):
        # the model's struct-page / rmap bookkeeping.
        self._resident: dict[int, int] = {}
        # Resident pages that belong to a mapped file, not to the process.
        self._shared: set[int] = set()
        self._notifiers: list[MmuNotifier] = []
        self._released: list[MmuNotifier] = []
        self._exited = False

    # ------------------------------------------------------------------ description
    @property
    def exited(self) -> bool:
        return self._exited

    def table(self) -> RadixPageTable:
        """The page table, for an IOMMU driver to point a context at in its own encoding
        (:class:`InvalidArgument` once the address space has exited)."""
        self._alive()
        return self.pgtable

    def find_vma(self, addr: int) -> Vma | None:
        """The area containing ``addr``, or None."""
        return self._vmas.find(addr)

    def vmas(self) -> list[Vma]:
        """Every area, in address order (touching areas with equal prot are merged)."""
        return list(self._vmas)

    def translate(self, addr: int) -> int | None:
        """Physical address of byte ``addr`` when its page is present, else None."""
        if self._exited or not 0 <= addr < self.task_size:
            return None
        return self.pgtable.iova_to_phys(addr)

    @property
    def resident(self) -> dict[int, int]:
        """Page address -> data page PA of every resident page (a copy)."""
        return dict(self._resident)

    # ------------------------------------------------------------------ checks
    def _alive(self) -> None:
        if self._exited:
            raise InvalidArgument(f"mm {self.name!r} has exited")

    @staticmethod
    def _check_prot(prot: int) -> None:
        if prot < 0 or prot & ~_PROT_MASK:
            raise InvalidArgument(
                f"prot must be a combination of PROT_READ, PROT_WRITE and PROT_EXEC, not {prot:#x}"
            )

    @staticmethod
    def _check_addr(addr: int) -> None:
        if addr < 0 or addr & _PAGE_MASK:
            raise InvalidArgument(f"addr must be 4 KiB aligned, not {addr:#x}")

    # ------------------------------------------------------------------ notifiers
    def register_notifier(self, n: MmuNotifier) -> None:
        """Add ``n`` (Linux ``mmu_notifier_register``); :class:`Busy` if it already is."""
        self._alive()
        if any(x is n for x in self._notifiers):
            raise Busy(f"notifier {n!r} is already registered on {self.name!r}")
        self._notifiers.append(n)

    def unregister_notifier(self, n: MmuNotifier) -> None:
        """Remove ``n``; :class:`NotFound` if it is not registered. After :meth:`exit` a
        notifier that was released may still be unregistered, as Linux allows."""
        for i, x in enumerate(self._notifiers):
            if x is n:
                del self._notifiers[i]
                return
        for i, x in enumerate(self._released):
            if x is n:
                del self._released[i]
                return
        raise NotFound(f"notifier {n!r} is not registered on {self.name!r}")

    def _invalidate(self, start: int, end: int, tables_freed: bool) -> None:
        self.stats.invalidations += 1
        if self.cpu_tlb_flush is not None:
            # The CPU's own TLB flush of the range (arm64 flush_tlb_range: a broadcast
            # TLBI, which SMMUs with BTM see too), before the secondary TLBs are told.
            self.cpu_tlb_flush(self, start, end, tables_freed)
        for n in tuple(self._notifiers):
            n.invalidate(self, start, end, tables_freed)

    # ------------------------------------------------------------------ mmap
    def mmap(
        self,
        length: int,
        prot: int,
        *,
        addr: int | None = None,
        fixed: bool = False,
        populate: bool = False,
        file: MappedFile | None = None,
        offset: int = 0,
    ) -> int:
        """Create an anonymous private area of ``length`` bytes (rounded up to 4 KiB) with
        ``prot``; return its start (Linux ``mmap(MAP_ANONYMOUS | MAP_PRIVATE)``).

        ``addr`` is a hint, used when the range there is free, unless ``fixed``
        (``MAP_FIXED``): then the area goes exactly there and replaces whatever was mapped,
        as :meth:`munmap` followed by ``mmap`` would. Without a usable hint the highest free
        range below ``mmap_base`` is taken (``arch_get_unmapped_area_topdown``), else the
        lowest anywhere in user space. No page is allocated unless ``populate`` (best
        effort, as ``MAP_POPULATE``). With ``file`` the area is a shared mapping of it from
        the page-aligned byte ``offset`` (``MAP_SHARED``): its pages are the file's, which
        stay the file's when the area goes.

        Errors, with nothing changed: ``length`` <= 0, an unaligned ``addr``, ``fixed``
        without ``addr`` or ``addr`` below :data:`MMAP_MIN_ADDR` with ``fixed`` (Linux:
        EPERM), bad ``prot`` bits (:class:`InvalidArgument`); no room, or a ``fixed`` range
        beyond user space (:class:`OutOfMemory`).
        """
        self._alive()
        self._check_prot(prot)
        if length <= 0:
            raise InvalidArgument(f"length must be > 0, not {length}")
        if offset < 0 or offset & _PAGE_MASK:
            raise InvalidArgument(f"offset must be page-aligned and >= 0, not {offset:#x}")
        if addr is not None:
            self._check_addr(addr)
        length = _page_align(length)
        if length > self.task_size - MMAP_MIN_ADDR:
            raise OutOfMemory(f"length {length:#x} exceeds user space")
        if fixed:
            if addr is None:
                raise InvalidArgument("fixed needs an addr")
            if addr < MMAP_MIN_ADDR:
                raise InvalidArgument(
                    f"addr must be >= {MMAP_MIN_ADDR:#x} (mmap_min_addr), not {addr:#x}"
                )
            if addr + length > self.task_size:
                raise OutOfMemory(
                    f"range {addr:#x}+{length:#x} exceeds user space "
                    f"(task_size {self.task_size:#x})"
                )
            start = addr
            self._unmap_range(start, start + length)
        else:
            found: int | None = None
            if (
                addr is not None
                and addr >= MMAP_MIN_ADDR
                and addr + length <= self.task_size
                and self._vmas.is_free(addr, addr + length)
            ):
                found = addr
            if found is None:
                found = self._vmas.gap_top_down(length, MMAP_MIN_ADDR, self.mmap_base)
            if found is None:
                found = self._vmas.gap_bottom_up(length, MMAP_MIN_ADDR, self.task_size)
            if found is None:
                raise OutOfMemory(f"no free range of {length:#x} bytes in {self.name!r}")
            start = found
        self._vmas.insert(start, start + length, prot, file, offset)
        if populate and prot:
            self._populate(start, start + length, prot)
        return start

    def _populate(self, start: int, end: int, prot: int) -> None:
        iprot = _iommu_prot(prot)
        if iprot is None:
            return
        for va in range(start, end, PAGE_SIZE):
            if self.pgtable.iova_to_phys(va) is not None:
                continue
            try:
                self._fault_page(va, iprot, remote=False)
            except OutOfMemory:
                return  # best effort: the rest is faulted in on use

    # ------------------------------------------------------------------ munmap
    def munmap(self, addr: int, length: int) -> None:
        """Remove ``[addr, addr + length)`` (``length`` rounded up to 4 KiB) from every area;
        holes are fine (Linux ``munmap``).

        The present pages' PTEs are cleared first; then, if any was present or a table page
        was unlinked, every notifier's ``invalidate`` runs for the whole range; only then
        are the data pages and the unlinked table pages freed. :class:`InvalidArgument` for
        an unaligned ``addr``, ``length`` <= 0 or a range beyond user space.
        """
        self._alive()
        self._check_addr(addr)
        if length <= 0:
            raise InvalidArgument(f"length must be > 0, not {length}")
        end = addr + _page_align(length)
        if end > self.task_size:
            raise InvalidArgument(
                f"range {addr:#x}+{length:#x} must lie below task_size {self.task_size:#x}"
            )
        self._unmap_range(addr, end)

    def _unmap_range(self, start: int, end: int) -> None:
        """Cannot fail: the range was validated."""
        self._vmas.remove(start, end)
        gather = IotlbGather()
        self.pgtable.unmap(start, end - start, gather)
        # Invalidate after the PTE stores and before any page goes back to the allocator: a
        # device must not reach a page once it belongs to someone else.
        if not gather.empty:
            self._invalidate(start, end, bool(gather.freelist))
        for va, pa in self._resident_in(start, end):
            del self._resident[va]
            if va in self._shared:
                self._shared.discard(va)
            else:
                self.pages.free_page(pa)
        self.stats.pages = len(self._resident)
        for tpa in gather.freelist:
            self.pages.free_page(tpa)

    def _resident_in(self, start: int, end: int) -> list[tuple[int, int]]:
        res = self._resident
        if (end - start) // PAGE_SIZE <= len(res):
            return [(va, res[va]) for va in range(start, end, PAGE_SIZE) if va in res]
        return sorted((va, pa) for va, pa in res.items() if start <= va < end)

    # ------------------------------------------------------------------ mprotect
    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """Give ``[addr, addr + length)`` (``length`` rounded up to 4 KiB) the protection
        ``prot`` (Linux ``mprotect``); ``length`` 0 does nothing.

        Areas are split and merged; the PTEs of present pages are rewritten in place
        (``PROT_NONE``: cleared, the pages kept). If a present page lost a permission, every
        notifier's ``invalidate`` runs for the whole range before this returns, with
        ``tables_freed`` only when ``PROT_NONE`` unlinked a table page; a gained permission
        needs none (a device that cached the old entry faults and retries).

        Errors, with nothing changed: unaligned ``addr``, negative ``length`` or bad ``prot``
        bits (:class:`InvalidArgument`); a page of the range not in any area
        (:class:`OutOfMemory`, as Linux).
        """
        self._alive()
        self._check_addr(addr)
        self._check_prot(prot)
        if length < 0:
            raise InvalidArgument(f"length must be >= 0, not {length}")
        if length == 0:
            return
        end = addr + _page_align(length)
        if end > self.task_size or not self._vmas.covered(addr, end):
            raise OutOfMemory(f"range {addr:#x}+{length:#x} is not fully mapped")
        old = self._vmas.set_prot(addr, end, prot)
        new_iprot = _iommu_prot(prot)
        gather = IotlbGather()
        lost = False
        for piece in old:
            if piece.prot == prot or _iommu_prot(piece.prot) is None:
                # Pages kept under PROT_NONE have no PTE; the next access maps them again.
                continue
            size = piece.end - piece.start
            if new_iprot is None:
                changed = self.pgtable.unmap(piece.start, size, gather)
            else:
                changed = self.pgtable.protect(piece.start, size, new_iprot, gather)
            if changed and _lost(piece.prot, prot):
                lost = True
        if lost or gather.freelist:
            self._invalidate(addr, end, bool(gather.freelist))
        for tpa in gather.freelist:
            self.pages.free_page(tpa)

    # ------------------------------------------------------------------ faults
    def fault_in(
        self, addr: int, *, write: bool = False, exec_: bool = False, remote: bool = False
    ) -> bool:
        """Handle a page fault at ``addr`` (Linux ``handle_mm_fault``; ``remote`` for a
        device's page request, as ``iommu_sva_handle_mm``).

        True when the page is present with the access afterwards (faulted in now, or
        already). False, with nothing changed, when no area covers ``addr``, the area's
        protection forbids the access (write needs ``PROT_WRITE``, exec ``PROT_EXEC``, read
        ``PROT_READ`` or ``PROT_WRITE``), or the address space has exited.
        :class:`OutOfMemory` when no page is left, with nothing changed.
        """
        if self._exited or not 0 <= addr < self.task_size:
            return False
        vma = self._vmas.find(addr)
        if vma is None or not _allows(vma.prot, write, exec_):
            return False
        va = addr & ~_PAGE_MASK
        if self.pgtable.iova_to_phys(va) is not None:
            return True  # a present page's PTE always carries its area's permissions
        iprot = _iommu_prot(vma.prot)
        if iprot is None:  # pragma: no cover - _allows refuses PROT_NONE
            return False
        try:
            self._fault_page(va, iprot, remote=remote)
        except BadAddress:
            return False  # a shared mapping beyond the end of its file (SIGBUS)
        return True

    def _fault_page(self, va: int, iprot: int, *, remote: bool) -> None:
        """Map the page at ``va``: its resident page, else the mapped file's page (Linux
        ``shmem_fault``), else a new zeroed one (``do_anonymous_page``). OutOfMemory leaves
        nothing changed (a file page allocated stays the file's)."""
        pa = self._resident.get(va)
        new = pa is None
        vma = self._vmas.find(va)
        shared = new and vma is not None and vma.file is not None
        if shared and vma is not None and vma.file is not None:
            pa = vma.file.page(vma.pgoff + va - vma.start)
        # Count first: an allocation that is then given back would still have zeroed a
        # free page, and a failed call changes nothing.
        need = int(pa is None) + self.pgtable.tables_needed(va, PAGE_SIZE)
        if need > self.pages.nr_free:
            raise OutOfMemory(f"fault at {va:#x} needs {need} pages, {self.pages.nr_free} free")
        if pa is None:
            pa = self.pages.alloc_page()  # zeroed, as __GFP_ZERO
        self.pgtable.map(va, pa, PAGE_SIZE, iprot)
        if new:
            self._resident[va] = pa
            if shared:
                self._shared.add(va)
            st = self.stats
            st.pages = len(self._resident)
            st.peak_pages = max(st.peak_pages, st.pages)
        self.stats.faults += 1
        if remote:
            self.stats.remote_faults += 1
        else:
            self.stats.cpu_faults += 1

    # ------------------------------------------------------------------ CPU accesses
    def _prepare(self, addr: int, n: int, write: bool) -> None:
        """Check that every byte of ``[addr, addr + n)`` is accessible, that enough pages
        are free, then fault in the missing pages -- so a failure changes nothing."""
        end = addr + n
        what = "written" if write else "read"
        if addr < 0 or end > self.task_size:
            raise BadAddress(f"range {addr:#x}+{n:#x} cannot be {what}: outside user space")
        at = addr
        for vma in self._vmas.overlapping(addr, end):
            if vma.start > at:
                break
            if not _allows(vma.prot, write, False):
                raise BadAddress(
                    f"address {max(at, vma.start):#x} cannot be {what}: prot {vma.prot}"
                )
            at = vma.end
        if at < end:
            raise BadAddress(f"address {at:#x} cannot be {what}: not mapped")
        first = addr & ~_PAGE_MASK
        last = (end - 1) & ~_PAGE_MASK
        # Bounded work: a page that is not resident needs a new page, so a long range with
        # more pages than are resident and free together cannot be faulted in -- refuse it
        # before looking at its pages one by one (short ranges get the exact count below).
        span = ((last - first) >> 12) + 1
        if span > 512 and span - len(self._resident) > self.pages.nr_free:
            raise OutOfMemory(
                f"faulting in {addr:#x}+{n:#x} needs more than the {self.pages.nr_free} free pages"
            )
        missing = [
            va
            for va in range(first, last + PAGE_SIZE, PAGE_SIZE)
            if self.pgtable.iova_to_phys(va) is None
        ]
        if not missing:
            return
        need = sum(1 for va in missing if va not in self._resident)
        need += self.pgtable.tables_needed(missing[0], missing[-1] + PAGE_SIZE - missing[0])
        if need > self.pages.nr_free:
            raise OutOfMemory(
                f"faulting in {len(missing)} pages needs {need} pages, {self.pages.nr_free} free"
            )
        for va in missing:
            area = self._vmas.find(va)
            iprot = None if area is None else _iommu_prot(area.prot)
            if iprot is None:  # pragma: no cover - checked above
                raise BadAddress(f"address {va:#x} is not mapped")
            self._fault_page(va, iprot, remote=False)

    def read(self, addr: int, n: int) -> bytes:
        """A CPU load of ``n`` bytes at ``addr``, faulting pages in as needed.
        :class:`BadAddress` (EFAULT) if any byte is not readable, checked before anything
        is faulted in; :class:`InvalidArgument` for ``n`` < 0."""
        self._alive()
        if n < 0:
            raise InvalidArgument(f"n must be >= 0, not {n}")
        if n == 0:
            return b""
        self._prepare(addr, n, write=False)
        out = bytearray()
        va = addr
        end = addr + n
        while va < end:
            chunk = min(end, (va & ~_PAGE_MASK) + PAGE_SIZE) - va
            pa = self.pgtable.iova_to_phys(va)
            if pa is None:  # pragma: no cover - _prepare made it present
                raise BadAddress(f"address {va:#x} is not present")
            out += self.mem.read(pa, chunk)
            va += chunk
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """A CPU store of ``data`` at ``addr``, faulting pages in as needed.
        :class:`BadAddress` (EFAULT) if any byte is not writable, checked before anything
        is faulted in or written."""
        self._alive()
        n = len(data)
        if n == 0:
            return
        self._prepare(addr, n, write=True)
        view = memoryview(data)
        va = addr
        end = addr + n
        while va < end:
            chunk = min(end, (va & ~_PAGE_MASK) + PAGE_SIZE) - va
            pa = self.pgtable.iova_to_phys(va)
            if pa is None:  # pragma: no cover - _prepare made it present
                raise BadAddress(f"address {va:#x} is not present")
            self.mem.write(pa, bytes(view[va - addr : va - addr + chunk]))
            va += chunk

    # ------------------------------------------------------------------ exit
    def exit(self) -> None:
        """Process exit (Linux ``exit_mmap``): ``release`` on every notifier in registration
        order, then every mapping torn down without further callbacks, every data page and
        the page table freed. Afterwards the mapping calls raise :class:`InvalidArgument`
        and :meth:`fault_in` returns False. A second call does nothing."""
        if self._exited:
            return
        notifiers = self._notifiers
        self._notifiers = []
        self._released = list(notifiers)
        for n in notifiers:
            n.release(self)
        self._exited = True
        gather = IotlbGather()
        self.pgtable.unmap(0, self.task_size, gather)
        for va, pa in self._resident.items():
            if va not in self._shared:
                self.pages.free_page(pa)
        self._resident.clear()
        self._shared.clear()
        self.stats.pages = 0
        for tpa in gather.freelist:
            self.pages.free_page(tpa)
        self.pgtable.destroy()
        self._vmas = VmaList()

    def __repr__(self) -> str:
        state = "exited" if self._exited else f"{len(self._vmas)} vmas, {self.stats.pages} pages"
        return f"Mm({self.name!r}, {self.pgtable.pt.name}, {state})"
