"""The wire format: preload.c's numbers are protocol.py's, records have the C layout."""

from __future__ import annotations

import re

from iommusim.hostproc import protocol as p
from iommusim.hostproc.build import SOURCE


def test_the_c_library_uses_the_same_numbers() -> None:
    defines = dict(re.findall(r"^#define ((?:OP|REP)_[A-Z]+) (\d+)$", SOURCE.read_text(), re.M))
    assert defines, "no OP_/REP_ defines found in preload.c"
    assert {k: int(v) for k, v in defines.items()} == {k: getattr(p, k) for k in defines}
    assert {k for k in p.__all__ if k.startswith(("OP_", "REP_")) and k != "REP"} == set(defines)


def test_records_have_the_c_struct_sizes() -> None:
    # struct req: u32, u32, 4 x u64; struct rep: s64, s32, u32, 2 x u64 -- no padding.
    assert p.REQ.size == 40
    assert p.REP.size == 32


def test_a_request_parses_with_its_payload() -> None:
    msg = p.REQ.pack(p.OP_IOCTL, 1234, 0x3B81, 0x7000, 0, 0) + b"tail"
    assert p.parse_request(msg) == p.Request(p.OP_IOCTL, 1234, 0x3B81, 0x7000, 0, 0, b"tail")


def test_a_short_record_is_no_request() -> None:
    assert p.parse_request(b"\0" * (p.REQ.size - 1)) is None


def test_an_answer_packs_errno_and_callback() -> None:
    assert p.REP.unpack(p.answer(-1, 22)) == (-1, 22, p.REP_DONE, 0, 0)
    assert p.REP.unpack(p.answer(0, op=p.REP_LOOKUP, a=5)) == (0, 0, p.REP_LOOKUP, 5, 0)
