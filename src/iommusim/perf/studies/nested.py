"""Study ``nested``: memory accesses per IOTLB miss, single stage versus two stage, for every
RISC-V mode pair (Sv39/48/57 x Bare/Sv39x4/48x4/57x4, and G-stage only), with and without
the process-context cache (PDTC) and the IOTLB.

Each point builds the image of :func:`~iommusim.perf.studies.scene.build_image` for its mode
pair (4 KiB leaves in both stages, so every walk is full depth; a PD8 process directory
whenever there is a first stage, in guest memory under a G-stage), warms the device-context
cache, and replays a seeded uniform trace over ``pages`` pages through the batch engine
(rows it cannot answer -- every PDT walk when the PDTC is off -- through the scalar model).
Accesses are the IOMMU's own counts of table-entry loads (riscv-iommu: "Standard Events
list": 5 DDT, 6 PDT, 7 first-stage and 8 G-stage walks, one per entry loaded), misses its
event 4. The textbook count of a two-stage walk, ``n * (m + 1) + m`` for an ``n``-level
first stage over an ``m``-level G-stage, is reported next to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.hw.riscv.params import CacheParams
from iommusim.perf.studies.scene import DEVICE_ID, IOVA_BASE, build_image, read_counters
from iommusim.perf.studies.sweep import Point, Row, Study

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["NESTED"]

FIRST: Final = ("sv39", "sv48", "sv57")
GSTAGE: Final = ("sv39x4", "sv48x4", "sv57x4")
LEVELS: Final = {"bare": 0, "sv39": 3, "sv48": 4, "sv57": 5, "sv39x4": 3, "sv48x4": 4, "sv57x4": 5}
#: Cache configurations: (label, PDTC entries, IOTLB entries); the DDTC is always on.
CACHES: Final = (
    ("no PDTC, no IOTLB", 0, 0),
    ("PDTC", 64, 0),
    ("IOTLB", 0, 1024),
    ("PDTC + IOTLB", 64, 1024),
)


def _pairs() -> list[tuple[str, str]]:
    pairs = [(f, "bare") for f in FIRST] + [("bare", g) for g in GSTAGE]
    return pairs + [(f, g) for f in FIRST for g in GSTAGE]


def _points(quick: bool) -> list[Point]:
    pairs = [("sv39", "bare"), ("bare", "sv39x4"), ("sv39", "sv39x4")] if quick else _pairs()
    pages, rows = (256, 1500) if quick else (2048, 12_000)
    return [
        {"first": f, "gstage": g, "caches": label, "pdtc": pdtc, "iotlb": iotlb,
         "pages": pages, "rows": rows}
        for f, g in pairs
        for label, pdtc, iotlb in CACHES
    ]  # fmt: skip


def _run(p: Point) -> dict[str, int | float]:
    from iommusim.perf.engine import BatchEngine
    from iommusim.perf.trace import SyntheticTrace

    first = None if p["first"] == "bare" else str(p["first"])
    gstage = None if p["gstage"] == "bare" else str(p["gstage"])
    pages = int(p["pages"])
    img = build_image(first, gstage, pages)
    iommu = img.iommu(CacheParams(pdtc_entries=int(p["pdtc"]), iotlb_entries=int(p["iotlb"])))
    trace = SyntheticTrace(
        "uniform", int(p["rows"]), pages, seed=2, device_id=DEVICE_ID, pasid=img.pasid,
        base_iova=IOVA_BASE,
    )  # fmt: skip
    res = BatchEngine(iommu).replay(next(trace.chunks(chunk_rows=trace.rows)))
    c = read_counters(iommu)
    n, misses = c[1], c[4]
    loads = c[6] + c[7] + c[8]  # the DDT walk of the first request is left out
    n_lv, m_lv = LEVELS[str(p["first"])], LEVELS[str(p["gstage"])]
    return {
        "requests": n,
        "faults": int((res.cause != 0).sum()),
        "misses_per_request": misses / n,
        "accesses_per_request": loads / n,
        "accesses_per_miss": loads / misses if misses else 0.0,
        "pdt_per_miss": c[6] / misses if misses else 0.0,
        "first_stage_per_miss": c[7] / misses if misses else 0.0,
        "gstage_per_miss": c[8] / misses if misses else 0.0,
        "textbook_walk": n_lv * (m_lv + 1) + m_lv,
    }


def _label(r: Row) -> str:
    f, g = str(r["first"]), str(r["gstage"])
    return f"{f}+{g}" if "bare" not in (f, g) else (f if g == "bare" else g)


def _summary(rows: list[Row]) -> dict[str, object]:
    table: dict[str, dict[str, float]] = {}
    for r in rows:
        table.setdefault(_label(r), {})[str(r["caches"])] = round(float(r["accesses_per_miss"]), 3)
    textbook = {_label(r): int(r["textbook_walk"]) for r in rows}
    return {"accesses_per_miss": table, "textbook_walk": textbook}


def _plot(rows: list[Row], summary: dict[str, object]) -> Figure:
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(_label(r) for r in rows))
    configs = list(dict.fromkeys(str(r["caches"]) for r in rows))
    by = {(_label(r), str(r["caches"])): r for r in rows}
    fig, axes = plt.subplots(2, 1, figsize=(13, 8), sharex=True)
    width = 0.8 / len(configs)
    cmap = plt.get_cmap("tab10")
    for ax, metric, unit in (
        (axes[0], "accesses_per_miss", "table-entry loads per IOTLB miss"),
        (axes[1], "accesses_per_request", "table-entry loads per request"),
    ):
        for k, cfg in enumerate(configs):
            xs = [i + (k - (len(configs) - 1) / 2) * width for i in range(len(labels))]
            ys = [float(by[(lab, cfg)][metric]) for lab in labels]
            ax.bar(xs, ys, width, label=cfg, color=cmap(k))
        ax.set_ylabel(unit)
        ax.grid(True, axis="y", alpha=0.3)
    textbook = [int(by[(lab, configs[0])]["textbook_walk"]) for lab in labels]
    axes[0].plot(range(len(labels)), textbook, "k_", markersize=18, label="n(m+1)+m")
    axes[0].legend(fontsize=8, ncol=5)
    axes[1].set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    pages = int(rows[0]["pages"])
    fig.suptitle(
        f"Nested translation cost (uniform over {pages} pages; IOTLB 1024 entries when on)"
    )
    fig.tight_layout()
    return fig


NESTED: Final = Study(
    name="nested",
    title="Nested translation: memory accesses per miss for every RISC-V mode pair",
    points=_points,
    run=_run,
    summary=_summary,
    plot=_plot,
)
