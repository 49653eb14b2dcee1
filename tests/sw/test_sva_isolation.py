"""Property: a device bound to a process never reads or writes through a stale translation.

For random sequences of process mmap/munmap/mprotect, CPU stores and device DMA (two ATS
devices with address-translation caches, page requests through PRI), every device access
must behave exactly as the process's address space says *at the moment of the access*:

* it succeeds iff the page is mapped with the access allowed (write needs PROT_WRITE, read
  PROT_READ or PROT_WRITE), fetching the page through a page request when it is not present;
* it reads the bytes the process (CPU or device) last wrote there, zeros for a fresh page;
* in particular once munmap or mprotect has returned, no access reaches an unmapped page or
  writes a page made read-only -- the mm notifier invalidated the IOTLB and both ATCs
  (IOTINVAL.VMA, ATS.INVAL, IOFENCE.C) before the call returned (riscv-iommu: "Guidelines for
  invalidations", "Device Address Translation Cache invalidations").

A DMA crossing two pages must stop exactly at the first page it may not access.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.errors import BadAddress, OutOfMemory
from iommusim.hw.smmuv3.params import PRESETS as SMMUV3_PRESETS
from iommusim.platform.system import EndpointConfig, RamRegion, System, SystemConfig
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_NONE, PROT_READ, PROT_WRITE

PAGE: Final = 4096
NPAGES: Final = 6
BASE: Final = 0x4000_0000
PROTS: Final = (PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE)

page = st.integers(0, NPAGES - 1)
span = st.tuples(page, st.integers(1, 4))
data4 = st.binary(min_size=1, max_size=4)
dev = st.integers(0, 1)
# Device accesses are drawn three times as often as each address-space change, so most
# changes happen to pages a device has cached.
ops = st.one_of(
    st.tuples(st.just("mmap"), span, st.sampled_from(PROTS)),
    st.tuples(st.just("munmap"), span),
    st.tuples(st.just("mprotect"), span, st.sampled_from(PROTS)),
    st.tuples(st.just("cpu_write"), page, data4),
    *[
        st.tuples(st.just("dev_read"), dev, page),
        st.tuples(st.just("dev_write"), dev, page, data4),
        st.tuples(st.just("dev_read2"), dev, st.integers(0, NPAGES - 2)),
    ]
    * 3,
)


class Model:
    """What the process's address space holds: prot and contents per page."""

    def __init__(self) -> None:
        self.prot: dict[int, int] = {}
        self.data: dict[int, bytearray] = {}

    def mapped(self, p: int, n: int) -> bool:
        return all(q in self.prot for q in range(p, p + n))

    def can(self, p: int, write: bool) -> bool:
        prot = self.prot.get(p)
        if prot is None:
            return False
        return bool(prot & PROT_WRITE) if write else bool(prot & (PROT_READ | PROT_WRITE))

    def read(self, p: int, off: int, n: int) -> bytes:
        return bytes(self.data.get(p, bytearray(PAGE))[off : off + n])

    def write(self, p: int, data: bytes) -> None:
        self.data.setdefault(p, bytearray(PAGE))[: len(data)] = data


def boot(iommu: str = "riscv") -> tuple[System, Kernel]:
    eps = (
        EndpointConfig("acc0", 0x10, pasid_bits=20, ats=True, pri=True, atc_entries=8),
        EndpointConfig("acc1", 0x11, pasid_bits=20, ats=True, pri=True, atc_entries=8),
    )
    cfg = SystemConfig(ram=(RamRegion(0x8000_0000, 16 << 20),), endpoints=eps)
    if iommu == "smmuv3":
        cfg = replace(cfg, iommu=SMMUV3_PRESETS["full"])
    system = System(cfg)
    return system, Kernel(system)


@pytest.mark.parametrize("iommu", ["riscv", "smmuv3"])
@settings(max_examples=150, deadline=None)
@given(st.lists(ops, min_size=1, max_size=40))
def test_no_stale_translation_after_munmap_or_mprotect(
    iommu: str, seq: list[tuple[object, ...]]
) -> None:
    system, kernel = boot(iommu)
    mm = kernel.new_process("proc", "arm64-4k" if iommu == "smmuv3" else "sv48")
    handles = [kernel.sva.bind(kernel.device(f"acc{i}"), mm) for i in (0, 1)]
    eps = [system.endpoint(f"acc{i}") for i in (0, 1)]
    model = Model()
    mm.mmap(NPAGES * PAGE, PROT_READ | PROT_WRITE, addr=BASE, fixed=True)
    model.prot = dict.fromkeys(range(NPAGES), PROT_READ | PROT_WRITE)
    for op in seq:
        kind = op[0]
        if kind == "mmap":
            (p, n), prot = op[1], op[2]  # type: ignore[misc]
            n = min(n, NPAGES - p)
            mm.mmap(n * PAGE, prot, addr=BASE + p * PAGE, fixed=True)
            for q in range(p, p + n):
                model.prot[q] = prot
                model.data.pop(q, None)
        elif kind == "munmap":
            p, n = op[1]  # type: ignore[misc]
            mm.munmap(BASE + p * PAGE, n * PAGE)
            for q in range(p, p + n):
                model.prot.pop(q, None)
                model.data.pop(q, None)
        elif kind == "mprotect":
            (p, n), prot = op[1], op[2]  # type: ignore[misc]
            n = min(n, NPAGES - p)
            try:
                mm.mprotect(BASE + p * PAGE, n * PAGE, prot)
            except OutOfMemory:
                assert not model.mapped(p, n)
            else:
                assert model.mapped(p, n)
                for q in range(p, p + n):
                    model.prot[q] = prot
        elif kind == "cpu_write":
            p, data = op[1], op[2]  # type: ignore[misc]
            try:
                mm.write(BASE + p * PAGE, data)  # type: ignore[arg-type]
            except BadAddress:
                assert not model.can(p, True)  # type: ignore[arg-type]
            else:
                assert model.can(p, True)  # type: ignore[arg-type]
                model.write(p, data)  # type: ignore[arg-type]
        elif kind == "dev_read":
            d, p = op[1], op[2]  # type: ignore[misc]
            r = eps[d].dma_read(BASE + p * PAGE, 4, pasid=handles[d].pasid)
            assert r.ok == model.can(p, False), (op, r)
            if r.ok:
                assert r.data == model.read(p, 0, 4)
        elif kind == "dev_write":
            d, p, data = op[1], op[2], op[3]  # type: ignore[misc]
            r = eps[d].dma_write(BASE + p * PAGE, data, pasid=handles[d].pasid)  # type: ignore[arg-type]
            assert r.ok == model.can(p, True), (op, r)
            if r.ok:
                model.write(p, data)  # type: ignore[arg-type]
        else:  # dev_read2: 8 bytes straddling pages p and p + 1
            d, p = op[1], op[2]  # type: ignore[misc]
            va = BASE + (p + 1) * PAGE - 4
            r = eps[d].dma_read(va, 8, pasid=handles[d].pasid)
            first, second = model.can(p, False), model.can(p + 1, False)
            assert r.done == (8 if first and second else 4 if first else 0), (op, r)
            if first:
                assert r.data[:4] == model.read(p, PAGE - 4, 4)
            if first and second:
                assert r.data[4:] == model.read(p + 1, 0, 4)
    # Every device saw every invalidation complete: no fence timed out.
    drv = kernel.drivers[0]
    errors = (
        drv.cmdq.errors if isinstance(drv, Smmuv3Driver) and drv.cmdq else kernel.iommu.cq_errors
    )
    assert errors == []
