"""``iommusim vectors check``: replay vectors in-process and compare with their expectations
(rules of FORMAT.md section 7.2), printing per-family pass counts."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from iommusim.conformance.vectors import Replay, compare, load_vector
from iommusim.errors import IommusimError

__all__ = ["check_paths", "check_vector"]

_SLOTS = ("expect", "expect_events")


def check_vector(vec: dict[str, object]) -> str | None:
    """First mismatch of a vector as one line (``step N (op): ...``), or None if it passes."""
    stripped = copy.deepcopy(vec)
    steps = stripped["steps"]
    assert isinstance(steps, list)
    for s in steps:
        for k in _SLOTS:
            s.pop(k, None)
    rp = Replay(stripped)
    expected = vec["steps"]
    assert isinstance(expected, list)
    for i, step in rp.steps():
        rp.run_step(i, step)
        why = compare(expected[i], step)
        if why is not None:
            return f"step {i} ({step.get('op')}): {why}"
    return None


def check_paths(paths: list[Path], json_out: bool = False, skip: set[str] | None = None) -> int:
    skip = skip or set()
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise IommusimError(f"{p}: no such file or directory")
        files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # passed, failed, skipped
    failures: list[tuple[str, str]] = []
    for f in files:
        vec = load_vector(f)
        fam = str(vec.get("family", f.parent.name))
        if fam in skip:
            per[fam][2] += 1
            continue
        try:
            why = check_vector(vec)
        except IommusimError as e:
            why = f"error: {e}"
        if why is None:
            per[fam][0] += 1
        else:
            per[fam][1] += 1
            failures.append((str(vec.get("name", f.name)), why))
    passed = sum(v[0] for v in per.values())
    failed = sum(v[1] for v in per.values())
    skipped = sum(v[2] for v in per.values())
    if json_out:
        print(
            json.dumps(
                {
                    "families": {
                        k: dict(zip(("passed", "failed", "skipped"), v, strict=True))
                        for k, v in sorted(per.items())
                    },
                    "failures": [{"vector": n, "first_mismatch": w} for n, w in failures],
                    "passed": passed,
                    "failed": failed,
                    "skipped": skipped,
                },
                indent=1,
            )
        )
    else:
        con = Console(highlight=False)
        t = Table(title="riscv-iommu conformance vectors")
        for col in ("family", "passed", "failed", "skipped"):
            t.add_column(col, justify="left" if col == "family" else "right")
        for fam, (ok, fl, sk) in sorted(per.items()):
            t.add_row(fam, str(ok), f"[red]{fl}[/]" if fl else "0", str(sk))
        con.print(t)
        for name, why in failures:
            con.print(f"[red]FAIL[/] {name}: {why}", soft_wrap=True)
        print(f"vectors: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0
