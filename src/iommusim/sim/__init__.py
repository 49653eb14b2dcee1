"""Simulation support: virtual clock, event scheduler and instrument hooks."""

from __future__ import annotations

from iommusim.sim.clock import Event, VirtualClock
from iommusim.sim.instruments import HOOKS, Instrument, Instruments

__all__ = ["HOOKS", "Event", "Instrument", "Instruments", "VirtualClock"]
