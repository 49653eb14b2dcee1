"""``iommusim iommufd run [--trace] -- PROGRAM [ARGS...]``: run an unmodified program against
the model's ``/dev/iommu`` (a CONFIG_IOMMUFD_TEST kernel: the mock IOMMU is there).

Prints a one-line summary to stderr (ioctls served, failures by errno) and exits with the
program's status (128 + N when a signal N killed it); ``--trace`` logs every ioctl by name
with its result to stderr. Exit 2 when the preload library cannot be built or the program
cannot be started.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_iommufd_parser"]


def cmd_iommufd_run(args: argparse.Namespace) -> int:
    from iommusim.hostproc import run_program

    argv = list(args.program)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("iommusim: error: iommufd run: no PROGRAM given", file=sys.stderr)
        return 2
    status, _ = run_program(argv, trace=sys.stderr if args.trace else None, summary=sys.stderr)
    return status


def add_iommufd_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("iommufd", help="iommufd for real programs")
    psub = p.add_subparsers(dest="icommand", required=True)
    r = psub.add_parser(
        "run",
        help="run PROGRAM with /dev/iommu served by the model (mock IOMMU kernel)",
        description="Run an unmodified, dynamically linked PROGRAM under an LD_PRELOAD "
        "library that serves /dev/iommu from the model.",
    )
    r.add_argument("--trace", action="store_true", help="log every ioctl with its result")
    r.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")
    r.set_defaults(func=cmd_iommufd_run)
