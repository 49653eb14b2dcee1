"""DESIGN "Layers": imports only go downward. Walks every module's imports (ast, no import)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "iommusim"

#: Rank of each top-level part of the package; a module may import its own rank or below.
RANK = {
    "errors": 0,
    "addr": 0,
    "sim": 0,
    "bits": 1,
    "mem": 2,
    "hw": 3,
    "platform": 4,
    "conformance": 4,
    "sw": 5,
    "perf": 6,
    "scenario": 6,
    "plot": 6,
    "hostproc": 6,
    "cli": 7,
    "demo": 7,
    "walkthrough": 7,
    "__main__": 7,
}


def part_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "iommusim" or len(parts) < 2:
        return None
    return parts[1]


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_downward(path: Path) -> None:
    rel = path.relative_to(SRC)
    own = (
        rel.parts[0].removesuffix(".py")
        if len(rel.parts) > 1 or rel.stem != "__init__"
        else "__init__"
    )
    if own == "__init__":
        return
    assert own in RANK, f"{rel}: top-level part {own!r} has no layer; add it to RANK"
    for mod in imports(path):
        target = part_of(mod)
        if target is None:
            continue
        assert target in RANK, f"{rel} imports {mod}: part {target!r} has no layer"
        assert RANK[target] <= RANK[own], f"{rel} ({own}) imports {mod} ({target}): upward"


def test_hardware_never_imports_software_or_platform() -> None:
    """DESIGN rule 1: hw/ sees only memory, registers and requests."""
    for path in (SRC / "hw").rglob("*.py"):
        for mod in imports(path):
            assert part_of(mod) not in ("sw", "platform"), f"{path} imports {mod}"


def test_software_never_imports_hardware() -> None:
    """DESIGN rule 2: drivers touch hardware only through MMIO and memory, so sw/ knows the
    hardware by its spec tables (bits/) alone, never by the model's modules."""
    offenders = [
        f"{path.relative_to(SRC)} imports {mod}"
        for path in sorted((SRC / "sw").rglob("*.py"))
        for mod in imports(path)
        if part_of(mod) == "hw"
    ]
    assert offenders == []
