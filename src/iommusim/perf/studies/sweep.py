"""Running a study: its sweep points serially, on local processes or on Ray, and its files.

A :class:`Study` is data: the points it sweeps (``quick`` for tests), a function of one point
that returns a dict of numbers, a summary of all rows and a plot. :func:`run_study` maps the
point function over the points -- in this process, on a :class:`ProcessPoolExecutor`
(``jobs``) or as Ray tasks (``ray_address``) -- with a rich progress bar, and returns the rows
in point order, so every way of running gives the same rows. :func:`write_study` writes
``NAME.csv``, ``NAME.json`` and ``NAME.png`` into a directory.

Point functions are deterministic (seeded traces, virtual time), so the rows do not depend on
which process ran a point.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iommusim.errors import InvalidArgument, IommusimError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Point", "Row", "Study", "run_point", "run_study", "write_study"]

#: One sweep point: parameter name -> value.
Point = Mapping[str, int | float | str]
#: One result row: the point's parameters and the measured numbers.
Row = dict[str, int | float | str]


@dataclass(frozen=True, slots=True)
class Study:
    """A named sweep. ``points(quick)`` lists the sweep; ``run(point)`` measures one point
    (its result is merged into the point to make a row); ``summary(rows)`` derives the
    headline figures; ``plot(rows, summary)`` draws the figure."""

    name: str
    title: str
    points: Callable[[bool], list[Point]]
    run: Callable[[Point], dict[str, int | float]]
    summary: Callable[[list[Row]], dict[str, object]]
    plot: Callable[[list[Row], dict[str, object]], Figure]


def _registry() -> dict[str, Study]:
    from iommusim.perf.studies.registry import STUDIES

    return STUDIES


def run_point(name: str, point: Point) -> Row:
    """The row of ``point`` of study ``name`` (module level, so workers can import it)."""
    study = _registry()[name]
    row: Row = dict(point)
    row.update(study.run(point))
    return row


def _serial(name: str, points: Sequence[Point]) -> Iterator[tuple[int, Row]]:
    for i, p in enumerate(points):
        yield i, run_point(name, p)


def _processes(name: str, points: Sequence[Point], jobs: int) -> Iterator[tuple[int, Row]]:
    import multiprocessing
    from concurrent.futures import as_completed

    # spawn, not fork: the parent may run threads (numba, rich's progress refresh), and a
    # forked child of a threaded process can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_point, name, p): i for i, p in enumerate(points)}
        for f in as_completed(futures):
            yield futures[f], f.result()


def _ray(name: str, points: Sequence[Point], address: str) -> Iterator[tuple[int, Row]]:
    try:
        import ray
    except ImportError:
        raise IommusimError(
            "--ray needs the optional dependency ray: pip install 'iommusim[ray]'"
        ) from None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    task = ray.remote(run_point)
    pending = {task.remote(name, p): i for i, p in enumerate(points)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            yield pending.pop(ref), ray.get(ref)


def run_study(
    name: str,
    *,
    quick: bool = False,
    jobs: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
) -> tuple[list[Row], dict[str, object]]:
    """Run every point of study ``name``; returns the rows (in point order) and the summary.

    ``jobs`` > 1 runs the points on that many local processes; ``ray_address`` runs them as
    Ray tasks on the cluster at that address (``"local"`` starts one; a Ray already
    initialised in this process is used as it is).
    """
    studies = _registry()
    if name not in studies:
        raise InvalidArgument(f"study must be one of {', '.join(studies)}, not {name!r}")
    if jobs < 1:
        raise InvalidArgument(f"--jobs must be >= 1, not {jobs}")
    study = studies[name]
    points = study.points(quick)
    if ray_address is not None:
        results = _ray(name, points, ray_address)
    elif jobs > 1:
        results = _processes(name, points, jobs)
    else:
        results = _serial(name, points)
    rows: list[Row | None] = [None] * len(points)
    if progress:
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task = bar.add_task(f"study {name}", total=len(points))
            for i, row in results:
                rows[i] = row
                bar.advance(task)
    else:
        for i, row in results:
            rows[i] = row
    done = [r for r in rows if r is not None]
    return done, study.summary(done)


def write_study(name: str, rows: list[Row], summary: dict[str, object], out: Path) -> list[Path]:
    """Write ``NAME.csv`` (one row per point), ``NAME.json`` (rows and summary) and
    ``NAME.png`` into ``out``; returns the paths."""
    try:
        import matplotlib
    except ImportError:
        raise IommusimError(
            "iommusim study needs matplotlib for its plots: pip install 'iommusim[plot]'"
        ) from None
    matplotlib.use("Agg")
    study = _registry()[name]
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, png_path = (out / f"{name}.{ext}" for ext in ("csv", "json", "png"))
    fieldnames: list[str] = []
    for r in rows:
        fieldnames += [k for k in r if k not in fieldnames]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    doc = {"study": name, "title": study.title, "summary": summary, "rows": rows}
    json_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    fig = study.plot(rows, summary)
    fig.savefig(png_path, dpi=110, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return [csv_path, json_path, png_path]
