"""Random access sequences for physical memories, checked against a ``bytearray`` model.

The sequences lean on the corners where backends differ from a flat byte array: accesses that
start just before a 4 KiB page boundary (and so cross it), unaligned word accesses, and
compare-and-swap with both matching and mismatching expected values.
"""

from __future__ import annotations

from hypothesis import strategies as st

from iommusim.errors import BusError
from iommusim.mem.protocol import PhysicalMemory

__all__ = ["Op", "check_against_reference", "ops"]

PAGE = 4096
MASK64 = (1 << 64) - 1

# (name, offset, size, value, data, match)
Op = tuple[str, int, int, int, bytes, bool]


def _offsets(window: int, size: int) -> st.SearchStrategy[int]:
    """Offsets at which a ``size``-byte access fits in the window, biased to page edges. A
    0-byte access still names its byte (an address past the window is a hole, an access
    fault for AddressMap), so it too starts inside the window."""
    top = window - max(size, 1)
    edges = [b for b in range(PAGE, window, PAGE)]
    near_edge = st.sampled_from(edges).flatmap(
        lambda b: st.integers(max(0, b - 9), min(top, b + 1))
    )
    return st.one_of(st.integers(0, top), near_edge) if edges else st.integers(0, top)


@st.composite
def _op(draw: st.DrawFn, window: int) -> Op:
    name = draw(
        st.sampled_from(["read", "write", "read32", "read64", "write32", "write64", "cas64"])
    )
    if name in ("read", "write"):
        size = draw(st.integers(0, 24))
    else:
        size = 4 if name.endswith("32") else 8
    off = draw(_offsets(window, size))
    value = draw(st.integers(0, (1 << (8 * size)) - 1)) if size in (4, 8) else 0
    data = draw(st.binary(min_size=size, max_size=size)) if name == "write" else b""
    match = draw(st.booleans())
    return (name, off, size, value, data, match)


def ops(window: int, max_size: int = 40) -> st.SearchStrategy[list[Op]]:
    """Sequences of accesses inside ``[0, window)`` (offsets from some base address)."""
    return st.lists(_op(window), max_size=max_size)


def check_against_reference(
    mem: PhysicalMemory,
    base: int,
    window: int,
    seq: list[Op],
    *,
    atomic_boundaries: tuple[int, ...] = (),
) -> None:
    """Replay ``seq`` on ``mem`` at ``base`` and on a zeroed bytearray; every read must agree.

    A ``cas64`` that straddles one of ``atomic_boundaries`` (offsets) must raise an access
    ``BusError`` and change nothing, as an atomic split across two targets would.
    """
    ref = bytearray(window)
    for name, off, size, value, data, match in seq:
        pa = base + off
        if name == "read":
            assert mem.read(pa, size) == bytes(ref[off : off + size])
        elif name == "write":
            mem.write(pa, data)
            ref[off : off + size] = data
        elif name == "read32":
            assert mem.read32(pa) == int.from_bytes(ref[off : off + 4], "little")
        elif name == "read64":
            assert mem.read64(pa) == int.from_bytes(ref[off : off + 8], "little")
        elif name == "write32":
            mem.write32(pa, value)
            ref[off : off + 4] = value.to_bytes(4, "little")
        elif name == "write64":
            mem.write64(pa, value)
            ref[off : off + 8] = value.to_bytes(8, "little")
        elif name == "cas64":
            current = int.from_bytes(ref[off : off + 8], "little")
            if any(off < b < off + 8 for b in atomic_boundaries):
                try:
                    mem.cas64(pa, current, value)
                except BusError as e:
                    assert (e.kind, e.pa) == ("access", pa)
                else:
                    raise AssertionError(f"cas64 across a region boundary at {pa:#x} succeeded")
                continue
            expected = current if match else current ^ (1 << (value % 64))
            found = mem.cas64(pa, expected, value)
            assert found == current
            if match:
                ref[off : off + 8] = value.to_bytes(8, "little")
        else:  # pragma: no cover - the strategy only draws the names above
            raise AssertionError(name)
    assert mem.read(base, window) == bytes(ref)
