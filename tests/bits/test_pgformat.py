"""Page-table format descriptors (iommusim.bits.pgformat) and the RISC-V instances: golden
literal encodings pin each format's PTE layout and geometry independently of the descriptor
(privileged spec "Sv32", "Sv39", "Sv48", "Sv57", "Two-Stage Address Translation", "Svnapot",
"Svpbmt"; riscv-iommu: "PTE Reserved-for-Software Bits 60-59")."""

from __future__ import annotations

import dataclasses

import pytest

from iommusim.bits.pgformat import Perms, PtFormat
from iommusim.bits.riscv.pgtable import (
    FIRST_STAGE_FORMATS,
    G_STAGE_FORMATS,
    RISCV_FORMATS,
    SV32,
    SV32X4,
    SV39,
    SV39X4,
    SV48,
    SV48X4,
    SV57,
    SV57X4,
)
from iommusim.errors import ModelError

WIDE = [SV39, SV48, SV57, SV39X4, SV48X4, SV57X4]
ALL = [SV32, SV32X4, *WIDE]
IDS = [f.name for f in ALL]

# name: (index bits from the leaf level up, VA/GPA bits, root table bytes, input rule)
GEOMETRY = {
    "sv32": ((10, 10), 32, 4096, "zero"),
    "sv39": ((9, 9, 9), 39, 4096, "sign"),
    "sv48": ((9, 9, 9, 9), 48, 4096, "sign"),
    "sv57": ((9, 9, 9, 9, 9), 57, 4096, "sign"),
    "sv32x4": ((10, 12), 34, 16384, "zero"),
    "sv39x4": ((9, 9, 11), 41, 16384, "zero"),
    "sv48x4": ((9, 9, 9, 11), 50, 16384, "zero"),
    "sv57x4": ((9, 9, 9, 9, 11), 59, 16384, "zero"),
}


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
def test_geometry(fmt: PtFormat) -> None:
    """Levels and index widths; an x4 G-stage root has 2 more index bits, so it is 16 KiB and
    16 KiB aligned (privileged spec "Two-Stage Address Translation")."""
    bits, va_bits, root, rule = GEOMETRY[fmt.name]
    assert (fmt.index_bits, fmt.va_bits, fmt.root_bytes, fmt.input) == (bits, va_bits, root, rule)
    assert fmt.levels == len(bits)
    assert fmt.root_alignment == root
    assert [fmt.level_shift(i) for i in range(fmt.levels)] == [
        12 + sum(bits[:i]) for i in range(len(bits))
    ]


@pytest.mark.parametrize("fmt", WIDE, ids=[f.name for f in WIDE])
def test_64bit_pte_golden_encodings(fmt: PtFormat) -> None:
    """privileged spec "Sv39": V 0, R 1, W 2, X 3, U 4, G 5, A 6, D 7, RSW 9:8, PPN 53:10,
    PBMT 62:61, N 63; 8-byte PTEs and 56-bit physical addresses."""
    enc = fmt.pte.encode
    assert enc(v=1, r=1, w=1, u=1, a=1, d=1, ppn=0x12345) == 0x48D14D7
    assert enc(x=1, g=1, rsw=3) == 0x328
    assert enc(ppn=(1 << 44) - 1) == 0x003F_FFFF_FFFF_FC00
    assert enc(pbmt=2, n=1) == 0xC000_0000_0000_0000
    masks = (
        fmt.valid_mask,
        fmt.read_mask,
        fmt.write_mask,
        fmt.exec_mask,
        fmt.user_mask,
        fmt.global_mask,
        fmt.accessed_mask,
        fmt.dirty_mask,
    )
    assert masks == (0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80)
    assert (fmt.oa_mask, fmt.napot_mask, fmt.memtype_mask) == (
        0x003F_FFFF_FFFF_FC00,
        0x8000_0000_0000_0000,
        0x6000_0000_0000_0000,
    )
    assert (fmt.pte_bytes, fmt.oa_bits, fmt.napot_order) == (8, 56, 4)


@pytest.mark.parametrize("fmt", [SV32, SV32X4], ids=["sv32", "sv32x4"])
def test_32bit_pte_golden_encodings(fmt: PtFormat) -> None:
    """privileged spec "Sv32": the same flag bits, PPN 31:10 (34-bit physical addresses),
    4-byte PTEs, no PBMT and no N."""
    assert fmt.pte.encode(v=1, r=1, x=1, a=1, ppn=0x3FFFFF) == 0xFFFF_FC4B
    assert (fmt.oa_mask, fmt.pte_bytes, fmt.oa_bits) == (0xFFFF_FC00, 4, 34)
    assert (fmt.napot_mask, fmt.memtype_mask) == (0, 0)
    assert fmt.leaf_reserved_mask(["svpbmt", "svrsw60t59b"]) == 0
    assert fmt.nonleaf_reserved_mask() == 0xD0  # D, A, U


@pytest.mark.parametrize("fmt", WIDE, ids=[f.name for f in WIDE])
def test_reserved_masks_follow_the_extensions(fmt: PtFormat) -> None:
    """Bits 58:54 are always reserved; 60:59 unless Svrsw60t59b; PBMT 62:61 unless Svpbmt; a
    non-leaf PTE must also have D, A, U, N and PBMT clear."""
    assert fmt.leaf_reserved_mask() == 0x7FC0_0000_0000_0000
    assert fmt.leaf_reserved_mask(["svpbmt"]) == 0x1FC0_0000_0000_0000
    assert fmt.leaf_reserved_mask(["svrsw60t59b"]) == 0x67C0_0000_0000_0000
    assert fmt.leaf_reserved_mask(["svpbmt", "svrsw60t59b"]) == 0x07C0_0000_0000_0000
    assert fmt.nonleaf_reserved_mask() == 0xFFC0_0000_0000_00D0
    assert fmt.nonleaf_reserved_mask(["svpbmt", "svrsw60t59b"]) == 0xE7C0_0000_0000_00D0


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
def test_leaf_rule_and_permission_decode(fmt: PtFormat) -> None:
    """privileged spec "Virtual Address Translation Process": V = 1 with R = W = X = 0 points
    to the next level; any other valid PTE is a leaf."""
    assert fmt.is_table(0x1) and not fmt.is_leaf(0x1)
    assert fmt.is_leaf(0x3) and fmt.is_leaf(0x9) and not fmt.is_table(0x3)
    assert not fmt.is_leaf(0x2) and not fmt.is_table(0x0)
    assert fmt.perms(0x17) == Perms(read=True, write=True, execute=False, user=True)
    assert fmt.perms(0x9) == Perms(read=False, write=False, execute=True, user=False)
    assert fmt.oa_of(0x48D14D7) == 0x12345000
    assert fmt.pte_oa(0x12345000) == 0x48D1400


def test_input_address_rules() -> None:
    """First-stage VAs are sign-extended from their top bit ("bits 63-39 must all equal bit
    38"); Sv32 VAs and every G-stage GPA must have the bits above the format clear."""
    assert SV39.input_ok(0x3F_FFFF_FFFF) and SV39.input_ok(0xFFFF_FFC0_0000_0000)
    assert not SV39.input_ok(0x40_0000_0000) and not SV39.input_ok(0xFFFF_FF80_0000_0000)
    assert SV32.input_ok(0xFFFF_FFFF) and not SV32.input_ok(1 << 32)
    assert SV39X4.input_ok((1 << 41) - 1) and not SV39X4.input_ok(1 << 41)
    assert not SV39X4.input_ok(0xFFFF_FFFF_FFFF_F000)


def test_mode_tables() -> None:
    """riscv-iommu: "Encodings of iosatp.MODE field" / "Encodings of iohgatp.MODE field":
    modes 8, 9, 10 are Sv39, Sv48, Sv57 (x4) with SXL/GXL = 0 and mode 8 is Sv32 (x4) with
    SXL/GXL = 1."""
    assert FIRST_STAGE_FORMATS == ({8: SV39, 9: SV48, 10: SV57}, {8: SV32})
    assert G_STAGE_FORMATS == ({8: SV39X4, 9: SV48X4, 10: SV57X4}, {8: SV32X4})
    assert sorted(RISCV_FORMATS) == sorted(GEOMETRY)


@pytest.mark.parametrize("fmt", ALL, ids=IDS)
def test_the_leaf_rule_is_the_same_at_every_level(fmt: PtFormat) -> None:
    """The leaf rule as per-level descriptor types: every level has the same table pattern
    (V alone) and leaf pattern (V set), superpages being leaves above level 0."""
    assert fmt.level_table_values == fmt.level_leaf_values == (fmt.valid_mask,) * fmt.levels
    assert fmt.table_value == fmt.valid_mask
    assert fmt.block_levels() == tuple(range(fmt.levels))
    assert all(fmt.is_table(0x1, i) and fmt.is_leaf(0xB, i) for i in range(fmt.levels))
    assert (
        not fmt.perm_fields and fmt.dbm_mask == 0 and fmt.is_dirty(0x80) == (fmt.dirty_mask == 0x80)
    )


def test_per_level_descriptions_must_cover_every_level() -> None:
    """A per-level table or a permission table of the wrong size fails at construction, with
    the expected and the actual size in the message."""
    with pytest.raises(ModelError, match="table_values must have 3 entries, not 2"):
        dataclasses.replace(SV39, table_values=(1, 1))
    with pytest.raises(ModelError, match="perm_table must have 32 entries, not 1"):
        dataclasses.replace(SV39, perm_fields=("r", "w", "x", "u"), perm_table=(0,))
