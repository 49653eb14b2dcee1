"""Shared Virtual Addressing: binding devices to processes (after Linux ``iommu-sva.c``).

A process gets one PASID from a global space the first time any device is bound to it, and
keeps it for its lifetime: every device bound to the process tags its requests with that
PASID. For each IOMMU the process's devices sit behind, one SVA domain shares the process's
page table; binding attaches that domain at the PASID of the device (reusing the domain when
the device is behind an IOMMU that already has one for the process). The SVA domain's
page-fault handler faults pages in on the process's address space with the access the
device asked for, then answers the page-request group (``iommu_sva_iopf_handler``).

Errors are the kernel's: ENODEV for a device that is not probed, ENOSPC when the device has
no PASID capability or the PASID space is exhausted, EOVERFLOW when the process's PASID is
beyond the device's width, EBUSY when the device's PASID slot holds another domain, and the
driver's errors (EOPNOTSUPP without PDT support, ENODEV for a device without PRI). A failed
bind leaves everything as it was -- unlike Linux, which keeps a freshly allocated PASID on
the mm even when the bind fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from iommusim.errors import ApiError, Busy, InvalidArgument, NoDevice, NoSpace, Overflow
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_SVA, Domain
from iommusim.sw.core.ida import Ida
from iommusim.sw.core.iommu import IommuCore
from iommusim.sw.iopf.queue import (
    PERM_EXEC,
    PERM_WRITE,
    RESP_INVALID,
    RESP_SUCCESS,
    IopfGroup,
)
from iommusim.sw.mm.mm import Mm

__all__ = ["IOMMU_FIRST_GLOBAL_PASID", "Sva", "SvaHandle", "SvaStats"]

#: Global PASIDs start at 1; PASID 0 (IOMMU_NO_PASID) is the RID's.
IOMMU_FIRST_GLOBAL_PASID: Final = 1
_PASID_MAX: Final = (1 << 20) - 1


@dataclass(eq=False)
class SvaHandle:
    """A bond of one device to one process (``struct iommu_sva``)."""

    dev: Device
    mm: Mm
    domain: Domain
    pasid: int
    users: int = 1


@dataclass(slots=True)
class SvaStats:
    binds: int = 0
    unbinds: int = 0
    domains: int = 0
    faults_handled: int = 0
    faults_invalid: int = 0


@dataclass(eq=False)
class _MmData:
    """``struct iommu_mm_data``: the process's PASID and its SVA domains."""

    sva: Sva
    mm: Mm
    pasid: int
    domains: dict[Domain, int] = field(default_factory=dict)  # domain -> devices using it

    def invalidate(self, mm: Mm, start: int, end: int, tables_freed: bool) -> None:
        """Nothing to do: the SVA domains invalidate for themselves."""

    def release(self, mm: Mm) -> None:
        self.sva._maybe_drop(self, exiting=True)


class Sva:
    """The SVA layer of one machine. ``charge(n)`` is told how many faults a group needed
    (CPU time, for a cost model)."""

    def __init__(self, core: IommuCore, *, charge: Callable[[int], None] | None = None) -> None:
        self.core = core
        self.pasid_ida = Ida(IOMMU_FIRST_GLOBAL_PASID, _PASID_MAX)
        self._charge = charge
        self._mms: dict[Mm, _MmData] = {}
        self._handles: dict[tuple[int, int], SvaHandle] = {}
        self.stats = SvaStats()

    # ------------------------------------------------------------------ PASIDs
    def mm_pasid(self, mm: Mm) -> int | None:
        data = self._mms.get(mm)
        return data.pasid if data is not None else None

    def _mm_data(self, mm: Mm, dev: Device) -> tuple[_MmData, bool]:
        """iommu_alloc_mm_data: the process's PASID, allocated on first use."""
        data = self._mms.get(mm)
        if data is not None:
            if data.pasid >= dev.max_pasids:
                raise Overflow(
                    f"{mm.name}'s PASID {data.pasid} is beyond {dev.name}'s "
                    f"{dev.pasid_bits}-bit PASID width"
                )
            return data, False
        if not dev.max_pasids:
            raise NoSpace(f"{dev.name} has no PASID capability: no PASID to give {mm.name}")
        pasid = self.pasid_ida.alloc(dev.max_pasids - 1)
        if pasid is None:
            raise NoSpace(
                f"no free PASID in [{IOMMU_FIRST_GLOBAL_PASID}, {dev.max_pasids - 1}] for {mm.name}"
            )
        return _MmData(self, mm, pasid), True

    # ------------------------------------------------------------------ bind / unbind
    def bind(self, dev: Device, mm: Mm) -> SvaHandle:
        """iommu_sva_bind_device: ``dev`` shares ``mm``; its requests with the returned
        handle's PASID are translated by the process's page table."""
        group = dev.group
        if group is None or self.core.devices.get(dev.name) is not dev or dev.iommu is None:
            raise NoDevice(f"{dev.name} is not probed")
        if mm.exited:
            raise InvalidArgument(f"{mm.name} has exited")
        data, new = self._mm_data(mm, dev)
        pasid = data.pasid
        try:
            handle = self._handles.get((id(group), pasid))
            if handle is not None:
                if handle.mm is not mm:
                    raise Busy(f"PASID {pasid} of {dev.name} is bound to {handle.mm.name}")
                handle.users += 1
                self.stats.binds += 1
                return handle
            if pasid in group.pasid_array:
                raise Busy(f"PASID {pasid} of {dev.name} holds {group.pasid_array[pasid]!r}")
            domain = self._attach(dev, mm, data, pasid)
        except BaseException:
            if new:
                self.pasid_ida.free(pasid)
            raise
        if new:
            self._mms[mm] = data
            mm.register_notifier(data)
            mm.pasid = pasid
        data.domains[domain] = data.domains.get(domain, 0) + 1
        handle = SvaHandle(dev, mm, domain, pasid)
        self._handles[(id(group), pasid)] = handle
        self.stats.binds += 1
        return handle

    def _attach(self, dev: Device, mm: Mm, data: _MmData, pasid: int) -> Domain:
        for domain in data.domains:
            if domain.owner is dev.iommu:
                try:
                    self.core.attach_device_pasid(domain, dev, pasid)
                except ApiError:
                    continue
                return domain
        assert dev.iommu is not None
        domain = dev.iommu.domain_alloc_sva(dev, mm)
        domain.iopf_handler = self._handle_group
        try:
            self.core.attach_device_pasid(domain, dev, pasid)
        except BaseException:
            domain.free()
            raise
        self.stats.domains += 1
        return domain

    def unbind(self, handle: SvaHandle) -> None:
        """iommu_sva_unbind_device: drop one reference; the last one detaches the PASID and
        frees the domain when no other device uses it."""
        group = handle.dev.group
        key = (id(group), handle.pasid)
        if group is None or self._handles.get(key) is not handle:
            raise InvalidArgument(f"{handle.dev.name} is not bound to {handle.mm.name}")
        self.stats.unbinds += 1
        handle.users -= 1
        if handle.users:
            return
        del self._handles[key]
        self.core.detach_device_pasid(handle.domain, handle.dev, handle.pasid)
        data = self._mms[handle.mm]
        left = data.domains[handle.domain] - 1
        if left:
            data.domains[handle.domain] = left
        else:
            del data.domains[handle.domain]
            self.core.domain_free(handle.domain)
        self._maybe_drop(data)

    def _maybe_drop(self, data: _MmData, exiting: bool = False) -> None:
        """The PASID goes with the process (mm_pasid_drop), once no domain uses it."""
        if (exiting or data.mm.exited) and not data.domains and self._mms.get(data.mm) is data:
            del self._mms[data.mm]
            self.pasid_ida.free(data.pasid)
            data.mm.pasid = None

    # ------------------------------------------------------------------ page faults
    def _handle_group(self, group: IopfGroup) -> None:
        """iommu_sva_handle_iopf for every request of the group, stopping at the first that
        cannot be satisfied: no PASID, an exited process, no VMA at the address, or a VMA
        that forbids the access give "invalid"; otherwise the page is faulted in."""
        domain = group.domain
        mm = getattr(domain, "mm", None)
        status = RESP_SUCCESS
        n = 0
        for f in group.faults:
            n += 1
            if f.pasid is None or not isinstance(mm, Mm) or mm.exited or domain.type != DOMAIN_SVA:
                status = RESP_INVALID
                break
            if not mm.fault_in(
                f.addr, write=bool(f.perm & PERM_WRITE), exec_=bool(f.perm & PERM_EXEC), remote=True
            ):
                status = RESP_INVALID
                break
        if self._charge is not None:
            self._charge(n)
        if status == RESP_SUCCESS:
            self.stats.faults_handled += n
        else:
            self.stats.faults_invalid += 1
        self.core.iopf.respond(group, status)
