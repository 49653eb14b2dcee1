"""The process page table walked by the hardware: a RISC-V IOMMU translating a device's
PASID-tagged requests through a process context whose ``fsc`` is ``riscv_atp(mm.table())``
(Shared Virtual Addressing; riscv-iommu: "Process-context fields", "Process to translate an IOVA").

A notifier stands in for the SVA layer: on ``invalidate`` it queues IOTINVAL.VMA for the
process's PSCID (per page for small leaf-only ranges, else the whole address space when
tables were freed or the range is large) and IOFENCE.C, as the Linux RISC-V driver does
(riscv-iommu: "Guidelines for invalidations"). With it, caches never return a translation
the page table no longer grants; without it, they do -- the bug the notifier exists for.
"""

from __future__ import annotations

from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.riscv.queues import CMD_IODIR, CMD_IOFENCE, CMD_IOTINVAL
from iommusim.bits.riscv.regs import CQCSR_CQEN, MODE_1LVL, OFF_CQB, OFF_CQCSR, OFF_CQT, OFF_DDTP
from iommusim.bits.riscv.structures import DC_FSC, DC_TC, PC_TA
from iommusim.hw.riscv.context import PD8
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, CacheParams
from iommusim.hw.riscv.transaction import Request
from iommusim.mem import SparseMemory
from iommusim.sw.mm import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, Mm
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.riscv import riscv_atp

P: Final = 0x1000
M2: Final = 1 << 21
POOL: Final = 0x8000_0000
DID: Final = 9
PASID: Final = 5
PSCID: Final = 0x77
RW: Final = PROT_READ | PROT_WRITE
#: Load, store, instruction page faults (privileged spec "Exception codes").
FAULTS: Final = (13, 15, 12)
#: Linux RISCV_IOMMU_IOTLB_INVAL_LIMIT.
INVAL_LIMIT: Final = M2


class Machine:
    """RAM, an IOMMU (PD8 process directory) and one process bound to the device."""

    def __init__(self, fmt: str = "sv48", caches: CacheParams | None = None) -> None:
        self.ram = SparseMemory()
        params = PRESETS["full"]
        if caches is not None:
            params = params.with_(caches=caches)
        self.iommu = RiscvIommu(self.ram, params)
        self.pages = PageAllocator(self.ram, POOL, 1024 * P)
        self.cq = self.pages.alloc_page()
        self.tail = 0
        self.iommu.write_register(OFF_CQB, 8, (self.cq >> 12) << 10 | 5)  # 64 entries
        self.iommu.write_register(OFF_CQCSR, 4, CQCSR_CQEN)
        self.mm = Mm(self.ram, self.pages, fmt, name="proc")
        self.mm.pasid = PASID
        # DC: process directory PD8 (riscv-iommu: "Process-Directory-Table (PDT)"); the
        # process context of PASID points at the CPU page table.
        self.pdt = self.pages.alloc_page()
        ddt = self.pages.alloc_page()
        dc = (DC_TC.encode(v=1, pdtv=1), 0, 0, DC_FSC.encode(mode=PD8, ppn=self.pdt >> 12))
        for k, w in enumerate(dc):
            self.ram.write64(ddt + DID * 64 + 8 * k, w)
        self.ram.write64(self.pdt + PASID * 16 + 8, riscv_atp(self.mm.table()))
        self.ram.write64(self.pdt + PASID * 16, PC_TA.encode(v=1, pscid=PSCID))
        self.iommu.write_register(OFF_DDTP, 8, (ddt >> 12) << 10 | MODE_1LVL)
        self.invalidations: list[tuple[int, int, bool]] = []
        self.released = False

    def command(self, value: int) -> None:
        self.ram.write(self.cq + self.tail * 16, value.to_bytes(16, "little"))
        self.tail = (self.tail + 1) % 64
        self.iommu.write_register(OFF_CQT, 4, self.tail)
        self.iommu.process_commands()

    def flush_all(self) -> None:
        self.command(CMD_IOTINVAL.encode(opcode=1, func3=0, pscv=1, pscid=PSCID))
        self.command(CMD_IOFENCE.encode(opcode=2, pr=1, pw=1))

    # -- MmuNotifier -----------------------------------------------------------------------
    def invalidate(self, mm: Mm, start: int, end: int, tables_freed: bool) -> None:
        self.invalidations.append((start, end, tables_freed))
        if tables_freed or end - start >= INVAL_LIMIT:
            self.command(CMD_IOTINVAL.encode(opcode=1, func3=0, pscv=1, pscid=PSCID))
        else:
            for page in range(start, end, P):
                self.command(
                    CMD_IOTINVAL.encode(
                        opcode=1, func3=0, pscv=1, pscid=PSCID, av=1, addr=page >> 12
                    )
                )
        self.command(CMD_IOFENCE.encode(opcode=2, pr=1, pw=1))

    def release(self, mm: Mm) -> None:
        # Linux riscv_iommu_sva: the process context is cleared and its caches invalidated
        # before the address space goes.
        self.released = True
        self.ram.write64(self.pdt + PASID * 16, 0)
        self.command(CMD_IODIR.encode(opcode=3, func3=1, dv=1, did=DID, pid=PASID))
        self.flush_all()

    # -- device side -----------------------------------------------------------------------
    def dma(self, va: int, access: int) -> int:
        """PA, or -cause: access 0 read, 1 write, 2 instruction fetch."""
        if access == 2:
            r = self.iommu.translate(
                Request(DID, va, pid_valid=True, process_id=PASID, exec_req=True)
            )
            return r.pa if r.ok else -r.cause
        return self.iommu.translate_pa(DID, va, access == 1, process_id=PASID)

    def allowed(self, va: int, access: int) -> int:
        """What the page table grants now: PA or -cause."""
        found = self.mm.pgtable.lookup(va)
        pa = self.mm.translate(va)
        vma = self.mm.find_vma(va)
        if found is None or pa is None or vma is None:
            return -FAULTS[access]
        prot = vma.prot
        ok = (prot & (PROT_READ | PROT_WRITE), prot & PROT_WRITE, prot & PROT_EXEC)[access]
        return pa if ok else -FAULTS[access]


def test_device_accesses_go_through_the_process_page_table() -> None:
    m = Machine()
    mm = m.mm
    a = mm.mmap(2 * P, RW | PROT_EXEC)
    assert m.dma(a, 0) == -13  # not faulted in yet: demand paging
    # The I/O page-fault path: the device's fault becomes a remote fault_in, then a retry.
    assert mm.fault_in(a + 0x10, write=True, remote=True)
    pa = m.dma(a + 0x10, 1)
    assert pa == mm.translate(a + 0x10)
    m.ram.write(pa, b"from the device")
    assert mm.read(a + 0x10, 15) == b"from the device"
    mm.write(a + P, b"from the cpu")
    pa1 = m.dma(a + P, 0)
    assert pa1 > 0 and m.ram.read(pa1, 12) == b"from the cpu"
    assert m.dma(a + P, 2) == pa1
    assert mm.stats.remote_faults == 1 and mm.stats.cpu_faults == 1


def test_without_the_notifier_the_iotlb_goes_stale() -> None:
    """The negative control: with nobody invalidating, a cached translation survives munmap
    and reaches a page the allocator may hand to someone else."""
    m = Machine()
    a = m.mm.mmap(P, RW)
    m.mm.write(a, b"x")
    pa = m.dma(a, 1)
    assert pa > 0
    m.mm.munmap(a, P)
    assert m.dma(a, 1) == pa  # stale
    m.mm.register_notifier(m)
    b = m.mm.mmap(P, RW, addr=a)
    m.mm.write(b, b"y")
    assert m.dma(b, 1) == pa  # (the same page, by luck of the allocator)
    m.mm.munmap(b, P)
    assert m.dma(b, 1) == -15


def test_downgrade_reaches_the_device() -> None:
    m = Machine()
    mm = m.mm
    mm.register_notifier(m)
    a = mm.mmap(3 * P, RW)
    mm.write(a, bytes(3 * P))
    assert all(m.dma(a + k * P, 1) > 0 for k in range(3))  # cached writable
    mm.mprotect(a + P, P, PROT_READ)
    assert m.dma(a + P, 1) == -15 and m.dma(a + P, 0) > 0
    assert m.dma(a, 1) > 0 and m.dma(a + 2 * P, 1) > 0
    mm.mprotect(a, 3 * P, PROT_NONE)
    assert [m.dma(a + k * P, 0) for k in range(3)] == [-13] * 3
    assert m.invalidations == [(a + P, a + 2 * P, False), (a, a + 3 * P, False)]


def test_exit_releases_the_process_context_first() -> None:
    m = Machine()
    base = m.pages.nr_allocated
    m.mm.register_notifier(m)
    a = m.mm.mmap(P, RW)
    m.mm.write(a, b"x")
    assert m.dma(a, 0) > 0
    m.mm.exit()
    assert m.released and m.invalidations == []
    assert m.dma(a, 0) < 0  # no valid process context any more
    assert m.pages.nr_allocated == base - 1  # the root table went too


Op = tuple[str, int, int, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(["mmap", "munmap", "mprotect", "touch", "remote"]),
        st.integers(0, 71),
        st.integers(1, 24),
        st.integers(0, 7),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops, fmt=st.sampled_from(["sv39", "sv48", "sv57"]), small=st.booleans())
def test_caches_never_grant_more_than_the_page_table(ops: list[Op], fmt: str, small: bool) -> None:
    """After every operation, every page of the window is probed for a read, a write and an
    instruction fetch: a success must be exactly what the page table grants now. A fault
    where the table grants the access is allowed only as a stale permission upgrade (no
    invalidation is needed to gain a permission) and must disappear after a full flush."""
    m = Machine(fmt, CacheParams(2, 2, 4) if small else None)
    mm = m.mm
    mm.register_notifier(m)
    base = 0x4000_0000 + M2 - 24 * P  # straddles two level-0 tables
    mm.mmap(72 * P, RW, addr=base, fixed=True, populate=True)
    for kind, off, n, prot in ops:
        va = base + off * P
        if kind == "mmap":
            mm.mmap(n * P, prot, addr=va, fixed=True, populate=bool(prot & 1))
        elif kind == "munmap":
            mm.munmap(va, n * P)
        elif kind == "mprotect":
            vma = mm.find_vma(va)
            if vma is not None:  # the covered part of the range
                mm.mprotect(va, min(n * P, vma.end - va), prot)
        else:
            mm.fault_in(va, write=bool(prot & 2), exec_=bool(prot & 4), remote=kind == "remote")
        probes = [base + k * P for k in range(72)]
        spurious = []
        for p in probes:
            for access in range(3):
                got, want = m.dma(p, access), m.allowed(p, access)
                if got != want:
                    assert got == -FAULTS[access] and want >= 0, (
                        f"{kind} {p:#x} access {access}: device {got}, table {want}"
                    )
                    spurious.append((p, access))
        if spurious:
            m.flush_all()
            for p, access in spurious:
                assert m.dma(p, access) == m.allowed(p, access)
    mm.exit()
    assert m.pages.nr_allocated == 3  # cq, pdt, ddt
