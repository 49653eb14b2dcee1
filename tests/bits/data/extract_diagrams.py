"""Regenerate ``riscv_iommu_diagrams.json`` from the RISC-V IOMMU spec's AsciiDoc sources.

The spec (CC-BY-4.0, riscv-non-isa/riscv-iommu) draws every register, structure and record as
a ``[wavedrom]`` bit diagram, most followed by a ``Bits | Field | Attribute`` table. This script
copies those facts -- the section, the diagram's fields in LSB-first order with their widths,
and the attribute rows -- into a JSON file the tests read, so that the tests need nothing
outside the repository. Usage::

    cd tests/bits/data && python extract_diagrams.py <spec-dir> > riscv_iommu_diagrams.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

FILES = ("iommu_registers.adoc", "iommu_data_structures.adoc", "iommu_in_memory_queues.adoc")
_FIELD = re.compile(r"bits:\s*(\d+)\s*,\s*name:\s*'([^']*)'")
_HEADING = re.compile(r"^=+\s+(.*)$")
_ROW = re.compile(r"^\|\s*(\d+)(?::(\d+))?\s*\|\s*`?([^`|]*?)`?\s*\|\s*([A-Za-z0-9]+)\b")


def extract(path: Path) -> list[dict[str, object]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    out: list[dict[str, object]] = []
    section = ""
    i = 0
    while i < len(lines):
        heading = _HEADING.match(lines[i])
        if heading:
            section = heading.group(1).strip()
        if not lines[i].startswith("[wavedrom"):
            i += 1
            continue
        caption = lines[i - 1].lstrip(".").strip() if lines[i - 1].startswith(".") else ""
        j = i + 2
        body = []
        while lines[j] != "....":
            body.append(lines[j])
            j += 1
        fields, lsb = [], 0
        for width, name in _FIELD.findall("\n".join(body)):
            fields.append({"name": name, "lsb": lsb, "width": int(width)})
            lsb += int(width)
        # The register's attribute table: the first table after the diagram, if it comes
        # before the next diagram or heading (only register tables carry an Attribute column).
        rows = []
        k = j + 1
        while k < len(lines) and lines[k] != "|===":
            if lines[k].startswith("[wavedrom") or _HEADING.match(lines[k]):
                break
            k += 1
        if path.name == "iommu_registers.adoc" and k < len(lines) and lines[k] == "|===":
            k += 1
            while k < len(lines) and lines[k] != "|===":
                row = _ROW.match(lines[k])
                if row:
                    hi, lo = int(row.group(1)), int(row.group(2) or row.group(1))
                    rows.append({"lsb": lo, "msb": hi, "name": row.group(3), "attr": row.group(4)})
                k += 1
        out.append(
            {
                "file": path.name,
                "line": i + 1,
                "section": section,
                "caption": caption,
                "fields": fields,
                "attributes": rows,
            }
        )
        i = j
    return out


def main() -> None:
    spec = Path(sys.argv[1])
    diagrams = [d for name in FILES for d in extract(spec / name)]
    json.dump(
        {"source": "riscv-non-isa/riscv-iommu (CC-BY-4.0)", "diagrams": diagrams},
        sys.stdout,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
