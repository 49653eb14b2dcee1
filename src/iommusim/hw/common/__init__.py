"""Pieces shared by the hardware models."""
