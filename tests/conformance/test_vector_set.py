"""The repository carries the public conformance vectors its tests and ``make test`` replay: a
clone with nothing beside it must fail, not skip, if any family is missing."""

from __future__ import annotations

import json

from testsupport.vectors import VECTORS

# FORMAT.md section 10: the families of the public set.
FAMILIES = (
    *("ad", "ats", "ats_msgs", "cq", "dc_checks", "ddt", "debug", "endian", "fq", "gstage"),
    *("hpm", "irq", "msi", "pdt", "pri", "regs", "s1", "two_stage"),
)


def test_every_family_is_in_the_repository() -> None:
    present = sorted(p.name for p in VECTORS.iterdir() if p.is_dir())
    assert present == sorted(FAMILIES)


def test_every_vector_names_its_family_and_format() -> None:
    files = sorted(VECTORS.rglob("*.json"))
    assert len(files) == 620
    for f in files:
        vec = json.loads(f.read_text(encoding="utf-8"))
        assert vec["format"] == "riscv-iommu-vector/1"
        assert vec["family"] == f.parent.name
        assert vec["name"] == f.stem
