"""VMSAv8-64 translation regimes (Arm DDI 0487 D8) on the one radix walk of
:mod:`iommusim.hw.pgtable.walk`: the format descriptors of :mod:`iommusim.bits.arm.vmsa` give
the walk its per-level descriptor types and output-address field, and :class:`VmsaWalker`
adds what follows the leaf in VMSAv8-64 -- the Access flag, the negative permissions, dirty
state by DBM -- and returns every fault as a :class:`VmsaFault` record with its level, which
the SMMU maps to its events (IHI 0070 F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION,
F_WALK_EABT)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, NamedTuple

from iommusim.bits.pgformat import PERM_W, PtFormat
from iommusim.hw.pgtable.walk import TraceSink, Walker
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["VmsaFault", "VmsaFaultKind", "VmsaLeaf", "VmsaWalker"]

#: The fault kinds of a VMSAv8-64 walk (DDI 0487 D8 "MMU fault types"; IHI 0070 maps them
#: to F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION and F_WALK_EABT).
VmsaFaultKind = Literal["translation", "address_size", "access_flag", "permission", "walk_eabt"]
_KINDS: Final[tuple[VmsaFaultKind, ...]] = (
    "translation",
    "address_size",
    "access_flag",
    "permission",
    "walk_eabt",
)
_TRANSLATION, _ADDR_SIZE, _ACCESS_FLAG, _PERMISSION, _EABT = range(5)
_new: Final = tuple.__new__


class VmsaFault(NamedTuple):
    """A VMSAv8-64 walk that stopped: the fault ``kind`` and the DDI 0487 lookup ``level``
    (0-3) of the descriptor that caused it (level 0 for an input address out of range and for
    an out-of-range table base, as AArch64 reports them); for ``walk_eabt`` the physical
    ``fetch`` address of the descriptor access that aborted."""

    kind: VmsaFaultKind
    level: int
    fetch: int = 0


class VmsaLeaf(NamedTuple):
    """A successful VMSAv8-64 walk: the output address, the log2 size of the block or page,
    the descriptor (as written back after a hardware AF / dirty update), where it was read
    and its untranslated address, its DDI 0487 ``level``, and the ``PERM_*`` bits it grants
    the access's privilege (W only once dirty)."""

    out: int
    size_lg2: int
    pte: int
    pa: int
    addr: int
    level: int
    perms: int


class _Stop(Exception):
    """Internal: carries a walk fault out of :class:`Walker` to :class:`VmsaWalker`."""

    def __init__(self, code: int, info: int, level: int) -> None:
        super().__init__(code, info, level)
        self.code = code
        self.info = info
        self.level = level


class VmsaWalker:
    """A VMSAv8-64 translation regime over the shared :class:`Walker` (DDI 0487 D8
    "Translation table walk"): one stage, one format (granule and start level, from
    :func:`iommusim.bits.arm.vmsa.stage1_format` / ``stage2_format``), the configured output
    size ``oa_bits`` (CD.IPS / STE.S2PS, capped by the SMMU's OAS) and hardware management of
    the Access flag (``ha``) and of dirty state (``hd``, effective only with ``ha``: D8 "Hardware
    management of dirty state"). ``affd``: an entry with AF = 0 is used as if AF were 1,
    without an update and without an Access flag fault (IHI 0070 CD.AFFD / STE.S2AFFD).
    Faults are returned as :class:`VmsaFault` records, never raised."""

    __slots__ = (
        "_af",
        "_affd",
        "_dbm",
        "_dirty_set",
        "_dm",
        "_grants",
        "_ha",
        "_hd",
        "_level_of",
        "_ppriv",
        "_pshifts",
        "_ptable",
        "_root_mask",
        "_va_bits",
        "oa_bits",
        "start_level",
        "w",
    )

    def __init__(
        self,
        fmt: PtFormat,
        mem: PhysicalMemory,
        oa_bits: int,
        ha: bool,
        hd: bool,
        affd: bool = False,
    ) -> None:
        self.w = Walker(fmt, mem, _Stop, (), oa_bits, _ADDR_SIZE, fetch_info=True)
        self.oa_bits = oa_bits
        # Base address bits below the start table's alignment are RES0 (ignored).
        self._root_mask = ~(fmt.root_alignment - 1)
        self._affd = affd and not ha
        self._ha = ha
        self._hd = hd and ha
        self._af = fmt.accessed_mask
        self._dbm = fmt.dbm_mask
        self._dm = fmt.dirty_mask
        # The write that records dirty state: AP[2] cleared (stage 1), S2AP[1] set (stage 2).
        self._dirty_set = 0 if fmt.dirty_when_clear else fmt.dirty_mask
        # The leaf's permissions (fmt.grants, inlined): perm_table indexed by the
        # perm_fields, the privilege above them.
        self._grants = fmt.grants
        self._pshifts = fmt.perm_shifts
        self._ptable = fmt.perm_table
        self._ppriv = len(fmt.perm_table) >> 1
        #: The DDI 0487 level of the start table.
        self.start_level = 4 - fmt.levels
        self._va_bits = fmt.va_bits
        # The DDI 0487 level of a leaf by the log2 size it maps.
        g = fmt.page_shift
        self._level_of = {g + (g - 3) * (3 - lv): lv for lv in range(4)}

    def walk(
        self,
        ttb: int,
        ia: int,
        access: int,
        privileged: bool,
        be: bool,
        trace: TraceSink | None = None,
        stage: str = "s1",
        served: str = "request",
        xlate: Callable[[int], int] | None = None,
    ) -> VmsaLeaf | VmsaFault:
        """Translate input address ``ia`` for an ``access`` (``PERM_*`` bits) of the given
        privilege from the start table at ``ttb``; ``be``: big-endian descriptors (CD.ENDI,
        STE.S2ENDI); ``xlate`` maps each descriptor address (a nested stage 2: whatever
        it raises for a stage 2 fault on a table address -- IHI 0070 CLASS TT -- propagates).

        Order of checks (DDI 0487 D8 "Prioritization of aborts" within one stage): input
        range and table base (level 0), then per level translation / address size, then the
        Access flag (a fault only without ``ha``), then permissions -- a write to a
        writable-clean (DBM) entry is granted under ``hd`` -- and finally one atomic update
        that sets AF and records dirty state, only when nothing faulted.
        """
        w = self.w
        if ia >> self._va_bits:
            return VmsaFault("translation", 0)
        if ttb >> self.oa_bits:
            return VmsaFault("address_size", 0)
        try:
            out, size_lg2, pte, pa, addr, _ = w.walk(
                ttb & self._root_mask,
                ia,
                be,
                xlate,
                _TRANSLATION,
                0,
                _EABT,
                _EABT,
                trace,
                stage,
                served,
                None,
            )
        except _Stop as e:
            return VmsaFault(_KINDS[e.code], 3 - e.level, e.info if e.code == _EABT else 0)
        level = self._level_of[size_lg2]
        new = pte
        if not pte & self._af:
            if self._ha:
                new |= self._af
            elif not self._affd:
                return VmsaFault("access_flag", level)
        pi = self._ppriv if privileged else 0
        for sh, mask in self._pshifts:
            pi |= (pte & mask) >> sh
        perms = self._ptable[pi]
        if access & ~perms:
            # DBM: a write to a clean entry makes it dirty instead of faulting (D8 "Hardware
            # management of dirty state").
            dirty = (pte & ~self._dm) | self._dirty_set
            if not (access & PERM_W and self._hd and pte & self._dbm and pte != dirty):
                return VmsaFault("permission", level)
            perms = self._grants(dirty, privileged)
            if access & ~perms:
                return VmsaFault("permission", level)
            new = (new & ~self._dm) | self._dirty_set
        if new != pte:
            try:
                w.update_ad(pa, pte, new, be, _EABT, _EABT, trace, stage, 3 - level)
            except _Stop:
                return VmsaFault("walk_eabt", level, pa)
        return _new(VmsaLeaf, (out, size_lg2, new, pa, addr, level, perms))
