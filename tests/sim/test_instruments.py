"""Instruments: hooks are plain tuples, empty unless an instrument overrides them."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from iommusim.errors import ModelError
from iommusim.sim import HOOKS, Instrument, Instruments


class CacheWatcher(Instrument):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Hashable, bool]] = []

    def cache_lookup(self, cache: str, key: Hashable, hit: bool) -> None:
        self.seen.append((cache, key, hit))


class Recorder(Instrument):
    def __init__(self, log: list[str], tag: str) -> None:
        self.log = log
        self.tag = tag

    def translate_end(self, request: object, response: object) -> None:
        self.log.append(f"{self.tag}:{request}->{response}")

    def clock_advanced(self, now_ns: int) -> None:
        self.log.append(f"{self.tag}@{now_ns}")


def test_no_instruments_means_empty_hook_tuples() -> None:
    instruments = Instruments()
    assert not instruments
    for name in HOOKS:
        assert getattr(instruments, name) == ()


def test_only_overridden_hooks_are_registered() -> None:
    watcher = CacheWatcher()
    instruments = Instruments((watcher,))
    assert len(instruments.cache_lookup) == 1
    for name in HOOKS:
        if name != "cache_lookup":
            assert getattr(instruments, name) == (), name
    for hook in instruments.cache_lookup:
        hook("iotlb", (1, 0x8000), False)
    assert watcher.seen == [("iotlb", (1, 0x8000), False)]


def test_hooks_run_in_registration_order_and_remove() -> None:
    log: list[str] = []
    a, b = Recorder(log, "a"), Recorder(log, "b")
    instruments = Instruments()
    instruments.add(a)
    instruments.add(b)
    assert a in instruments
    for hook in instruments.translate_end:
        hook("req", "ok")
    instruments.remove(a)
    assert a not in instruments
    for clock_hook in instruments.clock_advanced:
        clock_hook(42)
    assert log == ["a:req->ok", "b:req->ok", "b@42"]
    instruments.remove(b)
    assert instruments.translate_end == ()
    assert len(instruments) == 0


def test_registration_errors() -> None:
    instruments = Instruments()
    watcher = CacheWatcher()
    instruments.add(watcher)
    with pytest.raises(ModelError, match="must not be registered twice"):
        instruments.add(watcher)
    with pytest.raises(ModelError, match="must be registered to be removed"):
        instruments.remove(CacheWatcher())
    with pytest.raises(ModelError, match=r"^instrument must be an Instrument, not str$"):
        instruments.add("nope")  # type: ignore[arg-type]
    assert len(instruments) == 1
