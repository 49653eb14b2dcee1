"""A fault queue on a RISC-V machine: a device's DMA faults on a PASID paging domain whose
iopf handler is a FAULT object's; the page requests go through the IOMMU's page-request queue
(riscv-iommu: "Page-Request-Queue (PQ)") and the fault core into the queue, a user "thread"
reads the records, maps the page and answers by writing the response, and the device's
Page Request Group Response (ATS.PRGR) lets the DMA finish."""

from __future__ import annotations

from tests.sw.sva.conftest import SvaMachine

from iommusim.mem import SparseMemory
from iommusim.sw.iommufd import IommufdFile, MmUserMemory, uapi
from iommusim.sw.iommufd.fault import FaultHooks, IommufdFault
from iommusim.sw.iommufd.fds import POLLIN
from iommusim.sw.iommufd.objects import ObjType
from iommusim.sw.iopf import PERM_WRITE, RESP_SUCCESS
from iommusim.sw.mm import Mm
from iommusim.sw.pages import PageAllocator
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

PAGE = 4096
PGFAULT = uapi.STRUCTS["iommu_hwpt_pgfault"]
RESPONSE = uapi.STRUCTS["iommu_hwpt_page_response"]
DEV_ID = 3


def test_a_device_fault_is_read_answered_and_the_dma_completes() -> None:
    m = SvaMachine()
    dev, ep = m.dev("acc"), m.ep("acc")
    user_mem = SparseMemory()
    ictx = IommufdFile(MmUserMemory(Mm(user_mem, PageAllocator(user_mem, 0, 64 * PAGE), "sv48")))
    ictx.fault_hooks = FaultHooks(m.core.iopf, lambda d: DEV_ID if d is dev else 0)
    arg = uapi.IOCTLS[uapi.IOMMU_FAULT_QUEUE_ALLOC].encode(size=16)
    ictx.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC, arg)
    out = uapi.IOCTLS[uapi.IOMMU_FAULT_QUEUE_ALLOC].decode(arg)
    fault = ictx.objects.get(out["out_fault_id"], ObjType.FAULT)
    assert isinstance(fault, IommufdFault)
    f = ictx.fds[out["out_fault_fd"]]

    dom = m.core.domain_alloc_paging(dev)
    dom.iopf_handler = fault.iopf_handler
    m.core.attach_device_pasid(dom, dev, 5)
    seen: list[dict[str, int]] = []

    def user_thread() -> None:
        """Poll the fault fd; map every faulting page and answer its group."""
        if not f.poll() & POLLIN:
            m.system.clock.call_after(1000, user_thread)
            return
        data = f.read(PGFAULT.size * 16)
        recs = [PGFAULT.decode(data[i : i + 40]) for i in range(0, len(data), 40)]
        seen.extend(recs)
        for r in recs:
            m.core.map(dom, r["addr"], m.kernel.pages.alloc_page(), PAGE, IOMMU_READ | IOMMU_WRITE)
        cookies = sorted({r["cookie"] for r in recs})
        f.write(b"".join(bytes(RESPONSE.encode(cookie=c, code=RESP_SUCCESS)) for c in cookies))

    m.system.clock.call_after(1000, user_thread)
    assert ep.dma_write(0x40_0000, b"paged in", pasid=5).ok
    (rec,) = seen
    assert rec["dev_id"] == DEV_ID and rec["pasid"] == 5 and rec["addr"] == 0x40_0000
    assert rec["flags"] == (
        uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID | uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE
    )
    assert rec["perm"] & PERM_WRITE and rec["cookie"] == 1
    assert ep.dma_read(0x40_0000, 8, pasid=5).data == b"paged in"
    assert ep.stats.prg_success == 1 and ep.stats.unexpected_prgr == 0
    assert fault.response == {} and m.core.iopf.pending == {}

    # A fault nobody reads: detaching the PASID, then the integrator's auto-response,
    # answers it "invalid" once (the core first, the queue does not repeat it).
    answered = m.driver.stats["prgr"]
    assert not ep.dma_write(0x80_0000, b"x", pasid=5).ok  # times out: nobody answers
    assert len(fault.deliver) == 1
    m.core.detach_device_pasid(dom, dev, 5)
    fault.auto_respond(dom, dev, 5)
    assert fault.deliver == [] and m.driver.stats["prgr"] == answered + 1
    f.close()
    ictx.close()
    assert len(ictx.objects) == 0
