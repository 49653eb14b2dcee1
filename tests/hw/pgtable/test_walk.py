"""The generic hardware walker (hw/pgtable) on hand-built RISC-V tables: the leaf rule,
reserved bits per extension, superpage alignment, Svnapot, Svpbmt, endianness, the A/D
compare-and-swap, memory faults and the trace records (privileged spec "Virtual Address
Translation Process", "Svnapot", "Svpbmt"; riscv-iommu: "PTE Reserved-for-Software Bits
60-59", "IOMMU updating of PTE accessed (A) and dirty (D) updates")."""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.bits.pgformat import PtFormat
from iommusim.bits.riscv.pgtable import SV32, SV39, SV39X4
from iommusim.hw.pgtable import AdUpdate, PteRead, Walker, swap64
from iommusim.mem import ACCESS, CORRUPTION, FaultInjectingMemory, SparseMemory
from iommusim.mem.protocol import PhysicalMemory

ROOT: Final = 0x1000_0000
L1: Final = 0x1000_1000
L0: Final = 0x1000_2000
PTR_L1: Final = (L1 >> 12) << 10 | 0x1  # V
PTR_L0: Final = (L0 >> 12) << 10 | 0x1
LEAF: Final = 0xD7  # V R W U A D
MALFORMED: Final = 13
AF: Final = 5
CORR: Final = 274


class Stop(Exception):
    def __init__(self, cause: int, info: int, level: int) -> None:
        super().__init__(cause, info, level)
        self.cause = cause
        self.info = info
        self.level = level


def walker(mem: PhysicalMemory, fmt: PtFormat = SV39, exts: tuple[str, ...] = ()) -> Walker:
    return Walker(fmt, mem, Stop, exts)


def walk(
    w: Walker, va: int, trace: list[PteRead | AdUpdate] | None = None, be: bool = False
) -> tuple[int, int, int, int, int, int]:
    return w.walk(ROOT, va, be, None, MALFORMED, 0x77, AF, CORR, trace, "s1", "request", None)


def sv39_4k(mem: SparseMemory, leaf: int, va: int = 0x1234_5000) -> None:
    """An Sv39 path to a 4 KiB leaf for ``va`` (VPN[2], VPN[1], VPN[0] = 0, 0x91, 0x145)."""
    mem.write64(ROOT + (va >> 30 & 511) * 8, PTR_L1)
    mem.write64(L1 + (va >> 21 & 511) * 8, PTR_L0)
    mem.write64(L0 + (va >> 12 & 511) * 8, leaf)


def stops(w: Walker, va: int) -> int:
    with pytest.raises(Stop) as e:
        walk(w, va)
    return e.value.cause


def test_three_level_walk_and_trace() -> None:
    mem = SparseMemory()
    sv39_4k(mem, 0x2000_0000 >> 12 << 10 | LEAF | 0x20)  # G in the leaf
    trace: list[PteRead | AdUpdate] = []
    out, size_lg2, pte, pa, addr, g = walk(walker(mem), 0x1234_5678, trace)
    assert (out, size_lg2, g) == (0x2000_0678, 12, 0x20)
    assert pa == addr == L0 + 0x145 * 8 and pte & 0xFF == LEAF | 0x20
    assert [(t.level, t.addr, t.pte) for t in trace] == [
        (2, ROOT, PTR_L1),
        (1, L1 + 0x91 * 8, PTR_L0),
        (0, L0 + 0x145 * 8, pte),
    ]
    assert {(t.stage, t.served, t.va, t.pte_bytes) for t in trace} == {
        ("s1", "request", 0x1234_5678, 8)
    }


def test_protocol_reads_and_big_endian_tables() -> None:
    """A wrapped memory is read through the protocol; big-endian entries are swapped."""
    inner = SparseMemory()
    for a, v in ((ROOT, PTR_L1), (L1 + 0x91 * 8, PTR_L0), (L0 + 0x145 * 8, LEAF | 0x400)):
        inner.write64(a, swap64(v))
    w = walker(FaultInjectingMemory(inner))
    assert walk(w, 0x1234_5678, be=True)[0] == 0x1678  # PPN 1


@pytest.mark.parametrize(
    ("leaf", "exts"),
    [
        (LEAF | 1 << 54, ("svpbmt", "svrsw60t59b")),  # 58:54 reserved always
        (LEAF | 1 << 59, ("svpbmt",)),  # 60:59 without Svrsw60t59b
        (LEAF | 1 << 61, ("svrsw60t59b",)),  # PBMT without Svpbmt
        (LEAF | 3 << 61, ("svpbmt",)),  # PBMT = 3 is reserved
        (0x5 | 0xC0, ()),  # W without R
    ],
)
def test_malformed_leaves(leaf: int, exts: tuple[str, ...]) -> None:
    mem = SparseMemory()
    sv39_4k(mem, leaf)
    assert stops(walker(mem, exts=exts), 0x1234_5000) == MALFORMED


def test_extension_fields_are_usable_when_implemented() -> None:
    mem = SparseMemory()
    sv39_4k(mem, LEAF | 1 << 59 | 1 << 61)
    out, _, pte, _, _, _ = walk(walker(mem, exts=("svpbmt", "svrsw60t59b")), 0x1234_5000)
    assert out == 0x1234_5000 & 0xFFF and pte >> 61 & 3 == 1


@pytest.mark.parametrize("bit", [6, 7, 4, 63, 61])  # A, D, U, N, PBMT in a pointer
def test_nonleaf_reserved_bits(bit: int) -> None:
    mem = SparseMemory()
    sv39_4k(mem, LEAF)
    mem.write64(L1 + 0x91 * 8, PTR_L0 | 1 << bit)
    assert stops(walker(mem, exts=("svpbmt",)), 0x1234_5000) == MALFORMED


def test_pointer_at_level_0_and_invalid_entries() -> None:
    mem = SparseMemory()
    sv39_4k(mem, 0x1)
    assert stops(walker(mem), 0x1234_5000) == MALFORMED
    assert stops(walker(mem), 0x4000_0000) == MALFORMED  # VPN[2] = 1: not valid


def test_superpage_alignment() -> None:
    """A 2 MiB leaf whose PPN[0] is not zero is a misaligned superpage."""
    mem = SparseMemory()
    mem.write64(ROOT, PTR_L1)
    mem.write64(L1 + 0x91 * 8, (0x4000_0000 >> 12) << 10 | LEAF)
    mem.write64(L1 + 0x92 * 8, ((0x4000_0000 >> 12) | 1) << 10 | LEAF)
    assert walk(walker(mem), 0x1234_5678)[:2] == (0x4014_5678, 21)
    assert stops(walker(mem), 0x1240_0000) == MALFORMED


def test_napot_64k_leaf() -> None:
    """Svnapot: N = 1 with PPN[3:0] = 1000 maps 64 KiB; other encodings and levels fault."""
    mem = SparseMemory()
    sv39_4k(mem, 1 << 63 | (0x8_0008 << 10) | LEAF)
    assert walk(walker(mem), 0x1234_5678)[:2] == (0x8000_5678, 12)
    sv39_4k(mem, 1 << 63 | (0x8_0004 << 10) | LEAF)
    assert stops(walker(mem), 0x1234_5678) == MALFORMED
    mem.write64(L1 + 0x91 * 8, 1 << 63 | (0x8_0008 << 10) | LEAF)
    assert stops(walker(mem), 0x1234_5678) == MALFORMED


def test_sv32_and_x4_root() -> None:
    """Sv32: 4-byte PTEs, 10-bit indexes; Sv39x4: an 11-bit root index."""
    mem = SparseMemory()
    va = 0xFFC0_1000
    mem.write32(ROOT + (va >> 22) * 4, PTR_L1)
    mem.write32(L1 + (va >> 12 & 0x3FF) * 4, (0x3_0000_0000 >> 12) << 10 | LEAF)
    assert walk(walker(mem, SV32), va + 4)[:2] == (0x3_0000_0004, 12)
    gpa = 0x1FF_0000_0000  # GPA bit 40: root index 0x7FC
    mem.write64(ROOT + (gpa >> 30) * 8, (0x8000_0000 >> 12) << 10 | LEAF)
    assert walk(walker(mem, SV39X4), gpa + 8)[:2] == (0x8000_0008, 30)


def test_pte_addresses_are_translated_by_xlate() -> None:
    mem = SparseMemory()
    off = 0x5_0000_0000
    for a, v in ((ROOT, PTR_L1), (L1 + 0x91 * 8, PTR_L0), (L0 + 0x145 * 8, LEAF)):
        mem.write64(a + off, v)
    trace: list[PteRead | AdUpdate] = []
    w = walker(mem)
    w.walk(ROOT, 0x1234_5000, False, lambda a: a + off, 13, 0, AF, CORR, trace, "s1", "r", None)
    assert [(t.addr, t.pa) for t in trace] == [
        (ROOT, ROOT + off),
        (L1 + 0x91 * 8, L1 + 0x91 * 8 + off),
        (L0 + 0x145 * 8, L0 + 0x145 * 8 + off),
    ]


@pytest.mark.parametrize(("kind", "cause"), [(ACCESS, AF), (CORRUPTION, CORR)])
def test_memory_faults(kind: str, cause: int) -> None:
    inner = SparseMemory()
    sv39_4k(inner, LEAF)
    mem = FaultInjectingMemory(inner)
    mem.inject(L1, 4096, kind)
    w = walker(mem)
    assert stops(w, 0x1234_5000) == cause
    if kind == ACCESS:  # a write replaces poisoned data: only an access fault stops A/D
        with pytest.raises(Stop) as e:
            w.update_ad(L1, 0, 1, False, AF, CORR, None, "s1")
        assert e.value.cause == AF


def test_update_ad_is_a_compare_and_swap() -> None:
    mem = SparseMemory()
    w = walker(mem)
    trace: list[PteRead | AdUpdate] = []
    mem.write64(L0, 0x17)
    w.update_ad(L0, 0x17, 0x57, False, AF, CORR, trace, "g")
    assert mem.read64(L0) == 0x57 and trace == [AdUpdate("g", L0, 0x17, 0x57)]
    w.update_ad(L0, 0x17, 0xD7, False, AF, CORR, None, "g")  # the PTE changed meanwhile
    assert mem.read64(L0) == 0x57
    # Sv32: a 4-byte PTE in the upper half of its doubleword, the lower half untouched.
    w32 = walker(mem, SV32)
    mem.write64(L1, 0x17 << 32 | 0xABCD)
    w32.update_ad(L1 + 4, 0x17, 0x57, False, AF, CORR, None, "s1")
    assert mem.read64(L1) == 0x57 << 32 | 0xABCD
