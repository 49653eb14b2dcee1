"""The hardware radix walk, one algorithm for every :class:`~iommusim.bits.pgformat.PtFormat`.

A :class:`Walker` is built once per format and memory; :meth:`Walker.walk` takes one input
address from the root table to its leaf (privileged spec "Virtual Address Translation
Process" steps 2-6, which the RISC-V IOMMU follows for both stages: riscv-iommu "Process to
translate an IOVA"), applying the format's leaf rule, reserved-bit masks, memory-type,
NAPOT and superpage-alignment rules, and :meth:`Walker.update_ad` performs the atomic A/D
update. Which permissions a leaf must grant and which fault each failure is are the
architecture's: the caller passes its fault codes and exception type, and checks the leaf's
permissions itself.

Hot path: plain ints, masks precomputed from the format at construction, and 8-byte PTE loads
straight from :attr:`SparseMemory.words` when the memory is exactly a :class:`SparseMemory`
(which never faults); any other memory (a fault-injecting or tracing wrapper, a subclass) is
read through the protocol and sees every access. When ``trace`` is a list, every PTE read and
A/D update is appended to it as a :class:`PteRead` / :class:`AdUpdate` record; when it is
``None`` that costs one test per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from iommusim.bits.pgformat import PtFormat
from iommusim.errors import BusError
from iommusim.mem.faults import ACCESS
from iommusim.mem.protocol import PhysicalMemory
from iommusim.mem.sparse import SparseMemory

__all__ = ["AdUpdate", "FaultFactory", "PteRead", "TraceSink", "Walker", "swap32", "swap64"]

#: Builds the exception that stops a walk from the caller's fault code, its extra value (an
#: architecture's cause and, e.g., the guest physical address it reports) and the walker level
#: (leaf-side numbering, see :mod:`iommusim.bits.pgformat`) of the entry that faulted.
FaultFactory = Callable[[int, int, int], Exception]


class PteRead(NamedTuple):
    """One PTE a walk loaded: ``stage`` and ``served`` are the caller's tags (which stage, and
    which access the walk serves: the request's own, or an implicit read or write of another
    structure); ``va`` is the address being translated, ``addr`` the PTE's address as the walk
    computed it, ``pa`` where it was read (``addr`` translated by the caller's ``xlate``)."""

    stage: str
    served: str
    level: int
    va: int
    addr: int
    pa: int
    pte: int
    pte_bytes: int


class AdUpdate(NamedTuple):
    """An A/D update written to the leaf PTE at ``pa`` by a ``stage`` walk."""

    stage: str
    pa: int
    old: int
    new: int


class TraceSink(Protocol):
    """Where walk records go (a list of the caller's record type that includes these)."""

    def append(self, record: PteRead | AdUpdate, /) -> None: ...


def swap64(v: int) -> int:
    """Byte-swap a doubleword (big-endian tables)."""
    return int.from_bytes(v.to_bytes(8, "little"), "big")


def swap32(v: int) -> int:
    return int.from_bytes(v.to_bytes(4, "little"), "big")


class Walker:
    """Walks tables of ``fmt`` in ``mem``; ``extensions`` names the format's optional fields
    the hardware implements (the rest are reserved bits); ``fault`` builds the exception a
    malformed entry or a failed memory access raises.

    ``oa_bits``: the configured output-address size (VMSAv8-64 IPS / PS): a table or leaf
    address with a bit set at or above it raises ``fault(size_fault, info, level)`` -- the
    Address size fault of DDI 0487 D8 "Address size fault" (checked on every descriptor's
    output address). None: the output-address field's width is the only limit.
    ``fetch_info``: a failed PTE load passes the PTE's physical address as the fault's
    ``info`` (an architecture that reports the fetch address, e.g. IHI 0070 F_WALK_EABT's
    FetchAddr); otherwise 0."""

    __slots__ = (
        "_fetch_info",
        "_k",
        "_leaf_k",
        "_mem",
        "_mt_rsvd",
        "_mt_shift",
        "_napot_low",
        "_napot_size",
        "_napot_val",
        "_oa_bad",
        "_pte_bytes",
        "_size_fault",
        "fault",
        "fmt",
        "in_shift",
        "in_top",
        "va_bits",
    )

    def __init__(
        self,
        fmt: PtFormat,
        mem: PhysicalMemory,
        fault: FaultFactory,
        extensions: Iterable[str] = (),
        oa_bits: int | None = None,
        size_fault: int = 0,
        fetch_info: bool = False,
    ) -> None:
        exts = frozenset(extensions)
        self._fetch_info = fetch_info
        # The output-address field's bits that encode an address at or above ``oa_bits``.
        in_range = ((1 << oa_bits) - 1) >> fmt.page_shift << fmt.oa_shift if oa_bits else -1
        self._oa_bad = fmt.oa_mask & ~in_range
        self._size_fault = size_fault
        self.fmt = fmt
        self.fault = fault
        self._mem = mem
        self._pte_bytes = fmt.pte_bytes
        self._mt_shift = fmt.memtype_shift
        self._mt_rsvd = frozenset(fmt.memtype_reserved)
        self._napot_low = (1 << fmt.napot_order) - 1
        self._napot_val = (1 << fmt.napot_order) >> 1
        self._napot_size = (1 << (fmt.page_shift + fmt.napot_order)) - 1
        # The walk's constants, unpacked in one go on the hot path (see walk()).
        self._k = (
            # Word loads only from exactly a SparseMemory: a wrapper or subclass sees every
            # access.
            mem.words if fmt.pte_bytes == 8 and type(mem) is SparseMemory else None,
            fmt.pte_bytes,
            tuple(fmt.level_shift(i) for i in range(fmt.levels)),
            tuple(fmt.index_mask(i) for i in range(fmt.levels)),
            fmt.table_mask,
            fmt.level_table_values,
            fmt.global_mask,
            fmt.oa_shift,
            fmt.oa_mask >> fmt.oa_shift,
            fmt.page_shift,
            fmt.levels - 1,
        )
        self._leaf_k = (
            # An out-of-range output address is caught with the reserved bits (no cost on the
            # success path); _bad() tells the two faults apart.
            fmt.nonleaf_reserved_mask(exts) | self._oa_bad,
            fmt.read_mask | fmt.write_mask,
            fmt.write_mask if fmt.write_only_reserved else -1,  # W without R, if reserved
            fmt.leaf_reserved_mask(exts) | self._oa_bad,
            fmt.leaf_mask,
            fmt.level_leaf_values,
            fmt.memtype_mask,
            fmt.napot_mask,
            fmt.misaligned_superpage_faults,
        )
        #: The input-address rule as two ints (for the caller's hot path): ``va >> in_shift``
        #: must be 0 or ``in_top`` (-1 when the bits above the format must be zero).
        self.va_bits = fmt.va_bits
        self.in_shift = fmt.va_bits - 1 if fmt.input == "sign" else fmt.va_bits
        self.in_top = (1 << (65 - fmt.va_bits)) - 1 if fmt.input == "sign" else -1

    def _load(self, pa: int, af: int, corr: int, level: int) -> int:
        """A PTE load through the memory protocol (little-endian: the caller swaps)."""
        try:
            return self._mem.read64(pa) if self._pte_bytes == 8 else self._mem.read32(pa)
        except BusError as e:
            info = pa if self._fetch_info else 0
            raise self.fault(af if e.kind == ACCESS else corr, info, level) from None

    def _bad(self, pte: int, cause: int, info: int, level: int) -> Exception:
        """The fault of a malformed entry: an address-size fault when its (validly typed)
        output address is out of range, else ``cause``."""
        fmt = self.fmt
        if pte & self._oa_bad and (fmt.is_table(pte, level) or fmt.is_leaf(pte, level)):
            return self.fault(self._size_fault, info, level)
        return self.fault(cause, info, level)

    def walk(
        self,
        root_pa: int,
        va: int,
        be: bool,
        xlate: Callable[[int], int] | None,
        cause: int,
        info: int,
        af: int,
        corr: int,
        trace: TraceSink | None,
        stage: str,
        served: str,
        count: Callable[[], None] | None,
    ) -> tuple[int, int, int, int, int, int]:
        """Walk ``va`` from the root table at ``root_pa`` to its leaf.

        ``be``: the tables are big-endian. ``xlate`` maps each PTE address to where it is
        read (a second stage), or is None. A malformed entry raises ``fault(cause, info,
        level)`` (an out-of-range output address ``fault(size_fault, info, level)``); a PTE
        load answered with an access error raises ``fault(af, 0, level)``, with poisoned data
        ``fault(corr, 0, level)``. ``count`` is called once per PTE loaded (a performance counter).
        The caller has checked that ``va`` is inside the format (:meth:`PtFormat.input_ok`).

        Returns ``(out, size_lg2, pte, pa, addr, g)``: the output address, the log2 size of
        the leaf's page, the leaf PTE, where it was read and its untranslated address, and
        the global bits of every entry on the way ORed together.
        """
        # One unpack instead of an attribute load per constant (the hot path).
        words, ptesz, shifts, imasks, tmask, tvals, gmask, oa_shift, oa_width, ps, top = self._k
        nonleaf_bad, rw, w_only, rsvd, lmask, lvals, mt_mask, napot, super_check = self._leaf_k
        i = top
        a = root_pa
        g = 0
        while True:
            addr = a + (va >> shifts[i] & imasks[i]) * ptesz
            pa = xlate(addr) if xlate is not None else addr
            if words is not None:
                page = words.get(pa >> 12)
                pte = page[(pa & 0xFFF) >> 3] if page is not None else 0
            else:
                pte = self._load(pa, af, corr, i)
            if count is not None:
                count()
            if be:
                pte = swap64(pte) if ptesz == 8 else swap32(pte)
            if trace is not None:
                trace.append(PteRead(stage, served, i, va, addr, pa, pte, ptesz))
            # Every malformed entry is the same fault, so the checks are merged: the level's
            # table pattern leads to the next level, its leaf pattern ends the walk.
            if pte & tmask == tvals[i]:
                if pte & nonleaf_bad:
                    raise self._bad(pte, cause, info, i)
                g |= pte & gmask
                i -= 1
                if i < 0:
                    raise self.fault(cause, info, 0)
                a = (pte >> oa_shift & oa_width) << ps
                continue
            if pte & lmask != lvals[i] or (pte & rw) == w_only or pte & rsvd:
                raise self._bad(pte, cause, info, i)
            break
        if pte & mt_mask and (pte & mt_mask) >> self._mt_shift in self._mt_rsvd:
            raise self.fault(cause, info, i)
        ppn = pte >> oa_shift & oa_width
        size_lg2 = shifts[i]
        if pte & napot:
            # A NAPOT leaf is only defined at level 0, its size encoded in the page number.
            if i or ppn & self._napot_low != self._napot_val:
                raise self.fault(cause, info, i)
            out = ((ppn & ~self._napot_low) << ps) | (va & self._napot_size)
        else:
            if super_check and ppn & ((1 << (size_lg2 - ps)) - 1):
                raise self.fault(cause, info, i)  # misaligned superpage
            mask = (1 << size_lg2) - 1
            out = ((ppn << ps) & ~mask) | (va & mask)
        return out, size_lg2, pte, pa, addr, g | pte & gmask

    def update_ad(
        self,
        pa: int,
        old: int,
        new: int,
        be: bool,
        af: int,
        corr: int,
        trace: TraceSink | None,
        stage: str,
        level: int = 0,
    ) -> None:
        """Atomically replace the leaf PTE ``old`` at ``pa`` by ``new`` (A/D set): a
        compare-and-swap on memory that leaves a PTE changed meanwhile alone. An access error
        raises ``fault(af, 0, level)``, poisoned data ``fault(corr, 0, level)`` (``level``:
        the leaf's)."""
        mem = self._mem
        try:
            if self._pte_bytes == 8:
                exp, val = (swap64(old), swap64(new)) if be else (old, new)
                mem.cas64(pa, exp, val)
            else:
                # 32-bit PTE: compare-and-swap within its doubleword.
                base = pa & ~7
                sh = (pa & 4) * 8
                word = mem.read64(base)
                cur = word >> sh & 0xFFFF_FFFF
                exp32, val32 = (swap32(old), swap32(new)) if be else (old, new)
                if cur == exp32:
                    mem.cas64(base, word, (word & ~(0xFFFF_FFFF << sh)) | val32 << sh)
        except BusError as e:
            raise self.fault(af if e.kind == ACCESS else corr, 0, level) from None
        if trace is not None:
            trace.append(AdUpdate(stage, pa, old, new))
