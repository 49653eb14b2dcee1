"""DEVICE objects and attachment through iommufd on a booted RISC-V machine
(``drivers/iommu/iommufd/device.c``): bind claims DMA ownership, attach to an IOAS makes an
auto paging HWPT whose domain the IOAS fills, and the device's DMA really goes through it --
the hardware model walks the page table the IOAS's maps wrote."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.errors import ApiError
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_DMA
from iommusim.sw.iommufd import Iommufd, uapi
from iommusim.sw.iommufd.hwpt import HwptPaging
from iommusim.sw.mm import PROT_READ, PROT_WRITE
from testsupport.riscv_machine import Machine

PAGE: Final = 4096
BUF: Final = 0x4000_0000
IOVA: Final = 0x10_0000


class Vmm:
    """A process of the machine with iommufd open over the machine's IOMMU core."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.mm = m.kernel.new_process("vmm")
        self.fd = Iommufd.over_mm(self.mm, core=m.core)
        self.buf = self.mm.mmap(16 * PAGE, PROT_READ | PROT_WRITE, addr=BUF, fixed=True)

    def hwpt(self, hwpt_id: int) -> HwptPaging:
        obj = self.fd.file.objects.get(hwpt_id)
        assert isinstance(obj, HwptPaging)
        return obj

    def state(self) -> object:
        f = self.fd.file
        groups = [(g.id, g.domain, g.owner, g.owner_cnt) for g in self.m.core.groups]
        return [(o.id, o.type, o.users) for o in f.objects], len(f.objects), groups


@pytest.fixture
def vmm() -> Vmm:
    return Vmm(Machine())


def fails(v: Vmm, code: int, call: Any) -> None:
    before = v.state()
    with pytest.raises(ApiError) as e:
        call()
    assert e.value.errno == code, errno.errorcode.get(e.value.errno)
    assert v.state() == before


def test_bind_claims_the_group_and_moves_it_to_blocking(vmm: Vmm) -> None:
    nic = vmm.m.dev("nic")
    assert nic.group is not None and nic.group.domain.type == DOMAIN_DMA
    dev_id = vmm.fd.bind(nic)
    assert dev_id == 1
    assert nic.group.owner is not None and nic.group.domain.type == DOMAIN_BLOCKED
    # The device's DMA is blocked now: no translation leaks from the kernel's DMA domain.
    assert not vmm.m.ep("nic").dma_read(IOVA, 8).ok
    # A second file cannot take the same group (iommu_device_claim_dma_owner: EBUSY).
    other = Iommufd.over_mm(vmm.m.kernel.new_process("other"), core=vmm.m.core)
    with pytest.raises(ApiError) as e:
        other.bind(nic)
    assert e.value.errno == errno.EBUSY
    assert len(other.file.objects) == 0
    vmm.fd.file.unbind_device(dev_id)
    assert nic.group.owner is None and nic.group.domain.type == DOMAIN_DMA


def test_attach_to_an_ioas_builds_an_auto_domain_the_device_translates_through(vmm: Vmm) -> None:
    fd = vmm.fd
    dev_id = fd.bind(vmm.m.dev("nic"))
    ioas = fd.ioas_alloc()
    vmm.mm.write(vmm.buf, b"from the VMM's memory")
    fd.ioas_map(ioas, vmm.buf, 4 * PAGE, iova=IOVA)
    hwpt_id = fd.attach(dev_id, ioas)
    hwpt = vmm.hwpt(hwpt_id)
    assert hwpt.auto_domain and hwpt.domain is not None and hwpt.users == 2
    # The IOAS filled the new domain: a DMA at the IOVA reads the process's page.
    res = vmm.m.ep("nic").dma_read(IOVA, 21)
    assert res.ok and res.data == b"from the VMM's memory"
    # A map made after the attach reaches the domain too; an unmap removes it.
    vmm.mm.write(vmm.buf + 8 * PAGE, b"later")
    fd.ioas_map(ioas, vmm.buf + 8 * PAGE, PAGE, iova=IOVA + 0x10_0000)
    assert vmm.m.ep("nic").dma_read(IOVA + 0x10_0000, 5).data == b"later"
    fd.ioas_unmap(ioas, IOVA, 4 * PAGE)
    assert not vmm.m.ep("nic").dma_read(IOVA, 8).ok
    # A second attach of the same device is EBUSY; detaching destroys the auto domain.
    fails(vmm, errno.EBUSY, lambda: fd.attach(dev_id, hwpt_id))
    fd.file.detach_device(dev_id)
    with pytest.raises(ApiError) as e:
        fd.file.objects.get(hwpt_id)
    assert e.value.errno == errno.ENOENT
    fd.destroy(ioas)


def test_a_second_device_attached_to_the_ioas_reuses_the_auto_domain(vmm: Vmm) -> None:
    fd = vmm.fd
    a = fd.bind(vmm.m.dev("nic"))
    b = fd.bind(vmm.m.dev("nvme"))
    ioas = fd.ioas_alloc()
    first = fd.attach(a, ioas)
    assert fd.attach(b, ioas) == first
    assert vmm.hwpt(first).users == 3
    fails(vmm, errno.EBUSY, lambda: fd.destroy(ioas))
    fails(vmm, errno.EBUSY, lambda: fd.destroy(first))


def test_attach_errors_change_nothing(vmm: Vmm) -> None:
    fd = vmm.fd
    dev_id = fd.bind(vmm.m.dev("nic"))
    ioas = fd.ioas_alloc()
    fails(vmm, errno.ENOENT, lambda: fd.attach(dev_id, 99))
    fails(vmm, errno.EINVAL, lambda: fd.attach(dev_id, dev_id))  # a DEVICE is no page table
    fails(vmm, errno.ENOENT, lambda: fd.attach(99, ioas))
    # Replace needs an attachment (iommufd_device_do_replace: EINVAL).
    fails(vmm, errno.EINVAL, lambda: fd.file.replace_device(dev_id, ioas))
    # Detaching what is not attached does nothing.
    before = vmm.state()
    fd.file.detach_device(dev_id)
    assert vmm.state() == before


def test_replace_moves_the_device_between_hwpts_without_passing_through_blocking(
    vmm: Vmm,
) -> None:
    fd = vmm.fd
    nic = vmm.m.dev("nic")
    dev_id = fd.bind(nic)
    a, b = fd.ioas_alloc(), fd.ioas_alloc()
    vmm.mm.write(vmm.buf, b"AAAA")
    vmm.mm.write(vmm.buf + PAGE, b"BBBB")
    fd.ioas_map(a, vmm.buf, PAGE, iova=IOVA)
    fd.ioas_map(b, vmm.buf + PAGE, PAGE, iova=IOVA)
    hwpt_a = fd.hwpt_alloc(dev_id, a)
    hwpt_b = fd.hwpt_alloc(dev_id, b)
    assert fd.attach(dev_id, hwpt_a) == hwpt_a
    assert vmm.m.ep("nic").dma_read(IOVA, 4).data == b"AAAA"
    assert fd.file.replace_device(dev_id, hwpt_b) == hwpt_b
    assert vmm.m.ep("nic").dma_read(IOVA, 4).data == b"BBBB"
    assert vmm.hwpt(hwpt_a).users == 1 and vmm.hwpt(hwpt_b).users == 2
    fd.destroy(hwpt_a)  # no longer used
    fails(vmm, errno.EBUSY, lambda: fd.destroy(hwpt_b))


def test_close_detaches_unbinds_and_returns_the_group_to_the_kernel(vmm: Vmm) -> None:
    fd = vmm.fd
    nic = vmm.m.dev("nic")
    dev_id = fd.bind(nic)
    ioas = fd.ioas_alloc()
    fd.ioas_map(ioas, vmm.buf, PAGE, iova=IOVA)
    fd.attach(dev_id, ioas)
    assert vmm.fd.file.user.pins  # type: ignore[attr-defined]
    fd.close()
    assert nic.group is not None and nic.group.owner is None
    assert nic.group.domain is nic.group.default_domain
    assert not vmm.fd.file.user.pins  # type: ignore[attr-defined]


def test_hwpt_alloc_paging_rules(vmm: Vmm) -> None:
    fd = vmm.fd
    dev_id = fd.bind(vmm.m.dev("nic"))
    ioas = fd.ioas_alloc()
    # DIRTY_TRACKING is EOPNOTSUPP on an IOMMU without capabilities.AMO_HWAD (the "full"
    # preset has it; tests/sw/iommufd/test_dirty_riscv.py checks the "minimal" one), and
    # together with PASID (DC.tc.SADE is the whole device's).
    bad = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING | uapi.IOMMU_HWPT_ALLOC_PASID
    fails(vmm, errno.EOPNOTSUPP, lambda: fd.hwpt_alloc(dev_id, ioas, flags=bad))
    fails(vmm, errno.EOPNOTSUPP, lambda: fd.hwpt_alloc(dev_id, ioas, flags=1 << 7))
    both = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT
    fails(vmm, errno.EOPNOTSUPP, lambda: fd.hwpt_alloc(dev_id, ioas, flags=both, fault_id=5))
    fails(vmm, errno.EINVAL, lambda: fd.hwpt_alloc(dev_id, 99))  # pt_id: EINVAL, not ENOENT
    fails(vmm, errno.ENOENT, lambda: fd.hwpt_alloc(99, ioas))
    fails(vmm, errno.EINVAL, lambda: fd.hwpt_alloc(dev_id, ioas, data_type=1))  # no data
    # FAULT_ID_VALID with no such FAULT object: ENOENT, and the HWPT is gone again.
    fails(vmm, errno.ENOENT, lambda: fd.hwpt_alloc(dev_id, ioas, fault_id=77))
    parent = fd.hwpt_alloc(dev_id, ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
    assert vmm.hwpt(parent).nest_parent


def test_get_hw_info_of_a_riscv_device(vmm: Vmm) -> None:
    from iommusim.sw.iommufd import uapi_riscv

    fd = vmm.fd
    dev_id = fd.bind(vmm.m.dev("nic"))
    info = fd.get_hw_info(dev_id)
    assert info.data_type == uapi_riscv.IOMMU_HW_INFO_TYPE_RISCV_IOMMU
    d = uapi_riscv.RISCV_HW_INFO.decode(info.data)
    assert d["capabilities"] == vmm.m.reg64(0x0)
    assert info.data_len == uapi_riscv.RISCV_HW_INFO.size
    # capabilities.AMO_HWAD: the IOMMU can track dirty pages (0 on the "minimal" preset,
    # tests/sw/iommufd/test_dirty_riscv.py).
    assert info.capabilities & uapi.IOMMU_HW_CAP_DIRTY_TRACKING
    # A short buffer gets what fits; data_len still says the driver's length.
    short = fd.get_hw_info(dev_id, data_len=4)
    assert short.data == info.data[:4] and short.data_len == info.data_len
    fails(vmm, errno.EOPNOTSUPP, lambda: fd.get_hw_info(dev_id, in_type=1))
    fails(vmm, errno.ENOENT, lambda: fd.get_hw_info(42))
