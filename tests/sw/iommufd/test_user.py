"""User memory over a model process (pin_user_pages semantics) and the iopt_pages pin
counts on top of it (drivers/iommu/iommufd/pages.c)."""

from __future__ import annotations

from typing import Any, Final

import pytest

from iommusim.errors import BadAddress, InvalidArgument, ModelError, OutOfMemory
from iommusim.mem import SparseMemory
from iommusim.sw.iommufd import Iommufd, IommufdFile, IoPages, IovaRange, MmUserMemory
from iommusim.sw.iommufd.pages import ACCOUNT_USER
from iommusim.sw.mm import PROT_READ, PROT_WRITE, Mm
from iommusim.sw.pages import PageAllocator

P: Final = 0x1000


def test_pin_faults_pages_in_and_counts_per_page(env: Any) -> None:
    u = env.user
    pas = u.pin_pages(env.buf, 2, True)
    assert pas == [env.mm.translate(env.buf), env.mm.translate(env.buf + P)]
    assert u.pin_pages(env.buf + P, 1, False) == [pas[1]]
    assert u.pins == {env.buf: (pas[0], 1), env.buf + P: (pas[1], 2)}
    u.unpin_pages(env.buf, 2)
    assert u.pins == {env.buf + P: (pas[1], 1)}


def test_a_pin_that_faults_changes_nothing(env: Any) -> None:
    u = env.user
    before = env.mm.resident
    with pytest.raises(BadAddress):
        u.pin_pages(env.buf + (1 << 20) - P, 2, False)  # the second page is not mapped
    with pytest.raises(BadAddress):
        u.pin_pages(env.ro, 1, True)  # write pin of a read-only area
    assert u.pins == {} and env.mm.resident == before
    assert len(u.pin_pages(env.ro, 1, False)) == 1


def test_pin_and_unpin_refuse_bad_arguments(env: Any) -> None:
    u = env.user
    with pytest.raises(InvalidArgument):
        u.pin_pages(env.buf + 8, 1, False)
    with pytest.raises(InvalidArgument):
        u.pin_pages(env.buf, 0, False)
    u.pin_pages(env.buf, 1, False)
    with pytest.raises(InvalidArgument):
        u.unpin_pages(env.buf, 2)  # the second page is not pinned: nothing is unpinned
    assert u.pin_count(env.buf) == 1


def test_a_pin_running_out_of_memory_keeps_no_pin() -> None:
    mem = SparseMemory()
    mm = Mm(mem, PageAllocator(mem, 0x8000_0000, 8 * P), "sv39")
    va = mm.mmap(16 * P, PROT_READ | PROT_WRITE)
    u = MmUserMemory(mm)
    with pytest.raises(OutOfMemory):
        u.pin_pages(va, 16, True)
    assert mm.resident  # it failed part-way: earlier pages were faulted in and pinned
    assert u.pins == {}


def test_read_and_write_are_copy_from_and_to_user(env: Any) -> None:
    env.user.write(env.buf + 5, b"abc")
    assert env.user.read(env.buf + 4, 5) == b"\0abc\0"
    with pytest.raises(BadAddress):
        env.user.read(0x1000, 1)


def test_io_pages_pin_is_shared_per_page_and_rolls_back(env: Any) -> None:
    pages = IoPages(env.user, env.buf + (1 << 20) - 3 * P, 4, False, ACCOUNT_USER)
    pages.pin(1, 1)
    before = env.user.pins
    with pytest.raises(BadAddress):
        pages.pin(0, 3)  # runs [0] and [2, 3]; page 3 is past the buffer
    assert env.user.pins == before and pages.pinned().keys() == {1}
    pages.pin(0, 2)
    assert {i: n for i, (_, n) in pages.pinned().items()} == {0: 1, 1: 2, 2: 1}
    assert all(n == 1 for _, n in env.user.pins.values())
    pages.unpin(1, 1)
    assert pages.npinned == 3
    pages.put()
    assert env.user.pins == {} and pages.refs == 0


def test_io_pages_misuse_is_a_model_error(env: Any) -> None:
    pages = IoPages(env.user, env.buf, 2, True, ACCOUNT_USER)
    with pytest.raises(ModelError):
        pages.pin(0, 2)
    with pytest.raises(ModelError):
        pages.unpin(0, 0)
    pages.put()
    with pytest.raises(ModelError):
        pages.put()
    with pytest.raises(ModelError):
        pages.get()


def test_the_pythonic_layer_needs_scratch_memory_only_for_arrays(env: Any) -> None:
    fd = Iommufd(IommufdFile(env.user))
    ioas = fd.ioas_alloc()
    fd.ioas_allow_iovas(ioas, [])
    assert fd.ioas_map(ioas, env.buf, P, iova=0) == 0  # a fixed IOVA may be 0
    with pytest.raises(InvalidArgument, match="scratch"):
        fd.ioas_iova_ranges(ioas)
    with pytest.raises(InvalidArgument, match="scratch"):
        fd.ioas_allow_iovas(ioas, [IovaRange(0x1000, 0x1FFF)])
