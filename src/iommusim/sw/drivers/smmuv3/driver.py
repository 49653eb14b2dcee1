"""The Arm SMMUv3 driver (after Linux ``drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c``): probe,
queues, stream table, STE and CD writing, attach, invalidation, events, stalls and PRI.

Everything reaches the hardware through :class:`~iommusim.sw.drivers.mmio.Mmio` and loads /
stores to RAM, with the SMMU's own tables (:mod:`iommusim.bits.arm`) as the only knowledge of
it (DESIGN rule 2). The probe follows ``arm_smmu_device_hw_probe`` and
``arm_smmu_device_reset``: ID registers, queues sized from IDR1 (shrunk when memory is short),
a linear or 2-level stream table by IDR1.SIDSIZE, CR1/CR2, the command queue enabled first,
CFGI_ALL + TLBI_NSNH_ALL + SYNC, then the event and PRI queues, the interrupts (MSIs when
IDR0.MSI; otherwise the queues are drained when software polls, :meth:`process_events`),
GBPA.ABORT, and SMMUEN -- each CR0 write acknowledged through CR0ACK.

STEs and CDs change through :func:`~iommusim.sw.drivers.smmuv3.entries.write_entry`, each
step followed by CFGI_STE / CFGI_CD and CMD_SYNC. Masters get an abort STE at probe
(``arm_smmu_init_initial_stes`` without bypass), a CD table on their first stage 1 attach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from iommusim.bits.arm.smmuv3_queues import (
    CFGI_ALL_RANGE,
    CMD_ATC_INV,
    CMD_CFGI_ALL,
    CMD_CFGI_CD,
    CMD_CFGI_STE,
    CMD_PRI_RESP,
    CMD_RESUME,
    CMD_TLBI_EL2_ASID,
    CMD_TLBI_EL2_VA,
    CMD_TLBI_NH_ASID,
    CMD_TLBI_NH_VA,
    CMD_TLBI_NSNH_ALL,
    CMD_TLBI_S2_IPA,
    CMD_TLBI_S12_VMALL,
    E_PAGE_REQUEST,
    EVENT_LAYOUTS,
    EVENT_NAMES,
    EVENTQ_ENTRY_BYTES,
    EVT_COMMON,
    PRI_RESP_DENY,
    PRI_RESP_FAIL,
    PRI_RESP_SUCCESS,
    PRIQ_ENTRY,
    PRIQ_ENTRY_BYTES,
    Command,
)
from iommusim.bits.arm.smmuv3_regs import (
    CR0,
    CR1,
    CR2,
    GBPA,
    GBPA_UPDATE,
    IDR0,
    IDR1,
    IDR3,
    IDR5,
    IRQ_CTRL,
    OFF,
    STRTAB_BASE_CFG,
    STRTAB_FMT_2LVL,
    STRTAB_FMT_LINEAR,
)
from iommusim.bits.arm.smmuv3_structures import (
    CD,
    CDTAB_L1,
    EATS_ABORT,
    EATS_FULL,
    S1DSS_SSID0,
    S1FMT_4K_L2,
    S1FMT_LINEAR,
    STE,
    STE_CONFIG_ABORT,
    STE_CONFIG_BYPASS,
    STE_CONFIG_S1,
    STE_CONFIG_S2,
    STRTAB_L1,
    STRW_EL2_E2H,
    STRW_NSEL1,
    TG0_4K,
    TG0_16K,
    TG0_64K,
)
from iommusim.bits.arm.vmsa import Granule
from iommusim.errors import Busy, InvalidArgument, NoDevice, NotSupported
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.core.device import Device, Fault
from iommusim.sw.core.domain import DOMAIN_BLOCKED, DOMAIN_IDENTITY, Domain
from iommusim.sw.core.ida import Ida
from iommusim.sw.core.ops import CAP_CACHE_COHERENCY, CAP_PCI_ATS_SUPPORTED, Reporter
from iommusim.sw.drivers.mmio import Mmio
from iommusim.sw.drivers.smmuv3.domain import INV_LIMIT, Smmuv3PagingDomain, Smmuv3StaticDomain
from iommusim.sw.drivers.smmuv3.entries import qwords, used_cd, used_ste, write_entry
from iommusim.sw.drivers.smmuv3.nested import VEVENT_TYPES, Smmuv3NestedDomain
from iommusim.sw.drivers.smmuv3.queues import CommandQueue, OutputQueue
from iommusim.sw.iommufd import uapi
from iommusim.sw.iopf.queue import PERM_EXEC, PERM_PRIV, PERM_READ, PERM_WRITE, PageFault
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import ArmLpaePageTable

if TYPE_CHECKING:
    from iommusim.sw.core.userdata import UserData
    from iommusim.sw.core.viommu import ViommuCore, ViommuOps
    from iommusim.sw.drivers.smmuv3.sva import Smmuv3SvaDomain
    from iommusim.sw.mm.mm import Mm

__all__ = ["EventRecord", "Smmuv3Driver"]

_PAGE: Final = 4096
#: Linux ``STRTAB_SPLIT``: StreamID bits a level-2 stream table resolves.
STRTAB_SPLIT: Final = 8
#: SubstreamID bits up to which a master's CD table is linear (Linux
#: ``CTXDESC_LINEAR_CDMAX``); wider ones use 2-level tables of 64-CD leaves when IDR0.CD2L.
CD_LINEAR_BITS: Final = 10
#: SubstreamID bits a 4KB level-2 CD table resolves (IHI 0070 5.2 S1Fmt = 0b01).
CD_L2_BITS: Final = 6
#: OAS / IPS encodings (IHI 0070 6.3 IDR5.OAS, 5.4 CD.IPS).
_OAS_BITS: Final = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}
_GRANULE_TG0: Final = {4: TG0_4K, 16: TG0_16K, 64: TG0_64K}
#: MAIR as Linux ``arm_lpae`` sets it: attr0 NC, attr1 WBRWA, attr2 device nGnRE.
_MAIR: Final = 0x0004FF44
_CR0_SMMUEN: Final = CR0.mask("smmuen")
_CR0_CMDQEN: Final = CR0.mask("cmdqen")
_CR0_EVENTQEN: Final = CR0.mask("eventqen")
_CR0_PRIQEN: Final = CR0.mask("priqen")
_EVT_STALL: Final = 1 << 95
#: The guest's stage 1 fields of a nested STE (IHI 0070 5.2).
_GUEST_S1: Final = STE.mask(
    "s1fmt", "s1contextptr", "s1cdmax", "s1dss", "s1cir", "s1cor", "s1csh", "eats"
)
#: The iopf core's response codes (0 success, 1 invalid, 2 failure) as CMD_PRI_RESP Resp.
_PRI_RESP: Final = {0: PRI_RESP_SUCCESS, 1: PRI_RESP_DENY, 2: PRI_RESP_FAIL}


class IrqController(Protocol):
    def request_irq(self, identity: int, handler: Callable[[], None]) -> None: ...

    def free_irq(self, identity: int) -> None: ...


@dataclass(frozen=True)
class EventRecord:
    """One event record as the driver decoded it (IHI 0070 7.3): its name and fields."""

    name: str
    fields: dict[str, int]


@dataclass
class _Master:
    """A device behind the SMMU (Linux ``arm_smmu_master``): its StreamID, whether ATS is
    used, its STE as written, its CD table (address 0 until the first stage 1 attach)."""

    sid: int
    dev: Device
    ats: bool
    #: Faults of this master stall (a platform device: no PCIe function) -- CD.S = 1.
    stall: bool = False
    ste: list[int] = field(default_factory=lambda: [0] * 8)
    cd_pa: int = 0
    #: The CD table is 2-level (``cd_pa`` is its L1 table of L1CDs).
    cd_2lvl: bool = False
    cds: dict[int, list[int]] = field(default_factory=dict)
    domain: Domain | None = None


def _cmd(c: Command, **fields: int) -> int:
    return c.layout.encode(opcode=c.opcode, **fields)


class Smmuv3Driver:
    """One SMMUv3 instance (the firmware node: register window at ``base_pa``, the
    requester ids ``rids`` behind it, MSIs to ``msi_pa`` with identities from ``irq_base``),
    with ``clock_wait`` letting virtual time pass while the driver polls the hardware."""

    user_pasid_table = False

    def __init__(
        self,
        bus: PhysicalMemory,
        base_pa: int,
        pages: PageAllocator,
        irq: IrqController,
        clock_wait: Callable[[], bool],
        *,
        msi_pa: int,
        irq_base: int = 64,
        rids: range = range(1 << 16),
        cmdq_log2: int = 8,
        evtq_log2: int = 7,
        priq_log2: int = 7,
        vhe: bool = False,
        wired: dict[str, int] | None = None,
        name: str = "arm-smmu-v3.0",
    ) -> None:
        self.name = name
        #: The SMMU's wired interrupt lines (firmware: line name -> interrupt identity).
        self.wired = wired or {}
        self._vhe = vhe
        #: Stage 1 runs in the EL2-E2H regime (the seed's "Add support for VHE"): the kernel
        #: runs with VHE and the SMMU has IDR0.Hyp; then CR2.E2H = 1, S1 STEs have STRW =
        #: EL2-E2H and stage 1 TLBIs are the EL2 ones.
        self.e2h = False
        self.mmio = Mmio(bus, base_pa)
        self.mem = bus
        self.pages = pages
        self.irq = irq
        self.clock_wait = clock_wait
        self.msi_pa = msi_pa
        self.irq_base = irq_base
        self.rids = rids
        self._log2 = (cmdq_log2, evtq_log2, priq_log2)
        self.identity_domain: Domain = Smmuv3StaticDomain(self, DOMAIN_IDENTITY)
        self.blocked_domain: Domain = Smmuv3StaticDomain(self, DOMAIN_BLOCKED)
        self.reporter: Reporter | None = None
        self.cmdq: CommandQueue | None = None
        self.evtq: OutputQueue | None = None
        self.priq: OutputQueue | None = None
        self.idr = (0, 0, 0, 0, 0, 0)
        self.oas_bits = 48
        self.granule: Granule = 4
        self.ias_bits = 48
        self.strtab_pa = 0
        self.strtab_2lvl = False
        self.asid_ida = Ida(1, 1 << 16)
        self.vmid_ida = Ida(1, 1 << 16)
        self._masters: dict[int, _Master] = {}
        self.btm = False
        #: ASID -> the private domain holding it (None: a process's, shared by SVA).
        self._asid_owner: dict[int, Smmuv3PagingDomain | None] = {}
        self._stalls: set[tuple[int, int]] = set()
        self.events: list[EventRecord] = []
        self.stats = {
            "irqs": 0,
            "events": 0,
            "page_requests": 0,
            "page_hints": 0,
            "stalls": 0,
            "resumes": 0,
        }

    def registered(self, reporter: Reporter) -> None:
        self.reporter = reporter

    # -- probe (arm_smmu_device_hw_probe, arm_smmu_device_reset) ----------------------------

    def _idr(self, n: int) -> int:
        return self.idr[n]

    def feature(self, reg: int, name: str) -> int:
        """A field of IDR ``reg`` (0, 1, 3 or 5) as read at probe."""
        lay = {0: IDR0, 1: IDR1, 3: IDR3, 5: IDR5}[reg]
        return lay[name].get(self.idr[reg])

    def probe(self) -> None:
        m = self.mmio
        self.idr = tuple(m.readl(OFF.IDR0 + 4 * i) for i in range(6))  # type: ignore[assignment]
        if not self.feature(0, "ttf") & 0b10:
            raise NotSupported(f"{self.name}: AArch64 translation tables are not supported")
        if not self.feature(0, "s1p") and not self.feature(0, "s2p"):
            raise NoDevice(f"{self.name}: no translation stage (IDR0.S1P = S2P = 0)")
        self.oas_bits = _OAS_BITS.get(self.feature(5, "oas"), 48)
        grans: tuple[tuple[Granule, str], ...] = ((4, "gran4k"), (64, "gran64k"), (16, "gran16k"))
        for kb, name in grans:
            if self.feature(5, name):
                self.granule = kb
                break
        else:
            raise NoDevice(f"{self.name}: no translation granule (IDR5.GRAN*)")
        self.ias_bits = min(48, self.oas_bits) if not self.feature(0, "s1p") else 48
        if m.readl(OFF.CR0) & _CR0_SMMUEN:
            self._write_cr0(0)  # arm_smmu_device_disable
        cmd_lg2, evt_lg2, pri_lg2 = self._log2
        self.cmdq = CommandQueue(
            m, self.mem, self.pages, min(cmd_lg2, self.feature(1, "cmdqs")), self.clock_wait
        )
        self.evtq = OutputQueue(
            m,
            self.mem,
            self.pages,
            min(evt_lg2, self.feature(1, "eventqs")),
            EVENTQ_ENTRY_BYTES,
            (OFF.EVENTQ_BASE, OFF.EVENTQ_PROD, OFF.EVENTQ_CONS),
            "event",
        )
        if self.feature(0, "pri"):
            self.priq = OutputQueue(
                m,
                self.mem,
                self.pages,
                min(pri_lg2, self.feature(1, "priqs")),
                PRIQ_ENTRY_BYTES,
                (OFF.PRIQ_BASE, OFF.PRIQ_PROD, OFF.PRIQ_CONS),
                "PRI",
            )
        self._init_strtab()
        # Queue and table accesses: inner / outer write-back, inner shareable.
        m.writel(
            OFF.CR1,
            CR1.encode(queue_ic=1, queue_oc=1, queue_sh=3, table_ic=1, table_oc=1, table_sh=3),
        )
        # Broadcast TLB maintenance (the seed's "Enable broadcast TLB maintenance"): with
        # IDR0.BTM the SMMU snoops the CPUs' TLBIs (PTM = 0), so shared ASIDs need no TLBI
        # commands; private ASIDs are kept out of it by CD.ASET = 1.
        self.btm = bool(self.feature(0, "btm"))
        self.e2h = self._vhe and bool(self.feature(0, "hyp"))
        m.writel(OFF.CR2, CR2.encode(e2h=int(self.e2h), recinvsid=1, ptm=int(not self.btm)))
        self._write_cr0(_CR0_CMDQEN)
        self.cmdq.issue([_cmd(CMD_CFGI_ALL, range=CFGI_ALL_RANGE), _cmd(CMD_TLBI_NSNH_ALL)])
        enables = _CR0_CMDQEN | _CR0_EVENTQEN | (_CR0_PRIQEN if self.priq else 0)
        self._write_cr0(enables)
        self._setup_irqs()
        self._set_gbpa_abort()
        self._write_cr0(enables | _CR0_SMMUEN)

    def _write_cr0(self, value: int) -> None:
        """CR0 and its CR0ACK handshake (IHI 0070 6.3.9)."""
        self.mmio.writel(OFF.CR0, value)
        for _ in range(100):
            if self.mmio.readl(OFF.CR0ACK) == value:
                return
            self.clock_wait()
        raise Busy(f"{self.name}: CR0ACK did not follow CR0 = {value:#x}")

    def _set_gbpa_abort(self) -> None:
        """GBPA.ABORT by the update protocol (IHI 0070 6.3.13): write with UPDATE, poll it."""
        gbpa = self.mmio.readl(OFF.GBPA) | GBPA.mask("abort")
        self.mmio.writel(OFF.GBPA, gbpa | GBPA_UPDATE)
        for _ in range(100):
            if not self.mmio.readl(OFF.GBPA) & GBPA_UPDATE:
                return
            self.clock_wait()
        raise Busy(f"{self.name}: GBPA.UPDATE did not clear")

    def _init_strtab(self) -> None:
        """A linear stream table of every StreamID, or a 2-level one when IDR1.SIDSIZE is
        larger than one level-2 table and the SMMU has 2-level tables (Linux
        ``arm_smmu_init_strtab``); every STE starts as abort (zero: V = 0 is abort too)."""
        sidsize = self.feature(1, "sidsize")
        self.strtab_2lvl = bool(self.feature(0, "st_level")) and sidsize > STRTAB_SPLIT
        if self.strtab_2lvl:
            nbytes = 8 << (sidsize - STRTAB_SPLIT)
            cfg = STRTAB_BASE_CFG.encode(fmt=STRTAB_FMT_2LVL, log2size=sidsize, split=STRTAB_SPLIT)
        else:
            nbytes = 64 << sidsize
            cfg = STRTAB_BASE_CFG.encode(fmt=STRTAB_FMT_LINEAR, log2size=sidsize)
        self.strtab_pa = self.pages.alloc_pages((max(nbytes, _PAGE) // _PAGE - 1).bit_length())
        self.mmio.writeq(OFF.STRTAB_BASE, self.strtab_pa)
        self.mmio.writel(OFF.STRTAB_BASE_CFG, cfg)

    def _setup_irqs(self) -> None:
        """MSIs for the event queue, PRI queue and global errors (IHI 0070 6.3: *_IRQ_CFG0/1/2),
        or -- without IDR0.MSI -- the wired lines the firmware names (``wired``: line ->
        interrupt identity; none: the driver polls), then IRQ_CTRL with its ACK (Linux
        ``arm_smmu_setup_irqs``)."""
        m = self.mmio
        srcs = [
            ("eventq", OFF.EVENTQ_IRQ_CFG0, self.process_events),
            ("gerror", OFF.GERROR_IRQ_CFG0, self._gerror),
        ]
        if self.priq is not None:
            srcs.append(("priq", OFF.PRIQ_IRQ_CFG0, self.process_page_requests))
        msi = bool(self.feature(0, "msi"))
        if not msi and not self.wired:
            return
        for i, (line, cfg0, handler) in enumerate(srcs):
            if msi:
                ident = self.irq_base + i
                m.writeq(cfg0, self.msi_pa)
                m.writel(cfg0 + 8, ident)
                m.writel(cfg0 + 12, 0)
            else:
                ident = self.wired[line]
            self.irq.request_irq(ident, self._counted(handler))
        ctrl = IRQ_CTRL.encode(
            gerror_irqen=1, eventq_irqen=1, priq_irqen=int(self.priq is not None)
        )
        m.writel(OFF.IRQ_CTRL, ctrl)
        for _ in range(100):
            if m.readl(OFF.IRQ_CTRLACK) == ctrl:
                return
            self.clock_wait()
        raise Busy(f"{self.name}: IRQ_CTRLACK did not follow IRQ_CTRL")

    def _counted(self, fn: Callable[[], object]) -> Callable[[], None]:
        def handler() -> None:
            self.stats["irqs"] += 1
            fn()

        return handler

    def _gerror(self) -> None:
        """Global errors (IHI 0070 6.3.17): a command error is handled by the queue's poll;
        the others are acknowledged by toggling GERRORN."""
        m = self.mmio
        active = (m.readl(OFF.GERROR) ^ m.readl(OFF.GERRORN)) & ~1
        if active:
            m.writel(OFF.GERRORN, m.readl(OFF.GERRORN) ^ active)

    # -- commands -------------------------------------------------------------------------

    def issue(self, cmds: list[int], sync: bool = True) -> None:
        if self.cmdq is None:
            raise NoDevice(f"{self.name}: not probed")
        self.cmdq.issue(cmds, sync)

    # -- the stream table and CDs ---------------------------------------------------------

    def _ste_pa(self, sid: int) -> int:
        """The STE of ``sid`` (2-level: its level-2 table allocated on first use, Linux
        ``arm_smmu_init_l2_strtab``)."""
        if not self.strtab_2lvl:
            return self.strtab_pa + sid * 64
        l1pa = self.strtab_pa + (sid >> STRTAB_SPLIT) * 8
        l1 = self.mem.read64(l1pa)
        if not STRTAB_L1["span"].get(l1):
            l2 = self.pages.alloc_pages(((64 << STRTAB_SPLIT) // _PAGE - 1).bit_length())
            l1 = STRTAB_L1.encode(span=STRTAB_SPLIT + 1, l2ptr=l2 >> 6)
            self.mem.write64(l1pa, l1)
        return (STRTAB_L1["l2ptr"].get(l1) << 6) + (sid & ((1 << STRTAB_SPLIT) - 1)) * 64

    def write_ste(self, master: _Master, target: int) -> None:
        pa = self._ste_pa(master.sid)
        sid = master.sid

        def store(i: int, q: int) -> None:
            master.ste[i] = q
            self.mem.write64(pa + 8 * i, q)

        def sync() -> None:
            self.issue([_cmd(CMD_CFGI_STE, streamid=sid, leaf=1)])

        write_entry(list(master.ste), qwords(target), used_ste, store, sync)

    def write_cd(self, master: _Master, ssid: int, target: int) -> None:
        pa = self._cd_pa(master, ssid)
        cur = master.cds.get(ssid, [0] * 8)
        sid = master.sid

        def store(i: int, q: int) -> None:
            cur[i] = q
            self.mem.write64(pa + 8 * i, q)

        def sync() -> None:
            self.issue([_cmd(CMD_CFGI_CD, streamid=sid, substreamid=ssid, leaf=1)])

        write_entry(list(cur), qwords(target), used_cd, store, sync)
        master.cds[ssid] = cur

    def _ste_s1(self, master: _Master) -> int:
        cdmax = self._cd_bits(master)
        return STE.encode(
            v=1,
            config=STE_CONFIG_S1,
            s1fmt=S1FMT_4K_L2 if master.cd_2lvl else S1FMT_LINEAR,
            s1contextptr=master.cd_pa >> 6,
            s1cdmax=cdmax,
            s1dss=S1DSS_SSID0 if cdmax else 0,
            s1cir=1,
            s1cor=1,
            s1csh=3,
            strw=STRW_EL2_E2H if self.e2h else STRW_NSEL1,
            # A master that cannot stall (PCIe: it has PRI instead) must not be stalled
            # (Linux sets S1STALLD when the SMMU has stalls and the master is not
            # "dma-can-stall").
            s1stalld=int(self.feature(0, "stall_model") == 0 and not master.stall),
            eats=EATS_FULL if master.ats else EATS_ABORT,
        )

    def _ste_s2(self, master: _Master, dom: Smmuv3PagingDomain, vmid: int = -1) -> int:
        t = dom.pgtable
        return STE.encode(
            v=1,
            config=STE_CONFIG_S2,
            s2vmid=dom.tag if vmid < 0 else vmid,
            s2t0sz=t.t0sz,
            s2sl0=t.sl0,
            s2ir0=1,
            s2or0=1,
            s2sh0=3,
            s2tg=_GRANULE_TG0[t.granule],
            s2ps=self.feature(5, "oas"),
            s2aa64=1,
            s2r=1,
            s2ttb=t.root_pa >> 4,
            eats=EATS_FULL if master.ats else EATS_ABORT,
        )

    def _cd_image(self, t: ArmLpaePageTable, asid: int, master: _Master, **extra: int) -> int:
        """A stage 1 CD for table ``t`` (Linux ``arm_smmu_make_s1_cd``): TTB0 with its T0SZ
        and TG0, EPD1, inner / outer write-back, inner shareable, the OAS as IPS, AA64, R, A,
        the ASID, MAIR, S for a stalling master; ``extra`` adds fields (ASET, HA, HD)."""
        return CD.encode(
            {
                "v": 1,
                "t0sz": t.t0sz,
                "tg0": _GRANULE_TG0[t.granule],
                "ir0": 1,
                "or0": 1,
                "sh0": 3,
                "epd1": 1,
                "ips": self.feature(5, "oas"),
                "aa64": 1,
                "r": 1,
                "a": 1,
                "s": int(master.stall),
                "asid": asid,
                "ttb0": t.root_pa >> 4,
                "mair0": _MAIR,
                **extra,
            }
        )

    def _cd(self, dom: Smmuv3PagingDomain, master: _Master) -> int:
        """A DMA domain's CD: ASET = 1 (a private ASID takes no broadcast TLB maintenance)."""
        return self._cd_image(dom.pgtable, dom.tag, master, aset=1)

    def _cd_bits(self, master: _Master) -> int:
        bits = min(master.dev.pasid_bits, self.feature(1, "ssidsize"))
        return bits if self.feature(0, "cd2l") else min(bits, CD_LINEAR_BITS)

    def _cd_table(self, master: _Master) -> None:
        """The master's CD table (Linux ``arm_smmu_alloc_cd_tables``): linear up to
        :data:`CD_LINEAR_BITS` SubstreamID bits, else the level-1 table of a 2-level one."""
        if master.cd_pa:
            return
        bits = self._cd_bits(master)
        if bits <= CD_LINEAR_BITS:
            nbytes = 64 << bits
        else:
            master.cd_2lvl = True
            nbytes = 8 << (bits - CD_L2_BITS)
        master.cd_pa = self.pages.alloc_pages((max(nbytes, _PAGE) // _PAGE - 1).bit_length())

    def _cd_pa(self, master: _Master, ssid: int) -> int:
        """Where the CD of ``ssid`` is; with a 2-level table its leaf table is allocated
        and its L1CD written (then CFGI_CD with Leaf = 0 + SYNC) on first use (Linux
        ``arm_smmu_get_cd_ptr``)."""
        if not master.cd_2lvl:
            return master.cd_pa + ssid * 64
        l1pa = master.cd_pa + (ssid >> CD_L2_BITS) * 8
        l1 = self.mem.read64(l1pa)
        if not CDTAB_L1["v"].get(l1):
            l2 = self.pages.alloc_pages(0)
            l1 = CDTAB_L1.encode(v=1, l2ptr=l2 >> 12)
            self.mem.write64(l1pa, l1)
            self.issue([_cmd(CMD_CFGI_CD, streamid=master.sid, substreamid=ssid, leaf=0)])
        return (CDTAB_L1["l2ptr"].get(l1) << 12) + (ssid & ((1 << CD_L2_BITS) - 1)) * 64

    # -- core ops -------------------------------------------------------------------------

    def owns(self, dev: Device) -> bool:
        return dev.rid in self.rids

    def probe_device(self, dev: Device) -> None:
        if self.cmdq is None:
            raise NoDevice(f"{self.name}: not probed")
        if not self.owns(dev):
            raise NoDevice(f"{dev.name} (rid {dev.rid:#x}) is not behind {self.name}")
        sid = dev.rid
        if sid >> self.feature(1, "sidsize"):
            raise NoDevice(f"{dev.name}: StreamID {sid:#x} beyond IDR1.SIDSIZE")
        ats = dev.ats and dev.pci is not None and bool(self.feature(0, "ats"))
        # Stalls: forced by the SMMU (IDR0.STALL_MODEL = 0b10: CD.S must be 1, Linux
        # ARM_SMMU_FEAT_STALL_FORCE), or chosen for a platform device that can stall.
        model = self.feature(0, "stall_model")
        stall = model == 0b10 or (dev.pci is None and model == 0b00)
        master = _Master(sid, dev, ats, stall)
        self._ste_pa(sid)
        self._masters[sid] = master
        dev.iommu = self

    def release_device(self, dev: Device) -> None:
        master = self._masters.pop(dev.rid, None)
        if master is not None:
            if master.ats and dev.pci is not None:
                dev.pci.enable_ats(False)
            self.write_ste(master, 0)
        dev.iommu = None

    def _master(self, dev: Device) -> _Master:
        m = self._masters.get(dev.rid)
        if m is None:
            raise InvalidArgument(f"{dev.name} is not probed on {self.name}")
        return m

    def attach_static(self, dev: Device, domain_type: int) -> None:
        master = self._master(dev)
        config = STE_CONFIG_BYPASS if domain_type == DOMAIN_IDENTITY else STE_CONFIG_ABORT
        self._ats(master, False)
        self.write_ste(master, STE.encode(v=1, config=config))
        self._leave(master)
        master.domain = (
            self.identity_domain if domain_type == DOMAIN_IDENTITY else self.blocked_domain
        )

    def _leave(self, master: _Master) -> None:
        old = master.domain
        if isinstance(old, Smmuv3PagingDomain):
            old.unlink(master.dev, None)

    def _ats(self, master: _Master, on: bool) -> None:
        """ATS in the device follows the STE (Linux enables it after the STE allows
        translated traffic, disables it before)."""
        if master.ats and master.dev.pci is not None:
            master.dev.pci.enable_ats(on)

    def attach_paging(self, dev: Device, dom: Smmuv3PagingDomain) -> None:
        master = self._master(dev)
        if dom.stage == 1:
            self._cd_table(master)
            self.write_cd(master, 0, self._cd(dom, master))
            self.write_ste(master, self._ste_s1(master))
        else:
            self.write_ste(master, self._ste_s2(master, dom))
        self._ats(master, True)
        master.domain = dom

    def attach_pasid(self, dev: Device, pasid: int, dom: Smmuv3PagingDomain) -> None:
        master = self._master(dev)
        if dom.stage != 1 or not pasid or pasid >> self._cd_bits(master):
            raise InvalidArgument(f"{dev.name}: PASID {pasid} needs a stage 1 CD slot")
        if not isinstance(master.domain, Smmuv3PagingDomain) or master.domain.stage != 1:
            raise InvalidArgument(f"{dev.name}: a PASID needs the RID on a stage 1 domain")
        self.write_cd(master, pasid, self._cd(dom, master))

    def detach_pasid(self, dev: Device, pasid: int) -> None:
        master = self._masters.get(dev.rid)
        if master is not None and pasid in master.cds:
            self.write_cd(master, pasid, 0)

    def def_domain_type(self, dev: Device) -> int | None:
        return None

    def domain_alloc_paging(self, dev: Device) -> Domain:
        return self._alloc_paging(1 if self.feature(0, "s1p") else 2)

    def _alloc_paging(self, stage: int) -> Smmuv3PagingDomain:
        ida = self.asid_ida if stage == 1 else self.vmid_ida
        width = 16 if self.feature(0, "asid16" if stage == 1 else "vmid16") else 8
        tag = ida.alloc((1 << width) - 1)
        if tag is None:
            raise NotSupported(f"{self.name}: no {'ASID' if stage == 1 else 'VMID'} left")
        ia = self.ias_bits if stage == 1 else min(40, self.oas_bits)
        dom = Smmuv3PagingDomain(self, stage, tag, ia)
        if stage == 1:
            self._asid_owner[tag] = dom
        return dom

    def domain_alloc_paging_flags(
        self, dev: Device, flags: int = 0, user_data: UserData | None = None
    ) -> Domain:
        """A paging domain; with IOMMU_HWPT_ALLOC_NEST_PARENT a stage 2 one that vIOMMUs and
        nested domains sit on (needs IDR0.S1P and S2P). Other flags and driver data are
        EOPNOTSUPP."""
        if user_data is not None or flags & ~uapi.IOMMU_HWPT_ALLOC_NEST_PARENT:
            raise NotSupported(f"{self.name}: paging flags {flags:#x} are not supported")
        if flags:
            if not (self.feature(0, "s1p") and self.feature(0, "s2p")):
                raise NotSupported(f"{self.name}: nesting needs stage 1 and stage 2")
            return self._alloc_paging(2)
        return self.domain_alloc_paging(dev)

    def domain_alloc_sva(self, dev: Device, mm: Mm) -> Domain:
        """An SVA domain for ``mm`` (``arm_smmu_sva_domain_alloc`` with the checks of
        ``arm_smmu_master_sva_supported``): the SMMU must walk the process's arm64 table
        (stage 1, its granule, a 48-bit OAS), the device must have PASIDs and a way to
        take I/O page faults (PRI on the SMMU and the device, or stalls); the process's ASID
        is taken from a private domain holding it."""
        from iommusim.sw.drivers.smmuv3.sva import Smmuv3SvaDomain

        master = self._master(dev)
        table = mm.table()
        if not isinstance(table, ArmLpaePageTable) or mm.asid is None:
            raise NotSupported(f"{self.name}: {mm.name} has no arm64 page table to share")
        gran = {4: "gran4k", 16: "gran16k", 64: "gran64k"}[table.granule]
        if not self.feature(0, "s1p") or not self.feature(5, gran) or self.oas_bits < 48:
            raise NotSupported(f"{self.name}: cannot walk {mm.name}'s page table")
        if not self._cd_bits(master):
            raise NoDevice(f"{dev.name} has no PASIDs the SMMU can take")
        if not (master.stall or (master.ats and dev.pri and self.priq is not None)):
            raise NoDevice(f"{dev.name} can take no I/O page faults (no PRI, no stall)")
        self._share_asid(mm.asid)
        return Smmuv3SvaDomain(self, mm, mm.asid)

    def _share_asid(self, asid: int) -> None:
        """The SMMU's TLB entries of ``asid`` become the process's: a private domain holding
        it moves to a fresh ASID -- its CDs rewritten, the old ASID invalidated (the seed's
        "Seize private ASID")."""
        owner = self._asid_owner.get(asid)
        if owner is None:
            if not self.asid_ida.claim(asid):
                raise NotSupported(f"{self.name}: ASID {asid} is not free for sharing")
            self._asid_owner[asid] = None
            return
        new = self.asid_ida.alloc()
        if new is None:
            raise NotSupported(f"{self.name}: no ASID left to move a private domain to")
        owner.tag = new
        self._asid_owner[new] = owner
        self._asid_owner[asid] = None
        for dev, pasid in owner.masters:
            master = self._masters.get(dev.rid)
            if master is not None:
                self.write_cd(master, pasid or 0, self._cd(owner, master))
        self.issue([self._tlbi_asid(asid)])

    def release_sva_asid(self, dom: Smmuv3SvaDomain) -> None:
        if self._asid_owner.get(dom.tag, 0) is None:
            del self._asid_owner[dom.tag]
            self.asid_ida.free(dom.tag)

    def attach_sva(self, dev: Device, pasid: int, dom: Smmuv3SvaDomain) -> None:
        master = self._master(dev)
        if not pasid or pasid >> self._cd_bits(master):
            raise InvalidArgument(f"{dev.name}: PASID {pasid} has no CD slot")
        if not master.cd_pa:
            raise NotSupported(f"{dev.name}: PASIDs need the RID on a stage 1 domain")
        self.write_cd(master, pasid, self._sva_cd(dom, master))
        if master.ats and dev.pri and dev.pci is not None and dom.iopf_handler is not None:
            dev.pci.enable_pri(True)  # after the CD is valid

    def _sva_cd(self, dom: Smmuv3SvaDomain, master: _Master) -> int:
        """The CD of a shared address space (``arm_smmu_make_sva_cd``): the process's TTB0,
        its ASID, ASET = 0, HA/HD by IDR0.HTTU."""
        t = dom.mm.table()
        assert isinstance(t, ArmLpaePageTable)
        httu = self.feature(0, "httu")
        return self._cd_image(t, dom.tag, master, ha=int(httu >= 1), hd=int(httu >= 2))

    def sva_inv(
        self,
        dom: Smmuv3SvaDomain,
        start: int,
        end: int,
        tables_freed: bool,
        only: tuple[Device, int] | None = None,
        cpu_flushed: bool = False,
    ) -> None:
        """TLBI by the shared ASID for ``[start, end]`` and ATC_INV at each bound PASID, one
        CMD_SYNC (``arm_smmu_tlb_inv_range_asid`` + ``arm_smmu_atc_inv_domain_sva``); no
        TLBI when the CPU's broadcast already did it (``cpu_flushed`` under BTM)."""
        pages = ((end - start) >> 12) + 1
        if self.btm and cpu_flushed:
            cmds = []  # the CPU's broadcast TLBI reached the SMMU's TLB already
        elif tables_freed or pages > INV_LIMIT:
            cmds = [self._tlbi_asid(dom.tag)]
        else:
            cmds = [self._tlbi_va(dom.tag, (start >> 12) + i) for i in range(pages)]
        span = max((start ^ end).bit_length(), 12)
        for dev, pasid in [only] if only is not None else dom.masters:
            m = self._masters.get(dev.rid)
            if m is not None and m.ats:
                addr = (start >> span << span) >> 12
                cmds.append(
                    _cmd(
                        CMD_ATC_INV,
                        streamid=m.sid,
                        ssv=1,
                        substreamid=pasid,
                        size=span - 12,
                        address=addr,
                    )
                )
        self.issue(cmds)

    def domain_alloc_nested(
        self, dev: Device, parent: Domain, flags: int, user_data: UserData
    ) -> Domain:
        raise NotSupported(f"{self.name}: nested domains are not supported yet")

    def free_tag(self, dom: Smmuv3PagingDomain) -> None:
        if dom.stage == 1:
            self._asid_owner.pop(dom.tag, None)
        (self.asid_ida if dom.stage == 1 else self.vmid_ida).free(dom.tag)

    def capable(self, dev: Device, cap: int) -> bool:
        if cap == CAP_CACHE_COHERENCY:
            return bool(self.feature(0, "cohacc"))
        if cap == CAP_PCI_ATS_SUPPORTED:
            return bool(self.feature(0, "ats"))
        return False

    def hw_info(self, dev: Device, requested_type: int) -> tuple[int, bytes] | None:
        """``arm_smmu_hw_info``: IDR0-5, IIDR and AIDR as read from the SMMU."""
        want = uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3
        if requested_type not in (uapi.IOMMU_HW_INFO_TYPE_DEFAULT, want):
            raise NotSupported(f"{self.name}: no hw_info type {requested_type:#x}")
        m = self.mmio
        idr = {f"idr[{i}]": m.readl(OFF.IDR0 + 4 * i) for i in range(6)}
        info = uapi.STRUCTS["iommu_hw_info_arm_smmuv3"].encode(
            idr, iidr=m.readl(OFF.IIDR), aidr=m.readl(OFF.AIDR)
        )
        return want, bytes(info)

    def get_viommu_size(self, dev: Device, viommu_type: int) -> int:
        """Non-zero for ARM_SMMUV3 on an SMMU that nests (IDR0.S1P and S2P)."""
        nests = self.feature(0, "s1p") and self.feature(0, "s2p")
        return 1 if viommu_type == uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3 and nests else 0

    def viommu_alloc(
        self,
        dev: Device,
        viommu_type: int,
        parent: Domain,
        user_data: UserData | None,
        core: ViommuCore,
    ) -> ViommuOps:
        """``arm_vsmmu_init``: a vIOMMU with a VMID of its own over the stage 2 ``parent``;
        EINVAL for a parent of another kind or SMMU, EOPNOTSUPP for another type."""
        from iommusim.sw.drivers.smmuv3.nested import Smmuv3Viommu

        if not self.get_viommu_size(dev, viommu_type):
            raise NotSupported(f"{self.name}: no vIOMMU type {viommu_type}")
        if not isinstance(parent, Smmuv3PagingDomain) or parent.driver is not self:
            raise InvalidArgument(f"{parent!r} is not a nesting parent of {self.name}")
        if parent.stage != 2:
            raise InvalidArgument(f"{parent!r} is not a stage 2 domain")
        vmid = self.vmid_ida.alloc((1 << (16 if self.feature(0, "vmid16") else 8)) - 1)
        if vmid is None:
            raise NotSupported(f"{self.name}: no VMID left")
        return Smmuv3Viommu(self, parent, core, vmid)

    def attach_nested(self, dev: Device, dom: Smmuv3NestedDomain) -> None:
        """The nested STE (Linux ``arm_smmu_make_nested_domain_ste``): guest abort stays
        abort; guest bypass is the parent's stage 2 alone; guest stage 1 is nested -- the
        guest's stage 1 fields over the parent's stage 2, tagged with the vIOMMU's VMID."""
        master = self._master(dev)
        g = dom.guest_ste
        cfg = STE["config"].get(g) if g & 1 else STE_CONFIG_ABORT
        if cfg == STE_CONFIG_ABORT:
            self._ats(master, False)
            self.write_ste(master, STE.encode(v=1, config=STE_CONFIG_ABORT))
        else:
            ste = self._ste_s2(master, dom.viommu.parent, dom.viommu.vmid)
            if cfg == STE_CONFIG_S1:
                guest = g & _GUEST_S1 & ~STE.mask("eats")
                ste = STE["config"].put(ste, 0b111) | guest
                if not STE["eats"].get(g) or not master.ats:
                    ste = STE["eats"].put(ste, EATS_ABORT)
            self.write_ste(master, ste)
            self._ats(master, True)
        self._leave(master)
        master.domain = dom

    # -- invalidation (arm_smmu_tlb_inv_range_domain, arm_smmu_atc_inv_domain) --------------

    def _range_cmds(self, dom: Smmuv3PagingDomain, start: int, end: int, leaf: bool) -> list[int]:
        g = dom.pgtable.pt.page_shift
        lo = start >> g << g
        pages = ((end >> g) - (lo >> g)) + 1
        s1 = dom.stage == 1
        if pages > INV_LIMIT and not self.feature(3, "ril"):
            return [self._whole(dom)]
        base = {"vmid": dom.tag}
        op = CMD_TLBI_S2_IPA
        if s1:
            base = {"asid": dom.tag} if self.e2h else {"asid": dom.tag, "vmid": 0}
            op = CMD_TLBI_EL2_VA if self.e2h else CMD_TLBI_NH_VA
        tg = {12: 1, 14: 2, 16: 3}[g]
        out = []
        iova = lo
        if self.feature(3, "ril"):
            # __arm_smmu_tlb_inv_range: SCALE = the lowest set bit of the page count, NUM + 1
            # the next 5 bits' worth, until every page is covered.
            while pages:
                scale = (pages & -pages).bit_length() - 1
                num = (pages >> scale) & 31
                out.append(
                    _cmd(
                        op,
                        **base,
                        leaf=int(leaf),
                        tg=tg,
                        scale=scale,
                        num=num - 1,
                        address=iova >> 12,
                    )
                )
                iova += num << (scale + g)
                pages -= num << scale
            return out
        for i in range(pages):
            out.append(_cmd(op, **base, leaf=int(leaf), address=(iova + (i << g)) >> 12))
        return out

    def _tlbi_asid(self, asid: int) -> int:
        """Every stage 1 entry of ``asid`` (CMD_TLBI_EL2_ASID under E2H, else NH_ASID)."""
        if self.e2h:
            return _cmd(CMD_TLBI_EL2_ASID, asid=asid)
        return _cmd(CMD_TLBI_NH_ASID, asid=asid, vmid=0)

    def _tlbi_va(self, asid: int, page: int) -> int:
        if self.e2h:
            return _cmd(CMD_TLBI_EL2_VA, asid=asid, leaf=1, address=page)
        return _cmd(CMD_TLBI_NH_VA, asid=asid, vmid=0, leaf=1, address=page)

    def _whole(self, dom: Smmuv3PagingDomain) -> int:
        if dom.stage == 1:
            return self._tlbi_asid(dom.tag)
        return _cmd(CMD_TLBI_S12_VMALL, vmid=dom.tag)

    def _atc_cmds(self, dom: Smmuv3PagingDomain, start: int, end: int) -> list[int]:
        """CMD_ATC_INV of the range (the smallest aligned power of two covering it, Linux
        ``arm_smmu_atc_inv_to_cmd``) for every master of the domain with ATS."""
        span = max((start ^ end).bit_length(), 12)
        out = []
        for dev, pasid in dom.masters:
            m = self._masters.get(dev.rid)
            if m is None or not m.ats:
                continue
            f = {"streamid": m.sid, "size": span - 12, "address": (start >> span << span) >> 12}
            if pasid is not None:
                f.update(ssv=1, substreamid=pasid)
            out.append(_cmd(CMD_ATC_INV, **f))
        return out

    def tlb_inv_range(self, dom: Smmuv3PagingDomain, start: int, end: int, leaf: bool) -> None:
        """The TLB entries of ``[start, end]`` (leaf only unless tables were freed), then the
        ATCs, then one CMD_SYNC -- one command batch (``arm_smmu_cmdq_batch``)."""
        cmds = self._range_cmds(dom, start, end, leaf) if leaf else [self._whole(dom)]
        self.issue([*cmds, *self._atc_cmds(dom, start, end)])

    def tlb_inv_all(self, dom: Smmuv3PagingDomain) -> None:
        self.issue([self._whole(dom), *self._atc_cmds(dom, 0, (1 << 64) - 1)])

    # -- events, stalls, PRI ----------------------------------------------------------------

    def process_events(self) -> int:
        """The event queue thread (``arm_smmu_evtq_thread``): each record decoded, a stall
        reported as a page fault (answered by CMD_RESUME), every other one as a DMA fault."""
        if self.evtq is None:
            return 0
        return self.evtq.drain(self._event)

    def _event(self, raw: bytes) -> None:
        v = int.from_bytes(raw, "little")
        etype = EVT_COMMON["type"].get(v)
        fields = EVENT_LAYOUTS.get(etype, EVT_COMMON).decode(v)
        rec = EventRecord(EVENT_NAMES.get(etype, f"event {etype:#x}"), fields)
        self.stats["events"] += 1
        self.events.append(rec)
        sid = fields["streamid"]
        pasid = fields["substreamid"] if fields["ssv"] else None
        if v & _EVT_STALL and "stag" in fields:
            self.stats["stalls"] += 1
            self._stalls.add((sid, fields["stag"]))
            perm = (
                (PERM_READ if fields.get("rnw", 1) else PERM_WRITE)
                | (PERM_EXEC if fields.get("ind") else 0)
                | (PERM_PRIV if fields.get("pnu") else 0)
            )
            fault = PageFault(
                pasid, fields["stag"], perm, fields.get("inputaddr", 0) & ~0xFFF, True
            )
            if self.reporter is not None:
                self.reporter.page_request(sid, fault)
            else:
                self.page_response(sid, pasid, fields["stag"], 1)
            return
        if etype == E_PAGE_REQUEST:
            # A speculative page request hint (IHI 0070 7.3.19): no response is due and
            # Linux's arm_smmu_handle_evt takes no action on it; kept in ``events``.
            self.stats["page_hints"] += 1
            return
        master = self._masters.get(sid)
        guest = master is not None and isinstance(master.domain, Smmuv3NestedDomain)
        if guest and etype in VEVENT_TYPES:
            assert master is not None and isinstance(master.domain, Smmuv3NestedDomain)
            if master.domain.viommu.report(master.dev, raw):
                return  # the guest's: it goes back through the vEVENTQ
        if self.reporter is not None:
            self.reporter.fault(
                Fault(
                    rid=sid,
                    iova=fields.get("inputaddr", 0),
                    pasid=pasid,
                    write=not fields.get("rnw", 1),
                    reason=rec.name,
                    record=rec,
                )
            )

    def process_page_requests(self) -> int:
        """The PRI queue thread (``arm_smmu_priq_thread``): each request to the core."""
        if self.priq is None:
            return 0
        n = self.priq.drain(self._page_request)
        if self.priq.overflows and self.reporter is not None:
            self.reporter.page_requests_lost()
        return n

    def _page_request(self, raw: bytes) -> None:
        f = PRIQ_ENTRY.decode(int.from_bytes(raw, "little"))
        self.stats["page_requests"] += 1
        perm = (
            (PERM_READ if f["read"] else 0)
            | (PERM_WRITE if f["write"] else 0)
            | (PERM_EXEC if f["exec"] else 0)
            | (PERM_PRIV if f["priv"] else 0)
        )
        pasid = f["substreamid"] if f["ssv"] else None
        fault = PageFault(pasid, f["prg_index"], perm, f["address"] << 12, bool(f["last"]))
        if f["last"] and not f["read"] and not f["write"]:
            return  # a Stop Marker needs no response
        if self.reporter is not None:
            self.reporter.page_request(f["streamid"], fault)
        elif f["last"]:
            self.page_response(f["streamid"], pasid, f["prg_index"], 1)

    def page_response(self, rid: int, pasid: int | None, grpid: int, code: int) -> None:
        """A stalled transaction gets CMD_RESUME (retry on success, else abort); a PRI group
        CMD_PRI_RESP (IHI 0070 4.5, 4.6)."""
        if (rid, grpid) in self._stalls:
            self._stalls.discard((rid, grpid))
            self.stats["resumes"] += 1
            self.issue([_cmd(CMD_RESUME, streamid=rid, stag=grpid, ac=int(code == 0))], sync=False)
            return
        f = {"streamid": rid, "prgi": grpid & 0x1FF, "resp": _PRI_RESP.get(code, PRI_RESP_FAIL)}
        if pasid is not None:
            f.update(ssv=1, substreamid=pasid)
        self.issue([_cmd(CMD_PRI_RESP, **f)], sync=False)
