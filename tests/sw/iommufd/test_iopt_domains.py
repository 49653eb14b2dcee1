"""Domains in the io_pagetable (io_pagetable.c ``iopt_table_add_domain`` /
``iopt_table_remove_domain``, pages.c ``iopt_area_fill_domains`` / ``unfill``): every area is
mapped into every domain and pinned while a domain needs it; every failure changes nothing.

A dict-backed test double (:class:`FakeDomain`) injects errors; the RISC-V paging domain of
a booted machine shows a device's DMA really going through the IOAS's mappings."""

from __future__ import annotations

import errno
import itertools
from typing import Any, Final

import pytest

from iommusim.errors import AddressInUse, Exists, InvalidArgument, ModelError, OutOfMemory
from iommusim.sw.iommufd import Iommufd, IovaRange, uapi
from iommusim.sw.iommufd.iopt import ULONG_MAX, IoPagetable
from iommusim.sw.prot import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE
from testsupport.iommufd import FakeDomain, riscv_kernel

P: Final = 0x1000
RWC: Final = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE


def iopt_of(env: Any, ioas: int) -> IoPagetable:
    t = env.ioas(ioas).iopt
    assert isinstance(t, IoPagetable)
    return t


def expected_table(env: Any, va: int, iova: int, length: int) -> dict[int, int]:
    return {iova + o: env.mm.translate(va + o) for o in range(0, length, P)}


def state(env: Any, *domains: FakeDomain) -> tuple[object, ...]:
    """The snapshot and the domains' tables -- without the process's resident pages: a
    pin faults pages in and unpinning leaves them in, as pin_user_pages does."""
    snap = env.snapshot()
    del snap["resident"]
    return (snap, [d.table() for d in domains])


def fails(env: Any, exc: type, code: int, call: Any, *domains: FakeDomain) -> None:
    before = state(env, *domains)
    with pytest.raises(exc) as info:
        call()
    assert info.value.errno == code
    assert state(env, *domains) == before


# ---------------------------------------------------------------------- add / fill
def test_add_domain_fills_every_existing_area_and_pins_it(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, 0x3000, iova=0x10000)
    env.fd.ioas_map(ioas, env.buf + 0x8000, P, iova=0x40000, flags=uapi.IOMMU_IOAS_MAP_READABLE)
    assert env.user.pins == {}  # no domain: lazy
    d = FakeDomain()
    t = iopt_of(env, ioas)
    t.add_domain(d)
    assert t.domains == [d] and t.iova_alignment == P
    want = expected_table(env, env.buf, 0x10000, 0x3000)
    want |= expected_table(env, env.buf + 0x8000, 0x40000, P)
    assert d.table() == want
    assert d.pt[0x40000][1] == IOMMU_READ | IOMMU_CACHE and d.pt[0x10000][1] == RWC
    assert set(env.user.pins) == {env.buf, env.buf + P, env.buf + 2 * P, env.buf + 0x8000}
    assert all(c == 1 for _, c in env.user.pins.values())


def test_map_and_unmap_go_to_every_domain(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    d1, d2 = FakeDomain(), FakeDomain()
    t.add_domain(d1)
    t.add_domain(d2)
    iova = env.fd.ioas_map(ioas, env.buf, 0x2000)
    want = expected_table(env, env.buf, iova, 0x2000)
    assert d1.table() == d2.table() == want
    assert all(c == 1 for _, c in env.user.pins.values()) and len(env.user.pins) == 2
    assert env.fd.ioas_unmap(ioas, iova, 0x2000) == 0x2000
    assert d1.table() == d2.table() == {} and env.user.pins == {}
    assert d1.syncs and d2.syncs  # iotlb_sync after each unmap


def test_copy_shares_the_pins_of_the_source(env: Any) -> None:
    src, dst = env.fd.ioas_alloc(), env.fd.ioas_alloc()
    ds, dd = FakeDomain(), FakeDomain()
    iopt_of(env, src).add_domain(ds)
    iopt_of(env, dst).add_domain(dd)
    env.fd.ioas_map(src, env.buf, 0x2000, iova=0x10000)
    env.fd.ioas_copy(dst, src, 0x10000, 0x2000, dst_iova=0x80000)
    assert dd.table() == expected_table(env, env.buf, 0x80000, 0x2000)
    assert all(c == 1 for _, c in env.user.pins.values())  # one pin per page
    a = iopt_of(env, src).areas[0]
    assert a.pages.pinned()[0][1] == 2  # one user per IOAS
    env.fd.ioas_unmap_all(src)
    assert len(env.user.pins) == 2 and ds.table() == {}
    env.fd.ioas_unmap_all(dst)
    assert env.user.pins == {}


def test_remove_domain_unpins_with_the_last_domain(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    d1, d2, d3 = FakeDomain(), FakeDomain(aperture=(0x1000, 1 << 40)), FakeDomain()
    for d in (d1, d2, d3):
        t.add_domain(d)
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)
    t.remove_domain(d1)
    assert t.domains == [d3, d2]  # the tail takes the hole, as the kernel's xarray
    assert d1.table() == {} and len(env.user.pins) == 2
    t.remove_domain(d2)
    assert t.reserved == [] and len(env.user.pins) == 2
    t.remove_domain(d3)
    assert t.domains == [] and env.user.pins == {} and t.iova_alignment == 1
    with pytest.raises(ModelError):
        t.remove_domain(d3)
    # Mapping again with no domain pins nothing; the pages were not freed.
    assert len(t.areas) == 1 and t.areas[0].pages.npinned == 0


def test_accesses_keep_pages_pinned_after_the_last_domain(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    d = FakeDomain()
    t.add_domain(d)
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)
    area = t.areas[0]
    pas = area.pages.add_access(0, 0, False)  # what an access pin does underneath
    t.remove_domain(d)
    assert env.user.pins == {env.buf: (pas[0], 1)}
    t.add_domain(d)  # refill: pins the other page again, shares the access's one
    assert env.user.pins[env.buf] == (pas[0], 1) and len(env.user.pins) == 2
    assert area.pages.pinned()[0] == (pas[0], 2)


def test_aperture_is_reserved_for_the_domain(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    d = FakeDomain(aperture=(0x10000, 0xFFFF_FFFF))
    t.add_domain(d)
    assert [r for r, o in t.reserved] == [IovaRange(0, 0xFFFF), IovaRange(1 << 32, ULONG_MAX)]
    assert env.fd.ioas_iova_ranges(ioas).ranges == [IovaRange(0x10000, 0xFFFF_FFFF)]
    iova = env.fd.ioas_map(ioas, env.buf, P)
    assert 0x10000 <= iova < 1 << 32
    env.fd.ioas_unmap(ioas, iova, P)
    t.remove_domain(d)
    assert t.reserved == []


# ---------------------------------------------------------------------- add errors
def test_add_domain_errors_change_nothing(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    d = FakeDomain()
    t.add_domain(d)
    fails(env, Exists, errno.EEXIST, lambda: t.add_domain(d), d)
    big = FakeDomain(pgsize_bitmap=0x2000)
    fails(env, InvalidArgument, errno.EINVAL, lambda: t.add_domain(big), d)
    fails(env, InvalidArgument, errno.EINVAL, lambda: t.add_domain(FakeDomain(0)), d)
    t.remove_domain(d)
    # A sub-page area cannot go into a 4 KiB domain.
    env.fd.ioas_map(ioas, env.buf + 0x800, 0x800, iova=0x10800)
    fails(env, AddressInUse, errno.EADDRINUSE, lambda: t.add_domain(FakeDomain()))
    assert t.iova_alignment == 1
    env.fd.ioas_unmap_all(ioas)
    # An area or an allowed range outside the aperture.
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)
    small = FakeDomain(aperture=(0x20000, ULONG_MAX))
    fails(env, AddressInUse, errno.EADDRINUSE, lambda: t.add_domain(small), small)
    env.fd.ioas_unmap_all(ioas)
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x1000, 0x1FFFF)])
    fails(env, AddressInUse, errno.EADDRINUSE, lambda: t.add_domain(small), small)
    low = FakeDomain(aperture=(0, 0xFFF_FFFF))
    env.fd.ioas_allow_iovas(ioas, [IovaRange(0x1000, 0x1FFFF), IovaRange(1 << 40, 1 << 41)])
    fails(env, AddressInUse, errno.EADDRINUSE, lambda: t.add_domain(low), low)


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_a_failing_fill_of_the_first_domain_changes_nothing(env: Any, nth: int) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    for k in range(4):
        env.fd.ioas_map(ioas, env.buf + k * 0x10000, P, iova=0x100000 + k * 0x10000)
    d = FakeDomain(aperture=(0x1000, 1 << 40), fail_map_at=nth)
    fails(env, OutOfMemory, errno.ENOMEM, lambda: t.add_domain(d), d)
    assert t.domains == [] and t.reserved == [] and env.user.pins == {}


@pytest.mark.parametrize("nth", [1, 3])
def test_a_failing_fill_of_a_second_domain_keeps_the_first(env: Any, nth: int) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    d1 = FakeDomain()
    t.add_domain(d1)
    for k in range(3):
        env.fd.ioas_map(ioas, env.buf + k * 0x10000, P, iova=0x100000 + k * 0x10000)
    d2 = FakeDomain(fail_map_at=nth)
    fails(env, OutOfMemory, errno.ENOMEM, lambda: t.add_domain(d2), d1, d2)
    assert t.domains == [d1] and len(env.user.pins) == 3


@pytest.mark.parametrize("nth", [1, 2])
def test_a_failing_map_into_one_domain_changes_nothing(env: Any, nth: int) -> None:
    src, ioas = env.fd.ioas_alloc(), env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    d1, d2 = FakeDomain(), FakeDomain(fail_map_at=nth)
    t.add_domain(d1)
    t.add_domain(d2)
    if nth == 2:
        env.fd.ioas_map(ioas, env.buf + 0x80000, P)  # the first map call
    # A COPY of two areas: the second area's map fails after the first's went in.
    env.fd.ioas_map(src, env.buf, P, iova=0x10000)
    env.fd.ioas_map(src, env.buf + 0x4000, P, iova=0x11000)
    fails(
        env,
        OutOfMemory,
        errno.ENOMEM,
        lambda: env.fd.ioas_copy(ioas, src, 0x10000, 0x2000, dst_iova=0x40000),
        d1,
        d2,
    )
    assert iopt_of(env, ioas).areas == [] or nth == 2
    env.fd.ioas_copy(ioas, src, 0x10000, 0x2000, dst_iova=0x40000)  # injected once only
    assert d1.table() == d2.table()


def test_a_map_failing_inside_an_area_unmaps_its_start(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    t.set_large_pages(False)  # one map call per page
    d = FakeDomain(fail_map_at=3)
    t.add_domain(d)
    fails(env, OutOfMemory, errno.ENOMEM, lambda: env.fd.ioas_map(ioas, env.buf, 0x4000), d)
    assert d.unmap_calls[-1][1] == 0x2000  # the two pages that went in came out


# ---------------------------------------------------------------------- large pages
def runs(pas: list[int]) -> int:
    return 1 + sum(1 for a, b in itertools.pairwise(pas) if b != a + P)


def test_large_pages_map_contiguous_pages_in_one_call(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    env.user.write(env.buf, bytes(0x10000))  # fault in, in order
    pas = [env.mm.translate(env.buf + o) for o in range(0, 0x10000, P)]
    d = FakeDomain()
    t.add_domain(d)
    env.fd.ioas_map(ioas, env.buf, 0x10000, iova=0x200000)
    assert len(d.map_calls) == runs(pas)
    t.remove_domain(d)
    env.fd.ioas_unmap_all(ioas)
    env.fd.option_set(uapi.IOMMU_OPTION_HUGE_PAGES, 0, ioas)
    d2 = FakeDomain()
    t.add_domain(d2)
    env.fd.ioas_map(ioas, env.buf, 0x10000, iova=0x200000)
    assert len(d2.map_calls) == 16 and d2.table() == expected_table(env, env.buf, 0x200000, 0x10000)


def test_sub_page_domain_maps_the_page_offset(env: Any) -> None:
    # A 2 KiB-page domain (the selftest's mock): areas may start inside a page.
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    d = FakeDomain(pgsize_bitmap=0x800 | 0x1000)
    t.add_domain(d)
    assert t.iova_alignment == 0x800
    env.fd.ioas_map(ioas, env.buf + 0x800, 0x1000, iova=0x10800)
    pa0, pa1 = env.mm.translate(env.buf), env.mm.translate(env.buf + P)
    assert d.table() == {0x10800: pa0 + 0x800, 0x11000: pa1}


# ---------------------------------------------------------------------- RISC-V hardware
def test_a_device_dma_goes_through_the_ioas_mapping() -> None:
    k = riscv_kernel()
    mm = k.new_process("vmm")
    fd = Iommufd.over_mm(mm)
    buf = mm.mmap(0x4000, 3, addr=0x4000_0000, fixed=True)
    mm.write(buf + 0x1008, b"guest ram")
    ioas = fd.ioas_alloc()
    iova = fd.ioas_map(ioas, buf, 0x4000, iova=0x20_0000)
    dev = k.device("nic")
    domain = k.core.domain_alloc_paging(dev)
    k.core.attach_device(domain, dev)
    t = fd.file.objects.get(ioas).iopt  # type: ignore[attr-defined]
    t.add_domain(domain)
    assert t.reserved[0][0].start == domain.aperture_end + 1
    ep = k.system.endpoint("nic")
    assert ep.dma_read(iova + 0x1008, 9).data == b"guest ram"
    assert ep.dma_write(iova + 0x2000, b"from the nic").ok
    assert mm.read(buf + 0x2000, 12) == b"from the nic"
    # A second area added after the domain, then unmapped: the DMA faults again.
    iova2 = fd.ioas_map(ioas, buf, P)
    assert ep.dma_read(iova2 + 8, 5).data == b"\0" * 5
    fd.ioas_unmap(ioas, iova2, P)
    assert not ep.dma_read(iova2, 4).ok
    t.remove_domain(domain)
    assert not ep.dma_read(iova, 4).ok and fd.file.user.pins == {}  # type: ignore[attr-defined]
    k.core.detach_device(domain, dev)
    k.core.domain_free(domain)


def test_a_page_beyond_the_domains_output_range_is_einval(env: Any) -> None:
    ioas = env.fd.ioas_alloc()
    t = iopt_of(env, ioas)
    env.fd.ioas_map(ioas, env.buf, 0x2000, iova=0x10000)
    env.fd.ioas_map(ioas, env.buf + 0x10000, P, iova=0x20000)
    env.user.write(env.buf, bytes(0x2000))
    d = FakeDomain()
    d.pa_limit = env.mm.translate(env.buf + P)  # the second page is out of reach
    fails(env, InvalidArgument, errno.EINVAL, lambda: t.add_domain(d), d)
