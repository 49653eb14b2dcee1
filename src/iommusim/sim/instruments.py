"""Instrument hooks that cost nothing when nobody listens (after trio's instruments).

An :class:`Instrument` overrides any of the hook methods below. :class:`Instruments` keeps,
for every hook, a plain tuple of the bound methods of the instruments that override it — an
empty tuple when none does. A component calls a hook by testing that tuple first::

    hooks = self.instruments.translate_end
    if hooks:
        for hook in hooks:
            hook(request, response)

so an unobserved model pays one attribute load and one truth test per hook site, and builds no
objects. Payloads are typed ``object`` because ``sim/`` sits below every layer that defines
them; each hook documents what its callers pass.

An exception raised by an instrument propagates to the component that called the hook: the
model is deterministic, so a broken instrument should fail loudly rather than be dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final

from iommusim.errors import ModelError

__all__ = ["HOOKS", "Instrument", "Instruments"]


class Instrument:
    """Base class for instruments; override the hooks you need, leave the rest."""

    __slots__ = ()

    def translate_begin(self, request: object) -> None:
        """A translation request entered the IOMMU."""

    def translate_end(self, request: object, response: object) -> None:
        """The IOMMU produced ``response`` for ``request``."""

    def mem_access(self, kind: str, pa: int, size: int, value: int) -> None:
        """The hardware accessed memory (``kind`` is ``"r"``, ``"w"`` or ``"cas"``)."""

    def cache_lookup(self, cache: str, key: Hashable, hit: bool) -> None:
        """A lookup in the named cache (``"ddt"``, ``"pdt"``, ``"iotlb"``, ...)."""

    def fault_recorded(self, record: object) -> None:
        """A record was written to the fault queue."""

    def command_executed(self, command: object) -> None:
        """A command-queue entry completed."""

    def clock_advanced(self, now_ns: int) -> None:
        """Virtual time moved forward to ``now_ns``."""


HOOKS: Final[tuple[str, ...]] = (
    "translate_begin",
    "translate_end",
    "mem_access",
    "cache_lookup",
    "fault_recorded",
    "command_executed",
    "clock_advanced",
)


class Instruments:
    """The registered instruments, with one tuple of bound hooks per hook name."""

    __slots__ = (
        "_instruments",
        "cache_lookup",
        "clock_advanced",
        "command_executed",
        "fault_recorded",
        "mem_access",
        "translate_begin",
        "translate_end",
    )

    translate_begin: tuple[Callable[[object], None], ...]
    translate_end: tuple[Callable[[object, object], None], ...]
    mem_access: tuple[Callable[[str, int, int, int], None], ...]
    cache_lookup: tuple[Callable[[str, Hashable, bool], None], ...]
    fault_recorded: tuple[Callable[[object], None], ...]
    command_executed: tuple[Callable[[object], None], ...]
    clock_advanced: tuple[Callable[[int], None], ...]

    def __init__(self, instruments: tuple[Instrument, ...] = ()) -> None:
        self._instruments: list[Instrument] = []
        self._rebuild()
        for instrument in instruments:
            self.add(instrument)

    def __bool__(self) -> bool:
        return bool(self._instruments)

    def __len__(self) -> int:
        return len(self._instruments)

    def __contains__(self, instrument: object) -> bool:
        return any(i is instrument for i in self._instruments)

    def add(self, instrument: Instrument) -> None:
        """Register ``instrument``; its hooks run after those of earlier instruments."""
        if not isinstance(instrument, Instrument):
            raise ModelError(f"instrument must be an Instrument, not {type(instrument).__name__}")
        if instrument in self:
            raise ModelError(f"instrument {instrument!r} must not be registered twice")
        self._instruments.append(instrument)
        self._rebuild()

    def remove(self, instrument: Instrument) -> None:
        """Unregister ``instrument``."""
        for i, registered in enumerate(self._instruments):
            if registered is instrument:
                del self._instruments[i]
                self._rebuild()
                return
        raise ModelError(f"instrument {instrument!r} must be registered to be removed")

    def _rebuild(self) -> None:
        # Only methods an instrument actually overrides become hooks, so an instrument that
        # watches the IOTLB does not make every memory access pay for a no-op call.
        for name in HOOKS:
            base = getattr(Instrument, name)
            hooks = tuple(
                getattr(i, name)
                for i in self._instruments
                if getattr(type(i), name, base) is not base
            )
            object.__setattr__(self, name, hooks)
