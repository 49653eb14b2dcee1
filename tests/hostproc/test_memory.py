"""User memory of a real process (this test's own): copies stop at the faulting page, pins
are mirrored at base + va with their bytes as of the first pin."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator

import pytest

from iommusim.errors import BadAddress, InvalidArgument
from iommusim.hostproc.memory import HostUserMemory, Mirror, ProcessMemory
from iommusim.mem import SparseMemory

PAGE = 4096
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)  # fmt: skip
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20


@pytest.fixture
def pages() -> Iterator[int]:
    """Four private pages: 0-1 read-write, 2 read-only, 3 inaccessible."""
    va = _libc.mmap(None, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    assert va not in (None, ctypes.c_void_p(-1).value)
    ctypes.memset(va, 0x11, 3 * PAGE)
    assert _libc.mprotect(va + 2 * PAGE, PAGE, PROT_READ) == 0
    assert _libc.mprotect(va + 3 * PAGE, PAGE, PROT_NONE) == 0
    yield va
    _libc.munmap(va, 4 * PAGE)


def test_read_and_write_reach_the_process(pages: int) -> None:
    m = ProcessMemory(os.getpid())
    m.write(pages + 10, b"hello")
    assert ctypes.string_at(pages + 10, 5) == b"hello"
    assert m.read(pages + 8, 4) == b"\x11\x11he"


def test_a_read_ends_at_the_first_unreadable_page(pages: int) -> None:
    m = ProcessMemory(os.getpid())
    assert len(m.read_upto(pages + 2 * PAGE + 100, 2 * PAGE)) == PAGE - 100
    with pytest.raises(BadAddress):
        m.read(pages + 3 * PAGE - 1, 2)


def test_a_read_only_page_cannot_be_written(pages: int) -> None:
    m = ProcessMemory(os.getpid())
    with pytest.raises(BadAddress):
        m.write(pages + 2 * PAGE, b"x")
    assert ctypes.string_at(pages + 2 * PAGE, 1) == b"\x11"


FILES = 14 << 47


def _mirror() -> Mirror:
    return Mirror(SparseMemory(), FILES, 2048)


def _user() -> HostUserMemory:
    return HostUserMemory(os.getpid(), _mirror(), 3 << 47)


def test_pinned_pages_are_mirrored_at_base_plus_va(pages: int) -> None:
    user = _user()
    assert user.pin_pages(pages, 2, True) == [user.base + pages, user.base + pages + PAGE]
    assert user.pin_count(pages + 5) == 1
    assert user.mirror.mem.read(user.base + pages, 4) == b"\x11" * 4


def test_a_second_pin_counts_and_keeps_the_first_snapshot(pages: int) -> None:
    user = _user()
    user.pin_pages(pages, 1, False)
    ctypes.memset(pages, 0x22, 4)
    assert user.pin_pages(pages, 1, False) == [user.base + pages]
    assert user.pin_count(pages) == 2
    assert user.mirror.mem.read(user.base + pages, 1) == b"\x11"
    # CPU-side copies read the process, so they see the later write.
    assert user.read(pages, 1) == b"\x22"
    user.unpin_pages(pages, 1)
    assert user.pin_count(pages) == 1


def test_a_write_pin_of_a_read_only_page_pins_nothing(pages: int) -> None:
    user = _user()
    with pytest.raises(BadAddress):
        user.pin_pages(pages + PAGE, 2, True)
    assert user.pinned_pages == 0
    assert user.pin_pages(pages + 2 * PAGE, 1, False) == [user.base + pages + 2 * PAGE]


def test_a_pin_of_an_inaccessible_page_pins_nothing(pages: int) -> None:
    user = _user()
    with pytest.raises(BadAddress):
        user.pin_pages(pages + 2 * PAGE, 2, False)
    assert user.pinned_pages == 0


def test_pins_need_aligned_pages_and_unpins_existing_ones(pages: int) -> None:
    user = _user()
    with pytest.raises(InvalidArgument):
        user.pin_pages(pages + 1, 1, False)
    user.pin_pages(pages, 1, False)
    with pytest.raises(InvalidArgument):
        user.unpin_pages(pages, 2)
    assert user.pin_count(pages) == 1


MAP_SHARED = 0x01


def test_pinned_shared_pages_outlive_the_process_that_pinned_them() -> None:
    """The selftest's fork_gone: a child pins shared memory and exits; copies of its pinned
    pages then go to the pages themselves, which the parent still maps."""
    va = _libc.mmap(None, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
    ctypes.memset(va, 0x33, 2 * PAGE)
    r, w = os.pipe()
    child = os.fork()
    if not child:  # pragma: no cover - the child only waits to be killed
        os.read(r, 1)
        os._exit(0)
    try:
        user = HostUserMemory(child, _mirror(), 1 << 47)
        user.pin_pages(va, 1, True)
    finally:
        os.write(w, b"x")
        os.waitpid(child, 0)
        os.close(r)
        os.close(w)
    assert not user.alive()
    ctypes.memset(va, 0x44, 8)
    assert user.read(va, 4) == b"\x44" * 4
    user.write(va + 100, b"via the child")
    assert ctypes.string_at(va + 100, 13) == b"via the child"
    with pytest.raises(BadAddress):  # the second page was never pinned
        user.read(va + PAGE, 1)
    user.unpin_pages(va, 1)
    with pytest.raises(BadAddress):
        user.read(va, 1)
    _libc.munmap(va, 2 * PAGE)


def test_every_mapping_of_a_shared_page_is_one_physical_page() -> None:
    """A memfd mapped twice (and, through fork, in two processes): one page, one pin count,
    at the file's offset in the mirror."""
    fd = os.memfd_create("iommusim-test")
    os.ftruncate(fd, 2 * PAGE)
    a = _libc.mmap(None, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    b = _libc.mmap(None, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PAGE)
    try:
        user = _user()
        (pa,) = user.pin_pages(a + PAGE, 1, True)
        assert pa == FILES + PAGE
        assert user.pin_pages(b, 1, False) == [pa]
        assert user.pin_count(a + PAGE) == 2 and user.pin_count(b) == 2
        other = HostUserMemory(os.getpid(), user.mirror, 5 << 47)
        assert other.pin_count(b) == 2
        user.unpin_pages(b, 1)
        assert user.pin_count(a + PAGE) == 1
        assert user.pin_pages(a, 2, False) == [FILES, pa]
    finally:
        _libc.munmap(a, 2 * PAGE)
        _libc.munmap(b, PAGE)
        os.close(fd)


def test_mappings_are_read_once_per_call() -> None:
    fd = os.memfd_create("iommusim-test")
    os.ftruncate(fd, PAGE)
    user = _user()
    user.begin_call()
    a = _libc.mmap(None, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    try:
        assert user.pin_pages(a, 1, False) == [FILES]
        b = _libc.mmap(None, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        # Within the call the new mapping is unknown (a private page); the next call sees it.
        assert user.pin_count(b) == 0
        user.begin_call()
        assert user.pin_count(b) == 1
        _libc.munmap(b, PAGE)
    finally:
        _libc.munmap(a, PAGE)
        os.close(fd)
