"""The RISC-V paging domain: a first-stage page table, a PSCID and the devices bonded to it.

After Linux ``riscv_iommu_domain``: attach links the device into the domain's bond list
before the device context points at the table, and unlinks it from the old domain after; the
IOTLB is invalidated by PSCID on every IOMMU that has a bonded device, one command per 4 KiB
page below a 2 MiB range and one whole-PSCID command above it, then IOFENCE.C
(riscv-iommu: "IOMMU Page-Table cache invalidation commands").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.errors import NoDevice
from iommusim.hw.riscv.params import cap
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_UNMANAGED, Domain
from iommusim.sw.drivers.riscv.commands import iotinval_vma
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.pgtable.riscv import SV39, SV48, SV57, RiscvPageTable, RiscvPtFormat

if TYPE_CHECKING:
    from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver

__all__ = ["IOTLB_INVAL_LIMIT", "RiscvPagingDomain", "pgtable_format"]

#: Linux RISCV_IOMMU_IOTLB_INVAL_LIMIT: ranges below this are invalidated page by page.
IOTLB_INVAL_LIMIT: Final = 2 << 20
_PAGE: Final = 4096
_ALL: Final = (1 << 64) - 1


def pgtable_format(caps: int) -> RiscvPtFormat:
    """The widest first-stage format the capabilities offer (Sv57 > Sv48 > Sv39)."""
    for fmt, bit in ((SV57, cap.SV57), (SV48, cap.SV48), (SV39, cap.SV39)):
        if caps >> bit & 1:
            return fmt
    raise NoDevice("the IOMMU supports no Sv39/Sv48/Sv57 first-stage page table")


class RiscvPagingDomain(Domain):
    def __init__(self, driver: RiscvIommuDriver, fmt: RiscvPtFormat, pscid: int) -> None:
        # Only the lower half of the address space: IOVAs are not sign-extended (Linux keeps
        # the aperture at [0, 2^(va_bits-1) - 1] for the same reason).
        super().__init__(DOMAIN_UNMANAGED, driver, fmt.pgsize_bitmap,
                         (0, (1 << (fmt.va_bits - 1)) - 1))
        self.driver = driver
        self.pscid = pscid
        self.pgtable = RiscvPageTable(driver.mem, driver.pages, fmt, set_ad=True)
        self.bonds: list[tuple[RiscvIommuDriver, Device]] = []
        self.invalidations = 0

    # ------------------------------------------------------------------ attach
    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        iommu = dev.iommu
        if iommu is not self.driver:
            raise NoDevice(f"{dev.name} is not behind {self.driver.name}")
        # bond_link before the context points at us: an invalidation racing with the attach
        # must already see this IOMMU in the list.
        self.bonds.append((self.driver, dev))
        try:
            fsc = self.pgtable.atp()
            self.driver.iodir_update(dev, fsc, self.pscid << 12, True)
        except BaseException:
            self.bonds.remove((self.driver, dev))
            raise
        if isinstance(old, RiscvPagingDomain) and old is not self:
            old.bond_unlink(dev)

    def bond_unlink(self, dev: Device) -> None:
        """Drop ``dev``; the last device of this domain on an IOMMU flushes its PSCID there."""
        found = [b for b in self.bonds if b[1] is dev]
        if not found:
            return
        drv = found[0][0]
        self.bonds.remove(found[0])
        if not any(b[0] is drv for b in self.bonds):
            drv.command(iotinval_vma(pscid=self.pscid))
            drv.sync()

    # ------------------------------------------------------------------ map / unmap
    def map(self, iova: int, pa: int, size: int, prot: int) -> None:
        self.pgtable.map(iova, pa, size, prot)

    def unmap(self, iova: int, size: int, gather: IotlbGather) -> int:
        return self.pgtable.unmap(iova, size, gather)

    def iova_to_phys(self, iova: int) -> int | None:
        return self.pgtable.iova_to_phys(iova)

    def iotlb_inval(self, start: int, end: int) -> None:
        """riscv_iommu_iotlb_inval: invalidate [start, end] on every bonded IOMMU."""
        self.invalidations += 1
        seen: list[RiscvIommuDriver] = []
        for drv, _ in self.bonds:
            if any(s is drv for s in seen):
                continue
            seen.append(drv)
            if end - start + 1 < IOTLB_INVAL_LIMIT:
                for va in range(start & ~(_PAGE - 1), end + 1, _PAGE):
                    drv.command(iotinval_vma(pscid=self.pscid, addr=va))
            else:
                drv.command(iotinval_vma(pscid=self.pscid))
        for drv in seen:
            drv.sync()

    def iotlb_sync(self, gather: IotlbGather) -> None:
        # Freed table pages may sit in non-leaf caches: with no non-leaf range invalidation
        # in the base spec, the whole PSCID goes (Linux riscv_iommu_iotlb_sync).
        if gather.freelist:
            self.iotlb_inval(0, _ALL)
        elif gather.start <= gather.end:
            self.iotlb_inval(gather.start, gather.end)

    def flush_iotlb_all(self) -> None:
        self.iotlb_inval(0, _ALL)

    def release_table_pages(self, freelist: list[int]) -> None:
        free = self.driver.pages.free_page
        for pa in freelist:
            free(pa)

    def free(self) -> None:
        self.pgtable.destroy()
        self.driver.pscid_ida.free(self.pscid)
