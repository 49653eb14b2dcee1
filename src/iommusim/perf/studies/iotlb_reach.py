"""Study ``iotlb-reach``: the pcie-bench cliff -- walks per request and modelled throughput
versus the DMA working set, per IOTLB size, replacement policy and page size.

Each point replays a seeded synthetic trace of 512-byte requests over the working set's
4 KiB pages -- uniform (the pcie-bench access pattern) or zipf with s = 1, whose locality is
what tells LRU from FIFO: under uniform access no replacement policy beats another --
through the batch engine against a Sv39 single-stage image written by the software stack:
a warm-up of ``12 * max(working set, IOTLB entries) + 2000`` rows, the counters reset, then
the measured rows. Walks per request is HPM event 4 (IOTLB misses) over event 1
(untranslated requests); with warm device- and process-context caches every miss is one
first-stage walk, whose PTE loads are event 7.

Throughput model: a request moves ``size`` bytes at ``CostModel.dma_page_ns`` per 4 KiB
(about 34 GB/s with the defaults) and waits for its translation's memory reads at
``CostModel.iommu_mem_ns`` each -- a walk costs its memory reads, not overlapped with data.

Replacement: LRU, FIFO and seeded random (``CacheParams.replacement``; the engine draws
random victims from the scalar model's generator, so both evict the same entries).

IOTLB organisation (the spec leaves it open; ``CacheParams.iotlb_superpages``): three layouts
are swept -- 4 KiB pages; 2 MiB pages in an IOTLB of 4 KiB entries (a superpage fills one
entry per page touched: each walk is one load shorter, the reach is unchanged); and 2 MiB
pages in an IOTLB whose entries cover a whole superpage (the reach grows 512-fold, which is
what moves pcie-bench's cliff out with huge pages).
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING, Final

from iommusim.hw.riscv.params import CacheParams, Replacement
from iommusim.perf.studies.scene import (
    DEVICE_ID,
    IOVA_BASE,
    PAGE,
    DeviceImage,
    build_image,
    read_counters,
    reset_counters,
)
from iommusim.perf.studies.sweep import Point, Row, Study
from iommusim.platform.costs import CostModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["IOTLB_REACH", "knee"]

ENTRIES: Final = (16, 64, 256, 1024, 4096)
POLICIES: Final[tuple[Replacement, ...]] = ("lru", "fifo", "random")
#: (label, page bytes, superpage IOTLB entries) of each swept layout.
LAYOUTS: Final = (
    ("4 KiB pages", PAGE, False),
    ("2 MiB pages, 4 KiB IOTLB entries", 2 << 20, False),
    ("2 MiB pages, superpage IOTLB entries", 2 << 20, True),
)
PATTERNS: Final = ("uniform", "zipf")
REQUEST_BYTES: Final = 512
#: Walks per request above which a working set is past the knee.
KNEE_WALKS: Final = 0.1


def _working_sets(lo: int, hi: int) -> list[int]:
    """Powers of two from ``lo`` to ``hi`` pages with a step of sqrt(2) between them."""
    out = []
    k = 2 * int(math.log2(lo))
    while round(2 ** (k / 2)) <= hi:
        out.append(round(2 ** (k / 2)))
        k += 1
    return out


def _points(quick: bool) -> list[Point]:
    entries = (16, 64) if quick else ENTRIES
    sets = _working_sets(4, 256) if quick else _working_sets(4, 65536)
    rows = 4000 if quick else 60_000
    return [
        {
            "pattern": pattern,
            "page_bytes": page,
            "iotlb_superpages": int(sp),
            "policy": policy,
            "iotlb_entries": e,
            "working_set_pages": ws,
            "image_pages": sets[-1],
            "rows": rows,
        }
        for pattern in PATTERNS
        for _, page, sp in LAYOUTS
        for policy in POLICIES
        for e in entries
        for ws in sets
    ]


@cache
def _image(page_bytes: int, pages: int) -> DeviceImage:
    return build_image("sv39", None, pages, page_bytes=page_bytes)


def _run(p: Point) -> dict[str, int | float]:
    from iommusim.perf.engine import BatchEngine
    from iommusim.perf.trace import SyntheticTrace

    ws, entries = int(p["working_set_pages"]), int(p["iotlb_entries"])
    img = _image(int(p["page_bytes"]), int(p["image_pages"]))
    policy = next(r for r in POLICIES if r == p["policy"])
    caches = CacheParams(
        iotlb_entries=entries, replacement=policy, iotlb_superpages=bool(p["iotlb_superpages"])
    )
    iommu = img.iommu(caches)
    engine = BatchEngine(iommu)
    # Long enough that every page of a set within reach is touched (coupon collector).
    warm = 12 * max(ws, entries) + 2000
    trace = SyntheticTrace(
        "zipf" if p["pattern"] == "zipf" else "uniform",
        warm + int(p["rows"]),
        ws,
        seed=1,
        device_id=DEVICE_ID,
        pasid=img.pasid,
        base_iova=IOVA_BASE,
        size=REQUEST_BYTES,
    )
    rows = next(trace.chunks(chunk_rows=trace.rows))
    engine.replay(rows[:warm])
    reset_counters(iommu)
    res = engine.replay(rows[warm:])
    c = read_counters(iommu)
    n = c[1]
    loads = c[5] + c[6] + c[7] + c[8]
    costs = CostModel()
    ns = REQUEST_BYTES * costs.dma_page_ns / PAGE + loads / n * costs.iommu_mem_ns
    return {
        "requests": n,
        "faults": int((res.cause != 0).sum()),
        "walks_per_request": c[4] / n,
        "pte_loads_per_walk": c[7] / c[4] if c[4] else 0.0,
        "loads_per_request": loads / n,
        "ns_per_request": ns,
        "throughput_gbps": REQUEST_BYTES * 8 / ns,
    }


def knee(rows: list[Row], threshold: float = KNEE_WALKS) -> float | None:
    """The working set (4 KiB pages) where walks per request first exceed ``threshold``,
    interpolated log-linearly between the two sweep points around it; ``None`` if never."""
    pts = sorted((int(r["working_set_pages"]), float(r["walks_per_request"])) for r in rows)
    prev: tuple[int, float] | None = None
    for ws, w in pts:
        if w > threshold:
            if prev is None:
                return float(ws)
            (w0, y0), (w1, y1) = prev, (ws, w)
            t = (threshold - y0) / (y1 - y0)
            return 2 ** (math.log2(w0) + t * (math.log2(w1) - math.log2(w0)))
        prev = (ws, w)
    return None


#: (pattern, layout index in :data:`LAYOUTS`, policy, IOTLB entries).
_Key = tuple[str, int, str, int]


def _layout(r: Row) -> int:
    return next(
        i
        for i, (_, page, sp) in enumerate(LAYOUTS)
        if page == int(r["page_bytes"]) and sp == bool(int(r["iotlb_superpages"]))
    )


def _groups(rows: list[Row]) -> dict[_Key, list[Row]]:
    out: dict[_Key, list[Row]] = {}
    for r in rows:
        key = (str(r["pattern"]), _layout(r), str(r["policy"]), int(r["iotlb_entries"]))
        out.setdefault(key, []).append(r)
    return out


def _summary(rows: list[Row]) -> dict[str, object]:
    knees = []
    for (pattern, layout, policy, entries), group in sorted(_groups(rows).items()):
        k = knee(group)
        top = max(group, key=lambda r: int(r["working_set_pages"]))
        _, page, sp = LAYOUTS[layout]
        knees.append(
            {
                "pattern": pattern,
                "page_bytes": page,
                "iotlb_superpages": int(sp),
                "policy": policy,
                "iotlb_entries": entries,
                "reach_bytes": entries * (page if sp else PAGE),
                "knee_pages": None if k is None else round(k, 1),
                "knee_bytes": None if k is None else round(k * PAGE),
                "knee_over_entries": None if k is None else round(k / entries, 3),
                "hit_throughput_gbps": round(
                    float(min(group, key=lambda r: int(r["working_set_pages"]))["throughput_gbps"]),
                    2,
                ),
                "largest_set_throughput_gbps": round(float(top["throughput_gbps"]), 2),
            }
        )
    return {"knee_threshold_walks_per_request": KNEE_WALKS, "knees": knees}


def _plot(rows: list[Row], summary: dict[str, object]) -> Figure:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(LAYOUTS), figsize=(17, 11), sharex=True)
    groups = _groups(rows)
    entries = sorted({k[3] for k in groups})
    cmap = plt.get_cmap("viridis")
    panels = (
        ("uniform", "walks_per_request", "walks per request", "IOTLB misses (walks) per request"),
        ("uniform", "throughput_gbps", "Gb/s", f"modelled throughput, {REQUEST_BYTES} B requests"),
        ("zipf", "walks_per_request", "walks per request", "zipf(1) access: LRU, FIFO, random"),
    )
    for col, (name, _, _) in enumerate(LAYOUTS):
        for row, (pattern, metric, unit, what) in enumerate(panels):
            ax = axes[row][col]
            for key in sorted(k for k in groups if k[0] == pattern and k[1] == col):
                _, _, policy, e = key
                g = sorted(groups[key], key=lambda r: int(r["working_set_pages"]))
                x = [int(r["working_set_pages"]) * PAGE / (1 << 20) for r in g]
                color = cmap(entries.index(e) / max(len(entries) - 1, 1))
                style = {"lru": "-", "fifo": "--"}.get(str(policy), ":")
                label = f"{e} entries, {policy.upper()}"
                ax.plot(x, [float(r[metric]) for r in g], style, color=color, label=label)
            ax.set_title(f"Sv39, {name}, {pattern}:\n{what}", fontsize=9)
            ax.set_ylabel(unit)
            ax.set_xscale("log", base=2)
            ax.grid(True, which="both", alpha=0.3)
        axes[-1][col].set_xlabel("DMA working set (MiB of 4 KiB buffers)")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle("IOTLB reach: the cliff once the working set exceeds what the entries map")
    fig.tight_layout()
    return fig


IOTLB_REACH: Final = Study(
    name="iotlb-reach",
    title="IOTLB reach: walks per request and throughput versus working set",
    points=_points,
    run=_run,
    summary=_summary,
    plot=_plot,
)
