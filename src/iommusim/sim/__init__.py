"""Simulation support: virtual clock and event scheduler."""

from __future__ import annotations

from iommusim.sim.clock import Event, VirtualClock

__all__ = ["Event", "VirtualClock"]
