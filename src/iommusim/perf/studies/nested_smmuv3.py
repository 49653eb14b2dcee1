"""Study ``nested-smmuv3``: descriptor reads per TLB miss of an Arm SMMUv3, stage 1 only,
stage 2 only and nested (stage 1 over stage 2), for the 4KB, 16KB and 64KB granules and two
input sizes per stage (so two start levels), with and without the walk cache and the TLB.

Each point builds the image of :func:`~iommusim.perf.studies.smmuv3_scene.build_smmuv3_image`
(page leaves in both stages, so every walk reaches level 3), loads the STE and CD with
CMD_PREFETCH_CONFIG (IHI 0070 4.2.1; the 64-entry configuration caches then hold them) and
replays a seeded uniform trace over ``pages`` 4 KiB pages through the batch engine. Reads and
misses are the translator's own :class:`~iommusim.hw.smmuv3.maintenance.TranslationCounts`,
the PMCG's events (IHI 0070 10.3): 0x4 translation table walk accesses (one per descriptor
read, both stages) and 0x2 TLB misses. The walk cache (``Smmuv3CacheParams.walk_entries``)
holds the stage 2 translations of the stage 1 table addresses (and of CD-table addresses);
the TLB holds the combined translations and, apart, the stage 2 translation of each output
IPA (IHI 0070 16.2 "Caching"). Like the RISC-V IOTLB the model's TLB is looked up per 4 KiB
input page whatever the leaf size, so a 16KB or 64KB leaf fills an entry per 4 KiB page used.

Next to the measured value stands the textbook count of a nested walk, ``n * (m + 1) + m``
for an ``n``-level stage 1 over an ``m``-level stage 2 (DDI 0487 D8, two-stage translation:
every stage 1 table address is an IPA; IHI 0070 3.4 "Address translation": under nesting each
of the ``n`` stage 1 descriptor addresses and the output IPA are translated by stage 2):
``n`` alone, ``m`` alone. A
concatenated stage 2 start table (DDI 0487 D8 "Concatenated translation tables") takes a
level off ``m``; ``textbook_unconcatenated`` is the count with the natural start level.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Final, cast

from iommusim.bits.arm.vmsa import GRANULES, Granule
from iommusim.hw.smmuv3.tlb import S2_ONLY
from iommusim.perf.studies.smmuv3_scene import IOVA_BASE, STREAM_ID, Stages, build_smmuv3_image
from iommusim.perf.studies.sweep import Point, Row, Study

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

__all__ = ["NESTED_SMMUV3"]

#: Per granule: the stage 1 input sizes and the stage 2 IPA sizes swept. 4KB: stage 1 from
#: level 0 (48 bits) or 1 (39), stage 2 from level 0 (48) or from two concatenated level-1
#: tables (40); 16KB: 48 bits from level 0, stage 2 from 2 concatenated level-1 tables, 36
#: bits from level 2; 64KB: 48 bits from level 1, 42 bits from level 2.
SIZES: Final[dict[Granule, tuple[tuple[int, int], tuple[int, int]]]] = {
    4: ((48, 39), (48, 40)),
    16: ((48, 36), (48, 36)),
    64: ((48, 42), (48, 42)),
}
#: Cache configurations: (label, walk cache entries, TLB entries); STE and CD caches on.
CACHES: Final = (
    ("no walk cache, no TLB", 0, 0),
    ("walk cache", 64, 0),
    ("TLB", 0, 1024),
    ("walk cache + TLB", 64, 1024),
)
#: The quick sweep: a single stage and nested at 4KB (a concatenated stage 2), nested at 64KB.
_QUICK: Final[tuple[tuple[Granule, Stages, int, int], ...]] = (
    (4, "s1", 48, 0),
    (4, "s2", 0, 40),
    (4, "nested", 48, 40),
    (64, "nested", 42, 48),
)


def _shapes() -> list[tuple[Granule, Stages, int, int]]:
    out: list[tuple[Granule, Stages, int, int]] = []
    for g, (s1_sizes, s2_sizes) in SIZES.items():
        out += [(g, "s1", a, 0) for a in s1_sizes] + [(g, "s2", 0, b) for b in s2_sizes]
        out += [(g, "nested", a, b) for a in s1_sizes for b in s2_sizes]
    return out


def _points(quick: bool) -> list[Point]:
    shapes = _QUICK if quick else _shapes()
    pages, rows = (256, 1500) if quick else (2048, 12_000)
    return [
        {"granule": g, "stages": st, "s1_bits": a, "s2_bits": b, "caches": label,
         "walk": walk, "tlb": tlb, "pages": pages, "rows": rows}
        for g, st, a, b in shapes
        for label, walk, tlb in CACHES
    ]  # fmt: skip


def _natural_levels(granule: Granule, ia_bits: int) -> int:
    """Levels of a walk of ``ia_bits`` input bits from the natural start level, without
    concatenation: each level resolves ``page_shift - 3`` bits above the page offset (DDI
    0487 D8 "Translation table walk")."""
    shift = GRANULES[granule]
    return -(-(ia_bits - shift) // (shift - 3))


def _textbook(n: int, m: int) -> int:
    return n * (m + 1) + m


def _run(p: Point) -> dict[str, int | float]:
    from iommusim.perf.engine import OUTCOMES, Smmuv3BatchEngine
    from iommusim.perf.trace import SyntheticTrace

    granule = cast(Granule, int(p["granule"]))  # both checked by the builder
    stages = cast(Stages, str(p["stages"]))
    pages = int(p["pages"])
    img = build_smmuv3_image(stages, granule, int(p["s1_bits"]), int(p["s2_bits"]), pages)
    t = img.translator(tlb_entries=int(p["tlb"]), walk_entries=int(p["walk"]))
    # IHI 0070 4.2.1 CMD_PREFETCH_CONFIG: the STE and CD (and, nested, the stage 2 walk of
    # the CD's address) are fetched before the counts start.
    t.prefetch_config(STREAM_ID, False, 0)
    before = replace(t.counts)
    trace = SyntheticTrace(
        "uniform", int(p["rows"]), pages, seed=2, device_id=STREAM_ID, base_iova=IOVA_BASE
    )
    engine = Smmuv3BatchEngine(t)
    res = engine.replay(next(trace.chunks(chunk_rows=trace.rows)))
    c = t.counts
    n_req = c.transactions - before.transactions
    misses = c.tlb_misses - before.tlb_misses
    reads = c.walk_accesses - before.walk_accesses
    n, m = img.s1_levels, img.s2_levels
    m0 = _natural_levels(granule, int(p["s2_bits"])) if m else 0
    return {
        "requests": n_req,
        "faults": int((res.outcome != OUTCOMES.index("ok")).sum()),
        "kernel_rows": engine.stats.engine_rows,
        "config_misses": c.config_misses - before.config_misses,
        "misses_per_request": misses / n_req,
        "reads_per_request": reads / n_req,
        "reads_per_miss": reads / misses if misses else 0.0,
        # What the caches hold at the end: stage 2 translations of table addresses in the
        # walk cache, and the TLB's stage 2 entries (output IPAs) beside the combined ones.
        "walk_cache_entries": len(t.walk_cache),
        "tlb_stage2_entries": sum(1 for k in t.tlb if k[1] == S2_ONLY),
        "s1_levels": n,
        "s2_levels": m,
        "textbook_walk": _textbook(n, m),
        "textbook_unconcatenated": _textbook(n, m0),
        "ideal_walk_cache": n + m,
    }


def _label(r: Row) -> str:
    st, a, b = str(r["stages"]), int(r["s1_bits"]), int(r["s2_bits"])
    if st == "s1":
        return f"S1 {a}b"
    if st == "s2":
        return f"S2 {b}b"
    return f"S1 {a}b / S2 {b}b"


def _key(r: Row) -> str:
    return f"{int(r['granule'])}K {_label(r)}"


def _tick(r: Row) -> str:
    lines = _label(r).split(" / ")
    return "\n".join([*lines, f"n={r['s1_levels']} m={r['s2_levels']}"])


def _summary(rows: list[Row]) -> dict[str, object]:
    metrics = ("reads_per_miss", "reads_per_request", "misses_per_request")
    tables: dict[str, dict[str, dict[str, float]]] = {m: {} for m in metrics}
    for r in rows:
        for m in metrics:
            tables[m].setdefault(_key(r), {})[str(r["caches"])] = round(float(r[m]), 3)
    return {
        **tables,
        "textbook_walk": {_key(r): int(r["textbook_walk"]) for r in rows},
        "textbook_unconcatenated": {_key(r): int(r["textbook_unconcatenated"]) for r in rows},
    }


def _plot(rows: list[Row], summary: dict[str, object]) -> Figure:
    import matplotlib.pyplot as plt

    granules = list(dict.fromkeys(int(r["granule"]) for r in rows))
    configs = list(dict.fromkeys(str(r["caches"]) for r in rows))
    by = {(_key(r), str(r["caches"])): r for r in rows}
    fig, axes = plt.subplots(
        len(granules), 2, figsize=(16, 3.7 * len(granules) + 0.8), squeeze=False, sharey="col"
    )
    width = 0.8 / len(configs)
    cmap = plt.get_cmap("tab10")
    legend: dict[str, Artist] = {}
    for (left, right), g in zip(axes, granules, strict=True):
        # One row per shape of this granule (the first cache configuration's).
        first = [r for r in rows if int(r["granule"]) == g and r["caches"] == configs[0]]
        xs = range(len(first))
        ticks = [_tick(r) for r in first]
        for ax, metric in ((left, "reads_per_miss"), (right, "reads_per_request")):
            for k, cfg in enumerate(configs):
                ys = [float(by[(_key(r), cfg)][metric]) for r in first]
                off = (k - (len(configs) - 1) / 2) * width
                legend[cfg] = ax.bar([x + off for x in xs], ys, width, color=cmap(k)).patches[0]
            ax.set_xticks(xs, ticks, fontsize=7.5)
            ax.grid(True, axis="y", alpha=0.3)
        (legend["n(m+1)+m"],) = left.plot(
            xs, [int(r["textbook_walk"]) for r in first], "k_", markersize=20, mew=2
        )
        # Where a concatenated stage 2 start table took a level off m.
        uncat = [
            (x, int(r["textbook_unconcatenated"]))
            for x, r in zip(xs, first, strict=True)
            if r["textbook_unconcatenated"] != r["textbook_walk"]
        ]
        if uncat:
            (legend["n(m+1)+m without concatenation"],) = left.plot(
                [x for x, _ in uncat], [v for _, v in uncat], "_", color="0.55", markersize=20,
                mew=2,
            )  # fmt: skip
        left.set_ylabel(f"{g}KB granule\ndescriptor reads per TLB miss", fontsize=9)
        right.set_ylabel("descriptor reads per request", fontsize=9)
    fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=6, fontsize=8,
               bbox_to_anchor=(0.5, 0.965))  # fmt: skip
    pages, tlb = int(rows[0]["pages"]), max(int(r["tlb"]) for r in rows)
    fig.suptitle(
        f"SMMUv3 nested translation cost: n-level stage 1 over m-level stage 2 (uniform over "
        f"{pages} 4 KiB pages; TLB {tlb} entries, walk cache 64 when on)"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


NESTED_SMMUV3: Final = Study(
    name="nested-smmuv3",
    title="SMMUv3 nested translation: descriptor reads per TLB miss per granule and stage",
    points=_points,
    run=_run,
    summary=_summary,
    plot=_plot,
)
