"""The SMMUv3 register file: pages 0 and 1 of the non-secure programming interface.

IHI 0070 6 "Memory map and registers". Each register is a plain ``int`` attribute named after
its mnemonic without the ``smmu_`` prefix (``cr0``, ``eventq_prod``, ...), so the queues and
the translation path read them without decoding. The tables of
:mod:`iommusim.bits.arm.smmuv3_regs` give offsets and write masks (RO fields keep their value;
RW, WARL and RW1S fields take the written one); a register's writer adds only its legalisation
and side effects, reported to a :class:`RegisterHost`.

Access rules (IHI 0070 6.2 "Register overview", 6.3):

* 64-bit registers take 64-bit accesses and 32-bit accesses to either half; 32-bit registers
  take 32-bit accesses. An aligned 64-bit access to two 32-bit registers is performed as two
  32-bit accesses, low word first (CONSTRAINED UNPREDICTABLE; chosen so that no access
  raises). Any other size, a misaligned access, an access outside pages 0 and 1, reserved
  offsets and registers of features the ID registers do not report read 0 and ignore writes:
  the PRIQ registers without IDR0.PRI, the ``*_IRQ_CFG*`` MSI registers without IDR0.MSI,
  SMMU_AGBPA (no alternate attributes) and the ATOS registers (not modelled).
* Address fields (STRTAB_BASE.ADDR, *Q_BASE.ADDR, *_IRQ_CFG0.ADDR) keep only the bits below
  the output address size (IDR5.OAS); higher bits are RES0.
* Writes the spec makes CONSTRAINED UNPREDICTABLE while a unit is enabled are **ignored**:
  STRTAB_BASE and STRTAB_BASE_CFG while SMMUEN is 1, CR1 while any CR0 enable is 1, CR2 while
  SMMUEN is 1, a queue's BASE while that queue is enabled. CR0ACK and IRQ_CTRLACK follow their
  registers at once (the model completes every update synchronously), so "enabled" is the same
  whichever of the pair the spec names.
* CMDQ_CONS.RD and EVENTQ_PROD/PRIQ_PROD (WR and OVFLG) are written by software only to
  initialise a disabled queue (IHI 0070 6.3: RW while the queue's enable is 0, RO otherwise).
* GBPA takes a write only with UPDATE = 1 and completes it at once: UPDATE reads 0.
* GERRORN acknowledges an active error by toggling its bit; toggling the bit of an inactive
  error is CONSTRAINED UNPREDICTABLE and is ignored (no error is activated).
* WARL fields: STRTAB_BASE_CFG.FMT reads 0 (linear) unless 2-level tables are implemented
  (IDR0.ST_LEVEL) and written 1; SPLIT other than 6, 8 or 10 reads 6; CR2.E2H is RES0 without
  IDR0.HYP and CR2.PTM RES1 without IDR0.BTM; CR0.PRIQEN, CR0.ATSCHK and CR0.VMW are RES0
  without PRI, ATS and VMW, IRQ_CTRL.PRIQ_IRQEN without PRI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple, Protocol

from iommusim.bits.arm.smmuv3_regs import (
    CMDQ_BASE,
    CMDQ_CONS,
    CMDQ_PROD,
    CR0,
    CR0_CMDQEN,
    CR0_EVENTQEN,
    CR0_PRIQEN,
    CR0_SMMUEN,
    CR1,
    CR2,
    EVENTQ_PROD,
    GBPA,
    GBPA_UPDATE,
    GERROR_ERRORS,
    IRQ_CFG0,
    IRQ_CTRL,
    PAGE1,
    PAGE_SIZE,
    QUEUE_ADDR_MASK,
    REGISTERS,
    STRTAB_ADDR_MASK,
    STRTAB_BASE,
    STRTAB_BASE_CFG,
    STRTAB_FMT_2LVL,
    Register,
)
from iommusim.bits.fields import Access
from iommusim.hw.smmuv3.params import Smmuv3Params

__all__ = ["RegisterHost", "Registers"]

_M32: Final = 0xFFFF_FFFF
_WRITABLE: Final = (Access.RW, Access.WARL, Access.RW1S)
_CR2_E2H: Final = CR2.mask("e2h")
_CR2_PTM: Final = CR2.mask("ptm")
_CFG_FMT: Final = STRTAB_BASE_CFG["fmt"]
_CFG_SPLIT: Final = STRTAB_BASE_CFG["split"]
_SPLITS: Final = (6, 8, 10)
_CONS_RD: Final = CMDQ_CONS.mask("rd")
_PROD_WRITABLE: Final = EVENTQ_PROD.mask("wr", "ovflg")
_IRQ_ADDR: Final = IRQ_CFG0.mask("addr")
_ENABLES: Final = CR0.mask("smmuen", "priqen", "eventqen", "cmdqen")
_W_CR1: Final = CR1.access_mask(*_WRITABLE)
_W_CR2: Final = CR2.access_mask(*_WRITABLE)
_W_GBPA: Final = GBPA.access_mask(*_WRITABLE)
_W_STRTAB_BASE: Final = STRTAB_BASE.access_mask(*_WRITABLE)
_W_STRTAB_BASE_CFG: Final = STRTAB_BASE_CFG.access_mask(*_WRITABLE)
_W_CMDQ_PROD: Final = CMDQ_PROD.access_mask(*_WRITABLE)
#: The three queue bases share one layout shape (LOG2SIZE, ADDR, the allocation hint).
_W_QUEUE_BASE: Final = CMDQ_BASE.access_mask(*_WRITABLE)


class RegisterHost(Protocol):
    """The side effects of register writes, carried out by the SMMU (IHI 0070 6.3)."""

    def control_written(self, old: int, new: int) -> None:
        """CR0 changed from ``old`` to ``new`` (CR0ACK already equals ``new``)."""

    def cr2_written(self) -> None:
        """CR2 was written (E2H, RECINVSID, PTM)."""

    def gbpa_written(self) -> None:
        """GBPA was updated (UPDATE = 1)."""

    def cmdq_doorbell(self) -> None:
        """CMDQ_PROD was written: consume commands if the queue may run."""

    def errors_acknowledged(self, acked: int) -> None:
        """GERRORN acknowledged the GERROR bits ``acked``."""


class _Reg(NamedTuple):
    attr: str
    size: int
    wmask: int
    writer: Callable[[int], None] | None


class Registers:
    """The register values and their access rules (IHI 0070 6)."""

    __slots__ = (
        "_addr_mask",
        "_host",
        "_table",
        "aidr",
        "cmdq_base",
        "cmdq_cons",
        "cmdq_prod",
        "cr0",
        "cr0ack",
        "cr1",
        "cr2",
        "eventq_base",
        "eventq_cons",
        "eventq_irq_cfg0",
        "eventq_irq_cfg1",
        "eventq_irq_cfg2",
        "eventq_prod",
        "gbpa",
        "gerror",
        "gerror_irq_cfg0",
        "gerror_irq_cfg1",
        "gerror_irq_cfg2",
        "gerrorn",
        "idr0",
        "idr1",
        "idr2",
        "idr3",
        "idr4",
        "idr5",
        "iidr",
        "irq_ctrl",
        "irq_ctrlack",
        "params",
        "priq_base",
        "priq_cons",
        "priq_irq_cfg0",
        "priq_irq_cfg1",
        "priq_irq_cfg2",
        "priq_prod",
        "statusr",
        "strtab_base",
        "strtab_base_cfg",
    )

    def __init__(self, params: Smmuv3Params, host: RegisterHost) -> None:
        p = params
        self.params = params
        self._host = host
        self._addr_mask = (1 << p.oas_bits) - 1
        self.idr0, self.idr1, self.idr2 = p.idr0, p.idr1, 0
        self.idr3, self.idr4, self.idr5 = p.idr3, 0, p.idr5
        self.iidr, self.aidr = p.iidr, p.aidr
        # IHI 0070 6.3: the reset values the spec fixes are 0; the UNKNOWN ones reset to 0 too,
        # except the RES1 CR2.PTM of an SMMU without BTM.
        self.cr0 = self.cr0ack = self.cr1 = self.statusr = self.gbpa = 0
        self.cr2 = 0 if p.idr0_field("btm") else _CR2_PTM
        self.irq_ctrl = self.irq_ctrlack = self.gerror = self.gerrorn = 0
        self.gerror_irq_cfg0 = self.gerror_irq_cfg1 = self.gerror_irq_cfg2 = 0
        self.eventq_irq_cfg0 = self.eventq_irq_cfg1 = self.eventq_irq_cfg2 = 0
        self.priq_irq_cfg0 = self.priq_irq_cfg1 = self.priq_irq_cfg2 = 0
        self.strtab_base = self.strtab_base_cfg = 0
        self.cmdq_base = self.cmdq_prod = self.cmdq_cons = 0
        self.eventq_base = self.eventq_prod = self.eventq_cons = 0
        self.priq_base = self.priq_prod = self.priq_cons = 0

        pri = p.idr0_field("pri")
        writers: dict[str, Callable[[int], None]] = {
            "cr0": self._w_cr0,
            "cr1": self._w_cr1,
            "cr2": self._w_cr2,
            "gbpa": self._w_gbpa,
            "irq_ctrl": self._w_irq_ctrl,
            "gerrorn": self._w_gerrorn,
            "strtab_base": self._w_strtab_base,
            "strtab_base_cfg": self._w_strtab_base_cfg,
            "cmdq_base": self._queue_base_writer("cmdq_base", CR0_CMDQEN),
            "cmdq_prod": self._w_cmdq_prod,
            "cmdq_cons": self._w_cmdq_cons,
            "eventq_base": self._queue_base_writer("eventq_base", CR0_EVENTQEN),
            "eventq_prod": self._prod_writer("eventq_prod", CR0_EVENTQEN),
            "priq_base": self._queue_base_writer("priq_base", CR0_PRIQEN),
            "priq_prod": self._prod_writer("priq_prod", CR0_PRIQEN),
        }
        for src in ("gerror", "eventq", "priq"):
            writers[f"{src}_irq_cfg0"] = self._irq_cfg0_writer(f"{src}_irq_cfg0")
        table: dict[int, _Reg] = {}
        for reg in REGISTERS:
            if self._mapped(reg, pri, p.idr0_field("msi")):
                attr = reg.name.removeprefix("smmu_")
                wmask = reg.layout.access_mask(*_WRITABLE)
                table[reg.offset] = _Reg(attr, reg.size, wmask, writers.get(attr))
        self._table = table

    @staticmethod
    def _mapped(reg: Register, pri: int, msi: int) -> bool:
        """Whether ``reg`` exists on this implementation (the module docstring's list)."""
        name = reg.name
        if "priq" in name and not pri:
            return False
        if "irq_cfg" in name and not msi:
            return False
        return "gatos" not in name and name != "smmu_agbpa"

    # -- the bus interface ------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """Read ``size`` (4 or 8) bytes at ``offset`` from the SMMU base; anything the module
        docstring lists as unmapped reads 0."""
        if size not in (4, 8) or offset % size or not 0 <= offset < PAGE1 + PAGE_SIZE:
            return 0
        reg = self._table.get(offset)
        if reg is not None and reg.size == size:
            return int(getattr(self, reg.attr))
        if size == 8:
            return self._read4(offset) | self._read4(offset + 4) << 32
        return self._read4(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        """Write the low ``8 * size`` bits of ``value`` at ``offset``; never raises."""
        if size not in (4, 8) or offset % size or not 0 <= offset < PAGE1 + PAGE_SIZE:
            return
        value &= (1 << (8 * size)) - 1
        reg = self._table.get(offset)
        if reg is not None and reg.size == size:
            self._store(reg, value)
        elif size == 8:
            self._write4(offset, value & _M32)
            self._write4(offset + 4, value >> 32)
        else:
            self._write4(offset, value)

    def _half(self, offset: int) -> tuple[_Reg, int] | None:
        """The register a 4-byte access at ``offset`` reaches and the bit shift of that word."""
        reg = self._table.get(offset)
        if reg is not None:
            return reg, 0
        reg = self._table.get(offset - 4)
        if reg is not None and reg.size == 8:
            return reg, 32
        return None

    def _read4(self, offset: int) -> int:
        hit = self._half(offset)
        if hit is None:
            return 0
        reg, shift = hit
        return int(getattr(self, reg.attr)) >> shift & _M32

    def _write4(self, offset: int, value: int) -> None:
        hit = self._half(offset)
        if hit is None:
            return
        reg, shift = hit
        old = int(getattr(self, reg.attr))
        self._store(reg, (old & ~(_M32 << shift)) | value << shift)

    def _store(self, reg: _Reg, value: int) -> None:
        if reg.writer is not None:
            reg.writer(value)
        elif reg.wmask:
            old = int(getattr(self, reg.attr))
            setattr(self, reg.attr, (old & ~reg.wmask) | (value & reg.wmask))

    # -- writers: legalisation and side effects ---------------------------------------------

    def _w_cr0(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_CR0: each enable is acknowledged in CR0ACK once in effect."""
        p = self.params
        mask = CR0.mask("smmuen", "eventqen", "cmdqen")
        if p.idr0_field("pri"):
            mask |= CR0_PRIQEN
        if p.idr0_field("ats"):
            mask |= CR0.mask("atschk")
        if p.idr0_field("vmw"):
            mask |= CR0.mask("vmw")
        old = self.cr0
        self.cr0 = self.cr0ack = value & mask
        if self.cr0 != old:
            self._host.control_written(old, self.cr0)

    def _w_cr1(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_CR1: written only while every CR0 enable is 0."""
        if not self.cr0 & _ENABLES:
            self.cr1 = value & _W_CR1

    def _w_cr2(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_CR2: written only while SMMUEN is 0."""
        if self.cr0 & CR0_SMMUEN:
            return
        p = self.params
        value &= _W_CR2
        if not p.idr0_field("hyp"):
            value &= ~_CR2_E2H
        if not p.idr0_field("btm"):
            value |= _CR2_PTM
        self.cr2 = value
        self._host.cr2_written()

    def _w_gbpa(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_GBPA: the fields change only by a write with UPDATE = 1; the
        update completes at once, so UPDATE reads 0."""
        if value & GBPA_UPDATE:
            self.gbpa = value & _W_GBPA & ~GBPA_UPDATE
            self._host.gbpa_written()

    def _w_irq_ctrl(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_IRQ_CTRL, acknowledged in IRQ_CTRLACK."""
        mask = IRQ_CTRL.mask("gerror_irqen", "eventq_irqen")
        if self.params.idr0_field("pri"):
            mask |= IRQ_CTRL.mask("priq_irqen")
        self.irq_ctrl = self.irq_ctrlack = value & mask

    def _w_gerrorn(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_GERRORN: toggling the bit of an active error acknowledges it."""
        active = (self.gerror ^ self.gerrorn) & GERROR_ERRORS
        acked = (value ^ self.gerrorn) & active
        if acked:
            self.gerrorn ^= acked
            self._host.errors_acknowledged(acked)

    def _w_strtab_base(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_STRTAB_BASE: ignored while SMMUEN is 1."""
        if not self.cr0 & CR0_SMMUEN:
            keep = _W_STRTAB_BASE & ~STRTAB_ADDR_MASK
            self.strtab_base = value & (keep | (STRTAB_ADDR_MASK & self._addr_mask))

    def _w_strtab_base_cfg(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_STRTAB_BASE_CFG: ignored while SMMUEN is 1; FMT and SPLIT are
        WARL (module docstring)."""
        if self.cr0 & CR0_SMMUEN:
            return
        value &= _W_STRTAB_BASE_CFG
        if _CFG_FMT.get(value) != STRTAB_FMT_2LVL or not self.params.idr0_field("st_level"):
            value = _CFG_FMT.put(value, 0)
        if _CFG_SPLIT.get(value) not in _SPLITS:
            value = _CFG_SPLIT.put(value, _SPLITS[0])
        self.strtab_base_cfg = value

    def _queue_base_writer(self, attr: str, enable: int) -> Callable[[int], None]:
        """IHI 0070 6.3 SMMU_CMDQ_BASE, SMMU_EVENTQ_BASE, SMMU_PRIQ_BASE: ignored while the
        queue is enabled."""
        keep = _W_QUEUE_BASE & ~QUEUE_ADDR_MASK
        mask = keep | (QUEUE_ADDR_MASK & self._addr_mask)

        def write(value: int) -> None:
            if not self.cr0 & enable:
                setattr(self, attr, value & mask)

        return write

    def _w_cmdq_prod(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_CMDQ_PROD: the doorbell of the command queue."""
        self.cmdq_prod = value & _W_CMDQ_PROD
        self._host.cmdq_doorbell()

    def _w_cmdq_cons(self, value: int) -> None:
        """IHI 0070 6.3 SMMU_CMDQ_CONS: RD is written only while CMDQEN is 0; ERR is RO."""
        if not self.cr0 & CR0_CMDQEN:
            self.cmdq_cons = (self.cmdq_cons & ~_CONS_RD) | (value & _CONS_RD)

    def _prod_writer(self, attr: str, enable: int) -> Callable[[int], None]:
        """IHI 0070 6.3 SMMU_EVENTQ_PROD, SMMU_PRIQ_PROD: software initialises WR and OVFLG
        only while the queue is disabled."""

        def write(value: int) -> None:
            if not self.cr0 & enable:
                setattr(self, attr, value & _PROD_WRITABLE)

        return write

    def _irq_cfg0_writer(self, attr: str) -> Callable[[int], None]:
        """IHI 0070 6.3 SMMU_*_IRQ_CFG0: ADDR[51:2], bits above the OAS RES0."""
        mask = _IRQ_ADDR & self._addr_mask

        def write(value: int) -> None:
            setattr(self, attr, value & mask)

        return write
