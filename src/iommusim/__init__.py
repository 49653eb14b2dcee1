"""iommusim: an executable, spec-accurate model of IOMMU hardware and of the software that
drives it.

The names below are the public API (``from iommusim import Kernel, System``); everything else is
reachable through its module and may change. ``tests/test_public_api.py`` pins this list.
"""

from __future__ import annotations

from iommusim.addr import Gpa, Iova, PhysAddr
from iommusim.errors import (
    ApiError,
    BusError,
    Busy,
    Exists,
    FormatError,
    InvalidArgument,
    IommusimError,
    ModelError,
    NoDevice,
    NotFound,
    NotSupported,
    OutOfMemory,
)
from iommusim.hw.riscv.iommu import RiscvIommu
from iommusim.hw.riscv.params import PRESETS as RISCV_PRESETS
from iommusim.hw.riscv.params import CacheParams, RiscvIommuParams
from iommusim.hw.riscv.transaction import Request, Response
from iommusim.hw.smmuv3.params import PRESETS as SMMUV3_PRESETS
from iommusim.hw.smmuv3.params import Smmuv3Params
from iommusim.hw.smmuv3.smmu import Smmuv3
from iommusim.hw.smmuv3.transaction import Request as Smmuv3Request
from iommusim.hw.smmuv3.transaction import Response as Smmuv3Response
from iommusim.mem import AddressMap, FlatMemory, PhysicalMemory, SparseMemory
from iommusim.platform.endpoint import DmaResult, Endpoint
from iommusim.platform.system import EndpointConfig, IommuConfig, RamRegion, System, SystemConfig
from iommusim.scenario import Scenario, load_scenario, parse_scenario
from iommusim.sw.core.device import Device, Fault
from iommusim.sw.core.dma import DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE
from iommusim.sw.core.domain import Domain
from iommusim.sw.core.iommu import DmaMode, IommuCore
from iommusim.sw.iommufd import IommufdFile
from iommusim.sw.kernel import Kernel
from iommusim.sw.mm.mm import PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, Mm
from iommusim.sw.prot import IOMMU_NOEXEC, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE

__version__ = "0.1.0"

__all__ = [
    "DMA_BIDIRECTIONAL",
    "DMA_FROM_DEVICE",
    "DMA_TO_DEVICE",
    "IOMMU_NOEXEC",
    "IOMMU_PRIV",
    "IOMMU_READ",
    "IOMMU_WRITE",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "RISCV_PRESETS",
    "SMMUV3_PRESETS",
    "AddressMap",
    "ApiError",
    "BusError",
    "Busy",
    "CacheParams",
    "Device",
    "DmaMode",
    "DmaResult",
    "Domain",
    "Endpoint",
    "EndpointConfig",
    "Exists",
    "Fault",
    "FlatMemory",
    "FormatError",
    "Gpa",
    "InvalidArgument",
    "IommuConfig",
    "IommuCore",
    "IommufdFile",
    "IommusimError",
    "Iova",
    "Kernel",
    "Mm",
    "ModelError",
    "NoDevice",
    "NotFound",
    "NotSupported",
    "OutOfMemory",
    "PhysAddr",
    "PhysicalMemory",
    "RamRegion",
    "Request",
    "Response",
    "RiscvIommu",
    "RiscvIommuParams",
    "Scenario",
    "Smmuv3",
    "Smmuv3Params",
    "Smmuv3Request",
    "Smmuv3Response",
    "SparseMemory",
    "System",
    "SystemConfig",
    "load_scenario",
    "parse_scenario",
]
