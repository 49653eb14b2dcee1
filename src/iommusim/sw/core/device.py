"""Devices and groups, as the core sees them (after Linux ``struct device`` / ``iommu_group``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from iommusim.sw.core.domain import Domain
    from iommusim.sw.core.ops import IommuDriver

__all__ = ["Device", "Fault", "Group", "PciFunction"]


@dataclass(frozen=True, slots=True)
class Fault:
    """An unrecoverable DMA fault reported to the device's handler (after Linux
    ``report_iommu_fault``: the device, the address, read or write). Architecture-neutral:
    ``reason`` says what went wrong in words and ``record`` is the IOMMU's own record of it
    (a RISC-V fault-queue record, an SMMUv3 event), for handlers that know the architecture.
    """

    rid: int
    iova: int
    pasid: int | None
    write: bool
    reason: str
    record: object = field(repr=False)


class PciFunction(Protocol):
    """The device's PCIe capability controls software writes (config space): the ATS and
    PRI enable bits (PCIe "ATS Control", "Page Request Control")."""

    def enable_ats(self, on: bool) -> None: ...

    def enable_pri(self, on: bool) -> None: ...


@dataclass(eq=False)
class Device:
    """A DMA-capable device: ``rid`` is its requester id (the IOMMU device_id / stream id)."""

    name: str
    rid: int
    pasid_bits: int = 0
    group_key: str | None = None  # devices naming the same key share a group (no ACS)
    ats: bool = False  # PCIe ATS capability
    pri: bool = False  # PCIe PRI capability
    pci: PciFunction | None = field(default=None, repr=False)
    iommu: IommuDriver | None = field(default=None, repr=False)
    group: Group | None = field(default=None, repr=False)
    fault_handler: Callable[[Fault], None] | None = field(default=None, repr=False)
    priv: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def max_pasids(self) -> int:
        """``dev->iommu->max_pasids``: 0 for a device without the PASID capability."""
        return 1 << self.pasid_bits if self.pasid_bits else 0


@dataclass(eq=False)
class Group:
    """Devices that cannot be isolated from each other; domains attach to a whole group."""

    id: int
    devices: list[Device] = field(default_factory=list)
    default_domain: Domain | None = None
    domain: Domain | None = None
    pasid_array: dict[int, Domain] = field(default_factory=dict)  # PASID -> attached domain
    owner: object | None = None  # DMA owner claimed by a user (iommufd/VFIO); None = kernel
    owner_cnt: int = 0  # claims by that owner (one per bound device)
