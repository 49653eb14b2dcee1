"""Memory images for the studies: a RISC-V IOMMU whose tables the software stack wrote.

Page tables are :class:`~iommusim.sw.pgtable.riscv.RiscvPageTable` (the radix writer the
drivers use); the device directory, device context, process directory and process context
are encoded from the spec tables of :mod:`iommusim.bits.riscv.structures`. Table pages and
data live in one :class:`~iommusim.mem.SparseMemory`, so the batch engine can replay against
it. The IOMMU's performance counters 1..6 count HPM events 1, 4, 5, 6, 7 and 8
(riscv-iommu: "Standard Events list").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iommusim.bits.riscv.regs import OFF_IOCOUNTINH, OFF_IOHPMCTR, OFF_IOHPMEVT
from iommusim.bits.riscv.structures import DC_FSC, DC_TA, DC_TC, PC_FSC, PC_TA
from iommusim.errors import InvalidArgument
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, CacheParams
from iommusim.mem import AddressMap, SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.riscv import RiscvPageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

__all__ = ["EVENTS", "DeviceImage", "build_image", "read_counters", "reset_counters"]

PAGE: Final = 4096
#: HPM events the image's counters 1.. count: untranslated requests, IOTLB misses, DDT
#: walks, PDT walks, first-stage and G-stage PTE loads (one per table entry loaded).
EVENTS: Final = (1, 4, 5, 6, 7, 8)
DEVICE_ID: Final = 5
PROCESS_ID: Final = 1
#: Device-visible addresses start here; data pages at DATA_PA (host) or DATA_GPA (guest).
IOVA_BASE: Final = 0x4000_0000
_TABLES_PA: Final = 0x1000_0000
_TABLES_BYTES: Final = 256 << 20
_DATA_PA: Final = 0x1_0000_0000
# Guest-physical memory: tables from _GUEST_TABLES_GPA, data at _GUEST_DATA_GPA; backed by
# host memory at gpa + _GUEST_SPA_OFFSET.
_GUEST_TABLES_GPA: Final = 0x0010_0000
_GUEST_DATA_GPA: Final = IOVA_BASE
_GUEST_BYTES: Final = 1 << 32
_GUEST_SPA_OFFSET: Final = 0x20_0000_0000
_RW: Final = IOMMU_READ | IOMMU_WRITE
_MODE_1LVL: Final = 2
_PD8: Final = 1


@dataclass(frozen=True, slots=True)
class DeviceImage:
    """One device's translation tables in ``mem`` (``ddtp`` points to them): ``pages``
    mapped from :data:`IOVA_BASE`, and the process id requests carry (``-1``: none)."""

    mem: SparseMemory
    ddtp: int
    pages: int
    pasid: int

    def iommu(self, caches: CacheParams) -> RiscvIommu:
        """A fresh IOMMU (empty caches of geometry ``caches``) over the image, its counters
        counting :data:`EVENTS` from zero. The tables are read only (A and D are set), so
        any number of IOMMUs may share one image."""
        iommu = RiscvIommu(self.mem, PRESETS["full"].with_(caches=caches))
        iommu.write_register(16, 8, self.ddtp)
        for n, event in enumerate(EVENTS, start=1):
            iommu.write_register(OFF_IOHPMEVT + 8 * (n - 1), 8, event)
        iommu.write_register(OFF_IOCOUNTINH, 4, 0)
        return iommu


def build_image(
    first: str | None,
    gstage: str | None,
    pages: int,
    *,
    page_bytes: int = PAGE,
) -> DeviceImage:
    """Tables for device :data:`DEVICE_ID` translating ``pages`` 4 KiB pages from
    :data:`IOVA_BASE` through a first stage of format ``first`` (``"sv39"``, ... or ``None``
    for Bare) and a G-stage of format ``gstage`` (``"sv39x4"``, ... or ``None``).

    With a first stage the device context points to a PD8 process directory whose process
    :data:`PROCESS_ID` holds the first stage (so the process-context cache matters); with a
    G-stage the process directory and the first-stage tables live in guest-physical memory.
    Single-stage first-stage leaves are ``page_bytes`` (4 KiB or 2 MiB); every other leaf
    is 4 KiB, so each walk is a full-depth one.
    """
    if first is None and gstage is None:
        raise InvalidArgument("first and gstage must not both be None (Bare)")
    if page_bytes not in (PAGE, 2 << 20):
        raise InvalidArgument(f"page_bytes must be 4096 or 2 MiB, not {page_bytes}")
    if page_bytes != PAGE and gstage is not None:
        raise InvalidArgument("page_bytes must be 4096 with a G-stage")
    mem = SparseMemory()
    host = PageAllocator(mem, _TABLES_PA, _TABLES_BYTES)
    ddt = host.alloc_page()
    tc = DC_TC.encode(v=1)
    iohgatp = 0
    fsc = 0
    ta = DC_TA.encode(pscid=7)
    tables: AddressMap | SparseMemory = mem
    alloc = host
    if gstage is not None:
        g = RiscvPageTable(mem, host, gstage)
        iohgatp = g.atp(gscid=3)
        # The guest's table pages and its data pages, each mapped with a 4 KiB G-stage leaf.
        n_tables = 16 + 4 * (pages // 512 + 1)
        for i in range(n_tables):
            gpa = _GUEST_TABLES_GPA + i * PAGE
            g.map(gpa, gpa + _GUEST_SPA_OFFSET, PAGE, _RW)
        for i in range(pages):
            gpa = _GUEST_DATA_GPA + i * PAGE
            g.map(gpa, gpa + _GUEST_SPA_OFFSET, PAGE, _RW)
        tables = AddressMap()
        tables.add(0, _GUEST_BYTES, mem, name="guest", target_pa=_GUEST_SPA_OFFSET)
        alloc = PageAllocator(tables, _GUEST_TABLES_GPA, n_tables * PAGE, max_order=2)
        # G-stage only: the IOVA is the GPA.
        data = _GUEST_DATA_GPA
    else:
        data = _DATA_PA
    pasid = -1
    if first is not None:
        s1 = RiscvPageTable(tables, alloc, first)
        if page_bytes == PAGE or gstage is not None:
            for i in range(pages):
                s1.map(IOVA_BASE + i * PAGE, data + i * PAGE, PAGE, _RW)
        else:
            span = -(-pages * PAGE // page_bytes) * page_bytes
            s1.map(IOVA_BASE, data, span, _RW)
        pdt = alloc.alloc_page()
        pc = pdt + PROCESS_ID * 16
        tables.write64(pc, PC_TA.encode(v=1, pscid=9))
        tables.write64(pc + 8, PC_FSC.encode(mode=s1.mode, ppn=s1.root_ppn))
        tc |= DC_TC.encode(pdtv=1)
        fsc = DC_FSC.encode(mode=_PD8, ppn=pdt >> 12)
        pasid = PROCESS_ID
    # riscv-iommu: "Device-context fields": extended format, 1-level DDT.
    dc = ddt + DEVICE_ID * 64
    for k, word in enumerate((tc, iohgatp, ta, fsc)):
        mem.write64(dc + 8 * k, word)
    return DeviceImage(mem, ddt >> 12 << 10 | _MODE_1LVL, pages, pasid)


def reset_counters(iommu: RiscvIommu) -> None:
    """Zero the counters of :data:`EVENTS` (after a warm-up)."""
    for n in range(1, len(EVENTS) + 1):
        iommu.write_register(OFF_IOHPMCTR + 8 * (n - 1), 8, 0)


def read_counters(iommu: RiscvIommu) -> dict[int, int]:
    """HPM event -> count since the last :func:`reset_counters`."""
    return {
        event: iommu.read_register(OFF_IOHPMCTR + 8 * (n - 1), 8) & ((1 << 63) - 1)
        for n, event in enumerate(EVENTS, start=1)
    }
