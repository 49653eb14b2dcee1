"""Raw memory images (a QEMU ``pmemsave`` file, a simulator snapshot) as physical memory.

Each image is a file of raw bytes placed at a physical address; the bytes are little-endian
words exactly as the machine held them (riscv-iommu: "Endianness of memory-resident data
structures" -- ``fctl.BE`` and ``DC.tc.SBE`` tell the IOMMU how to read them, not this
module). Everything outside the images reads zero.

:class:`ImageMemory` implements :class:`iommusim.mem.PhysicalMemory` over the images without
copying them: files are memory-mapped read-only and a read slices the map (after angr/cle's
backers). What the IOMMU writes -- A/D updates, fault records -- goes to a copy-on-write
overlay of 4 KiB pages, so the files are never modified and a multi-gigabyte dump costs no
more than the pages the walk touches.
"""

from __future__ import annotations

import mmap
import os
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Final

from iommusim.errors import FormatError

__all__ = ["ImageMemory", "MemoryImage", "check_disjoint", "parse_image", "parse_number"]

_PAGE_SHIFT: Final = 12
_PAGE_SIZE: Final = 1 << _PAGE_SHIFT
_PAGE_MASK: Final = _PAGE_SIZE - 1
_ADDR_LIMIT: Final = 1 << 64
_ADDR_MASK: Final = _ADDR_LIMIT - 1


def parse_number(text: str) -> int:
    """A non-negative integer written in hex (``0x`` prefix) or decimal; ``ValueError``
    otherwise (``_`` separators allowed, as Python's literals)."""
    value = int(text.strip(), 0)
    if value < 0:
        raise ValueError(text)
    return value


@dataclass(frozen=True, slots=True)
class MemoryImage:
    """The file ``path`` loaded at ``base_pa``; ``spec`` is how the user wrote it
    (``FILE@ADDR``), for messages."""

    spec: str
    path: Path
    base_pa: int
    size_bytes: int

    @property
    def end_pa(self) -> int:
        return self.base_pa + self.size_bytes


def parse_image(spec: str) -> MemoryImage:
    """``FILE@ADDR`` -> a :class:`MemoryImage` of the file's current size.

    The address follows the last ``@`` (a file name may contain one) and may be
    page-unaligned. Raises :class:`FormatError` naming ``spec`` for a malformed spec, an
    address that is not a number, a file that cannot be read, or an image that would end
    past 2^64.
    """
    name, sep, addr = spec.rpartition("@")
    if not sep or not name:
        raise FormatError(f"{spec}: an image must be FILE@ADDR, not {spec!r}")
    try:
        base = parse_number(addr)
    except ValueError:
        raise FormatError(
            f"{spec}: the address must be a hex (0x...) or decimal number, not {addr!r}"
        ) from None
    path = Path(name)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise FormatError(f"{spec}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{spec}: is a directory, not a file") from None
    except OSError as e:
        raise FormatError(f"{spec}: cannot read it ({e.strerror or e})") from None
    if base + size > _ADDR_LIMIT:
        raise FormatError(
            f"{spec}: the image must end at or below 2^64, not at {base + size:#x} "
            f"({size} bytes from {base:#x})"
        )
    return MemoryImage(spec, path, base, size)


def check_disjoint(images: Sequence[MemoryImage]) -> None:
    """Raise :class:`FormatError` naming both images when two of them overlap."""
    ordered = sorted((im for im in images if im.size_bytes), key=lambda im: im.base_pa)
    for a, b in pairwise(ordered):
        if b.base_pa < a.end_pa:
            raise FormatError(
                f"{b.spec}: images must not overlap, but [{b.base_pa:#x}, {b.end_pa:#x}) "
                f"overlaps {a.spec} [{a.base_pa:#x}, {a.end_pa:#x})"
            )


class ImageMemory:
    """Physical memory made of raw file images, zero elsewhere, with a copy-on-write
    overlay for the IOMMU's own stores. Use as a context manager (or call :meth:`close`) to
    release the file maps."""

    __slots__ = ("_bases", "_bufs", "_ends", "_maps", "_overlay")

    def __init__(self, images: Sequence[MemoryImage]) -> None:
        """Map every image; raises :class:`FormatError` for overlapping images or a file
        that cannot be read (then nothing stays mapped)."""
        check_disjoint(images)
        maps: list[tuple[int, int, mmap.mmap]] = []
        try:
            for im in images:
                if not im.size_bytes:
                    continue
                try:
                    with open(im.path, "rb") as f:
                        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except OSError as e:
                    raise FormatError(f"{im.spec}: cannot read it ({e.strerror or e})") from None
                maps.append((im.base_pa, im.base_pa + len(m), m))
        except BaseException:
            for _, _, m in maps:
                m.close()
            raise
        maps.sort(key=lambda t: t[0])
        self._bases = [b for b, _, _ in maps]
        self._ends = [e for _, e, _ in maps]
        self._bufs = [m for _, _, m in maps]
        self._maps = tuple(self._bufs)
        self._overlay: dict[int, bytearray] = {}

    def close(self) -> None:
        """Release the file maps; the memory then reads only what was written to it."""
        for m in self._maps:
            m.close()
        self._bases, self._ends, self._bufs = [], [], []

    def __enter__(self) -> ImageMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the images ----------------------------------------------------------------------
    def _from_images(self, pa: int, size: int) -> bytes:
        """``size`` bytes at ``pa`` (within one page) as the images hold them."""
        end = pa + size
        k = max(bisect_right(self._bases, pa) - 1, 0)
        out: bytearray | None = None
        bases, ends, bufs = self._bases, self._ends, self._bufs
        while k < len(bases) and bases[k] < end:
            lo, hi = max(pa, bases[k]), min(end, ends[k])
            if lo < hi:
                if lo == pa and hi == end:
                    return bufs[k][pa - bases[k] : end - bases[k]]
                if out is None:
                    out = bytearray(size)
                out[lo - pa : hi - pa] = bufs[k][lo - bases[k] : hi - bases[k]]
            k += 1
        return bytes(size) if out is None else bytes(out)

    # -- PhysicalMemory ----------------------------------------------------------------------
    def read(self, pa: int, size: int) -> bytes:
        pa &= _ADDR_MASK
        chunks: list[bytes] = []
        while size > 0:
            off = pa & _PAGE_MASK
            n = min(size, _PAGE_SIZE - off)
            page = self._overlay.get(pa >> _PAGE_SHIFT)
            chunks.append(
                bytes(page[off : off + n]) if page is not None else self._from_images(pa, n)
            )
            pa = (pa + n) & _ADDR_MASK
            size -= n
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def write(self, pa: int, data: bytes) -> None:
        pa &= _ADDR_MASK
        view = memoryview(data)
        while view:
            off = pa & _PAGE_MASK
            n = min(len(view), _PAGE_SIZE - off)
            pn = pa >> _PAGE_SHIFT
            page = self._overlay.get(pn)
            if page is None:
                page = self._overlay[pn] = bytearray(
                    self._from_images(pn << _PAGE_SHIFT, _PAGE_SIZE)
                )
            page[off : off + n] = view[:n]
            view = view[n:]
            pa = (pa + n) & _ADDR_MASK

    def read32(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 4), "little")

    def read64(self, pa: int) -> int:
        return int.from_bytes(self.read(pa, 8), "little")

    def write32(self, pa: int, value: int) -> None:
        self.write(pa, (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    def write64(self, pa: int, value: int) -> None:
        self.write(pa, (value & _ADDR_MASK).to_bytes(8, "little"))

    def cas64(self, pa: int, expected: int, new: int) -> int:
        old = self.read64(pa)
        if old == expected:
            self.write64(pa, new)
        return old

    def free_page(self, limit_pa: int) -> int | None:
        """The highest 4 KiB page below ``limit_pa`` that no image touches and nothing has
        been written to, or None (for a scratch structure the images cannot alias)."""
        pn = (limit_pa >> _PAGE_SHIFT) - 1
        k = len(self._bases) - 1
        while pn >= 0:
            lo, hi = pn << _PAGE_SHIFT, (pn + 1) << _PAGE_SHIFT
            while k >= 0 and self._bases[k] >= hi:
                k -= 1
            if k >= 0 and self._ends[k] > lo:
                pn = (self._bases[k] >> _PAGE_SHIFT) - 1  # below this image
                continue
            if pn not in self._overlay:
                return lo
            pn -= 1
        return None
