"""SMMUv3 domains (after Linux ``arm_smmu_domain``): the static identity and blocked domains,
and paging domains -- a stage 1 table tagged by an ASID, or a stage 2 table tagged by a VMID --
written by the io-pgtable-arm writer (:mod:`iommusim.sw.pgtable.arm_lpae`).

Invalidation after an unmap (Linux ``arm_smmu_tlb_inv_range_domain``): CMD_TLBI_NH_VA (stage
1, by ASID) or CMD_TLBI_S2_IPA (stage 2, by VMID) for the gathered range -- as range
commands when SMMU_IDR3.RIL, one per granule otherwise, the whole ASID / VMID beyond
:data:`INV_LIMIT` or when table pages were freed -- then CMD_ATC_INV for every attached
master with ATS, and one CMD_SYNC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.errors import InvalidArgument
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_UNMANAGED, Domain, RadixDomain
from iommusim.sw.pgtable import ArmLpaePageTable
from iommusim.sw.pgtable.gather import IotlbGather

if TYPE_CHECKING:
    from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver

__all__ = ["INV_LIMIT", "Smmuv3PagingDomain", "Smmuv3StaticDomain"]

#: Ranges above this many granules are invalidated by ASID / VMID (Linux
#: ``CMDQ_MAX_TLBI_OPS``-like cut-off for an SMMU without range invalidation).
INV_LIMIT: Final = 512
_ALL: Final = (1 << 64) - 1


class Smmuv3StaticDomain(Domain):
    """The identity (STE bypass) or blocked (STE abort) domain of one SMMU; attaching never
    fails."""

    def __init__(self, driver: Smmuv3Driver, domain_type: int) -> None:
        super().__init__(domain_type, driver)
        self.driver = driver

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        self.driver.attach_static(dev, self.type)


class Smmuv3PagingDomain(RadixDomain):
    """A paging domain of ``stage`` 1 or 2 on ``driver``'s SMMU (its ASID or VMID is
    allocated with the domain)."""

    pgtable: ArmLpaePageTable

    supports_pasid = True

    def __init__(self, driver: Smmuv3Driver, stage: int, tag: int, ia_bits: int) -> None:
        self.driver = driver
        self.stage = stage
        #: The ASID (stage 1) or VMID (stage 2) that tags this domain's TLB entries.
        self.tag = tag
        self.pgtable = ArmLpaePageTable(
            driver.mem, driver.pages, 1 if stage == 1 else 2, driver.granule, ia_bits
        )
        super().__init__(
            DOMAIN_UNMANAGED, driver, self.pgtable.pgsize_bitmap, (0, (1 << ia_bits) - 1)
        )
        self.pa_limit = min(self.pgtable.pa_limit, 1 << driver.oas_bits)
        if stage == 2:
            self.supports_pasid = False
        #: ``(device, pasid or None)`` attached to this domain.
        self.masters: list[tuple[Device, int | None]] = []
        self.invalidations = 0

    def _check(self, dev: Device) -> None:
        if dev.iommu is not self.driver:
            raise InvalidArgument(f"{dev.name} is not behind {self.driver.name}")

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        self._check(dev)
        self.masters.append((dev, None))
        try:
            self.driver.attach_paging(dev, self)
        except BaseException:
            self.masters.remove((dev, None))
            raise
        self._left(old, dev, None)

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None:
        self._check(dev)
        self.masters.append((dev, pasid))
        try:
            self.driver.attach_pasid(dev, pasid, self)
        except BaseException:
            self.masters.remove((dev, pasid))
            raise
        self._left(old, dev, pasid)

    def remove_dev_pasid(self, dev: Device, pasid: int) -> None:
        self.driver.detach_pasid(dev, pasid)
        self.unlink(dev, pasid)

    def _left(self, old: Domain | None, dev: Device, pasid: int | None) -> None:
        if isinstance(old, Smmuv3PagingDomain) and old is not self:
            old.unlink(dev, pasid)

    def unlink(self, dev: Device, pasid: int | None) -> None:
        """``dev`` (at ``pasid``) no longer uses this domain; once no master is left, the
        domain's TLB entries go (Linux invalidates the ASID/VMID on the last detach)."""
        if (dev, pasid) in self.masters:
            self.masters.remove((dev, pasid))
            if not self.masters:
                self.driver.tlb_inv_all(self)

    # -- map / unmap -----------------------------------------------------------------------

    def iotlb_sync(self, gather: IotlbGather) -> None:
        if gather.start > gather.end:
            return
        self.invalidations += 1
        self.driver.tlb_inv_range(self, gather.start, gather.end, leaf=not gather.freelist)

    def flush_iotlb_all(self) -> None:
        self.invalidations += 1
        self.driver.tlb_inv_all(self)

    def free(self) -> None:
        self.driver.free_tag(self)
        self.pgtable.destroy()
