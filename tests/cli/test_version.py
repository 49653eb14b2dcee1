"""``iommusim --version`` and ``python -m iommusim``: the same command line, the same exit
codes."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import iommusim
from iommusim.cli import main as cli_main
from iommusim.cli.main import main, version


def test_version_is_the_installed_distribution_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"iommusim {importlib.metadata.version('iommusim')}\n"


def test_version_falls_back_to_the_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """From a source tree that is not installed there is no distribution metadata."""

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    monkeypatch.setattr(iommusim, "__version__", "9.8.7")
    assert version() == "9.8.7"


def test_package_version_matches_the_metadata() -> None:
    assert iommusim.__version__ == importlib.metadata.version("iommusim")


def test_python_m_iommusim_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "iommusim", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"iommusim {version()}\n"


def test_python_m_iommusim_exit_codes() -> None:
    """Bad input exits 2 with the one-line error, as the installed command does."""
    proc = subprocess.run(
        [sys.executable, "-m", "iommusim", "explain", "--memory", "/nonexistent/d.bin@0x1000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "iommusim: error: --memory /nonexistent/d.bin@0x1000: no such file\n"
    proc = subprocess.run(
        [sys.executable, "-m", "iommusim"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2  # argparse: a command is required
    assert "usage: iommusim" in proc.stderr


def test_main_module_calls_the_cli_main() -> None:
    import iommusim.__main__ as entry

    assert entry.main is cli_main.main
