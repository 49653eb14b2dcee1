"""The RISC-V SVA domain: a process's own page table, reached through process contexts.

Each device bound to the process gets a process context at the process's PASID whose
``fsc`` is the process's ``satp`` (the CPU page table in Sv39/48/57 format, which the IOMMU's
first stage walks as is) and whose ``ta`` carries a PSCID of the domain's own (riscv-iommu:
"Process-context fields"). The domain is an mm notifier: whenever the process clears or
downgrades page-table entries, the IOTLB entries of its PSCID for the range and the ATCs of the
bound devices are invalidated before the pages are freed or the call returns (after Linux
``arm_smmu_mm_arch_invalidate_secondary_tlbs``). At process exit the contexts are made
invalid, so the devices' accesses with that PASID fault (after ``arm_smmu_mm_release``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iommusim.errors import InvalidArgument
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_SVA, Domain
from iommusim.sw.drivers.riscv.domain import Bond, invalidate_bonds, unlink_bond, vma_tag
from iommusim.sw.pgtable.riscv import riscv_atp

if TYPE_CHECKING:
    from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver
    from iommusim.sw.mm.mm import Mm

__all__ = ["RiscvSvaDomain"]


class RiscvSvaDomain(Domain):
    """An SVA domain: a process's own page table at a PASID, with its PSCID."""

    supports_pasid = True

    def __init__(self, driver: RiscvIommuDriver, mm: Mm, pscid: int) -> None:
        super().__init__(DOMAIN_SVA, driver)
        self.driver = driver
        self.mm = mm
        self.pscid = pscid
        self.bonds: list[Bond] = []
        self.invalidations = 0
        self._notifying = False

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None:
        if self.mm.exited:
            raise InvalidArgument(f"{self.mm.name} has exited")
        bond = (self.driver, dev, pasid)
        self.bonds.append(bond)
        try:
            self.driver.set_pasid_context(
                dev,
                pasid,
                riscv_atp(self.mm.table()),
                self.pscid,
                pri=self.iopf_handler is not None,
            )
            if not self._notifying:
                self.mm.register_notifier(self)
                self._notifying = True
        except BaseException:
            self.bonds.remove(bond)
            raise
        if old is not None and old is not self:
            old.remove_dev_pasid(dev, pasid)

    def remove_dev_pasid(self, dev: Device, pasid: int) -> None:
        unlink_bond(vma_tag(self.pscid), self.bonds, dev, pasid)
        if not self.bonds:
            self._unregister()

    def _unregister(self) -> None:
        if self._notifying:
            self._notifying = False
            if not self.mm.exited:
                self.mm.unregister_notifier(self)

    # ------------------------------------------------------------------ MmuNotifier
    def invalidate(self, mm: Mm, start: int, end: int, tables_freed: bool) -> None:
        """The process changed [start, end): flush the IOTLB (the whole PSCID when table
        pages went) and the bound devices' ATCs, and wait."""
        if not self.bonds or end <= start:
            return
        self.invalidations += 1
        invalidate_bonds(vma_tag(self.pscid), self.bonds, start, end - 1, nonleaf=tables_freed)

    def release(self, mm: Mm) -> None:
        """The process is exiting: every process context of this domain becomes invalid
        (and is flushed, ATCs included) before the page table is torn down."""
        self._notifying = False
        for drv, dev, pasid in list(self.bonds):
            if pasid is not None:
                drv.clear_pasid_context(dev, pasid)

    def free(self) -> None:
        self._unregister()
        self.driver.pscid_ida.free(self.pscid)
