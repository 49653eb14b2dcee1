"""Bit-accurate hardware models. Nothing here imports ``sw`` or ``platform``."""
