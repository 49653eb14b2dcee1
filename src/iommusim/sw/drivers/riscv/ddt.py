"""Device-directory management (riscv-iommu: "Device-directory-table (DDT)").

The driver's view of the DDT, after Linux ``riscv_iommu_get_dc``: the index of a device id is
split into DDI fields whose widths depend on the device-context format (base: 7/9/8 bits with
32-byte contexts; extended, when capabilities.MSI_FLAT is 1: 6/9/9 bits with 64-byte
contexts); intermediate tables are allocated on first use and published with a
compare-and-swap so a concurrent walker sees either no entry or a complete table.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv.regs import MODE_1LVL, MODE_2LVL, MODE_3LVL
from iommusim.bits.riscv.structures import DDTE
from iommusim.errors import NoDevice
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PageAllocator

__all__ = ["DeviceDirectory"]

_V: Final = DDTE["v"].mask
_PPN: Final = DDTE["ppn"]
_LEVELS: Final = {MODE_1LVL: 1, MODE_2LVL: 2, MODE_3LVL: 3}


class DeviceDirectory:
    """Locates (and creates) device contexts in a DDT rooted at ``root_pa``."""

    def __init__(
        self, mem: PhysicalMemory, pages: PageAllocator, root_pa: int, mode: int, extended: bool
    ) -> None:
        self.mem = mem
        self.pages = pages
        self.root_pa = root_pa
        self.mode = mode
        self.extended = extended
        self.dc_bytes = 64 if extended else 32
        # DDI widths from the leaf up: DDI[0], DDI[1], DDI[2].
        self._ddi = (6, 9, 9) if extended else (7, 9, 8)
        self.levels = _LEVELS[mode]
        self.did_bits = sum(self._ddi[: self.levels])
        self.tables = 1  # table pages in use, the root included

    def dc_pa(self, did: int, alloc: bool = True) -> int | None:
        """PA of the device context of ``did``; None when absent and ``alloc`` is False."""
        if not 0 <= did < 1 << self.did_bits:
            raise NoDevice(f"device id {did:#x} does not fit the {self.did_bits}-bit DDT")
        ddi0 = self._ddi[0]
        table = self.root_pa
        shift = sum(self._ddi[: self.levels - 1])
        for level in range(self.levels - 1, 0, -1):
            width = self._ddi[level]
            idx = did >> shift & ((1 << width) - 1)
            entry_pa = table + idx * 8
            ddte = self.mem.read64(entry_pa)
            if not ddte & _V:
                if not alloc:
                    return None
                page = self.pages.alloc_page()
                new = _V | _PPN.put(0, page >> 12)
                seen = self.mem.cas64(entry_pa, ddte, new)
                if seen != ddte:  # someone else linked a table first
                    self.pages.free_page(page)
                    ddte = seen
                else:
                    ddte = new
                    self.tables += 1
            table = _PPN.get(ddte) << 12
            shift -= self._ddi[level - 1]
        return table + (did & ((1 << ddi0) - 1)) * self.dc_bytes
