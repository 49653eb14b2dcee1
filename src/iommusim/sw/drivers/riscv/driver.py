"""The RISC-V IOMMU driver: probe, directory, queues, interrupts, attach (Linux iommu.c).

Everything reaches the hardware through :class:`~iommusim.sw.drivers.riscv.mmio.Mmio` and
loads/stores to RAM (DESIGN rule 2). The flows follow the Linux driver (reference digest
section 4.1) and the spec's software guidelines (riscv-iommu: "Guidelines for invalidations",
"Changing device directory table entry").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from iommusim.bits.riscv import DC_FSC, DC_TA, DC_TC
from iommusim.errors import Busy, InvalidArgument, NoDevice, NotSupported, OutOfMemory
from iommusim.hw.riscv.faults import CAUSE_NAMES
from iommusim.hw.riscv.params import MODE_1LVL, MODE_3LVL, MODE_BARE, MODE_OFF, cap
from iommusim.hw.riscv.regs import (
    CQCSR_CMD_ILL,
    CQCSR_CMD_TO,
    CQCSR_CQMF,
    CQCSR_FENCE_W_IP,
    DDTP_BUSY,
    DDTP_MODE_MASK,
    DDTP_PPN_SHIFT,
    FCTL_BE,
    FCTL_WSI,
    ICVEC_CIV_SHIFT,
    ICVEC_FIV_SHIFT,
    ICVEC_PIV_SHIFT,
    ICVEC_PMIV_SHIFT,
    IPSR_CIP,
    IPSR_FIP,
    IPSR_PIP,
    IPSR_PMIP,
    MSI_TABLE_MAX,
    OFF_CAPABILITIES,
    OFF_CQCSR,
    OFF_DDTP,
    OFF_FCTL,
    OFF_ICVEC,
    OFF_IPSR,
    OFF_MSI_CFG_TBL,
)
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.core.device import Device, Fault
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_IDENTITY, Domain
from iommusim.sw.core.ida import Ida
from iommusim.sw.drivers.riscv.commands import Command, iodir_inval_ddt, iotinval_vma
from iommusim.sw.drivers.riscv.ddt import DeviceDirectory
from iommusim.sw.drivers.riscv.domain import RiscvPagingDomain, pgtable_format
from iommusim.sw.drivers.riscv.mmio import Mmio
from iommusim.sw.drivers.riscv.queues import POLL_LIMIT, CommandQueue, FaultQueue, FaultRecord
from iommusim.sw.pages import PageAllocator

__all__ = ["IrqController", "RiscvIommuDriver"]

_TC_V: Final = DC_TC["v"].mask
_FSC_MODE: Final = DC_FSC["mode"]
_TA_PSCID: Final = DC_TA["pscid"]
#: Linux RISCV_IOMMU_MAX_PSCID: PSCIDs come from [1, 2^20 - 1].
MAX_PSCID: Final = (1 << 20) - 1
#: Command opcodes the driver's statistics count (riscv-iommu: "IOMMU command opcodes").
_COUNTED_OPCODES: Final = {1: "iotinval", 3: "iodir"}
# The driver's interrupt causes in ipsr order, and the vector Linux assigns each of them.
_CAUSES: Final = ((IPSR_CIP, ICVEC_CIV_SHIFT, 0), (IPSR_FIP, ICVEC_FIV_SHIFT, 1),
                  (IPSR_PIP, ICVEC_PIV_SHIFT, 2), (IPSR_PMIP, ICVEC_PMIV_SHIFT, 3))


class IrqController(Protocol):
    def request_irq(self, identity: int, handler: Callable[[], None]) -> None: ...

    def free_irq(self, identity: int) -> None: ...


class _StaticDomain(Domain):
    """The identity and blocking domains: no page table, only a device-context state."""

    def __init__(self, driver: RiscvIommuDriver, domain_type: int) -> None:
        super().__init__(domain_type, driver)
        self.driver = driver

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        # Identity: fsc Bare with tc.V = 1 (pass-through); blocked: tc.V = 0, so every DMA
        # faults with "DDT entry not valid" (riscv-iommu cause 258).
        valid = self.type == DOMAIN_IDENTITY
        self.driver.iodir_update(dev, 0, 0, valid)
        if isinstance(old, RiscvPagingDomain):
            old.bond_unlink(dev)


class RiscvIommuDriver:
    """One RISC-V IOMMU instance, its device directory and its queues.

    ``rids`` are the requester ids behind this IOMMU (its firmware description). ``irq`` is
    the interrupt controller MSIs are delivered through: vector ``v`` of the IOMMU's MSI
    configuration table writes identity ``irq_base + v`` to ``msi_pa``.
    """

    name: str

    def __init__(self, bus: PhysicalMemory, base_pa: int, pages: PageAllocator,
                 irq: IrqController, *, msi_pa: int, irq_base: int = 32,
                 rids: range = range(1 << 24), cq_entries: int = 8192,
                 fq_entries: int = 4096, pscid_ida: Ida | None = None,
                 name: str = "riscv-iommu0") -> None:
        self.name = name
        self.mmio = Mmio(bus, base_pa)
        self.mem = bus
        self.pages = pages
        self.irq = irq
        self.msi_pa = msi_pa
        self.irq_base = irq_base
        self.rids = rids
        self.cq_entries = cq_entries
        self.fq_entries = fq_entries
        self.pscid_ida = pscid_ida if pscid_ida is not None else Ida(1, MAX_PSCID)
        self.identity_domain: Domain = _StaticDomain(self, DOMAIN_IDENTITY)
        self.blocked_domain: Domain = _StaticDomain(self, DOMAIN_BLOCKED)
        self.caps = 0
        self.ddt: DeviceDirectory | None = None
        self.cmdq: CommandQueue | None = None
        self.fltq: FaultQueue | None = None
        self.mode = MODE_OFF
        self.vectors = 0
        self.on_fault: Callable[[Fault], None] | None = None
        self.faults_seen = 0
        self.cq_errors: list[str] = []
        self.stats = {"iotinval": 0, "iodir": 0, "iofence": 0, "irqs": 0}

    # ------------------------------------------------------------------ probe
    def probe(self) -> None:
        """riscv_iommu_init: check, interrupts, queues, device directory."""
        m = self.mmio
        ddtp = m.readq(OFF_DDTP)
        if ddtp & DDTP_BUSY:
            raise Busy(f"{self.name}: ddtp.busy is set at probe")
        if ddtp & DDTP_MODE_MASK not in (MODE_OFF, MODE_BARE):
            raise Busy(f"{self.name}: the IOMMU is already translating "
                       f"(ddtp.iommu_mode {ddtp & DDTP_MODE_MASK})")
        self.caps = caps = m.readq(OFF_CAPABILITIES)
        fctl = m.readl(OFF_FCTL)
        want = fctl & ~(FCTL_BE | FCTL_WSI)  # little-endian, message-signalled interrupts
        if want != fctl:
            m.writel(OFF_FCTL, want)
            if m.readl(OFF_FCTL) != want:
                raise InvalidArgument(
                    f"{self.name}: fctl must allow little-endian MSI operation, not "
                    f"{m.readl(OFF_FCTL):#x} (capabilities.END/IGS)")
        if caps >> cap.IGS & 3 == 1:
            raise NotSupported(f"{self.name}: wired-only interrupts are not supported")
        pgtable_format(caps)  # ENODEV when no first-stage mode is supported
        # Like Linux's devm-managed probe, a failure undoes every step before it.
        try:
            self._setup_irqs()
            self.cmdq = CommandQueue(m, self.mem, self.pages, self.cq_entries)
            self.fltq = FaultQueue(m, self.mem, self.pages, self.fq_entries)
            self._set_ddt_mode(MODE_3LVL)
        except BaseException:
            self._teardown()
            raise

    def _teardown(self) -> None:
        for q in (self.fltq, self.cmdq):
            if q is not None:
                q.release()
        self.cmdq = self.fltq = None
        for v in range(self.vectors):
            self.irq.free_irq(self.irq_base + v)
        self.vectors = 0

    def _setup_irqs(self) -> None:
        m = self.mmio
        # Discover how many vectors icvec can name (WARL), as Linux checks the read-back.
        m.writeq(OFF_ICVEC, 0xF)
        n = min((m.readq(OFF_ICVEC) & 0xF) + 1, MSI_TABLE_MAX)
        icvec = 0
        for _, shift, vec in _CAUSES:
            icvec |= (vec % n) << shift
        m.writeq(OFF_ICVEC, icvec)
        if m.readq(OFF_ICVEC) & 0xFFFF != icvec:
            raise NoDevice(f"{self.name}: icvec read back {m.readq(OFF_ICVEC):#x}, "
                           f"wrote {icvec:#x}")
        self.vectors = n
        self._icvec = icvec
        for v in range(n):
            base = OFF_MSI_CFG_TBL + 16 * v
            m.writeq(base, self.msi_pa)
            m.writel(base + 8, self.irq_base + v)
            m.writel(base + 12, 0)  # unmasked
            self.irq.request_irq(self.irq_base + v, self._make_handler(v))

    def _make_handler(self, vector: int) -> Callable[[], None]:
        def handler() -> None:
            self.stats["irqs"] += 1
            ipsr = self.mmio.readl(OFF_IPSR)
            for bit, shift, _ in _CAUSES:
                if ipsr & bit and (self._icvec >> shift & 0xF) == vector:
                    self._service(bit)
        return handler

    def _service(self, bit: int) -> None:
        if bit == IPSR_CIP:
            # riscv_iommu_cmdq_process: clear the pending bit, then the error bits.
            self.mmio.writel(OFF_IPSR, IPSR_CIP)
            csr = self.mmio.readl(OFF_CQCSR)
            errs = csr & (CQCSR_CQMF | CQCSR_CMD_TO | CQCSR_CMD_ILL | CQCSR_FENCE_W_IP)
            if errs:
                self.cq_errors.append(f"cqcsr {csr:#x}")
                self.mmio.writel(OFF_CQCSR, (csr & 3) | errs)
        elif bit == IPSR_FIP:
            self.process_faults()
        else:
            self.mmio.writel(OFF_IPSR, bit)

    def process_faults(self) -> int:
        """The fault-queue interrupt thread: clear ipsr.fip, then consume the records."""
        if self.fltq is None:
            return 0
        self.mmio.writel(OFF_IPSR, IPSR_FIP)
        return self.fltq.drain(self._fault)

    def _fault(self, rec: FaultRecord) -> None:
        self.faults_seen += 1
        if self.on_fault is not None:
            # TTYP 3 and 7 are writes (riscv-iommu: "Fault record TTYP field encodings").
            self.on_fault(Fault(rec.did, rec.cause, rec.iotval, rec.pid if rec.pv else None,
                                rec.ttyp in (3, 7), CAUSE_NAMES.get(rec.cause, "?")))

    def _set_ddt_mode(self, mode: int) -> None:
        """riscv_iommu_iodir_set_mode: ask for ``mode``, step down while the WARL refuses."""
        m = self.mmio
        root = self.pages.alloc_page()
        while True:
            m.writeq(OFF_DDTP, (root >> 12) << DDTP_PPN_SHIFT | mode)
            for _ in range(POLL_LIMIT):
                got = m.readq(OFF_DDTP)
                if not got & DDTP_BUSY:
                    break
            else:
                self.pages.free_page(root)
                raise Busy(f"{self.name}: ddtp.busy did not clear")
            got_mode = got & DDTP_MODE_MASK
            if got_mode == mode:
                break
            if got_mode in (MODE_OFF, MODE_BARE) and mode > MODE_1LVL:
                mode -= 1
                continue
            self.pages.free_page(root)
            raise NoDevice(f"{self.name}: no device-directory mode accepted "
                           f"(ddtp reads {got:#x})")
        self.mode = mode
        self.ddt = DeviceDirectory(self.mem, self.pages, root, mode,
                                   extended=bool(self.caps >> cap.MSI_FLAT & 1))
        # Nothing may survive from before: drop every cached context and translation.
        self.command(iodir_inval_ddt())
        self.command(iotinval_vma())
        self.sync()

    # ------------------------------------------------------------------ commands
    def command(self, cmd: Command) -> None:
        if self.cmdq is None:
            raise NoDevice(f"{self.name}: not probed")
        key = _COUNTED_OPCODES.get(cmd[0] & 0x7F)
        if key is not None:
            self.stats[key] += 1
        self.cmdq.send(cmd)

    def sync(self) -> bool:
        if self.cmdq is None:
            raise NoDevice(f"{self.name}: not probed")
        self.stats["iofence"] += 1
        ok = self.cmdq.sync()
        if not ok:
            self.cq_errors.extend(self.cmdq.errors[-1:])
        return ok

    # ------------------------------------------------------------------ core ops
    def owns(self, dev: Device) -> bool:
        return dev.rid in self.rids

    def probe_device(self, dev: Device) -> None:
        """riscv_iommu_probe_device: pre-create the device context with tc = 0."""
        if self.ddt is None or self.mode in (MODE_OFF, MODE_BARE):
            raise NoDevice(f"{self.name}: not translating; {dev.name} needs no IOMMU")
        if not self.owns(dev):
            raise NoDevice(f"{dev.name} (rid {dev.rid:#x}) is not behind {self.name}")
        self.ddt.dc_pa(dev.rid)
        dev.iommu = self

    def release_device(self, dev: Device) -> None:
        dev.iommu = None

    def def_domain_type(self, dev: Device) -> int | None:
        return None

    def domain_alloc_paging(self, dev: Device) -> Domain:
        fmt = pgtable_format(self.caps)
        pscid = self.pscid_ida.alloc()
        if pscid is None:
            raise OutOfMemory(f"{self.name}: no PSCID left")
        try:
            return RiscvPagingDomain(self, fmt, pscid)
        except BaseException:
            self.pscid_ida.free(pscid)
            raise

    # ------------------------------------------------------------------ device contexts
    def iodir_update(self, dev: Device, fsc: int, ta: int, valid: bool) -> None:
        """Point ``dev``'s device context at (fsc, ta), the way Linux iodir_update does.

        riscv-iommu "Changing device directory table entry": a valid context is first made
        invalid and the old context flushed from the directory cache and the IOTLB (with a
        fence), so the IOMMU never combines old and new fields; the new fields are written
        with tc (and V) last, then the context is invalidated again and fenced.
        """
        if self.ddt is None:
            raise NoDevice(f"{self.name}: not probed")
        dc = self.ddt.dc_pa(dev.rid)
        assert dc is not None  # alloc=True never returns None
        mem = self.mem
        tc = mem.read64(dc)
        if tc & _TC_V:
            mem.write64(dc, tc & ~_TC_V)
            self.command(iodir_inval_ddt(dev.rid))
            old_fsc = mem.read64(dc + 24)
            if _FSC_MODE.get(old_fsc):
                self.command(iotinval_vma(pscid=_TA_PSCID.get(mem.read64(dc + 16))))
            else:
                self.command(iotinval_vma())
            self.sync()
        mem.write64(dc + 24, fsc)
        mem.write64(dc + 16, ta)
        # tc last: the context becomes valid only once fsc and ta are in memory (dma_wmb).
        mem.write64(dc, (tc & ~_TC_V) | (_TC_V if valid else 0))
        self.command(iodir_inval_ddt(dev.rid))
        self.sync()
