"""Mock devices: the ``iommufd_mock`` bus of ``selftest.c``.

A mock device is a core :class:`~iommusim.sw.core.device.Device` whose ``priv`` holds its
:class:`MockDev` under :data:`MOCK_DEV_KEY` (``struct mock_dev``: flags, the per-device cache
the vIOMMU invalidates, the current domain, the vIOMMU and virtual id it is attached through,
the I/O page-fault reference count and the PASID 1024 fake-error flag).
:meth:`~iommusim.sw.drivers.mock.driver.MockIommuDriver.create_device` makes them; the
driver owns exactly the devices it made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from iommusim.errors import InvalidArgument
from iommusim.sw.iommufd.selftest_uapi import IOMMU_TEST_DEV_CACHE_DEFAULT, MOCK_DEV_CACHE_NUM

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device
    from iommusim.sw.core.domain import Domain
    from iommusim.sw.drivers.mock.viommu import MockViommu

__all__ = ["MOCK_DEV_KEY", "MockDev", "is_mock_dev", "mock_dev_of"]

#: The ``Device.priv`` key of a mock device's state (its ``dev->bus`` being the mock bus).
MOCK_DEV_KEY: Final = "iommufd_mock"


@dataclass(eq=False)
class MockDev:
    """``struct mock_dev``: ``id`` from the driver's IDA (also the device's requester id)."""

    id: int
    flags: int
    owner: object
    cache: list[int] = field(
        default_factory=lambda: [IOMMU_TEST_DEV_CACHE_DEFAULT] * MOCK_DEV_CACHE_NUM
    )
    domain: Domain | None = None
    viommu: MockViommu | None = None
    vdev_id: int = 0
    iopf_refcount: int = 0
    pasid_1024_fake_error: bool = False

    def enable_iopf(self, domain: Domain | None) -> None:
        """``mock_dev_enable_iopf``: one reference per attached domain that takes page
        faults (the first one adds the device to the mock IOPF queue, which cannot fail
        here: the model's queue needs no per-device set-up)."""
        if domain is not None and domain.iopf_handler is not None:
            self.iopf_refcount += 1

    def disable_iopf(self, domain: Domain | None) -> None:
        """``mock_dev_disable_iopf``: drop the reference ``enable_iopf`` took."""
        if domain is not None and domain.iopf_handler is not None:
            self.iopf_refcount -= 1


def mock_dev_of(dev: Device, owner: object) -> MockDev:
    """The state of ``dev`` when it is a mock device made by ``owner``; EINVAL otherwise
    (``iommufd_selftest_is_mock_dev`` fails)."""
    state = dev.priv.get(MOCK_DEV_KEY)
    if not isinstance(state, MockDev) or state.owner is not owner:
        raise InvalidArgument(f"{dev.name} is not a mock device of this IOMMU")
    return state


def is_mock_dev(dev: Device) -> bool:
    """``iommufd_selftest_is_mock_dev``: ``dev`` is a mock device (of any mock IOMMU)."""
    return isinstance(dev.priv.get(MOCK_DEV_KEY), MockDev)
