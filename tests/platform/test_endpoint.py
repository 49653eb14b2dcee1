"""Endpoints: DMA through the IOMMU, split at 4 KiB, aborted at the first fault
(platform/endpoint.py).

Each 4 KiB piece of a DMA is an untranslated request (riscv-iommu: "Process to translate an
IOVA"); a fault ends the DMA there like a completer abort (riscv-iommu "Aborting
transactions"): the pieces before it reached memory, none after it did. ``DmaResult.status``
is the PCIe completion status and ``DmaResult.fault`` the IOMMU's fault record, whose cause is
the spec's.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.bits.pcie import CPL_UR
from iommusim.bits.riscv.queues import FaultRecord
from iommusim.bits.riscv.regs import MODE_1LVL, MODE_BARE, OFF_DDTP
from iommusim.errors import InvalidArgument
from iommusim.hw.riscv.params import PRESETS
from iommusim.platform.endpoint import DmaResult, Endpoint
from iommusim.platform.system import EndpointConfig, RamRegion, System, SystemConfig
from iommusim.sw.kernel import Kernel
from iommusim.sw.prot import IOMMU_READ, IOMMU_WRITE

PAGE = 4096
RAM = 0x8000_0000
RAM_SIZE = 16 << 20
# riscv-iommu: "Fault/Event-Queue (FQ)", cause codes.
ALL_INBOUND_DISALLOWED = 256
DDT_ENTRY_INVALID = 258
TTYP_DISALLOWED = 260
READ_PAGE_FAULT = 13
WRITE_PAGE_FAULT = 15


def machine(**cfg: object) -> System:
    base: dict[str, object] = dict(
        ram=(RamRegion(RAM, RAM_SIZE),),
        endpoints=(EndpointConfig("dev", 0x08, pasid_bits=8), EndpointConfig("other", 0x10)),
    )
    base.update(cfg)
    return System(SystemConfig(**base))  # type: ignore[arg-type]


def bare(system: System) -> None:
    """Put the IOMMU in Bare mode: untranslated requests pass with IOVA == PA."""
    system.bus.write64(system.config.iommu_base_pa + OFF_DDTP, MODE_BARE)


def spy(system: System) -> list[tuple[int, int, bool, int, bool]]:
    """Record every translate_pa call the endpoints make (and still translate)."""
    calls: list[tuple[int, int, bool, int, bool]] = []
    real: Callable[..., int] = system.iommu.translate_pa

    def translate_pa(
        rid: int, iova: int, is_write: bool = False, pid: int = -1, priv: bool = False
    ) -> int:
        calls.append((rid, iova, is_write, pid, priv))
        return real(rid, iova, is_write, pid, priv)

    system.iommu.translate_pa = translate_pa  # type: ignore[method-assign]
    return calls


# ------------------------------------------------------------------ splitting
def test_dma_is_split_at_4k_boundaries() -> None:
    system = machine()
    bare(system)
    calls = spy(system)
    ep = system.endpoint("dev")
    payload = bytes(range(256)) * 32  # 8 KiB
    res = ep.dma_write(RAM + 0x800, payload)
    assert res == DmaResult(len(payload))
    assert [(c[1], c[2]) for c in calls] == [
        (RAM + 0x800, True),
        (RAM + 0x1000, True),
        (RAM + 0x2000, True),
    ]
    assert all(c[0] == 0x08 and c[3] == -1 and not c[4] for c in calls)
    assert system.ram.read(RAM + 0x800, len(payload)) == payload
    calls.clear()
    res = ep.dma_read(RAM + 0x800, len(payload))
    assert res.ok and res.done == len(payload) and res.data == payload
    assert [c[2] for c in calls] == [False, False, False]
    assert (ep.stats.dmas, ep.stats.pages, ep.stats.bytes, ep.stats.faults) == (
        2,
        6,
        2 * len(payload),
        0,
    )
    assert system.ledger.counts["dma_data"] == 6


@settings(max_examples=40, deadline=None)
@given(offset=st.integers(0, 3 * PAGE), size=st.integers(1, 3 * PAGE + 1))
def test_pieces_cover_the_buffer_one_page_each(offset: int, size: int) -> None:
    system = machine()
    bare(system)
    calls = spy(system)
    iova = RAM + offset
    data = bytes((k * 7 + 3) & 0xFF for k in range(size))
    assert system.endpoint("dev").dma_write(iova, data).done == size
    starts = [c[1] for c in calls]
    assert starts[0] == iova
    assert all(s % PAGE == 0 for s in starts[1:])
    assert len(starts) == (iova + size - 1) // PAGE - iova // PAGE + 1
    assert system.ram.read(iova, size) == data


def test_empty_or_negative_dma_is_einval_and_counts_nothing() -> None:
    system = machine()
    ep = system.endpoint("dev")
    with pytest.raises(InvalidArgument, match="DMA size must be positive, not 0") as e:
        ep.dma_write(RAM, b"")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(InvalidArgument):
        ep.dma_read(RAM, -5)
    assert ep.stats.dmas == 0


def test_pasid_must_fit_the_endpoint() -> None:
    system = machine()
    bare(system)
    with pytest.raises(InvalidArgument, match=r"PASID must be below 2\*\*8, not 256"):
        system.endpoint("dev").dma_read(RAM, 4, pasid=256)
    with pytest.raises(InvalidArgument, match=r"below 2\*\*0"):
        system.endpoint("other").dma_read(RAM, 4, pasid=0)
    assert system.endpoint("dev").stats.dmas == 0


# ------------------------------------------------------------------ faults and their causes
def test_ddtp_off_disallows_everything() -> None:
    # riscv-iommu "Process to translate an IOVA" step 1: iommu_mode Off -> cause 256.
    system = machine()
    ep = system.endpoint("dev")
    res = ep.dma_write(RAM + 0x10, b"x" * 32)
    # TTYP 3 (untranslated write), device 0x08, no PASID, iotval = the IOVA.
    fault = FaultRecord(ALL_INBOUND_DISALLOWED, 3, 0x08, False, 0, False, RAM + 0x10)
    assert res == DmaResult(0, CPL_UR, fault, None, RAM + 0x10, b"")
    assert not res.ok
    assert system.ram.read(RAM + 0x10, 32) == bytes(32)
    assert ep.stats.faults == 1


def test_bus_error_after_translation_ends_the_dma() -> None:
    # Bare mode passes the address through; the bus answers the hole past RAM with an access
    # fault, which no IOMMU cause describes.
    system = machine()
    bare(system)
    ep = system.endpoint("dev")
    end = RAM + RAM_SIZE
    res = ep.dma_write(end - 0x100, b"\xaa" * 0x300)
    assert (res.status, res.fault, res.abort) == (CPL_UR, None, None)
    assert res.done == 0x100
    assert res.fault_iova == end
    assert system.ram.read(end - 0x100, 0x100) == b"\xaa" * 0x100
    res = ep.dma_read(end - 0x100, 0x300)
    assert (res.done, res.status, res.fault, res.data) == (0x100, CPL_UR, None, b"\xaa" * 0x100)


def test_invalid_device_context_faults_with_258() -> None:
    # riscv-iommu "Process to locate the Device-context": a DDT entry with V = 0 -> cause 258,
    # whether it is an intermediate entry (a device the driver never probed) or the leaf DC
    # (a blocked device).
    system = machine()
    kernel = Kernel(system, dma_mode="passthrough")
    rogue = system.endpoint("dev")
    assert rogue.dma_read(RAM, 8).ok
    kernel.core.attach_device(kernel.iommu.blocked_domain, kernel.device("dev"))
    assert rogue.dma_read(RAM, 8).fault.cause == DDT_ENTRY_INVALID
    stranger = Endpoint(system, "stranger", 0xAB_CDEF)
    fault = FaultRecord(DDT_ENTRY_INVALID, 2, 0xAB_CDEF, False, 0, False, RAM)
    assert stranger.dma_read(RAM, 8) == DmaResult(0, CPL_UR, fault, None, RAM, b"")


def test_device_id_wider_than_the_directory_faults_with_260() -> None:
    # riscv-iommu "Process to translate an IOVA": in 1LVL mode a device_id with DDI[1] or
    # DDI[2] non-zero is "Transaction type disallowed" (260). Extended format: DDI[0] is 6 bits.
    system = machine(iommu=PRESETS["full"].with_(max_mode=MODE_1LVL))
    Kernel(system, dma_mode="passthrough")
    assert system.endpoint("dev").dma_read(RAM, 8).ok
    assert Endpoint(system, "wide", 0x40).dma_read(RAM, 8).fault.cause == TTYP_DISALLOWED


def test_pasid_without_process_directory_faults_with_260() -> None:
    # riscv-iommu "Process to translate an IOVA": a valid process_id with DC.tc.PDTV = 0 is
    # "Transaction type disallowed".
    system = machine()
    Kernel(system, dma_mode="passthrough")
    ep = system.endpoint("dev")
    assert ep.dma_read(RAM, 8).ok
    assert ep.dma_read(RAM, 8, pasid=3).fault.cause == TTYP_DISALLOWED


@pytest.mark.parametrize(("write", "cause"), [(True, WRITE_PAGE_FAULT), (False, READ_PAGE_FAULT)])
def test_fault_mid_buffer_keeps_the_pages_before_it(write: bool, cause: int) -> None:
    # Two mapped pages, then a hole: the DMA moves the first 0x1800 bytes and stops at the
    # hole with a page fault (riscv-iommu "Faults from virtual address translation process":
    # 13 for a read, 15 for a write).
    system = machine()
    kernel = Kernel(system)
    core = kernel.core
    dev = kernel.device("dev")
    domain = core.domain_alloc_paging(dev)
    core.attach_device(domain, dev)
    pa = kernel.pages.alloc_pages(2)
    core.map(domain, 0x10000, pa, 2 * PAGE, IOMMU_READ | IOMMU_WRITE)
    system.ram.write(pa, bytes(range(256)) * 32)
    after = pa + 2 * PAGE
    system.ram.write(after, b"\x55" * PAGE)  # what lies beyond in physical memory
    ep = system.endpoint("dev")
    if write:
        res = ep.dma_write(0x10800, b"\xee" * 0x2000)
        assert system.ram.read(pa + 0x800, 0x1800) == b"\xee" * 0x1800
        assert system.ram.read(pa, 0x800) == (bytes(range(256)) * 8)
        assert system.ram.read(after, PAGE) == b"\x55" * PAGE
        assert res.data == b""
    else:
        res = ep.dma_read(0x10800, 0x2000)
        assert res.data == system.ram.read(pa + 0x800, 0x1800)
    assert (res.done, res.fault.cause, res.fault_iova) == (0x1800, cause, 0x12000)
    assert (ep.stats.pages, ep.stats.bytes, ep.stats.faults) == (2, 0x1800, 1)
