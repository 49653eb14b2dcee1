"""Spec tables: bit fields, registers, multi-word layouts and their access rules."""

from __future__ import annotations

from iommusim.bits.fields import Access, Field, Layout, layout

__all__ = ["Access", "Field", "Layout", "layout"]
