"""The driver's side of the IOMMU_TEST_CMD ops that look into mock domains and devices
(``selftest.c``).

iommufd's dispatch (``iommufd_test``) decodes the command, looks the object ids up (ENOENT
and the object-type errors are its own) and calls these with the domain or device it found;
each helper then applies the kernel function's remaining checks in the kernel's order. User
memory is reached through the callables the caller passes, which raise the errno of a bad
user address (EFAULT), as ``get_user_pages_fast`` and ``copy_from_user`` do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from iommusim.addr import Iova
from iommusim.errors import InvalidArgument, NoDevice, NotFound, Overflow
from iommusim.sw.core.domain import DOMAIN_NESTED, DOMAIN_UNMANAGED, Domain
from iommusim.sw.drivers.mock.device import mock_dev_of
from iommusim.sw.drivers.mock.domain import MockPagingDomain
from iommusim.sw.drivers.mock.nested import MockNestedDomain
from iommusim.sw.iommufd.selftest_uapi import (
    IOMMU_VEVENTQ_TYPE_SELFTEST,
    MOCK_DEV_CACHE_ID_MAX,
    MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
    STRUCTS,
)
from iommusim.sw.iopf.queue import PageFault
from iommusim.sw.pages import PAGE_SIZE

if TYPE_CHECKING:
    from iommusim.sw.core.device import Device
    from iommusim.sw.drivers.mock.driver import MockIommuDriver

__all__ = [
    "dev_check_cache",
    "dirty_check_args",
    "dirty_set",
    "md_check_iotlb",
    "md_check_map",
    "md_pagetable",
    "md_pagetable_nested",
    "trigger_iopf",
    "trigger_vevent",
]

_ULONG: Final = 1 << 64
#: ``SZ_16M * BITS_PER_BYTE``: the most bits IOMMU_TEST_OP_DIRTY takes.
_DIRTY_MAX_BITS: Final = (16 << 20) * 8
_EVENT: Final = STRUCTS["iommu_viommu_event_selftest"]


def md_pagetable(driver: MockIommuDriver, domain: Domain) -> MockPagingDomain:
    """``get_md_pagetable`` once the HWPT_PAGING is found: EINVAL unless its domain is an
    UNMANAGED paging domain of this mock IOMMU."""
    if (
        not isinstance(domain, MockPagingDomain)
        or domain.owner is not driver
        or domain.type != DOMAIN_UNMANAGED
    ):
        raise InvalidArgument(f"{domain!r} is not a mock paging domain")
    return domain


def md_pagetable_nested(driver: MockIommuDriver, domain: Domain) -> MockNestedDomain:
    """``get_md_pagetable_nested`` once the HWPT_NESTED is found: EINVAL unless its domain
    is a nested domain of this mock IOMMU."""
    if (
        not isinstance(domain, MockNestedDomain)
        or domain.owner is not driver
        or domain.type != DOMAIN_NESTED
    ):
        raise InvalidArgument(f"{domain!r} is not a mock nested domain")
    return domain


def md_check_map(
    driver: MockIommuDriver,
    domain: Domain,
    iova: int,
    length: int,
    uptr: int,
    user_pa: Callable[[int], int],
) -> None:
    """IOMMU_TEST_OP_MD_CHECK_MAP (``iommufd_test_md_check_pa``): every page of the
    domain's smallest size from ``iova`` translates to the physical address backing the same
    offset of the user buffer at ``uptr``. ``user_pa(va)`` is that address for user VA
    ``va`` (``get_user_pages_fast`` of its page; it raises the errno of a bad address).
    EINVAL for ``iova``, ``length`` or ``uptr`` not a multiple of the page size, a buffer
    wrapping the address space, or the first page that differs."""
    paging = md_pagetable(driver, domain)
    page = paging.pgsize_bitmap & -paging.pgsize_bitmap
    if iova % page or length % page or uptr % page or uptr + length >= _ULONG:
        raise InvalidArgument(
            f"iova {iova:#x}, length {length:#x} and uptr {uptr:#x} must be multiples of "
            f"{page:#x} and the buffer must not wrap"
        )
    while length:
        expected = (user_pa(uptr & ~(PAGE_SIZE - 1))) + uptr % PAGE_SIZE
        if paging.iova_to_phys(Iova(iova)) != expected:
            raise InvalidArgument(f"IOVA {iova:#x} does not map user VA {uptr:#x}")
        iova += page
        uptr += page
        length -= page


def md_check_iotlb(driver: MockIommuDriver, domain: Domain, iotlb_id: int, iotlb: int) -> None:
    """IOMMU_TEST_OP_MD_CHECK_IOTLB (``iommufd_test_md_check_iotlb``): EINVAL for an id
    above MOCK_NESTED_DOMAIN_IOTLB_ID_MAX or an entry that is not ``iotlb``."""
    nested = md_pagetable_nested(driver, domain)
    if iotlb_id > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX or nested.iotlb[iotlb_id] != iotlb:
        raise InvalidArgument(f"mock IOTLB entry {iotlb_id} is not {iotlb:#x}")


def dev_check_cache(driver: MockIommuDriver, dev: Device, cache_id: int, cache: int) -> None:
    """IOMMU_TEST_OP_DEV_CHECK_CACHE (``iommufd_test_dev_check_cache``): EINVAL for an id
    above MOCK_DEV_CACHE_ID_MAX or an entry that is not ``cache`` (and for a device that is
    not a mock one, which the kernel would misread)."""
    mdev = mock_dev_of(dev, driver)
    if cache_id > MOCK_DEV_CACHE_ID_MAX or mdev.cache[cache_id] != cache:
        raise InvalidArgument(f"device cache entry {cache_id} is not {cache:#x}")


def dirty_check_args(iova: int, length: int, page_size: int, uptr: int) -> int:
    """IOMMU_TEST_OP_DIRTY's checks before the HWPT lookup (``iommufd_test_dirty``): EINVAL
    for a zero page size, length or bitmap pointer or a misaligned ``iova``/``length``,
    EOVERFLOW for more than 16 MiB of bitmap. Returns the number of bits."""
    if not page_size or not length or iova % page_size or length % page_size or not uptr:
        raise InvalidArgument(
            f"iova {iova:#x} and length {length:#x} must be non-zero multiples of page size "
            f"{page_size:#x}, with a bitmap"
        )
    nbits = length // page_size
    if nbits > _DIRTY_MAX_BITS:
        raise Overflow(f"{nbits} bits are more than {_DIRTY_MAX_BITS}")
    return nbits


def dirty_set(
    driver: MockIommuDriver,
    domain: Domain,
    iova: int,
    page_size: int,
    nbits: int,
    read_bitmap: Callable[[int], bytes],
) -> int:
    """The rest of ``iommufd_test_dirty``: EINVAL unless the domain is a mock paging domain
    with dirty tracking on; ``read_bitmap(nbytes)`` copies the user's bitmap (EFAULT); then
    the leaf at ``iova + i * page_size`` is made dirty for every set bit ``i`` (as a device
    write would). Returns the number of set bits (``out_nr_dirty``), mapped or not."""
    paging = md_pagetable(driver, domain)
    if not paging.dirty_tracking:
        raise InvalidArgument(f"{domain!r} is not tracking dirty pages")
    bitmap = int.from_bytes(read_bitmap((nbits + 7) // 8), "little")
    count = 0
    for i in range(nbits):
        if bitmap >> i & 1:
            paging.pt.set_dirty(iova + i * page_size)
            count += 1
    return count


def trigger_iopf(
    driver: MockIommuDriver, dev: Device, pasid: int, grpid: int, perm: int, addr: int
) -> None:
    """IOMMU_TEST_OP_TRIGGER_IOPF (``iommufd_test_trigger_iopf``): EINVAL for a device that
    is not a mock one; otherwise report a last page request of the group (with a PASID
    unless ``pasid`` is IOMMU_NO_PASID, 0) as the IOMMU would (``iommu_report_device_fault``)."""
    mock_dev_of(dev, driver)
    if driver.reporter is None:
        raise NoDevice(f"{driver.name} is not registered")
    fault = PageFault(pasid if pasid else None, grpid, perm, addr, last=True)
    driver.reporter.page_request(dev.rid, fault)


def trigger_vevent(driver: MockIommuDriver, dev: Device) -> None:
    """IOMMU_TEST_OP_TRIGGER_VEVENT (``iommufd_test_trigger_vevent``): ENOENT when the
    device is attached through no vIOMMU or has virtual id 0; otherwise report a
    ``struct iommu_viommu_event_selftest`` with its virtual id on the vIOMMU's
    IOMMU_VEVENTQ_TYPE_SELFTEST queue (``report_event``'s errors are the op's)."""
    mdev = mock_dev_of(dev, driver)
    if mdev.viommu is None or not mdev.vdev_id:
        raise NotFound(f"{dev.name} is attached through no vIOMMU")
    mdev.viommu.core.report_event(
        IOMMU_VEVENTQ_TYPE_SELFTEST, bytes(_EVENT.encode(virt_id=mdev.vdev_id))
    )
