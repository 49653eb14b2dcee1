"""The IOMMU core (sw/core/iommu.py): groups, default domains, attach/replace/detach,
map/unmap, the DMA API and fault handlers -- and its errno contract.

After Linux ``drivers/iommu/iommu.c`` and ``dma-iommu.c`` (reference digest 3.1, 3.5): a
device that cannot be isolated shares an ``iommu_group``; ``iommu_attach_device`` works only on
singleton groups (EINVAL) whose domain is the default one (EBUSY);
``iommu_group_replace_domain`` switches without passing through the default; ``iommu_map``
needs a paging domain and aligned arguments (EINVAL). Every failure leaves groups, domains,
device contexts, page tables and IOVA allocators exactly as they were (STYLE: "a failed call
leaves nothing half-done").
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from typing import Any

import pytest

from iommusim.bits.riscv.regs import MODE_1LVL
from iommusim.errors import (
    ApiError,
    Busy,
    Exists,
    InvalidArgument,
    NoDevice,
    NoSpace,
    NotFound,
    OutOfMemory,
)
from iommusim.hw.riscv.params import PRESETS
from iommusim.sim.clock import VirtualClock
from iommusim.sw.core.device import Device, Fault
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from iommusim.sw.core.domain import (
    DOMAIN_DMA,
    DOMAIN_DMA_FQ,
    DOMAIN_IDENTITY,
    DOMAIN_UNMANAGED,
)
from iommusim.sw.core.fq import FqOptions
from iommusim.sw.core.iommu import IommuCore
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

PAGE = 4096
RW = IOMMU_READ | IOMMU_WRITE
READ_PAGE_FAULT = 13
WRITE_PAGE_FAULT = 15
DDT_ENTRY_INVALID = 258


def fails_cleanly(
    m: Any,
    snap: Callable[..., dict[str, object]],
    domains: tuple[Any, ...],
    exc: type[ApiError],
    code: int,
    call: Callable[[], object],
    match: str | None = None,
) -> None:
    """``call`` raises ``exc`` with ``code`` and changes nothing snapshot() can see."""
    before = snap(m, *domains)
    with pytest.raises(exc, match=match) as e:
        call()
    assert e.value.errno == code
    assert snap(m, *domains) == before


# ------------------------------------------------------------------ default domains
@pytest.mark.parametrize(
    ("mode", "dtype"),
    [("strict", DOMAIN_DMA), ("lazy", DOMAIN_DMA_FQ), ("passthrough", DOMAIN_IDENTITY)],
)
def test_default_domain_follows_the_dma_mode(machine: Any, mode: str, dtype: int) -> None:
    # iommu.strict=1 -> DMA, iommu.strict=0 -> DMA_FQ, iommu.passthrough=1 -> IDENTITY.
    m = machine(mode)
    for name in ("nic", "nvme"):
        group = m.dev(name).group
        assert group.devices == [m.dev(name)]
        assert group.domain is group.default_domain
        assert group.domain.type == dtype
    assert m.dev("nic").group is not m.dev("nvme").group
    cookie = m.core.dma_cookie(m.dev("nic"))
    if mode == "passthrough":
        assert cookie is None
    else:
        assert cookie is not None
        assert (cookie.fq is not None) == (mode == "lazy")
        assert m.domain_of("nic") is not m.domain_of("nvme")  # one default domain per group


def test_core_options_are_validated() -> None:
    clock = VirtualClock()
    for kw, msg in (
        (dict(dma_mode="fast"), "dma_mode must be one of"),
        (dict(ncpus=0), "ncpus must be >= 1, not 0"),
        (dict(fq=FqOptions(size=100)), "power of two >= 2, not 100"),
        (dict(fq=FqOptions(timeout_ns=0)), "timeout must be positive, not 0"),
    ):
        with pytest.raises(InvalidArgument, match=msg):
            IommuCore(clock, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ probe_device
def test_probe_device_errors_change_nothing(machine: Any, snap: Any) -> None:
    m = machine()
    fails_cleanly(
        m,
        snap,
        (),
        Busy,
        errno.EBUSY,
        lambda: m.core.probe_device(Device("nic", 0x30)),
        "already probed",
    )
    fails_cleanly(
        m,
        snap,
        (),
        NoDevice,
        errno.ENODEV,
        lambda: m.core.probe_device(Device("huge", 1 << 24)),
        "behind no registered",
    )
    fails_cleanly(
        m, snap, (), Busy, errno.EBUSY, lambda: m.core.register(m.driver), "already registered"
    )
    stranger = Device("stranger", 0x40)
    fails_cleanly(
        m,
        snap,
        (),
        NoDevice,
        errno.ENODEV,
        lambda: m.core.register_fault_handler(stranger, lambda f: None),
        "not probed",
    )
    fails_cleanly(
        m,
        snap,
        (),
        NoDevice,
        errno.ENODEV,
        lambda: m.core.dma_map(stranger, m.RAM, 8, DMA_BIDIRECTIONAL),
    )


def test_probe_device_beyond_the_directory_is_enodev_and_changes_nothing(
    machine: Any, snap: Any
) -> None:
    # A 1LVL directory in the extended format covers 6 bits of device id (Linux
    # riscv_iommu_get_dc returns NULL, probe fails with ENODEV).
    m = machine(params=PRESETS["full"].with_(max_mode=MODE_1LVL))
    dev = Device("wide", 0x40)
    fails_cleanly(
        m,
        snap,
        (),
        NoDevice,
        errno.ENODEV,
        lambda: m.core.probe_device(dev),
        "does not fit the 6-bit DDT",
    )
    assert dev.iommu is None and dev.group is None


# ------------------------------------------------------------------ groups and attach
def test_shared_group_attaches_as_a_whole(machine: Any, snap: Any) -> None:
    m = machine()
    a = m.add("fn0", 0x20, group_key="bridge")
    b = m.add("fn1", 0x21, group_key="bridge")
    group = a.group
    assert b.group is group and group.devices == [a, b]
    dom = m.core.domain_alloc_paging(a)
    # iommu_attach_device: a device in a multi-device group -> EINVAL, nothing changes.
    fails_cleanly(
        m,
        snap,
        (dom, group.domain),
        InvalidArgument,
        errno.EINVAL,
        lambda: m.core.attach_device(dom, a),
        "shares group",
    )
    m.core.attach_group(dom, group)
    assert group.domain is dom
    pa = m.kernel.pages.alloc_page()
    m.core.map(dom, 0x6000, pa, PAGE, RW)
    assert m.ep("fn0").dma_write(0x6000, b"fn0").ok
    assert m.ep("fn1").dma_read(0x6000, 3).data == b"fn0"
    assert {dev for _, dev, _ in dom.bonds} == {a, b}
    # A third function probed later joins the group's current domain.
    c = m.add("fn2", 0x22, group_key="bridge")
    assert c.group is group and m.ep("fn2").dma_read(0x6000, 3).data == b"fn0"


def test_attach_while_attached_elsewhere_is_busy(machine: Any, snap: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    first = m.core.domain_alloc_paging(nic)
    second = m.core.domain_alloc_paging(nic)
    m.core.attach_device(first, nic)
    m.core.map(first, 0x1000, m.RAM, PAGE, RW)
    fails_cleanly(
        m,
        snap,
        (first, second),
        Busy,
        errno.EBUSY,
        lambda: m.core.attach_device(second, nic),
        "already attached",
    )
    fails_cleanly(
        m,
        snap,
        (first, second),
        Busy,
        errno.EBUSY,
        lambda: m.core.attach_group(m.driver.identity_domain, nic.group),
    )
    assert m.ep("nic").dma_read(0x1000, 4).ok


def test_attach_from_the_blocking_domain_is_allowed(machine: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    m.core.attach_device(m.driver.blocked_domain, nic)
    dom = m.core.domain_alloc_paging(nic)
    m.core.attach_device(dom, nic)
    assert nic.group.domain is dom


def test_replace_switches_without_the_default(machine: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    a = m.core.domain_alloc_paging(nic)
    b = m.core.domain_alloc_paging(nic)
    pa_a, pa_b = m.kernel.pages.alloc_page(), m.kernel.pages.alloc_page()
    m.bus.write(pa_a, b"AAAA")
    m.bus.write(pa_b, b"BBBB")
    m.core.map(a, 0x2000, pa_a, PAGE, RW)
    m.core.map(b, 0x2000, pa_b, PAGE, RW)
    m.core.attach_device(a, nic)
    assert m.ep("nic").dma_read(0x2000, 4).data == b"AAAA"
    m.core.replace_group_domain(b, nic.group)
    assert nic.group.domain is b
    assert m.ep("nic").dma_read(0x2000, 4).data == b"BBBB"
    assert a.bonds == []
    m.core.replace_group_domain(b, nic.group)  # to the same domain: nothing to do
    assert nic.group.domain is b
    m.core.replace_group_domain(m.driver.blocked_domain, nic.group)
    assert m.ep("nic").dma_read(0x2000, 4).fault.cause == DDT_ENTRY_INVALID
    # Both paging domains are free to go now.
    m.core.domain_free(a)
    m.core.domain_free(b)


def test_detach_returns_to_the_default_domain(machine: Any, snap: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    default = nic.group.default_domain
    dom = m.core.domain_alloc_paging(nic)
    fails_cleanly(
        m,
        snap,
        (dom, default),
        InvalidArgument,
        errno.EINVAL,
        lambda: m.core.detach_device(dom, nic),
        "is not attached to",
    )
    m.core.attach_device(dom, nic)
    with pytest.raises(InvalidArgument, match="not a DMA domain"):
        m.core.dma_map(nic, m.RAM, 8, DMA_BIDIRECTIONAL)
    m.core.detach_device(dom, nic)
    assert nic.group.domain is default
    buf = m.kernel.pages.alloc_page()
    iova = m.core.dma_map(nic, buf, 8, DMA_BIDIRECTIONAL)
    assert m.ep("nic").dma_write(iova, b"dma api!").ok
    assert m.bus.read(buf, 8) == b"dma api!"
    assert dom.bonds == []
    m.core.domain_free(dom)


def test_domain_free_of_an_attached_or_default_domain_is_busy(machine: Any, snap: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    dom = m.core.domain_alloc_paging(nic)
    m.core.attach_device(dom, nic)
    m.core.map(dom, 0x3000, m.RAM, PAGE, RW)
    fails_cleanly(
        m, snap, (dom,), Busy, errno.EBUSY, lambda: m.core.domain_free(dom), "still attached"
    )
    default = m.dev("nvme").group.default_domain
    fails_cleanly(
        m,
        snap,
        (default,),
        Busy,
        errno.EBUSY,
        lambda: m.core.domain_free(default),
        "still attached|default domain",
    )
    default_nic = nic.group.default_domain  # not attached, but still the group's default
    fails_cleanly(
        m,
        snap,
        (default_nic,),
        Busy,
        errno.EBUSY,
        lambda: m.core.domain_free(default_nic),
        "default domain",
    )
    assert m.ep("nic").dma_read(0x3000, 4).ok


def test_a_domain_shared_by_two_groups_stays_attached_after_one_leaves(
    machine: Any, snap: Any
) -> None:
    # Regression: release_device of the last device of a group dropped the whole attach
    # count of the group's domain, so domain_free then freed a domain another group was
    # still translating through (use-after-free of its page table and PSCID).
    m = machine()
    nic, nvme = m.dev("nic"), m.dev("nvme")
    shared = m.core.domain_alloc_paging(nic)
    m.core.attach_device(shared, nic)
    m.core.attach_device(shared, nvme)
    pa = m.kernel.pages.alloc_page()
    m.core.map(shared, 0x4000, pa, PAGE, RW)
    m.core.release_device(nic)
    assert m.ep("nic").dma_read(0x4000, 4).fault.cause == DDT_ENTRY_INVALID  # release = blocked
    fails_cleanly(m, snap, (shared,), Busy, errno.EBUSY, lambda: m.core.domain_free(shared))
    assert m.ep("nvme").dma_write(0x4000, b"ok").ok
    m.core.detach_device(shared, nvme)
    m.core.domain_free(shared)


def test_release_device_frees_the_default_domain(machine: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    default = nic.group.default_domain
    buf = m.kernel.pages.alloc_page()
    m.core.dma_map(nic, buf, 64, DMA_BIDIRECTIONAL)
    pscids = len(m.driver.pscid_ida)
    free = m.kernel.pages.nr_free
    groups = len(m.core.groups)
    m.core.release_device(nic)
    assert nic.group is None and nic.iommu is None
    assert "nic" not in m.core.devices
    assert len(m.core.groups) == groups - 1
    assert len(m.driver.pscid_ida) == pscids - 1
    assert default.pscid not in m.driver.pscid_ida
    assert m.kernel.pages.nr_free > free  # its page-table pages
    assert m.ep("nic").dma_read(0x1000, 4).fault.cause == DDT_ENTRY_INVALID


def test_release_in_lazy_mode_drains_the_flush_queue(machine: Any) -> None:
    m = machine("lazy")
    nic = m.dev("nic")
    cookie = m.core.dma_cookie(nic)
    buf = m.kernel.pages.alloc_page()
    iova = m.core.dma_map(nic, buf, 64, DMA_BIDIRECTIONAL)
    m.core.dma_unmap(nic, iova, 64)
    assert cookie.fq.pending == 1
    m.core.release_device(nic)
    assert cookie.fq.pending == 0
    m.system.run_for(20_000_000)  # the cancelled timer does not fire on a freed domain
    assert cookie.fq.stats["timer_flushes"] == 0


# ------------------------------------------------------------------ map / unmap
def test_map_errors_change_nothing(machine: Any, snap: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    dom = m.core.domain_alloc_paging(nic)
    m.core.attach_device(dom, nic)
    m.core.map(dom, 0x10000, m.RAM, 2 * PAGE, RW)
    ident, blocked = m.driver.identity_domain, m.driver.blocked_domain
    cases: list[tuple[type[ApiError], int, Callable[[], object], str]] = [
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.map(ident, 0, m.RAM, PAGE, RW),
            "cannot be mapped",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.map(blocked, 0, m.RAM, PAGE, RW),
            "cannot be mapped",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.map(dom, 0x20800, m.RAM, PAGE, RW),
            "must be positive multiples",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.map(dom, 0x20000, m.RAM, 100, RW),
            "must be positive multiples",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.map(dom, 0x20000, m.RAM, 0, RW),
            "must be positive multiples",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.map(dom, 0x20000, m.RAM + 8, PAGE, RW),
            "not aligned",
        ),
        (Exists, errno.EEXIST, lambda: m.core.map(dom, 0xF000, m.RAM, 3 * PAGE, RW), ""),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.unmap(dom, 0x10800, PAGE),
            "must be positive multiples",
        ),
        (InvalidArgument, errno.EINVAL, lambda: m.core.unmap(ident, 0, PAGE), "cannot be mapped"),
    ]
    for exc, code, call, match in cases:
        fails_cleanly(m, snap, (dom,), exc, code, call, match or None)
    assert m.ep("nic").dma_read(0x11000, 4).ok


def test_unmap_returns_the_bytes_unmapped(machine: Any) -> None:
    m = machine()
    dom = m.core.domain_alloc_paging(m.dev("nic"))
    m.core.map(dom, 0x10000, m.RAM, 2 * PAGE, RW)
    assert m.core.unmap(dom, 0x10000, 4 * PAGE) == 2 * PAGE  # holes count 0
    assert m.core.unmap(dom, 0x10000, 4 * PAGE) == 0
    assert m.core.iova_to_phys(dom, 0x10000) is None


# ------------------------------------------------------------------ DMA API
def test_dma_map_keeps_the_offset_and_the_direction(machine: Any) -> None:
    # dma_info_to_prot: DMA_TO_DEVICE -> the device may only read; FROM_DEVICE -> only write.
    m = machine()
    nic, ep = m.dev("nic"), m.ep("nic")
    buf = m.kernel.pages.alloc_pages(1)
    m.bus.write(buf + 0x123, b"payload")
    to_dev = m.core.dma_map(nic, buf + 0x123, 7, DMA_TO_DEVICE)
    assert to_dev & 0xFFF == 0x123
    assert ep.dma_read(to_dev, 7).data == b"payload"
    assert ep.dma_write(to_dev, b"x").fault.cause == WRITE_PAGE_FAULT
    from_dev = m.core.dma_map(nic, buf + PAGE, PAGE, DMA_FROM_DEVICE)
    assert ep.dma_write(from_dev, b"incoming").ok
    assert m.bus.read(buf + PAGE, 8) == b"incoming"
    # A buffer that straddles a page boundary maps both pages.
    both = m.core.dma_map(nic, buf + PAGE - 4, 8, DMA_BIDIRECTIONAL)
    assert ep.dma_write(both, b"straddle").ok
    assert m.bus.read(buf + PAGE - 4, 8) == b"straddle"
    cookie = m.core.dma_cookie(nic)
    assert cookie.stats["maps"] == 3


def test_dma_api_errors_change_nothing(machine: Any, snap: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    dom = nic.group.domain
    buf = m.kernel.pages.alloc_pages(2)
    iova = m.core.dma_map(nic, buf, 2 * PAGE, DMA_BIDIRECTIONAL)
    cases: list[tuple[type[ApiError], int, Callable[[], object], str]] = [
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.dma_unmap(nic, 0x1234_5000, 8),
            "matches no mapping",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.dma_unmap(nic, iova + PAGE, 8),
            "matches no mapping",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.dma_unmap(nic, iova, 3 * PAGE),
            "matches no mapping",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.dma_unmap(nic, iova, 0),
            "matches no mapping",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.dma_map(nic, buf, 8, 7),
            "direction must be 0, 1 or 2, not 7",
        ),
        (
            InvalidArgument,
            errno.EINVAL,
            lambda: m.core.dma_map(nic, buf, 0, DMA_TO_DEVICE),
            "size must be positive",
        ),
    ]
    for exc, code, call, match in cases:
        fails_cleanly(m, snap, (dom,), exc, code, call, match)
    assert m.ep("nic").dma_read(iova + PAGE, 4).ok
    m.core.dma_unmap(nic, iova, 2 * PAGE)


def test_dma_map_without_iova_space_is_enospc(machine: Any, snap: Any) -> None:
    # The IOVA limit plays the device's DMA mask: pfns 1..4 only.
    m = machine()
    nic = m.dev("nic")
    cookie = m.core.dma_cookie(nic)
    cookie.limit_pfn = 4
    buf = m.kernel.pages.alloc_page()
    iovas = [m.core.dma_map(nic, buf, 64, DMA_BIDIRECTIONAL) for _ in range(4)]
    assert sorted(i >> 12 for i in iovas) == [1, 2, 3, 4]
    fails_cleanly(
        m,
        snap,
        (nic.group.domain,),
        NoSpace,
        errno.ENOSPC,
        lambda: m.core.dma_map(nic, buf, 64, DMA_BIDIRECTIONAL),
        "exhausted",
    )
    assert cookie.stats["map_failures"] == 1
    m.core.dma_unmap(nic, iovas[2], 64)
    assert m.core.dma_map(nic, buf, 64, DMA_BIDIRECTIONAL) == iovas[2]


def test_dma_map_without_memory_for_tables_is_enomem(machine: Any, snap: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    pages = m.kernel.pages
    buf = pages.alloc_page()
    hog = []
    while pages.nr_free:
        hog.append(pages.alloc_page())
    fails_cleanly(
        m,
        snap,
        (nic.group.domain,),
        OutOfMemory,
        errno.ENOMEM,
        lambda: m.core.dma_map(nic, buf, 64, DMA_BIDIRECTIONAL),
    )
    assert m.core.dma_cookie(nic).stats["map_failures"] == 1
    for pa in hog[:8]:
        pages.free_page(pa)
    iova = m.core.dma_map(nic, buf, 64, DMA_BIDIRECTIONAL)
    assert m.ep("nic").dma_read(iova, 4).ok


def test_dma_unmap_too_long_fails_cleanly(machine: Any, snap: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    buf = m.kernel.pages.alloc_pages(2)
    iova = m.core.dma_map(nic, buf, 3 * PAGE, DMA_BIDIRECTIONAL)  # IOVA rounded to 4 pages
    fails_cleanly(
        m,
        snap,
        (nic.group.domain,),
        InvalidArgument,
        errno.EINVAL,
        lambda: m.core.dma_unmap(nic, iova, 4 * PAGE),
    )


def test_dma_unmap_too_short_is_refused(machine: Any) -> None:
    m = machine()
    nic = m.dev("nic")
    buf = m.kernel.pages.alloc_pages(1)
    iova = m.core.dma_map(nic, buf, 2 * PAGE, DMA_BIDIRECTIONAL)
    with contextlib.suppress(InvalidArgument):  # refusing the size is one right answer
        m.core.dma_unmap(nic, iova, PAGE)
    # Whatever happened, no page may stay mapped under a freed IOVA.
    tail_mapped = m.core.iova_to_phys(nic.group.domain, iova + PAGE) is not None
    iova_held = nic.group.domain.cookie.iovad.size_of(iova >> 12) is not None
    assert not tail_mapped or iova_held
    assert m.core.dma_map(nic, buf, 2 * PAGE, DMA_BIDIRECTIONAL)


# ------------------------------------------------------------------ fault handlers
def test_fault_handler_registration(machine: Any, snap: Any) -> None:
    # iommu_register_device_fault_handler: one per device (EBUSY for a second).
    m = machine()
    nic = m.dev("nic")
    got: list[Fault] = []
    m.core.register_fault_handler(nic, got.append)
    fails_cleanly(
        m,
        snap,
        (),
        Busy,
        errno.EBUSY,
        lambda: m.core.register_fault_handler(nic, lambda f: None),
        "already has a fault handler",
    )
    m.ep("nic").dma_read(0x1000, 4)
    m.system.run_for(10_000)
    assert [f.record.cause for f in got] == [READ_PAGE_FAULT]
    m.core.unregister_fault_handler(nic)
    fails_cleanly(
        m,
        snap,
        (),
        NotFound,
        errno.ENOENT,
        lambda: m.core.unregister_fault_handler(nic),
        "has no fault handler",
    )
    m.ep("nic").dma_read(0x1000, 4)
    m.system.run_for(10_000)
    assert len(got) == 1
    assert len(m.core.unhandled_faults) == 1


def test_paging_domain_alloc_types(machine: Any) -> None:
    m = machine("passthrough")
    dom = m.core.domain_alloc_paging(m.dev("nic"))
    assert dom.type == DOMAIN_UNMANAGED
    assert dom.is_paging and dom.cookie is None
    assert not m.driver.identity_domain.is_paging
