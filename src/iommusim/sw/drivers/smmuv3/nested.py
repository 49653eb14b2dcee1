"""The SMMUv3 driver under iommufd (after Linux ``arm-smmu-v3-iommufd.c``): a vIOMMU of type
ARM_SMMUV3 over a nesting-parent stage 2 domain, nested domains built from a guest STE,
guest commands forwarded with their virtual StreamIDs translated and the vIOMMU's VMID put
in, and guest-stream events delivered to the vEVENTQ with the virtual StreamID.

Each vIOMMU has a VMID of its own (two vIOMMUs on one parent share the stage 2 table, not the
TLB tag). A nested domain's STE is the guest's stage 1 fields -- Config, S1ContextPtr, S1Fmt,
S1CDMAX, S1DSS, the S1 cache attributes, EATS -- over the host's stage 2: guest abort stays
abort, guest bypass becomes stage 2 only, guest stage 1 becomes nested (IHI 0070 5.2; Linux
``arm_smmu_make_nested_domain_ste``). Any other guest field, or a reserved Config, is EINVAL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.bits.arm.smmuv3_queues import (
    C_BAD_CD,
    C_BAD_STE,
    C_BAD_SUBSTREAMID,
    CMD_ATC_INV,
    CMD_CFGI_CD,
    CMD_CFGI_CD_ALL,
    CMD_TLBI_NH_ALL,
    CMD_TLBI_NH_ASID,
    CMD_TLBI_NH_VA,
    CMD_TLBI_NH_VAA,
    CMD_TLBI_NSNH_ALL,
    CMD_TLBI_S12_VMALL,
    EVT_COMMON,
    F_ACCESS,
    F_ADDR_SIZE,
    F_PERMISSION,
    F_STREAM_DISABLED,
    F_TRANSLATION,
)
from iommusim.bits.arm.smmuv3_structures import STE
from iommusim.errors import ApiError, InvalidArgument, IoError, NotSupported
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_NESTED, Domain
from iommusim.sw.core.userdata import UserData, UserDataArray
from iommusim.sw.core.viommu import ViommuCore, ViommuOps
from iommusim.sw.iommufd import uapi

if TYPE_CHECKING:
    from iommusim.sw.drivers.smmuv3.domain import Smmuv3PagingDomain
    from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver

__all__ = ["VEVENT_TYPES", "Smmuv3NestedDomain", "Smmuv3Viommu"]

_HWPT: Final = uapi.STRUCTS["iommu_hwpt_arm_smmuv3"]
_INV: Final = uapi.STRUCTS["iommu_viommu_arm_smmuv3_invalidate"]
#: The STE fields a guest may set (Linux ``STRTAB_STE_0_NESTING_ALLOWED`` /
#: ``STRTAB_STE_1_NESTING_ALLOWED``).
_ALLOWED: Final = STE.mask(
    "v",
    "config",
    "s1fmt",
    "s1contextptr",
    "s1cdmax",
    "s1dss",
    "s1cir",
    "s1cor",
    "s1csh",
    "eats",
)
#: The events a guest stream's fault goes back as (Linux ``arm_vmaster_report_event``).
VEVENT_TYPES: Final = frozenset(
    (
        C_BAD_STE,
        F_STREAM_DISABLED,
        C_BAD_SUBSTREAMID,
        C_BAD_CD,
        F_TRANSLATION,
        F_ADDR_SIZE,
        F_ACCESS,
        F_PERMISSION,
    )
)
_TLBI_VMID: Final = frozenset(
    c.opcode for c in (CMD_TLBI_NH_ALL, CMD_TLBI_NH_ASID, CMD_TLBI_NH_VA, CMD_TLBI_NH_VAA)
)
_BY_SID: Final = frozenset(c.opcode for c in (CMD_ATC_INV, CMD_CFGI_CD, CMD_CFGI_CD_ALL))
_VMID: Final = CMD_TLBI_NH_ALL.layout["vmid"]
_SID: Final = CMD_ATC_INV.layout["streamid"]
_STREAMID: Final = EVT_COMMON["streamid"]


class Smmuv3Viommu(ViommuOps):
    """One guest SMMU: its VMID and its nesting parent (``arm_vsmmu``)."""

    def __init__(
        self, driver: Smmuv3Driver, parent: Smmuv3PagingDomain, core: ViommuCore, vmid: int
    ) -> None:
        self.driver = driver
        self.parent = parent
        self.core = core
        self.vmid = vmid
        parent.users += 1

    def destroy(self) -> None:
        self.driver.issue(
            [CMD_TLBI_S12_VMALL.layout.encode(opcode=CMD_TLBI_S12_VMALL.opcode, vmid=self.vmid)]
        )
        self.driver.vmid_ida.free(self.vmid)
        self.parent.users -= 1

    def alloc_domain_nested(self, flags: int, user_data: UserData) -> Domain:
        """A nested domain from the guest's STE (``arm_vsmmu_alloc_domain_nested``):
        EOPNOTSUPP for flags or another data type, EINVAL for fields a guest may not set."""
        if flags & ~uapi.IOMMU_HWPT_FAULT_ID_VALID:
            raise NotSupported(f"nested flags {flags:#x} are not supported")
        if user_data.type != uapi.IOMMU_HWPT_DATA_ARM_SMMUV3:
            raise NotSupported(f"nested data type {user_data.type:#x} is not ARM_SMMUV3")
        d = _HWPT.decode(user_data.copy_from(user_data.type, _HWPT.size, _HWPT.size))
        ste = d["ste[0]"] | d["ste[1]"] << 64
        if ste & ~_ALLOWED:
            raise InvalidArgument(f"guest STE {ste:#x} sets fields a guest may not")
        if ste & STE.mask("v") and STE["config"].get(ste) not in (0b000, 0b100, 0b101):
            raise InvalidArgument(f"guest STE Config {STE['config'].get(ste):#05b} is reserved")
        return Smmuv3NestedDomain(self, ste)

    def cache_invalidate(self, array: UserDataArray) -> tuple[int, ApiError | None]:
        """``arm_vsmmu_cache_invalidate``: each 16-byte guest command converted -- TLBIs get
        this vIOMMU's VMID (TLBI_NSNH_ALL becomes TLBI_NH_ALL of the VMID), commands by
        StreamID get the physical StreamID of the vDEVICE -- then all are issued with one
        CMD_SYNC; EIO for another command or an unknown virtual StreamID, the commands
        before it still issued."""
        if array.type != uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3:
            return 0, InvalidArgument(f"invalidation type {array.type:#x} is not ARM_SMMUV3")
        cmds: list[int] = []
        err: ApiError | None = None
        for i in range(array.entry_num):
            try:
                raw = array.copy_entry(array.type, i, _INV.size, _INV.size)
            except ApiError as e:
                err = e
                break
            d = _INV.decode(raw)
            cmd = d["cmd[0]"] | d["cmd[1]"] << 64
            op = cmd & 0xFF
            if op == CMD_TLBI_NSNH_ALL.opcode:
                cmd = CMD_TLBI_NH_ALL.layout.encode(opcode=CMD_TLBI_NH_ALL.opcode)
                op = CMD_TLBI_NH_ALL.opcode
            if op in _TLBI_VMID:
                cmd = _VMID.put(cmd, self.vmid)
            elif op in _BY_SID:
                dev = self.core.find_dev(_SID.get(cmd))
                if dev is None:
                    err = IoError(f"entry {i}: no vDEVICE with virtual StreamID {_SID.get(cmd)}")
                    break
                cmd = _SID.put(cmd, dev.rid)
            else:
                err = IoError(f"entry {i}: command {op:#x} may not come from a guest")
                break
            cmds.append(cmd)
        if cmds:
            self.driver.issue(cmds)
        return len(cmds), err

    def report(self, dev: Device, record: bytes) -> bool:
        """A host event of ``dev``'s stream to the guest: the virtual StreamID in, onto the
        vEVENTQ (False: nothing takes it)."""
        vsid = self.core.get_vdev_id(dev)
        if vsid is None:
            return False
        v = _STREAMID.put(int.from_bytes(record, "little"), vsid)
        try:
            self.core.report_event(uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, v.to_bytes(32, "little"))
        except ApiError:
            return False
        return True


class Smmuv3NestedDomain(Domain):
    """A guest STE under a vIOMMU: the guest's stage 1 over the parent's stage 2."""

    def __init__(self, viommu: Smmuv3Viommu, guest_ste: int) -> None:
        super().__init__(DOMAIN_NESTED, viommu.driver)
        self.viommu = viommu
        self.guest_ste = guest_ste
        viommu.parent.users += 1

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        if dev.iommu is not self.viommu.driver:
            raise InvalidArgument(f"{dev.name} is not behind {self.viommu.driver.name}")
        self.viommu.driver.attach_nested(dev, self)

    def free(self) -> None:
        self.viommu.parent.users -= 1
