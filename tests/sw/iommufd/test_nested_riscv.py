"""Nested translation on RISC-V through iommufd's uAPI: a VMM maps guest RAM into an IOAS,
allocates a NEST_PARENT HWPT (the G-stage), then a nested HWPT from the guest's device
context (the model's RISC-V data, :mod:`iommusim.sw.iommufd.uapi_riscv`), attaches the
device, and the hardware model walks the guest's first stage under the host's G-stage.
The guest's invalidations arrive as IOTINVAL.VMA commands through HWPT_INVALIDATE."""

from __future__ import annotations

import errno
from typing import Final

import pytest

from iommusim.bits.riscv.queues import CMD_IOFENCE, CMD_IOTINVAL
from iommusim.bits.riscv.structures import DC_TA
from iommusim.errors import ApiError
from iommusim.mem import AddressMap
from iommusim.sw.iommufd import Iommufd, uapi, uapi_riscv
from iommusim.sw.iommufd.hwpt import HwptNested
from iommusim.sw.mm import PROT_READ, PROT_WRITE
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.gather import IotlbGather
from iommusim.sw.pgtable.riscv import RiscvPageTable
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE
from testsupport.riscv_machine import Machine

PAGE: Final = 4096
GUEST_RAM: Final = 0x8000_0000  # guest-physical base of guest RAM (= its IOVA in the IOAS)
GUEST_PAGES: Final = 16
GVA: Final = 0x40_0000
READ_PAGE_FAULT: Final = 13
RW: Final = IOMMU_READ | IOMMU_WRITE
PARENT: Final = uapi.IOMMU_HWPT_ALLOC_NEST_PARENT


class Guest:
    """A VMM process whose buffer is the guest's RAM, mapped into an IOAS at GUEST_RAM, and
    the guest's own Sv39 first stage built in that RAM."""

    def __init__(self) -> None:
        self.m = m = Machine()
        self.mm = m.kernel.new_process("vmm")
        self.fd = Iommufd.over_mm(self.mm, core=m.core)
        self.ram = self.mm.mmap(GUEST_PAGES * PAGE, PROT_READ | PROT_WRITE)
        self.dev_id = self.fd.bind(m.dev("nic"))
        self.ioas = self.fd.ioas_alloc()
        self.fd.ioas_map(self.ioas, self.ram, GUEST_PAGES * PAGE, iova=GUEST_RAM)
        self.parent = self.fd.hwpt_alloc(self.dev_id, self.ioas, flags=PARENT)
        # The parent's domain pinned guest RAM; the guest sees it at GUEST_RAM.
        view = AddressMap()
        for i in range(GUEST_PAGES):
            host = self.mm.translate(self.ram + i * PAGE)
            assert host is not None
            view.add(GUEST_RAM + i * PAGE, PAGE, m.bus, name=f"g{i}", target_pa=host)
        self.view = view
        self.pages = PageAllocator(view, GUEST_RAM, GUEST_PAGES * PAGE)
        self.vs = RiscvPageTable(view, self.pages, "sv39")

    def nested(self, fsc: int, pscid: int) -> int:
        data = bytes(uapi_riscv.RISCV_HWPT.encode(fsc=fsc, ta=DC_TA.encode(pscid=pscid)))
        return self.fd.hwpt_alloc(
            self.dev_id, self.parent, data_type=uapi_riscv.IOMMU_HWPT_DATA_RISCV_IOMMU, data=data
        )

    def invalidate(self, hwpt: int, *cmds: int) -> tuple[int, ApiError | None]:
        entries = [
            bytes(
                uapi_riscv.RISCV_INVALIDATE.encode({"cmd[0]": c & (2**64 - 1), "cmd[1]": c >> 64})
            )
            for c in cmds
        ]
        return self.fd.hwpt_invalidate(
            hwpt, uapi_riscv.IOMMU_HWPT_INVALIDATE_DATA_RISCV_IOMMU, entries
        )


def _vma(**f: int) -> int:
    return CMD_IOTINVAL.encode(opcode=1, func3=0, **f)


def test_guest_dma_goes_through_the_guests_table_and_the_hosts_g_stage() -> None:
    g = Guest()
    data_gpa = g.pages.alloc_page()
    g.view.write(data_gpa, b"guest data")
    g.vs.map(GVA, data_gpa, PAGE, RW)
    nested = g.nested(g.vs.atp(), 5)
    assert g.fd.attach(g.dev_id, nested) == nested
    _, ta, fsc = g.m.dc(0x08)
    assert fsc == g.vs.atp() and DC_TA.decode(ta)["pscid"] == 5
    res = g.m.ep("nic").dma_read(GVA, 10)
    assert res.ok and res.data == b"guest data"
    # The bytes live in the VMM's own memory, where the guest put them.
    assert g.mm.read(g.ram + (data_gpa - GUEST_RAM), 10) == b"guest data"

    # The guest unmaps and invalidates through HWPT_INVALIDATE: one guest IOTINVAL.VMA.
    g.vs.unmap(GVA, PAGE, IotlbGather())
    assert g.m.ep("nic").dma_read(GVA, 4).ok  # still cached: the guest has not asked yet
    start = g.m.sent
    assert g.invalidate(nested, _vma(av=1, addr=GVA >> 12, pscv=1, pscid=5)) == (1, None)
    sent = g.m.commands_since(start)
    inv = [c for c in sent if c["op"] == "iotinval"]
    parent = g.fd.file.objects.get(g.parent)
    assert [(c["gv"], c["pscid"], c["addr"]) for c in inv] == [(1, 5, GVA >> 12)]
    assert inv[0]["gscid"] == parent.domain.gscid  # type: ignore[attr-defined]
    assert any(c["op"] == "iofence" for c in sent)
    res = g.m.ep("nic").dma_read(GVA, 4)
    assert not res.ok and res.fault.cause == READ_PAGE_FAULT


def test_invalidation_entries_stop_at_the_first_bad_one_and_report_the_count() -> None:
    g = Guest()
    nested = g.nested(0, 2)
    good = _vma()
    fence = CMD_IOFENCE.encode(opcode=2, func3=0)
    done, err = g.invalidate(nested, good, good, fence, good)
    assert done == 2 and err is not None and err.errno == errno.EOPNOTSUPP
    done, err = g.invalidate(nested, good, _vma(gv=1))
    assert done == 1 and err is not None and err.errno == errno.EINVAL
    done, err = g.invalidate(nested, _vma(pscv=1, pscid=3))  # another PSCID than the domain's
    assert done == 0 and err is not None and err.errno == errno.EINVAL
    # A wrong array type is EINVAL even with no entries (the type is probed first).
    done, err = g.fd.hwpt_invalidate(nested, 0, [])
    assert (done, err is not None and err.errno) == (0, errno.EINVAL)
    done, err = g.fd.hwpt_invalidate(g.parent, 0, [])  # a paging HWPT has none: EINVAL
    assert (done, err is not None and err.errno) == (0, errno.EINVAL)


@pytest.mark.parametrize(
    ("fsc", "ta", "code"),
    [
        (1 << 50, 0, errno.EINVAL),  # a reserved fsc bit
        (0, 1, errno.EINVAL),  # ta carries more than a PSCID
        (11 << 60, 0, errno.EINVAL),  # no such first-stage mode
    ],
)
def test_bad_guest_contexts_are_refused_and_leave_nothing(fsc: int, ta: int, code: int) -> None:
    g = Guest()
    before = [(o.id, o.users) for o in g.fd.file.objects]
    data = bytes(uapi_riscv.RISCV_HWPT.encode(fsc=fsc, ta=ta))
    with pytest.raises(ApiError) as e:
        g.fd.hwpt_alloc(
            g.dev_id, g.parent, data_type=uapi_riscv.IOMMU_HWPT_DATA_RISCV_IOMMU, data=data
        )
    assert e.value.errno == code
    assert [(o.id, o.users) for o in g.fd.file.objects] == before


def test_nested_allocation_rules() -> None:
    g = Guest()
    data = bytes(uapi_riscv.RISCV_HWPT.encode(fsc=0, ta=0))
    rv = uapi_riscv.IOMMU_HWPT_DATA_RISCV_IOMMU

    def alloc(pt: int, flags: int = 0, dtype: int = rv, d: bytes = data) -> int:
        return g.fd.hwpt_alloc(g.dev_id, pt, flags=flags, data_type=dtype, data=d)

    plain = g.fd.hwpt_alloc(g.dev_id, g.ioas)
    cases = [
        (lambda: alloc(plain), errno.EINVAL),  # not a nesting parent
        (lambda: alloc(g.parent, dtype=0x1234), errno.EOPNOTSUPP),  # another data type
        (lambda: alloc(g.parent, flags=uapi.IOMMU_HWPT_ALLOC_PASID), errno.EOPNOTSUPP),
        (lambda: alloc(g.parent, flags=1 << 9), errno.EOPNOTSUPP),
        (lambda: alloc(g.parent, d=data[:8]), errno.EINVAL),  # shorter than the struct
        (lambda: alloc(g.parent, d=data + bytes(8)), errno.EINVAL),  # longer: 7.3 says EINVAL
    ]
    for call, code in cases:
        before = [(o.id, o.users) for o in g.fd.file.objects]
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.errno == code
        assert [(o.id, o.users) for o in g.fd.file.objects] == before
    nested = alloc(g.parent)
    hwpt = g.fd.file.objects.get(nested)
    assert isinstance(hwpt, HwptNested) and hwpt.parent.id == g.parent
    # The parent is used by the nested HWPT: EBUSY; after the nested one goes, it can go.
    with pytest.raises(ApiError) as e:
        g.fd.destroy(g.parent)
    assert e.value.errno == errno.EBUSY
    g.fd.destroy(nested)
    g.fd.destroy(g.parent)
