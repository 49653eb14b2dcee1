"""The IOMMU core: devices, groups, default domains, attach, map/unmap, faults, DMA API.

After Linux ``drivers/iommu/iommu.c``. Every public call validates its whole input before it
changes anything, and raises an :class:`~iommusim.errors.ApiError` with the errno the kernel
returns; a failed call leaves devices, groups and domains as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import Busy, InvalidArgument, NoDevice, NotFound, NotSupported
from iommusim.sim.clock import VirtualClock
from iommusim.sw.core.device import Device, Fault, Group
from iommusim.sw.core.dma import DmaCookie
from iommusim.sw.core.domain import (
    DOMAIN_BLOCKED,
    DOMAIN_DMA,
    DOMAIN_DMA_FQ,
    DOMAIN_IDENTITY,
    DOMAIN_NESTED,
    DOMAIN_UNMANAGED,
    Domain,
)
from iommusim.sw.core.fq import FlushQueue, FqOptions
from iommusim.sw.core.ops import IommuDriver
from iommusim.sw.core.userdata import UserData
from iommusim.sw.iopf.queue import RESP_INVALID, Iopf, PageFault
from iommusim.sw.pgtable.gather import IotlbGather

__all__ = ["DmaMode", "IommuCore"]

DmaMode = Literal["strict", "lazy", "passthrough"]
_MODES: Final = ("strict", "lazy", "passthrough")
_TOP: Final = 1 << 64


def _live(domain: Domain) -> None:
    """Refuse a freed domain. Linux hands out no handle for a freed ``iommu_domain`` (using
    one is a use-after-free); the analogue with a handle is iommufd, whose lookup of a
    destroyed object id fails with ENOENT (``iommufd_get_object``) -- so ENOENT here, for
    every call that is given a freed domain."""
    if domain.freed:
        raise NotFound(f"{domain!r} has been freed")


@dataclass(frozen=True, slots=True)
class UnhandledFault:
    """A fault no device handler took (Linux only logs these)."""

    driver: str
    fault: Fault


class _Reporter:
    """The handle a driver is given at registration: where it reports what it reads from its
    hardware (after Linux ``iommu_report_device_fault``). One per registered driver, so the
    core knows which IOMMU a requester id is behind."""

    __slots__ = ("_core", "_driver")

    def __init__(self, core: IommuCore, driver: IommuDriver) -> None:
        self._core = core
        self._driver = driver

    def fault(self, fault: Fault) -> None:
        self._core.report_device_fault(self._driver, fault)

    def page_request(self, rid: int, fault: PageFault) -> None:
        self._core._page_request(self._driver, rid, fault)

    def page_requests_lost(self) -> None:
        self._core.iopf.discard_partial()


class IommuCore:
    """The core for one machine. ``dma_mode`` is ``iommu.strict=1`` ("strict"),
    ``iommu.strict=0`` ("lazy": DMA_FQ default domains) or ``iommu.passthrough=1``."""

    def __init__(
        self,
        clock: VirtualClock,
        *,
        dma_mode: DmaMode = "strict",
        ncpus: int = 1,
        fq: FqOptions | None = None,
    ) -> None:
        if dma_mode not in _MODES:
            raise InvalidArgument(f"dma_mode must be one of {_MODES}, not {dma_mode!r}")
        if ncpus < 1:
            raise InvalidArgument(f"ncpus must be >= 1, not {ncpus}")
        fq = fq if fq is not None else FqOptions()
        fq.entries, fq.timeout  # validate now  # noqa: B018
        self.clock = clock
        self.dma_mode = dma_mode
        self.ncpus = ncpus
        self.fq_options = fq
        self.drivers: list[IommuDriver] = []
        self.devices: dict[str, Device] = {}
        self.groups: list[Group] = []
        self._group_keys: dict[str, Group] = {}
        self._next_group = 0
        self.unhandled_faults: list[UnhandledFault] = []
        self.iopf = Iopf(self._iopf_domain, self._iopf_send, lambda: clock.now)

    # ------------------------------------------------------------------ registration
    def register(self, driver: IommuDriver) -> None:
        """iommu_device_register: the core now routes faults of this IOMMU."""
        if any(d is driver for d in self.drivers):
            raise Busy(f"{driver.name} is already registered")
        self.drivers.append(driver)
        driver.registered(_Reporter(self, driver))

    def probe_device(self, dev: Device) -> None:
        """iommu_probe_device: find the IOMMU, join or make a group, attach the default."""
        if dev.name in self.devices:
            raise Busy(f"device {dev.name!r} is already probed")
        driver = next((d for d in self.drivers if d.owns(dev)), None)
        if driver is None:
            raise NoDevice(f"{dev.name} is behind no registered IOMMU")
        driver.probe_device(dev)
        group = self._group_keys.get(dev.group_key) if dev.group_key is not None else None
        new_group = group is None
        try:
            if group is None:
                group = Group(self._next_group)
                group.default_domain = self._alloc_default_domain(driver, dev)
                target = group.default_domain
            elif group.domain is None:
                raise NoDevice(f"group {group.id} has no domain")
            else:
                target = group.domain
            target.attach_dev(dev, None)
        except BaseException:
            if new_group and group is not None and group.default_domain is not None:
                self._free_domain(group.default_domain)
            driver.release_device(dev)
            raise
        dev.group = group
        group.devices.append(dev)
        if new_group:
            group.domain = target
            target.users += 1
            self.groups.append(group)
            self._next_group += 1
            if dev.group_key is not None:
                self._group_keys[dev.group_key] = group
        self.devices[dev.name] = dev

    def _alloc_default_domain(self, driver: IommuDriver, dev: Device) -> Domain:
        dtype = driver.def_domain_type(dev)
        if dtype is None:
            dtype = {"strict": DOMAIN_DMA, "lazy": DOMAIN_DMA_FQ, "passthrough": DOMAIN_IDENTITY}[
                self.dma_mode
            ]
        if dtype == DOMAIN_IDENTITY:
            return driver.identity_domain
        if dtype == DOMAIN_BLOCKED:  # a driver whose default is to block (the selftest mock)
            return driver.blocked_domain
        domain = driver.domain_alloc_paging(dev)
        domain.type = dtype
        cookie = DmaCookie(domain, None, self.ncpus)
        if dtype == DOMAIN_DMA_FQ:
            cookie.fq = FlushQueue(
                self.clock, domain.flush_iotlb_all, cookie.release, self.ncpus, self.fq_options
            )
        domain.cookie = cookie
        return domain

    def release_device(self, dev: Device) -> None:
        """iommu_release_device: the device leaves translation (release domain = blocked)."""
        group = self._group_of(dev)
        driver = dev.iommu
        if driver is None:
            raise NoDevice(f"{dev.name} has no IOMMU")
        # Nothing below can be refused: the device is probed and behind its IOMMU.
        for pasid, domain in list(group.pasid_array.items()):
            driver.blocked_domain.set_dev_pasid(dev, pasid, domain)
            if len(group.devices) == 1:
                del group.pasid_array[pasid]
                domain.users -= 1
        self.iopf.remove_device(dev)
        driver.blocked_domain.attach_dev(dev, group.domain)
        group.devices.remove(dev)
        driver.release_device(dev)
        dev.group = None
        del self.devices[dev.name]
        if not group.devices:
            self.groups.remove(group)
            if group.domain is not None:
                group.domain.users -= 1
            if group.default_domain is not None:
                self._free_domain(group.default_domain)
            for k, g in list(self._group_keys.items()):
                if g is group:
                    del self._group_keys[k]

    def _free_domain(self, domain: Domain) -> None:
        if domain.cookie is not None and domain.cookie.fq is not None:
            domain.cookie.fq.destroy()
        if domain.is_paging:
            domain.free()
            domain.freed = True

    def _device_at(self, driver: IommuDriver, rid: int) -> Device | None:
        """The probed device behind ``driver`` with requester id ``rid``."""
        return next((d for d in self.devices.values() if d.iommu is driver and d.rid == rid), None)

    def _group_of(self, dev: Device) -> Group:
        if dev.group is None or self.devices.get(dev.name) is not dev:
            raise NoDevice(f"{dev.name} is not probed")
        return dev.group

    # ------------------------------------------------------------------ domains
    def domain_alloc_paging(self, dev: Device) -> Domain:
        """iommu_paging_domain_alloc: an UNMANAGED domain for ``dev``'s IOMMU."""
        self._group_of(dev)
        if dev.iommu is None:
            raise NoDevice(f"{dev.name} has no IOMMU")
        domain = dev.iommu.domain_alloc_paging(dev)
        domain.type = DOMAIN_UNMANAGED
        return domain

    def domain_alloc_paging_flags(
        self, dev: Device, flags: int, user_data: UserData | None
    ) -> Domain:
        """The driver's ``domain_alloc_paging_flags`` for ``dev``, typed UNMANAGED."""
        self._group_of(dev)
        if dev.iommu is None:
            raise NoDevice(f"{dev.name} has no IOMMU")
        domain = dev.iommu.domain_alloc_paging_flags(dev, flags, user_data)
        domain.type = DOMAIN_UNMANAGED
        return domain

    def domain_free(self, domain: Domain) -> None:
        """iommu_domain_free: ENOENT for a domain already freed, EINVAL for a driver's
        static identity or blocking domain (it is never allocated, so never freed), EBUSY
        while attached or a group's default domain."""
        _live(domain)
        if any(domain is d.identity_domain or domain is d.blocked_domain for d in self.drivers):
            raise InvalidArgument(f"{domain!r} is a static domain of its driver")
        if domain.users:
            raise Busy(f"{domain!r} is still attached")
        if any(g.default_domain is domain for g in self.groups):
            raise Busy(f"{domain!r} is a default domain")
        domain.free()
        domain.freed = True

    def _set_group_domain(self, group: Group, domain: Domain) -> None:
        """__iommu_group_set_domain: move every device; on failure move them all back."""
        old = group.domain
        if old is domain:
            return
        # __iommu_attach_group: a domain of another IOMMU is "incompatible" (EINVAL).
        for dev in group.devices:
            if dev.iommu is not domain.owner:
                raise InvalidArgument(f"{domain!r} belongs to another IOMMU than {dev.name}'s")
        # A default domain is its group's (the DMA API's IOVA space, freed with the group):
        # attached to another group it would be freed under that group's feet when its own
        # group goes (iommu_group_release frees group->default_domain unconditionally).
        # Static domains (identity, blocked) are shared by design.
        if domain.is_paging and any(
            g.default_domain is domain and g is not group for g in self.groups
        ):
            raise InvalidArgument(f"{domain!r} is another group's default domain")
        moved: list[Device] = []
        try:
            for dev in group.devices:
                domain.attach_dev(dev, old)
                moved.append(dev)
        except BaseException:
            if old is not None:
                for dev in moved:
                    old.attach_dev(dev, domain)
            raise
        if old is not None:
            old.users -= 1
        domain.users += 1
        group.domain = domain

    def attach_device(self, domain: Domain, dev: Device) -> None:
        """iommu_attach_device: only a singleton group that is on its default domain."""
        group = self._group_of(dev)
        if len(group.devices) != 1:
            raise InvalidArgument(f"{dev.name} shares group {group.id}; attach the group")
        self.attach_group(domain, group)

    def attach_group(self, domain: Domain, group: Group) -> None:
        """__iommu_attach_group: from the default or the blocking domain only (else EBUSY)."""
        _live(domain)
        cur = group.domain
        if cur is not group.default_domain and not (cur is not None and cur.type == DOMAIN_BLOCKED):
            raise Busy(f"group {group.id} is already attached to {group.domain!r}")
        self._set_group_domain(group, domain)

    def replace_group_domain(self, domain: Domain, group: Group) -> None:
        """iommu_group_replace_domain: switch without passing through the default."""
        _live(domain)
        self._set_group_domain(group, domain)

    # ------------------------------------------------------------------ DMA ownership
    def claim_dma_owner(self, dev: Device, owner: object) -> None:
        """iommu_device_claim_dma_owner: a user (iommufd) takes DMA control of ``dev``'s
        group. The first claim needs the group on its default domain (else EBUSY) and moves
        it to the blocking domain; further claims by the same owner count up; another
        owner's claim is EBUSY."""
        group = self._group_of(dev)
        if group.owner is not None:
            if group.owner is not owner:
                raise Busy(f"group {group.id} is owned by another user")
            group.owner_cnt += 1
            return
        if group.domain is not group.default_domain or dev.iommu is None:
            raise Busy(f"group {group.id} is not on its default domain")
        self._set_group_domain(group, dev.iommu.blocked_domain)
        group.owner = owner
        group.owner_cnt = 1

    def release_dma_owner(self, dev: Device) -> None:
        """iommu_device_release_dma_owner: the last release puts the group back on its
        default domain."""
        group = self._group_of(dev)
        if group.owner is None:
            raise InvalidArgument(f"group {group.id} has no DMA owner")
        group.owner_cnt -= 1
        if group.owner_cnt:
            return
        group.owner = None
        if group.default_domain is not None:
            self._set_group_domain(group, group.default_domain)

    def detach_group(self, domain: Domain, group: Group) -> None:
        """iommu_detach_group: back to the core domain -- blocking while a user owns the
        group, the default domain otherwise."""
        _live(domain)
        if group.domain is not domain:
            raise InvalidArgument(f"group {group.id} is not attached to {domain!r}")
        core = self._core_domain(group)
        if core is not None:
            self._set_group_domain(group, core)

    def _core_domain(self, group: Group) -> Domain | None:
        driver = group.devices[0].iommu if group.devices else None
        if group.owner is not None and driver is not None:
            return driver.blocked_domain
        return group.default_domain

    def detach_device(self, domain: Domain, dev: Device) -> None:
        _live(domain)
        group = self._group_of(dev)
        if group.domain is not domain:
            raise InvalidArgument(f"{dev.name} is not attached to {domain!r}")
        if group.default_domain is None:
            raise NoDevice(f"group {group.id} has no default domain")
        self._set_group_domain(group, group.default_domain)

    # ------------------------------------------------------------------ PASIDs
    def attach_device_pasid(self, domain: Domain, dev: Device, pasid: int) -> None:
        """iommu_attach_device_pasid: ``domain`` translates the group's requests tagged
        with ``pasid``. EOPNOTSUPP when the domain cannot be attached to a PASID, EINVAL for
        PASID 0 (the RID), a PASID beyond a group device's width or a domain of another IOMMU,
        EBUSY when the PASID is taken; a driver failure undoes the devices already set."""
        _live(domain)
        group = self._group_of(dev)
        driver = dev.iommu
        if driver is None:
            raise NoDevice(f"{dev.name} has no IOMMU")
        if not domain.supports_pasid:
            raise NotSupported(f"{domain!r} cannot be attached to a PASID")
        if domain.owner is not driver or pasid <= 0 or pasid >= 1 << 20:
            raise InvalidArgument(f"cannot attach {domain!r} to PASID {pasid} of {dev.name}")
        for d in group.devices:
            if d.max_pasids and pasid >= d.max_pasids:
                raise InvalidArgument(
                    f"PASID {pasid} is beyond {d.name}'s {d.pasid_bits}-bit PASID width"
                )
        if pasid in group.pasid_array:
            raise Busy(f"PASID {pasid} of group {group.id} is already attached")
        done: list[Device] = []
        try:
            for d in group.devices:
                domain.set_dev_pasid(d, pasid, None)
                done.append(d)
        except BaseException:
            for d in done:
                driver.blocked_domain.set_dev_pasid(d, pasid, domain)
            raise
        group.pasid_array[pasid] = domain
        domain.users += 1

    def replace_device_pasid(self, domain: Domain, dev: Device, pasid: int) -> None:
        """iommu_replace_device_pasid: switch an attached PASID to ``domain`` without
        blocking in between. EOPNOTSUPP and EINVAL as for attach, EINVAL when the PASID is
        not attached; a driver failure puts the devices already moved back on the old
        domain."""
        _live(domain)
        group = self._group_of(dev)
        old = group.pasid_array.get(pasid)
        if not domain.supports_pasid:
            raise NotSupported(f"{domain!r} cannot be attached to a PASID")
        if old is None or domain.owner is not dev.iommu:
            raise InvalidArgument(f"cannot replace PASID {pasid} of {dev.name} by {domain!r}")
        if old is domain:
            return
        done: list[Device] = []
        try:
            for d in group.devices:
                domain.set_dev_pasid(d, pasid, old)
                done.append(d)
        except BaseException:
            for d in done:
                old.set_dev_pasid(d, pasid, domain)
            raise
        group.pasid_array[pasid] = domain
        old.users -= 1
        domain.users += 1

    def detach_device_pasid(self, domain: Domain, dev: Device, pasid: int) -> None:
        """iommu_detach_device_pasid: the PASID blocks again; its pending page-request
        groups are answered "invalid". Detaching what is not attached does nothing."""
        _live(domain)
        group = self._group_of(dev)
        if group.pasid_array.get(pasid) is not domain or dev.iommu is None:
            return
        for d in group.devices:
            dev.iommu.blocked_domain.set_dev_pasid(d, pasid, domain)
            self.iopf.remove_device(d, pasid)
        del group.pasid_array[pasid]
        domain.users -= 1

    def pasid_domain(self, dev: Device, pasid: int) -> Domain | None:
        return self._group_of(dev).pasid_array.get(pasid)

    # ------------------------------------------------------------------ page requests
    def _page_request(self, driver: IommuDriver, rid: int, fault: PageFault) -> None:
        dev = self._device_at(driver, rid)
        if dev is None:
            self.iopf.stats.requests += 1
            self.iopf.stats.unhandled += 1
            if fault.last:
                driver.page_response(rid, fault.pasid, fault.grpid, RESP_INVALID)
            return
        self.iopf.report(dev, fault)

    def _iopf_domain(self, dev: Device, pasid: int | None) -> Domain | None:
        """find_fault_handler: the domain on the PASID (or the RID). With no domain on the
        PASID, a driver whose user owns the PASID table (``user_pasid_table``) sends the fault
        to the NESTED domain on the RID, whose first stage holds that table."""
        group = dev.group
        if group is None:
            return None
        if pasid is None:
            return group.domain
        domain = group.pasid_array.get(pasid)
        if domain is None and dev.iommu is not None and dev.iommu.user_pasid_table:
            rid = group.domain
            if rid is not None and rid.type == DOMAIN_NESTED:
                return rid
        return domain

    @staticmethod
    def _iopf_send(dev: Device, fault: PageFault, code: int) -> None:
        if dev.iommu is not None:
            dev.iommu.page_response(dev.rid, fault.pasid, fault.grpid, code)

    # ------------------------------------------------------------------ map / unmap
    @staticmethod
    def _check_map(domain: Domain, iova: int, size: int) -> None:
        _live(domain)
        if not domain.is_paging:
            raise InvalidArgument(f"{domain!r} cannot be mapped")
        gran = domain.pgsize_bitmap & -domain.pgsize_bitmap
        if size <= 0 or (iova | size) & (gran - 1):
            raise InvalidArgument(
                f"iova {iova:#x} and size {size:#x} must be positive multiples of {gran:#x}"
            )

    def map(self, domain: Domain, iova: Iova, pa: PhysAddr, size: int, prot: int) -> None:
        """iommu_map (the page-table writer validates the whole range before writing)."""
        self._check_map(domain, iova, size)
        if pa & ((domain.pgsize_bitmap & -domain.pgsize_bitmap) - 1):
            raise InvalidArgument(f"paddr {pa:#x} is not aligned to the smallest page")
        domain.check_pa_range(pa, size)
        domain.map(iova, pa, size, prot)

    def unmap(self, domain: Domain, iova: Iova, size: int) -> int:
        """iommu_unmap: clear, sync the IOTLB, then free the unlinked table pages."""
        self._check_map(domain, iova, size)
        gather = IotlbGather()
        n = domain.unmap(iova, size, gather)
        domain.iotlb_sync(gather)
        domain.release_table_pages(gather.freelist)
        return n

    def iova_to_phys(self, domain: Domain, iova: Iova) -> PhysAddr | None:
        _live(domain)
        return domain.iova_to_phys(iova)

    # ------------------------------------------------------------------ DMA API
    def _cookie(self, dev: Device) -> DmaCookie | None:
        group = self._group_of(dev)
        domain = group.domain
        if domain is None or domain.type == DOMAIN_IDENTITY:
            return None
        if domain.cookie is None:
            raise InvalidArgument(f"{dev.name} is attached to {domain!r}, not a DMA domain")
        return domain.cookie

    def dma_map(self, dev: Device, pa: PhysAddr, size: int, direction: int, cpu: int = 0) -> Iova:
        """dma_map_single: the bus address ``dev`` must use for [pa, pa + size)."""
        cookie = self._cookie(dev)
        if cookie is None:
            if size <= 0:
                raise InvalidArgument(f"DMA size must be positive, not {size}")
            if direction not in (0, 1, 2):
                raise InvalidArgument(f"DMA direction must be 0, 1 or 2, not {direction}")
            # dma-direct: the bus address is the physical one, so it must be one.
            if pa < 0 or pa + size > _TOP:
                raise InvalidArgument(f"physical range {pa:#x}+{size:#x} must lie below 2^64")
            return Iova(pa)  # dma-direct through an identity domain: bus address = PA
        return cookie.map(pa, size, direction, cpu)

    def dma_unmap(self, dev: Device, dma_addr: Iova, size: int, cpu: int = 0) -> None:
        cookie = self._cookie(dev)
        if cookie is not None:
            cookie.unmap(dma_addr, size, cpu)

    def dma_cookie(self, dev: Device) -> DmaCookie | None:
        return self._cookie(dev)

    # ------------------------------------------------------------------ faults
    def register_fault_handler(self, dev: Device, handler: Callable[[Fault], None]) -> None:
        """iommu_register_device_fault_handler (EBUSY when one is installed)."""
        self._group_of(dev)
        if dev.fault_handler is not None:
            raise Busy(f"{dev.name} already has a fault handler")
        dev.fault_handler = handler

    def unregister_fault_handler(self, dev: Device) -> None:
        if dev.fault_handler is None:
            raise NotFound(f"{dev.name} has no fault handler")
        dev.fault_handler = None

    def report_device_fault(self, driver: IommuDriver, fault: Fault) -> None:
        """Deliver a fault the driver read from the hardware to the device's handler."""
        dev = self._device_at(driver, fault.rid)
        if dev is None or dev.fault_handler is None:
            self.unhandled_faults.append(UnhandledFault(driver.name, fault))
            return
        dev.fault_handler(fault)
