"""Endpoint and system calls with bad arguments fail with EINVAL before anything is sent:
memory, IOMMU registers and caches, endpoint state and the clock are as before (issue 10,
item 4; tests/testsupport/swfuzz.py takes the snapshot)."""

from __future__ import annotations

import errno

import pytest

from iommusim.errors import InvalidArgument
from iommusim.platform.endpoint import DEFAULT_MAX_DMA_BYTES, MAX_DMA_BYTES_LIMIT
from iommusim.platform.system import EndpointConfig, System, SystemConfig
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL
from testsupport.swfuzz import MAX_DMA, RAM, Rig, fails_cleanly

PAGE = 4096
TOP = 1 << 64


@pytest.fixture
def rig() -> Rig:
    r = Rig("passthrough")  # identity: every address below 2^64 would be carried out
    return r


def test_dma_whose_range_wraps_past_2_64_is_refused_before_any_piece(rig: Rig) -> None:
    # Regression: the pieces below 2^64 ran (memory written, IOMMU and endpoint state
    # changed) before the piece past the top was refused.
    ep = rig.system.endpoint("nic")
    for addr, size in ((TOP - PAGE, 2 * PAGE), (TOP - 8, 16), (-PAGE, 2 * PAGE), (TOP, 4)):
        fails_cleanly(rig, InvalidArgument, errno.EINVAL, lambda a=addr, n=size: ep.dma_read(a, n))
        fails_cleanly(
            rig,
            InvalidArgument,
            errno.EINVAL,
            lambda a=addr, n=size: ep.dma_write(a, b"\xaa" * n),
        )
    assert not ep.dma_read(TOP - PAGE, PAGE).ok  # the last page itself is a request


def test_a_dma_larger_than_max_dma_bytes_is_refused_up_front(rig: Rig) -> None:
    # Regression: dma_read of 2^40 bytes ran without end (2^28 pieces).
    ep = rig.system.endpoint("nic")
    assert ep.max_dma_bytes == MAX_DMA
    fails_cleanly(rig, InvalidArgument, errno.EINVAL, lambda: ep.dma_read(RAM, 1 << 40))
    fails_cleanly(rig, InvalidArgument, errno.EINVAL, lambda: ep.dma_read(RAM, MAX_DMA + 1))
    fails_cleanly(rig, InvalidArgument, errno.EINVAL, lambda: ep.dma_write(RAM, bytes(MAX_DMA + 1)))
    assert ep.dma_read(RAM, MAX_DMA).done == MAX_DMA


def test_max_dma_bytes_is_a_validated_endpoint_parameter() -> None:
    assert EndpointConfig("x", 1).max_dma_bytes == DEFAULT_MAX_DMA_BYTES == 16 << 20
    for bad in (0, PAGE - 1, MAX_DMA_BYTES_LIMIT + 1):
        with pytest.raises(InvalidArgument, match="max_dma_bytes must be in"):
            SystemConfig(endpoints=(EndpointConfig("x", 1, max_dma_bytes=bad),))
    system = System(SystemConfig(endpoints=(EndpointConfig("x", 1, max_dma_bytes=PAGE),)))
    assert system.endpoint("x").max_dma_bytes == PAGE


def test_msi_data_wider_than_32_bits_is_einval_and_sends_nothing(rig: Rig) -> None:
    # Regression: OverflowError from int.to_bytes. PCIe "MSI Capability": 32-bit Message
    # Data, DWORD-aligned Message Address.
    ep = rig.system.endpoint("nic")
    imsic = rig.system.config.imsic_base_pa
    for addr, data in ((imsic, 1 << 32), (imsic, -1), (imsic + 2, 1)):
        fails_cleanly(rig, InvalidArgument, errno.EINVAL, lambda a=addr, d=data: ep.msi(a, d))
    assert ep.msi(imsic, 0xFFFF_FFFF).ok


def test_run_for_a_negative_time_is_einval(rig: Rig) -> None:
    # Regression: ModelError from the clock.
    rig.kernel.core.dma_map(rig.kernel.device("nic"), RAM, PAGE, DMA_BIDIRECTIONAL)
    rig.system.ledger.charge("cpu", 100)  # unsettled cost: still unsettled afterwards
    for ns in (-1, -(1 << 70)):
        fails_cleanly(rig, InvalidArgument, errno.EINVAL, lambda n=ns: rig.system.run_for(n))
    rig.system.run_for(0)
