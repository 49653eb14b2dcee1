"""Study ``ats``: the device's ATC size versus ATS Translation Requests and page-request round
trips in the SVA scene.

Each point runs the correct-device scene of :mod:`iommusim.perf.sva_workload` (an
accelerator with ATS and PRI bound to a process's lazily mapped buffer: a first pass that
pages everything in by Page Requests, a second pass, munmap of half with probes, mprotect)
with an ATC of ``atc_entries`` (LRU, one 4 KiB page per entry, :mod:`iommusim.platform.atc`).
Translation Requests are the device's ATS requests; page-request round trips the Page
Request Groups that got a response; their latency is virtual time from the group leaving the
device to its response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iommusim.perf.studies.sweep import Point, Row, Study

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ATS"]

ATC_ENTRIES: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BUFFER_PAGES: Final = (64, 256)


def _points(quick: bool) -> list[Point]:
    sizes = (1, 4, 16, 64) if quick else ATC_ENTRIES
    buffers = (16,) if quick else BUFFER_PAGES
    return [{"buffer_pages": b, "atc_entries": e} for b in buffers for e in sizes]


def _run(p: Point) -> dict[str, int | float]:
    from iommusim.perf.sva_workload import SvaConfig, run_sva_run

    pages = int(p["buffer_pages"])
    r = run_sva_run(SvaConfig(buffer_bytes=pages * 4096, atc_entries=int(p["atc_entries"])))
    lookups = r.atc_hits + r.atc_misses
    return {
        "translation_requests": r.ats_requests,
        "translation_requests_per_page": r.ats_requests / pages,
        "atc_hit_rate": r.atc_hits / lookups if lookups else 0.0,
        "pass2_atc_misses": r.pass2_atc_misses,
        "page_requests": r.page_requests,
        "prgs": r.prgs,
        "round_trips": r.round_trips,
        "round_trip_mean_ns": r.round_trip_mean_ns,
        "round_trip_max_ns": r.round_trip_max_ns,
        "virtual_ns": r.virtual_ns,
        "data_ok": int(r.device_data_ok and r.cpu_data_ok and r.pass2_data_ok),
        "stale_accesses": r.stale_accesses,
    }


def _summary(rows: list[Row]) -> dict[str, object]:
    out: dict[str, object] = {}
    for b in sorted({int(r["buffer_pages"]) for r in rows}):
        g = sorted((r for r in rows if r["buffer_pages"] == b), key=lambda r: r["atc_entries"])
        out[f"buffer_{b}_pages"] = {
            "translation_requests": {int(r["atc_entries"]): r["translation_requests"] for r in g},
            "round_trips": {int(r["atc_entries"]): r["round_trips"] for r in g},
            "virtual_us": {int(r["atc_entries"]): round(int(r["virtual_ns"]) / 1000, 1) for r in g},
        }
    return out


def _plot(rows: list[Row], summary: dict[str, object]) -> Figure:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (
        ("translation_requests_per_page", "ATS Translation Requests per buffer page"),
        ("round_trips", "page-request round trips (PRGs answered)"),
        ("virtual_ns", "virtual time of the scene (ns)"),
    )
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for b in sorted({int(r["buffer_pages"]) for r in rows}):
            g = sorted((r for r in rows if r["buffer_pages"] == b), key=lambda r: r["atc_entries"])
            ax.plot(
                [int(r["atc_entries"]) for r in g],
                [float(r[metric]) for r in g],
                "o-",
                label=f"buffer {b} pages ({b * 4} KiB)",
            )
            ax.axvline(b, color="gray", ls=":", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("device ATC entries")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("ATS: ATC size in the SVA scene (dotted: ATC = buffer)")
    fig.tight_layout()
    return fig


ATS: Final = Study(
    name="ats",
    title="ATS: device ATC size versus translation requests and page-request round trips",
    points=_points,
    run=_run,
    summary=_summary,
    plot=_plot,
)
