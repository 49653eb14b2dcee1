"""Two-stage domains of the RISC-V driver: a nesting parent (the G-stage) and a nested domain
(a first stage a user -- a VMM's guest -- owns, inside that G-stage).

riscv-iommu: "Device-context fields": ``iohgatp`` points at the G-stage table and names its
GSCID; with ``iohgatp.MODE`` not Bare, ``fsc`` holds the guest's ``iosatp`` (its PPN a guest
physical address, its tables in guest memory) and ``ta.PSCID`` the guest's address-space ID,
and every first-stage table access is itself translated by the G-stage ("Two-Stage Address
Translation" of the privileged spec). A nesting parent attached directly translates the
device's addresses as guest-physical ones (``fsc`` Bare).

Invalidation ("IOMMU Page-Table cache invalidation commands"): a change to the G-stage is
IOTINVAL.GVMA by GSCID (per 4 KiB page below a 2 MiB range, else the whole GSCID), which also
drops the combined first-stage entries built on it; the guest's own changes are IOTINVAL.VMA
with GV = 1 and the GSCID, by the guest's PSCID. A device with ATS caches what these domains
translate in its ATC too, so each IOTLB invalidation is followed by ATS.INVAL ("Device Address
Translation Cache invalidations"): of the range for a device on the parent itself (its
addresses are the GPAs), of everything for a device nested in it (a G-stage change may
affect any of its addresses), of the guest's range for the guest's own changes. Requests with
a PASID are not translated
through these domains (a PASID table under a G-stage is reached by guest-physical address,
which this driver does not build).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.bits.riscv.queues import CMD_IOTINVAL, FUNC_IOTINVAL_VMA, OP_IOTINVAL
from iommusim.errors import ApiError, InvalidArgument, NotSupported
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_NESTED, Domain
from iommusim.sw.drivers.riscv.commands import Command, iotinval_gvma
from iommusim.sw.drivers.riscv.domain import (
    TC_GADE,
    Bond,
    Bonded,
    RiscvPagingDomain,
    invalidate_bonds,
    unlink_bond,
    vma_tag,
)
from iommusim.sw.iommufd import uapi_riscv
from iommusim.sw.pgtable.riscv import RiscvPtFormat

if TYPE_CHECKING:
    from iommusim.sw.core.userdata import UserDataArray
    from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver

__all__ = ["RiscvNestParentDomain", "RiscvNestedDomain"]

_PAGE: Final = 4096
_ALL: Final = (1 << 64) - 1


class RiscvNestParentDomain(RiscvPagingDomain):
    """A paging domain over a G-stage table (Sv39x4/48x4/57x4) with its own GSCID: the
    kernel-owned stage a nested domain sits in (``IOMMU_HWPT_ALLOC_NEST_PARENT``).

    With ``dirty_ops`` its dirty tracking is the G-stage's D bits (``DC.tc.GADE``), in the
    contexts of the devices attached to it and of those attached through a nested domain:
    the pages a guest's device writes are reported by guest-physical address."""

    supports_pasid = False
    ad_update_bit = TC_GADE

    def __init__(
        self, driver: RiscvIommuDriver, fmt: RiscvPtFormat, gscid: int, *, dirty_ops: bool = False
    ) -> None:
        if not fmt.gstage:
            raise InvalidArgument(f"a nesting parent needs a G-stage format, not {fmt.name}")
        super().__init__(driver, fmt, 0, dirty_ops=dirty_ops)
        # The whole guest-physical space: G-stage addresses are not sign-extended.
        self.aperture_end = (1 << fmt.va_bits) - 1
        self.gscid = gscid
        #: The bonds of devices attached through a nested domain (a subset of ``bonds``).
        self.nested_bonds: list[Bond] = []

    @property
    def iohgatp(self) -> int:
        """``DC.iohgatp`` of the devices attached to this domain or to one nested in it."""
        return self.pgtable.atp(self.gscid)

    def _point(self, dev: Device) -> None:
        """Attached directly: the device's addresses are guest-physical (``fsc`` Bare)."""
        self.driver.set_rid_context(dev, 0, 0, True, iohgatp=self.iohgatp, ade=self.ade)

    def _tag(self, addr: int | None) -> Command:
        """IOTINVAL.GVMA by the GSCID (of the guest-physical page at ``addr``)."""
        return iotinval_gvma(gscid=self.gscid, gpa=addr)

    def bond_unlink(self, dev: Device, pasid: int | None) -> None:
        """Drop ``dev``'s bond; the last device on an IOMMU flushes the GSCID there."""
        gone = unlink_bond(self._tag, self.bonds, dev, pasid)
        self.nested_bonds = [b for b in self.nested_bonds if b is not gone]

    def iotlb_inval(self, start: int, end: int, nonleaf: bool = False) -> None:
        """IOTINVAL.GVMA by GSCID for [start, end] on every IOMMU with a bonded device, ATS.INVAL
        to the bonded devices with ATS (the range, or all for a nested device), IOFENCE.C."""
        self.invalidations += 1
        invalidate_bonds(self._tag, self.bonds, start, end, nonleaf, ats_all=self.nested_bonds)

    def free(self) -> None:
        self.pgtable.destroy()
        self.driver.gscid_ida.free(self.gscid)


class RiscvNestedDomain(Bonded):
    """A first stage the user owns (its ``iosatp`` and PSCID), nested in a parent's G-stage
    (``IOMMU_HWPT_DATA_*`` nested allocation): no map or unmap here -- the user edits its own
    tables in guest memory and asks for the invalidations (:meth:`cache_invalidate`)."""

    def __init__(
        self, driver: RiscvIommuDriver, parent: RiscvNestParentDomain, fsc: int, pscid: int
    ) -> None:
        super().__init__(DOMAIN_NESTED, driver)
        self.driver = driver
        self.parent = parent
        parent.users += 1  # the parent stays while a domain nests in it (EBUSY to free)
        self.fsc = fsc
        self.pscid = pscid
        self.bonds: list[Bond] = []
        self.invalidations = 0

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        if dev.iommu is not self.driver:
            raise InvalidArgument(f"{dev.name} is not behind {self.driver.name}")
        bond = (self.driver, dev, None)
        # Both lists: the parent's G-stage invalidations must reach this device too.
        self.bonds.append(bond)
        self.parent.bonds.append(bond)
        self.parent.nested_bonds.append(bond)
        try:
            self.driver.set_rid_context(
                dev,
                self.fsc,
                self.pscid << 12,
                True,
                iohgatp=self.parent.iohgatp,
                pri=self.iopf_handler is not None,
                ade=self.parent.ade,
            )
        except BaseException:
            self.bonds.remove(bond)
            self.parent.bonds.remove(bond)
            self.parent.nested_bonds.remove(bond)
            raise
        if isinstance(old, Bonded) and old is not self:
            old.bond_unlink(dev, None)

    def bond_unlink(self, dev: Device, pasid: int | None) -> None:
        unlink_bond(vma_tag(self.pscid, self.parent.gscid), self.bonds, dev, pasid)
        self.parent.bond_unlink(dev, pasid)

    def cache_invalidate(self, addr: int | None = None) -> None:
        """The guest changed its first stage: IOTINVAL.VMA with GV = 1 (the parent's GSCID)
        and the guest's PSCID, for the page at ``addr`` or all of them; ATS.INVAL of the same
        range to the devices with ATS; IOFENCE.C on every IOMMU with an attached device.
        Nothing else: the G-stage is the parent's."""
        self.invalidations += 1
        start, end = (0, _ALL) if addr is None else (addr & ~(_PAGE - 1), addr | (_PAGE - 1))
        invalidate_bonds(vma_tag(self.pscid, self.parent.gscid), self.bonds, start, end)

    def cache_invalidate_user(self, array: UserDataArray) -> tuple[int, ApiError | None]:
        """HWPT_INVALIDATE with the model's RISC-V entries (a guest command each, not in
        Linux 7.3: :mod:`iommusim.sw.iommufd.uapi_riscv`). EINVAL for another array type,
        even with no entries; per entry, in order: EOPNOTSUPP for a command other than
        IOTINVAL.VMA, EINVAL for GV (the guest has no G-stage), a PSCID other than the
        domain's or reserved bits; then the invalidation, as :meth:`cache_invalidate` does it,
        of the page at ADDR (AV) or of every page, leaf or, with NL, non-leaf too.
        Returns the entries done and the error that stopped the walk."""
        want = uapi_riscv.IOMMU_HWPT_INVALIDATE_DATA_RISCV_IOMMU
        if array.type != want:
            return 0, InvalidArgument(f"invalidation array type {array.type:#x} is not RISC-V")
        s = uapi_riscv.RISCV_INVALIDATE
        for i in range(array.entry_num):
            try:
                d = s.decode(array.copy_entry(want, i, s.size, s.size))
                raw = d["cmd[0]"] | d["cmd[1]"] << 64
                cmd = CMD_IOTINVAL.decode(raw)
                if cmd["opcode"] != OP_IOTINVAL or cmd["func3"] != FUNC_IOTINVAL_VMA:
                    raise NotSupported(f"guest command {cmd['opcode']}.{cmd['func3']}")
                if cmd["gv"] or raw & CMD_IOTINVAL.reserved_mask:
                    raise InvalidArgument("guest IOTINVAL.VMA sets GV or reserved bits")
                if cmd["pscv"] and cmd["pscid"] != self.pscid:
                    raise InvalidArgument(f"guest PSCID {cmd['pscid']:#x} is not the domain's")
            except ApiError as e:
                return i, e
            self.invalidations += 1
            if cmd["av"]:
                va = cmd["addr"] << 12
                start, end = va, va | (_PAGE - 1)
            else:
                start, end = 0, _ALL
            tag = vma_tag(self.pscid, self.parent.gscid)
            invalidate_bonds(tag, self.bonds, start, end, nonleaf=bool(cmd["nl"]))
        return array.entry_num, None

    def free(self) -> None:
        """Release the parent; nothing else: the tables are the user's, the GSCID the
        parent's."""
        self.parent.users -= 1
