"""``iommusim walkthrough``: a RISC-V IOMMU over a memory image with a 3-level device
directory and two devices — one single-stage Sv39, one two-stage (PD8 + Sv39 over Sv39x4) —
translating a handful of requests, faults included, then explaining one walk step by step.

The scenario is built as a conformance vector (format ``riscv-iommu-vector/1``), so it can be
saved and replayed by ``iommusim vectors fill`` or explained by ``iommusim explain``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from iommusim.bits.riscv.causes import CAUSE_NAMES
from iommusim.bits.riscv.structures import DC_FSC, DC_TC, DDTE, PC_TA
from iommusim.conformance.vectors import Replay
from iommusim.hw.riscv.params import PRESETS
from iommusim.hw.riscv.transaction import Request, Response
from iommusim.mem import AddressMap, SparseMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.riscv import RiscvPageTable
from iommusim.sw.prot import IOMMU_NOEXEC, IOMMU_READ, IOMMU_WRITE

__all__ = ["build_demo_vector", "run_walkthrough"]

PAGE = 4096
NIC = 0x0100  # bus 1 device 0: single-stage Sv39
GPU = 0x0208  # bus 2 device 1: a guest's device, PD8 + Sv39 over Sv39x4
FQ_BASE = 0x8000_0000
#: Host pages for the device directory and the host-side page tables.
HOST_POOL = 0x1_0000_0000
#: The guest's RAM at SPA = GPA + G_OFF; its first-stage tables and PDT come from GUEST_POOL.
G_OFF = 0x3_0000_0000
GUEST_POOL = 0x100_0000
_RW = IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC
_RO = IOMMU_READ | IOMMU_NOEXEC


def build_demo_vector() -> dict[str, Any]:
    mem = SparseMemory()
    pages = PageAllocator(mem, HOST_POOL, 64 * PAGE)
    # Device directory: 3 levels, extended (64-byte) device contexts (capabilities.MSI_FLAT).
    root = pages.alloc_page()
    steps: list[dict[str, Any]] = []

    def dc_slot(did: int) -> int:
        ddi = (did & 0x3F, did >> 6 & 0x1FF, did >> 15 & 0x1FF)
        table: int = root
        for lvl in (2, 1):
            slot = table + ddi[lvl] * 8
            e = mem.read64(slot)
            if not e & 1:
                mem.write64(slot, DDTE.encode(v=1, ppn=pages.alloc_page() >> 12))
                e = mem.read64(slot)
            table = DDTE["ppn"].get(e) << 12
        return table + ddi[0] * 64

    # NIC: Sv39 single stage, 16 pages mapped read-write, one read-only (leaves with U, A and
    # D preset: riscv-iommu "IOMMU updating of PTE accessed (A) and dirty (D) updates").
    s1 = RiscvPageTable(mem, pages, "sv39")
    s1.map(0x10_0000, 0x2_0000_0000, 16 * PAGE, _RW)
    s1.map(0x20_0000, 0x2_1000_0000, PAGE, _RO)
    nic = dc_slot(NIC)
    mem.write64(nic, DC_TC.encode(v=1, en_ats=1))
    mem.write64(nic + 16, 7 << 12)  # ta.PSCID = 7
    mem.write64(nic + 24, s1.atp())

    # GPU: guest-physical memory at SPA G_OFF + GPA, G-stage Sv39x4 (16 KiB root).
    g = RiscvPageTable(mem, pages, "sv39x4")
    guest = AddressMap()
    guest.add(GUEST_POOL, 16 * PAGE, mem, name="guest RAM", target_pa=GUEST_POOL + G_OFF)
    # Each guest table page is mapped in the G-stage on its own, as 4 KiB pages.
    for k in range(16):
        g.map(GUEST_POOL + k * PAGE, GUEST_POOL + G_OFF + k * PAGE, PAGE, _RW)
    guest_pages = PageAllocator(guest, GUEST_POOL, 16 * PAGE)
    pdt = guest_pages.alloc_page()
    # The guest's own first-stage table lives in guest memory.
    vs = RiscvPageTable(guest, guest_pages, "sv39")
    g.map(0x400_0000, 0x400_0000 + G_OFF, 4 * PAGE, _RW)
    vs.map(0x7F00_0000, 0x400_0000, 4 * PAGE, _RW)
    # PD8 process context for PASID 5.
    guest.write64(pdt + 5 * 16, PC_TA.encode(v=1, pscid=42))
    guest.write64(pdt + 5 * 16 + 8, vs.atp())
    gpu = dc_slot(GPU)
    mem.write64(gpu, DC_TC.encode(v=1, pdtv=1, gade=1, sade=1))
    mem.write64(gpu + 8, g.atp(gscid=3))
    mem.write64(gpu + 24, DC_FSC.encode(mode=1, ppn=pdt >> 12))

    def reg(offset: int, size: int, value: int) -> None:
        steps.append({"op": "write_reg", "offset": offset, "size": size, "value": hex(value)})

    reg(40, 8, (FQ_BASE >> 12) << 10 | 5)  # fqb: 64 records
    reg(48, 4, 0)
    reg(76, 4, 1)  # fqcsr.fqen
    reg(16, 8, (root >> 12) << 10 | 4)  # ddtp: 3LVL

    def tr(
        label: str,
        did: int,
        iova: int,
        rw: str = "read",
        pv: int = 0,
        pid: int = 0,
        at: str = "untranslated",
    ) -> None:
        steps.append(
            {
                "op": "translate",
                "label": label,
                "req": {
                    "device_id": did,
                    "pid_valid": pv,
                    "process_id": pid,
                    "no_write": 1,
                    "exec_req": 0,
                    "priv_req": 0,
                    "at": at,
                    "iova": hex(iova),
                    "length": 4,
                    "rw": rw,
                },
            }
        )

    tr("NIC DMA read", NIC, 0x10_0123)
    tr("NIC DMA write", NIC, 0x10_F008, "write")
    tr("NIC write to a read-only page", NIC, 0x20_0010, "write")
    tr("NIC read of an unmapped IOVA", NIC, 0x80_0000)
    tr("NIC ATS translation request", NIC, 0x10_4000, at="ats")
    tr("GPU (PASID 5) two-stage read", GPU, 0x7F00_2040, pv=1, pid=5)
    tr("GPU (PASID 5) two-stage write", GPU, 0x7F00_3FF8, "write", pv=1, pid=5)
    tr("GPU without a PASID (no DPE)", GPU, 0x7F00_2040)
    tr("GPU PASID 6: invalid process context", GPU, 0x7F00_2040, pv=1, pid=6)
    tr("unknown device 0x0300", 0x0300, 0x1000)
    steps.append(
        {"op": "read_mem", "addr": hex(FQ_BASE), "size": 4 * 32, "what": "fault-queue records"}
    )
    chunks = [{"addr": hex(pa), "data": data.hex()} for pa, data in mem.pages() if any(data)]
    params = PRESETS["full"]
    return {
        "format": "riscv-iommu-vector/1",
        "name": "demo-000001",
        "family": "demo",
        "description": __doc__.splitlines()[0] if __doc__ else "demo",
        "seed": 1,
        "params": {
            "capabilities": hex(params.capabilities),
            "fctl": "0x0",
            "num_hpm": 0,
            "hpmctr_bits": 64,
            "eventid_limit": 8,
            "num_vec_bits": params.num_vec_bits,
            "reset_mode": "off",
            "max_mode": "3lvl",
            "max_devid_mask": "0xffffff",
            "gxl_writable": True,
            "fctl_be_writable": True,
            "qosid_mask": "0x0",
        },
        "memory": chunks,
        "steps": steps,
    }


def run_walkthrough(json_out: bool = False) -> None:
    vec = build_demo_vector()
    rp = Replay(vec)
    responses: dict[int, tuple[Request, Response]] = {}
    orig = rp.iommu.translate

    def capture(req: Request) -> Response:
        resp = orig(req)
        responses[len(responses)] = (req, resp)
        return resp

    rp.iommu.translate = capture  # type: ignore[method-assign]
    for i, step in rp.steps():
        rp.run_step(i, step)
    rows = []
    for (req, resp), step in zip(
        responses.values(), [s for s in vec["steps"] if s["op"] == "translate"], strict=True
    ):
        rows.append(
            {
                "request": step["label"],
                "device": f"{req.device_id:#06x}",
                "iova": f"{req.iova:#x}",
                "status": resp.status,
                "pa": f"{resp.pa:#x}"
                if resp.ok and not resp.r and req.at != 2
                else (f"ppn {resp.ppn:#x} r={int(resp.r)} w={int(resp.w)}" if resp.ok else ""),
                "cause": f"{resp.cause} {CAUSE_NAMES.get(resp.cause, '')}".strip()
                if resp.cause
                else "",
            }
        )
    fqt = rp.iommu.regs.fqt
    if json_out:
        print(json.dumps({"translations": rows, "fault_records": fqt}, indent=1))
        return
    con = Console(highlight=False)
    t = Table(title="RISC-V IOMMU walkthrough: 3-level DDT, Sv39 NIC, two-stage GPU")
    for col in ("request", "device", "iova", "status", "pa", "cause"):
        t.add_column(col)
    for r in rows:
        style = "green" if r["status"] == "success" and not r["cause"] else "red"
        t.add_row(
            *(r[k] for k in ("request", "device", "iova")),
            f"[{style}]{r['status']}[/]",
            r["pa"],
            r["cause"],
        )
    con.print(t)
    con.print(f"fault queue: {fqt} record(s) written\n")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "demo.json"
        path.write_text(json.dumps(vec), encoding="utf-8")
        two_stage = next(
            i
            for i, s in enumerate(vec["steps"])
            if s.get("label") == "GPU (PASID 5) two-stage write"
        )
        con.print(f"[bold]Explanation of step {two_stage}: {vec['steps'][two_stage]['label']}[/]")
        try:
            from iommusim.conformance.explain import explain_vector_step
        except ImportError:  # pragma: no cover - the explainer ships with the package
            return
        explain_vector_step(path, two_stage, json_out=False)
