"""The server: calls from a client speaking preload.c's protocol, written in Python here and
run in this process (so the "program's memory" is this test's ctypes buffers), with the
server in a thread of its own."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iommusim.hostproc import protocol as p
from iommusim.hostproc.server import Server
from iommusim.sw.iommufd import selftest_uapi as t
from iommusim.sw.iommufd import uapi


class Client:
    """preload.c's side: one socket per file, call-backs answered."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.files: dict[int, socket.socket] = {}
        self.socks: list[socket.socket] = []

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.socks.append(s)
        s.bind("")  # autobind: an abstract name, as preload.c binds
        s.connect(self.path)
        return s

    def open(self) -> socket.socket:
        s = self.connect()
        assert self.call(s, p.OP_OPEN) == (0, 0)
        return s

    def call(
        self, s: socket.socket, op: int, a: int = 0, b: int = 0, c: int = 0, d: int = 0
    ) -> tuple[int, int]:
        s.send(p.REQ.pack(op, os.getpid(), a, b, c, d))
        while True:
            ret, err, cb, ca, _ = p.REP.unpack(s.recv(1 << 16))
            if cb == p.REP_DONE:
                return ret, err
            if cb == p.REP_INSTALL:
                f = self.connect()
                f.send(p.REQ.pack(p.OP_FILE, os.getpid(), ca, 0, 0, 0))
                self.files[f.fileno()] = f
                s.send(p.REQ.pack(p.OP_REPLY, os.getpid(), f.fileno(), 0, 0, 0))
            elif cb == p.REP_LOOKUP:
                name = self.files[ca].getsockname() if ca in self.files else b""
                s.send(p.REQ.pack(p.OP_REPLY, os.getpid(), len(name), 0, 0, 0) + name)
            elif cb == p.REP_CLOSE:
                self.files.pop(ca).close()
                s.send(p.REQ.pack(p.OP_REPLY, os.getpid(), 0, 0, 0, 0))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, Client]]:
    server = Server(str(tmp_path / "iommu.sock"))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            server.serve_once(0.01)

    th = threading.Thread(target=loop)
    th.start()
    client = Client(server.path)
    yield server, client
    for sock in client.socks:
        sock.close()
    stop.set()
    th.join()
    server.close()


def _buf(data: bytes | bytearray) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(bytes(data), len(data))


def _ioas_alloc(client: Client, s: socket.socket) -> int:
    s_ = uapi.STRUCTS["iommu_ioas_alloc"]
    buf = _buf(s_.encode({}, size=s_.size))
    assert client.call(s, p.OP_IOCTL, uapi.IOMMU_IOAS_ALLOC, ctypes.addressof(buf)) == (0, 0)
    return s_.decode(buf.raw)["out_ioas_id"]


def test_an_ioctl_reads_and_writes_the_callers_struct(served: tuple[Server, Client]) -> None:
    server, client = served
    s = client.open()
    assert _ioas_alloc(client, s) == 1
    assert server.stats.ioctls == 1 and not server.stats.errors


def test_a_failed_ioctl_answers_the_kernels_errno(served: tuple[Server, Client]) -> None:
    server, client = served
    s = client.open()
    st = uapi.STRUCTS["iommu_ioas_alloc"]
    raw = st.encode({}, size=st.min_size - 1)
    buf = _buf(raw)
    ret = client.call(s, p.OP_IOCTL, uapi.IOMMU_IOAS_ALLOC, ctypes.addressof(buf))
    assert ret == (-1, errno.EINVAL)
    assert buf.raw == raw
    assert client.call(s, p.OP_IOCTL, uapi.IOMMU_IOAS_ALLOC, 0) == (-1, errno.EFAULT)
    assert server.stats.errors == {"EINVAL": 1, "EFAULT": 1}
    assert server.stats.summary() == "iommusim: 2 ioctls served, 2 failed: EFAULT 1, EINVAL 1"


def test_the_iommufd_has_no_read_and_polls_as_a_plain_file(
    served: tuple[Server, Client],
) -> None:
    _, client = served
    s = client.open()
    buf = _buf(bytes(8))
    assert client.call(s, p.OP_READ, 8, ctypes.addressof(buf)) == (-1, errno.EINVAL)
    ret, _ = client.call(s, p.OP_POLL)
    assert ret & 0x1 and ret & 0x4


def test_a_file_the_model_hands_out_is_a_socket_at_the_callers_fd(
    served: tuple[Server, Client],
) -> None:
    server, client = served
    s = client.open()
    ioas = _ioas_alloc(client, s)
    view = t.test_cmd_view(t.IOMMU_TEST_OP_CREATE_ACCESS)
    buf = _buf(view.encode({}, size=t.TEST_CMD.size, op=t.IOMMU_TEST_OP_CREATE_ACCESS, id=ioas))
    assert client.call(s, p.OP_IOCTL, t.IOMMU_TEST_CMD, ctypes.addressof(buf)) == (0, 0)
    fd = view.decode(buf.raw)["create_access.out_access_fd"]
    assert list(client.files) == [fd]
    # The access file has no read (EINVAL), and the program's fd names it to the model.
    assert client.call(client.files[fd], p.OP_READ, 8, ctypes.addressof(buf)) == (
        -1,
        errno.EINVAL,
    )
    assert len(server.fds) == 1
    # The program's close is the file's release, complete before its next call.
    client.files.pop(fd).close()
    _ioas_alloc(client, s)
    assert len(server.fds) == 0


def test_the_last_close_releases_the_context(served: tuple[Server, Client]) -> None:
    server, client = served
    s = client.open()
    _ioas_alloc(client, s)
    (conn,) = list(server._conns.values())
    s.close()
    other = client.open()
    _ioas_alloc(client, other)
    assert conn.file is not None and conn.file.closed


def test_status_reports_the_pages_iommufd_pins_for_a_process(
    served: tuple[Server, Client],
) -> None:
    """OP_STATUS: ``mm->pinned_vm`` as the model keeps it (``iopt_pages_update_pinned``):
    nothing before a domain pins, then every page of the mapped buffer; 0 after unmap."""
    server, client = served
    s = client.open()
    ioas = _ioas_alloc(client, s)
    page = 4096
    buf = ctypes.create_string_buffer(4 * page + page)
    va = (ctypes.addressof(buf) + page - 1) & ~(page - 1)
    mp = uapi.STRUCTS["iommu_ioas_map"]
    flags = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE
    flags |= uapi.IOMMU_IOAS_MAP_FIXED_IOVA  # inside the mock domain's aperture
    arg = _buf(
        mp.encode(
            size=mp.size,
            flags=flags,
            ioas_id=ioas,
            user_va=va,
            length=4 * page,
            iova=t.MOCK_APERTURE_START,
        )
    )
    assert client.call(s, p.OP_IOCTL, uapi.IOMMU_IOAS_MAP, ctypes.addressof(arg)) == (0, 0)
    iova = mp.decode(arg.raw)["iova"]

    def status() -> tuple[int, int]:
        st = client.connect()
        st.send(p.REQ.pack(p.OP_STATUS, os.getpid(), os.getpid(), 0, 0, 0))
        _, _, _, pinned, locked = p.REP.unpack(st.recv(1 << 16))
        return pinned, locked

    assert status() == (0, 0)  # no domain: nothing pinned yet
    view = t.test_cmd_view(t.IOMMU_TEST_OP_MOCK_DOMAIN)
    cmd = _buf(view.encode(size=t.TEST_CMD.size, op=t.IOMMU_TEST_OP_MOCK_DOMAIN, id=ioas))
    assert client.call(s, p.OP_IOCTL, t.IOMMU_TEST_CMD, ctypes.addressof(cmd)) == (0, 0)
    assert status() == (4, 0)  # per-user accounting: pinned, not locked in the mm
    un = uapi.STRUCTS["iommu_ioas_unmap"]
    arg = _buf(un.encode(size=un.size, ioas_id=ioas, iova=iova, length=4 * page))
    assert client.call(s, p.OP_IOCTL, uapi.IOMMU_IOAS_UNMAP, ctypes.addressof(arg)) == (0, 0)
    assert status() == (0, 0)
    assert server.stats.ioctls == 4
