"""Bit-layout descriptions: fields, registers and multi-word layouts, validated at import.

Descriptions are separate from values (after amaranth-soc): a :class:`Layout` knows where each
named field lives and what access rule applies to it; hot paths take the precomputed masks
(``Layout.mask("v")``) and work on plain ints, decoders and dumps use :meth:`Layout.decode`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from iommusim.errors import ModelError

__all__ = ["Access", "Field", "Layout"]


class Access(enum.Enum):
    """Access rule of a register field (riscv-iommu: "Register layout", access types)."""

    RO = "ro"  # read-only
    RW = "rw"  # read-write
    RW1C = "rw1c"  # write 1 to clear
    RW1S = "rw1s"  # write 1 to set
    WARL = "warl"  # write any, read legal
    RSVD = "rsvd"  # reserved: reads 0, writes ignored (WPRI)
    CUSTOM = "custom"  # designated for custom use


@dataclass(frozen=True, slots=True)
class Field:
    """A named bit field: ``width`` bits starting at absolute bit ``lsb`` of the layout."""

    name: str
    lsb: int
    width: int
    access: Access = Access.RW
    doc: str = ""

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ModelError(f"field {self.name}: width must be positive, not {self.width}")
        if self.lsb < 0:
            raise ModelError(f"field {self.name}: lsb must be >= 0, not {self.lsb}")

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        """Mask of the field in place."""
        return ((1 << self.width) - 1) << self.lsb

    def get(self, value: int) -> int:
        return (value >> self.lsb) & ((1 << self.width) - 1)

    def put(self, value: int, field_value: int) -> int:
        """``value`` with this field replaced by ``field_value`` (which must fit)."""
        if field_value >> self.width:
            raise ModelError(
                f"field {self.name} is {self.width} bits wide; {field_value:#x} does not fit"
            )
        return (value & ~self.mask) | (field_value << self.lsb)


@dataclass(frozen=True, slots=True)
class Layout:
    """An ordered set of non-overlapping fields covering ``width`` bits.

    Bits covered by no field are reserved. Construction validates overlap and bounds, so a
    typo in a spec table fails at import.
    """

    name: str
    width: int
    fields: tuple[Field, ...]
    spec: str = ""
    _by_name: Mapping[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen = 0
        by_name: dict[str, Field] = {}
        for f in self.fields:
            if f.msb >= self.width:
                raise ModelError(f"{self.name}.{f.name} ends at bit {f.msb}, beyond {self.width}")
            if seen & f.mask:
                raise ModelError(f"{self.name}.{f.name} overlaps another field")
            if f.name in by_name:
                raise ModelError(f"{self.name}.{f.name} is defined twice")
            seen |= f.mask
            by_name[f.name] = f
        object.__setattr__(self, "_by_name", by_name)

    def __getitem__(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise ModelError(f"{self.name} has no field {name!r}") from None

    def mask(self, *names: str) -> int:
        """Union of the masks of the named fields."""
        m = 0
        for n in names:
            m |= self[n].mask
        return m

    def access_mask(self, *rules: Access) -> int:
        """Union of the masks of every field with one of the given access rules."""
        m = 0
        for f in self.fields:
            if f.access in rules:
                m |= f.mask
        return m

    @property
    def defined_mask(self) -> int:
        """Bits covered by fields that are not reserved."""
        return self.access_mask(*(a for a in Access if a is not Access.RSVD))

    @property
    def reserved_mask(self) -> int:
        """Bits reserved for future standard use: in no field, or in an RSVD field."""
        return ((1 << self.width) - 1) & ~self.defined_mask

    def decode(self, value: int) -> dict[str, int]:
        """Field name -> value, reserved fields omitted."""
        return {f.name: f.get(value) for f in self.fields if f.access is not Access.RSVD}

    def encode(
        self, values: Mapping[str, int] | Iterable[tuple[str, int]] = (), /, **kw: int
    ) -> int:
        """Build a value from field values (unnamed fields are 0)."""
        v = 0
        items = dict(values)
        items.update(kw)
        for n, fv in items.items():
            v = self[n].put(v, fv)
        return v


def layout(
    name: str, width: int, spec: str, *specs: tuple[str, int, int] | tuple[str, int, int, Access]
) -> Layout:
    """Build a :class:`Layout` from ``(name, lsb, width[, access])`` tuples."""
    fields = tuple(Field(s[0], s[1], s[2], s[3] if len(s) == 4 else Access.RW) for s in specs)
    return Layout(name, width, fields, spec)
