"""The core/driver contract (sw/core/ops.py) with two IOMMUs behind one core.

A second driver -- a minimal one written here against the :class:`IommuDriver` Protocol, with
no hardware -- stands for "another IOMMU". Linux ``__iommu_attach_group`` and iommufd answer
a domain of another IOMMU with EINVAL ("incompatible"); attachments are counted on the domain
itself (``Domain.users``); a driver reports through the handle it was given at registration.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from iommusim.errors import ApiError, Busy, InvalidArgument, NotSupported
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import (
    DOMAIN_BLOCKED,
    DOMAIN_IDENTITY,
    DOMAIN_NAMES,
    DOMAIN_NESTED,
    DOMAIN_UNMANAGED,
    Domain,
)
from iommusim.sw.core.ops import IommuDriver, Reporter
from iommusim.sw.core.userdata import UserData
from iommusim.sw.core.viommu import ViommuCore, ViommuOps
from iommusim.sw.mm.mm import Mm

OTHER_RID = 1 << 24  # beyond the RISC-V driver's directory: the other IOMMU's device


class _OtherDomain(Domain):
    """A domain of the other IOMMU: attaching only records the device."""

    supports_pasid = True

    def __init__(self, driver: OtherIommu, domain_type: int) -> None:
        super().__init__(domain_type, driver, 1 << 12, (0, (1 << 39) - 1))
        self.attached: list[str] = []

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        if dev.iommu is not self.owner:
            raise InvalidArgument(f"{dev.name} is not behind {self.owner!r}")
        self.attached.append(dev.name)

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None:
        self.attach_dev(dev, old)


class OtherIommu:
    """An IOMMU driver with no hardware, for the devices at or above ``OTHER_RID``."""

    name = "other-iommu"

    def __init__(self) -> None:
        self.identity_domain: Domain = _OtherDomain(self, DOMAIN_IDENTITY)
        self.blocked_domain: Domain = _OtherDomain(self, DOMAIN_BLOCKED)
        self.reporter: Reporter | None = None

    def registered(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def owns(self, dev: Device) -> bool:
        return dev.rid >= OTHER_RID

    def probe_device(self, dev: Device) -> None:
        dev.iommu = self

    def release_device(self, dev: Device) -> None:
        dev.iommu = None

    def domain_alloc_paging(self, dev: Device) -> Domain:
        return _OtherDomain(self, DOMAIN_UNMANAGED)

    def def_domain_type(self, dev: Device) -> int | None:
        return DOMAIN_IDENTITY

    def domain_alloc_sva(self, dev: Device, mm: Mm) -> Domain:
        raise NotSupported("no SVA")

    def domain_alloc_paging_flags(
        self, dev: Device, flags: int = 0, user_data: UserData | None = None
    ) -> Domain:
        if flags or user_data is not None:
            raise NotSupported("no second stage, no flags")
        return self.domain_alloc_paging(dev)

    def domain_alloc_nested(
        self, dev: Device, parent: Domain, flags: int, user_data: UserData
    ) -> Domain:
        raise InvalidArgument("no nesting parent here")

    user_pasid_table = False

    def capable(self, dev: Device, cap: int) -> bool:
        return False

    def hw_info(self, dev: Device, requested_type: int) -> tuple[int, bytes] | None:
        return None

    def get_viommu_size(self, dev: Device, viommu_type: int) -> int:
        return 0

    def viommu_alloc(
        self,
        dev: Device,
        viommu_type: int,
        parent: Domain,
        user_data: UserData | None,
        core: ViommuCore,
    ) -> ViommuOps:
        raise NotSupported("no vIOMMU")

    def page_response(self, rid: int, pasid: int | None, grpid: int, code: int) -> None:
        """No page requests without hardware."""


def _fails_cleanly(m: Any, snap: Any, domains: tuple[Domain, ...], call: Any) -> None:
    before = snap(m, *domains)
    users = [d.users for d in domains]
    with pytest.raises(ApiError) as e:
        call()
    assert e.value.errno == errno.EINVAL
    assert snap(m, *domains) == before
    assert [d.users for d in domains] == users


@pytest.fixture
def two(machine: Any) -> tuple[Any, OtherIommu, Device]:
    m = machine()
    other = OtherIommu()
    driver: IommuDriver = other  # the Protocol is all the core needs
    m.core.register(driver)
    dev = Device("far", OTHER_RID)
    m.core.probe_device(dev)
    return m, other, dev


def test_registration_hands_the_driver_its_reporter(two: Any) -> None:
    m, other, _ = two
    assert other.reporter is not None
    assert m.driver.reporter is not None and m.driver.reporter is not other.reporter


def test_a_domain_of_another_iommu_is_einval_both_ways(two: Any, snap: Any) -> None:
    m, _, far = two
    nic = m.dev("nic")
    riscv_domain = m.core.domain_alloc_paging(nic)
    other_domain = m.core.domain_alloc_paging(far)
    assert isinstance(other_domain, _OtherDomain)
    for call in (
        lambda: m.core.attach_device(riscv_domain, far),
        lambda: m.core.replace_group_domain(riscv_domain, far.group),
        lambda: m.core.attach_device(other_domain, nic),
        lambda: m.core.attach_device_pasid(other_domain, m.dev("nvme"), 1),
        lambda: m.core.attach_device_pasid(riscv_domain, far, 1),
    ):
        _fails_cleanly(m, snap, (riscv_domain, other_domain), call)
    assert other_domain.attached == []
    # Each works with its own IOMMU's devices.
    m.core.attach_device(other_domain, far)
    m.core.attach_device(riscv_domain, nic)
    assert other_domain.attached == ["far"]
    assert (riscv_domain.users, other_domain.users) == (1, 1)


def test_users_count_groups_and_pasids(machine: Any, snap: Any) -> None:
    m = machine()
    nic, nvme = m.dev("nic"), m.dev("nvme")
    default = m.domain_of("nic")
    assert default.users == 1  # its group
    dom = m.core.domain_alloc_paging(nic)
    assert dom.users == 0
    m.core.attach_device(dom, nic)
    m.core.attach_device(dom, nvme)
    assert (dom.users, default.users) == (2, 0)
    with pytest.raises(Busy) as e:
        m.core.domain_free(dom)
    assert e.value.errno == errno.EBUSY
    m.core.detach_device(dom, nic)
    assert dom.users == 1
    m.core.detach_device(dom, nvme)
    assert (dom.users, default.users) == (0, 1)
    m.core.domain_free(dom)


def test_users_count_pasid_attachments(machine: Any) -> None:
    m = machine()
    dev = Device("acc", 0x20, pasid_bits=8)
    m.core.probe_device(dev)
    dom = m.core.domain_alloc_paging(dev)
    m.core.attach_device_pasid(dom, dev, 5)
    m.core.attach_device_pasid(dom, dev, 6)
    assert dom.users == 2
    m.core.detach_device_pasid(dom, dev, 5)
    assert dom.users == 1
    m.core.release_device(dev)  # the PASID goes with the device
    assert dom.users == 0
    m.core.domain_free(dom)


def test_identity_domain_has_no_pasid_op(machine: Any) -> None:
    """iommu_attach_device_pasid: EOPNOTSUPP when ``ops->set_dev_pasid`` is missing."""
    m = machine()
    dev = Device("acc", 0x20, pasid_bits=8)
    m.core.probe_device(dev)
    assert not m.driver.identity_domain.supports_pasid
    assert m.driver.blocked_domain.supports_pasid
    with pytest.raises(NotSupported) as e:
        m.core.attach_device_pasid(m.driver.identity_domain, dev, 1)
    assert e.value.errno == errno.EOPNOTSUPP


def test_nested_is_a_domain_type() -> None:
    """include/linux/iommu.h: IOMMU_DOMAIN_NESTED = __IOMMU_DOMAIN_NESTED (bit 6), not paging."""
    assert DOMAIN_NESTED == 1 << 6 and DOMAIN_NAMES[DOMAIN_NESTED] == "nested"
    assert not Domain(DOMAIN_NESTED, object()).is_paging
