"""The RISC-V IOMMU driver: probe, directory, queues, interrupts, attach (Linux iommu.c).

Everything reaches the hardware through :class:`~iommusim.sw.drivers.mmio.Mmio` and
loads/stores to RAM (DESIGN rule 2). The flows follow the Linux driver (reference digest
section 4.1) and the spec's software guidelines (riscv-iommu: "Guidelines for invalidations",
"Changing device directory table entry").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from iommusim.bits.pcie import (
    PRG_INVALID_REQUEST,
    PRG_RESPONSE_FAILURE,
    PRG_SUCCESS,
    prg_response_payload,
)
from iommusim.bits.riscv.causes import CAUSE_NAMES
from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import (
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
    MODE_1LVL,
    MODE_3LVL,
    MODE_BARE,
    MODE_OFF,
    MSI_TABLE_MAX,
    OFF_CAPABILITIES,
    OFF_CQCSR,
    OFF_DDTP,
    OFF_FCTL,
    OFF_ICVEC,
    OFF_IPSR,
    OFF_MSI_CFG_TBL,
    cap,
)
from iommusim.bits.riscv.structures import DC_FSC, DC_IOHGATP, DC_TA, DC_TC, PC_TA
from iommusim.errors import Busy, InvalidArgument, NoDevice, NotSupported, OutOfMemory
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.core.device import Device, Fault
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_IDENTITY, Domain
from iommusim.sw.core.ida import Ida
from iommusim.sw.core.ops import (
    CAP_CACHE_COHERENCY,
    CAP_DIRTY_TRACKING,
    CAP_ENFORCE_CACHE_COHERENCY,
)
from iommusim.sw.drivers.mmio import Mmio
from iommusim.sw.drivers.riscv.commands import (
    Command,
    ats_inval,
    ats_prgr,
    iodir_inval_ddt,
    iodir_inval_pdt,
    iotinval_gvma,
    iotinval_vma,
)
from iommusim.sw.drivers.riscv.ddt import DeviceDirectory
from iommusim.sw.drivers.riscv.domain import (
    AD_UPDATE_MASK,
    ATS_INVAL_ALL,
    Bonded,
    RiscvPagingDomain,
    first_stage_formats,
    gstage_format,
    pgtable_format,
)
from iommusim.sw.drivers.riscv.nested import RiscvNestedDomain, RiscvNestParentDomain
from iommusim.sw.drivers.riscv.pdt import PD8, PD17, PD20, PD_PID_BITS, ProcessDirectory
from iommusim.sw.drivers.riscv.queues import (
    POLL_LIMIT,
    CommandQueue,
    FaultQueue,
    PageRequestQueue,
    PageRequestRecord,
)
from iommusim.sw.iommufd import uapi, uapi_riscv
from iommusim.sw.iopf.queue import PERM_EXEC, PERM_PRIV, PERM_READ, PERM_WRITE, PageFault
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.riscv import riscv_atp

if TYPE_CHECKING:
    from iommusim.sw.core.ops import Reporter
    from iommusim.sw.core.userdata import UserData
    from iommusim.sw.core.viommu import ViommuCore, ViommuOps
    from iommusim.sw.mm.mm import Mm

__all__ = ["IrqController", "RiscvIommuDriver"]

_TC_V: Final = DC_TC["v"].mask
_TC_EN_ATS: Final = DC_TC["en_ats"].mask
_TC_EN_PRI: Final = DC_TC["en_pri"].mask
_TC_PRPR: Final = DC_TC["prpr"].mask
_TC_PDTV: Final = DC_TC["pdtv"].mask
_TC_DPE: Final = DC_TC["dpe"].mask
_PC_V: Final = PC_TA["v"].mask
_PC_PSCID: Final = PC_TA["pscid"]
#: iommu_page_response codes (success, invalid, failure) as PCIe PRG Response Codes.
_PRG_CODES: Final = {0: PRG_SUCCESS, 1: PRG_INVALID_REQUEST, 2: PRG_RESPONSE_FAILURE}
_FSC_MODE: Final = DC_FSC["mode"]
_IOHGATP_MODE: Final = DC_IOHGATP["mode"]
_IOHGATP_GSCID: Final = DC_IOHGATP["gscid"]
_TA_PSCID: Final = DC_TA["pscid"]
#: Linux RISCV_IOMMU_MAX_PSCID: PSCIDs come from [1, 2^20 - 1].
MAX_PSCID: Final = (1 << 20) - 1
#: GSCIDs come from [1, 2^16 - 1] (riscv-iommu: "iohgatp", GSCID field).
MAX_GSCID: Final = (1 << DC_IOHGATP["gscid"].width) - 1
#: IOMMU_HWPT_ALLOC_* flags of paging domains: DIRTY_TRACKING needs capabilities.AMO_HWAD.
_PAGING_FLAGS_NO_HWAD: Final = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT | uapi.IOMMU_HWPT_ALLOC_PASID
_PAGING_FLAGS: Final = _PAGING_FLAGS_NO_HWAD | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
#: Command opcodes the driver's statistics count (riscv-iommu: "IOMMU command opcodes").
_COUNTED_OPCODES: Final = {1: "iotinval", 3: "iodir"}
# The driver's interrupt causes in ipsr order, and the vector Linux assigns each of them.
_CAUSES: Final = (
    (IPSR_CIP, ICVEC_CIV_SHIFT, 0),
    (IPSR_FIP, ICVEC_FIV_SHIFT, 1),
    (IPSR_PIP, ICVEC_PIV_SHIFT, 2),
    (IPSR_PMIP, ICVEC_PMIV_SHIFT, 3),
)


class IrqController(Protocol):
    def request_irq(self, identity: int, handler: Callable[[], None]) -> None: ...

    def free_irq(self, identity: int) -> None: ...


@dataclass(slots=True)
class _DevState:
    """What the driver keeps per device (Linux ``riscv_iommu_info`` plus PASID state)."""

    ats: bool = False  # tc.EN_ATS, and ATS enabled in the device
    pri: bool = False  # tc.EN_PRI and PRPR, and PRI enabled in the device
    pdt: ProcessDirectory | None = None  # tc.PDTV = DPE = 1: RID traffic uses PC 0
    rid_ctx: tuple[int, int, bool] = (0, 0, False)  # fsc, ta, valid of the RID translation
    iohgatp: int = 0  # DC.iohgatp of the RID translation (0: no G-stage)
    ade: int = 0  # DC.tc.SADE/GADE: the IOMMU updates the RID domain's A/D bits
    ats_on: bool = False  # the device's ATS enable bit has been set


class _StaticDomain(Domain):
    """The identity and blocking domains: no page table, only a device-context state."""

    def __init__(self, driver: RiscvIommuDriver, domain_type: int) -> None:
        super().__init__(domain_type, driver)
        self.driver = driver
        self.supports_pasid = domain_type == DOMAIN_BLOCKED  # a PASID can be blocked

    def attach_dev(self, dev: Device, old: Domain | None) -> None:
        # Identity: fsc Bare with tc.V = 1 (pass-through); blocked: tc.V = 0, so every DMA
        # faults with "DDT entry not valid" (riscv-iommu cause 258).
        valid = self.type == DOMAIN_IDENTITY
        self.driver.set_rid_context(dev, 0, 0, valid)
        if isinstance(old, Bonded):
            old.bond_unlink(dev, None)

    def set_dev_pasid(self, dev: Device, pasid: int, old: Domain | None) -> None:
        # Only the blocking domain: the PASID's process context becomes invalid (requests
        # with it fault "PDT entry not valid", riscv-iommu cause 266).
        if self.type != DOMAIN_BLOCKED:
            super().set_dev_pasid(dev, pasid, old)
        self.driver.clear_pasid_context(dev, pasid)
        if old is not None and old is not self:
            old.remove_dev_pasid(dev, pasid)


class RiscvIommuDriver:
    """One RISC-V IOMMU instance, its device directory and its queues.

    ``rids`` are the requester ids behind this IOMMU (its firmware description). ``irq`` is
    the interrupt controller MSIs are delivered through: vector ``v`` of the IOMMU's MSI
    configuration table writes identity ``irq_base + v`` to ``msi_pa``.
    """

    name: str

    def __init__(
        self,
        bus: PhysicalMemory,
        base_pa: int,
        pages: PageAllocator,
        irq: IrqController,
        *,
        msi_pa: int,
        irq_base: int = 32,
        rids: range = range(1 << 24),
        cq_entries: int = 8192,
        fq_entries: int = 4096,
        pq_entries: int = 512,
        pscid_ida: Ida | None = None,
        name: str = "riscv-iommu0",
    ) -> None:
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
        self.pq_entries = pq_entries
        self.pscid_ida = pscid_ida if pscid_ida is not None else Ida(1, MAX_PSCID)
        #: GSCIDs of nesting parents (riscv-iommu: "iohgatp": a 16-bit GSCID).
        self.gscid_ida = Ida(1, MAX_GSCID)
        self.identity_domain: Domain = _StaticDomain(self, DOMAIN_IDENTITY)
        self.blocked_domain: Domain = _StaticDomain(self, DOMAIN_BLOCKED)
        self.caps = 0
        self.ddt: DeviceDirectory | None = None
        self.cmdq: CommandQueue | None = None
        self.fltq: FaultQueue | None = None
        self.priq: PageRequestQueue | None = None
        self._devs: dict[int, _DevState] = {}
        self.mode = MODE_OFF
        self.vectors = 0
        #: Where faults and page requests read from the queues go (the core's handle, given
        #: at registration); None: faults are only counted, page requests answered invalid.
        self.reporter: Reporter | None = None
        self.faults_seen = 0
        self.cq_errors: list[str] = []
        self.stats = {
            "iotinval": 0,
            "iodir": 0,
            "iofence": 0,
            "irqs": 0,
            "ats_inval": 0,
            "prgr": 0,
            "page_requests": 0,
            "stop_markers": 0,
        }

    def registered(self, reporter: Reporter) -> None:
        """iommu_device_register: faults and page requests now go to ``reporter``."""
        self.reporter = reporter

    # ------------------------------------------------------------------ probe
    def probe(self) -> None:
        """riscv_iommu_init: check, interrupts, queues, device directory."""
        m = self.mmio
        ddtp = m.readq(OFF_DDTP)
        if ddtp & DDTP_BUSY:
            raise Busy(f"{self.name}: ddtp.busy is set at probe")
        if ddtp & DDTP_MODE_MASK not in (MODE_OFF, MODE_BARE):
            raise Busy(
                f"{self.name}: the IOMMU is already translating "
                f"(ddtp.iommu_mode {ddtp & DDTP_MODE_MASK})"
            )
        self.caps = caps = m.readq(OFF_CAPABILITIES)
        fctl = m.readl(OFF_FCTL)
        want = fctl & ~(FCTL_BE | FCTL_WSI)  # little-endian, message-signalled interrupts
        if want != fctl:
            m.writel(OFF_FCTL, want)
            if m.readl(OFF_FCTL) != want:
                raise InvalidArgument(
                    f"{self.name}: fctl must allow little-endian MSI operation, not "
                    f"{m.readl(OFF_FCTL):#x} (capabilities.END/IGS)"
                )
        if caps >> cap.IGS & 3 == 1:
            raise NotSupported(f"{self.name}: wired-only interrupts are not supported")
        pgtable_format(caps)  # ENODEV when no first-stage mode is supported
        # Like Linux's devm-managed probe, a failure undoes every step before it.
        try:
            self._setup_irqs()
            self.cmdq = CommandQueue(m, self.mem, self.pages, self.cq_entries)
            self.fltq = FaultQueue(m, self.mem, self.pages, self.fq_entries)
            if caps >> cap.ATS & 1:
                # Page requests arrive only from ATS devices with PRI (riscv-iommu: "PCIe ATS
                # Page Request handling"); the queue is set up like the other two.
                self.priq = PageRequestQueue(m, self.mem, self.pages, self.pq_entries)
            self._set_ddt_mode(MODE_3LVL)
        except BaseException:
            self._teardown()
            raise

    def _teardown(self) -> None:
        for q in (self.priq, self.fltq, self.cmdq):
            if q is not None:
                q.release()
        self.cmdq = self.fltq = self.priq = None
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
            raise NoDevice(
                f"{self.name}: icvec read back {m.readq(OFF_ICVEC):#x}, wrote {icvec:#x}"
            )
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
        elif bit == IPSR_PIP:
            self.process_page_requests()
        else:
            self.mmio.writel(OFF_IPSR, bit)

    def process_faults(self) -> int:
        """The fault-queue interrupt thread: clear ipsr.fip, then consume the records."""
        if self.fltq is None:
            return 0
        self.mmio.writel(OFF_IPSR, IPSR_FIP)
        return self.fltq.drain(self._fault)

    def process_page_requests(self) -> int:
        """The page-request interrupt thread (riscv-iommu "Guidelines for page requests"):
        clear ipsr.pip, consume the records, report each to the core; on overflow the core
        drops partial groups (their last request may be lost; the IOMMU answered it)."""
        if self.priq is None:
            return 0
        self.mmio.writel(OFF_IPSR, IPSR_PIP)
        n, overflowed = self.priq.drain(self._page_request)
        if overflowed and self.reporter is not None:
            self.reporter.page_requests_lost()
        return n

    def _page_request(self, rec: PageRequestRecord) -> None:
        self.stats["page_requests"] += 1
        perm = (
            (PERM_READ if rec.read else 0)
            | (PERM_WRITE if rec.write else 0)
            | (PERM_EXEC if rec.exec_ else 0)
            | (PERM_PRIV if rec.priv else 0)
        )
        fault = PageFault(rec.pid if rec.pv else None, rec.prgi, perm, rec.addr, rec.last)
        if rec.last and not rec.read and not rec.write:
            # A Stop Marker (PCIe "Stop Marker Messages"): the device is done with the PASID;
            # it needs no response and there is nothing to fault in.
            self.stats["stop_markers"] += 1
        elif self.reporter is not None:
            self.reporter.page_request(rec.did, fault)
        elif rec.last:
            self.page_response(rec.did, fault.pasid, rec.prgi, 1)

    def page_response(self, rid: int, pasid: int | None, grpid: int, code: int) -> None:
        """Answer a Page Request Group with ATS.PRGR (riscv-iommu: "IOMMU PCIe ATS
        commands"): ``code`` 0 success, 1 invalid, 2 failure (PCIe code 0xF); the PASID goes
        back when the request carried one. The command needs no fence."""
        # A PCIe requester id is 16 bits and a group index 9 (PCIe "Page Request Group
        # Response Message"); the fields are the record's, so they fit.
        payload = prg_response_payload(grpid & 0x1FF, _PRG_CODES[code], rid & 0xFFFF)
        self.stats["prgr"] += 1
        self.command(ats_prgr(rid, payload, pid=pasid))

    def _fault(self, rec: FaultRecord) -> None:
        self.faults_seen += 1
        if self.reporter is not None:
            # TTYP 3 and 7 are writes (riscv-iommu: "Fault record TTYP field encodings").
            self.reporter.fault(
                Fault(
                    rid=rec.did,
                    iova=rec.iotval,
                    pasid=rec.pid if rec.pv else None,
                    write=rec.ttyp in (3, 7),
                    reason=CAUSE_NAMES.get(rec.cause, "?"),
                    record=rec,
                )
            )

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
            raise NoDevice(f"{self.name}: no device-directory mode accepted (ddtp reads {got:#x})")
        self.mode = mode
        self.ddt = DeviceDirectory(
            self.mem, self.pages, root, mode, extended=bool(self.caps >> cap.MSI_FLAT & 1)
        )
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
        # ATS is used whenever both ends support it; tc.EN_ATS is written with the first
        # domain, the device's enable bit after that (riscv-iommu "Guidelines for enabling
        # and disabling ATS and/or PRI").
        ats = dev.ats and dev.pci is not None and bool(self.caps >> cap.ATS & 1)
        self._devs[dev.rid] = _DevState(ats=ats)
        dev.iommu = self

    def release_device(self, dev: Device) -> None:
        """The device leaves: ATS and PRI off in the device, then the context is cleared
        (the core has already attached the blocking domain and detached every PASID)."""
        st = self._devs.pop(dev.rid, None)
        if st is not None and self.ddt is not None:
            if dev.pci is not None:
                if st.pri:
                    dev.pci.enable_pri(False)
                if st.ats_on:
                    dev.pci.enable_ats(False)
            pdt = st.pdt
            if pdt is not None or st.ats:
                # The old tc (read back from memory) decides what is flushed: the IOTLB, and
                # the ATC when EN_ATS was set.
                self._devs[dev.rid] = _DevState()
                self.iodir_update(dev, 0, 0, False)
                del self._devs[dev.rid]
            if pdt is not None:
                pdt.destroy()
        dev.iommu = None

    def ats_enabled(self, dev: Device) -> bool:
        st = self._devs.get(dev.rid)
        return st is not None and st.ats

    def def_domain_type(self, dev: Device) -> int | None:
        return None

    def domain_alloc_sva(self, dev: Device, mm: Mm) -> Domain:
        """An SVA domain for ``mm`` on this IOMMU: the process's own page table, reached
        through a process context, tagged with a PSCID of its own."""
        from iommusim.sw.drivers.riscv.sva import RiscvSvaDomain

        if not self.caps >> cap.PD8 & 7:  # PD8, PD17, PD20 are adjacent capability bits
            raise NotSupported(
                f"{self.name}: no process-directory support (capabilities PD8/PD17/PD20)"
            )
        satp = riscv_atp(mm.table())
        bit = {8: cap.SV39, 9: cap.SV48, 10: cap.SV57}.get(satp >> 60)
        if bit is None or not self.caps >> bit & 1:
            raise NotSupported(
                f"{self.name}: cannot walk the page-table format of "
                f"{mm.name} (satp.MODE {satp >> 60})"
            )
        pscid = self.pscid_ida.alloc()
        if pscid is None:
            raise OutOfMemory(f"{self.name}: no PSCID left")
        return RiscvSvaDomain(self, mm, pscid)

    def domain_alloc_paging(self, dev: Device) -> Domain:
        return self._alloc_paging(False)

    def _alloc_paging(self, dirty_ops: bool) -> RiscvPagingDomain:
        fmt = pgtable_format(self.caps)
        pscid = self.pscid_ida.alloc()
        if pscid is None:
            raise OutOfMemory(f"{self.name}: no PSCID left")
        try:
            return RiscvPagingDomain(self, fmt, pscid, dirty_ops=dirty_ops)
        except BaseException:
            self.pscid_ida.free(pscid)
            raise

    def domain_alloc_paging_flags(
        self, dev: Device, flags: int = 0, user_data: UserData | None = None
    ) -> Domain:
        """``domain_alloc_paging_flags``: with IOMMU_HWPT_ALLOC_NEST_PARENT a G-stage domain
        other domains can nest in; with IOMMU_HWPT_ALLOC_DIRTY_TRACKING one whose dirty
        pages the IOMMU marks (first-stage D bits with ``DC.tc.SADE``, G-stage D bits with
        ``DC.tc.GADE`` for a nesting parent: :meth:`RiscvPagingDomain.set_dirty_tracking`).
        EOPNOTSUPP for DIRTY_TRACKING without ``capabilities.AMO_HWAD`` or together with
        PASID (``SADE`` is the whole device's: a PASID's domain cannot switch it), for other
        flags and for any user data (Linux 7.3 defines no RISC-V paging data), or when the
        IOMMU has no G-stage format; ENOMEM when no PSCID or GSCID is left.
        IOMMU_HWPT_ALLOC_PASID is accepted: a paging domain can serve PASIDs."""
        dirty = bool(flags & uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
        if flags & ~(_PAGING_FLAGS if self.has_hwad else _PAGING_FLAGS_NO_HWAD):
            raise NotSupported(f"{self.name}: allocation flags {flags:#x} are not supported")
        if dirty and flags & uapi.IOMMU_HWPT_ALLOC_PASID:
            raise NotSupported(f"{self.name}: a dirty-tracking domain cannot serve PASIDs")
        if user_data is not None:
            raise NotSupported(f"{self.name}: no paging-domain data type {user_data.type}")
        nest_parent = bool(flags & uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
        if not nest_parent:
            return self._alloc_paging(dirty)
        self._state(dev)
        fmt = gstage_format(self.caps)
        gscid = self.gscid_ida.alloc()
        if gscid is None:
            raise OutOfMemory(f"{self.name}: no GSCID left")
        try:
            return RiscvNestParentDomain(self, fmt, gscid, dirty_ops=dirty)
        except BaseException:
            self.gscid_ida.free(gscid)
            raise

    def domain_alloc_nested(
        self, dev: Device, parent: Domain, flags: int, user_data: UserData
    ) -> Domain:
        """``domain_alloc_nested`` from iommufd, with the model's RISC-V nested data (not in
        Linux 7.3: :mod:`iommusim.sw.iommufd.uapi_riscv`): the guest's ``fsc`` and ``ta``.
        EOPNOTSUPP for IOMMU_HWPT_ALLOC_PASID (no PASIDs under a G-stage here) or another data
        type; EINVAL for a ``ta`` with more than its PSCID, and as :meth:`alloc_nested`."""
        if flags:
            raise NotSupported(f"{self.name}: nested allocation flags {flags:#x}")
        if user_data.type != uapi_riscv.IOMMU_HWPT_DATA_RISCV_IOMMU:
            raise NotSupported(f"{self.name}: no nested data type {user_data.type:#x}")
        s = uapi_riscv.RISCV_HWPT
        d = s.decode(user_data.copy_from(user_data.type, s.size, s.size))
        ta = d["ta"]
        if ta & ~DC_TA.mask("pscid"):
            raise InvalidArgument(f"{self.name}: guest ta {ta:#x} may only carry a PSCID")
        return self.alloc_nested(parent, d["fsc"], DC_TA.decode(ta)["pscid"])

    # ------------------------------------------------------------------ iommufd
    user_pasid_table = False

    def capable(self, dev: Device, cap: int) -> bool:
        """Coherent DMA (the model's memory is coherent); dirty tracking exactly when the
        IOMMU updates A/D bits in hardware (``capabilities.AMO_HWAD``, as probed; riscv-iommu:
        "IOMMU updating of PTE accessed (A) and dirty (D) updates")."""
        if cap == CAP_DIRTY_TRACKING:
            return self.has_hwad
        return cap in (CAP_CACHE_COHERENCY, CAP_ENFORCE_CACHE_COHERENCY)

    @property
    def has_hwad(self) -> bool:
        """``capabilities.AMO_HWAD`` as probed: ``DC.tc.SADE``/``GADE`` may be set."""
        return bool(self.caps >> cap.AMO_HWAD & 1)

    def hw_info(self, dev: Device, requested_type: int) -> tuple[int, bytes] | None:
        """The model's RISC-V hw_info (not in Linux 7.3: :mod:`iommusim.sw.iommufd.uapi_riscv`):
        the ``capabilities`` and ``fctl`` registers as read now; another requested type is
        EOPNOTSUPP."""
        want = uapi_riscv.IOMMU_HW_INFO_TYPE_RISCV_IOMMU
        if requested_type not in (uapi.IOMMU_HW_INFO_TYPE_DEFAULT, want):
            raise NotSupported(f"{self.name}: no hw_info type {requested_type:#x}")
        info = uapi_riscv.RISCV_HW_INFO.encode(
            capabilities=self.mmio.readq(OFF_CAPABILITIES), fctl=self.mmio.readl(OFF_FCTL)
        )
        return want, bytes(info)

    def get_viommu_size(self, dev: Device, viommu_type: int) -> int:
        """Linux 7.3 has no RISC-V vIOMMU type."""
        return 0

    def viommu_alloc(
        self,
        dev: Device,
        viommu_type: int,
        parent: Domain,
        user_data: UserData | None,
        core: ViommuCore,
    ) -> ViommuOps:
        """Linux 7.3 has no RISC-V vIOMMU type (``get_viommu_size`` 0): EOPNOTSUPP."""
        raise NotSupported(f"{self.name}: no vIOMMU type {viommu_type}")

    def alloc_nested(self, parent: Domain, fsc: int, pscid: int) -> Domain:
        """A first stage the user owns, nested in ``parent``'s G-stage: ``fsc`` is its
        ``iosatp`` (riscv-iommu: "First-Stage context (fsc)": MODE Bare or a first-stage mode
        the IOMMU has, PPN a guest-physical page) and ``pscid`` its address-space ID. EINVAL
        for a parent that is not a nesting parent of this IOMMU, reserved ``fsc`` bits, a mode
        the IOMMU lacks or a PSCID wider than 20 bits."""
        if not isinstance(parent, RiscvNestParentDomain) or parent.driver is not self:
            raise InvalidArgument(f"{parent!r} is not a nesting parent of {self.name}")
        if parent.freed:
            raise InvalidArgument(f"{parent!r} has been freed")
        if fsc & DC_FSC.reserved_mask or not 0 <= fsc < 1 << 64:
            raise InvalidArgument(f"fsc {fsc:#x} sets reserved bits")
        mode = _FSC_MODE.get(fsc)
        if mode and mode not in {f.mode for f in first_stage_formats(self.caps)}:
            raise InvalidArgument(f"fsc.MODE {mode} is not a first-stage mode of {self.name}")
        if not 0 <= pscid <= MAX_PSCID:
            raise InvalidArgument(f"PSCID {pscid:#x} does not fit 20 bits")
        return RiscvNestedDomain(self, parent, fsc, pscid)

    # ------------------------------------------------------------------ device contexts
    def _state(self, dev: Device) -> _DevState:
        st = self._devs.get(dev.rid)
        if st is None or dev.iommu is not self:
            raise NoDevice(f"{dev.name} is not probed on {self.name}")
        return st

    @staticmethod
    def _tc(st: _DevState, valid: bool) -> int:
        tc = _TC_V if valid else 0
        if st.ats:
            tc |= _TC_EN_ATS
        if st.pri:
            tc |= _TC_EN_PRI | _TC_PRPR
        if st.pdt is not None:
            tc |= _TC_PDTV | _TC_DPE
        return tc | st.ade

    def iodir_update(self, dev: Device, fsc: int, ta: int, valid: bool, iohgatp: int = 0) -> None:
        """Point ``dev``'s device context at (fsc, ta), the way Linux iodir_update does.

        riscv-iommu "Changing device directory table entry": a valid context is first made
        invalid and the old context flushed from the directory cache and the IOTLB (by the
        rules of that section, tested on the old values) and from the device's ATC (after
        the IOTLB, "Device Address Translation Cache invalidations"), with a fence, so the
        IOMMU never combines old and new fields; the new fields are written with tc (and V)
        last, then the context is invalidated again and fenced. tc's ATS, PRI and PDT bits
        come from the device's state.
        """
        if self.ddt is None:
            raise NoDevice(f"{self.name}: not probed")
        st = self._state(dev)
        dc = self.ddt.dc_pa(dev.rid)
        assert dc is not None  # alloc=True never returns None
        mem = self.mem
        tc = mem.read64(dc)
        if tc & _TC_V:
            mem.write64(dc, tc & ~_TC_V)
            self.command(iodir_inval_ddt(dev.rid))
            old_fsc = mem.read64(dc + 24)
            old_iohgatp = mem.read64(dc + 8)
            if _IOHGATP_MODE.get(old_iohgatp):
                # "If DC.iohgatp.MODE != Bare": both stages' entries of its GSCID.
                gscid = _IOHGATP_GSCID.get(old_iohgatp)
                self.command(iotinval_vma(gscid=gscid))
                self.command(iotinval_gvma(gscid=gscid))
            elif tc & _TC_PDTV or not _FSC_MODE.get(old_fsc):
                self.command(iotinval_vma())
            else:
                self.command(iotinval_vma(pscid=_TA_PSCID.get(mem.read64(dc + 16))))
            if tc & _TC_EN_ATS:
                self.ats_inval(dev, None, ATS_INVAL_ALL)
            self.sync()
        mem.write64(dc + 8, iohgatp)
        mem.write64(dc + 24, fsc)
        mem.write64(dc + 16, ta)
        # tc last: the context becomes valid only once fsc and ta are in memory (dma_wmb).
        mem.write64(dc, self._tc(st, valid))
        self.command(iodir_inval_ddt(dev.rid))
        self.sync()
        if st.ats and not st.ats_on and dev.pci is not None:
            dev.pci.enable_ats(True)  # "Enable device to use ATS" once the DC is valid
            st.ats_on = True

    def ats_inval(self, dev: Device, pasid: int | None, payload: int) -> None:
        """ATS.INVAL to ``dev``'s ATC (riscv-iommu: "IOMMU PCIe ATS commands"); the next
        IOFENCE.C waits for the device's Invalidation Completion."""
        self.stats["ats_inval"] += 1
        self.command(ats_inval(dev.rid, payload, pid=pasid))

    def set_rid_context(
        self,
        dev: Device,
        fsc: int,
        ta: int,
        valid: bool,
        *,
        iohgatp: int = 0,
        pri: bool = False,
        ade: int = 0,
    ) -> None:
        """Translate ``dev``'s requests without a PASID through (fsc, ta), under the G-stage
        ``iohgatp`` if not 0: the device context itself, or process context 0 once the device
        has a PDT (``tc.DPE`` = 1, riscv-iommu "Process to translate an IOVA": "let
        process_id be the default value of 0"). A G-stage and a PDT do not go together here
        (EOPNOTSUPP): under a G-stage the PDT would be reached by guest-physical address.
        ``pri``: the domain handles I/O page faults, so the device gets PRI (ENODEV when it
        or the IOMMU cannot), enabled once the context is valid. ``ade``: the ``DC.tc.SADE`` /
        ``GADE`` bits the domain needs (its dirty tracking is on: :meth:`set_ad_update`)."""
        st = self._state(dev)
        self._check_ade(ade)
        want_pri = pri and not st.pri
        if want_pri:
            self._check_pri(dev, st)
        if st.pdt is not None and iohgatp:
            raise NotSupported(f"{dev.name} has PASIDs attached: no G-stage for its RID")
        old_pri, old_ade = st.pri, st.ade
        st.pri = st.pri or want_pri
        st.ade = ade
        try:
            if st.pdt is None:
                self.iodir_update(dev, fsc, ta, valid, iohgatp)
            elif want_pri or ade != old_ade:
                # The DC's tc takes EN_PRI or SADE, then PC 0 the RID's context.
                self.iodir_update(dev, st.pdt.pdtp(), 0, True)
                self.pc_update(dev, 0, fsc, (ta | _PC_V) if valid else 0)
            else:
                self.pc_update(dev, 0, fsc, (ta | _PC_V) if valid else 0)
        except BaseException:
            st.pri, st.ade = old_pri, old_ade
            raise
        st.rid_ctx = (fsc, ta, valid)
        st.iohgatp = iohgatp
        if want_pri and dev.pci is not None:
            dev.pci.enable_pri(True)  # after the context is valid (spec guideline)

    def _check_ade(self, ade: int) -> None:
        """``DC.tc.SADE``/``GADE`` may be 1 only with ``capabilities.AMO_HWAD`` (riscv-iommu:
        "Device-context configuration checks"): EOPNOTSUPP otherwise."""
        if ade & ~AD_UPDATE_MASK:
            raise InvalidArgument(f"{ade:#x} is not a set of DC.tc.SADE/GADE bits")
        if ade and not self.has_hwad:
            raise NotSupported(f"{self.name} cannot update A/D bits (capabilities.AMO_HWAD 0)")

    def set_ad_update(self, dev: Device, ade: int) -> None:
        """Make ``DC.tc.SADE``/``GADE`` of ``dev`` equal ``ade`` (riscv-iommu: "Translation
        control (tc)": with SADE/GADE 1 "the IOMMU updates A and D bits in first-stage /
        second-stage PTEs atomically"), keeping the rest of its context: the context is
        rewritten by :meth:`iodir_update`, whose flush of the old context drops the cached
        translations that were built without the update."""
        st = self._state(dev)
        self._check_ade(ade)
        if ade == st.ade:
            return
        old = st.ade
        st.ade = ade
        try:
            if st.pdt is None:
                fsc, ta, valid = st.rid_ctx
                self.iodir_update(dev, fsc, ta, valid, st.iohgatp)
            else:
                self.iodir_update(dev, st.pdt.pdtp(), 0, True)
        except BaseException:
            st.ade = old
            raise

    def _check_pri(self, dev: Device, st: _DevState) -> None:
        """A domain that needs I/O page faults needs PRI on the device and a page-request
        queue: ENODEV otherwise (Intel's driver answers a device without PRI so; Linux's
        RISC-V driver has no IOPF to follow)."""
        if not dev.pri or dev.pci is None:
            raise NoDevice(f"{dev.name} has no PRI capability: it cannot take I/O page faults")
        if not st.ats or self.priq is None:
            raise NoDevice(f"{dev.name}: PRI needs ATS on the device and the IOMMU")

    def pc_update(self, dev: Device, pid: int, fsc: int, ta: int) -> None:
        """Write process context ``pid`` of ``dev`` (riscv-iommu "Changing process directory
        table entry"): a valid PC is first made invalid and flushed (IODIR.INVAL_PDT, then
        IOTINVAL.VMA by its old PSCID, then the device's ATC for that PASID, then IOFENCE.C);
        the new fsc is written before ta, whose V bit makes it valid; then IODIR.INVAL_PDT and
        IOFENCE.C again."""
        st = self._state(dev)
        assert st.pdt is not None
        pc = st.pdt.pc_pa(pid)
        assert pc is not None  # alloc=True never returns None
        mem = self.mem
        old_ta = mem.read64(pc)
        if old_ta & _PC_V:
            mem.write64(pc, old_ta & ~_PC_V)
            self.command(iodir_inval_pdt(dev.rid, pid))
            if _FSC_MODE.get(mem.read64(pc + 8)):
                self.command(iotinval_vma(pscid=_PC_PSCID.get(old_ta)))
            else:  # a Bare first stage: its entries carry no PSCID to name
                self.command(iotinval_vma())
            if st.ats:
                self.ats_inval(dev, pid or None, ATS_INVAL_ALL)
            self.sync()
        mem.write64(pc + 8, fsc)
        mem.write64(pc, ta)
        self.command(iodir_inval_pdt(dev.rid, pid))
        self.sync()

    def _pdt_mode(self, dev: Device) -> int:
        """The smallest PDT format covering the device's PASID width that the IOMMU has
        (else the widest it has)."""
        have = [
            m
            for m, bit in ((PD8, cap.PD8), (PD17, cap.PD17), (PD20, cap.PD20))
            if self.caps >> bit & 1
        ]
        if not have:
            raise NotSupported(f"{self.name}: no process-directory support")
        fits = [m for m in have if PD_PID_BITS[m] >= dev.pasid_bits]
        return fits[0] if fits else have[-1]

    def _prepare_pasid(self, dev: Device, pasid: int, pri: bool) -> _DevState:
        """Check a PASID attach, then give the device a PDT (RID traffic moves to PC 0) and,
        for a domain that handles page faults, PRI -- each once, in one context update."""
        st = self._state(dev)
        if not dev.max_pasids:
            raise InvalidArgument(f"{dev.name} has no PASID capability")
        if st.iohgatp:
            raise NotSupported(f"{dev.name} translates through a G-stage: no PASIDs under it")
        mode = st.pdt.mode if st.pdt is not None else self._pdt_mode(dev)
        limit = min(dev.max_pasids, 1 << PD_PID_BITS[mode])
        if not 0 < pasid < limit:
            raise InvalidArgument(f"PASID {pasid} is out of range [1, {limit - 1}] for {dev.name}")
        want_pri = pri and not st.pri
        if want_pri:
            self._check_pri(dev, st)
        if st.pdt is not None and not want_pri:
            return st
        pdt = st.pdt
        new_pdt = pdt is None
        if pdt is None:
            pdt = ProcessDirectory(self.mem, self.pages, mode)
            fsc, ta, valid = st.rid_ctx
            pc0 = pdt.pc_pa(0)
            assert pc0 is not None
            self.mem.write64(pc0 + 8, fsc)
            self.mem.write64(pc0, (ta | _PC_V) if valid else 0)
        old_pdt, old_pri = st.pdt, st.pri
        st.pdt = pdt
        st.pri = st.pri or want_pri
        try:
            self.iodir_update(dev, pdt.pdtp(), 0, True)
        except BaseException:
            st.pdt, st.pri = old_pdt, old_pri
            if new_pdt:
                pdt.destroy()
            raise
        if want_pri:
            assert dev.pci is not None
            dev.pci.enable_pri(True)  # after the context is valid (spec guideline)
        return st

    def set_pasid_context(self, dev: Device, pasid: int, fsc: int, pscid: int, pri: bool) -> None:
        """Translate ``dev``'s requests tagged ``pasid`` through first-stage table ``fsc``
        with ``pscid`` (a valid PC, user-only: ENS = SUM = 0)."""
        self._prepare_pasid(dev, pasid, pri)
        self.pc_update(dev, pasid, fsc, _PC_V | _PC_PSCID.put(0, pscid))

    def clear_pasid_context(self, dev: Device, pasid: int) -> None:
        """Block ``dev``'s ``pasid``: its PC becomes invalid and is flushed."""
        st = self._state(dev)
        if st.pdt is not None and st.pdt.pc_pa(pasid, alloc=False) is not None:
            self.pc_update(dev, pasid, 0, 0)
