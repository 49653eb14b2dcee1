"""Translation throughput of the scalar SMMUv3 model (``make bench``; prints JSON).

(a) the same address repeated, 4KB stage 1 (TLB hit);
(b) distinct 4 KiB pages over 65,536 mapped pages, 4KB stage 1 (48-bit input, 4 levels), no
    TLB: a full walk each time;
(c) distinct pages, nested 4KB stage 1 (4 levels) over 4KB stage 2 (40-bit IPA, 3 levels
    from a concatenated root), no TLB for the transactions: each stage 1 descriptor address
    and the output go through stage 2 (the stage 2 translations of the table addresses hit
    the full preset's 64-entry walk cache; the output's stage 2 is walked each time -- the
    writer maps the data with 2 MiB blocks, as io-pgtable-arm does, so that walk reads 2).
Tables are written by the arm_lpae writer, STEs and CDs from the bits layouts. Figures are
wall-clock translations per second on this machine, best of three runs, with the targets of
the SMMUv3 issue and whether each is met.
"""

from __future__ import annotations

import json
import platform
import sys

from bench_translate import rate  # the same timing: best of three runs
from iommusim.bits.arm.smmuv3_structures import CD, STE, STE_CONFIG_NESTED, STE_CONFIG_S1, TG0_4K
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.transaction import Request
from iommusim.hw.smmuv3.translator import STRTAB_LINEAR, Smmuv3Translator
from iommusim.mem import SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import ArmLpaePageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

NPAGES = 65_536
SID = 5
PAGE = 4096
RW = IOMMU_READ | IOMMU_WRITE
PS_48 = 0b101


def write(mem: SparseMemory, pa: int, value: int) -> None:
    for i in range(8):
        mem.write64(pa + 8 * i, value >> (64 * i) & ((1 << 64) - 1))


def build(nested: bool, tlb: int) -> tuple[Smmuv3Translator, list[Request]]:
    mem = SparseMemory()
    pages = PageAllocator(mem, 0x4000_0000, 1 << 30)
    t = Smmuv3Translator(mem, PRESETS["full"].with_caches(tlb_entries=tlb))
    strtab = pages.alloc_pages(2)  # 16 STEs
    t.set_stream_table(strtab, 4, STRTAB_LINEAR, 0)
    t.enabled = True
    s1 = ArmLpaePageTable(mem, pages, 1, 4, 48)
    n = NPAGES // 4 if nested else NPAGES
    for i in range(n):
        s1.map(0x1_0000_0000 + i * PAGE, 0x8000_0000 + i * PAGE, PAGE, RW)
    cd = pages.alloc_pages(0)
    write(
        mem,
        cd,
        CD.encode(
            v=1,
            aa64=1,
            r=1,
            a=1,
            asid=1,
            ips=PS_48,
            t0sz=s1.t0sz,
            tg0=TG0_4K,
            epd1=1,
            ttb0=s1.root_pa >> 4,
        ),
    )
    if nested:
        s2 = ArmLpaePageTable(mem, pages, 2, 4, 40)
        s2.map(0x4000_0000, 0x4000_0000, 1 << 28, RW)  # tables: IPA = PA
        s2.map(0x8000_0000, 0x20_0000_0000, n * PAGE, RW)  # data
        ste = STE.encode(
            v=1,
            config=STE_CONFIG_NESTED,
            s1contextptr=cd >> 6,
            s2vmid=1,
            s2t0sz=s2.t0sz,
            s2sl0=s2.sl0,
            s2tg=TG0_4K,
            s2ps=PS_48,
            s2aa64=1,
            s2r=1,
            s2ttb=s2.root_pa >> 4,
        )
    else:
        ste = STE.encode(v=1, config=STE_CONFIG_S1, s1contextptr=cd >> 6)
    write(mem, strtab + SID * 64, ste)
    reqs = [Request(SID, 0x1_0000_0000 + i * PAGE + 8) for i in range(n)]
    return t, reqs


def main() -> int:
    out: dict[str, object] = {"python": platform.python_version(), "machine": platform.machine()}
    figures: dict[str, int] = {}

    t, reqs = build(False, 1024)
    one = reqs[7]
    assert t.translate(one).pa == 0x8000_0000 + 7 * PAGE + 8
    tr = t.translate

    def same() -> int:
        for _ in range(200_000):
            tr(one)
        return 200_000

    figures["a_smmuv3_tlb_hit_per_s"] = round(rate(same))

    t, reqs = build(False, 0)
    assert all(t.translate(r).ok for r in reqs[:100])
    tr = t.translate

    def distinct() -> int:
        for r in reqs:
            tr(r)
        return len(reqs)

    figures["b_smmuv3_s1_walk_per_s"] = round(rate(distinct))

    t, reqs = build(True, 0)  # no TLB; the full preset's 64-entry walk cache
    first = t.translate(reqs[3])
    assert first.ok and first.pa == 0x20_0000_0000 + 3 * PAGE + 8, first
    tr = t.translate
    c = t.counts
    before = (c.tlb_misses, c.walk_accesses)

    def nested() -> int:
        for r in reqs:
            tr(r)
        return len(reqs)

    figures["c_smmuv3_nested_walk_per_s"] = round(rate(nested))
    done = 3 * len(reqs)
    out["c_tlb_misses_per_translation"] = round((c.tlb_misses - before[0]) / done, 3)
    out["c_descriptor_reads_per_translation"] = round((c.walk_accesses - before[1]) / done, 3)
    targets = {"a": 1_000_000, "b": 200_000, "c": 40_000}
    out.update(figures)
    out["targets"] = targets
    out["met"] = {k[0]: v >= targets[k[0]] for k, v in figures.items()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
