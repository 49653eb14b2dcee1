"""Differential property test: what the one radix writer (sw/pgtable) maps, the one hardware
walker (hw/pgtable) translates, for every RISC-V format -- Sv32, Sv39, Sv48, Sv57 and the x4
G-stage forms (privileged spec "Virtual Address Translation Process", "Two-Stage Address
Translation"), in both byte orders (riscv-iommu: DC.tc.SBE, fctl.BE)."""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.pgformat import PtFormat
from iommusim.bits.riscv.pgtable import RISCV_FORMATS
from iommusim.errors import Exists
from iommusim.hw.pgtable import Walker
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.radix import RadixPageTable
from iommusim.sw.pgtable.riscv import RiscvLeafCodec
from iommusim.sw.prot import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE

POOL: Final = 0x8000_0000
NAMES: Final = sorted(RISCV_FORMATS)
_M64: Final = (1 << 64) - 1


class WalkStop(Exception):
    """The walker stopped (a fault code of the test's choosing)."""

    def __init__(self, cause: int, info: int) -> None:
        super().__init__(cause, info)
        self.cause = cause


def _stop(cause: int, info: int, level: int) -> Exception:
    return WalkStop(cause, info)


def _va(fmt: PtFormat, page: int) -> int:
    """The address of input page ``page``, sign-extended for a first-stage format."""
    va = page << fmt.page_shift
    if fmt.input == "sign" and va >> (fmt.va_bits - 1):
        va |= _M64 & ~((1 << fmt.va_bits) - 1)
    return va


@st.composite
def mappings(draw: st.DrawFn, fmt: PtFormat) -> list[tuple[int, int, int, int]]:
    """Up to five ``(iova, pa, size, prot)`` requests, each some leaves of one level."""
    out = []
    for _ in range(draw(st.integers(1, 5))):
        level = draw(st.integers(0, min(fmt.levels - 1, 2)))
        shift = fmt.level_shift(level)
        n = draw(st.integers(1, 3))
        pages_per = 1 << (shift - fmt.page_shift)
        vpages = 1 << (fmt.va_bits - fmt.page_shift)
        ppages = 1 << (fmt.oa_bits - fmt.page_shift)
        vidx = draw(st.integers(0, vpages // pages_per - n))
        pidx = draw(st.integers(0, ppages // pages_per - n))
        prot = draw(
            st.sampled_from([IOMMU_READ, IOMMU_READ | IOMMU_WRITE, IOMMU_READ | IOMMU_NOEXEC])
        )
        iova = _va(fmt, vidx * pages_per)
        if fmt.input == "sign" and (vidx + n) * pages_per > vpages // 2 > vidx * pages_per:
            continue  # a range must lie in one canonical half
        out.append((iova, pidx * pages_per << fmt.page_shift, n << shift, prot))
    return out


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data(), big_endian=st.booleans())
def test_what_the_writer_maps_the_walker_translates(
    name: str, data: st.DataObject, big_endian: bool
) -> None:
    fmt = RISCV_FORMATS[name]
    mem = SparseMemory()
    pages = PageAllocator(mem, POOL, 1024 * 4096)
    codec = RiscvLeafCodec(gstage=fmt.input == "zero", set_ad=True, svpbmt=False)
    pt = RadixPageTable(mem, pages, fmt, codec, max_leaf_level=3, big_endian=big_endian)
    walker = Walker(fmt, mem, _stop)
    mapped: list[tuple[int, int, int, int]] = []
    for iova, pa, size, prot in data.draw(mappings(fmt), label="maps"):
        try:
            pt.map(iova, pa, size, prot)
        except Exists:
            continue
        mapped.append((iova, pa, size, prot))

    def walk(va: int) -> tuple[int, int, int, int, int, int]:
        return walker.walk(pt.root_pa, va, big_endian, None, 1, 0, 2, 3, None, "s", "r", None)

    for iova, pa, size, prot in mapped:
        off = data.draw(st.integers(0, size - 1), label="offset")
        out, size_lg2, pte, _, _, _ = walk(iova + off)
        assert out == pa + off
        leaf = pt.lookup(iova + off)
        assert leaf is not None and 1 << size_lg2 == leaf[2]
        assert codec.prot_of(pte) == leaf[3] == codec.prot_of(codec.leaf_bits(prot))
        assert fmt.perms(pte).read
    # An address the writer has not mapped is a fault for the walker.
    probe = _va(fmt, data.draw(st.integers(0, (1 << (fmt.va_bits - fmt.page_shift)) - 1)))
    if pt.lookup(probe) is None:
        with pytest.raises(WalkStop):
            walk(probe)
    else:
        assert walk(probe)[0] == pt.iova_to_phys(probe)
