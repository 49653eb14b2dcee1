"""The SMMU's Performance Monitor Counter Group (IHI 0070 chapter 10): event counters software
programs and reads through the PMCG's own register page (:mod:`iommusim.bits.arm.smmuv3_pmcg`).

Counters count the translator's :class:`~iommusim.hw.smmuv3.maintenance.TranslationCounts`
(IHI 0070 10.3 events 0x1-0x7) while SMMU_PMCG_CR.E and the counter's CNTENSET0 bit are set.
They are computed lazily: each counter keeps its value at the last change of its
configuration and the event count at that moment, so counting costs the translator nothing.
An overflow past the counter's width (CFGR.SIZE) sets its OVSSET0 bit when next observed.

Not modelled (the note of the SMMUv3 issue lists them): StreamID filtering (SMR<n> and the
EVTYPER filter bits are stored, counting is over every stream), the cycle event 0x0 (CEID0
does not report it), counter capture (CFGR.CAPTURE = 0), overflow interrupts and MSIs (the
enables are stored).
"""

from __future__ import annotations

from typing import Final

from iommusim.bits.arm import smmuv3_pmcg as P
from iommusim.hw.smmuv3.maintenance import TranslationCounts

__all__ = ["Pmcg"]

#: Event number -> the TranslationCounts field that counts it (IHI 0070 10.3).
_SOURCE: Final = {
    P.EVENT_TRANSACTION: "transactions",
    P.EVENT_TLB_MISS: "tlb_misses",
    P.EVENT_CONFIG_MISS: "config_misses",
    P.EVENT_WALK_ACCESS: "walk_accesses",
    P.EVENT_CONFIG_ACCESS: "config_accesses",
    P.EVENT_ATS_TRANS_REQ: "ats_requests",
    P.EVENT_ATS_TRANSLATED: "ats_translated",
}
#: SMMU_PMCG_CEID0: the common events implemented, one bit per event number.
_CEID0: Final = sum(1 << e for e in _SOURCE)
_CR_E: Final = P.CR.mask("e")
_EVTYPER_WRITABLE: Final = P.EVTYPER.mask("event", "filter_sid_span", "filter_sec_sid")
_IRQEN: Final = 1
_SMR_WIDTH: Final = 0xFFFF_FFFF


class Pmcg:
    """``num_counters`` counters of ``counter_bits`` bits over ``counts``. Register accesses
    (4 or 8 bytes, naturally aligned; anything else reads 0 and writes nothing) never
    raise."""

    __slots__ = (
        "_cnten",
        "_counts",
        "_cr",
        "_evtyper",
        "_inten",
        "_irq_ctrl",
        "_mask",
        "_ovs",
        "_smr",
        "_snap",
        "_value",
        "counter_bits",
        "n",
    )

    def __init__(self, counts: TranslationCounts, num_counters: int, counter_bits: int = 64):
        self._counts = counts
        self.n = num_counters
        self.counter_bits = counter_bits
        self._mask = (1 << counter_bits) - 1
        self._value = [0] * num_counters
        self._snap = [0] * num_counters
        self._evtyper = [0] * num_counters
        self._smr = [0] * num_counters
        self._cnten = 0
        self._inten = 0
        self._ovs = 0
        self._cr = 0
        self._irq_ctrl = 0

    # -- counting -----------------------------------------------------------------------

    def _source(self, i: int) -> int:
        name = _SOURCE.get(P.EVTYPER["event"].get(self._evtyper[i]))
        return int(getattr(self._counts, name)) if name is not None else 0

    def _fold(self, i: int) -> None:
        """Bring counter ``i`` up to date (an overflow sets its OVS bit)."""
        now = self._source(i)
        if self._cr & _CR_E and self._cnten >> i & 1:
            v = self._value[i] + now - self._snap[i]
            if v > self._mask:
                self._ovs |= 1 << i
            self._value[i] = v & self._mask
        self._snap[i] = now

    def _fold_all(self) -> None:
        for i in range(self.n):
            self._fold(i)

    def counter(self, i: int) -> int:
        """SMMU_PMCG_EVCNTR<i> as software reads it."""
        self._fold(i)
        return self._value[i]

    # -- MMIO (IHI 0070 10.4) -------------------------------------------------------------

    def _all(self) -> int:
        return (1 << self.n) - 1

    def read_register(self, offset: int, size: int) -> int:
        """A ``size``-byte read at ``offset`` within the PMCG page."""
        if size not in (4, 8) or offset % size:
            return 0
        if offset < self.n * 8:
            v = self.counter(offset // 8)
            if size == 4:
                v = v >> 32 if offset & 4 else v & 0xFFFF_FFFF
            return v
        if size == 8:
            return self._read32(offset) | self._read32(offset + 4) << 32
        return self._read32(offset)

    def _read32(self, off: int) -> int:
        n = self.n
        if P.PMCG_EVTYPER <= off < P.PMCG_EVTYPER + 4 * n:
            return self._evtyper[(off - P.PMCG_EVTYPER) // 4]
        if P.PMCG_SMR <= off < P.PMCG_SMR + 4 * n:
            return self._smr[(off - P.PMCG_SMR) // 4]
        if off in (P.PMCG_CNTENSET0, P.PMCG_CNTENCLR0):
            return self._cnten
        if off in (P.PMCG_INTENSET0, P.PMCG_INTENCLR0):
            return self._inten
        if off in (P.PMCG_OVSSET0, P.PMCG_OVSCLR0):
            self._fold_all()
            return self._ovs
        if off == P.PMCG_CFGR:
            return P.CFGR.encode(nctr=max(n - 1, 0), size=self.counter_bits - 1)
        if off == P.PMCG_CR:
            return self._cr
        if off == P.PMCG_CEID0:
            return _CEID0 & 0xFFFF_FFFF
        if off == P.PMCG_CEID0 + 4:
            return _CEID0 >> 32
        if off in (P.PMCG_IRQ_CTRL, P.PMCG_IRQ_CTRLACK):
            return self._irq_ctrl
        return 0  # RES0, and the unimplemented capture / shadow registers

    def write_register(self, offset: int, size: int, value: int) -> None:
        """A ``size``-byte write at ``offset`` within the PMCG page."""
        if size not in (4, 8) or offset % size:
            return
        n = self.n
        if offset < n * 8:
            i = offset // 8
            self._fold(i)
            if size == 8:
                self._value[i] = value & self._mask
            elif offset & 4:
                self._value[i] = (self._value[i] & 0xFFFF_FFFF | value << 32) & self._mask
            else:
                self._value[i] = (self._value[i] & ~0xFFFF_FFFF | value & 0xFFFF_FFFF) & self._mask
            return
        if size == 8:
            self.write_register(offset, 4, value & 0xFFFF_FFFF)
            self.write_register(offset + 4, 4, value >> 32 & 0xFFFF_FFFF)
            return
        self._write32(offset, value & 0xFFFF_FFFF)

    def _write32(self, off: int, v: int) -> None:
        n = self.n
        if P.PMCG_EVTYPER <= off < P.PMCG_EVTYPER + 4 * n:
            i = (off - P.PMCG_EVTYPER) // 4
            self._fold(i)
            self._evtyper[i] = v & _EVTYPER_WRITABLE
            self._snap[i] = self._source(i)
        elif P.PMCG_SMR <= off < P.PMCG_SMR + 4 * n:
            self._smr[(off - P.PMCG_SMR) // 4] = v & _SMR_WIDTH
        elif off in (P.PMCG_CNTENSET0, P.PMCG_CNTENCLR0, P.PMCG_CR, P.PMCG_OVSCLR0):
            self._fold_all()  # every counter up to date before counting changes
            if off == P.PMCG_CNTENSET0:
                self._cnten |= v & self._all()
            elif off == P.PMCG_CNTENCLR0:
                self._cnten &= ~v
            elif off == P.PMCG_CR:
                self._cr = v & _CR_E
            else:
                self._ovs &= ~v
        elif off == P.PMCG_INTENSET0:
            self._inten |= v & self._all()
        elif off == P.PMCG_INTENCLR0:
            self._inten &= ~v
        elif off == P.PMCG_OVSSET0:
            self._ovs |= v & self._all()
        elif off == P.PMCG_IRQ_CTRL:
            self._irq_ctrl = v & _IRQEN
