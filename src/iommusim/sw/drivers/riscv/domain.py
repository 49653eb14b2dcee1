"""The RISC-V paging domain: a first-stage page table, a PSCID and the devices bonded to it.

After Linux ``riscv_iommu_domain``: attach links the device into the domain's bond list
before the device context points at the table, and unlinks it from the old domain after; the
IOTLB is invalidated by PSCID on every IOMMU that has a bonded device, one command per 4 KiB
page below a 2 MiB range and one whole-PSCID command above it, then IOFENCE.C
(riscv-iommu: "IOMMU Page-Table cache invalidation commands").

Dirty tracking (a domain allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING, on an IOMMU with
``capabilities.AMO_HWAD``): riscv-iommu "IOMMU updating of PTE accessed (A) and dirty (D)
updates" -- with ``DC.tc.SADE`` (first stage) or ``GADE`` (G-stage) set, a device write
through a leaf whose D bit is clear makes the IOMMU set it ("Process to translate an IOVA",
the first- and second-stage steps, which follow the privileged spec's A/D rules); with the
bit 0 the same write is a page fault. So, while tracking is off, leaves keep A and D preset
and the devices' contexts have the bit 0, as for every other domain; turning tracking on sets
the bit in every bonded device's context, then cleans every leaf; turning it off marks every
writable leaf dirty again before the bit is cleared. Reading the dirty leaves cleans them and
invalidates their IOTLB entries, since "if software clears the A and/or D bit ... software must
invalidate corresponding PTE entries that may be cached by the IOMMU" (riscv-iommu: "Accessed
(A)/Dirty (D) bit updates and page promotions"): a cached dirty translation would let the
next write through without setting D.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from iommusim.bits.pcie import inval_payload
from iommusim.bits.riscv.regs import cap
from iommusim.bits.riscv.structures import DC_TC
from iommusim.errors import InvalidArgument, NoDevice, NotSupported
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_UNMANAGED, Domain, RadixDomain
from iommusim.sw.drivers.riscv.commands import Command, iotinval_vma
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.pgtable.riscv import (
    SV39,
    SV39X4,
    SV48,
    SV48X4,
    SV57,
    SV57X4,
    RiscvPageTable,
    RiscvPtFormat,
)

if TYPE_CHECKING:
    from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver

__all__ = [
    "AD_UPDATE_MASK",
    "IOTLB_INVAL_LIMIT",
    "TC_GADE",
    "TC_SADE",
    "Bond",
    "Bonded",
    "RiscvPagingDomain",
    "TagInval",
    "first_stage_formats",
    "gstage_format",
    "invalidate_bonds",
    "pgtable_format",
    "unlink_bond",
    "vma_tag",
]

#: Linux RISCV_IOMMU_IOTLB_INVAL_LIMIT: ranges below this are invalidated page by page.
IOTLB_INVAL_LIMIT: Final = 2 << 20
_PAGE: Final = 4096
_ALL: Final = (1 << 64) - 1
#: An ATS.INVAL payload covering every address (PCIe "Invalidate Request", S = 1).
ATS_INVAL_ALL: Final = inval_payload(0, 1 << 64)
#: ``DC.tc.SADE`` / ``GADE``: the IOMMU updates A/D bits of first-stage / G-stage PTEs
#: (riscv-iommu: "Translation control (tc)").
TC_SADE: Final = DC_TC.mask("sade")
TC_GADE: Final = DC_TC.mask("gade")
AD_UPDATE_MASK: Final = TC_SADE | TC_GADE


#: A device attached to a domain: its IOMMU, the device, and the PASID (None: the RID).
Bond = tuple["RiscvIommuDriver", Device, "int | None"]


class Bonded(Domain, ABC):
    """A domain that keeps a bond list: a device leaving it is unlinked (and the domain's
    tags flushed on that IOMMU once no device of it is left there)."""

    @abstractmethod
    def bond_unlink(self, dev: Device, pasid: int | None) -> None:
        """Unlink ``dev``'s bond at ``pasid`` (None: the RID)."""


#: Builds the IOTLB invalidation of one domain tag: for the 4 KiB page at ``addr``, or of the
#: whole tag when ``addr`` is None (IOTINVAL.VMA by PSCID, IOTINVAL.GVMA by GSCID, ...).
TagInval = Callable[[int | None], Command]


def vma_tag(pscid: int, gscid: int | None = None) -> TagInval:
    """IOTINVAL.VMA by ``pscid`` (with GV = 1 and ``gscid`` under a G-stage)."""
    return lambda addr: iotinval_vma(pscid=pscid, addr=addr, gscid=gscid)


def invalidate_bonds(
    tag: TagInval,
    bonds: list[Bond],
    start: int,
    end: int,
    nonleaf: bool = False,
    ats_all: Sequence[Bond] = (),
) -> None:
    """riscv_iommu_iotlb_inval for [start, end] on every IOMMU with a bonded device.

    The ``tag`` command once per 4 KiB page below a 2 MiB range and once for the whole tag
    above it, or when ``nonleaf`` (table pages were freed and the base spec has no non-leaf
    range invalidation). Then, because "software must first invalidate the IOATC before
    sending invalidations to the DevATC" (riscv-iommu: "Device Address Translation Cache
    invalidations"), ATS.INVAL to every bonded device with ATS (tagged with its PASID): of the
    range, or of everything for the bonds in ``ats_all`` (devices whose addresses the range
    does not name, as a nested device's under a G-stage change). Finally one IOFENCE.C per
    IOMMU, which waits for the devices' completions.
    """
    seen: list[RiscvIommuDriver] = []
    for drv, _, _ in bonds:
        if any(s is drv for s in seen):
            continue
        seen.append(drv)
        if end - start + 1 < IOTLB_INVAL_LIMIT and not nonleaf:
            for va in range(start & ~(_PAGE - 1), end + 1, _PAGE):
                drv.command(tag(va))
        else:
            drv.command(tag(None))
    payload = -1
    for bond in bonds:
        drv, dev, pasid = bond
        if drv.ats_enabled(dev):
            if any(b is bond for b in ats_all):
                drv.ats_inval(dev, pasid, ATS_INVAL_ALL)
                continue
            if payload < 0:
                payload = inval_payload(start, end - start + 1)
            drv.ats_inval(dev, pasid, payload)
    for drv in seen:
        drv.sync()


def unlink_bond(tag: TagInval, bonds: list[Bond], dev: Device, pasid: int | None) -> Bond | None:
    """Drop ``dev``'s bond at ``pasid`` from ``bonds`` and return it (None when there was
    none); the last device of the domain on an IOMMU flushes the domain's tag there, with a
    fence (Linux riscv_iommu_bond_unlink)."""
    found = next((b for b in bonds if b[1] is dev and b[2] == pasid), None)
    if found is None:
        return None
    drv = found[0]
    bonds.remove(found)
    if not any(b[0] is drv for b in bonds):
        drv.command(tag(None))
        drv.sync()
    return found


def _drop_record(iova: int, size: int) -> None:
    """A dirty record nobody reads (the clean snapshot of turning tracking on)."""


def first_stage_formats(caps: int) -> tuple[RiscvPtFormat, ...]:
    """The Sv39/Sv48/Sv57 first-stage formats the capabilities offer, widest first."""
    return tuple(
        fmt
        for fmt, bit in ((SV57, cap.SV57), (SV48, cap.SV48), (SV39, cap.SV39))
        if caps >> bit & 1
    )


def pgtable_format(caps: int) -> RiscvPtFormat:
    """The widest first-stage format the capabilities offer (Sv57 > Sv48 > Sv39)."""
    have = first_stage_formats(caps)
    if not have:
        raise NoDevice("the IOMMU supports no Sv39/Sv48/Sv57 first-stage page table")
    return have[0]


def gstage_format(caps: int) -> RiscvPtFormat:
    """The widest G-stage format the capabilities offer with ``fctl.GXL`` = 0 (Sv57x4 >
    Sv48x4 > Sv39x4); EOPNOTSUPP when there is none (riscv-iommu: "iohgatp")."""
    for fmt, bit in ((SV57X4, cap.SV57X4), (SV48X4, cap.SV48X4), (SV39X4, cap.SV39X4)):
        if caps >> bit & 1:
            return fmt
    raise NotSupported("the IOMMU supports no Sv39x4/Sv48x4/Sv57x4 G-stage page table")


class RiscvPagingDomain(RadixDomain, Bonded):
    """A paging domain: a first-stage page table and a PSCID (riscv_iommu_domain).

    ``dirty_ops``: the domain tracks dirty pages (see the module docstring); it then serves
    no PASIDs, as ``DC.tc.SADE`` is the whole device's."""

    pgtable: RiscvPageTable

    supports_pasid = True
    #: The ``DC.tc`` bit that makes the IOMMU update this domain's A/D bits.
    ad_update_bit: int = TC_SADE

    def __init__(
        self, driver: RiscvIommuDriver, fmt: RiscvPtFormat, pscid: int, *, dirty_ops: bool = False
    ) -> None:
        # Only the lower half of the address space: IOVAs are not sign-extended (Linux keeps
        # the aperture at [0, 2^(va_bits-1) - 1] for the same reason).
        super().__init__(
            DOMAIN_UNMANAGED, driver, fmt.pgsize_bitmap, (0, (1 << (fmt.va_bits - 1)) - 1)
        )
        self.driver = driver
        self.pscid = pscid
        self.pgtable = RiscvPageTable(driver.mem, driver.pages, fmt, set_ad=True)
        self.pa_limit = self.pgtable.pa_limit
        self.bonds: list[Bond] = []
        self.invalidations = 0
        self.dirty_ops = dirty_ops
        if dirty_ops:
            self.supports_pasid = False
        #: Dirty tracking is on: the bonded devices' contexts have :attr:`ad_update_bit`.
        self.dirty_tracking = False

    @property
    def ade(self) -> int:
        """The ``DC.tc.SADE``/``GADE`` bits a device attached to this domain gets now."""
        return self.ad_update_bit if self.dirty_tracking else 0

    # ------------------------------------------------------------------ attach
    def _check_iommu(self, dev: Device) -> None:
        if dev.iommu is not self.driver:
            # "incompatible": the domain is another IOMMU's (EINVAL, as Linux and iommufd).
            raise InvalidArgument(f"{dev.name} is not behind {self.driver.name}")

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        self._check_iommu(dev)
        # bond_link before the context points at us: an invalidation racing with the attach
        # must already see this IOMMU in the list.
        bond = (self.driver, dev, None)
        self.bonds.append(bond)
        try:
            self._point(dev)
        except BaseException:
            self.bonds.remove(bond)
            raise
        if isinstance(old, Bonded) and old is not self:
            old.bond_unlink(dev, None)

    def _point(self, dev: Device) -> None:
        """Point ``dev``'s RID translation at this domain's table: the first stage, by PSCID."""
        self.driver.set_rid_context(
            dev,
            self.pgtable.atp(),
            self.pscid << 12,
            True,
            pri=self.iopf_handler is not None,
            ade=self.ade,
        )

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None:
        """Attach at a PASID: the PASID's process context points at this table."""
        self._check_iommu(dev)
        bond = (self.driver, dev, pasid)
        self.bonds.append(bond)
        try:
            self.driver.set_pasid_context(
                dev, pasid, self.pgtable.atp(), self.pscid, pri=self.iopf_handler is not None
            )
        except BaseException:
            self.bonds.remove(bond)
            raise
        if old is not None and old is not self:
            old.remove_dev_pasid(dev, pasid)

    def remove_dev_pasid(self, dev: Device, pasid: int) -> None:
        self.bond_unlink(dev, pasid)

    def bond_unlink(self, dev: Device, pasid: int | None) -> None:
        unlink_bond(vma_tag(self.pscid), self.bonds, dev, pasid)

    # ------------------------------------------------------------------ map / unmap
    def iotlb_inval(self, start: int, end: int, nonleaf: bool = False) -> None:
        """riscv_iommu_iotlb_inval: invalidate [start, end] on every bonded IOMMU."""
        self.invalidations += 1
        invalidate_bonds(vma_tag(self.pscid), self.bonds, start, end, nonleaf)

    def iotlb_sync(self, gather: IotlbGather) -> None:
        # Freed table pages may sit in non-leaf caches: with no non-leaf range invalidation
        # in the base spec, the whole PSCID goes (Linux riscv_iommu_iotlb_sync).
        if gather.freelist:
            self.iotlb_inval(gather.start, gather.end, nonleaf=True)
        elif gather.start <= gather.end:
            self.iotlb_inval(gather.start, gather.end)

    def flush_iotlb_all(self) -> None:
        self.iotlb_inval(0, _ALL)

    # ------------------------------------------------------------------ dirty tracking
    def set_dirty_tracking(self, enabled: bool) -> None:
        """Turn dirty tracking on or off (EOPNOTSUPP for a domain without ``dirty_ops``;
        nothing happens when it already is so). On: :attr:`ad_update_bit` goes into every
        bonded device's context (each rewritten by the driver's context update, which
        flushes the device's cached translations), new leaves are written clean, and every
        leaf is cleaned and its IOTLB entries invalidated -- the A/D-preset leaves of the
        tracking-off state would otherwise all read dirty. Off: every writable leaf is
        marked dirty, then the bit leaves the contexts (with it 0 a store through a clean
        leaf would page-fault, riscv-iommu "Translation control (tc)"). A context update
        that fails is undone on the devices already switched, tracking stays as it was,
        and the error is raised."""
        if not self.dirty_ops:
            super().set_dirty_tracking(enabled)
        if enabled == self.dirty_tracking:
            return
        whole = self.aperture_end + 1 - self.aperture_start
        if enabled:
            self._switch_bonds(True)
            self.pgtable.track_dirty = True
            gather = IotlbGather()
            self.pgtable.read_and_clear_dirty(
                self.aperture_start, whole, False, _drop_record, gather
            )
            if not gather.empty:
                self.iotlb_sync(gather)
        else:
            self.pgtable.set_dirty(self.aperture_start, whole)
            self.pgtable.track_dirty = False
            try:
                self._switch_bonds(False)
            except BaseException:
                # Tracking stays on; the leaves marked dirty read so once (an over-report,
                # the safe side for a migration).
                self.pgtable.track_dirty = True
                raise

    def _switch_bonds(self, enabled: bool) -> None:
        """Set :attr:`dirty_tracking` and give every bonded device the matching ``ade``;
        undone (the flag and the devices done) when one update fails."""
        self.dirty_tracking = enabled
        done: list[Bond] = []
        try:
            for bond in self.bonds:
                drv, dev, _ = bond
                drv.set_ad_update(dev, self.ade)
                done.append(bond)
        except BaseException:
            self.dirty_tracking = not enabled
            for drv, dev, _ in done:
                drv.set_ad_update(dev, self.ade)
            raise

    def read_and_clear_dirty(
        self, iova: int, size: int, no_clear: bool, record: Callable[[int, int], None]
    ) -> None:
        """``record(leaf_iova, leaf_size)`` for every leaf in ``[iova, iova + size)`` the
        IOMMU marked dirty (D set) and, unless ``no_clear``, clean it, then invalidate the
        cleaned leaves' IOTLB entries (this domain's IOTINVAL.VMA by PSCID or, for a nesting
        parent, IOTINVAL.GVMA by GSCID; ATS.INVAL to devices with ATS; IOFENCE.C) so the next
        write sets D again (riscv-iommu: "Accessed (A)/Dirty (D) bit updates and page
        promotions"). Nothing is reported while tracking is off (the leaves' D bits are
        preset then). EOPNOTSUPP without ``dirty_ops``; EINVAL for a range outside the
        table's format, nothing changed."""
        if not self.dirty_ops:
            super().read_and_clear_dirty(iova, size, no_clear, record)
        self.pgtable.check_range(iova, size)
        if not self.dirty_tracking:
            return
        gather = IotlbGather()
        self.pgtable.read_and_clear_dirty(iova, size, no_clear, record, gather)
        if not gather.empty:
            self.iotlb_sync(gather)

    def release_table_pages(self, freelist: list[int]) -> None:
        free = self.driver.pages.free_page
        for pa in freelist:
            free(pa)

    def free(self) -> None:
        self.pgtable.destroy()
        self.driver.pscid_ida.free(self.pscid)
