"""Test doubles for iommufd's io_pagetable: a paging domain backed by a dict, with error
injection and dirty bits, and an access whose unmap callback can be told to misbehave."""

from __future__ import annotations

from collections.abc import Callable

from iommusim.addr import Iova, PhysAddr
from iommusim.errors import Exists, InvalidArgument, OutOfMemory
from iommusim.hw.riscv.params import PRESETS
from iommusim.platform.system import EndpointConfig, RamRegion, System, SystemConfig
from iommusim.sw.core.domain import DOMAIN_UNMANAGED, Domain
from iommusim.sw.kernel import Kernel
from iommusim.sw.pgtable.gather import IotlbGather

ULONG_MAX = (1 << 64) - 1


class FakeDomain(Domain):
    """A paging domain whose table is ``pt`` (page IOVA -> (PA, prot)) in pages of the
    smallest size of ``pgsize_bitmap``. ``fail_map_at=n``: the n-th map call (1-based,
    counted over the domain's life) raises ENOMEM having changed nothing. With ``dirty``,
    ``dirty_pages`` holds the dirty page IOVAs and ``tracking`` the tracking switch;
    ``fail_dirty`` makes ``read_and_clear_dirty`` and ``set_dirty_tracking`` raise."""

    def __init__(
        self,
        pgsize_bitmap: int = 0x1000 | (2 << 20),
        aperture: tuple[int, int] = (0, ULONG_MAX),
        *,
        fail_map_at: int | None = None,
        dirty: bool = False,
    ) -> None:
        super().__init__(DOMAIN_UNMANAGED, None, pgsize_bitmap, aperture)
        self.page = pgsize_bitmap & -pgsize_bitmap
        self.pt: dict[int, tuple[int, int]] = {}
        self.map_calls: list[tuple[int, int, int]] = []
        self.unmap_calls: list[tuple[int, int]] = []
        self.syncs = 0
        self.fail_map_at = fail_map_at
        self.dirty_ops = dirty
        self.dirty_pages: set[int] = set()
        self.tracking = False
        self.fail_dirty = False
        self.calls = 0

    def map(self, iova: Iova, pa: PhysAddr, size: int, prot: int) -> None:
        self.calls += 1
        if (iova | pa | size) & (self.page - 1) or not size:
            raise InvalidArgument(f"unaligned map {iova:#x} {pa:#x} {size:#x}")
        pages = range(iova, iova + size, self.page)
        if any(p in self.pt for p in pages):
            raise Exists(f"{iova:#x} is mapped")
        if self.calls == self.fail_map_at:
            raise OutOfMemory("injected")
        for k, p in enumerate(pages):
            self.pt[p] = (pa + k * self.page, prot)
        self.map_calls.append((iova, pa, size))

    def unmap(self, iova: Iova, size: int, gather: IotlbGather) -> int:
        n = 0
        for p in range(iova, iova + size, self.page):
            if self.pt.pop(p, None) is not None:
                n += self.page
        gather.add_range(iova, size)
        self.unmap_calls.append((iova, size))
        return n

    def iotlb_sync(self, gather: IotlbGather) -> None:
        self.syncs += 1

    def release_table_pages(self, freelist: list[int]) -> None:
        assert not freelist

    def iova_to_phys(self, iova: Iova) -> PhysAddr | None:
        got = self.pt.get(iova & ~(self.page - 1))
        return None if got is None else PhysAddr(got[0] + (iova & (self.page - 1)))

    def table(self) -> dict[int, int]:
        """IOVA -> PA of every mapped page."""
        return {i: v[0] for i, v in sorted(self.pt.items())}

    # ------------------------------------------------------------------ dirty
    def set_dirty_tracking(self, enabled: bool) -> None:
        if self.fail_dirty:
            raise OutOfMemory("injected")
        self.tracking = enabled

    def read_and_clear_dirty(
        self, iova: int, size: int, no_clear: bool, record: Callable[[int, int], None]
    ) -> None:
        if self.fail_dirty:
            raise OutOfMemory("injected")
        for p in sorted(self.dirty_pages):
            if iova <= p < iova + size:
                record(p, self.page)
                if not no_clear:
                    self.dirty_pages.discard(p)


def riscv_kernel() -> Kernel:
    """A booted RISC-V machine (64 MiB of RAM, the "full" IOMMU preset, an NIC at rid 8)."""
    system = System(
        SystemConfig(
            ram=(RamRegion(0x8000_0000, 64 << 20),),
            iommu=PRESETS["full"],
            endpoints=(EndpointConfig("nic", 0x08),),
        )
    )
    return Kernel(system)
