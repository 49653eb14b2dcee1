"""Differential property test for VMSAv8-64 (Arm DDI 0487 D8): what the VMSAv8-64 writer
(``sw/pgtable/arm_lpae``, after Linux io-pgtable-arm) maps, the hardware walker
(``hw/pgtable/vmsa``) translates, for every granule and both stages, in both byte orders --
checked against an independent model of the mappings (a dict of pages and the permissions
DDI 0487 D8 "Memory access control" grants for each prot), through map, protect and unmap."""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.pgformat import PERM_R, PERM_W, PERM_X
from iommusim.errors import Exists
from iommusim.hw.pgtable import VmsaFault, VmsaLeaf, VmsaWalker
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import ArmLpaePageTable, IotlbGather
from iommusim.sw.prot import IOMMU_NOEXEC, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE

POOL: Final = 0x4000_0000
OUT: Final = 0x10_0000_0000
OA_BITS: Final = 48
CASES: Final = [
    (1, 4, 39),
    (1, 4, 48),
    (1, 16, 36),
    (1, 16, 48),
    (1, 64, 42),
    (1, 64, 48),
    (2, 4, 40),
    (2, 4, 48),
    (2, 16, 40),
    (2, 16, 48),
    (2, 64, 42),
    (2, 64, 48),
]
PROTS: Final = [
    IOMMU_READ,
    IOMMU_READ | IOMMU_WRITE,
    IOMMU_WRITE,
    IOMMU_READ | IOMMU_NOEXEC,
    IOMMU_READ | IOMMU_WRITE | IOMMU_PRIV,
    IOMMU_READ | IOMMU_PRIV | IOMMU_NOEXEC,
]


def expected_perms(stage: int, prot: int, privileged: bool) -> int:
    """DDI 0487 D8, independently of the writer's codec: stage 1 is always readable (AP has
    no "no read" encoding), writable unless read-only, EL0-accessible unless IOMMU_PRIV,
    never privileged-executable when EL0-writable; stage 2 S2AP read / write and XN for
    every privilege."""
    x = 0 if prot & IOMMU_NOEXEC else PERM_X
    w = PERM_W if prot & IOMMU_WRITE else 0
    if stage == 2:
        return (PERM_R if prot & IOMMU_READ else 0) | w | x
    el0 = not prot & IOMMU_PRIV
    if privileged:
        return PERM_R | w | (0 if el0 and w else PERM_X)
    return (PERM_R | w if el0 else 0) | x


@pytest.mark.parametrize(("stage", "granule", "ia_bits"), CASES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_writer_and_walker_agree(
    stage: int, granule: int, ia_bits: int, data: st.DataObject
) -> None:
    mem = SparseMemory()
    big_endian = data.draw(st.booleans(), label="big_endian")
    t = ArmLpaePageTable(
        mem,
        PageAllocator(mem, POOL, 1 << 27),
        stage,
        granule,
        ia_bits,
        big_endian=big_endian,  # type: ignore[arg-type]
    )
    walker = VmsaWalker(t.pt, mem, OA_BITS, ha=False, hd=False)
    page = 1 << t.pt.page_shift
    block = 1 << t.pt.level_shift(1)
    # A window of the input space, so that mappings share tables and blocks fit.
    top = 1 << ia_bits
    base = data.draw(st.integers(0, top // block - 4), label="window") * block
    # The independent model: mapped ranges (iova, size, pa, prot), each probed at its first,
    # middle and last page.
    model: list[tuple[int, int, int, int]] = []
    for _ in range(data.draw(st.integers(1, 8), label="maps")):
        is_block = data.draw(st.booleans())
        size = block if is_block else page * data.draw(st.integers(1, 3))
        iova = base + data.draw(st.integers(0, 3 * block // size - 1)) * size
        pa = OUT + data.draw(st.integers(0, 1 << 10)) * size
        prot = data.draw(st.sampled_from(PROTS))
        try:
            t.map(iova, pa, size, prot)
        except Exists:
            assert any(v < iova + size and iova < v + n for v, n, _, _ in model)
            continue
        model.append((iova, size, pa, prot))
    g = IotlbGather()
    # Protect, then unmap, the first page of a page mapping (a block is never split).
    small = [m for m in model if m[1] < block]
    if small:
        v, n, pa, prot = data.draw(st.sampled_from(small), label="changed")
        model.remove((v, n, pa, prot))
        changed = 0 if prot == IOMMU_READ else page  # protect counts the leaves it rewrote
        assert t.protect(v, page, IOMMU_READ, g) == changed
        assert t.unmap(v, page, g) == page
        if n > page:
            assert t.protect(v + page, page, IOMMU_READ, g) == changed
            model.append((v + page, page, pa + page, IOMMU_READ))
            if n > 2 * page:
                model.append((v + 2 * page, n - 2 * page, pa + 2 * page, prot))
    rng = data.draw(st.randoms(use_true_random=False), label="offsets")

    def expect(ia: int) -> tuple[int, int] | None:
        for v, n, pa, prot in model:
            if v <= ia < v + n:
                return pa + ia - v, prot
        return None

    probes = {base + i * 7 * page for i in range(8)}
    for v, n, _, _ in model:
        probes |= {v, v + (n // 2 & ~(page - 1)), v + n - page}
    for v in sorted(probes):
        ia = v + (rng.randrange(page) & ~7)
        want = expect(ia)
        for privileged in (False, True):
            got = walker.walk(t.root_pa, ia, 0, privileged, big_endian)
            if want is None:
                assert isinstance(got, VmsaFault)
                assert got.kind == "translation"
                continue
            assert isinstance(got, VmsaLeaf), (hex(ia), got)
            assert got.out == want[0]
            assert got.perms == expected_perms(stage, want[1], privileged)
