"""A guest behind a VMM on an SMMUv3 host: the guest's own kernel drives a virtual SMMUv3 the
VMM traps, the host SMMUv3 runs the guest's stage 1 nested over the host's stage 2 (after
QEMU's ``smmuv3-accel`` on Linux iommufd; the seed "iommufd: Add VIOMMU infrastructure").

The virtual SMMUv3 is the hardware model's register file and queues (:class:`Smmuv3`) over
the guest's memory, with an accelerated translator (:class:`AccelTranslator`) that
translates nothing: the guest's configuration and maintenance go to iommufd instead --

* CMD_CFGI_STE (and CFGI_ALL) of a virtual StreamID: the VMM reads the guest's STE from the
  guest's stream table and installs it as a nested HWPT on the vIOMMU
  (IOMMU_HWPT_ALLOC with IOMMU_HWPT_DATA_ARM_SMMUV3), attaching the assigned device to it;
* TLB invalidations, CMD_CFGI_CD(_ALL) and CMD_ATC_INV: re-encoded as the guest's 16-byte
  commands and sent with IOMMU_HWPT_INVALIDATE on the vIOMMU (the host puts in its VMID and
  the physical StreamID);
* host events of the guest's stream arrive on the vEVENTQ; :meth:`GuestScene.forward_events`
  writes them into the guest's event queue, whose MSI the guest's driver takes.

The guest kernel is the project's own (``Kernel`` with the SMMUv3 driver) on a
:class:`~iommusim.platform.system.System` whose RAM is the VMM's memory; the assigned device's
DMA is the host endpoint's, translated by the host SMMU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from iommusim.bits.arm import smmuv3_pmcg as PMCG
from iommusim.bits.arm.smmuv3_queues import (
    CMD_ATC_INV,
    CMD_CFGI_CD,
    CMD_CFGI_CD_ALL,
    CMD_TLBI_NH_ALL,
    CMD_TLBI_NH_ASID,
    CMD_TLBI_NH_VA,
    CMD_TLBI_NH_VAA,
    CMD_TLBI_NSNH_ALL,
    Command,
)
from iommusim.bits.arm.smmuv3_regs import IDR0
from iommusim.bits.arm.smmuv3_structures import STRTAB_L1
from iommusim.errors import ApiError
from iommusim.hw.smmuv3.maintenance import Tlbi, TranslationCounts
from iommusim.hw.smmuv3.params import PRESETS, Smmuv3Params
from iommusim.hw.smmuv3.ports import AtcStatus
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.hw.smmuv3.transaction import Event, Request, Response
from iommusim.hw.smmuv3.upstream import Smmuv3UpstreamPort
from iommusim.mem.protocol import PhysicalMemory
from iommusim.perf.vmm_scene import guest_view
from iommusim.platform.system import (
    EndpointConfig,
    IommuConfig,
    MessageSink,
    RamRegion,
    System,
    SystemConfig,
)
from iommusim.sim.clock import VirtualClock
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.iommufd import Iommufd, uapi
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE

__all__ = [
    "GUEST_PARAMS",
    "AccelTranslator",
    "GuestScene",
    "GuestSceneReport",
    "run_guest_scene",
    "run_host_baseline",
]

_PAGE: Final = 4096
_Q: Final = (1 << 64) - 1
#: The virtual SMMUv3 a guest sees (as QEMU's smmuv3-accel offers): stage 1 only, MSIs, no
#: ATS, PRI, stalls or HTTU, a linear stream table of 256 StreamIDs.
GUEST_PARAMS: Final = replace(
    PRESETS["full"],
    idr0=IDR0.encode(
        s1p=1,
        ttf=0b10,
        cohacc=1,
        asid16=1,
        msi=1,
        ttendian=0b10,
        stall_model=0b01,
        term_model=1,
        st_level=0,
    ),
    idr1=PRESETS["minimal"].idr1,
)
_HWPT: Final = uapi.STRUCTS["iommu_hwpt_arm_smmuv3"]
_INV: Final = uapi.STRUCTS["iommu_viommu_arm_smmuv3_invalidate"]
_HEADER: Final = uapi.STRUCTS["iommufd_vevent_header"]
#: Each guest TLBI scope as the command the host takes from a guest (IHI 0070 4.4).
_TLBI_CMD: Final[dict[str, Command]] = {
    "nh_all": CMD_TLBI_NH_ALL,
    "nh_asid": CMD_TLBI_NH_ASID,
    "nh_va": CMD_TLBI_NH_VA,
    "nh_vaa": CMD_TLBI_NH_VAA,
    "nsnh_all": CMD_TLBI_NSNH_ALL,
}


class AccelTranslator:
    """The virtual SMMUv3's translator (the contract of
    :class:`~iommusim.hw.smmuv3.ports.TranslatorPort`): configuration and maintenance go to
    the host through iommufd, translations are the host's (it answers none itself)."""

    def __init__(self, params: Smmuv3Params, guest_mem: PhysicalMemory) -> None:
        self.params = params
        self.mem = guest_mem
        self.enabled = False
        self.gbpa_abort = False
        self.record_bad_sid = True
        self.ptm = True
        self.e2h = False
        self.counts = TranslationCounts()
        self._strtab = (0, 0, 0, 0)
        #: Set by the VMM once iommufd is ready: the file, the vIOMMU, vSID -> device id.
        self.fd: Iommufd | None = None
        self.viommu = 0
        self.devices: dict[int, int] = {}
        self.hwpts: dict[int, int] = {}
        self.forwarded = 0
        self.installs = 0

    # -- configuration --------------------------------------------------------------------

    def set_stream_table(self, base: int, log2size: int, fmt: int, split: int) -> None:
        self._strtab = (base, log2size, fmt, split)

    def _guest_ste(self, vsid: int) -> int:
        """The guest's STE of ``vsid`` from its stream table (qwords 0 and 1: what the host
        takes, IHI 0070 5.2), 0 when outside the table."""
        base, log2size, fmt, split = self._strtab
        if vsid >> log2size:
            return 0
        pa = base + vsid * 64
        if fmt == 1:
            l1 = self.mem.read64(base + (vsid >> split) * 8)
            if not STRTAB_L1["span"].get(l1):
                return 0
            pa = (STRTAB_L1["l2ptr"].get(l1) << 6) + (vsid & ((1 << split) - 1)) * 64
        return self.mem.read64(pa) | self.mem.read64(pa + 8) << 64

    def install(self, vsid: int) -> None:
        """CFGI_STE of ``vsid``: its STE as a nested HWPT, the device attached to it, the
        previous nested HWPT destroyed (QEMU ``smmuv3_accel_install_nested_ste``)."""
        fd, dev_id = self.fd, self.devices.get(vsid)
        if fd is None or dev_id is None:
            return
        ste = self._guest_ste(vsid)
        data = bytes(_HWPT.encode({"ste[0]": ste & _Q, "ste[1]": ste >> 64 & _Q}))
        try:
            hwpt = fd.hwpt_alloc(
                dev_id, self.viommu, data_type=uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data=data
            )
        except ApiError:
            return  # an STE the host refuses: the device stays where it was
        fd.file.replace_device(dev_id, hwpt)  # VFIO: attach on an attached device replaces
        old = self.hwpts.get(vsid)
        self.hwpts[vsid] = hwpt
        if old is not None:
            fd.destroy(old)
        self.installs += 1

    def _forward(self, cmd: Command, **fields: int) -> None:
        """One guest command to the host (IOMMU_HWPT_INVALIDATE on the vIOMMU)."""
        if self.fd is None:
            return
        v = cmd.layout.encode(opcode=cmd.opcode, **fields)
        entry = bytes(_INV.encode({"cmd[0]": v & _Q, "cmd[1]": v >> 64 & _Q}))
        self.fd.hwpt_invalidate(self.viommu, uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, [entry])
        self.forwarded += 1

    # -- CacheMaintenance ------------------------------------------------------------------

    def prefetch_config(self, sid: int, ssv: bool, ssid: int) -> None:
        return None

    def cfgi_ste(self, sid: int, leaf: bool) -> None:
        self.install(sid)

    def cfgi_ste_range(self, sid: int, range_lg2: int) -> None:
        for vsid in list(self.devices):
            if range_lg2 >= 31 or vsid >> (range_lg2 + 1) == sid >> (range_lg2 + 1):
                self.install(vsid)

    def cfgi_cd(self, sid: int, ssid: int, leaf: bool) -> None:
        self._forward(CMD_CFGI_CD, streamid=sid, substreamid=ssid, leaf=int(leaf))

    def cfgi_cd_all(self, sid: int) -> None:
        self._forward(CMD_CFGI_CD_ALL, streamid=sid)

    def tlbi(self, t: Tlbi) -> None:
        cmd = _TLBI_CMD.get(t.scope)
        if cmd is None:
            return  # a stage 2 or EL2 scope: a stage 1 only guest SMMU has none
        names = {f.name for f in cmd.layout.fields}
        fields = {
            "asid": t.asid,
            "address": t.addr >> 12,
            "leaf": int(t.leaf),
            "tg": t.tg,
            "num": t.num,
            "scale": t.scale,
            "ttl": t.ttl,
        }
        self._forward(cmd, **{k: v for k, v in fields.items() if k in names})

    # -- the rest of the contract: no translation happens here -------------------------

    def translate(self, req: Request) -> Response:
        return Response("abort")

    def resume(self, sid: int, stag: int, retry: bool) -> Response | None:
        return None

    def stall_term(self, sid: int) -> list[int]:
        return []

    def stalled(self) -> list[tuple[int, int, Request]]:
        return []

    def invalidate_all(self) -> None:
        return None


class _AccelDevicePort:
    """The virtual SMMU's PCIe side: its ATC invalidations go to the host as guest
    CMD_ATC_INV (the host sends the real Invalidate Request)."""

    def __init__(self, accel: AccelTranslator) -> None:
        self.accel = accel

    def atc_invalidate(
        self, sid: int, ssv: bool, ssid: int, addr: int, size_lg2: int, global_: bool, itag: int
    ) -> AtcStatus:
        f = {"streamid": sid, "ssv": int(ssv), "substreamid": ssid, "size": size_lg2 - 12}
        self.accel._forward(CMD_ATC_INV, **f, address=addr >> 12, **{"global": int(global_)})
        return "done"

    def pri_response(self, sid: int, ssv: bool, ssid: int, prgi: int, resp: int) -> None:
        return None


@dataclass
class GuestSceneReport:
    """What the scene measured: the guest's commands and what reached the host."""

    guest_dma_ok: bool = False
    stale_after_unmap: bool = True
    fault_delivered: str = ""
    guest_commands: int = 0
    forwarded_commands: int = 0
    ste_installs: int = 0
    host_walk_reads_per_miss: float = 0.0
    guest_ns: int = 0
    steps: list[str] = field(default_factory=list)


class GuestScene:
    """The machines: a host with an SMMUv3 (full preset) and a NIC assigned to a guest, the
    VMM's iommufd objects, and the guest's own machine and kernel on a virtual SMMUv3."""

    def __init__(self, guest_ram: int = 4 << 20, gpa: int = 0x8000_0000, vsid: int = 0x18):
        host_cfg = replace(
            SystemConfig(endpoints=(EndpointConfig("nic", 0x10),)), iommu=PRESETS["full"]
        )
        self.host = System(host_cfg)
        self.host_kernel = Kernel(self.host)
        vmm = self.host_kernel.new_process("vmm")
        ram = vmm.mmap(guest_ram, PROT_READ | PROT_WRITE)
        vmm.write(ram, bytes(guest_ram))  # resident (and pinned by the IOAS below)
        self.fd = fd = Iommufd.over_mm(vmm, core=self.host_kernel.core)
        self.dev_id = fd.bind(self.host_kernel.device("nic"))
        ioas = fd.ioas_alloc()
        fd.ioas_map(ioas, ram, guest_ram, iova=gpa)
        parent = fd.hwpt_alloc(self.dev_id, ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
        self.viommu = fd.viommu_alloc(self.dev_id, parent, uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3)
        fd.vdevice_alloc(self.viommu, self.dev_id, vsid)
        _, self.veventq_fd = fd.veventq_alloc(self.viommu, uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, 64)
        fd.attach(self.dev_id, parent)  # guest bypass until the guest configures its STE
        view = guest_view(vmm, ram, gpa, guest_ram // _PAGE, self.host.bus)
        self.accel = AccelTranslator(GUEST_PARAMS, view)
        self.accel.fd, self.accel.viommu = fd, self.viommu
        self.accel.devices[vsid] = self.dev_id
        accel = self.accel
        self.vsmmu: Smmuv3 | None = None

        def vsmmu(
            cfg: IommuConfig,
            port_mem: PhysicalMemory,
            bus: PhysicalMemory,
            clock: VirtualClock,
            sink: MessageSink,
        ) -> tuple[Smmuv3, Smmuv3UpstreamPort]:
            model = Smmuv3(port_mem, GUEST_PARAMS, translator=accel, port=_AccelDevicePort(accel))
            self.vsmmu = model
            return model, Smmuv3UpstreamPort(model, bus, clock)

        guest_cfg = SystemConfig(
            ram=(RamRegion(gpa, guest_ram),),
            iommu=GUEST_PARAMS,
            endpoints=(EndpointConfig("nic", vsid),),
        )
        self.guest = System(guest_cfg, ram=view, iommu_builders={"smmuv3": vsmmu})
        self.guest_kernel = Kernel(self.guest)
        self.nic = self.host.endpoint("nic")  # the device itself: its DMA is the host's

    def forward_events(self) -> int:
        """The VMM's vEVENTQ thread: each host event of the guest's stream into the guest's
        event queue (the vSMMU raises the guest's MSI). Returns how many."""
        vsmmu = self.vsmmu
        if vsmmu is None:
            return 0
        raw = self.fd.file.fds[self.veventq_fd].read(4096)
        n = 0
        step = _HEADER.size + 32
        for off in range(0, len(raw) - step + 1, step):
            vsmmu.eventq.record(Event.from_record(raw[off + _HEADER.size : off + step]))
            n += 1
        return n


def _program_pmcg(system: System) -> int:
    """Count TLB misses and descriptor reads on the system's SMMUv3 (its PMCG page)."""
    pmcg = system.config.iommu_base_pa + PMCG.PMCG_OFFSET
    bus = system.bus
    for i, ev in enumerate((PMCG.EVENT_TLB_MISS, PMCG.EVENT_WALK_ACCESS)):
        bus.write32(pmcg + PMCG.PMCG_EVTYPER + 4 * i, PMCG.EVTYPER.encode(event=ev))
    bus.write32(pmcg + PMCG.PMCG_CNTENSET0, 0b11)
    bus.write32(pmcg + PMCG.PMCG_CR, PMCG.CR.encode(e=1))
    return pmcg


def _reads_per_miss(system: System, pmcg: int) -> float:
    misses = system.bus.read64(pmcg + PMCG.PMCG_EVCNTR)
    reads = system.bus.read64(pmcg + PMCG.PMCG_EVCNTR + 8)
    return round(reads / misses, 2) if misses else 0.0


def run_host_baseline() -> GuestSceneReport:
    """The same steps on the host itself (the NIC on the host kernel's DMA API): what the
    guest scene costs more."""
    host = System(
        replace(SystemConfig(endpoints=(EndpointConfig("nic", 0x10),)), iommu=PRESETS["full"])
    )
    kernel = Kernel(host)
    dev, nic = kernel.device("nic"), host.endpoint("nic")
    faults: list[str] = []
    dev.fault_handler = lambda f: faults.append(f.reason)
    pmcg = _program_pmcg(host)
    rep = GuestSceneReport()
    buf = kernel.pages.alloc_page()
    host.bus.write(buf, b"guest data")
    iova = kernel.core.dma_map(dev, buf, _PAGE, DMA_BIDIRECTIONAL)
    rep.guest_dma_ok = nic.dma_read(iova, 10).data == b"guest data"
    kernel.core.dma_unmap(dev, iova, _PAGE)
    rep.stale_after_unmap = nic.dma_read(iova, 10).ok
    nic.dma_read(0x7000_0000, 4)
    host.run_for(1_000_000)
    rep.fault_delivered = ", ".join(faults)
    drv = kernel.drivers[0]
    assert isinstance(drv, Smmuv3Driver) and drv.cmdq is not None
    rep.guest_commands = sum(drv.cmdq.issued.values())
    rep.host_walk_reads_per_miss = _reads_per_miss(host, pmcg)
    rep.guest_ns = host.clock.now
    return rep


def run_guest_scene() -> GuestSceneReport:
    """Boot the host and the guest, then: a guest DMA map and the device's DMA at the guest's
    IOVA; a strict unmap whose guest TLBI the VMM forwards; a device access the guest never
    mapped, its event delivered into the guest's event queue and to the guest's driver."""
    s = GuestScene()
    rep = GuestSceneReport()
    g = s.guest_kernel
    dev = g.device("nic")
    faults: list[str] = []
    dev.fault_handler = lambda f: faults.append(f.reason)
    buf = g.pages.alloc_page()
    s.guest.bus.write(buf, b"guest data")
    pmcg = _program_pmcg(s.host)
    iova = g.core.dma_map(dev, buf, _PAGE, DMA_BIDIRECTIONAL)
    got = s.nic.dma_read(iova, 10)
    rep.guest_dma_ok = got.ok and got.data == b"guest data"
    rep.steps.append(f"guest dma_map -> IOVA {iova:#x}; device read: {got.data!r}")
    g.core.dma_unmap(dev, iova, _PAGE)
    rep.stale_after_unmap = s.nic.dma_read(iova, 10).ok
    rep.steps.append(f"guest strict unmap; device read after it ok: {rep.stale_after_unmap}")
    s.host.run_for(1_000_000)  # the host's event-queue MSI: the fault lands on the vEVENTQ
    bad = s.nic.dma_read(0x7000_0000, 4)
    s.host.run_for(1_000_000)
    n = s.forward_events()
    s.guest.run_for(1_000_000)  # the guest's event-queue MSI and its driver
    rep.fault_delivered = ", ".join(faults)
    rep.steps.append(f"unmapped access ok={bad.ok}; {n} event(s) forwarded; guest saw {faults}")
    assert s.vsmmu is not None
    drv = s.guest_kernel.drivers[0]
    assert isinstance(drv, Smmuv3Driver) and drv.cmdq is not None
    rep.guest_commands = sum(drv.cmdq.issued.values())
    rep.forwarded_commands = s.accel.forwarded
    rep.ste_installs = s.accel.installs
    rep.host_walk_reads_per_miss = _reads_per_miss(s.host, pmcg)
    rep.guest_ns = s.guest.clock.now
    return rep
