"""The scheduler process's garbage collector settings (:mod:`scheduler.runtime.collector`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from scheduler.config import ServerConfig
from scheduler.runtime.collector import FULL_EVERY, restore_collector, tune_collector


class _Node:
    """A tracked object that lives for a while (like a stream's pending read)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.links: list[_Node] = []


@pytest.fixture
def full_collections() -> Iterator[list[int]]:
    """Counts full collections while the test runs (and restores the collector after)."""
    seen: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            seen.append(1)

    settings = gc.get_threshold()
    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)
        gc.unfreeze()
        gc.set_threshold(*settings)


def _promote_a_stream_of_objects(rounds: int = 40, batch: int = 10_000) -> None:
    """Each round makes ``batch`` objects that survive a few young collections, then drops
    them: the promotion pattern of thousands of agents' streams."""
    alive: list[list[_Node]] = []
    for _ in range(rounds):
        alive.append([_Node(i) for i in range(batch)])
        if len(alive) > 3:
            alive.pop(0)


def test_tuned_a_busy_process_runs_no_full_collection(
    full_collections: list[int],
) -> None:
    loaded = [_Node(i) for i in range(100_000)]  # the state loaded before serving
    gc.collect()
    _promote_a_stream_of_objects()
    untuned = len(full_collections)

    settings = tune_collector()
    full_collections.clear()
    _promote_a_stream_of_objects()
    tuned = len(full_collections)
    restore_collector(settings)

    assert untuned >= 3  # CPython's defaults: a full collection every few rounds
    assert tuned == 0  # ...tuned: none in as long
    assert len(loaded) == 100_000


def test_tuning_freezes_what_is_loaded_and_can_be_undone(full_collections: list[int]) -> None:
    before = gc.get_threshold()
    settings = tune_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (before[0], before[1], FULL_EVERY)
    restore_collector(settings)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_the_server_config_tunes_by_default_and_zero_keeps_the_defaults() -> None:
    assert ServerConfig().gc_full_every == FULL_EVERY
    assert ServerConfig(gc_full_every=0).gc_full_every == 0
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ServerConfig(gc_full_every=-1)
