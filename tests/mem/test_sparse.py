"""SparseMemory: whole-address-space RAM, pages allocated on first write."""

from __future__ import annotations

from hypothesis import given

from iommusim.mem import PhysicalMemory, SparseMemory
from testsupport.memops import PAGE, Op, check_against_reference, ops

BASE = 0x8000_0000 - PAGE  # the window straddles two page boundaries
WINDOW = 3 * PAGE


@given(ops(WINDOW))
def test_agrees_with_bytearray_model(seq: list[Op]) -> None:
    check_against_reference(SparseMemory(), BASE, WINDOW, seq)


@given(ops(WINDOW))
def test_agrees_with_model_at_unaligned_base(seq: list[Op]) -> None:
    # Shift the window so that word-aligned offsets are not page- or word-aligned addresses.
    check_against_reference(SparseMemory(), BASE + 3, WINDOW, seq)


def test_implements_protocol() -> None:
    assert isinstance(SparseMemory(), PhysicalMemory)


def test_unwritten_memory_reads_zero_without_allocating() -> None:
    mem = SparseMemory()
    assert mem.read(0x1234_5678_9000, 64) == bytes(64)
    assert mem.read64(0xFFFF_0000) == 0
    assert mem.read32(0x10) == 0
    assert len(mem) == 0


def test_pages_allocated_on_write_and_listed_in_order() -> None:
    mem = SparseMemory()
    mem.write64(0x5000, 0x1122_3344_5566_7788)
    mem.write(0x2FFE, b"\xaa\xbb\xcc\xdd")  # crosses into page 0x3000
    assert len(mem) == 3
    pages = list(mem.pages())
    assert [pa for pa, _ in pages] == [0x2000, 0x3000, 0x5000]
    assert pages[0][1][-2:] == b"\xaa\xbb"
    assert pages[1][1][:2] == b"\xcc\xdd"
    assert pages[2][1][:8] == bytes.fromhex("8877665544332211")


def test_words_are_little_endian() -> None:
    mem = SparseMemory()
    mem.write64(0x100, 0x0102_0304_0506_0708)
    assert mem.read(0x100, 8) == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert mem.read32(0x100) == 0x0506_0708
    assert mem.read32(0x104) == 0x0102_0304


def test_unaligned_word_across_page_boundary() -> None:
    mem = SparseMemory()
    mem.write64(0xFFD, 0xDEAD_BEEF_CAFE_F00D)
    assert mem.read64(0xFFD) == 0xDEAD_BEEF_CAFE_F00D
    assert mem.read(0x1000, 5) == (0xDEAD_BEEF_CAFE_F00D >> 24).to_bytes(5, "little")
    mem.write32(0x1FFE, 0x1234_5678)
    assert mem.read32(0x1FFE) == 0x1234_5678


def test_access_wraps_at_top_of_address_space() -> None:
    mem = SparseMemory()
    top = (1 << 64) - 4
    mem.write(top, bytes(range(1, 9)))
    assert mem.read(top, 4) == bytes([1, 2, 3, 4])
    assert mem.read(0, 4) == bytes([5, 6, 7, 8])
    assert mem.read(top, 8) == bytes(range(1, 9))


def test_cas64_swaps_only_on_match() -> None:
    mem = SparseMemory()
    mem.write64(0x40, 7)
    assert mem.cas64(0x40, 8, 99) == 7
    assert mem.read64(0x40) == 7
    assert mem.cas64(0x40, 7, 99) == 7
    assert mem.read64(0x40) == 99


def test_cas64_on_unallocated_page_compares_with_zero() -> None:
    mem = SparseMemory()
    assert mem.cas64(0x9000, 1, 5) == 0
    assert mem.read64(0x9000) == 0
    assert mem.cas64(0x9000, 0, 5) == 0
    assert mem.read64(0x9000) == 5


@given(ops(WINDOW))
def test_word_view_agrees_with_read64(seq: list[Op]) -> None:
    # The view page-table walkers load PTEs from (DESIGN "Performance": word views).
    mem = SparseMemory()
    check_against_reference(mem, BASE, WINDOW, seq)
    words = mem.words
    if words is None:  # big-endian host: no view, callers use read64
        return
    assert set(words) == {pa >> 12 for pa, _ in mem.pages()}
    for pa in range(BASE, BASE + WINDOW, 8):
        page = words.get(pa >> 12)
        assert (page[(pa & 0xFFF) >> 3] if page is not None else 0) == mem.read64(pa)
