"""Devices and groups, as the core sees them (after Linux ``struct device`` / ``iommu_group``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iommusim.sw.core.domain import Domain
    from iommusim.sw.core.ops import IommuDriver

__all__ = ["Device", "Fault", "Group"]


@dataclass(frozen=True, slots=True)
class Fault:
    """An unrecoverable DMA fault reported to the device's handler (iommu_fault, UNRECOV)."""

    rid: int
    cause: int
    iova: int
    pasid: int | None
    write: bool
    reason: str


@dataclass(eq=False)
class Device:
    """A DMA-capable device: ``rid`` is its requester id (the IOMMU device_id / stream id)."""

    name: str
    rid: int
    pasid_bits: int = 0
    group_key: str | None = None  # devices naming the same key share a group (no ACS)
    iommu: IommuDriver | None = field(default=None, repr=False)
    group: Group | None = field(default=None, repr=False)
    fault_handler: Callable[[Fault], None] | None = field(default=None, repr=False)
    priv: dict[str, object] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class Group:
    """Devices that cannot be isolated from each other; domains attach to a whole group."""

    id: int
    devices: list[Device] = field(default_factory=list)
    default_domain: Domain | None = None
    domain: Domain | None = None
    owner: object | None = None  # DMA owner claimed by a user (iommufd/VFIO); None = kernel
