"""Study ``invalidation``: strict versus lazy DMA API invalidation, the flush queue's size and
timeout swept.

Each point runs the NIC + NVMe workload of :mod:`iommusim.perf.dma_workload` on a freshly
booted machine (the whole software stack, the RISC-V IOMMU model, the cost model's virtual
clock): map, device DMA, unmap per I/O, and stale probes by the device after the unmap. It
reports virtual time and IOMMU commands per I/O, and what lazy mode exposes: the most
unmapped IOVAs waiting in the flush queue at once (each still reachable through a stale
IOTLB entry) and how long an IOVA stays exposed (from its unmap to the flush after it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.perf.studies.sweep import Point, Row, Study

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["INVALIDATION"]

FQ_SIZES: Final = (16, 64, 256, 1024, 4096)
FQ_TIMEOUTS_NS: Final = (10_000, 100_000, 1_000_000, 10_000_000)


def _points(quick: bool) -> list[Point]:
    ops = 300 if quick else 3000
    sizes = (16, 256) if quick else FQ_SIZES
    timeouts = (100_000, 10_000_000) if quick else FQ_TIMEOUTS_NS
    pts: list[Point] = [{"mode": "strict", "fq_size": 0, "fq_timeout_ns": 0, "ops": ops}]
    pts += [
        {"mode": "lazy", "fq_size": s, "fq_timeout_ns": t, "ops": ops}
        for t in timeouts
        for s in sizes
    ]
    return pts


def _run(p: Point) -> dict[str, int | float]:
    from iommusim.perf.dma_workload import WorkloadConfig, run_workload
    from iommusim.sw.core.fq import FqOptions

    cfg = WorkloadConfig(ops=int(p["ops"]))
    if p["mode"] == "strict":
        r = run_workload("strict", cfg)
    else:
        fq = FqOptions(size=int(p["fq_size"]), timeout_ns=int(p["fq_timeout_ns"]))
        r = run_workload("lazy", cfg, fq=fq)
    ops = r.ops
    return {
        "ns_per_io": r.virtual_ns / ops,
        "commands_per_io": r.commands / ops,
        "invalidations_per_io": r.invalidations / ops,
        "iotlb_hit_rate": r.iotlb_hit_rate,
        "fq_flushes": r.fq_flushes,
        "max_stale_iovas": r.fq_max_pending,
        "max_exposure_ns": r.fq_max_exposure_ns,
        "mean_exposure_ns": r.fq_mean_exposure_ns,
        "stale_probes": r.stale_probes,
        "stale_accesses": r.stale_accesses,
        "faults": r.faults,
    }


def _summary(rows: list[Row]) -> dict[str, object]:
    strict = next(r for r in rows if r["mode"] == "strict")
    lazy = [r for r in rows if r["mode"] == "lazy"]
    best = min(lazy, key=lambda r: float(r["ns_per_io"]))
    return {
        "strict_ns_per_io": round(float(strict["ns_per_io"]), 1),
        "strict_commands_per_io": round(float(strict["commands_per_io"]), 3),
        "best_lazy": {
            "fq_size": best["fq_size"],
            "fq_timeout_ns": best["fq_timeout_ns"],
            "ns_per_io": round(float(best["ns_per_io"]), 1),
            "commands_per_io": round(float(best["commands_per_io"]), 3),
            "max_stale_iovas": best["max_stale_iovas"],
            "max_exposure_ns": best["max_exposure_ns"],
        },
        "speedup_best_lazy_over_strict": round(
            float(strict["ns_per_io"]) / float(best["ns_per_io"]), 2
        ),
        "max_stale_iovas_overall": max(int(r["max_stale_iovas"]) for r in lazy),
        "max_exposure_ns_overall": max(int(r["max_exposure_ns"]) for r in lazy),
    }


def _plot(rows: list[Row], summary: dict[str, object]) -> Figure:
    import matplotlib.pyplot as plt

    strict = next(r for r in rows if r["mode"] == "strict")
    lazy = [r for r in rows if r["mode"] == "lazy"]
    timeouts = sorted({int(r["fq_timeout_ns"]) for r in lazy})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = (
        ("ns_per_io", "virtual ns per I/O", False),
        ("commands_per_io", "IOMMU commands per I/O", True),
        ("max_stale_iovas", "max unmapped IOVAs exposed at once", True),
        ("max_exposure_ns", "max exposure of an unmapped IOVA (ns)", True),
    )
    cmap = plt.get_cmap("plasma")
    for ax, (metric, label, logy) in zip(axes.flat, panels, strict=True):
        for k, t in enumerate(timeouts):
            g = sorted((r for r in lazy if r["fq_timeout_ns"] == t), key=lambda r: r["fq_size"])
            ax.plot(
                [int(r["fq_size"]) for r in g],
                [float(r[metric]) for r in g],
                "o-",
                color=cmap(k / max(len(timeouts) - 1, 1)),
                label=f"lazy, timeout {t / 1000:g} us",
            )
        if float(strict[metric]) > 0:
            ax.axhline(float(strict[metric]), color="k", ls=":", label="strict")
        else:
            ax.set_title("strict: 0 (the unmap invalidates before it returns)", fontsize=9)
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("flush-queue size (entries)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylim(bottom=0)
    axes[0][0].legend(fontsize=8)
    ops = int(strict["ops"])
    fig.suptitle(f"Strict vs lazy invalidation: NIC + NVMe workload, {ops} I/Os per point")
    fig.tight_layout()
    return fig


INVALIDATION: Final = Study(
    name="invalidation",
    title="Strict vs lazy DMA API invalidation: cost and exposure",
    points=_points,
    run=_run,
    summary=_summary,
    plot=_plot,
)
