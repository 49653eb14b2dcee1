"""The mock IOMMU's blocking and paging domains (``selftest.c``).

Every mock domain kind shares one attach (``mock_domain_nop_attach``) and one PASID attach
(``mock_domain_set_dev_pasid_nop``): the mock has no hardware to program, so attaching only
checks, then records the domain, the vIOMMU and I/O page-fault references in the device's
:class:`~iommusim.sw.drivers.mock.device.MockDev`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import InvalidArgument, NotFound, OutOfMemory
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_UNMANAGED, Domain
from iommusim.sw.drivers.mock.device import MockDev, mock_dev_of
from iommusim.sw.drivers.mock.pgtable import MOCK_OA_BITS, MOCK_VA_BITS, MockPageTable
from iommusim.sw.iommufd.selftest_uapi import (
    IOMMU_TEST_PASID_RESERVED,
    MOCK_APERTURE_LAST,
    MOCK_APERTURE_START,
    MOCK_FLAGS_DEVICE_NO_DIRTY,
    MOCK_HUGE_PAGE_SIZE,
    MOCK_IOMMUPT_DEFAULT,
    MOCK_IOMMUPT_HUGE,
    MOCK_PAGE_SIZE,
)

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device
    from iommusim.sw.drivers.mock.viommu import MockViommu
    from iommusim.sw.pgtable.gather import IotlbGather

__all__ = [
    "MOCK_DEFAULT_PGSIZE_BITMAP",
    "MOCK_HUGE_PGSIZE_BITMAP",
    "MockBlockedDomain",
    "MockDomain",
    "MockPagingDomain",
]

#: ``amdv1pt_possible_sizes`` of levels 0..2 with a 2 KiB granule: every power of two from
#: MOCK_PAGE_SIZE up to the 38-bit table (no 512 GiB leaf exists that low).
MOCK_DEFAULT_PGSIZE_BITMAP: Final = ((1 << MOCK_VA_BITS) - 1) & ~(MOCK_PAGE_SIZE - 1)
#: MOCK_IOMMUPT_HUGE: "userspace should only provide huge pages, we have to include PAGE_SIZE
#: for the domain to be accepted by iommufd" (``mock_domain_alloc_pgtable``).
MOCK_HUGE_PGSIZE_BITMAP: Final = MOCK_HUGE_PAGE_SIZE | 4096


class MockDomain(Domain):
    """A domain of the mock IOMMU: ``owner`` is its :class:`MockIommuDriver`."""

    supports_pasid = True

    def _viommu(self) -> MockViommu | None:
        """The vIOMMU a nested domain belongs to (none for the other kinds)."""
        return None

    def _mock_dev(self, dev: Device) -> MockDev:
        if dev.iommu is not self.owner:
            raise InvalidArgument(f"{self!r} belongs to another IOMMU than {dev.name}'s")
        return mock_dev_of(dev, self.owner)

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        """``mock_domain_nop_attach``: EINVAL for a domain with dirty tracking on a
        MOCK_FLAGS_DEVICE_NO_DIRTY device; ENOENT for a nested domain of a vIOMMU in which
        the device has no vDEVICE (``iommufd_viommu_get_vdev_id``). The device's vIOMMU and
        virtual id follow the domain (kept as they are while the vIOMMU stays the same)."""
        mdev = self._mock_dev(dev)
        if self.dirty_ops and mdev.flags & MOCK_FLAGS_DEVICE_NO_DIRTY:
            raise InvalidArgument(f"{dev.name} cannot track dirty pages (NO_DIRTY)")
        viommu = self._viommu()
        vdev_id = 0
        if viommu is not None:
            found = viommu.core.get_vdev_id(dev)
            if found is None:
                raise NotFound(f"{dev.name} has no vDEVICE in the domain's vIOMMU")
            vdev_id = found
        if viommu is not mdev.viommu:
            mdev.viommu = viommu
            mdev.vdev_id = vdev_id
        mdev.enable_iopf(self)
        mdev.disable_iopf(mdev.domain)
        mdev.domain = self

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None:
        """``mock_domain_set_dev_pasid_nop``. PASID 1024 (IOMMU_TEST_PASID_RESERVED) fakes
        a driver failure to exercise the core's rollback: the first attach of a non-blocking
        domain arms the flag, the next one disarms it and fails with ENOMEM (the one failure
        that changes something: the flag), attaching the blocking domain disarms it."""
        mdev = self._mock_dev(dev)
        if pasid == IOMMU_TEST_PASID_RESERVED:
            if self.type == DOMAIN_BLOCKED:
                mdev.pasid_1024_fake_error = False
            elif mdev.pasid_1024_fake_error:
                mdev.pasid_1024_fake_error = False
                raise OutOfMemory(f"fake error attaching PASID {pasid} of {dev.name}")
            else:
                mdev.pasid_1024_fake_error = True
        mdev.enable_iopf(self)
        mdev.disable_iopf(old)


class MockBlockedDomain(MockDomain):
    """``mock_blocking_domain``: the mock's blocked, default and release domain."""

    def __init__(self, owner: object) -> None:
        super().__init__(DOMAIN_BLOCKED, owner)


class MockPagingDomain(MockDomain):
    """``struct mock_iommu_domain``: a paging domain over a :class:`MockPageTable`.

    ``pagetable_type`` is MOCK_IOMMUPT_DEFAULT (every page size from 2 KiB; the aperture
    narrowed to [MOCK_APERTURE_START, MOCK_APERTURE_LAST] "for test purposes") or
    MOCK_IOMMUPT_HUGE (pages of MOCK_HUGE_PAGE_SIZE and 4 KiB; the table's whole 38-bit
    aperture). ``dirty_ops`` is set when it was allocated with DIRTY_TRACKING;
    ``dirty_tracking`` is the domain's MOCK_DIRTY_TRACK flag.
    """

    def __init__(self, owner: object, pagetable_type: int, dirty_ops: bool) -> None:
        if pagetable_type == MOCK_IOMMUPT_DEFAULT:
            pgsize, aperture = MOCK_DEFAULT_PGSIZE_BITMAP, (MOCK_APERTURE_START, MOCK_APERTURE_LAST)
        elif pagetable_type == MOCK_IOMMUPT_HUGE:
            pgsize, aperture = MOCK_HUGE_PGSIZE_BITMAP, (0, (1 << MOCK_VA_BITS) - 1)
        else:
            raise InvalidArgument(f"pagetable_type must be DEFAULT or HUGE, not {pagetable_type}")
        super().__init__(DOMAIN_UNMANAGED, owner, pgsize, aperture)
        self.pa_limit = 1 << MOCK_OA_BITS
        self.pagetable_type = pagetable_type
        self.dirty_ops = dirty_ops
        self.dirty_tracking = False
        self.pt = MockPageTable(pgsize)

    def map(self, iova: Iova, pa: PhysAddr, size: int, prot: int) -> None:
        self.pt.map(iova, pa, size, prot)

    def unmap(self, iova: Iova, size: int, gather: IotlbGather) -> int:
        return self.pt.unmap(iova, size, gather)

    def iova_to_phys(self, iova: Iova) -> PhysAddr | None:
        return self.pt.iova_to_phys(iova)

    def free(self) -> None:
        """``mock_domain_free``."""
        self.pt.clear()

    def set_dirty_tracking(self, enabled: bool) -> None:
        """``mock_domain_set_dirty_tracking`` (an op of ``amdv1_mock_dirty_ops``, so a
        domain without dirty ops has none: EOPNOTSUPP)."""
        if not self.dirty_ops:
            super().set_dirty_tracking(enabled)
        self.dirty_tracking = enabled

    def read_and_clear_dirty(
        self, iova: int, size: int, no_clear: bool, record: Callable[[int, int], None]
    ) -> None:
        """``IOMMU_PT_DIRTY_OPS(amdv1_mock)``'s read_and_clear_dirty: every dirty leaf in
        the range, as many bytes as the leaf has (clipped to the range)."""
        if not self.dirty_ops:
            super().read_and_clear_dirty(iova, size, no_clear, record)
        self.pt.read_and_clear_dirty(iova, size, no_clear, record)
