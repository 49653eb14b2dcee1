"""The SMMUv3 driver under iommufd (after Linux arm-smmu-v3-iommufd.c, issue 15): hw_info, a
NEST_PARENT stage 2, a vIOMMU of type ARM_SMMUV3 with its own VMID, a vDEVICE, a nested
domain from a guest STE whose CD and stage 1 tables live in guest memory, guest commands
forwarded with the virtual StreamID translated, and a guest-stream fault on the vEVENTQ."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from iommusim.bits.arm.smmuv3_queues import (
    CMD_CFGI_CD,
    CMD_TLBI_NH_ALL,
    CMD_TLBI_NH_VA,
    EVT_COMMON,
    F_TRANSLATION,
)
from iommusim.bits.arm.smmuv3_structures import CD, STE, TG0_4K
from iommusim.errors import ApiError, InvalidArgument, IoError
from iommusim.hw.smmuv3.params import PRESETS
from iommusim.hw.smmuv3.transaction import Request as Smmuv3Request
from iommusim.mem.protocol import PhysicalMemory
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.drivers.smmuv3.driver import Smmuv3Driver
from iommusim.sw.drivers.smmuv3.nested import Smmuv3Viommu
from iommusim.sw.iommufd import Iommufd, uapi
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_READ, PROT_WRITE, Mm
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable import ArmLpaePageTable, IotlbGather
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

GPA: Final = 0x4000_0000  # guest RAM starts here
GUEST_RAM: Final = 1 << 21
VSID: Final = 0x42
HWPT: Final = uapi.STRUCTS["iommu_hwpt_arm_smmuv3"]
INV: Final = uapi.STRUCTS["iommu_viommu_arm_smmuv3_invalidate"]


class GuestMemory:
    """Guest physical memory as the guest kernel sees it: GPA -> the VMM's RAM mapping."""

    def __init__(self, mm: Mm, va: int) -> None:
        self.mm = mm
        self.va = va

    def read(self, pa: int, size: int) -> bytes:
        return self.mm.read(self.va + pa - GPA, size)

    def write(self, pa: int, data: bytes) -> None:
        self.mm.write(self.va + pa - GPA, data)

    def read64(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 8), "little")

    def write64(self, pa: int, v: int) -> None:
        self.write(pa, v.to_bytes(8, "little"))

    def read32(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 4), "little")

    def write32(self, pa: int, v: int) -> None:
        self.write(pa, v.to_bytes(4, "little"))

    def cas64(self, pa: int, expected: int, new: int) -> int:
        cur = self.read64(pa)
        if cur == expected:
            self.write64(pa, new)
        return cur


class Scene:
    def __init__(self) -> None:
        ep = EndpointConfig("nic", 0x18)
        cfg = replace(SystemConfig(endpoints=(ep,)), iommu=PRESETS["full"])
        self.system = System(cfg)
        self.kernel = Kernel(self.system)
        drv = self.kernel.drivers[0]
        assert isinstance(drv, Smmuv3Driver)
        self.drv = drv
        vmm = self.kernel.new_process("vmm")
        self.ram = vmm.mmap(GUEST_RAM, PROT_READ | PROT_WRITE)
        vmm.write(self.ram, bytes(GUEST_RAM))  # resident: guest RAM is pinned anyway
        self.fd = fd = Iommufd.over_mm(vmm, core=self.kernel.core)
        self.dev_id = fd.bind(self.kernel.device("nic"))
        self.ioas = fd.ioas_alloc()
        fd.ioas_map(self.ioas, self.ram, GUEST_RAM, iova=GPA)
        self.parent = fd.hwpt_alloc(self.dev_id, self.ioas, flags=uapi.IOMMU_HWPT_ALLOC_NEST_PARENT)
        self.viommu = fd.viommu_alloc(self.dev_id, self.parent, uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3)
        self.vdev = fd.vdevice_alloc(self.viommu, self.dev_id, VSID)
        # The guest kernel: its page tables and CD table in its own RAM (GPAs).
        gmem: PhysicalMemory = GuestMemory(vmm, self.ram)  # type: ignore[assignment]
        self.gmem = gmem
        gpages = PageAllocator(gmem, GPA + (1 << 20), 1 << 20)
        self.s1 = ArmLpaePageTable(gmem, gpages, 1, 4, 48)
        self.cd_gpa = gpages.alloc_page()
        cd = CD.encode(
            v=1,
            aa64=1,
            r=1,
            a=1,
            asid=7,
            ips=0b101,
            t0sz=self.s1.t0sz,
            tg0=TG0_4K,
            epd1=1,
            ttb0=self.s1.root_pa >> 4,
        )
        gmem.write(self.cd_gpa, cd.to_bytes(64, "little"))
        self.buf_gpa = GPA + 0x3000
        gmem.write(self.buf_gpa, b"guestbuf")
        self.s1.map(0x1000_0000, self.buf_gpa, 0x1000, IOMMU_READ | IOMMU_WRITE)

    def nested(self, **ste: int) -> int:
        fields = {"v": 1, "config": 0b101, "s1contextptr": self.cd_gpa >> 6, **ste}
        v = STE.encode(fields)
        data = bytes(
            HWPT.encode({"ste[0]": v & ((1 << 64) - 1), "ste[1]": v >> 64 & ((1 << 64) - 1)})
        )
        return self.fd.hwpt_alloc(
            self.dev_id, self.viommu, data_type=uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data=data
        )

    def inv(self, *cmds: int) -> tuple[int, object]:
        entries = [
            bytes(INV.encode({"cmd[0]": c & ((1 << 64) - 1), "cmd[1]": c >> 64})) for c in cmds
        ]
        return self.fd.hwpt_invalidate(
            self.viommu, uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entries
        )


def test_hw_info_reports_the_id_registers() -> None:
    s = Scene()
    info = s.fd.get_hw_info(s.dev_id)
    assert info.data_type == uapi.IOMMU_HW_INFO_TYPE_ARM_SMMUV3
    d = uapi.STRUCTS["iommu_hw_info_arm_smmuv3"].decode(info.data)
    assert d["idr[0]"] == PRESETS["full"].idr0 and d["idr[5]"] == PRESETS["full"].idr5


def test_guest_dma_through_the_nested_translation() -> None:
    """The guest's STE (stage 1: its CD, its tables, all at GPAs) over the host's stage 2:
    a device access at a guest IOVA reaches the guest's buffer."""
    s = Scene()
    s.fd.attach(s.dev_id, s.nested())
    got = s.system.endpoint("nic").dma_read(0x1000_0002, 6)
    assert got.ok and got.data == b"estbuf"


def test_guest_fields_are_checked() -> None:
    s = Scene()
    with pytest.raises(InvalidArgument):
        s.nested(strw=0b10)  # a field only the host sets
    with pytest.raises(InvalidArgument):
        s.nested(config=0b110)  # stage 2 is the host's


def test_guest_invalidation_is_forwarded_with_its_vmid_and_sid() -> None:
    """The guest remaps its IOVA and sends TLBI_NH_VA + CFGI_CD: the old translation goes;
    a command naming a virtual StreamID no vDEVICE has stops the batch with EIO."""
    s = Scene()
    s.fd.attach(s.dev_id, s.nested())
    ep = s.system.endpoint("nic")
    assert ep.dma_read(0x1000_0000, 8).ok
    s.gmem.write(GPA + 0x4000, b"newpage!")
    s.s1.unmap(0x1000_0000, 0x1000, IotlbGather())
    s.s1.map(0x1000_0000, GPA + 0x4000, 0x1000, IOMMU_READ)
    assert ep.dma_read(0x1000_0000, 8).data == b"guestbuf"  # stale until the guest's TLBI
    tlbi = CMD_TLBI_NH_VA.layout.encode(opcode=CMD_TLBI_NH_VA.opcode, asid=7, address=0x1_0000)
    n, err = s.inv(tlbi)
    assert (n, err) == (1, None)
    assert ep.dma_read(0x1000_0000, 8).data == b"newpage!"
    bad = CMD_CFGI_CD.layout.encode(opcode=CMD_CFGI_CD.opcode, streamid=0x99)
    n, err = s.inv(tlbi, bad)
    assert n == 1 and isinstance(err, IoError)


def test_guest_fault_goes_to_the_veventq_with_the_virtual_sid() -> None:
    s = Scene()
    s.fd.attach(s.dev_id, s.nested())
    _, vfd = s.fd.veventq_alloc(s.viommu, uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, 8)
    assert not s.system.endpoint("nic").dma_read(0x2000_0000, 8).ok
    s.system.run_for(1_000_000)  # the event-queue MSI and the driver's handler
    raw = s.fd.file.fds[vfd].read(4096)
    hdr = uapi.STRUCTS["iommufd_vevent_header"].size
    rec = int.from_bytes(raw[hdr : hdr + 32], "little")
    assert EVT_COMMON["type"].get(rec) == F_TRANSLATION
    assert EVT_COMMON["streamid"].get(rec) == VSID


def test_two_viommus_on_one_parent_have_their_own_vmids() -> None:
    """The seed's picture: two guest SMMUs share one stage 2 parent, each with its VMID; a
    guest's TLBI_NH_ALL (given the VMID by the host) leaves the other guest's TLB alone."""
    s = Scene()
    v2 = s.fd.viommu_alloc(s.dev_id, s.parent, uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3)
    assert v2 != s.viommu
    vmids = sorted(d.vmid for d in _viommus(s))
    assert len(set(vmids)) == 2
    s.fd.attach(s.dev_id, s.nested())
    ep = s.system.endpoint("nic")
    assert ep.dma_read(0x1000_0000, 8).data == b"guestbuf"
    s.gmem.write(GPA + 0x4000, b"newpage!")
    s.s1.unmap(0x1000_0000, 0x1000, IotlbGather())
    s.s1.map(0x1000_0000, GPA + 0x4000, 0x1000, IOMMU_READ)
    nh_all = CMD_TLBI_NH_ALL.layout.encode(opcode=CMD_TLBI_NH_ALL.opcode)
    entry = bytes(INV.encode({"cmd[0]": nh_all & ((1 << 64) - 1), "cmd[1]": 0}))
    # The other vIOMMU's guest invalidates: its VMID, not this stream's.
    assert s.fd.hwpt_invalidate(v2, uapi.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, [entry]) == (
        1,
        None,
    )
    assert ep.dma_read(0x1000_0000, 8).data == b"guestbuf"
    assert s.inv(nh_all) == (1, None)
    assert ep.dma_read(0x1000_0000, 8).data == b"newpage!"


def _viommus(s: Scene) -> list[Smmuv3Viommu]:
    return [
        o.ops  # type: ignore[attr-defined]
        for o in s.fd.file.objects
        if isinstance(getattr(o, "ops", None), Smmuv3Viommu)
    ]


guest_ste = st.fixed_dictionaries(
    {
        "config": st.sampled_from((0b000, 0b100, 0b101)),
        "s1fmt": st.integers(0, 3),
        "s1cdmax": st.integers(0, 8),
        "s1dss": st.integers(0, 3),
        "s1contextptr": st.integers(0, (1 << 46) - 1),
        "eats": st.integers(0, 3),
    }
)
guest_writes = st.lists(
    st.tuples(st.integers(0, GUEST_RAM // 8 - 1), st.integers(0, (1 << 64) - 1)), max_size=24
)


@settings(max_examples=60, deadline=None)
@given(
    guest_ste,
    guest_writes,
    st.lists(
        st.one_of(st.integers(0, (1 << 48) - 1), st.integers(0x1000_0000, 0x1000_1FFF)),
        min_size=1,
        max_size=16,
    ),
)
def test_a_guest_never_reaches_memory_outside_its_ioas(
    ste: dict[str, int], writes: list[tuple[int, int]], addrs: list[int]
) -> None:
    """issue 15, guest isolation: whatever the guest writes into its STE, its CDs and its
    page tables (any doublewords anywhere in its RAM), every translation of its device ends
    in the host pages that back the guest's RAM -- or fails."""
    s = Scene()
    if ste["s1contextptr"] % 2:  # half the time the guest's own CD table, else anywhere
        ste["s1contextptr"] = s.cd_gpa >> 6
    try:
        s.fd.attach(s.dev_id, s.nested(**ste))
    except ApiError:
        return  # the host refused the STE: nothing to translate with
    for index, value in writes:
        s.gmem.write64(GPA + index * 8, value)
    vmm = s.kernel.processes[0]
    backing = {vmm.table().iova_to_phys(s.ram + off) for off in range(0, GUEST_RAM, 4096)}
    t = s.system.iommus[0].model.translator  # type: ignore[attr-defined]
    for addr in addrs:
        for write in (False, True):
            r = t.translate(Smmuv3Request(0x18, addr, is_write=write))
            if r.ok:
                event("a guest translation succeeded")
                assert r.pa >> 12 << 12 in backing, (hex(addr), hex(r.pa))
