"""The preload library, built on first use with the system's C compiler.

``preload.c`` is compiled once per content into ``$XDG_CACHE_HOME/iommusim`` (default
``~/.cache/iommusim``; ``IOMMUSIM_CACHE`` overrides it) as ``preload-<hash>.so``; ``CC``
names the compiler (default ``cc``, then ``gcc``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from iommusim.errors import IommusimError

__all__ = ["PreloadBuildError", "cache_dir", "preload_library"]

SOURCE = Path(__file__).with_name("preload.c")


class PreloadBuildError(IommusimError):
    """The preload library cannot be built (no compiler, or it failed)."""


def cache_dir() -> Path:
    env = os.environ.get("IOMMUSIM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iommusim"


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc`` or ``gcc`` on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if Path(cc).is_file() else None)
    return shutil.which("cc") or shutil.which("gcc")


def preload_library(cache: Path | None = None) -> Path:
    """The path of the built library (built now if this source has not been)."""
    text = SOURCE.read_bytes()
    out = (cache or cache_dir()) / f"preload-{hashlib.sha256(text).hexdigest()[:16]}.so"
    if out.is_file():
        return out
    cc = compiler()
    if cc is None:
        raise PreloadBuildError(
            "no C compiler found (install gcc or set CC): iommusim builds its /dev/iommu "
            "preload library from preload.c on first use"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    cmd = [cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(SOURCE), "-ldl"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        tmp.unlink(missing_ok=True)
        raise PreloadBuildError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
    tmp.replace(out)
    return out
