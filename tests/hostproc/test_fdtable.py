"""The program's fds as the model's fd table: numbers are the caller's, lookups ask it."""

from __future__ import annotations

import pytest

from iommusim.errors import BadFileDescriptor, ModelError
from iommusim.hostproc.fdtable import HostFdTable


class FakeCaller:
    """A program whose fd table maps numbers to socket names."""

    def __init__(self) -> None:
        self.fds: dict[int, bytes] = {}
        self.closed: list[int] = []

    def install(self) -> tuple[int, bytes]:
        fd = min(set(range(3, 100)) - set(self.fds))
        self.fds[fd] = f"\0sock{fd}".encode()
        return fd, self.fds[fd]

    def lookup(self, fd: int) -> bytes:
        return self.fds.get(fd, b"")

    def close_fd(self, fd: int) -> None:
        self.closed.append(fd)
        del self.fds[fd]


class Ops:
    def __init__(self) -> None:
        self.released = 0

    def fops_read(self, count: int, ppos: int) -> bytes:
        return b"r" * min(count, 3)

    def fops_write(self, data: bytes, ppos: int) -> int:
        return len(data)

    def fops_poll(self) -> int:
        return 1

    def fops_release(self) -> None:
        self.released += 1


@pytest.fixture
def table() -> HostFdTable:
    t = HostFdTable()
    t.caller = FakeCaller()
    return t


def test_install_takes_the_programs_lowest_free_fd(table: HostFdTable) -> None:
    caller = table.caller
    assert isinstance(caller, FakeCaller)
    caller.fds[3] = b"something else"
    f = table.install("[iommufd-pgfault]", Ops())
    assert f.fd == 4
    assert table[4] is f
    assert 4 in table and 3 not in table and len(table) == 1


def test_a_dup_names_the_same_file(table: HostFdTable) -> None:
    f = table.install("q", Ops())
    caller = table.caller
    assert isinstance(caller, FakeCaller)
    caller.fds[9] = caller.fds[f.fd]
    assert table[9] is f
    assert table.fds() == [9]


def test_an_fd_that_is_not_ours_is_ebadf(table: HostFdTable) -> None:
    with pytest.raises(BadFileDescriptor):
        table[5]


def test_the_model_closing_an_fd_closes_it_in_the_program_and_releases(table: HostFdTable) -> None:
    ops = Ops()
    f = table.install("q", ops)
    table.close(f.fd)
    caller = table.caller
    assert isinstance(caller, FakeCaller)
    assert caller.closed == [3] and ops.released == 1 and len(table) == 0
    with pytest.raises(BadFileDescriptor):
        f.read(1)


def test_release_runs_once(table: HostFdTable) -> None:
    ops = Ops()
    f = table.install("q", ops)
    assert f.read(8) == b"rrr" and f.poll() == 1
    table.release(f)
    table.release(f)
    assert ops.released == 1


def test_the_table_is_only_used_inside_a_call() -> None:
    with pytest.raises(ModelError):
        HostFdTable().install("q", Ops())
