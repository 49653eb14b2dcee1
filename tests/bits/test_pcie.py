"""PCIe ATS/PRI message bodies (iommusim.bits.pcie): the S-encoded range codec shared by the
ATS.INVAL payload and ATS completions, Page Request and PRG Response bodies.

riscv-iommu: "IOMMU PCIe ATS commands" (ATS.INVAL and ATS.PRGR payloads), "PCIe ATS
translation request handling" (completion address and S), "Page-Request-Queue (PQ)" (the
Page Request body in a PQ record).
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iommusim.bits.fields import Access
from iommusim.bits.pcie import (
    ALL_LAYOUTS,
    INVAL_REQUEST,
    PAGE_REQUEST,
    PRG_RESPONSE,
    covering_range,
    decode_page_request,
    decode_prg_response,
    decode_range,
    encode_range,
    inval_payload,
    inval_range,
    page_request_payload,
    prg_response_payload,
    translation_range,
)
from iommusim.errors import InvalidArgument

ALL = 1 << 64
PAGE = 4096

# A start and a size whose range stays inside the 64-bit space, biased towards small sizes.
spans = st.integers(0, ALL - 1).flatmap(
    lambda start: st.tuples(
        st.just(start),
        st.one_of(st.integers(1, min(1 << 24, ALL - start)), st.integers(1, ALL - start)),
    )
)
aligned = st.integers(12, 64).flatmap(
    lambda lg2: st.tuples(
        st.integers(0, (ALL >> lg2) - 1).map(lambda k: k << lg2), st.just(1 << lg2)
    )
)


@given(spans)
def test_covering_range_is_the_smallest_aligned_power_of_two(span: tuple[int, int]) -> None:
    start, size = span
    base, rsize = covering_range(start, size)
    assert rsize >= PAGE and rsize & (rsize - 1) == 0
    assert base % rsize == 0
    assert base <= start and start + size <= base + rsize
    if rsize > PAGE:  # neither aligned half covers the span
        half = rsize // 2
        assert start < base + half < start + size


@given(aligned)
def test_encode_decode_round_trip(rng: tuple[int, int]) -> None:
    base, size = rng
    pn, s = encode_range(base, size)
    assert s == (size > PAGE)
    assert decode_range(pn, s) == (base, size)
    assert pn < 1 << 52


@given(spans, st.booleans())
def test_inval_payload_names_the_covering_range(span: tuple[int, int], g: bool) -> None:
    """riscv-iommu: "IOMMU PCIe ATS commands": PAYLOAD of ATS.INVAL = G, S and the
    untranslated address bits 63:12; the range decodes back, G does not change it."""
    start, size = span
    payload = inval_payload(start, size, global_=g)
    assert payload < ALL
    assert INVAL_REQUEST.decode(payload)["g"] == int(g)
    assert payload & INVAL_REQUEST.reserved_mask == 0
    assert inval_range(payload) == covering_range(start, size)


def test_inval_payload_vectors() -> None:
    # One page: S = 0 and the page address.
    assert inval_payload(0x1234_5678, 1) == 0x1234_5000
    assert inval_payload(0x1234_5000, PAGE, global_=True) == 0x1234_5001
    # Two pages (8 KiB): S = 1, bit 12 = 0 marks the size.
    assert inval_payload(0x1_0000, 2 * PAGE) == 0x1_0000 | 1 << 11
    # 2 MiB at 0x4020_0000: bits 12..19 set, bit 20 clear.
    assert inval_payload(0x4020_0000, 1 << 21) == 0x4020_0000 | 0xFF000 | 1 << 11
    # A span across a 2 MiB boundary needs the 4 MiB block around it.
    assert inval_range(inval_payload(0x1F_F000, 0x2000)) == (0, 1 << 22)
    # Everything: bits 62:12 set, bit 63 clear, S = 1.
    everything = inval_payload(0, ALL)
    assert everything == ((1 << 63) - 1) & ~0x7FF | 1 << 11
    assert inval_range(everything) == (0, ALL)
    # All of bits 63:12 set is no meaningful range either: read as everything.
    assert inval_range(ALL - 1) == (0, ALL)


@pytest.mark.parametrize("size_lg2", range(13, 64))
def test_translation_range_reads_the_iommu_completion_encoding(size_lg2: int) -> None:
    """riscv-iommu: "PCIe ATS translation request handling": the IOMMU sets address bits 12
    to size-2 and clears bit size-1 (see tests/hw/riscv/spec/test_ats.py)."""
    base = (0x5A5A5 << size_lg2) & (ALL - 1)
    ppn = base >> 12 | ((1 << (size_lg2 - 13)) - 1)
    assert translation_range(ppn, True) == (base, 1 << size_lg2)
    assert translation_range(0xABCDE, False) == (0xABCDE000, PAGE)


BAD = [
    (lambda: covering_range(0, 0), "range must be non-empty within the 64-bit address space"),
    (lambda: covering_range(-PAGE, PAGE), "not start -0x1000"),
    (lambda: covering_range(ALL - PAGE, 2 * PAGE), "range must be non-empty"),
    (
        lambda: encode_range(0, 3 * PAGE),
        "range size must be a power of two in [4 KiB, 2**64], not 0x3000",
    ),
    (lambda: encode_range(0, 2048), "not 0x800"),
    (
        lambda: encode_range(PAGE, 2 * PAGE),
        "range base must be a multiple of its size 0x2000 "
        "within the 64-bit address space, not 0x1000",
    ),
    (
        lambda: page_request_payload(0, 512, read=True, write=False, last=True),
        "page request group index must fit 9 bits, not 512",
    ),
    (lambda: prg_response_payload(0, 16), "PRG response fields must fit"),
]


@pytest.mark.parametrize(("call", "message"), BAD)
def test_bad_ranges_are_einval(call: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        call()  # type: ignore[operator]
    assert message in str(e.value)
    assert e.value.errno == errno.EINVAL


@given(
    st.integers(0, (1 << 52) - 1), st.integers(0, 511), st.booleans(), st.booleans(), st.booleans()
)
def test_page_request_round_trip(pn: int, prgi: int, r: bool, w: bool, last: bool) -> None:
    """riscv-iommu: "Page-Request-Queue (PQ)": the record's PAYLOAD is the Page Request body
    (R bit 0, W bit 1, L bit 2, PRGI 11:3, page address 63:12)."""
    payload = page_request_payload(pn << 12 | 0xABC, prgi, read=r, write=w, last=last)
    req = decode_page_request(payload)
    assert (req.addr, req.prgi, req.read, req.write, req.last) == (pn << 12, prgi, r, w, last)
    assert req.stop_marker == (last and not r and not w)
    assert PAGE_REQUEST.decode(payload) == {"r": r, "w": w, "l": last, "prgi": prgi, "addr": pn}


@given(st.integers(0, 511), st.integers(0, 15), st.integers(0, 0xFFFF))
def test_prg_response_round_trip_matches_the_iommu_layout(prgi: int, code: int, dst: int) -> None:
    """riscv-iommu: "IOMMU PCIe ATS commands": PAYLOAD of ATS.PRGR: PRGI 40:32, response code
    47:44; DST_ID 63:48 as in the IOMMU's own responses ("PCIe ATS Page Request handling")."""
    payload = prg_response_payload(prgi, code, dst)
    assert payload == dst << 48 | code << 44 | prgi << 32
    assert decode_prg_response(payload) == (prgi, code)
    assert PRG_RESPONSE.decode(payload) == {"prgi": prgi, "code": code, "dst_id": dst}


@pytest.mark.parametrize("lay", ALL_LAYOUTS, ids=[lay.name for lay in ALL_LAYOUTS])
@given(data=st.data())
def test_layouts_round_trip(lay, data) -> None:  # type: ignore[no-untyped-def]
    f = {
        fl.name: data.draw(st.integers(0, (1 << fl.width) - 1), label=fl.name)
        for fl in lay.fields
        if fl.access is not Access.RSVD
    }
    assert lay.decode(lay.encode(f)) == f
