"""``iommusim`` command line: thin over the library.

Commands:

* ``iommusim vectors fill IN -o OUT`` / ``iommusim vectors check PATH...``: replay
  RISC-V IOMMU conformance vectors, write or compare the model's observations;
* ``iommusim explain VECTOR [--step N]``: explain a vector's translate and page-request steps
  structure by structure;
* ``iommusim explain --memory FILE@ADDR ... --reg ddtp=HEX --device-id N --iova ADDR``:
  explain one request against a raw memory dump and the register values the IOMMU had;
* ``iommusim iommufd run [--trace] -- PROGRAM``: PROGRAM against the model's ``/dev/iommu``;
* ``iommusim study NAME --out DIR [--jobs N] [--ray ADDRESS] [--quick]``: a trace-driven
  study (iotlb-reach, invalidation, nested, ats): its plot and data;
* ``iommusim demo`` and ``iommusim walkthrough``: a booted machine and an embedded walk;
* ``iommusim --version``; ``python -m iommusim`` runs the same command line.

Exit codes: 0 success; 1 a check found mismatches; 2 bad input (a one-line error names the
offending file, field or flag: ``iommusim: error: --memory dump.bin@0x1000: no such file``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from iommusim.cli.explain import add_explain_parser
from iommusim.cli.iommufd import add_iommufd_parser
from iommusim.cli.study import add_study_parser
from iommusim.errors import IommusimError

__all__ = ["build_parser", "main", "version"]


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


def version() -> str:
    """The installed distribution's version (importlib.metadata), or the package's own
    ``__version__`` when running from a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("iommusim")
    except PackageNotFoundError:
        from iommusim import __version__

        return __version__


class _VersionAction(argparse.Action):
    """``--version``: looks the version up only when asked (start-up stays fast)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"iommusim {version()}")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="iommusim",
        description="An executable, spec-accurate model of IOMMU hardware and of the software "
        "that drives it.",
        epilog="Exit codes: 0 success, 1 a check found differences, 2 bad input (the message "
        "names the file, field or flag).",
    )
    ap.add_argument("--version", action=_VersionAction, help="print 'iommusim VERSION' and exit")
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
    add_explain_parser(sub)
    add_iommufd_parser(sub)
    add_study_parser(sub)
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
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit code;
    argparse's own usage errors exit 2 and ``--help``/``--version`` exit 0 (SystemExit)."""
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except (IommusimError, OSError) as e:
        print(f"iommusim: error: {e}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
