"""``iommusim`` command line.

Exit codes: 0 success; 1 a check found mismatches; 2 bad input (a one-line error names the
offending file and field).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from iommusim.errors import IommusimError

__all__ = ["main"]


def _vector_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.json") if p.is_file())
    return [path]


def cmd_fill(args: argparse.Namespace) -> int:
    from iommusim.conformance.vectors import fill_vector, load_vector

    src = Path(args.input)
    dst = Path(args.output)
    if not src.exists():
        raise IommusimError(f"{src}: no such file or directory")
    for f in _vector_files(src):
        out = dst / f.relative_to(src) if src.is_dir() else dst
        out.parent.mkdir(parents=True, exist_ok=True)
        filled = fill_vector(load_vector(f))
        out.write_text(json.dumps(filled, indent=1) + "\n", encoding="utf-8")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from iommusim.conformance.check import check_paths

    return check_paths([Path(p) for p in args.paths], json_out=args.json, skip=set(args.skip or ()))


def cmd_explain(args: argparse.Namespace) -> int:
    from iommusim.conformance.explain import explain_vector_step

    explain_vector_step(Path(args.vector), args.step, json_out=args.json, msi_data=args.msi_data)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from iommusim.demo import run_demo

    run_demo(
        json_out=args.json, scenario=Path(args.scenario) if args.scenario else None, ops=args.ops
    )
    return 0


def cmd_walkthrough(args: argparse.Namespace) -> int:
    from iommusim.walkthrough import run_walkthrough

    run_walkthrough(json_out=args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="iommusim", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    vec = sub.add_parser("vectors", help="RISC-V IOMMU conformance vectors")
    vsub = vec.add_subparsers(dest="vcommand", required=True)
    f = vsub.add_parser("fill", help="replay vectors and write the model's observations")
    f.add_argument("input", help="a vector file or a directory of them")
    f.add_argument("-o", "--output", required=True, help="output file or directory")
    f.set_defaults(func=cmd_fill)
    c = vsub.add_parser("check", help="replay vectors and compare with their expectations")
    c.add_argument("paths", nargs="+", help="vector files or directories")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument(
        "--skip",
        action="append",
        metavar="FAMILY",
        help="report this family as skipped (repeatable)",
    )
    c.set_defaults(func=cmd_check)
    e = sub.add_parser(
        "explain", help="explain, step by step, how a vector's request is translated"
    )
    e.add_argument("vector", help="a vector file")
    e.add_argument(
        "--step",
        type=int,
        default=None,
        help="index of the translate or page_request step (default: every one)",
    )
    e.add_argument(
        "--msi-data",
        type=lambda v: int(v, 0),
        default=None,
        help="for an MSI to an MRIF: the 32-bit data (interrupt identity) to locate",
    )
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_explain)
    d = sub.add_parser(
        "demo",
        help="boot a machine, probe the driver and run a DMA workload in strict and lazy mode",
    )
    d.add_argument("scenario", nargs="?", help="a TOML scenario (default: the embedded one)")
    d.add_argument("--ops", type=int, default=None, help="operations per mode")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
    w = sub.add_parser(
        "walkthrough",
        help="translate two requests on an embedded memory image and explain each step",
    )
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_walkthrough)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except (IommusimError, OSError) as e:
        print(f"iommusim: error: {e}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
