"""The fd table of the files iommufd hands out: numbers as ``alloc_fd`` gives them (lowest
free), the VFS checks of ``vfs_read``/``vfs_write`` (``fs/read_write.c``), ``close``."""

from __future__ import annotations

import errno

import pytest

from iommusim.errors import BadFileDescriptor, InvalidArgument, TooManyOpenFiles
from iommusim.sw.iommufd.fds import FD_BASE, FD_LIMIT, MAX_RW_COUNT, POLLIN, POLLOUT, FdTable


class Recorder:
    """File operations that record what reached them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.released = 0

    def fops_read(self, count: int, ppos: int) -> bytes:
        self.calls.append(("read", count, ppos))
        return b"x" * min(count, 3)

    def fops_write(self, data: bytes, ppos: int) -> int:
        self.calls.append(("write", len(data), ppos))
        return len(data)

    def fops_poll(self) -> int:
        return POLLIN | POLLOUT

    def fops_release(self) -> None:
        self.released += 1


def test_constants_are_the_kernels() -> None:
    assert (POLLIN, POLLOUT) == (1, 4)
    assert MAX_RW_COUNT == 0x7FFF_F000
    assert (FD_BASE, FD_LIMIT) == (3, 1024)


def test_numbers_are_lowest_free_first() -> None:
    t = FdTable()
    ops = Recorder()
    fds = [t.install("[a]", ops).fd for _ in range(4)]
    assert fds == [3, 4, 5, 6]
    t.close(4)
    t.close(3)
    assert t.install("[b]", ops).fd == 3
    assert t.install("[c]", ops).fd == 4
    assert t.fds() == [3, 4, 5, 6] and len(t) == 4 and 5 in t and 7 not in t


def test_a_full_table_is_emfile_and_changes_nothing() -> None:
    t = FdTable(10, 12)
    ops = Recorder()
    t.install("[a]", ops)
    t.install("[a]", ops)
    with pytest.raises(TooManyOpenFiles) as e:
        t.install("[a]", ops)
    assert e.value.errno == errno.EMFILE and t.fds() == [10, 11]


def test_close_runs_release_once_and_unknown_fds_are_ebadf() -> None:
    t = FdTable()
    ops = Recorder()
    f = t.install("[a]", ops)
    f.close()
    assert ops.released == 1 and len(t) == 0
    for call in (lambda: t.close(f.fd), lambda: t[f.fd], f.close, f.poll):
        with pytest.raises(BadFileDescriptor) as e:
            call()
        assert e.value.errno == errno.EBADF
    assert ops.released == 1


def test_a_reused_number_is_a_new_file() -> None:
    t = FdTable()
    old = t.install("[a]", Recorder())
    old.close()
    new = t.install("[b]", Recorder())
    assert new.fd == old.fd and t[new.fd] is new
    with pytest.raises(BadFileDescriptor):
        old.read(1)


def test_read_and_write_reach_the_file_operations_with_the_count_cut() -> None:
    t = FdTable()
    ops = Recorder()
    f = t.install("[a]", ops)
    assert f.read(10) == b"xxx"
    assert f.write(b"abcd") == 4
    f.read(MAX_RW_COUNT + 1)
    assert ops.calls == [("read", 10, 0), ("write", 4, 0), ("read", MAX_RW_COUNT, 0)]
    assert f.poll() == POLLIN | POLLOUT


@pytest.mark.parametrize(
    ("count", "offset"),
    [(-1, 0), (1 << 63, 0), (1 << 64, 0), (1, -1), (1, (1 << 63) - 1), (0, 1 << 63)],
)
def test_counts_and_positions_out_of_range_are_einval(count: int, offset: int) -> None:
    t = FdTable()
    ops = Recorder()
    f = t.install("[a]", ops)
    with pytest.raises(InvalidArgument) as e:
        f.read(count, offset)
    assert e.value.errno == errno.EINVAL and ops.calls == []
