"""A booted RISC-V machine for software tests, and readers for what the driver wrote.

``Machine(params=..., mode="strict", **kernel_kw)`` boots :class:`System` + :class:`Kernel`
(RAM, the IOMMU, an NIC-like endpoint at rid 0x08 and an NVMe-like one at 0x10). The helpers
read the driver's effects the way a hardware engineer would: commands from the command-queue
memory, device contexts from the DDT in RAM.
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.riscv.pgtable import PTE
from iommusim.bits.riscv.queues import CMD_ATS, CMD_IODIR, CMD_IOFENCE, CMD_IOTINVAL
from iommusim.hw.riscv.params import PRESETS, RiscvIommuParams
from iommusim.platform.endpoint import Endpoint
from iommusim.platform.system import EndpointConfig, RamRegion, System, SystemConfig
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import Domain
from iommusim.sw.core.iommu import IommuCore
from iommusim.sw.drivers.riscv.domain import RiscvPagingDomain
from iommusim.sw.drivers.riscv.driver import RiscvIommuDriver
from iommusim.sw.kernel import Kernel

RAM: Final = 0x8000_0000
RAM_SIZE: Final = 64 << 20
PAGE: Final = 4096
_LAYOUTS: Final = {
    1: ("iotinval", CMD_IOTINVAL),
    2: ("iofence", CMD_IOFENCE),
    3: ("iodir", CMD_IODIR),
    4: ("ats", CMD_ATS),
}


class Machine:
    """System + Kernel with readers for command-queue and DDT memory."""

    RAM = RAM
    PAGE = PAGE

    def __init__(
        self,
        params: RiscvIommuParams | None = None,
        mode: str = "strict",
        endpoints: tuple[EndpointConfig, ...] = (
            EndpointConfig("nic", 0x08),
            EndpointConfig("nvme", 0x10),
        ),
        **kernel_kw: object,
    ) -> None:
        self.system = System(
            SystemConfig(
                ram=(RamRegion(RAM, RAM_SIZE),),
                iommu=params if params is not None else PRESETS["full"],
                endpoints=endpoints,
            )
        )
        self.kernel = Kernel(self.system, dma_mode=mode, **kernel_kw)  # type: ignore[arg-type]
        self.core: IommuCore = self.kernel.core
        self.driver: RiscvIommuDriver = self.kernel.iommu
        self.bus = self.system.bus

    # ------------------------------------------------------------------ access
    def ep(self, name: str) -> Endpoint:
        return self.system.endpoint(name)

    def dev(self, name: str) -> Device:
        return self.kernel.device(name)

    def reg64(self, off: int) -> int:
        return self.bus.read64(self.system.config.iommu_base_pa + off)

    def reg32(self, off: int) -> int:
        return self.bus.read32(self.system.config.iommu_base_pa + off)

    def paging(self, name: str) -> RiscvPagingDomain:
        """A fresh UNMANAGED domain attached to ``name`` (iommu_attach_device)."""
        dev = self.dev(name)
        domain = self.core.domain_alloc_paging(dev)
        self.core.attach_device(domain, dev)
        assert isinstance(domain, RiscvPagingDomain)
        return domain

    def domain_of(self, name: str) -> Domain:
        group = self.dev(name).group
        assert group is not None and group.domain is not None
        return group.domain

    # ------------------------------------------------------------------ readers
    @property
    def sent(self) -> int:
        """Commands written to the command queue so far."""
        assert self.driver.cmdq is not None
        return self.driver.cmdq.sent

    def commands_since(self, start: int) -> list[dict[str, int | str]]:
        """Decode the commands sent after the first ``start`` ones, from queue memory."""
        q = self.driver.cmdq
        assert q is not None
        assert q.sent - start <= q.entries, "the queue wrapped over what we want to read"
        out: list[dict[str, int | str]] = []
        for n in range(start, q.sent):
            pa = q.base_pa + (n & q.mask) * 16
            w = self.bus.read64(pa) | self.bus.read64(pa + 8) << 64
            name, layout = _LAYOUTS[w & 0x7F]
            d: dict[str, int | str] = dict(layout.decode(w))
            d["op"] = name
            out.append(d)
        return out

    def dc(self, rid: int) -> tuple[int, int, int]:
        """(tc, ta, fsc) of ``rid``'s device context as it is in memory."""
        ddt = self.driver.ddt
        assert ddt is not None
        pa = ddt.dc_pa(rid, alloc=False)
        assert pa is not None
        return self.bus.read64(pa), self.bus.read64(pa + 16), self.bus.read64(pa + 24)

    def leaf_pte_pa(self, domain: RiscvPagingDomain, iova: int) -> int:
        """Physical address of the leaf PTE mapping ``iova`` (a software walk)."""
        fmt = domain.pgtable.fmt
        table = domain.pgtable.root_pa
        for level in range(fmt.levels - 1, -1, -1):
            pte_pa = table + ((iova >> (12 + 9 * level)) & 511) * 8
            pte = self.bus.read64(pte_pa)
            assert PTE["v"].get(pte), f"no mapping at {iova:#x}"
            if pte & PTE.mask("r", "w", "x"):
                return pte_pa
            table = PTE["ppn"].get(pte) << 12
        raise AssertionError("walk ran past level 0")
