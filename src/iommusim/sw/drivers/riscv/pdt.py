"""Process-directory management (riscv-iommu: "Process-directory-table (PDT)").

A device whose context has ``tc.PDTV = 1`` translates each PASID (``process_id``) through the
process context (PC) the PDT holds for it. The PDT is a radix tree indexed by PDI fields of the
process id: PDI[0] = bits 7:0 selects one of 256 16-byte PCs in a leaf page, PDI[1] = bits
16:8 and PDI[2] = bits 19:17 select 8-byte non-leaf entries. PD8 has only the leaf level, PD17
two levels and PD20 three. As for the device directory, intermediate tables are allocated on
first use and published with a compare-and-swap after they are zeroed, so a concurrent walker
sees either no entry or a complete table.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv.structures import PDTE
from iommusim.errors import InvalidArgument
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PageAllocator

__all__ = ["PD8", "PD17", "PD20", "PD_PID_BITS", "ProcessDirectory"]

# riscv-iommu: "Encoding of pdtp.MODE field".
PD8: Final = 1
PD17: Final = 2
PD20: Final = 3
#: process_id bits each pdtp.MODE can index.
PD_PID_BITS: Final = {PD8: 8, PD17: 17, PD20: 20}
_LEVELS: Final = {PD8: 1, PD17: 2, PD20: 3}
_V: Final = PDTE["v"].mask
_PPN: Final = PDTE["ppn"]
#: (shift, width) of PDI[1] and PDI[2].
_PDI: Final = ((8, 9), (17, 3))


class ProcessDirectory:
    """A PDT rooted in a freshly allocated page; :meth:`pdtp` is the value for ``DC.fsc``."""

    def __init__(self, mem: PhysicalMemory, pages: PageAllocator, mode: int) -> None:
        if mode not in _LEVELS:
            raise InvalidArgument(f"pdtp.MODE must be PD8, PD17 or PD20, not {mode}")
        self.mem = mem
        self.pages = pages
        self.mode = mode
        self.levels = _LEVELS[mode]
        self.pid_bits = PD_PID_BITS[mode]
        self.root_pa = pages.alloc_page()
        self.tables = [self.root_pa]

    def pdtp(self) -> int:
        """``DC.fsc`` when ``tc.PDTV`` is 1: MODE[63:60] and the root PPN."""
        return self.mode << 60 | self.root_pa >> 12

    def pc_pa(self, pid: int, alloc: bool = True) -> int | None:
        """PA of the process context of ``pid`` (None when absent and ``alloc`` is False)."""
        if not 0 <= pid < 1 << self.pid_bits:
            raise InvalidArgument(f"process id {pid:#x} does not fit the {self.pid_bits}-bit PDT")
        table: int = self.root_pa
        for level in range(self.levels - 1, 0, -1):
            shift, width = _PDI[level - 1]
            entry_pa = table + (pid >> shift & ((1 << width) - 1)) * 8
            pdte = self.mem.read64(entry_pa)
            if not pdte & _V:
                if not alloc:
                    return None
                page = self.pages.alloc_page()
                new = _V | _PPN.put(0, page >> 12)
                seen = self.mem.cas64(entry_pa, pdte, new)
                if seen != pdte:
                    self.pages.free_page(page)
                    pdte = seen
                else:
                    pdte = new
                    self.tables.append(page)
            table = _PPN.get(pdte) << 12
        return table + (pid & 0xFF) * 16

    def destroy(self) -> None:
        """Free every table page (the device context no longer points here)."""
        for pa in self.tables:
            self.pages.free_page(pa)
        self.tables = []
