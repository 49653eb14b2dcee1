"""The program's own files for IOAS_MAP_FILE (hostproc/files.py), on this test's memfd: the
pinned pages are the mirror's pages of the file -- the ones a shared mapping of it gets --
with its bytes as of the pin, CPU copies read the file itself, a pin past the end is EINVAL
and a descriptor that is not open is EBADF."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

import pytest

from iommusim.errors import ApiError
from iommusim.hostproc.memory import HostUserMemory, Mirror
from iommusim.mem import SparseMemory

PAGE = 4096
FILES = 14 << 47


def test_a_memfd_pins_at_its_file_pages_like_a_shared_mapping_of_it() -> None:
    fd = os.memfd_create("iommusim-test")
    try:
        os.ftruncate(fd, 2 * PAGE)
        os.pwrite(fd, b"file page 1", PAGE)
        mirror = Mirror(SparseMemory(), FILES, 16)
        user = HostUserMemory(os.getpid(), mirror, 3 << 47)
        src = user.files.get(fd)
        [pa] = src.pin_pages(PAGE, 1, write=True)
        assert mirror.mem.read(pa, 11) == b"file page 1"
        assert mirror.pins[pa] == 1
        with mmap.mmap(fd, 2 * PAGE) as m:  # a shared mapping of the same file
            addr = _address(m)
            [pa2] = user.pin_pages(addr + PAGE, 1, write=False)
            assert pa2 == pa and mirror.pins[pa] == 2  # one page, counted once per pin
            user.unpin_pages(addr + PAGE, 1)
        os.pwrite(fd, b"FILE", PAGE)
        assert src.phys.read(pa, 4) == b"FILE"  # CPU copies see the file now
        src.unpin_pages(PAGE, 1)
        assert pa not in mirror.pins
        with pytest.raises(ApiError) as e:
            src.pin_pages(2 * PAGE, 1, write=False)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(ApiError) as e:
            user.files.get(9999)
        assert e.value.errno == errno.EBADF
    finally:
        os.close(fd)


def _address(m: mmap.mmap) -> int:
    view = ctypes.c_char.from_buffer(m)
    addr = ctypes.addressof(view)
    del view  # let the mapping close
    return addr
