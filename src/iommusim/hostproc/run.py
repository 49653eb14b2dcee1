"""``iommusim iommufd run``: a program under the preload library, served by a :class:`Server`.

The program runs as a child with ``LD_PRELOAD`` (the library first, the caller's own after)
and ``IOMMUSIM_SOCKET`` (the server's socket, in a private temporary directory); the server
serves in this process until the child exits -- its descendants (forked test cases) share
the server while they live.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from iommusim.hostproc.build import preload_library
from iommusim.hostproc.server import Server, Stats

__all__ = ["exit_status", "run_program"]


def exit_status(returncode: int) -> int:
    """A shell's ``$?`` for a child's return code (128 + N when killed by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def run_program(
    argv: Sequence[str],
    trace: TextIO | None = None,
    summary: TextIO | None = sys.stderr,
    library: Path | None = None,
) -> tuple[int, Stats]:
    """Run ``argv`` against the model's ``/dev/iommu``; returns (exit status, stats).
    ``trace`` gets a line per ioctl; ``summary`` the one-line summary."""
    lib = library or preload_library()
    with tempfile.TemporaryDirectory(prefix="iommusim-") as tmp:
        path = os.path.join(tmp, "iommu.sock")
        log = None if trace is None else (lambda line: print(line, file=trace, flush=True))
        server = Server(path, log)
        env = dict(os.environ)
        env["IOMMUSIM_SOCKET"] = path
        env["LD_PRELOAD"] = " ".join(x for x in (str(lib), env.get("LD_PRELOAD", "")) if x)
        try:
            child = subprocess.Popen(list(argv), env=env)
        except OSError:
            server.close()
            raise
        pidfd = os.pidfd_open(child.pid)
        server.register(pidfd, selectors.EVENT_READ)
        try:
            while child.poll() is None:
                server.serve_once(None)
            server.unregister(pidfd)
            # Serve what the program left in flight (its last closes) until nothing is ready.
            while server.serve_once(0):
                continue
        except BaseException:
            child.kill()
            child.wait()
            raise
        finally:
            os.close(pidfd)
            server.close()
    if summary is not None:
        print(server.stats.summary(), file=summary, flush=True)
    return exit_status(child.returncode), server.stats
