"""``iommusim study NAME --out DIR [--jobs N] [--ray ADDRESS] [--quick] [--json]``: run a
trace-driven study and write ``NAME.png``, ``NAME.csv`` and ``NAME.json`` into DIR."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["STUDY_NAMES", "add_study_parser", "cmd_study"]

#: The study names, spelled here so ``--help`` does not import the studies.
STUDY_NAMES = ("iotlb-reach", "invalidation", "nested", "nested-smmuv3", "ats")


def cmd_study(args: argparse.Namespace) -> int:
    from iommusim.perf.studies import run_study, write_study

    rows, summary = run_study(
        args.name,
        quick=args.quick,
        jobs=args.jobs,
        ray_address=args.ray,
        progress=not args.json,
    )
    paths = write_study(args.name, rows, summary, Path(args.out))
    if args.json:
        doc = {"study": args.name, "files": [str(p) for p in paths], "summary": summary}
        print(json.dumps(doc, indent=1))
    else:
        for p in paths:
            print(f"wrote {p}")
    return 0


def add_study_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "study",
        help="run a trace-driven study; write its plot (PNG) and data (CSV, JSON)",
        description="Sweep a study's points (serially, on local processes with --jobs, or "
        "on a Ray cluster with --ray) and write NAME.png, NAME.csv and NAME.json into --out.",
    )
    s.add_argument("name", choices=STUDY_NAMES, help="the study")
    s.add_argument("--out", required=True, metavar="DIR", help="directory for the files")
    s.add_argument("--jobs", type=int, default=1, metavar="N", help="local worker processes")
    s.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="run the sweep as Ray tasks on the cluster at ADDRESS ('auto', 'local', "
        "'ray://host:port'; needs the [ray] extra)",
    )
    s.add_argument("--quick", action="store_true", help="a small sweep (seconds; for tests)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=cmd_study)
