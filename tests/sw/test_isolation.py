"""Isolation, the security property of the whole stack (issue: software stack on RISC-V).

Random DMA-API sequences run through the kernel (core, DMA API, RISC-V driver) and the
hardware model; after every device access the test checks where it went:

- strict mode (IOMMU_DOMAIN_DMA): a device access succeeds only on a live mapping with the
  permission it needs, and reaches exactly the physical page the mapping names; every access
  to a live mapping with permission succeeds.
- lazy mode (IOMMU_DOMAIN_DMA_FQ): besides that, an access may still succeed on an IOVA that
  was unmapped but whose flush-queue entry has not been released -- the stale window Linux
  accepts -- and then only within the flush-queue timeout after the unmap, and only reaching
  the page the IOVA used to map. Once the queue has flushed, nothing is reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from iommusim.hw.smmuv3.params import PRESETS as SMMUV3_PRESETS
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from iommusim.sw.core.fq import FqOptions
from iommusim.sw.kernel import Kernel
from iommusim.sw.prot import IOMMU_WRITE

#: The stack runs on either IOMMU (issue 12: the RISC-V property tests on SMMUv3 too).
IOMMUS = ("riscv", "smmuv3")
PAGE = 4096
POOL = 24
TIMEOUT_NS = 10_000_000


@dataclass
class Mapping:
    iova: int
    pa: int
    pages: int
    writable: bool


def tag(pa: int) -> bytes:
    return (pa >> 12).to_bytes(8, "little")


def boot(mode: str, iommu: str = "riscv") -> tuple[System, Kernel, list[int]]:
    cfg = SystemConfig(endpoints=(EndpointConfig("dev", 0x20),))
    if iommu == "smmuv3":
        cfg = replace(cfg, iommu=SMMUV3_PRESETS["full"])
    system = System(cfg)
    kernel = Kernel(
        system,
        dma_mode=mode,
        cq_entries=64,
        fq_entries=64,  # type: ignore[arg-type]
        fq=FqOptions(size=8, timeout_ns=TIMEOUT_NS),
    )
    pool = [kernel.pages.alloc_page() for _ in range(POOL)]
    for pa in pool:
        system.bus.write(pa, tag(pa))
    return system, kernel, pool


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("map"),
            st.integers(0, POOL - 3),
            st.integers(1, 3),
            st.sampled_from((DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL)),
        ),
        st.tuples(st.just("unmap"), st.integers(0, 1000)),
        st.tuples(st.just("read"), st.integers(0, 1000), st.integers(0, 2)),
        st.tuples(st.just("write"), st.integers(0, 1000), st.integers(0, 2)),
        st.tuples(st.just("wait"), st.integers(0, 15_000_000)),
    ),
    min_size=1,
    max_size=40,
)


def run(mode: str, program: list[tuple[int | str, ...]], iommu: str = "riscv") -> None:
    system, kernel, pool = boot(mode, iommu)
    core = kernel.core
    dev = kernel.device("dev")
    ep = system.endpoint("dev")
    cookie = core.dma_cookie(dev)
    assert cookie is not None
    live: list[Mapping] = []
    dead: list[tuple[Mapping, int]] = []  # unmapped, with the time of the unmap
    for op in program:
        kind = op[0]
        if kind == "map":
            _, first, n, direction = op
            pa = pool[int(first)]
            iova = core.dma_map(dev, pa, int(n) * PAGE, int(direction))
            live.append(Mapping(iova, pa, int(n), direction != DMA_TO_DEVICE))
        elif kind == "unmap" and live:
            m = live.pop(int(op[1]) % len(live))
            # The device used the buffer before the driver unmaps it (the IOTLB holds it).
            assert ep.dma_read(m.iova, 8).data == tag(m.pa)
            core.dma_unmap(dev, m.iova, m.pages * PAGE)
            dead.append((m, system.clock.now))
        elif kind in ("read", "write") and (live or dead):
            pick = int(op[1])
            # Half the accesses go to buffers the driver already unmapped.
            gone = [d[0] for d in dead]
            candidates = gone if (pick % 2 and gone) or not live else live
            m = candidates[pick // 2 % len(candidates)]
            page = int(op[2]) % m.pages
            iova = m.iova + page * PAGE
            # An unmapped IOVA may have been handed out again: the live mapping rules; with
            # none, the mapping unmapped last at that IOVA (a stale IOTLB entry, if any, is
            # the one its last DMA filled).
            covering = [
                x
                for x in (*(d[0] for d in dead), *live)
                if x.iova <= iova < x.iova + x.pages * PAGE
            ]
            owner = covering[-1] if covering else m
            is_live = owner in live
            m = owner
            target = m.pa + (iova - m.iova)
            if kind == "read":
                res = ep.dma_read(iova, 8)
                if res.ok:
                    assert res.data == tag(target), "DMA read reached the wrong page"
            else:
                res = ep.dma_write(iova, b"\xa5" * 8)
                if res.ok:
                    assert system.bus.read(target, 8) == b"\xa5" * 8, "DMA write went astray"
                    system.bus.write(target, tag(target))
            allowed = kind == "read" or m.writable
            if is_live:
                assert res.ok == allowed, f"{kind} of a live mapping: {res}"
            elif res.ok:
                # Only lazy mode leaves a window, and only while the IOVA is still queued.
                assert mode == "lazy", f"strict mode: {kind} reached an unmapped IOVA"
                assert allowed
                fq = cookie.fq
                assert fq is not None
                queued = [e for r in fq.rings for e in r if e.iova_pfn == m.iova >> 12]
                assert queued, "a released IOVA was still reachable"
                assert system.clock.now - queued[0].queued_ns <= TIMEOUT_NS
                event("stale access inside the flush-queue window")
        elif kind == "wait":
            system.run_for(int(op[1]))
        system.settle()
    # After the flush queue's timeout nothing unmapped is reachable.
    system.run_for(TIMEOUT_NS + 1)
    for m, _ in dead:
        if not any(x.iova <= m.iova < x.iova + x.pages * PAGE for x in live):
            assert not ep.dma_read(m.iova, 8).ok


@pytest.mark.parametrize("iommu", IOMMUS)
@settings(max_examples=60, deadline=None)
@given(ops)
def test_strict_mode_never_reaches_an_unmapped_page(
    iommu: str, program: list[tuple[int | str, ...]]
) -> None:
    run("strict", program, iommu)


@pytest.mark.parametrize("iommu", IOMMUS)
@settings(max_examples=150, deadline=None)
@given(ops)
def test_lazy_mode_exposure_is_bounded_by_the_flush_queue(
    iommu: str, program: list[tuple[int | str, ...]]
) -> None:
    run("lazy", program, iommu)


@pytest.mark.parametrize("iommu", IOMMUS)
def test_lazy_mode_window_is_observable(iommu: str) -> None:
    """The stale window is real: right after a lazy unmap the device still reaches the page."""
    system, kernel, pool = boot("lazy", iommu)
    dev, ep = kernel.device("dev"), system.endpoint("dev")
    iova = kernel.core.dma_map(dev, pool[0], PAGE, DMA_TO_DEVICE)
    assert ep.dma_read(iova, 8).data == tag(pool[0])  # fills the IOTLB
    kernel.core.dma_unmap(dev, iova, PAGE)
    assert ep.dma_read(iova, 8).ok  # stale IOTLB entry
    system.run_for(TIMEOUT_NS)  # the flush-queue timer fires
    assert not ep.dma_read(iova, 8).ok


def test_strict_mode_closes_at_unmap() -> None:
    system, kernel, pool = boot("strict")
    dev, ep = kernel.device("dev"), system.endpoint("dev")
    iova = kernel.core.dma_map(dev, pool[0], PAGE, DMA_TO_DEVICE)
    assert ep.dma_read(iova, 8).ok
    kernel.core.dma_unmap(dev, iova, PAGE)
    res = ep.dma_read(iova, 8)
    assert res.fault.cause == 13  # riscv-iommu: load page fault


def test_write_permission_follows_the_direction() -> None:
    system, kernel, pool = boot("strict")
    dev, ep = kernel.device("dev"), system.endpoint("dev")
    iova = kernel.core.dma_map(dev, pool[0], PAGE, DMA_TO_DEVICE)
    assert ep.dma_write(iova, b"x").fault.cause == 15  # store page fault: read-only mapping
    iova2 = kernel.core.dma_map(dev, pool[1], PAGE, DMA_FROM_DEVICE)
    assert ep.dma_write(iova2, b"x").ok
    assert IOMMU_WRITE
