"""Trace-driven studies (``iommusim study NAME``): sweeps, their rows, summaries and plots."""

from iommusim.perf.studies.registry import STUDIES
from iommusim.perf.studies.sweep import Point, Row, Study, run_point, run_study, write_study

__all__ = ["STUDIES", "Point", "Row", "Study", "run_point", "run_study", "write_study"]
