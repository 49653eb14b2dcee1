"""The RISC-V instance of the radix writer (:mod:`iommusim.sw.pgtable.radix`, after Linux
io-pgtable): the formats the IOMMU walks, their leaf permission policy and their ``atp``
encodings.

First stage: Sv39, Sv48, Sv57 (privileged spec "Sv39/Sv48/Sv57: Page-Based Virtual-Memory
Systems"), pointed to by ``iosatp`` (``DC.fsc`` or ``PC.fsc``). G-stage: Sv39x4, Sv48x4,
Sv57x4 (privileged spec "Two-Stage Address Translation": the root table has two more index
bits, is 16 KiB and 16 KiB aligned; riscv-iommu: "Device-context fields", ``iohgatp``).

The formats are the :class:`~iommusim.bits.pgformat.PtFormat` instances of
:mod:`iommusim.bits.riscv.pgtable`, the very descriptors the hardware walker
(:mod:`iommusim.hw.pgtable`) walks. An emptied table is unlinked and left on the gather's
freelist until the IOTLB invalidation completes (riscv-iommu: "Guidelines for
invalidations").

Leaf permissions from the map ``prot`` (Linux generic_pt ``riscvpt_iommu_set_prot``):
``IOMMU_READ`` -> R; ``IOMMU_WRITE`` -> W and R (W without R is reserved, privileged spec
"Table: Encoding of PTE R/W/X fields"); X unless ``IOMMU_NOEXEC``; a prot granting none of
R/W/X is :class:`NotSupported`. First-stage leaves get U = 1 unless ``IOMMU_PRIV`` (Linux
always sets U; ``IOMMU_PRIV`` is honoured here so supervisor-only DMA can be modelled);
G-stage leaves always get U = 1, as G-stage translation treats every access as a user access.
With ``set_ad`` A is preset, and D on writable leaves, so the IOMMU never has to update them
(riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D) updates"). With ``svpbmt``,
``IOMMU_MMIO`` selects PBMT = IO (privileged spec "Svpbmt").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iommusim.bits.pgformat import PtFormat
from iommusim.bits.riscv.pgtable import PTE, RISCV_FORMATS
from iommusim.bits.riscv.structures import DC_FSC, DC_IOHGATP
from iommusim.errors import InvalidArgument, ModelError, NotSupported
from iommusim.mem.protocol import PhysicalMemory
from iommusim.sw.pages import PageAllocator
from iommusim.sw.pgtable.radix import FlushOps, RadixPageTable
from iommusim.sw.prot import (
    IOMMU_MMIO,
    IOMMU_NOEXEC,
    IOMMU_PRIV,
    IOMMU_PROT_MASK,
    IOMMU_READ,
    IOMMU_WRITE,
)

__all__ = [
    "FORMATS",
    "SV39",
    "SV39X4",
    "SV48",
    "SV48X4",
    "SV57",
    "SV57X4",
    "RiscvLeafCodec",
    "RiscvPageTable",
    "RiscvPtFormat",
    "riscv_atp",
]

# PTE bits, from the spec table (privileged spec "Sv39 page table entry").
_V: Final = PTE.mask("v")
_R: Final = PTE.mask("r")
_W: Final = PTE.mask("w")
_X: Final = PTE.mask("x")
_U: Final = PTE.mask("u")
_A: Final = PTE.mask("a")
_D: Final = PTE.mask("d")
_RWX: Final = _R | _W | _X
#: Leaf bits protect() keeps: the PPN, A/D state, G, N and the bits software owns.
_PROTECT_KEEP: Final = PTE.mask("ppn", "a", "d", "g", "rsw", "rsw60t59b", "n")
_PBMT_MASK: Final = PTE["pbmt"].mask
#: Svpbmt memory types.
_PBMT_IO: Final = 2 << PTE["pbmt"].lsb
#: Largest leaf this writer builds: level 3 (512 GiB), as the Linux driver's pgsize_bitmap.
_MAX_LEAF_LEVEL: Final = 3


@dataclass(frozen=True, slots=True)
class RiscvPtFormat:
    """One paged virtual-memory scheme as the RISC-V IOMMU driver names it.

    ``mode`` is the ``iosatp.MODE`` (``DC.tc.SXL`` = 0) or ``iohgatp.MODE`` (``fctl.GXL`` = 0)
    encoding (riscv-iommu: "Encodings of iosatp.MODE field", "Encodings of iohgatp.MODE
    field"); ``pt`` is the format descriptor of the same name, which ``levels`` and
    ``gstage`` must agree with.
    """

    name: str
    levels: int
    gstage: bool
    mode: int

    def __post_init__(self) -> None:
        pt = RISCV_FORMATS.get(self.name)
        if pt is None or pt.levels != self.levels or (pt.input == "zero") != self.gstage:
            raise ModelError(f"{self.name!r} with {self.levels} levels is no RISC-V format")

    @property
    def pt(self) -> PtFormat:
        return RISCV_FORMATS[self.name]

    @property
    def va_bits(self) -> int:
        """Width of the input address: VA bits (first stage) or GPA bits (G-stage)."""
        return self.pt.va_bits

    @property
    def root_order(self) -> int:
        """log2 of the root table's size in pages: 16 KiB G-stage roots are order 2."""
        return (self.pt.root_alignment >> self.pt.page_shift).bit_length() - 1

    @property
    def root_index_bits(self) -> int:
        return self.pt.root_index_bits

    @property
    def leaf_levels(self) -> range:
        """Levels at which this writer places leaves (0 = 4 KiB, 1 = 2 MiB, ...)."""
        return range(min(self.levels, _MAX_LEAF_LEVEL + 1))

    @property
    def pgsize_bitmap(self) -> int:
        """Supported leaf sizes as a bitmap of sizes (Linux ``pgsize_bitmap``)."""
        bm = 0
        for lvl in self.leaf_levels:
            bm |= 1 << self.pt.level_shift(lvl)
        return bm

    def page_table(
        self,
        mem: PhysicalMemory,
        pages: PageAllocator,
        *,
        set_ad: bool = True,
        big_endian: bool = False,
        svpbmt: bool = False,
        flush: FlushOps | None = None,
    ) -> RiscvPageTable:
        """A new, empty table of this format (see :class:`RiscvPageTable`)."""
        return RiscvPageTable(
            mem, pages, self, set_ad=set_ad, big_endian=big_endian, svpbmt=svpbmt, flush=flush
        )


SV39: Final = RiscvPtFormat("sv39", 3, False, 8)
SV48: Final = RiscvPtFormat("sv48", 4, False, 9)
SV57: Final = RiscvPtFormat("sv57", 5, False, 10)
SV39X4: Final = RiscvPtFormat("sv39x4", 3, True, 8)
SV48X4: Final = RiscvPtFormat("sv48x4", 4, True, 9)
SV57X4: Final = RiscvPtFormat("sv57x4", 5, True, 10)
#: Formats by name.
FORMATS: Final[dict[str, RiscvPtFormat]] = {
    f.name: f for f in (SV39, SV48, SV57, SV39X4, SV48X4, SV57X4)
}
_BY_PT: Final = {f.pt: f for f in FORMATS.values()}


@dataclass(frozen=True, slots=True)
class RiscvLeafCodec:
    """Leaf permissions from the map ``prot`` (Linux generic_pt ``riscvpt_iommu_set_prot``):
    ``IOMMU_READ`` -> R; ``IOMMU_WRITE`` -> W and R (W without R is reserved, privileged spec
    "Table: Encoding of PTE R/W/X fields"); X unless ``IOMMU_NOEXEC``; a prot granting none
    of R/W/X is :class:`NotSupported`. First-stage leaves get U = 1 unless ``IOMMU_PRIV``
    (Linux always sets U; ``IOMMU_PRIV`` is honoured here so supervisor-only DMA can be
    modelled); G-stage leaves always get U = 1, as G-stage translation treats every access
    as a user access. With ``set_ad`` A is preset, and D on writable leaves, so the IOMMU
    never has to update them (riscv-iommu: "IOMMU updating of PTE accessed (A) and dirty (D)
    updates"). With ``svpbmt``, ``IOMMU_MMIO`` selects PBMT = IO (privileged spec
    "Svpbmt")."""

    gstage: bool
    set_ad: bool
    svpbmt: bool
    keep_mask: int = _PROTECT_KEEP

    def leaf_bits(self, prot: int) -> int:
        if prot < 0 or prot & ~IOMMU_PROT_MASK:
            raise InvalidArgument(f"prot must be a combination of IOMMU_* bits, not {prot:#x}")
        bits = _V
        if prot & IOMMU_WRITE:
            bits |= _R | _W | (_D if self.set_ad else 0)
        if prot & IOMMU_READ:
            bits |= _R
        if not prot & IOMMU_NOEXEC:
            bits |= _X
        if not bits & _RWX:
            raise NotSupported(f"prot {prot:#x} grants no access (no READ, WRITE or exec)")
        if self.set_ad:
            bits |= _A
        if self.gstage or not prot & IOMMU_PRIV:
            bits |= _U
        if self.svpbmt and prot & IOMMU_MMIO:
            bits |= _PBMT_IO
        return bits

    def prot_of(self, pte: int) -> int:
        prot = 0
        if pte & _R:
            prot |= IOMMU_READ
        if pte & _W:
            prot |= IOMMU_WRITE
        if not pte & _X:
            prot |= IOMMU_NOEXEC
        if not self.gstage and not pte & _U:
            prot |= IOMMU_PRIV
        if pte & _PBMT_MASK == _PBMT_IO:
            prot |= IOMMU_MMIO
        return prot


def riscv_atp(table: RadixPageTable, gscid: int = 0) -> int:
    """The ``iosatp`` / ``satp`` (first stage) or ``iohgatp`` (G-stage, with ``gscid``) value
    that points the IOMMU (or the CPU) at ``table``, a table of a RISC-V format
    (riscv-iommu: "First-Stage context (fsc)", "IO hypervisor guest address translation and
    protection (iohgatp)"; privileged spec "Supervisor Address Translation and Protection
    (satp) Register")."""
    if table.root_pa < 0:
        raise ModelError("page table used after destroy()")
    fmt = _BY_PT.get(table.pt)
    if fmt is None:
        raise InvalidArgument(f"table must be of a RISC-V format, not {table.pt.name}")
    if fmt.gstage:
        return DC_IOHGATP.encode(mode=fmt.mode, gscid=gscid, ppn=table.root_ppn)
    if gscid:
        raise InvalidArgument(f"gscid must be 0 for a first-stage table, not {gscid}")
    return DC_FSC.encode(mode=fmt.mode, ppn=table.root_ppn)


class RiscvPageTable(RadixPageTable):
    """An I/O page table of a RISC-V format in ``mem`` whose table pages come from ``pages``.

    ``fmt`` is a :class:`RiscvPtFormat` or its name (``"sv39"``, ``"sv48x4"``, ...).
    ``big_endian`` writes the table for a walker with ``DC.tc.SBE`` = 1 (or ``fctl.BE`` = 1
    for G-stage tables). ``flush`` gets the IOTLB maintenance callbacks (see
    :class:`~iommusim.sw.pgtable.radix.FlushOps`). The root table is allocated here
    (:class:`OutOfMemory` if it cannot be) and released, with every other table page, by
    :meth:`destroy`.
    """

    __slots__ = ("fmt",)

    def __init__(
        self,
        mem: PhysicalMemory,
        pages: PageAllocator,
        fmt: RiscvPtFormat | str,
        *,
        set_ad: bool = True,
        big_endian: bool = False,
        svpbmt: bool = False,
        flush: FlushOps | None = None,
    ) -> None:
        if isinstance(fmt, str):
            try:
                fmt = FORMATS[fmt]
            except KeyError:
                raise InvalidArgument(
                    f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}"
                ) from None
        self.fmt = fmt
        super().__init__(
            mem,
            pages,
            fmt.pt,
            RiscvLeafCodec(fmt.gstage, set_ad, svpbmt),
            max_leaf_level=_MAX_LEAF_LEVEL,
            big_endian=big_endian,
            flush=flush,
        )

    @property
    def mode(self) -> int:
        """``iosatp.MODE`` / ``iohgatp.MODE`` of the format."""
        return self.fmt.mode

    @property
    def gstage(self) -> bool:
        return self.fmt.gstage

    def atp(self, gscid: int = 0) -> int:
        """:func:`riscv_atp` of this table."""
        return riscv_atp(self, gscid)
