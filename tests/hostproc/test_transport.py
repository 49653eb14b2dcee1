"""The transport end to end: a C program compiled here opens /dev/iommu under the preload
library, allocates an IOAS, maps a buffer, checks the errno of bad calls, dups and closes;
and the ``iommusim iommufd run`` command around it. Skipped when no C compiler exists."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from iommusim.cli.main import main
from iommusim.hostproc.build import PreloadBuildError, compiler, preload_library
from iommusim.hostproc.run import exit_status, run_program

CC = compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc) to build the preload")
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("iommusim-cache")


@pytest.fixture(scope="module")
def library(cache: Path) -> Path:
    return preload_library(cache)


@pytest.fixture(scope="module")
def check_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert CC is not None
    out = tmp_path_factory.mktemp("prog") / "iommufd_check"
    subprocess.run([CC, "-O1", "-o", str(out), str(HERE / "iommufd_check.c")], check=True)
    return out


@needs_cc
def test_a_c_program_gets_the_models_dev_iommu(library: Path, check_program: Path) -> None:
    trace, summary = io.StringIO(), io.StringIO()
    status, stats = run_program([str(check_program)], trace, summary, library)
    assert status == 0
    assert stats.ioctls == 7
    assert stats.errors == {"EEXIST": 1, "ENOENT": 1, "EINVAL": 1}
    lines = [line.split("] ", 1)[1] for line in trace.getvalue().splitlines()]
    assert lines[:4] == [
        "IOMMU_IOAS_ALLOC = 0",
        "IOMMU_IOAS_MAP = 0",
        "IOMMU_IOAS_MAP = -1 EEXIST",
        "IOMMU_DESTROY = -1 ENOENT",
    ]
    assert "read(iommufd) = -1 EINVAL" in lines
    assert summary.getvalue().startswith("iommusim: 7 ioctls served, 3 failed: EEXIST 1")


@needs_cc
def test_the_command_exits_with_the_programs_status(
    library: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IOMMUSIM_CACHE", str(cache))
    assert main(["iommufd", "run", "--", "sh", "-c", "exit 3"]) == 3
    assert capsys.readouterr().err.strip() == "iommusim: 0 ioctls served, 0 failed"


@needs_cc
def test_a_program_that_cannot_start_is_bad_input(
    library: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IOMMUSIM_CACHE", str(cache))
    assert main(["iommufd", "run", "--", str(tmp_path / "missing")]) == 2


def test_no_program_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iommufd", "run", "--"]) == 2
    assert "no PROGRAM" in capsys.readouterr().err


def test_without_a_compiler_the_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(PreloadBuildError, match="no C compiler found"):
        preload_library(tmp_path)


def test_a_signal_is_128_plus_its_number() -> None:
    assert exit_status(-9) == 137
    assert exit_status(4) == 4
