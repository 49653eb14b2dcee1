"""Without numba the batch engines (RISC-V IOMMU, SMMUv3) still answer every row, through the
scalar model, and say so once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
TESTS = Path(__file__).resolve().parents[1]

PROGRAM = """
import sys
sys.modules["numba"] = None  # import numba now raises ImportError
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import importlib.util
spec = importlib.util.spec_from_file_location("scene", sys.argv[2] + "/perf/test_engine.py")
scene = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scene)
import numpy as np
from iommusim.hw.riscv.params import CacheParams
from iommusim.perf.engine import JIT_AVAILABLE, BatchEngine
from iommusim.perf.trace import FLAG_READ, empty
image = scene.Image(False, [0xD7] * 4, True, CacheParams())
engine = BatchEngine(image.iommu)
BatchEngine(image.iommu)
rows = empty(8)
rows["device_id"] = 5
rows["pasid"] = -1
rows["iova"] = scene.VA + (np.arange(8) % 4) * 4096
rows["flags"] = FLAG_READ
rows["size"] = 8
print(JIT_AVAILABLE, engine.replay(rows).pa.tolist(), engine.stats.scalar_rows)
"""


SMMUV3_PROGRAM = """
import sys
sys.modules["numba"] = None  # import numba now raises ImportError
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from iommusim.perf.engine import JIT_AVAILABLE, Smmuv3BatchEngine
from iommusim.perf.trace import FLAG_READ, empty
from iommusim.sw.prot import IOMMU_READ
from testsupport.smmuv3_scene import Scene
scene = Scene()
table = scene.s1()
table.map(0x1000_0000, 0x8000_0000, 4 * 4096, IOMMU_READ)
scene.stream_s1(3, table)
engine = Smmuv3BatchEngine(scene.t)
Smmuv3BatchEngine(scene.t)
rows = empty(8)
rows["device_id"] = 3
rows["pasid"] = -1
rows["iova"] = [0x1000_0000 + (i % 4) * 4096 for i in range(8)]
rows["flags"] = FLAG_READ
print(JIT_AVAILABLE, engine.replay(rows).pa.tolist(), engine.stats.scalar_rows)
"""


@pytest.mark.parametrize("program", [PROGRAM, SMMUV3_PROGRAM], ids=["riscv", "smmuv3"])
def test_without_numba_every_row_runs_through_the_scalar_model(program: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", program, str(SRC), str(TESTS)],
        capture_output=True,
        text=True,
        check=True,
    )
    pas = [0x8000_0000 + (i % 4) * 4096 for i in range(8)]
    assert run.stdout.split("\n")[0] == f"False {pas} 8"
    assert run.stderr.count("numba is not importable") == 1
