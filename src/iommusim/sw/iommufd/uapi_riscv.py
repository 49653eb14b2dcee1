"""The model's RISC-V IOMMU extension of the iommufd uAPI -- *not* part of Linux 7.3.

Linux 7.3 defines hw_info, nested-HWPT and invalidation data for VT-d, SMMUv3 and AMD, but none
for the RISC-V IOMMU, so a VMM cannot describe a guest's RISC-V first stage to it. The model
adds the three structs a RISC-V nesting driver needs, with type numbers far outside the
kernel's small enums (``0x5256....``, "RV") so they can never be mistaken for a kernel type:

- ``struct iommu_hw_info_riscv_iommu`` (GET_HW_INFO): the ``capabilities`` and ``fctl``
  registers (riscv-iommu: "capabilities", "Features-control register"), so the VMM can
  present the same IOMMU to its guest.
- ``struct iommu_hwpt_riscv_iommu`` (HWPT_ALLOC of a nested HWPT on a NEST_PARENT one): the
  guest device context's ``fsc`` (the first-stage ``iosatp``, its PPN a guest-physical page)
  and ``ta`` (only its PSCID may be set), in the spec's own field layouts.
- ``struct iommu_hwpt_riscv_iommu_invalidate`` (HWPT_INVALIDATE): one guest command in the
  spec's 16-byte command-queue format; only IOTINVAL.VMA is accepted -- the host supplies the
  GSCID and replays it under the parent's G-stage.
"""

from __future__ import annotations

from typing import Final

from iommusim.sw.iommufd.uapi import STRUCTS, Struct, build_struct

__all__ = [
    "IOMMU_HWPT_DATA_RISCV_IOMMU",
    "IOMMU_HWPT_INVALIDATE_DATA_RISCV_IOMMU",
    "IOMMU_HW_INFO_TYPE_RISCV_IOMMU",
    "RISCV_HWPT",
    "RISCV_HW_INFO",
    "RISCV_INVALIDATE",
]

IOMMU_HW_INFO_TYPE_RISCV_IOMMU: Final = 0x5256_0001
IOMMU_HWPT_DATA_RISCV_IOMMU: Final = 0x5256_0001
IOMMU_HWPT_INVALIDATE_DATA_RISCV_IOMMU: Final = 0x5256_0001

RISCV_HW_INFO: Final[Struct] = build_struct(
    "iommu_hw_info_riscv_iommu",
    ("capabilities", "u64"),
    ("fctl", "u32"),
    ("__reserved", "u32"),
)
RISCV_HWPT: Final[Struct] = build_struct("iommu_hwpt_riscv_iommu", ("fsc", "u64"), ("ta", "u64"))
RISCV_INVALIDATE: Final[Struct] = build_struct(
    "iommu_hwpt_riscv_iommu_invalidate", ("cmd", "u64*2")
)

if any(s.name in STRUCTS for s in (RISCV_HW_INFO, RISCV_HWPT, RISCV_INVALIDATE)):
    raise AssertionError("a model extension struct shadows a kernel one")  # pragma: no cover
