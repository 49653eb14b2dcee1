"""The iommufd selftest's mock IOMMU driver (``mock_ops``, Linux 7.3
``drivers/iommu/iommufd/selftest.c``).

It translates nothing -- no hardware sits behind it -- and exists so iommufd can be tested
without an IOMMU: it owns only the mock devices it creates (:meth:`MockIommuDriver.create_device`,
``mock_dev_create``), gives them the blocking domain as default domain
(``mock_ops.default_domain = &mock_blocking_domain``), paging domains over its own page table
(2 KiB pages, or huge pages), nested domains with a mock IOTLB, and a vIOMMU with an mmap
region and hardware queues. Its only simulated memory is the vIOMMU's two pages, taken from
the :class:`~iommusim.sw.pages.PageAllocator` it is built with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from iommusim.errors import InvalidArgument, NoDevice, NotSupported, OutOfMemory
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_IDENTITY, Domain
from iommusim.sw.core.ida import Ida
from iommusim.sw.core.ops import CAP_CACHE_COHERENCY, CAP_DIRTY_TRACKING, Reporter
from iommusim.sw.drivers.mock.device import MOCK_DEV_KEY, MockDev, mock_dev_of
from iommusim.sw.drivers.mock.domain import MockBlockedDomain, MockPagingDomain
from iommusim.sw.drivers.mock.nested import MockNestedDomain, alloc_nested
from iommusim.sw.drivers.mock.viommu import MOCK_VIOMMU_MMAP_LENGTH, MockViommu
from iommusim.sw.iommufd.selftest_uapi import (
    IOMMU_HW_INFO_SELFTEST_REGVAL,
    IOMMU_HW_INFO_TYPE_SELFTEST,
    IOMMU_HWPT_DATA_SELFTEST,
    IOMMU_VIOMMU_TYPE_SELFTEST,
    MOCK_FLAGS_DEVICE_NO_DIRTY,
    MOCK_FLAGS_DEVICE_PASID,
    MOCK_IOMMUPT_DEFAULT,
    MOCK_IOMMUPT_HUGE,
    MOCK_PASID_WIDTH,
    STRUCTS,
)
from iommusim.sw.iommufd.uapi import (
    IOMMU_HW_INFO_TYPE_DEFAULT,
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    IOMMU_HWPT_ALLOC_NEST_PARENT,
    IOMMU_HWPT_ALLOC_PASID,
    IOMMU_HWPT_DATA_NONE,
)
from iommusim.sw.pages import PageAllocator

if TYPE_CHECKING:
    from iommusim.sw.core.userdata import UserData
    from iommusim.sw.core.viommu import ViommuCore
    from iommusim.sw.mm.mm import Mm

__all__ = ["MockIommuDriver", "PageResponse"]

_PAGING_FLAGS: Final = (
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID
)
_DEVICE_FLAGS: Final = MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID
_HWPT: Final = STRUCTS["iommu_hwpt_selftest"]
_VIOMMU: Final = STRUCTS["iommu_viommu_selftest"]
_HW_INFO: Final = STRUCTS["iommu_test_hw_info"]
_MMAP_ORDER: Final = 1


@dataclass(frozen=True, slots=True)
class PageResponse:
    """One ``page_response`` the core sent (the mock drops it, as the kernel's does)."""

    rid: int
    pasid: int | None
    grpid: int
    code: int


class MockIommuDriver:
    """``mock_ops`` with ``mock_iommu``'s state. ``pages`` backs the vIOMMU mmap regions."""

    user_pasid_table = True

    def __init__(self, pages: PageAllocator, name: str = "iommufd_mock") -> None:
        self.name = name
        self.pages = pages
        self.blocked_domain: Domain = MockBlockedDomain(self)
        #: The mock has no identity domain: this one cannot be attached (EOPNOTSUPP), and
        #: the default domain is the blocking one whatever the DMA mode.
        self.identity_domain: Domain = Domain(DOMAIN_IDENTITY, self)
        self.reporter: Reporter | None = None
        self._ida = Ida(0, (1 << 31) - 1)
        #: vIOMMUs alive (``mock_iommu.users`` minus the module's own reference).
        self.viommus = 0
        #: Every page response the core sent, oldest first.
        self.page_responses: list[PageResponse] = []

    def __repr__(self) -> str:
        return f"<MockIommuDriver {self.name}>"

    def registered(self, reporter: Reporter) -> None:
        """``iommu_device_register_bus``: page requests now go to ``reporter``."""
        self.reporter = reporter

    # ------------------------------------------------------------------ devices
    def create_device(self, flags: int = 0) -> Device:
        """``mock_dev_create``: a mock device named ``<driver name><id>``, its requester id
        the id; EINVAL for flags other than MOCK_FLAGS_DEVICE_NO_DIRTY and
        MOCK_FLAGS_DEVICE_PASID (which gives it MOCK_PASID_WIDTH PASID bits), ENOMEM when
        the ids are exhausted. The caller probes it into the core
        (``iommu_mock_device_add``) and destroys it with :meth:`destroy_device`."""
        if flags & ~_DEVICE_FLAGS:
            raise InvalidArgument(f"mock device flags {flags:#x} must be within {_DEVICE_FLAGS:#x}")
        ident = self._ida.alloc()
        if ident is None:
            raise OutOfMemory("no mock device id is free")
        dev = Device(
            f"{self.name}{ident}",
            ident,
            pasid_bits=MOCK_PASID_WIDTH if flags & MOCK_FLAGS_DEVICE_PASID else 0,
        )
        dev.priv[MOCK_DEV_KEY] = MockDev(ident, flags, self)
        return dev

    def destroy_device(self, dev: Device) -> None:
        """``mock_dev_release``: the id goes back (EINVAL for a device that is not one of
        this driver's mock devices or is still probed)."""
        mdev = mock_dev_of(dev, self)
        if dev.iommu is not None:
            raise InvalidArgument(f"{dev.name} is still probed")
        self._ida.free(mdev.id)
        del dev.priv[MOCK_DEV_KEY]

    def mock_dev(self, dev: Device) -> MockDev:
        """``to_mock_dev``: the state of one of this driver's devices (EINVAL otherwise)."""
        return mock_dev_of(dev, self)

    def owns(self, dev: Device) -> bool:
        """The device sits on the mock bus of this driver (``dev->bus ==
        &iommufd_mock_bus_type.bus``)."""
        state = dev.priv.get(MOCK_DEV_KEY)
        return isinstance(state, MockDev) and state.owner is self

    def probe_device(self, dev: Device) -> None:
        """``mock_probe_device``: ENODEV off the mock bus."""
        if not self.owns(dev):
            raise NoDevice(f"{dev.name} is not a mock device of {self.name}")
        dev.iommu = self

    def release_device(self, dev: Device) -> None:
        dev.iommu = None

    def def_domain_type(self, dev: Device) -> int | None:
        """``mock_ops.default_domain = &mock_blocking_domain``: the default domain is the
        blocking one ("IOMMU_DOMAIN_BLOCKED cannot be returned from def_domain_type()
        because it is zero" -- here it can)."""
        return DOMAIN_BLOCKED

    # ------------------------------------------------------------------ domains
    def domain_alloc_paging(self, dev: Device) -> MockPagingDomain:
        """The core's ``iommu_paging_domain_alloc`` calls ``domain_alloc_paging_flags``
        with no flags and no data when a driver has no ``domain_alloc_paging``."""
        return self.domain_alloc_paging_flags(dev)

    def domain_alloc_paging_flags(
        self, dev: Device, flags: int = 0, user_data: UserData | None = None
    ) -> MockPagingDomain:
        """``mock_domain_alloc_paging_flags``: EOPNOTSUPP for a flag other than
        DIRTY_TRACKING, NEST_PARENT and PASID, for DIRTY_TRACKING on a NO_DIRTY device, for a
        data type other than IOMMU_HWPT_DATA_SELFTEST and NONE; the copy's errors for the
        data (EINVAL for type NONE: the copy wants the selftest type); EOPNOTSUPP for a
        ``pagetable_type`` other than MOCK_IOMMUPT_DEFAULT and MOCK_IOMMUPT_HUGE."""
        mdev = mock_dev_of(dev, self)
        dirty = bool(flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
        if flags & ~_PAGING_FLAGS or (dirty and mdev.flags & MOCK_FLAGS_DEVICE_NO_DIRTY):
            raise NotSupported(f"paging flags {flags:#x} are not supported for {dev.name}")
        pagetable_type = MOCK_IOMMUPT_DEFAULT
        if user_data is not None:
            if user_data.type not in (IOMMU_HWPT_DATA_SELFTEST, IOMMU_HWPT_DATA_NONE):
                raise NotSupported(f"paging data type {user_data.type:#x} is not supported")
            raw = user_data.copy_from(
                IOMMU_HWPT_DATA_SELFTEST, _HWPT.size, _HWPT.offsetofend("iotlb")
            )
            pagetable_type = _HWPT.decode(raw)["pagetable_type"]
        if pagetable_type not in (MOCK_IOMMUPT_DEFAULT, MOCK_IOMMUPT_HUGE):
            raise NotSupported(f"pagetable_type {pagetable_type} is not supported")
        return MockPagingDomain(self, pagetable_type, dirty)

    def domain_alloc_nested(
        self, dev: Device, parent: Domain, flags: int, user_data: UserData
    ) -> MockNestedDomain:
        """``mock_domain_alloc_nested``: EOPNOTSUPP for a flag other than PASID, EINVAL for
        a parent that is not a paging domain of this IOMMU, then
        ``__mock_domain_alloc_nested``'s errors."""
        if flags & ~IOMMU_HWPT_ALLOC_PASID:
            raise NotSupported(f"nested flags {flags:#x} are not supported")
        if not isinstance(parent, MockPagingDomain) or parent.owner is not self or parent.freed:
            raise InvalidArgument(f"{parent!r} is not a paging domain of {self.name}")
        return alloc_nested(parent, user_data, None)

    def domain_alloc_sva(self, dev: Device, mm: Mm) -> Domain:
        """The mock has no ``domain_alloc_sva``."""
        raise NotSupported(f"{self.name} has no SVA domains")

    # ------------------------------------------------------------------ iommufd
    def capable(self, dev: Device, cap: int) -> bool:
        """``mock_domain_capable``: coherent; dirty tracking unless NO_DIRTY."""
        if cap == CAP_CACHE_COHERENCY:
            return True
        if cap == CAP_DIRTY_TRACKING:
            return not mock_dev_of(dev, self).flags & MOCK_FLAGS_DEVICE_NO_DIRTY
        return False

    def hw_info(self, dev: Device, requested_type: int) -> tuple[int, bytes]:
        """``mock_domain_hw_info``: ``struct iommu_test_hw_info`` of
        IOMMU_HW_INFO_TYPE_SELFTEST for the default or the selftest type, EOPNOTSUPP for
        any other."""
        if requested_type not in (IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HW_INFO_TYPE_SELFTEST):
            raise NotSupported(f"{self.name}: no hw_info type {requested_type:#x}")
        info = _HW_INFO.encode(flags=0, test_reg=IOMMU_HW_INFO_SELFTEST_REGVAL)
        return IOMMU_HW_INFO_TYPE_SELFTEST, bytes(info)

    def get_viommu_size(self, dev: Device, viommu_type: int) -> int:
        """``mock_get_viommu_size``: only IOMMU_VIOMMU_TYPE_SELFTEST (the size is the
        model's: it only says the type exists)."""
        return 1 if viommu_type == IOMMU_VIOMMU_TYPE_SELFTEST else 0

    def viommu_alloc(
        self,
        dev: Device,
        viommu_type: int,
        parent: Domain,
        user_data: UserData | None,
        core: ViommuCore,
    ) -> MockViommu:
        """``mock_get_viommu_size`` + ``mock_viommu_init``: EOPNOTSUPP for a type other than
        IOMMU_VIOMMU_TYPE_SELFTEST, EINVAL for a parent that is not a paging domain of this
        IOMMU; with user data, the copy's errors, ENOMEM without two free pages, the
        errors of ``alloc_mmap`` and of the copy back -- each undoing what came before."""
        if viommu_type != IOMMU_VIOMMU_TYPE_SELFTEST:
            raise NotSupported(f"{self.name}: no vIOMMU type {viommu_type:#x}")
        if not isinstance(parent, MockPagingDomain) or parent.owner is not self or parent.freed:
            raise InvalidArgument(f"{parent!r} is not a paging domain of {self.name}")
        if user_data is None:
            return MockViommu(self, parent, core, self.pages, None)
        return self._viommu_with_region(parent, user_data, core)

    def _viommu_with_region(
        self, parent: MockPagingDomain, user_data: UserData, core: ViommuCore
    ) -> MockViommu:
        min_len = _VIOMMU.offsetofend("out_data")
        data = _VIOMMU.decode(
            user_data.copy_from(IOMMU_VIOMMU_TYPE_SELFTEST, _VIOMMU.size, min_len)
        )
        page_pa = self.pages.alloc_pages(_MMAP_ORDER)
        try:
            offset = core.alloc_mmap(page_pa, MOCK_VIOMMU_MMAP_LENGTH)
        except BaseException:
            self.pages.free_pages(page_pa, _MMAP_ORDER)
            raise
        # The loopback: the page and out_data both carry in_data.
        self.pages.mem.write32(page_pa, data["in_data"])
        data.update(
            out_data=data["in_data"],
            out_mmap_length=MOCK_VIOMMU_MMAP_LENGTH,
            out_mmap_offset=offset,
        )
        try:
            user_data.copy_to(IOMMU_VIOMMU_TYPE_SELFTEST, bytes(_VIOMMU.encode(data)), min_len)
        except BaseException:
            core.destroy_mmap(offset)
            self.pages.free_pages(page_pa, _MMAP_ORDER)
            raise
        return MockViommu(self, parent, core, self.pages, (page_pa, offset))

    def page_response(self, rid: int, pasid: int | None, grpid: int, code: int) -> None:
        """``mock_domain_page_response`` does nothing; the response is kept for tests."""
        self.page_responses.append(PageResponse(rid, pasid, grpid, code))
