"""A small SoC builder for the RISC-V IOMMU spec-area tests.

:class:`Soc` plays the role of system software: it owns a :class:`SparseMemory` (wrapped in a
:class:`FaultInjectingMemory` on the IOMMU's side only), a bump page allocator, and helpers that
build the in-memory data structures with the layouts of :mod:`iommusim.bits.riscv` -- DDT
(1/2/3 levels, base or extended DC format per ``capabilities.MSI_FLAT``), PDT (PD8/PD17/PD20),
Sv39/Sv48/Sv39x4/Sv48x4 page tables -- plus the command, fault and page-request queues.

Test modules use the ``soc`` fixture (``PRESETS['full']``, 3-level DDT, FQ and CQ enabled) or
the ``make_soc`` factory for other parameters; with ``--import-mode=importlib`` fixtures are the
way to share this builder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import pytest

from iommusim.bits.fields import Layout
from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.queues import FQ_RECORD, PQ_RECORD
from iommusim.bits.riscv.regs import (
    CQCSR_CQEN,
    CQCSR_CQON,
    FQCSR_FQEN,
    FQCSR_FQON,
    MODE_1LVL,
    MODE_2LVL,
    MODE_3LVL,
    OFF_CQB,
    OFF_CQCSR,
    OFF_CQT,
    OFF_DDTP,
    OFF_FQB,
    OFF_FQCSR,
    OFF_FQH,
    OFF_FQT,
    OFF_PQB,
    OFF_PQCSR,
    OFF_PQH,
    OFF_PQT,
    PQCSR_PQEN,
    PQCSR_PQON,
    cap,
)
from iommusim.bits.riscv.structures import DC_TC, DDTE, PC_FSC, PC_TA, PDTE
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.hw.riscv.transaction import Message, Request, Response
from iommusim.mem import FaultInjectingMemory, SparseMemory
from iommusim.sim import VirtualClock

PAGE: Final = 4096
#: Where the allocator hands out pages: well inside one 1 GiB region, so a single G-stage
#: gigapage (see :meth:`Soc.identity_gstage`) maps every table the builder allocates.
ALLOC_BASE: Final = 0x8000_0000
#: Base of the data pages tests map (outside the allocator's region).
DATA_BASE: Final = 0x1_2000_0000

# (levels, index bits of the root level) per page-table scheme; other levels use 9 bits.
PT_MODES: Final = {
    "sv39": (3, 9),
    "sv48": (4, 9),
    "sv57": (5, 9),
    "sv39x4": (3, 11),
    "sv48x4": (4, 11),
    "sv57x4": (5, 11),
}
#: iosatp / PC.fsc / iohgatp MODE encodings (SXL = GXL = 0).
SATP_MODE: Final = {
    "bare": 0,
    "sv39": 8,
    "sv48": 9,
    "sv57": 10,
    "sv39x4": 8,
    "sv48x4": 9,
    "sv57x4": 10,
}
#: pdtp.MODE encodings and the process_id bits each supports.
PDTP_MODE: Final = {"pd8": 1, "pd17": 2, "pd20": 3}
PDT_LEVELS: Final = {"pd8": 1, "pd17": 2, "pd20": 3}

# Command opcodes (riscv-iommu: "Command-Queue (CQ)").
OP_IOTINVAL: Final = 1
OP_IOFENCE: Final = 2
OP_IODIR: Final = 3
OP_ATS: Final = 4

_LEVELS_TO_MODE: Final = {1: MODE_1LVL, 2: MODE_2LVL, 3: MODE_3LVL}


def tc(**fields: int) -> int:
    """A valid ``DC.tc`` with the given extra fields."""
    return DC_TC.encode(v=1, **fields)


def leaf(pa: int, **flags: int) -> int:
    """A leaf PTE for ``pa``: V, R, W, U, A, D set unless overridden."""
    f = {"v": 1, "r": 1, "w": 1, "x": 0, "u": 1, "a": 1, "d": 1}
    f.update(flags)
    return PTE.encode(ppn=pa >> 12, **f)


class Soc:
    """Memory + IOMMU + the software that programs it (see the module docstring).

    The module constants are repeated as attributes, since test modules reach the builder
    through fixtures rather than by importing this conftest.
    """

    PAGE = PAGE
    DATA_BASE = DATA_BASE
    SATP_MODE = SATP_MODE
    PDTP_MODE = PDTP_MODE
    OP_IOTINVAL = OP_IOTINVAL
    OP_IOFENCE = OP_IOFENCE
    OP_IODIR = OP_IODIR
    OP_ATS = OP_ATS
    tc = staticmethod(tc)
    leaf = staticmethod(leaf)

    def __init__(
        self, params: RiscvIommuParams | None = None, clock: VirtualClock | None = None
    ) -> None:
        self.params = params if params is not None else PRESETS["full"]
        self.ram = SparseMemory()
        self.mem = FaultInjectingMemory(self.ram)
        self.messages: list[Message] = []
        self.clock = clock
        self.iommu = RiscvIommu(self.mem, self.params, self.messages.append, clock=clock)
        self.extended = self.params.has(cap.MSI_FLAT)
        self.dc_size = 64 if self.extended else 32
        self._next = ALLOC_BASE
        self.ddt_levels = 0
        self.ddt_root = 0

    # -- memory ----------------------------------------------------------------------------
    def alloc(self, pages: int = 1, align_pages: int = 1) -> int:
        """Physical address of ``pages`` fresh zero pages aligned to ``align_pages`` pages."""
        align = align_pages * PAGE
        pa = (self._next + align - 1) & ~(align - 1)
        self._next = pa + pages * PAGE
        return pa

    def rd64(self, pa: int) -> int:
        return self.ram.read64(pa)

    def wr64(self, pa: int, value: int) -> None:
        self.ram.write64(pa, value)

    # -- registers -------------------------------------------------------------------------
    def reg(self, offset: int, size: int = 4) -> int:
        return self.iommu.read_register(offset, size)

    def set_reg(self, offset: int, value: int, size: int = 4) -> None:
        self.iommu.write_register(offset, size, value)

    # -- queues ----------------------------------------------------------------------------
    def _enable_queue(
        self, off_b: int, off_csr: int, bits: tuple[int, int], log2sz: int, base: int | None
    ) -> int:
        en, on = bits
        pages = max(1, (1 << log2sz) * 32 // PAGE)
        pa = base if base is not None else self.alloc(pages)
        self.set_reg(off_b, (pa >> 12) << 10 | (log2sz - 1), 8)
        self.set_reg(off_csr, en)
        if not self.reg(off_csr) & on:
            raise AssertionError(f"queue CSR at {off_csr} did not turn on")
        return pa

    def enable_fq(self, log2sz: int = 4, base: int | None = None) -> int:
        """riscv-iommu: "Fault/Event-Queue (FQ)": program fqb and set fqcsr.fqen."""
        self.fq_base = self._enable_queue(
            OFF_FQB, OFF_FQCSR, (FQCSR_FQEN, FQCSR_FQON), log2sz, base
        )
        return self.fq_base

    def enable_cq(self, log2sz: int = 4, base: int | None = None) -> int:
        """riscv-iommu: "Command-Queue (CQ)": program cqb and set cqcsr.cqen."""
        self.cq_base = self._enable_queue(
            OFF_CQB, OFF_CQCSR, (CQCSR_CQEN, CQCSR_CQON), log2sz, base
        )
        return self.cq_base

    def enable_pq(self, log2sz: int = 4, base: int | None = None) -> int:
        """riscv-iommu: "Page-Request-Queue (PQ)": program pqb and set pqcsr.pqen."""
        self.pq_base = self._enable_queue(
            OFF_PQB, OFF_PQCSR, (PQCSR_PQEN, PQCSR_PQON), log2sz, base
        )
        return self.pq_base

    def cmd(self, layout: Layout, **fields: int) -> int:
        """Write a command built with ``layout`` at cqt and advance cqt; returns its index."""
        value = layout.encode(**fields)
        tail = self.reg(OFF_CQT)
        size = 1 << ((self.reg(OFF_CQB, 8) & 0x1F) + 1)
        self.ram.write(self.cq_base + tail * 16, value.to_bytes(16, "little"))
        self.set_reg(OFF_CQT, (tail + 1) % size)
        return tail

    def run(self, max_commands: int | None = None) -> int:
        return self.iommu.process_commands(max_commands)

    def faults(self) -> list[dict[str, int]]:
        """Fault records between fqh and fqt, decoded with FQ_RECORD (fqh is not moved)."""
        size = 1 << ((self.reg(OFF_FQB, 8) & 0x1F) + 1)
        out = []
        i = self.reg(OFF_FQH)
        while i != self.reg(OFF_FQT):
            raw = int.from_bytes(self.ram.read(self.fq_base + i * 32, 32), "little")
            out.append(FQ_RECORD.decode(raw))
            i = (i + 1) % size
        return out

    def causes(self) -> list[int]:
        return [r["cause"] for r in self.faults()]

    def page_requests(self) -> list[dict[str, int]]:
        """PQ records between pqh and pqt decoded with PQ_RECORD."""
        size = 1 << ((self.reg(OFF_PQB, 8) & 0x1F) + 1)
        out = []
        i = self.reg(OFF_PQH)
        while i != self.reg(OFF_PQT):
            raw = int.from_bytes(self.ram.read(self.pq_base + i * 16, 16), "little")
            out.append(PQ_RECORD.decode(raw))
            i = (i + 1) % size
        return out

    # -- device directory ------------------------------------------------------------------
    def set_ddt(self, levels: int = 3) -> int:
        """Allocate a DDT root and point ddtp at it in ``levels``-level mode."""
        self.ddt_levels = levels
        self.ddt_root = self.alloc()
        self.set_reg(OFF_DDTP, (self.ddt_root >> 12) << 10 | _LEVELS_TO_MODE[levels], 8)
        return self.ddt_root

    def ddi(self, did: int) -> tuple[int, int, int]:
        """riscv-iommu: "Process to translate an IOVA" steps 3-4: the DDI split."""
        if self.extended:
            return did & 0x3F, did >> 6 & 0x1FF, did >> 15 & 0x1FF
        return did & 0x7F, did >> 7 & 0x1FF, did >> 16 & 0xFF

    def ddte_addr(self, did: int, level: int) -> int:
        """Address of the non-leaf DDTE at ``level`` (1 or 2) for ``did``, allocating the
        upper levels on the way."""
        ddi = self.ddi(did)
        a = self.ddt_root
        for i in range(self.ddt_levels - 1, level, -1):
            a = self._next_level(a + ddi[i] * 8)
        return a + ddi[level] * 8

    def _next_level(self, pa: int) -> int:
        ddte = self.rd64(pa)
        if not ddte & 1:
            ddte = DDTE.encode(v=1, ppn=self.alloc() >> 12)
            self.wr64(pa, ddte)
        return DDTE.decode(ddte)["ppn"] << 12

    def dc_addr(self, did: int) -> int:
        """Address of the DC for ``did``, allocating non-leaf DDT pages as needed."""
        ddi = self.ddi(did)
        a = self.ddt_root
        for i in range(self.ddt_levels - 1, 0, -1):
            a = self._next_level(a + ddi[i] * 8)
        return a + ddi[0] * self.dc_size

    def write_dc(
        self,
        did: int,
        *,
        tc: int = 1,
        iohgatp: int = 0,
        ta: int = 0,
        fsc: int = 0,
        msiptp: int = 0,
        msi_mask: int = 0,
        msi_pattern: int = 0,
        dw7: int = 0,
    ) -> int:
        """Write a device context (base or extended format); returns its address."""
        pa = self.dc_addr(did)
        words = [tc, iohgatp, ta, fsc]
        if self.extended:
            words += [msiptp, msi_mask, msi_pattern, dw7]
        for k, w in enumerate(words):
            self.wr64(pa + 8 * k, w)
        return pa

    # -- page tables -----------------------------------------------------------------------
    def new_pt(self, mode: str = "sv39") -> int:
        """A root page table for ``mode`` (16 KiB for the x4 G-stage schemes)."""
        pages = 4 if mode.endswith("x4") else 1
        return self.alloc(pages, pages)

    def pte_addr(self, root: int, va: int, mode: str = "sv39", *, level: int = 0) -> int:
        """Address of the PTE that maps ``va`` at ``level``, allocating tables above it."""
        levels, root_bits = PT_MODES[mode]
        a = root
        for i in range(levels - 1, level - 1, -1):
            bits = root_bits if i == levels - 1 else 9
            pa = a + (va >> (12 + 9 * i) & ((1 << bits) - 1)) * 8
            if i == level:
                return pa
            pte = self.rd64(pa)
            if not pte & 1:
                pte = PTE.encode(v=1, ppn=self.alloc() >> 12)
                self.wr64(pa, pte)
            a = PTE.decode(pte)["ppn"] << 12
        raise AssertionError("unreachable")

    def map(
        self,
        root: int,
        va: int,
        pa: int,
        mode: str = "sv39",
        *,
        level: int = 0,
        pte: int | None = None,
        **flags: int,
    ) -> int:
        """Map ``va`` to ``pa`` with a leaf at ``level`` (0: 4 KiB, 1: 2 MiB, 2: 1 GiB).

        ``flags`` override the PTE fields of :func:`leaf`; ``pte`` gives the raw entry.
        Returns the PTE's address.
        """
        a = self.pte_addr(root, va, mode, level=level)
        self.wr64(a, leaf(pa, **flags) if pte is None else pte)
        return a

    def identity_gstage(self, root: int, mode: str = "sv39x4") -> None:
        """Map the allocator's gigabyte GPA = SPA with a U=1 RWX G-stage gigapage."""
        self.map(
            root, ALLOC_BASE & ~((1 << 30) - 1), ALLOC_BASE & ~((1 << 30) - 1), mode, level=2, x=1
        )

    # -- process directory -----------------------------------------------------------------
    def new_pdt(self) -> int:
        return self.alloc()

    def pc_addr(self, root: int, pid: int, pdt: str = "pd20") -> int:
        """Address of the PC for ``pid`` in a ``pdt``-mode PDT, allocating PDT pages."""
        pdi = (pid & 0xFF, pid >> 8 & 0x1FF, pid >> 17 & 0x7)
        a = root
        for i in range(PDT_LEVELS[pdt] - 1, 0, -1):
            pa = a + pdi[i] * 8
            pdte = self.rd64(pa)
            if not pdte & 1:
                pdte = PDTE.encode(v=1, ppn=self.alloc() >> 12)
                self.wr64(pa, pdte)
            a = PDTE.decode(pdte)["ppn"] << 12
        return a + pdi[0] * 16

    def write_pc(
        self, root: int, pid: int, pdt: str = "pd20", *, ta: int | None = None, fsc: int = 0
    ) -> int:
        """Write a process context (default ``ta``: V=1, ENS=1); returns its address."""
        pa = self.pc_addr(root, pid, pdt)
        self.wr64(pa, PC_TA.encode(v=1, ens=1) if ta is None else ta)
        self.wr64(pa + 8, fsc)
        return pa

    # -- one-call setups -------------------------------------------------------------------
    def s1_device(self, did: int, mode: str = "sv39", **tc_fields: int) -> int:
        """A device with a first-stage ``mode`` table in DC.fsc (PDTV = 0); returns the root."""
        root = self.new_pt(mode)
        self.write_dc(
            did, tc=tc(**tc_fields), fsc=PC_FSC.encode(mode=SATP_MODE[mode], ppn=root >> 12)
        )
        return root

    def translate(self, did: int, iova: int, **kw: object) -> Response:
        return self.iommu.translate(Request(device_id=did, iova=iova, **kw))  # type: ignore[arg-type]


@pytest.fixture
def make_soc() -> Callable[..., Soc]:
    """Factory: ``make_soc(params=None, ddt_levels=3, fq=True, cq=True, pq=False,
    clock=None)``."""

    def make(
        params: RiscvIommuParams | None = None,
        ddt_levels: int | None = 3,
        fq: bool = True,
        cq: bool = True,
        pq: bool = False,
        clock: VirtualClock | None = None,
    ) -> Soc:
        soc = Soc(params, clock)
        if fq:
            soc.enable_fq()
        if cq:
            soc.enable_cq()
        if pq:
            soc.enable_pq()
        if ddt_levels:
            soc.set_ddt(ddt_levels)
        return soc

    return make


@pytest.fixture
def soc(make_soc: Callable[..., Soc]) -> Soc:
    """``PRESETS['full']``, 3-level DDT, fault and command queues enabled."""
    return make_soc()
