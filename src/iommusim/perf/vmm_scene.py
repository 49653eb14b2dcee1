"""A VMM assigns a NIC to a guest through iommufd with nested translation -- the scene
``make demo`` shows after SVA.

Every step is the ioctl (or VFIO call) a VMM such as QEMU makes, served by the model's
``/dev/iommu`` over a booted RISC-V machine, and every DMA goes through the hardware model:

1. VFIO_DEVICE_BIND_IOMMUFD, IOMMU_GET_HW_INFO: the VMM owns the NIC and reads the IOMMU.
2. IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP: guest RAM (the VMM's own memory) at its guest-physical
   address.
3. IOMMU_HWPT_ALLOC(NEST_PARENT): the host's G-stage over that IOAS.
4. The guest builds its own Sv39 first stage in its RAM; IOMMU_FAULT_QUEUE_ALLOC; IOMMU_HWPT_ALLOC
   of a nested HWPT from the guest's device context (the model's RISC-V data), with the fault
   queue; VFIO_DEVICE_ATTACH_IOMMUFD_PT.
5. Guest DMA: the NIC reads a guest-virtual address; the IOMMU walks the guest's table with
   every table address translated by the G-stage.
6. A guest page fault: the NIC touches an address the guest has not mapped; its ATS request
   fails, it sends a Page Request; the record arrives on the fault queue; the VMM hands it to
   the guest, which maps the page, and the VMM writes the response; the NIC retries. Then, as
   live migration's pre-copy does, IOMMU_HWPT_SET_DIRTY_TRACKING on the parent (tc.GADE: the
   IOMMU sets the G-stage D bits), a device write, IOMMU_HWPT_GET_DIRTY_BITMAP: the guest
   page the device wrote is reported dirty.
7. The guest unmaps and invalidates (IOMMU_HWPT_INVALIDATE with an IOTINVAL.VMA): the next
   DMA there faults.
8. Teardown: detach, destroy, close; the NIC goes back to the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from iommusim.bits.riscv.queues import CMD_IOTINVAL, FUNC_IOTINVAL_VMA, OP_IOTINVAL
from iommusim.bits.riscv.structures import DC_TA
from iommusim.errors import InvalidArgument, ModelError
from iommusim.mem import AddressMap
from iommusim.mem.protocol import PhysicalMemory
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.iommufd import Iommufd, uapi, uapi_riscv
from iommusim.sw.iommufd.fds import POLLIN
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE, Mm
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.pgtable.riscv import RiscvPageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

__all__ = ["VmmConfig", "VmmReport", "VmmStep", "run_vmm_scene"]

_PAGE: Final = 4096
_NIC: Final = "nic"
_RW: Final = IOMMU_READ | IOMMU_WRITE
_PGFAULT: Final = uapi.STRUCTS["iommu_hwpt_pgfault"]
_RESPONSE: Final = uapi.STRUCTS["iommu_hwpt_page_response"]
_M64: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class VmmConfig:
    """Guest RAM size and placement, and the guest's addresses."""

    guest_ram_gpa: int = 0x8000_0000
    guest_ram_pages: int = 32
    guest_pscid: int = 5
    gva: int = 0x40_0000
    fault_gva: int = 0x50_0000

    def __post_init__(self) -> None:
        """EINVAL for a layout the scene cannot run: guest RAM page aligned, below the
        Sv39x4 G-stage's 41 bits and at least 8 pages (the guest's tables and data); the two
        guest-virtual addresses distinct pages of the Sv39 lower half; a 20-bit PSCID."""
        ram_end = self.guest_ram_gpa + self.guest_ram_pages * _PAGE
        if self.guest_ram_gpa % _PAGE or self.guest_ram_pages < 8 or ram_end > 1 << 41:
            raise InvalidArgument(
                f"guest RAM {self.guest_ram_gpa:#x} + {self.guest_ram_pages} pages must be "
                "page aligned, at least 8 pages, below 2^41"
            )
        for name in ("gva", "fault_gva"):
            v = getattr(self, name)
            if v % _PAGE or not 0 <= v < 1 << 38:
                raise InvalidArgument(f"{name} {v:#x} must be a page of the Sv39 lower half")
        if self.gva == self.fault_gva:
            raise InvalidArgument("gva and fault_gva must be different pages")
        if not 0 <= self.guest_pscid < 1 << 20:
            raise InvalidArgument(f"guest_pscid {self.guest_pscid:#x} must fit 20 bits")


@dataclass(frozen=True, slots=True)
class VmmStep:
    """One line of the scene: who acted, the call, its outcome and what it shows."""

    actor: str
    call: str
    result: str
    detail: str


@dataclass(slots=True)
class VmmReport:
    steps: list[VmmStep] = field(default_factory=list)
    ioctls: int = 0
    errors: int = 0
    guest_dma_ok: bool = False
    fault_served: bool = False
    #: Guest-physical pages the device dirtied while tracking was on (GET_DIRTY_BITMAP).
    dirty_gpas: list[int] = field(default_factory=list)
    stale_after_invalidate: bool = True
    nic_returned: bool = False

    def add(self, actor: str, call: str, result: str, detail: str = "") -> None:
        self.steps.append(VmmStep(actor, call, result, detail))

    def as_dict(self) -> dict[str, object]:
        return {
            "steps": [
                {"actor": s.actor, "call": s.call, "result": s.result, "detail": s.detail}
                for s in self.steps
            ],
            "ioctls": self.ioctls,
            "errors": self.errors,
            "guest_dma_ok": self.guest_dma_ok,
            "fault_served": self.fault_served,
            "dirty_gpas": list(self.dirty_gpas),
            "stale_after_invalidate": self.stale_after_invalidate,
            "nic_returned": self.nic_returned,
        }


def guest_view(vmm: Mm, ram_va: int, gpa: int, pages: int, bus: PhysicalMemory) -> AddressMap:
    """Guest-physical memory from ``gpa``: each guest page is the host page backing the
    VMM's buffer at ``ram_va`` (pinned by the IOAS, so it stays put)."""
    view = AddressMap()
    for i in range(pages):
        host = vmm.translate(ram_va + i * _PAGE)
        if host is None:  # pragma: no cover - the parent's domain pinned every page
            raise ModelError(f"guest page {i} is not resident")
        view.add(gpa + i * _PAGE, _PAGE, bus, name=f"gpa{i}", target_pa=host)
    return view


def run_vmm_scene(cfg: VmmConfig | None = None) -> VmmReport:
    cfg = cfg or VmmConfig()
    rep = VmmReport()
    system = System(SystemConfig(endpoints=(EndpointConfig(_NIC, 0x08, ats=True, pri=True),)))
    kernel = Kernel(system)
    nic, ep = kernel.device(_NIC), system.endpoint(_NIC)
    vmm = kernel.new_process("vmm")
    fd = Iommufd.over_mm(vmm, core=kernel.core)
    ram = vmm.mmap(cfg.guest_ram_pages * _PAGE, PROT_READ | PROT_WRITE)
    size = cfg.guest_ram_pages * _PAGE

    # 1. ownership and capabilities
    dev_id = fd.bind(nic)
    rep.add("VMM", "VFIO_DEVICE_BIND_IOMMUFD(nic)", f"dev_id {dev_id}", "group -> blocking")
    info = fd.get_hw_info(dev_id)
    caps = uapi_riscv.RISCV_HW_INFO.decode(info.data)
    rep.add(
        "VMM",
        "IOMMU_GET_HW_INFO",
        f"type {info.data_type:#x}",
        f"capabilities {caps['capabilities']:#x}, fctl {caps['fctl']:#x}",
    )
    # 2. guest RAM in an IOAS
    ioas = fd.ioas_alloc()
    fd.ioas_map(ioas, ram, size, iova=cfg.guest_ram_gpa)
    rep.add(
        "VMM",
        "IOMMU_IOAS_ALLOC + IOAS_MAP",
        f"ioas {ioas}",
        f"GPA {cfg.guest_ram_gpa:#x}+{size:#x}",
    )
    # 3. the host's G-stage
    flags = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT | uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
    parent = fd.hwpt_alloc(dev_id, ioas, flags=flags)
    rep.add(
        "VMM",
        "IOMMU_HWPT_ALLOC(NEST_PARENT|DIRTY_TRACKING)",
        f"hwpt {parent}",
        "G-stage filled from the IOAS",
    )
    # 4. the guest's first stage, the fault queue, the nested HWPT
    view = guest_view(vmm, ram, cfg.guest_ram_gpa, cfg.guest_ram_pages, system.bus)
    gpages = PageAllocator(view, cfg.guest_ram_gpa, size)
    vs = RiscvPageTable(view, gpages, "sv39")
    data_gpa = gpages.alloc_page()
    view.write(data_gpa, b"hello from guest RAM")
    vs.map(cfg.gva, data_gpa, _PAGE, _RW)
    rep.add(
        "guest", "builds Sv39", f"GVA {cfg.gva:#x} -> GPA {data_gpa:#x}", f"iosatp {vs.atp():#x}"
    )
    fault_id, fault_fd = fd.fault_queue_alloc()
    rep.add("VMM", "IOMMU_FAULT_QUEUE_ALLOC", f"fault {fault_id}, fd {fault_fd}")
    data = bytes(uapi_riscv.RISCV_HWPT.encode(fsc=vs.atp(), ta=DC_TA.encode(pscid=cfg.guest_pscid)))
    nested = fd.hwpt_alloc(
        dev_id,
        parent,
        data_type=uapi_riscv.IOMMU_HWPT_DATA_RISCV_IOMMU,
        data=data,
        fault_id=fault_id,
    )
    rep.add("VMM", "IOMMU_HWPT_ALLOC(nested, RISC-V data)", f"hwpt {nested}", "guest fsc + PSCID")
    fd.attach(dev_id, nested)
    rep.add("VMM", "VFIO_DEVICE_ATTACH_IOMMUFD_PT", f"hwpt {nested}", "DC: fsc=guest, iohgatp=host")
    # 5. guest DMA
    res = ep.dma_read(cfg.gva, 20)
    rep.guest_dma_ok = res.ok and res.data == b"hello from guest RAM"
    rep.add("NIC", f"DMA read GVA {cfg.gva:#x}", "ok" if res.ok else "fault", repr(res.data))
    # 6. a guest page fault through the fault queue
    f = fd.file.fds[fault_fd]
    served: list[tuple[dict[str, int], int]] = []
    running = [True]

    def vmm_thread() -> None:
        """The VMM's fault thread: hands each record to the guest, whose fault handler
        maps ``fault_gva`` and refuses anything else (it unmapped it on purpose)."""
        if not running[0]:
            return
        if f.poll() & POLLIN:
            rec = _PGFAULT.decode(f.read(_PGFAULT.size))
            page_va = rec["addr"] & ~(_PAGE - 1)
            code = uapi.IOMMUFD_PAGE_RESP_INVALID
            if page_va == cfg.fault_gva:
                page = gpages.alloc_page()
                view.write(page, b"paged in by guest")
                vs.map(page_va, page, _PAGE, _RW)
                code = uapi.IOMMUFD_PAGE_RESP_SUCCESS
            served.append((rec, code))
            f.write(bytes(_RESPONSE.encode(cookie=rec["cookie"], code=code)))
        system.clock.call_after(1000, vmm_thread)

    system.clock.call_after(1000, vmm_thread)
    res = ep.dma_read(cfg.fault_gva, 17)
    rep.fault_served = bool(served) and res.ok and res.data == b"paged in by guest"
    for rec, code in served:
        rep.add(
            "IOMMU",
            "page request -> fault queue",
            f"addr {rec['addr']:#x}",
            f"dev_id {rec['dev_id']}, grpid {rec['grpid']}, cookie {rec['cookie']}",
        )
        answer = "SUCCESS" if code == uapi.IOMMUFD_PAGE_RESP_SUCCESS else "INVALID"
        rep.add("VMM+guest", "read(fault fd); guest maps; write(response)", answer)
    rep.add("NIC", f"DMA read GVA {cfg.fault_gva:#x}", "ok" if res.ok else "fault", repr(res.data))
    # 6b. live migration's pre-copy: which guest pages did the device dirty?
    fd.set_dirty_tracking(parent, True)
    res = ep.dma_write(cfg.gva + 0x100, b"written by the NIC")
    dirty = fd.get_dirty_bitmap(parent, cfg.guest_ram_gpa, size, _PAGE)
    rep.dirty_gpas = [cfg.guest_ram_gpa + i * _PAGE for i in dirty]
    rep.add("VMM", "IOMMU_HWPT_SET_DIRTY_TRACKING(on)", "ok", "tc.GADE: the IOMMU sets G-stage D")
    rep.add("NIC", f"DMA write GVA {cfg.gva + 0x100:#x}", "ok" if res.ok else "fault")
    rep.add(
        "VMM",
        "IOMMU_HWPT_GET_DIRTY_BITMAP",
        f"{len(dirty)} dirty page(s)",
        ", ".join(f"GPA {g:#x}" for g in rep.dirty_gpas),
    )
    fd.set_dirty_tracking(parent, False)
    # 7. guest unmap + invalidate
    vs.unmap(cfg.gva, _PAGE, IotlbGather())
    cmd = CMD_IOTINVAL.encode(opcode=OP_IOTINVAL, func3=FUNC_IOTINVAL_VMA, av=1, addr=cfg.gva >> 12)
    entry = bytes(uapi_riscv.RISCV_INVALIDATE.encode({"cmd[0]": cmd & _M64, "cmd[1]": cmd >> 64}))
    done, err = fd.hwpt_invalidate(
        nested, uapi_riscv.IOMMU_HWPT_INVALIDATE_DATA_RISCV_IOMMU, [entry]
    )
    rep.add("guest->VMM", "IOMMU_HWPT_INVALIDATE(IOTINVAL.VMA)", f"{done} entry", str(err or ""))
    before = len(served)
    res = ep.dma_read(cfg.gva, 8)
    running[0] = False
    rep.stale_after_invalidate = res.ok
    for rec, _ in served[before:]:
        rep.add("IOMMU", "page request -> fault queue", f"addr {rec['addr']:#x}")
        rep.add("VMM+guest", "read(fault fd); guest refuses; write(response)", "INVALID")
    rep.add(
        "NIC",
        f"DMA read GVA {cfg.gva:#x}",
        "ok (stale!)" if res.ok else "fault",
        "" if res.ok else res.outcome,
    )
    # 8. teardown
    fd.file.detach_device(dev_id)
    f.close()
    for oid in (nested, fault_id, parent, ioas):
        fd.destroy(oid)
    fd.file.unbind_device(dev_id)
    rep.ioctls, rep.errors = fd.file.ioctls, sum(fd.file.errors.values())
    fd.close()
    group = nic.group
    rep.nic_returned = group is not None and group.domain is group.default_domain
    rep.add("VMM", "detach, DESTROY x4, unbind, close", "ok", "NIC back on its DMA domain")
    return rep
