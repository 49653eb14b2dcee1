"""IOMMU_IOAS_MAP_FILE over a memfd-like file (ioas.c ``iommufd_ioas_map_file``,
io_pagetable.c ``iopt_map_file_pages``, pages.c ``iopt_alloc_file_pages``), the process's
fd table, shared mappings of the file, and IOMMU_IOAS_CHANGE_PROCESS for file areas."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.errors import (
    BadAddress,
    BadFileDescriptor,
    Exists,
    InvalidArgument,
    NotFound,
    NotSupported,
    Overflow,
)
from iommusim.sw.iommufd import Iommufd, MmUserMemory, uapi
from iommusim.sw.iommufd.access import ACCESS_RW_WRITE, Access
from iommusim.sw.iommufd.memfd import FIRST_FD, FdTable, MemFd
from iommusim.sw.mm import PROT_READ, PROT_WRITE, Mm
from testsupport.iommufd import FakeDomain, riscv_kernel

P: Final = 0x1000
U64: Final = (1 << 64) - 1
RW: Final = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
MAP_FILE: Final = uapi.IOMMU_IOAS_MAP_FILE
CP: Final = uapi.IOMMU_IOAS_CHANGE_PROCESS


class RwOnly:
    """An access that only copies (no pins, so nothing to unmap)."""

    needs_pin_pages = False

    def unmap(self, iova: int, length: int) -> None:
        pass


def memfd(env: Any, size: int = 0x10000) -> tuple[MemFd, int]:
    f = MemFd(env.mm.mem, env.mm.pages, size)
    return f, env.user.files.install(f)


# ---------------------------------------------------------------------- the file
def test_a_shared_mapping_shows_the_files_pages(env: Any) -> None:
    f, _ = memfd(env, 0x3000)
    va = env.mm.mmap(0x3000, PROT_READ | PROT_WRITE, file=f)
    env.mm.write(va + 0x1FFE, b"abcd")
    assert f.read(0x1FFE, 4) == b"abcd"
    f.write(0x10, b"file")
    assert env.mm.read(va + 0x10, 4) == b"file"
    assert env.mm.translate(va + P) == f.resident[P]
    # A second mapping from offset P sees the same pages.
    va2 = env.mm.mmap(0x2000, PROT_READ, file=f, offset=P)
    assert env.mm.read(va2 + 0xFFE, 4) == b"abcd"
    free = env.mm.pages.nr_free
    env.mm.munmap(va, 0x3000)
    assert env.mm.pages.nr_free == free and len(f.resident) == 3  # the file keeps them
    env.mm.exit()
    assert all(env.mm.pages.order_of(pa) == 0 for pa in f.resident.values())  # still allocated
    assert f.read(0x1FFE, 4) == b"abcd"


def test_file_errors(env: Any) -> None:
    f, _ = memfd(env, 0x2000)
    with pytest.raises(BadAddress):
        f.read(0x1FFF, 2)
    with pytest.raises(BadAddress):
        f.write(0x2000, b"x")
    with pytest.raises(InvalidArgument):
        f.pin_pages(0x2000, 1, False)
    with pytest.raises(InvalidArgument):
        env.mm.mmap(P, PROT_READ, file=f, offset=0x800)
    va = env.mm.mmap(0x4000, PROT_READ, file=f)
    with pytest.raises(BadAddress):  # past the end of the file: SIGBUS
        env.mm.read(va + 0x2000, 1)
    assert not env.mm.fault_in(va + 0x3000)
    assert f.read(0, 4) == bytes(4) and f.resident == {}  # holes read as zeros


def test_truncate_keeps_pinned_pages_until_unpinned(env: Any) -> None:
    f, _ = memfd(env, 0x2000)
    pas = f.pin_pages(0, 2, True)
    free = env.mm.pages.nr_free
    f.truncate(P)
    assert f.resident == {0: pas[0]} and env.mm.pages.nr_free == free
    f.unpin_pages(P, 1)
    assert env.mm.pages.nr_free == free + 1
    f.unpin_pages(0, 1)
    assert f.pins == {}
    with pytest.raises(InvalidArgument):
        f.unpin_pages(0, 1)


def test_fd_table() -> None:
    t = FdTable()
    a = MemFd.__new__(MemFd)
    assert t.install(a) == FIRST_FD and t.install(a) == FIRST_FD + 1
    t.close(FIRST_FD)
    assert t.install(a) == FIRST_FD and t.get(FIRST_FD) is a
    for bad in (0, 99):
        with pytest.raises(BadFileDescriptor) as info:
            t.get(bad)
        assert info.value.errno == errno.EBADF
    with pytest.raises(BadFileDescriptor):
        t.close(99)


# ---------------------------------------------------------------------- MAP_FILE
def test_map_file_maps_the_files_pages(env: Any) -> None:
    f, fd = memfd(env)
    f.write(0x2004, b"memfd")
    ioas = env.fd.ioas_alloc()
    iova = env.fd.ioas_map_file(ioas, fd, 0x2000, 0x3000)
    assert iova % 0x2000 == 0  # aligned as the file offset is
    area = env.ioas(ioas).iopt.areas[0]
    assert area.pages.file and area.pages.uptr == 0x2000 and area.pages.owner is env.user
    assert f.pins == {}  # lazily, without a domain
    d = FakeDomain()
    env.ioas(ioas).iopt.add_domain(d)
    assert d.table() == {iova + o: f.resident[0x2000 + o] for o in range(0, 0x3000, P)}
    assert f.pins == {0x2000: 1, 0x3000: 1, 0x4000: 1}
    # Read through an access (the file path is iopt_pages_rw_slow).
    access = Access.create(env.fd.file.objects, RwOnly())
    access.attach(ioas)
    out = bytearray(5)
    access.rw(iova + 4, out)
    assert out == b"memfd"
    access.rw(iova + P, bytearray(b"dma"), ACCESS_RW_WRITE)
    assert f.read(0x3000, 3) == b"dma"
    access.detach()
    env.fd.ioas_unmap_all(ioas)
    assert f.pins == {}


def test_map_file_at_an_offset_inside_a_page(env: Any) -> None:
    _f, fd = memfd(env)
    ioas = env.fd.ioas_alloc()
    iova = env.fd.ioas_map_file(ioas, fd, 0x1010, 0x100, iova=0x50010)
    area = env.ioas(ioas).iopt.areas[0]
    assert (iova, area.start_byte, area.pages.uptr, area.pages.npages) == (0x50010, 0x10, P, 1)


def test_map_file_errors_change_nothing(env: Any) -> None:
    _f, fd = memfd(env)
    ioas = env.fd.ioas_alloc()
    env.fd.ioas_map(ioas, env.buf, P, iova=0x10000)

    def m(**kw: int) -> Any:
        fields = {"flags": RW, "ioas_id": ioas, "fd": fd, "start": 0, "length": P} | kw
        return lambda: env.ioctl(MAP_FILE, **fields)

    F = uapi.IOMMU_IOAS_MAP_FIXED_IOVA
    env.fails(NotSupported, errno.EOPNOTSUPP, m(flags=RW | 8))
    env.fails(Overflow, errno.EOVERFLOW, m(iova=U64))
    env.fails(Overflow, errno.EOVERFLOW, m(length=U64))
    env.fails(InvalidArgument, errno.EINVAL, m(flags=F))
    env.fails(NotFound, errno.ENOENT, m(ioas_id=77))
    env.fails(InvalidArgument, errno.EINVAL, m(length=0))
    env.fails(Overflow, errno.EOVERFLOW, m(start=U64 - 10, length=P))
    env.fails(BadFileDescriptor, errno.EBADF, m(fd=-1))
    env.fails(BadFileDescriptor, errno.EBADF, m(fd=fd + 1))
    env.fails(InvalidArgument, errno.EINVAL, m(length=U64 - 1))  # SIZE_MAX - PAGE_SIZE
    env.fails(Exists, errno.EEXIST, m(flags=RW | F, iova=0x10000))
    env.fails(InvalidArgument, errno.EINVAL, lambda: env.ioctl(MAP_FILE, size=16))


def test_past_the_end_of_the_file_fails_when_pinned(env: Any) -> None:
    # The selftest's mock_domain file test: EINVAL from memfd_pin_folios with a domain.
    f, fd = memfd(env, 0x4000)
    ioas = env.fd.ioas_alloc()
    env.ioas(ioas).iopt.add_domain(FakeDomain())
    m = lambda n: lambda: env.fd.ioas_map_file(ioas, fd, 0, n)  # noqa: E731
    env.fails(InvalidArgument, errno.EINVAL, m(0x4001))
    f.truncate(0)
    env.fails(InvalidArgument, errno.EINVAL, m(0x4000))
    f.truncate(0x4000)
    env.fd.ioas_map_file(ioas, fd, 0, 0x4000)


def test_a_device_dma_reaches_the_file() -> None:
    k = riscv_kernel()
    mm = k.new_process("vmm")
    fd = Iommufd.over_mm(mm)
    f = MemFd(k.system.bus, k.pages, 0x4000)
    nfd = fd.file.user.files.install(f)
    va = mm.mmap(0x4000, PROT_READ | PROT_WRITE, file=f)
    mm.write(va + 0x1000, b"guest page")
    ioas = fd.ioas_alloc()
    iova = fd.ioas_map_file(ioas, nfd, 0, 0x4000, iova=0x10_0000)
    dev = k.device("nic")
    domain = k.core.domain_alloc_paging(dev)
    k.core.attach_device(domain, dev)
    fd.file.objects.get(ioas).iopt.add_domain(domain)  # type: ignore[attr-defined]
    ep = k.system.endpoint("nic")
    assert ep.dma_read(iova + 0x1000, 10).data == b"guest page"
    assert ep.dma_write(iova + 0x3000, b"nic").ok
    assert mm.read(va + 0x3000, 3) == b"nic" == f.read(0x3000, 3)


# ---------------------------------------------------------------------- CHANGE_PROCESS
def test_change_process_moves_file_pages_to_the_caller(env: Any) -> None:
    _f, fd = memfd(env)
    a, b = env.fd.ioas_alloc(), env.fd.ioas_alloc()
    env.fd.ioas_map_file(a, fd, 0, P)
    env.fd.ioas_map_file(b, fd, P, P)
    assert env.ioctl(CP)[0] == 0  # the same process: nothing moves
    # The file is handed to another process, which asks for the pages.
    other = MmUserMemory(Mm(env.mm.mem, env.mm.pages, "sv48", name="child"))
    env.fd.file.user = other
    assert env.ioctl(CP)[0] == 0
    owners = [ar.pages.owner for x in (a, b) for ar in env.ioas(x).iopt.areas]
    assert owners == [other, other]
    env.fd.file.user = env.user  # back to the parent, which maps user memory
    env.fd.ioas_map(b, env.buf, P, iova=0x80000)
    before = env.snapshot()
    with pytest.raises(InvalidArgument):
        env.ioctl(CP)
    assert env.snapshot() == before
    assert [ar.pages.owner for ar in env.ioas(a).iopt.areas] == [other]
