"""Dirty tracking through iommufd's uAPI on a booted RISC-V machine: GET_HW_INFO says
whether the IOMMU can track (``out_capabilities`` DIRTY_TRACKING, from
``capabilities.AMO_HWAD``), HWPT_ALLOC with DIRTY_TRACKING builds the domain,
HWPT_SET_DIRTY_TRACKING switches ``DC.tc.SADE`` (or ``GADE`` for a nesting parent) and
HWPT_GET_DIRTY_BITMAP reads the D bits the hardware model set on the device's writes.

riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates", "Translation
control (tc)" (SADE/GADE), "Accessed (A)/Dirty (D) bit updates and page promotions".
"""

from __future__ import annotations

import errno
from typing import Final

import pytest

from iommusim.bits.riscv.structures import DC_TA, DC_TC
from iommusim.errors import ApiError
from iommusim.hw.riscv.params import PRESETS
from iommusim.mem import AddressMap
from iommusim.sw.iommufd import Iommufd, uapi, uapi_riscv
from iommusim.sw.mm import PROT_READ, PROT_WRITE
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.riscv import RiscvPageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.riscv_machine import Machine

PAGE: Final = 4096
NPAGES: Final = 16
IOVA: Final = 0x8000_0000
GVA: Final = 0x40_0000
DIRTY: Final = uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
_SADE: Final = DC_TC.mask("sade")
_GADE: Final = DC_TC.mask("gade")


class Vmm:
    """A process with iommufd open, NPAGES of its memory mapped into an IOAS at IOVA, and a
    page for dirty bitmaps."""

    def __init__(self, preset: str = "full") -> None:
        self.m = m = Machine(PRESETS[preset])
        self.mm = m.kernel.new_process("vmm")
        self.fd = Iommufd.over_mm(self.mm, core=m.core)
        self.ram = self.mm.mmap(NPAGES * PAGE, PROT_READ | PROT_WRITE)
        self.bitmap = self.mm.mmap(PAGE, PROT_READ | PROT_WRITE)
        self.dev_id = self.fd.bind(m.dev("nic"))
        self.ioas = self.fd.ioas_alloc()
        self.fd.ioas_map(self.ioas, self.ram, NPAGES * PAGE, iova=IOVA)

    def ioctl(self, request: int, **fields: int) -> dict[str, int]:
        s = uapi.IOCTLS[request]
        arg = s.encode(fields, size=s.size)
        self.fd.file.ioctl(request, arg)
        return s.decode(arg)

    def set_tracking(self, hwpt: int, on: bool) -> None:
        flags = uapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE if on else 0
        self.ioctl(uapi.IOMMU_HWPT_SET_DIRTY_TRACKING, flags=flags, hwpt_id=hwpt)

    def dirty_pages(self, hwpt: int, flags: int = 0, iova: int = IOVA) -> list[int]:
        """GET_DIRTY_BITMAP over NPAGES pages from ``iova``: the dirty page numbers."""
        self.mm.write(self.bitmap, bytes(8))
        self.ioctl(
            uapi.IOMMU_HWPT_GET_DIRTY_BITMAP,
            hwpt_id=hwpt,
            flags=flags,
            iova=iova,
            length=NPAGES * PAGE,
            page_size=PAGE,
            data=self.bitmap,
        )
        word = int.from_bytes(self.mm.read(self.bitmap, 8), "little")
        return [n for n in range(NPAGES) if word >> n & 1]

    def state(self) -> object:
        f = self.fd.file
        return [(o.id, o.type, o.users) for o in f.objects], len(f.objects)


def test_get_hw_info_says_dirty_tracking_exactly_with_amo_hwad() -> None:
    for preset, want in (("full", True), ("minimal", False)):
        v = Vmm(preset)
        caps = v.fd.get_hw_info(v.dev_id).capabilities
        assert bool(caps & uapi.IOMMU_HW_CAP_DIRTY_TRACKING) is want, preset


def test_dirty_tracking_without_amo_hwad_is_eopnotsupp_and_changes_nothing() -> None:
    v = Vmm("minimal")
    before = v.state()
    for flags in (DIRTY, DIRTY | uapi.IOMMU_HWPT_ALLOC_NEST_PARENT):
        with pytest.raises(ApiError) as e:
            v.fd.hwpt_alloc(v.dev_id, v.ioas, flags=flags)
        assert e.value.errno == errno.EOPNOTSUPP
        assert v.state() == before
    # A paging HWPT without dirty tracking is refused SET_DIRTY_TRACKING the same way.
    hwpt = v.fd.hwpt_alloc(v.dev_id, v.ioas)
    with pytest.raises(ApiError) as e:
        v.set_tracking(hwpt, True)
    assert e.value.errno == errno.EOPNOTSUPP


def test_the_bitmap_shows_the_pages_the_device_wrote() -> None:
    v = Vmm()
    hwpt = v.fd.hwpt_alloc(v.dev_id, v.ioas, flags=DIRTY)
    assert v.fd.attach(v.dev_id, hwpt) == hwpt
    ep = v.m.ep("nic")
    assert ep.dma_write(IOVA + 1 * PAGE, b"before").ok
    assert v.dirty_pages(hwpt) == []  # tracking is off: nothing tracked
    assert v.m.dc(0x08)[0] & _SADE == 0

    v.set_tracking(hwpt, True)
    assert v.m.dc(0x08)[0] & _SADE
    assert v.dirty_pages(hwpt) == []  # a clean snapshot
    assert ep.dma_write(IOVA + 2 * PAGE + 100, b"two").ok
    assert ep.dma_write(IOVA + 7 * PAGE, b"seven").ok
    assert ep.dma_read(IOVA + 9 * PAGE, 8).ok
    # The data went to the VMM's memory, and the bitmap names the pages written.
    assert v.mm.read(v.ram + 7 * PAGE, 5) == b"seven"
    no_clear = uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
    assert v.dirty_pages(hwpt, flags=no_clear) == [2, 7]
    assert v.dirty_pages(hwpt) == [2, 7]
    assert v.dirty_pages(hwpt) == []
    assert ep.dma_write(IOVA + 7 * PAGE, b"again").ok  # the IOTLB was invalidated
    assert v.dirty_pages(hwpt) == [7]

    v.set_tracking(hwpt, False)
    assert v.m.dc(0x08)[0] & _SADE == 0
    assert ep.dma_write(IOVA + 3 * PAGE, b"off").ok  # no fault with SADE 0
    assert v.dirty_pages(hwpt) == []


def test_a_nested_guests_writes_show_in_the_parents_bitmap_by_guest_physical_page() -> None:
    v = Vmm()
    parent = v.fd.hwpt_alloc(v.dev_id, v.ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT | DIRTY)
    # The guest's RAM is the VMM's buffer at guest-physical IOVA; its Sv39 table lives there.
    view = AddressMap()
    for i in range(NPAGES):
        host = v.mm.translate(v.ram + i * PAGE)
        assert host is not None
        view.add(IOVA + i * PAGE, PAGE, v.m.bus, name=f"g{i}", target_pa=host)
    pages = PageAllocator(view, IOVA, NPAGES * PAGE)
    vs = RiscvPageTable(view, pages, "sv39")
    data_gpa = IOVA + 12 * PAGE
    vs.map(GVA, data_gpa, PAGE, IOMMU_READ | IOMMU_WRITE)
    data = bytes(uapi_riscv.RISCV_HWPT.encode(fsc=vs.atp(), ta=DC_TA.encode(pscid=4)))
    nested = v.fd.hwpt_alloc(
        v.dev_id, parent, data_type=uapi_riscv.IOMMU_HWPT_DATA_RISCV_IOMMU, data=data
    )
    v.fd.attach(v.dev_id, nested)
    v.set_tracking(parent, True)
    assert v.m.dc(0x08)[0] & (_SADE | _GADE) == _GADE
    assert v.dirty_pages(parent) == []
    assert v.m.ep("nic").dma_write(GVA + 8, b"guest").ok
    assert v.dirty_pages(parent) == [(data_gpa - IOVA) // PAGE]
    assert v.dirty_pages(parent) == []
