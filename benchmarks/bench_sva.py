"""Shared Virtual Addressing through the whole stack (``make bench``).

Two figures, wall clock (best of three runs) and virtual time per operation:

* ``fault_round_trips_per_s``: a device writes one 4 KiB page that is not present. Each
  write is an ATS translation request, a page request into the page-request queue, the MSI,
  the driver draining the queue, the SVA handler faulting the page in on the process's address
  space, ATS.PRGR back to the device, and the retried translation and the translated write.
  The buffer is munmapped and mapped again between rounds (each munmap runs the notifier:
  IOTINVAL.VMA, ATS.INVAL, IOFENCE.C).
* ``atc_hit_pages_per_s``: the same device re-reading pages whose translations are in its
  address-translation cache (translated requests only).

Both for the RISC-V IOMMU (an Sv48 process) and an Arm SMMUv3 (an arm64 process: PRI
queue, CMD_PRI_RESP, TLBI by ASID + ATC_INV + CMD_SYNC on munmap). Prints JSON.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import replace

from iommusim.hw.smmuv3.params import PRESETS as SMMUV3_PRESETS
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE

PAGES = 64
ROUNDS = 40
HIT_READS = 50_000


def run(iommu: str = "riscv") -> tuple[float, float, float]:
    cfg = SystemConfig(
        endpoints=(
            EndpointConfig(
                "acc",
                0x10,
                pasid_bits=20,
                ats=True,
                pri=True,
                atc_entries=PAGES,
                prg_max_pages=1,
            ),
        )
    )
    if iommu == "smmuv3":
        cfg = replace(cfg, iommu=SMMUV3_PRESETS["full"])
    system = System(cfg)
    kernel = Kernel(system)
    mm = kernel.new_process("bench", "arm64-4k" if iommu == "smmuv3" else "sv48")
    ep = system.endpoint("acc")
    handle = kernel.sva.bind(kernel.device("acc"), mm)
    pasid = handle.pasid
    base = mm.mmap(PAGES * 4096, PROT_READ | PROT_WRITE)
    page = b"\xa5" * 4096
    faults = 0
    wall = 0.0
    v_fault = 0
    for _ in range(ROUNDS):
        t0, v0 = time.perf_counter(), system.clock.now
        for i in range(PAGES):
            assert ep.dma_write(base + i * 4096, page, pasid=pasid).ok
        wall += time.perf_counter() - t0
        v_fault += system.clock.now - v0
        faults += PAGES
        mm.munmap(base, PAGES * 4096)
        mm.mmap(PAGES * 4096, PROT_READ | PROT_WRITE, addr=base, fixed=True)
        system.settle()
    for i in range(PAGES):  # make every page present and cached
        assert ep.dma_write(base + i * 4096, page, pasid=pasid).ok
    read = ep.dma_read
    t0 = time.perf_counter()
    for i in range(HIT_READS):
        read(base + (i % PAGES) * 4096, 64, pasid=pasid)
    hit_wall = time.perf_counter() - t0
    return faults / wall, v_fault / faults, HIT_READS / hit_wall


def _figures(iommu: str) -> dict[str, int]:
    runs = [run(iommu) for _ in range(3)]
    return {
        "fault_round_trips_per_s": round(max(r[0] for r in runs)),
        "virtual_ns_per_fault": round(runs[0][1]),
        "atc_hit_pages_per_s": round(max(r[2] for r in runs)),
    }


def main() -> None:
    out = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "sva": _figures("riscv"),
        # The same scene with an Arm SMMUv3 (full preset) and an arm64 process.
        "sva_smmuv3": _figures("smmuv3"),
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
