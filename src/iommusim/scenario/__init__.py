"""TOML scenarios: a machine, the kernel's options and a workload, in one versioned file."""

from iommusim.scenario.loader import Scenario, load_scenario, parse_scenario

__all__ = ["Scenario", "load_scenario", "parse_scenario"]
