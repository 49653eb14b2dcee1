"""Raw memory images for ``iommusim explain --memory``: files mapped at physical addresses,
zero elsewhere, the IOMMU's stores in a copy-on-write overlay (iommusim.conformance.rawmem)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommusim.conformance.rawmem import ImageMemory, MemoryImage, check_disjoint, parse_image
from iommusim.errors import FormatError
from iommusim.mem import PhysicalMemory, SparseMemory
from testsupport.memops import PAGE, Op, check_against_reference, ops

BASE = 0x8000_0000 - PAGE
WINDOW = 3 * PAGE


def image(tmp_path: Path, name: str, data: bytes, pa: int) -> MemoryImage:
    f = tmp_path / name
    f.write_bytes(data)
    return parse_image(f"{f}@{pa:#x}")


def test_implements_protocol(tmp_path: Path) -> None:
    with ImageMemory([]) as mem:
        assert isinstance(mem, PhysicalMemory)


@settings(max_examples=60, deadline=None)
@given(seq=ops(WINDOW))
def test_zero_images_agree_with_bytearray_model(
    tmp_path_factory: pytest.TempPathFactory, seq: list[Op]
) -> None:
    """With images of zeros the overlay alone must behave as plain RAM."""
    d = tmp_path_factory.mktemp("zero")
    ims = [
        image(d, "a.bin", bytes(PAGE + 5), BASE + 3),
        image(d, "b.bin", bytes(7), BASE + 2 * PAGE + 100),
    ]
    with ImageMemory(ims) as mem:
        check_against_reference(mem, BASE, WINDOW, seq)


_chunks = st.lists(
    st.tuples(st.integers(0, WINDOW - 1), st.binary(min_size=1, max_size=600)), max_size=5
)


@settings(max_examples=60, deadline=None)
@given(chunks=_chunks, seq=ops(WINDOW))
def test_images_read_as_if_loaded_into_ram(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[tuple[int, bytes]], seq: list[Op]
) -> None:
    """Unaligned images, page-crossing reads, then stores: every access agrees with a
    SparseMemory into which the same bytes were written."""
    d = tmp_path_factory.mktemp("img")
    ims: list[MemoryImage] = []
    ref = SparseMemory()
    taken: list[tuple[int, int]] = []
    for k, (off, data) in enumerate(chunks):
        lo, hi = off, min(off + len(data), WINDOW)
        if any(lo < e and b < hi for b, e in taken):
            continue  # images must not overlap
        taken.append((lo, hi))
        ims.append(image(d, f"{k}.bin", data[: hi - lo], BASE + lo))
        ref.write(BASE + lo, data[: hi - lo])
    files = {im.path: im.path.read_bytes() for im in ims}
    with ImageMemory(ims) as mem:
        for name, off, size, value, data, match in seq:
            pa = BASE + off
            if name == "read":
                assert mem.read(pa, size) == ref.read(pa, size)
            elif name == "write":
                mem.write(pa, data)
                ref.write(pa, data)
            elif name in ("read32", "read64"):
                assert getattr(mem, name)(pa) == getattr(ref, name)(pa)
            elif name in ("write32", "write64"):
                getattr(mem, name)(pa, value)
                getattr(ref, name)(pa, value)
            else:
                expected = ref.read64(pa) ^ (0 if match else 1)
                assert mem.cas64(pa, expected, value) == ref.cas64(pa, expected, value)
        assert mem.read(BASE - 16, WINDOW + 32) == ref.read(BASE - 16, WINDOW + 32)
    assert {im.path: im.path.read_bytes() for im in ims} == files  # never written


def test_reads_wrap_at_the_top_of_the_address_space(tmp_path: Path) -> None:
    """As SparseMemory: an access running past 2^64 - 1 continues at 0."""
    ims = [
        image(tmp_path, "top.bin", b"\x11" * 4, (1 << 64) - 4),
        image(tmp_path, "low.bin", b"\x22" * 4, 0),
    ]
    with ImageMemory(ims) as mem:
        assert mem.read((1 << 64) - 4, 8) == b"\x11" * 4 + b"\x22" * 4


def test_free_page_avoids_images_and_written_pages(tmp_path: Path) -> None:
    top = 1 << 20
    ims = [
        image(tmp_path, "a.bin", b"\x01", top - PAGE + 9),
        image(tmp_path, "b.bin", bytes(PAGE + 1), top - 3 * PAGE - 1),
    ]
    with ImageMemory(ims) as mem:
        # top-1 page: a.bin; top-2 page: free.
        assert mem.free_page(top) == top - 2 * PAGE
        mem.write(top - 2 * PAGE + 4, b"x")
        # b.bin covers the page at top-4 pages (its last byte) through top-3 pages' end.
        assert mem.free_page(top) == top - 5 * PAGE
    with ImageMemory([image(tmp_path, "all.bin", bytes(2 * PAGE), 0)]) as mem:
        assert mem.free_page(2 * PAGE) is None


def test_empty_image_occupies_nothing(tmp_path: Path) -> None:
    ims = [image(tmp_path, "empty.bin", b"", 0x1000), image(tmp_path, "x.bin", b"\x05", 0x1000)]
    check_disjoint(ims)
    with ImageMemory(ims) as mem:
        assert mem.read(0x1000, 2) == b"\x05\x00"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{f}", "an image must be FILE@ADDR"),
        ("@0x10", "an image must be FILE@ADDR"),
        ("{f}@", "the address must be a hex (0x...) or decimal number, not ''"),
        ("{f}@0x1g", "the address must be a hex (0x...) or decimal number, not '0x1g'"),
        ("{d}/nope.bin@0", "no such file"),
        ("{d}@0", "is a directory, not a file"),
        (
            "{f}@0xfffffffffffffffd",
            "the image must end at or below 2^64, not at 0x10000000000000001",
        ),
    ],
)
def test_bad_image_specs(tmp_path: Path, spec: str, message: str) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"abcd")
    text = spec.format(f=f, d=tmp_path)
    with pytest.raises(FormatError) as exc:
        parse_image(text)
    assert str(exc.value).startswith(f"{text}: {message}")


def test_at_in_file_name(tmp_path: Path) -> None:
    f = tmp_path / "dump@vm1.bin"
    f.write_bytes(b"\x01\x02")
    im = parse_image(f"{f}@4096")
    assert (im.path, im.base_pa, im.size_bytes, im.end_pa) == (f, 4096, 2, 4098)


def test_overlap_names_both_images(tmp_path: Path) -> None:
    a = image(tmp_path, "a.bin", bytes(16), 0x1000)
    b = image(tmp_path, "b.bin", bytes(16), 0x100F)
    with pytest.raises(
        FormatError,
        match=r"b\.bin@0x100f: images must not overlap, but "
        r"\[0x100f, 0x101f\) overlaps .*a\.bin@0x1000 \[0x1000, 0x1010\)",
    ):
        ImageMemory([a, b])
    check_disjoint([a, image(tmp_path, "c.bin", bytes(16), 0x1010)])  # adjacent is fine
