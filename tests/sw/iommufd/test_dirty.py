"""Dirty tracking over the io_pagetable (io_pagetable.c ``iopt_set_dirty_tracking``,
``iopt_read_and_clear_dirty_data``, ``iommufd_check_iova_range``; iova_bitmap.c) with a
test-double domain that has dirty ops."""

from __future__ import annotations

import errno
from typing import Any, Final

import pytest

from iommusim.errors import InvalidArgument, NotSupported, OutOfMemory, Overflow
from iommusim.sw.iommufd.dirty import (
    IOMMU_DIRTY_NO_CLEAR,
    read_and_clear_dirty_data,
    set_dirty_tracking,
)
from iommusim.sw.iommufd.iopt import ULONG_MAX, IoPagetable
from testsupport.iommufd import FakeDomain

P: Final = 0x1000
BASE: Final = 0x100000


def setup(env: Any, npages: int = 8) -> tuple[IoPagetable, FakeDomain, int]:
    ioas = env.fd.ioas_alloc()
    t = env.ioas(ioas).iopt
    d = FakeDomain(dirty=True)
    t.add_domain(d)
    env.fd.ioas_map(ioas, env.buf, npages * P, iova=BASE)
    bitmap = env.fd.scratch_va
    env.user.write(bitmap, bytes(64))
    return t, d, bitmap


def bits(env: Any, va: int, n: int = 8) -> int:
    return int.from_bytes(env.user.read(va, n), "little")


def read(env: Any, t: IoPagetable, d: FakeDomain, va: int, **kw: int) -> None:
    args = {"flags": 0, "iova": BASE, "length": 8 * P, "page_size": P} | kw
    read_and_clear_dirty_data(
        t, d, args["flags"], args["iova"], args["length"], args["page_size"], va, env.user
    )


def test_set_dirty_tracking_clears_first(env: Any) -> None:
    t, d, _ = setup(env)
    d.dirty_pages = {BASE, BASE + 3 * P, 0x9000_0000}  # the last is no area's
    set_dirty_tracking(t, d, True)
    assert d.tracking and d.dirty_pages == {0x9000_0000}
    d.dirty_pages.add(BASE)
    set_dirty_tracking(t, d, False)  # disabling clears nothing
    assert not d.tracking and BASE in d.dirty_pages


def test_set_dirty_tracking_errors(env: Any) -> None:
    t, d, _ = setup(env)
    plain = FakeDomain()
    t.add_domain(plain)
    with pytest.raises(NotSupported) as info:
        set_dirty_tracking(t, plain, True)
    assert info.value.errno == errno.EOPNOTSUPP
    d.fail_dirty = True
    with pytest.raises(OutOfMemory):
        set_dirty_tracking(t, d, True)
    assert not d.tracking


def test_read_and_clear_sets_one_bit_per_page_size(env: Any) -> None:
    t, d, va = setup(env)
    d.dirty_pages = {BASE, BASE + 2 * P, BASE + 7 * P}
    read(env, t, d, va, flags=IOMMU_DIRTY_NO_CLEAR)
    assert bits(env, va) == 0b1000_0101 and len(d.dirty_pages) == 3
    env.user.write(va, bytes(8))
    read(env, t, d, va, page_size=2 * P)  # one bit per two pages
    assert bits(env, va) == 0b1011 and d.dirty_pages == set()
    env.user.write(va, bytes(8))
    read(env, t, d, va)
    assert bits(env, va) == 0


def test_bits_are_or_ed_and_little_endian_words(env: Any) -> None:
    t, d, va = setup(env, npages=80)
    env.user.write(va, (1 << 1).to_bytes(16, "little"))  # bit 1 set already
    d.dirty_pages = {BASE + 70 * P}
    read(env, t, d, va, length=80 * P)
    words = env.user.read(va, 16)
    assert int.from_bytes(words[:8], "little") == 1 << 1
    assert int.from_bytes(words[8:], "little") == 1 << 6  # bit 70 is word 1 bit 6


def test_the_walk_stops_at_a_hole(env: Any) -> None:
    t, d, va = setup(env, npages=2)
    env.fd.ioas_map(t_ioas(env, t), env.buf + 0x10000, P, iova=BASE + 3 * P)
    d.dirty_pages = {BASE, BASE + 3 * P}
    read(env, t, d, va, length=4 * P)  # no error: the kernel drops the walk's EINVAL
    assert bits(env, va) == 1 and d.dirty_pages == {BASE + 3 * P}


def t_ioas(env: Any, t: IoPagetable) -> int:
    return next(o.id for o in env.fd.file.objects if env.ioas(o.id).iopt is t)


def test_an_unwritable_bitmap_loses_its_bits(env: Any) -> None:
    t, d, _ = setup(env)
    d.dirty_pages = {BASE}
    read(env, t, d, env.ro)  # read-only user memory
    assert d.dirty_pages == set() and env.user.read(env.ro, 1) == b"\0"


def test_read_and_clear_errors_change_nothing(env: Any) -> None:
    t, d, va = setup(env)
    d.dirty_pages = {BASE}
    cases: list[tuple[type, int, dict[str, int]]] = [
        (InvalidArgument, errno.EINVAL, {"length": 0}),
        (Overflow, errno.EOVERFLOW, {"iova": ULONG_MAX - P + 1, "length": 2 * P}),
        (InvalidArgument, errno.EINVAL, {"iova": BASE + 0x800}),  # IOAS alignment 4 KiB
        (InvalidArgument, errno.EINVAL, {"length": 8 * P + 0x800}),
        (InvalidArgument, errno.EINVAL, {"page_size": 0}),
        (InvalidArgument, errno.EINVAL, {"page_size": 0x2000, "iova": BASE + P}),
        (InvalidArgument, errno.EINVAL, {"page_size": 0x4000, "length": 6 * P}),
    ]
    for exc, code, kw in cases:
        with pytest.raises(exc) as info:
            read(env, t, d, va, **kw)
        assert info.value.errno == code, kw
        assert d.dirty_pages == {BASE} and bits(env, va) == 0
    plain = FakeDomain()
    with pytest.raises(NotSupported):
        read(env, t, plain, va)
    d.fail_dirty = True
    read(env, t, d, va)  # the domain's error is dropped, as in the kernel
    assert bits(env, va) == 0
