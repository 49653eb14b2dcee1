"""A machine for the SVA tests: one IOMMU and accelerators with different capabilities.

``acc`` and ``acc2``: ATS, PRI, 20-bit PASIDs; ``nopasid``: ATS and PRI, no PASID capability;
``nopri``: ATS and PASIDs, no PRI; ``small``: ATS, PRI, 2-bit PASIDs (PASIDs 1..3); ``plain``:
no ATS at all (untranslated DMA). Everything is in its own group with a strict DMA domain.
"""

from __future__ import annotations

from typing import Final

import pytest

from iommusim.platform.endpoint import Endpoint
from iommusim.platform.system import EndpointConfig, RamRegion, System, SystemConfig
from iommusim.sw.core.device import Device
from iommusim.sw.kernel import Kernel

RAM: Final = 0x8000_0000


class SvaMachine:
    def __init__(self) -> None:
        eps = (
            EndpointConfig("acc", 0x10, pasid_bits=20, ats=True, pri=True),
            EndpointConfig("acc2", 0x11, pasid_bits=20, ats=True, pri=True),
            EndpointConfig("nopasid", 0x12, ats=True, pri=True),
            EndpointConfig("nopri", 0x13, pasid_bits=20, ats=True),
            EndpointConfig("small", 0x14, pasid_bits=2, ats=True, pri=True),
            EndpointConfig("plain", 0x15),
        )
        self.system = System(SystemConfig(ram=(RamRegion(RAM, 32 << 20),), endpoints=eps))
        self.kernel = Kernel(self.system)
        self.core = self.kernel.core
        self.sva = self.kernel.sva
        self.driver = self.kernel.iommu

    def dev(self, name: str) -> Device:
        return self.kernel.device(name)

    def ep(self, name: str) -> Endpoint:
        return self.system.endpoint(name)

    def dc(self, name: str) -> bytes:
        """The raw device context of ``name`` (32 bytes, base format)."""
        ddt = self.driver.ddt
        assert ddt is not None
        pa = ddt.dc_pa(self.dev(name).rid, alloc=False)
        assert pa is not None
        return self.system.bus.read(pa, ddt.dc_bytes)


@pytest.fixture
def m() -> SvaMachine:
    return SvaMachine()
