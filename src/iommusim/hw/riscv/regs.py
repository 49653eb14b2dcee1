"""The memory-mapped register file of a RISC-V IOMMU.

riscv-iommu: "Memory-mapped register interface". One 4 KiB page of little-endian registers;
4- and 8-byte naturally aligned accesses, a 4-byte access reaching either half of an 8-byte
register. Every register is held as a plain ``int`` attribute named after its spec mnemonic, so
the core (``hw/riscv/iommu.py``) reads and advances them without decoding. ``read``/``write``
dispatch through a table built once at construction (one entry per 4-byte word of the page)
from the register tables of :mod:`iommusim.bits.riscv.regs`: the access attribute of each field
gives the write rule (RO fields keep their value, RW take the written one, RW1C clear where 1
is written, RW1S set, WPRI bits read 0), and every WARL field is bound here to a legaliser --
the implementation's choice, from its parameters; the choices are those of the conformance
corpus (FORMAT.md section 6.5). A register's writer adds only the side effects of a write.
Interrupt generation lives in :mod:`iommusim.hw.riscv.interrupts`, the performance monitor in
:mod:`iommusim.hw.riscv.hpm`.

Optional registers whose ``capabilities`` bit is 0 are simply not mapped: "a read from the
memory-mapped register offset of the register returns 0 and writes to that offset are ignored".
Reserved and custom fields read 0 (no custom use is implemented).

UNSPECIFIED behaviours and the answer chosen
--------------------------------------------

riscv-iommu: "Memory-mapped register interface": "The IOMMU behavior for register accesses
where the address is not aligned to the size of the access, or if the access spans multiple
registers, or if the size of the access is not 4 bytes or 8 bytes, is UNSPECIFIED." The model
answers every access at the bus level -- never with an exception, whatever the offset, size or
value (a fuzzer's or a buggy driver's access is data, DESIGN rule 3):

* **an access size other than 4 or 8** (0, 1, 2, 3, 5..7, 16, negative, ...): a read returns
  0, a write is ignored (no register changes, no side effect). Sub-word accesses are not
  merged into a register: the spec defines no byte enables for this page;
* **an offset not aligned to the access size** (a 4-byte access at ``4k + 1..3``, an 8-byte
  access at ``8k + 4`` or any other non-multiple of 8): read 0, write ignored -- not
  "rounded down", which would reach a register the access did not name;
* **an offset outside the 4 KiB register page** (negative, or ``offset + size > 4096``): read
  0, write ignored (the access does not decode to this IOMMU);
* **an aligned 8-byte access spanning two 4-byte registers** (e.g. ``cqh``/``cqt`` at 32,
  ``msi_data``/``msi_vec_ctl`` at ``768 + 16x + 8``): performed as the two 4-byte accesses
  it covers -- a read composes ``low | high << 32``; a write goes to the high half first, then
  the low half, the order the spec gives for an 8-byte access seen "as if two separate 4 byte
  accesses";
* **reserved offsets, custom-use offsets** (12, 688..759, the tail of the page) **and the
  offsets of optional registers that are not implemented**: read 0, writes ignored (the spec's
  rule for optional registers; "designated for custom use should be implemented as read-only
  zero"); a 4- or 8-byte access half on an implemented register and half on such an offset
  reads 0 for that half and ignores the write to it;
* **a value wider than the access** (more than 32 or 64 bits) **or negative**: the bus carries
  only ``8 * size`` bits, so the value is taken modulo ``2**(8 * size)`` (a negative value as
  its two's complement) before the register's own access rules apply;
* **fctl written while ``ddtp.iommu_mode`` is not Off or a queue is on** (riscv-iommu:
  "Features-control register (fctl)"): the write is performed; cached device contexts are kept,
  and a request through one whose ``iohgatp.MODE`` the new ``fctl.GXL`` does not support ends
  in "DDT entry misconfigured" (259), as a fresh read of that DC would.

Outside this file, the same bus-level rule applies to what a device presents (``iommu.py``):
request and page-request fields wider than the bus's (device_id 24 bits, process_id 20, IOVA and
payload 64) are taken modulo those widths, and a fault record never carries more bits per field
than its layout has.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Final

from iommusim.bits.fields import Access
from iommusim.bits.riscv.regs import (
    CAPABILITIES,
    CQCSR_CIE,
    CQCSR_CQEN,
    CQCSR_CQON,
    CQCSR_ERRORS,
    FCTL_BE,
    FCTL_GXL,
    FCTL_WSI,
    FQCSR_ERRORS,
    FQCSR_FIE,
    FQCSR_FQEN,
    FQCSR_FQON,
    IGS_BOTH,
    IGS_WSI,
    IOHPMEVT,
    IPSR_CIP,
    IPSR_FIP,
    IPSR_PIP,
    M32,
    M64,
    MODE_3LVL,
    MSI_TABLE_MAX,
    PQCSR_ERRORS,
    PQCSR_PIE,
    PQCSR_PQEN,
    PQCSR_PQON,
    REGISTERS,
    REGISTERS_SIZE,
    TR_REQ_CTL_GO,
    Register,
    cap,
    queue_index_mask,
)
from iommusim.errors import ModelError
from iommusim.hw.riscv.hpm import HpmLogic
from iommusim.hw.riscv.interrupts import RegisterHost, WireObserver
from iommusim.hw.riscv.params import RiscvIommuParams

__all__ = ["Legaliser", "RegisterHost", "Registers", "WireObserver"]

_Reader = Callable[[], int]
_Writer = Callable[[int], None]
#: A WARL field's legaliser: ``(old, written) -> legal`` on the field's own value, or ``None``
#: when the implementation ignores the whole write. An ``int`` instead of a function names the
#: field's writable bits; the others keep their (reset) value.
Legaliser = Callable[[int, int], int | None] | int
#: Side effect of a write: called with ``(element, old, new)`` after the store (``element``:
#: the index in a register array, 0 otherwise).
_After = Callable[[int, int, int], None]


#: The legaliser of a WARL field every value of which is legal.
_ALL: Final = -1


def _ignore(_value: int) -> None:
    """Writer of a read-only register."""


class _Reg:
    """One mapped register: name, byte offset, size and its access functions."""

    __slots__ = ("base", "name", "read", "size", "write")

    def __init__(self, name: str, base: int, size: int, read: _Reader, write: _Writer) -> None:
        self.name = name
        self.base = base
        self.size = size
        self.read = read
        self.write = write


class Registers(HpmLogic):
    """The IOMMU register file (riscv-iommu: "Memory-mapped register interface")."""

    __slots__ = (
        "_regs",
        "_table",
        "capabilities",
        "cqb",
        "cqh",
        "cqt",
        "ddtp",
        "fqb",
        "fqh",
        "fqt",
        "iommu_qosid",
        "params",
        "pqb",
        "pqh",
        "pqt",
        "tr_req_ctl",
        "tr_req_iova",
        "tr_response",
    )

    def __init__(self, params: RiscvIommuParams, host: RegisterHost) -> None:
        self.params = params
        self._host = host
        p = params

        # -- implementation choices, computed once --------------------------------------------
        self._has_hpm = p.has(cap.HPM) and p.num_hpm > 0
        self._wsi_only = p.igs == IGS_WSI
        self._num_hpm = p.num_hpm if self._has_hpm else 0
        bits = p.hpmctr_bits if self._has_hpm else 0
        self._ctr_mask = (1 << bits) - 1
        # iohpmcycles: a 63-bit counter field, no wider than the implemented counters.
        self._cyc_mask = (1 << min(bits, 63)) - 1
        self._msi_entries = 0 if self._wsi_only else 1 << p.num_vec_bits

        # -- reset state (riscv-iommu: "Reset behavior"; UNSPECIFIED fields reset to 0) -------
        self.capabilities = p.capabilities
        self.fctl = p.fctl & (FCTL_BE | FCTL_WSI | FCTL_GXL)
        self.ddtp = p.reset_mode
        self.cqb = self.cqh = self.cqt = 0
        self.fqb = self.fqh = self.fqt = 0
        self.pqb = self.pqh = self.pqt = 0
        self.cqcsr = self.fqcsr = self.pqcsr = 0
        self.ipsr = 0
        self.iocountovf = self.iocountinh = self.iohpmcycles = 0
        self.iohpmctr = [0] * 32
        self.iohpmevt = [0] * 32
        self.tr_req_iova = self.tr_req_ctl = self.tr_response = 0
        self.iommu_qosid = 0
        self.icvec = 0
        self.msi_addr = [0] * MSI_TABLE_MAX
        self.msi_data = [0] * MSI_TABLE_MAX
        self.msi_vec_ctl = [0] * MSI_TABLE_MAX
        self._msi_pending = [False] * MSI_TABLE_MAX
        self._by_event: dict[int, tuple[int, ...]] = {}
        self._wires = 0  # bit v: the wire of interrupt vector v is asserted
        self._wire_observers: list[WireObserver] = []
        #: Event IDs some iohpmevt selects: the translation path counts only these, so an
        #: event nothing counts costs it one set lookup.
        self.hpm_events: frozenset[int] = frozenset()
        #: Whether some iohpmevt selects a walk event (WALK_EVENTS): only then does the
        #: translation path hand the transaction's IDs to the table walks.
        self.hpm_walks = False

        # -- dispatch table: one slot per 4-byte word of the page -----------------------------
        legal = self._legalisers()
        after = self._side_effects()
        count = {"iohpmctr": max(self._num_hpm - 1, 0), "iohpmevt": max(self._num_hpm - 1, 0)}
        count.update(msi_addr=self._msi_entries, msi_data=self._msi_entries)
        count.update(msi_vec_ctl=self._msi_entries)
        regs: list[_Reg] = []
        for reg in REGISTERS:
            if reg.requires and not CAPABILITIES[reg.requires].get(p.capabilities):
                continue
            for i in range(reg.first, reg.first + count.get(reg.name, reg.count)):
                regs.append(self._map(reg, i, legal, after))

        table: list[_Reg | None] = [None] * (REGISTERS_SIZE // 4)
        for r in regs:
            for word in range(r.base // 4, (r.base + r.size) // 4):
                if table[word] is not None:  # pragma: no cover - layout bug
                    raise ModelError(f"register {r.name} overlaps {table[word]!r}")
                table[word] = r
        self._regs = tuple(sorted(regs, key=lambda r: r.base))  # address order
        self._table = table

    # -- the bus interface -------------------------------------------------------------------

    @staticmethod
    def decodes(offset: int, size: int) -> bool:
        """Whether an access of ``size`` bytes at ``offset`` is one the spec defines: 4 or 8
        bytes, naturally aligned, inside the page. Any other access reads 0 and ignores the
        write (the module docstring's UNSPECIFIED list)."""
        return size in (4, 8) and not offset & (size - 1) and 0 <= offset <= REGISTERS_SIZE - size

    def read(self, offset: int, size: int) -> int:
        """Read ``size`` (4 or 8) bytes at ``offset``; unmapped offsets read 0, and so does
        an access the spec leaves UNSPECIFIED (see the module docstring)."""
        if not self.decodes(offset, size):
            return 0
        reg = self._table[offset >> 2]
        if size == 8 and reg is not None and reg.size == 8:
            return reg.read()
        if size == 8:  # spans two 4-byte registers (UNSPECIFIED by the spec; compose)
            return self._read4(offset) | self._read4(offset + 4) << 32
        return self._read4(offset)

    def _read4(self, offset: int) -> int:
        reg = self._table[offset >> 2]
        if reg is None:
            return 0
        if reg.size == 8:
            return reg.read() >> (8 * (offset - reg.base)) & M32
        return reg.read()

    def write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` (4 or 8) bytes at ``offset``, applying every access rule.

        Bits above the access size are ignored; unmapped offsets ignore the write, and so
        does an access the spec leaves UNSPECIFIED (see the module docstring).
        """
        if not self.decodes(offset, size):
            return
        reg = self._table[offset >> 2]
        if size == 8:
            value &= M64
            if reg is not None and reg.size == 8:
                reg.write(value)
                return
            # Two 4-byte registers: high half first, as the spec's note on 8-byte accesses.
            self._write4(offset + 4, value >> 32)
            self._write4(offset, value & M32)
            return
        self._write4(offset, value & M32)

    def _write4(self, offset: int, value: int) -> None:
        reg = self._table[offset >> 2]
        if reg is None:
            return
        if reg.size == 8:
            # riscv-iommu: "Memory-mapped register interface" -- a 4-byte access to one half of
            # an 8-byte register leaves the other half as it reads.
            shift = 8 * (offset - reg.base)
            value = reg.read() & ~(M32 << shift) | value << shift
        reg.write(value)

    def dump(self) -> list[tuple[str, int]]:
        """(name, value) of every implemented register, in address order."""
        return [(reg.name, reg.read()) for reg in self._regs]

    # -- building the dispatch table from the tables -------------------------------------------

    def _legalisers(self) -> dict[str, Legaliser]:
        """The implementation's legaliser of every WARL field, keyed ``register.field``."""
        p = self.params
        ppn = (1 << (p.pas - 12)) - 1
        vec = (1 << p.num_vec_bits) - 1
        max_mode = min(p.max_mode, MODE_3LVL)
        eventid_limit = min(p.eventid_limit, IOHPMEVT.mask("eventid"))
        inh = (1 << max(self._num_hpm - 1, 0)) - 1
        qosid = p.qosid_mask if p.has(cap.QOSID) else 0

        def iommu_mode(_old: int, new: int) -> int | None:
            # riscv-iommu: "ddtp": iommu_mode is WARL; an unsupported mode leaves the whole
            # register unchanged (FORMAT.md 6.5).
            return new if new <= max_mode else None

        def eventid(old: int, new: int) -> int:
            # riscv-iommu: "iohpmevt1-31": an unsupported eventID keeps the previous one; the
            # other fields are written.
            return new if new <= eventid_limit else old

        def index(base: str) -> Callable[[int, int], int]:
            # riscv-iommu: "cqt", "fqh", "pqh": only bits LOG2SZ-1:0 of the index are writable.
            get_base = attrgetter(base)
            return lambda _old, new: new & queue_index_mask(get_base(self))

        igs_both = p.igs == IGS_BOTH
        return {
            # riscv-iommu: "fctl": which of BE, WSI, GXL is writable is the implementation's.
            "fctl.be": int(p.fctl_be_writable),
            "fctl.wsi": int(igs_both),
            "fctl.gxl": int(p.gxl_writable),
            "ddtp.iommu_mode": iommu_mode,
            "ddtp.ppn": ppn,  # PPN bits beyond the physical address size read 0
            "cqb.log2szm1": _ALL,
            "cqb.ppn": ppn,
            "fqb.log2szm1": _ALL,
            "fqb.ppn": ppn,
            "pqb.log2szm1": _ALL,
            "pqb.ppn": ppn,
            "cqt.index": index("cqb"),
            "fqh.index": index("fqb"),
            "pqh.index": index("pqb"),
            "iocountinh.hpm": inh,  # one bit per implemented counter
            "iohpmcycles.counter": self._cyc_mask,
            "iohpmctr.counter": self._ctr_mask,
            "iohpmevt.eventid": eventid,
            "tr_req_iova.vpn": _ALL,
            "tr_req_ctl.priv": _ALL,
            "tr_req_ctl.exe": _ALL,
            "tr_req_ctl.nw": _ALL,
            "tr_req_ctl.pid": _ALL,
            "tr_req_ctl.pv": _ALL,
            "tr_req_ctl.did": _ALL,
            # riscv-iommu: "iommu_qosid": RCID and MCID widths are the implementation's.
            "iommu_qosid.rcid": qosid & 0xFFF,
            "iommu_qosid.mcid": qosid >> 16 & 0xFFF,
            # riscv-iommu: "icvec": num_vec_bits per field; pmiv and piv exist with HPM and ATS.
            "icvec.civ": vec,
            "icvec.fiv": vec,
            "icvec.pmiv": vec if self._has_hpm else 0,
            "icvec.piv": vec if p.has(cap.ATS) else 0,
            # riscv-iommu: "msi_cfg_tbl": ADDR 55:2, limited to the physical address size.
            "msi_addr.addr": ((1 << min(p.pas, 56)) - 1) >> 2,
            "msi_data.data": _ALL,
        }

    def _side_effects(self) -> dict[str, _After]:
        """What a write does beside storing the legal value, by register."""

        def wires(_i: int, _old: int, _new: int) -> None:
            self._update_wires()  # fctl.WSI and icvec decide which wire an ipsr bit drives

        def clamp(index: str) -> _After:
            # riscv-iommu: "cqb" ("fqb", "pqb"): after a write, bits 31:LOG2SZ of cqt (fqh,
            # pqh) are 0.
            def after(_i: int, _old: int, new: int) -> None:
                setattr(self, index, getattr(self, index) & queue_index_mask(new))

            return after

        def ipsr(_i: int, old: int, new: int) -> None:
            if old & ~new:
                self._cleared(old & ~new)

        def iohpmcycles(_i: int, _old: int, new: int) -> None:
            self.iocountovf = self.iocountovf & ~1 | new >> 63

        def iohpmevt(i: int, _old: int, new: int) -> None:
            self.iocountovf = self.iocountovf & ~(1 << i) | (new >> 63) << i
            self._index_events()

        def tr_req_ctl(_i: int, _old: int, new: int) -> None:
            # riscv-iommu: "tr_req_ctl": Go/Busy (RW1S) starts the (synchronous) translation.
            if new & TR_REQ_CTL_GO:
                self._host.debug_translate()

        def msi_vec_ctl(i: int, _old: int, _new: int) -> None:
            self._unmasked(i)

        return {
            "fctl": wires,
            "cqb": clamp("cqt"),
            "fqb": clamp("fqh"),
            "pqb": clamp("pqh"),
            "cqcsr": self._queue_csr(
                "cqcsr", CQCSR_CQEN, CQCSR_CIE, CQCSR_CQON, CQCSR_ERRORS, "cqh", IPSR_CIP
            ),
            "fqcsr": self._queue_csr(
                "fqcsr", FQCSR_FQEN, FQCSR_FIE, FQCSR_FQON, FQCSR_ERRORS, "fqt", IPSR_FIP
            ),
            "pqcsr": self._queue_csr(
                "pqcsr", PQCSR_PQEN, PQCSR_PIE, PQCSR_PQON, PQCSR_ERRORS, "pqt", IPSR_PIP
            ),
            "ipsr": ipsr,
            "iohpmcycles": iohpmcycles,
            "iohpmevt": iohpmevt,
            "tr_req_ctl": tr_req_ctl,
            "icvec": wires,
            "msi_vec_ctl": msi_vec_ctl,
        }

    def _queue_csr(
        self, csr: str, en: int, ie: int, on: int, errors: int, index: str, cause: int
    ) -> _After:
        """Side effects of a queue-CSR write (riscv-iommu: "cqcsr", "fqcsr", "pqcsr"): en
        0 -> 1 clears the error bits and the IOMMU's index of the queue (cqh, fqt, pqt); the
        queue is on while en is 1 (writes complete at once, so busy stays 0); ie 0 -> 1
        re-evaluates the interrupt."""

        def after(_i: int, old: int, new: int) -> None:
            if new & en and not old & en:
                new &= ~errors
                setattr(self, index, 0)
            setattr(self, csr, new | on if new & en else new & ~on)
            if new & ie and not old & ie:
                self._reassert(cause)

        return after

    def _map(
        self, reg: Register, i: int, legal: dict[str, Legaliser], after: dict[str, _After]
    ) -> _Reg:
        """The dispatch entry of element ``i`` of ``reg`` (0 for a single register): its
        reader, and a writer applying each field's access rule, then the side effect."""
        lay = reg.layout
        if reg.count == 1:
            name, base = reg.name, reg.offset
            attr = reg.name

            def get() -> int:
                value: int = getattr(self, attr)
                return value

            def put(value: int) -> None:
                setattr(self, attr, value)

        else:
            # riscv-iommu: "iohpmctr1-31", "iohpmevt1-31" and the msi_cfg_tbl entries.
            name = f"{reg.name}{i}" if reg.first else f"{reg.name}_{i}"
            base = reg.offset + reg.stride * (i - reg.first)
            values: list[int] = getattr(self, reg.name)

            def get() -> int:
                return values[i]

            def put(value: int) -> None:
                values[i] = value

        keep = lay.access_mask(Access.RO)
        rw = lay.access_mask(Access.RW)
        w1c = lay.access_mask(Access.RW1C)
        w1s = lay.access_mask(Access.RW1S)
        rules: list[tuple[int, int, Callable[[int, int], int | None]]] = []
        for f in lay.fields:
            if f.access is not Access.WARL:
                continue
            rule = legal.get(f"{reg.name}.{f.name}")
            if rule is None:
                raise ModelError(f"WARL field {reg.name}.{f.name} has no legaliser")
            if isinstance(rule, int):
                rw |= rule << f.lsb & f.mask
                keep |= f.mask & ~(rule << f.lsb)
            else:
                rules.append((f.mask, f.lsb, rule))
        if not (rw | w1c | w1s or rules):
            return _Reg(name, base, reg.size, get, _ignore)
        side_effect = after.get(reg.name)
        # riscv-iommu: "tr_req_ctl": a write while Go/Busy is 1 is ignored (FORMAT.md 6.5).
        busy = TR_REQ_CTL_GO if reg.name == "tr_req_ctl" else 0

        def write(value: int) -> None:
            old = get()
            if old & busy:
                return
            new = old & keep | value & rw | old & ~value & w1c | (old | value) & w1s
            for mask, lsb, rule in rules:
                legal_value = rule((old & mask) >> lsb, (value & mask) >> lsb)
                if legal_value is None:
                    return
                new |= legal_value << lsb & mask
            put(new)
            if side_effect is not None:
                side_effect(i, old, new)

        return _Reg(name, base, reg.size, get, write)
