"""The SMMUv3 SVA domain (after the seed "iommu: Shared Virtual Addressing for SMMUv3", Linux
``arm-smmu-v3-sva.c``): a process's own arm64 page table, shared with devices at a PASID.

Each bound device gets the CD of its PASID pointing at the process's TTB0 table with the
process's CPU ASID (shared with the CPU: "Pin down ASIDs for sharing mm with devices"; a
private DMA domain holding that ASID is moved to a fresh one first -- "Seize private ASID"),
ASET = 0, and HA/HD when the SMMU updates Access and dirty state (IDR0.HTTU) so the device's
accesses set the CPU page table's AF and dirty state. The domain is an mm notifier: when the
process clears or downgrades entries, CMD_TLBI_NH_VA by the ASID (NH_ASID when tables were
freed or the range is large) and CMD_ATC_INV with the PASID go out, then CMD_SYNC, before the
pages are freed (``arm_smmu_mm_arch_invalidate_secondary_tlbs``); at exit the CDs are cleared
(``arm_smmu_mm_release``), so the devices' accesses fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iommusim.errors import InvalidArgument
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_SVA, Domain

if TYPE_CHECKING:
    from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
    from iommusim.sw.mm.mm import Mm

__all__ = ["Smmuv3SvaDomain"]


class Smmuv3SvaDomain(Domain):
    """An SVA domain of ``mm`` on ``driver``'s SMMU, tagged with the process's ASID."""

    supports_pasid = True

    def __init__(self, driver: Smmuv3Driver, mm: Mm, asid: int) -> None:
        super().__init__(DOMAIN_SVA, driver)
        self.driver = driver
        self.mm = mm
        #: The CPU ASID, shared with the SMMU (the ``tag`` of this domain's TLB entries).
        self.tag = asid
        self.masters: list[tuple[Device, int]] = []
        self.invalidations = 0
        self._notifying = False

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None:
        if self.mm.exited:
            raise InvalidArgument(f"{self.mm.name} has exited")
        self.masters.append((dev, pasid))
        try:
            self.driver.attach_sva(dev, pasid, self)
            if not self._notifying:
                self.mm.register_notifier(self)
                self._notifying = True
        except BaseException:
            self.masters.remove((dev, pasid))
            raise
        if old is not None and old is not self:
            old.remove_dev_pasid(dev, pasid)

    def remove_dev_pasid(self, dev: Device, pasid: int) -> None:
        if (dev, pasid) not in self.masters:
            return
        self.driver.detach_pasid(dev, pasid)
        self.driver.sva_inv(self, 0, (1 << 64) - 1, True, only=(dev, pasid))
        self.masters.remove((dev, pasid))
        if not self.masters:
            self._unregister()

    def _unregister(self) -> None:
        if self._notifying:
            self._notifying = False
            if not self.mm.exited:
                self.mm.unregister_notifier(self)

    # -- MmuNotifier ------------------------------------------------------------------------

    def invalidate(self, mm: Mm, start: int, end: int, tables_freed: bool) -> None:
        """The process changed ``[start, end)``: TLB and ATCs invalidated, and waited for."""
        if not self.masters or end <= start:
            return
        self.invalidations += 1
        self.driver.sva_inv(self, start, end - 1, tables_freed, cpu_flushed=True)

    def release(self, mm: Mm) -> None:
        """The process exits: every CD of this domain becomes invalid before its table goes."""
        self._notifying = False
        for dev, pasid in list(self.masters):
            self.driver.detach_pasid(dev, pasid)
        self.driver.sva_inv(self, 0, (1 << 64) - 1, True)

    def free(self) -> None:
        self._unregister()
        self.driver.release_sva_asid(self)
