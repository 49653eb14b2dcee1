"""The mock driver registered with an IOMMU core, user memory and a fake iommufd vIOMMU core.

``env`` is an :class:`Env` (``make_env`` is the class, for other DMA modes): ``env.core`` (an
:class:`IommuCore`) with ``env.drv`` (a :class:`MockIommuDriver` over a small page allocator)
registered; ``env.dev(flags)`` creates and probes a mock device; ``env.user`` is user memory
at :data:`UVA` that any struct can be written into (``env.put``); ``env.vcore`` is a fake
:class:`ViommuCore`; ``env.snapshot(*domains)`` captures everything a driver call may change,
so a failed call can be checked to have changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import pytest

from iommusim.errors import ApiError, BadAddress
from iommusim.mem.sparse import SparseMemory
from iommusim.sim.clock import VirtualClock
from iommusim.sw.core.device import Device
from iommusim.sw.core.domain import Domain
from iommusim.sw.core.iommu import DmaMode, IommuCore
from iommusim.sw.core.userdata import UserData, UserDataArray
from iommusim.sw.core.viommu import HwQueueOps
from iommusim.sw.drivers.mock import MockIommuDriver, MockNestedDomain, MockPagingDomain
from iommusim.sw.drivers.mock.device import MOCK_DEV_KEY, MockDev
from iommusim.sw.pages import PageAllocator

RAM: Final = 0x8000_0000
RAM_SIZE: Final = 64 << 12
#: Where the fake user memory starts, and how big it is.
UVA: Final = 0x10_0000
USIZE: Final = 0x4000


class FakeUser:
    """User memory ``[UVA, UVA + USIZE)``; any other byte is EFAULT, with nothing changed."""

    def __init__(self) -> None:
        self.buf = bytearray(USIZE)
        #: Writes to ``[va, va + n)`` fault (a read-only mapping), when set.
        self.readonly: tuple[int, int] | None = None

    def _check(self, va: int, n: int) -> int:
        if va < UVA or va + n > UVA + USIZE:
            raise BadAddress(f"user range {va:#x}+{n:#x} is not mapped")
        return va - UVA

    def read(self, va: int, n: int) -> bytes:
        off = self._check(va, n)
        return bytes(self.buf[off : off + n])

    def write(self, va: int, data: bytes) -> None:
        off = self._check(va, len(data))
        if self.readonly is not None:
            ro, n = self.readonly
            if va < ro + n and ro < va + len(data):
                raise BadAddress(f"user range {va:#x}+{len(data):#x} is read-only")
        self.buf[off : off + len(data)] = data


@dataclass
class FakeViommuCore:
    """What iommufd gives a vIOMMU: mmap offsets from 0x1000, vDEVICEs by virtual id,
    recorded events and queue dependencies; ``fail_mmap`` / ``fail_depend`` make those
    calls fail."""

    vdevs: dict[int, Device] = field(default_factory=dict)
    mmaps: dict[int, tuple[int, int]] = field(default_factory=dict)
    events: list[tuple[int, bytes]] = field(default_factory=list)
    depends: list[tuple[HwQueueOps, HwQueueOps]] = field(default_factory=list)
    fail_mmap: ApiError | None = None
    fail_depend: ApiError | None = None
    next_offset: int = 0x1000

    def alloc_mmap(self, base_pa: int, length: int) -> int:
        if self.fail_mmap is not None:
            raise self.fail_mmap
        off = self.next_offset
        self.next_offset += length
        self.mmaps[off] = (base_pa, length)
        return off

    def destroy_mmap(self, offset: int) -> None:
        del self.mmaps[offset]

    def find_dev(self, vdev_id: int) -> Device | None:
        return self.vdevs.get(vdev_id)

    def get_vdev_id(self, dev: Device) -> int | None:
        return next((v for v, d in self.vdevs.items() if d is dev), None)

    def report_event(self, event_type: int, data: bytes) -> None:
        self.events.append((event_type, data))

    def hw_queue_depend(self, dependent: HwQueueOps, depended: HwQueueOps) -> None:
        if self.fail_depend is not None:
            raise self.fail_depend
        self.depends.append((dependent, depended))

    def hw_queue_undepend(self, dependent: HwQueueOps, depended: HwQueueOps) -> None:
        self.depends.remove((dependent, depended))


def _mdev_state(m: MockDev) -> tuple[object, ...]:
    return (
        m.flags,
        tuple(m.cache),
        m.domain,
        m.viommu,
        m.vdev_id,
        m.iopf_refcount,
        m.pasid_1024_fake_error,
    )


def _domain_state(d: Domain) -> tuple[object, ...]:
    base: tuple[object, ...] = (d.users, d.freed, d.type)
    if isinstance(d, MockPagingDomain):
        leaves = tuple((b, lf.pa, lf.size, lf.prot, lf.dirty) for b, lf in d.pt.leaves())
        return (*base, leaves, d.dirty_tracking)
    if isinstance(d, MockNestedDomain):
        return (*base, tuple(d.iotlb))
    return base


class Env:
    UVA = UVA

    def __init__(self, mode: DmaMode = "strict") -> None:
        self.mem = SparseMemory()
        self.pages = PageAllocator(self.mem, RAM, RAM_SIZE)
        self.core = IommuCore(VirtualClock(), dma_mode=mode)
        self.drv = MockIommuDriver(self.pages)
        self.core.register(self.drv)
        self.user = FakeUser()
        self.vcore = FakeViommuCore()

    def dev(self, flags: int = 0) -> Device:
        dev = self.drv.create_device(flags)
        self.core.probe_device(dev)
        return dev

    def mdev(self, dev: Device) -> MockDev:
        state = dev.priv[MOCK_DEV_KEY]
        assert isinstance(state, MockDev)
        return state

    def put(self, data: bytes | bytearray, at: int = UVA) -> int:
        self.user.write(at, bytes(data))
        return at

    def user_data(self, data_type: int, data: bytes | bytearray, at: int = UVA) -> UserData:
        return UserData(data_type, self.put(data, at), len(data), self.user)

    def array(
        self, data_type: int, entries: list[bytes], entry_len: int | None = None, at: int = UVA
    ) -> UserDataArray:
        ln = entry_len if entry_len is not None else (len(entries[0]) if entries else 8)
        raw = b"".join(e.ljust(ln, b"\0")[:ln] for e in entries)
        self.put(raw, at)
        return UserDataArray(data_type, at, ln, len(entries), self.user)

    def snapshot(self, *domains: Domain) -> tuple[object, ...]:
        devs = tuple(
            (name, _mdev_state(self.mdev(d)), d.group.domain if d.group else None)
            for name, d in sorted(self.core.devices.items())
        )
        return (
            devs,
            tuple(_domain_state(d) for d in domains),
            self.drv.viommus,
            len(self.drv.page_responses),
            self.pages.nr_free,
            dict(self.vcore.mmaps),
            list(self.vcore.depends),
            list(self.vcore.events),
            bytes(self.user.buf),
        )


@pytest.fixture
def env() -> Env:
    return Env()


@pytest.fixture
def make_env() -> type[Env]:
    return Env
