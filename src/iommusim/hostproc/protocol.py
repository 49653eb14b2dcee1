"""The wire format between the preload library (``preload.c``) and the server.

Every message is one ``SOCK_SEQPACKET`` record. A request (program -> server) is
:data:`REQ` -- ``op``, the caller's ``pid`` and four arguments -- followed by an optional
payload; an answer (server -> program) is :data:`REP` -- ``ret``, ``err`` (the errno when
``ret`` is negative), ``op`` and two arguments. An answer whose ``op`` is not
:data:`REP_DONE` is a call-back the program answers with an :data:`OP_REPLY` request before
the server goes on: :data:`REP_INSTALL` (connect a new file socket at the lowest free fd and
announce it with :data:`OP_FILE`; ``a`` the token, ``b`` close-on-exec), :data:`REP_LOOKUP`
(``a`` an fd: the reply's payload is its socket's name, empty when it is not one of ours) and
:data:`REP_CLOSE` (``a`` an fd to close). A connection whose first request is
:data:`OP_STATUS` asks for the kernel memory accounting of process ``a`` (what
``/proc/PID/status`` shows as ``VmPin`` and ``VmLck``): the answer's ``a`` and ``b`` are the
pages the model's iommufd pins and locks for it; the connection then closes.

The numbers are the ``#define``\\ s of ``preload.c``; a test compares them.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

__all__ = [
    "OP_FILE",
    "OP_IOCTL",
    "OP_MMAP",
    "OP_MUNMAP",
    "OP_OPEN",
    "OP_POLL",
    "OP_READ",
    "OP_REPLY",
    "OP_STATUS",
    "OP_WRITE",
    "REP",
    "REP_CLOSE",
    "REP_DONE",
    "REP_INSTALL",
    "REP_LOOKUP",
    "REQ",
    "Request",
    "answer",
    "parse_request",
]

OP_OPEN: Final = 1
OP_FILE: Final = 2
OP_IOCTL: Final = 3
OP_MMAP: Final = 4
OP_MUNMAP: Final = 5
OP_READ: Final = 6
OP_WRITE: Final = 7
OP_POLL: Final = 8
OP_REPLY: Final = 9
OP_STATUS: Final = 10

REP_DONE: Final = 0
REP_INSTALL: Final = 1
REP_LOOKUP: Final = 2
REP_CLOSE: Final = 3

#: ``struct req``: u32 op, u32 pid, u64 a, b, c, d.
REQ: Final = struct.Struct("<IIQQQQ")
#: ``struct rep``: s64 ret, s32 err, u32 op, u64 a, b.
REP: Final = struct.Struct("<qiIQQ")


class Request(NamedTuple):
    op: int
    pid: int
    a: int
    b: int
    c: int
    d: int
    payload: bytes


def parse_request(msg: bytes) -> Request | None:
    """The request in ``msg``; None for a record too short to be one."""
    if len(msg) < REQ.size:
        return None
    op, pid, a, b, c, d = REQ.unpack_from(msg)
    return Request(op, pid, a, b, c, d, msg[REQ.size :])


def answer(ret: int, err: int = 0, op: int = REP_DONE, a: int = 0, b: int = 0) -> bytes:
    """One answer record."""
    return REP.pack(ret, err, op, a, b)
