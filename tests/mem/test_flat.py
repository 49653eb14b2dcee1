"""FlatMemory: one dense numpy-backed region; everything outside it is a bus access fault."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iommusim.errors import BusError, ModelError
from iommusim.mem import FlatMemory, PhysicalMemory, SparseMemory
from testsupport.memops import PAGE, Op, check_against_reference, ops

BASE = 0x8000_0000
WINDOW = 3 * PAGE


@given(ops(WINDOW))
def test_agrees_with_bytearray_model(seq: list[Op]) -> None:
    check_against_reference(FlatMemory(BASE, WINDOW), BASE, WINDOW, seq)


@given(ops(WINDOW - 5))
def test_agrees_with_model_at_odd_size_and_unaligned_base(seq: list[Op]) -> None:
    # An odd size leaves a tail the word views do not cover; an odd base makes aligned
    # addresses unaligned offsets and the other way round.
    check_against_reference(FlatMemory(BASE + 3, WINDOW - 5), BASE + 3, WINDOW - 5, seq)


@given(ops(WINDOW))
def test_agrees_with_sparse_memory(seq: list[Op]) -> None:
    flat = FlatMemory(BASE, WINDOW)
    sparse = SparseMemory()
    check_against_reference(flat, BASE, WINDOW, seq)
    check_against_reference(sparse, BASE, WINDOW, seq)
    assert flat.read(BASE, WINDOW) == sparse.read(BASE, WINDOW)


def test_implements_protocol() -> None:
    assert isinstance(FlatMemory(0, 16), PhysicalMemory)


def test_starts_zeroed() -> None:
    mem = FlatMemory(0x1000, 64)
    assert mem.read(0x1000, 64) == bytes(64)
    assert mem.read64(0x1038) == 0
    assert len(mem) == 64
    assert mem.end_pa == 0x1040


def test_words_are_little_endian() -> None:
    mem = FlatMemory(0, 32)
    mem.write64(8, 0x0102_0304_0506_0708)
    assert mem.read(8, 8) == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert mem.read32(8) == 0x0506_0708
    assert mem.read32(12) == 0x0102_0304
    mem.write32(1, 0xA1B2_C3D4)
    assert mem.read(1, 4) == bytes([0xD4, 0xC3, 0xB2, 0xA1])
    assert mem.read64(1) == int.from_bytes(mem.read(1, 8), "little")


def test_word_in_unviewed_tail() -> None:
    # 13 bytes: the u64 view covers 8, the u32 view 12; the rest goes through bytes.
    mem = FlatMemory(0, 13)
    mem.write64(5, 0x1122_3344_5566_7788)
    assert mem.read64(5) == 0x1122_3344_5566_7788
    mem.write32(9, 0xCAFE_BABE)
    assert mem.read32(9) == 0xCAFE_BABE
    assert mem.read(12, 1) == b"\xca"


@pytest.mark.parametrize(
    ("pa", "size"),
    [
        (0x0FFF, 1),  # just below
        (0x1040, 1),  # just past the end
        (0x0FFC, 8),  # straddles the base
        (0x103C, 8),  # straddles the end
    ],
)
def test_out_of_range_is_an_access_fault(pa: int, size: int) -> None:
    mem = FlatMemory(0x1000, 64)
    with pytest.raises(BusError) as info:
        mem.read(pa, size)
    assert (info.value.kind, info.value.pa) == ("access", pa)
    with pytest.raises(BusError):
        mem.write(pa, bytes(size))
    if size == 8:
        for call in (
            lambda: mem.read64(pa),
            lambda: mem.write64(pa, 1),
            lambda: mem.cas64(pa, 0, 1),
            lambda: mem.read32(pa + 2),  # still straddles the same edge
            lambda: mem.write32(pa + 2, 1),
        ):
            with pytest.raises(BusError) as info:
                call()
            assert info.value.kind == "access"


def test_failed_write_changes_nothing() -> None:
    mem = FlatMemory(0x1000, 16)
    mem.write(0x1000, bytes(range(16)))
    with pytest.raises(BusError):
        mem.write(0x1008, b"\xff" * 9)  # one byte too many
    with pytest.raises(BusError):
        mem.write64(0x100C, -1)
    assert mem.read(0x1000, 16) == bytes(range(16))


def test_read_returns_a_copy() -> None:
    mem = FlatMemory(0, 8)
    mem.write64(0, 0x42)
    data = mem.read(0, 8)
    mem.write64(0, 0x43)
    assert data[0] == 0x42


def test_view_is_zero_copy_and_read_only() -> None:
    mem = FlatMemory(0x2000, 16)
    view = mem.view(0x2004, 4)
    mem.write32(0x2004, 0xDDCC_BBAA)
    assert bytes(view) == b"\xaa\xbb\xcc\xdd"
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 1
    with pytest.raises(BusError):
        mem.view(0x200E, 4)


def test_cas64_swaps_only_on_match() -> None:
    mem = FlatMemory(0, 24)
    mem.write64(8, 7)
    assert mem.cas64(8, 8, 99) == 7
    assert mem.read64(8) == 7
    assert mem.cas64(8, 7, 99) == 7
    assert mem.read64(8) == 99
    mem.write64(3, 5)  # unaligned cas
    assert mem.cas64(3, 5, 6) == 5
    assert mem.read64(3) == 6


@given(st.integers(0, (1 << 64) - 1))
def test_full_width_values_round_trip(value: int) -> None:
    mem = FlatMemory(0, 24)
    mem.write64(0, value)
    mem.write64(11, value)  # unaligned
    assert mem.read64(0) == value
    assert mem.read64(11) == value


@pytest.mark.parametrize(
    ("base", "size", "message"),
    [
        (0, 0, "size_bytes must be positive, not 0"),
        (-16, 16, "base_pa must be non-negative, not -0x10"),
        (
            (1 << 64) - 8,
            16,
            "region must end within the 64-bit address space, not at 0x10000000000000008",
        ),
    ],
)
def test_constructor_validation(base: int, size: int, message: str) -> None:
    with pytest.raises(ModelError, match=f"^{re.escape(message)}$"):
        FlatMemory(base, size)
