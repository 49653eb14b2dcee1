"""Implementation parameters of a RISC-V IOMMU (DESIGN rule 5: nothing implementation-defined
is hard-coded).

riscv-iommu: "IOMMU capabilities (capabilities)" fixes the feature set; the remaining
parameters are the WARL and implementation-defined choices the spec leaves open.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, Literal

from iommusim.bits.riscv.regs import IGS_BOTH, IGS_MSI, IGS_WSI, MODE_3LVL, MODE_BARE, MODE_OFF, cap
from iommusim.errors import ModelError

__all__ = ["BARE_PAGE_SIZE", "PRESETS", "CacheParams", "Replacement", "RiscvIommuParams"]


#: Cache replacement policies (random: seeded by ``CacheParams.seed``).
Replacement = Literal["lru", "fifo", "random"]


@dataclass(frozen=True, slots=True)
class CacheParams:
    """Geometry of the IOMMU's caches. ``0`` entries disables a cache.

    riscv-iommu: "Caching in-memory data structures": caching is optional and
    implementation-defined; correct software gets the same results for any geometry.
    """

    ddtc_entries: int = 64
    pdtc_entries: int = 64
    iotlb_entries: int = 1024
    replacement: Replacement = "lru"
    #: The seed of random replacement (each cache draws from its own generator).
    seed: int = 0
    #: IOTLB organisation: ``False`` caches one entry per 4 KiB page of a translation (a
    #: superpage fills one entry per page touched); ``True`` one entry for a translation's
    #: whole range -- a superpage, a NAPOT range -- so a 2 MiB leaf costs one entry.
    iotlb_superpages: bool = False

    def __post_init__(self) -> None:
        for name in ("ddtc_entries", "pdtc_entries", "iotlb_entries"):
            if getattr(self, name) < 0:
                raise ModelError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.replacement not in ("lru", "fifo", "random"):
            raise ModelError(
                f"replacement must be 'lru', 'fifo' or 'random', not {self.replacement!r}"
            )


#: The page size a Bare stage reports per scheme of the other stage (the default: the largest
#: superpage of each scheme the conformance corpus assumes, FORMAT.md section 6.5).
BARE_PAGE_SIZE: Final[Mapping[str, int]] = MappingProxyType(
    {
        "sv57": 1 << 30,
        "sv48": 1 << 30,
        "sv39": 1 << 30,
        "sv32": 1 << 22,
        "sv57x4": 1 << 30,
        "sv48x4": 1 << 30,
        "sv39x4": 1 << 30,
        "sv32x4": 1 << 22,
    }
)


@dataclass(frozen=True, slots=True)
class RiscvIommuParams:
    """Everything implementation-defined about one RISC-V IOMMU instance."""

    capabilities: int
    fctl: int = 0
    num_hpm: int = 0
    hpmctr_bits: int = 64
    eventid_limit: int = 8
    num_vec_bits: int = 4
    reset_mode: int = MODE_OFF
    max_mode: int = MODE_3LVL
    max_devid_mask: int = 0xFFFFFF
    gxl_writable: bool = False
    fctl_be_writable: bool = False
    bare_page_size: Mapping[str, int] = field(default_factory=lambda: BARE_PAGE_SIZE)
    qosid_mask: int = 0
    caches: CacheParams = field(default_factory=CacheParams)
    #: IOMMU clock for ``iohpmcycles`` when the IOMMU runs on a virtual clock
    #: (riscv-iommu: "Performance-monitoring cycles counter (iohpmcycles)").
    clock_hz: int = 1_000_000_000
    #: How long an ATS.INVAL waits for its "Invalidation Completion" before it times out and
    #: the next IOFENCE.C sets ``cqcsr.cmd_to`` (riscv-iommu: "IOMMU PCIe ATS commands",
    #: "protocol-defined timeout"); ``None``: never (needs a clock otherwise).
    ats_inval_timeout_ns: int | None = None
    #: MRIF mode: whether the system's IMSICs implement ``seteipnum_be``, so a write whose
    #: address bit 2 is 1 is a big-endian MSI rather than discarded (AIA: "MSI PTE, MRIF mode").
    mrif_be_msi: bool = False
    #: MRIF mode notice MSIs: ``"always"`` (AIA: "an IOMMU is required always to send a notice
    #: MSI after storing an MSI to an MRIF, even when the corresponding enable bit ... is
    #: zero") or ``"enabled"`` (the option the AIA leaves open and lays the MRIF out for: send
    #: it only when the identity's interrupt-enable bit is 1).
    mrif_notice: Literal["always", "enabled"] = "always"

    def __post_init__(self) -> None:
        # Frozen all the way down: a caller's dict is copied into a read-only view.
        object.__setattr__(self, "bare_page_size", MappingProxyType(dict(self.bare_page_size)))
        if not 0 <= self.capabilities < 1 << 64:
            raise ModelError(f"capabilities must be a 64-bit value, not {self.capabilities:#x}")
        if not 0 <= self.num_hpm <= 32:
            raise ModelError(f"num_hpm must be in 0..32, not {self.num_hpm}")
        if self.num_hpm and not 32 <= self.hpmctr_bits <= 64:
            raise ModelError(f"hpmctr_bits must be in 32..64, not {self.hpmctr_bits}")
        if not 0 <= self.num_vec_bits <= 4:
            raise ModelError(f"num_vec_bits must be in 0..4, not {self.num_vec_bits}")
        if self.reset_mode not in (MODE_OFF, MODE_BARE):
            raise ModelError(f"reset_mode must be off or bare, not {self.reset_mode}")
        if not MODE_OFF <= self.max_mode <= MODE_3LVL:
            raise ModelError(f"max_mode must be off..3lvl, not {self.max_mode}")
        pas = self.pas
        if not 12 < pas <= 56:
            raise ModelError(f"capabilities.PAS must be in 13..56, not {pas}")
        # riscv-iommu: "IOMMU capabilities": IGS 3 is reserved; "Features-control register":
        # fctl.WSI is WARL, so its reset value must be one the IGS allows.
        igs = self.igs
        if igs == 3:
            raise ModelError("capabilities.IGS must be MSI, WSI or BOTH, not the reserved 3")
        wsi = self.fctl >> 1 & 1
        if (igs == IGS_WSI and not wsi) or (igs == IGS_MSI and wsi):
            raise ModelError(
                f"fctl.WSI must be {int(igs == IGS_WSI)} with capabilities.IGS "
                f"{'WSI' if igs == IGS_WSI else 'MSI'}, not {wsi}"
            )
        if self.clock_hz <= 0:
            raise ModelError(f"clock_hz must be positive, not {self.clock_hz}")
        if self.ats_inval_timeout_ns is not None and self.ats_inval_timeout_ns <= 0:
            raise ModelError(
                f"ats_inval_timeout_ns must be positive or None, not {self.ats_inval_timeout_ns}"
            )
        if self.mrif_notice not in ("always", "enabled"):
            raise ModelError(f"mrif_notice must be 'always' or 'enabled', not {self.mrif_notice!r}")

    def has(self, bit: int) -> bool:
        """True when the single-bit capability at ``bit`` is set."""
        return bool(self.capabilities >> bit & 1)

    @property
    def pas(self) -> int:
        return self.capabilities >> cap.PAS & 0x3F

    @property
    def igs(self) -> int:
        return self.capabilities >> cap.IGS & 3

    def with_(self, **changes: object) -> RiscvIommuParams:
        """A copy with some parameters changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _caps(*bits: int, pas: int = 56, version: int = 0x10, igs: int = IGS_MSI) -> int:
    value = version | pas << cap.PAS | igs << cap.IGS
    for b in bits:
        value |= 1 << b
    return value


_ALL_BITS = (
    cap.SV32,
    cap.SV39,
    cap.SV48,
    cap.SV57,
    cap.SVRSW60T59B,
    cap.SVPBMT,
    cap.SV32X4,
    cap.SV39X4,
    cap.SV48X4,
    cap.SV57X4,
    cap.AMO_MRIF,
    cap.MSI_FLAT,
    cap.MSI_MRIF,
    cap.AMO_HWAD,
    cap.ATS,
    cap.T2GPA,
    cap.END,
    cap.HPM,
    cap.DBG,
    cap.PD8,
    cap.PD17,
    cap.PD20,
    cap.QOSID,
    cap.NL,
    cap.S,
)

#: Named presets. ``full`` has every capability the spec defines.
PRESETS: Final[dict[str, RiscvIommuParams]] = {
    "full": RiscvIommuParams(
        capabilities=_caps(*_ALL_BITS, igs=IGS_BOTH),
        num_hpm=8,
        hpmctr_bits=64,
        eventid_limit=8,
        num_vec_bits=4,
        gxl_writable=True,
        fctl_be_writable=True,
        qosid_mask=0x0FFF_0FFF,
    ),
    "minimal": RiscvIommuParams(capabilities=_caps(cap.SV39, cap.SV39X4, pas=48), num_vec_bits=0),
    "linux-virt": RiscvIommuParams(
        capabilities=_caps(
            cap.SV39,
            cap.SV48,
            cap.SV57,
            cap.SVPBMT,
            cap.SV39X4,
            cap.SV48X4,
            cap.SV57X4,
            cap.MSI_FLAT,
            cap.MSI_MRIF,
            cap.AMO_HWAD,
            cap.ATS,
            cap.T2GPA,
            cap.HPM,
            cap.DBG,
            cap.PD8,
            cap.PD17,
            cap.PD20,
            pas=56,
            igs=IGS_BOTH,
        ),
        num_hpm=8,
        num_vec_bits=2,
    ),
}
