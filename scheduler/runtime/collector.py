"""The garbage collector of a long-running scheduler process: full collections made rare.

CPython's cyclic collector scans every tracked object in a full (generation 2) collection,
and starts one whenever the objects promoted to generation 2 since the last one reach a
quarter of those already there. A scheduler serving thousands of agents keeps about a million
objects alive (each ``Connect`` stream holds a chain of coroutines, async generators, tasks
and futures) and promotes tens of thousands a second (a stream's pending read or write lives
for seconds, long enough to survive the young generations). Measured with 8,192 simulated
agents on the 2-core benchmark machine: a full collection every 2-3 s, about 0.8 s each,
half of the scheduler's CPU; the event loop stalled behind them, heartbeats were read late
and live nodes were marked LOST.

:func:`tune_collector`, called once the server has loaded its state and before it serves:

- **freezes** what exists then (topology, indexes, the core's state, modules) into the
  permanent generation, which no collection scans again;
- runs a full collection only every :data:`FULL_EVERY` collections of generation 1 instead
  of every 10 (the young generations keep their defaults, so short-lived garbage goes as
  soon as before). Reference counting frees everything without cycles at once; only cyclic
  garbage waits longer (minutes at the agents' message rate), and a full collection, when it
  comes, is the same pause as before.

The process calls it (the server's command line, ``ServerConfig.gc_full_every``, 0: not at
all), never a library: tests that run servers in-process keep the interpreter's defaults.

Must not import grpc, generated protos, ``scheduler.api`` or ``scheduler.store``.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Final

FULL_EVERY: Final = 1000
"""Collections of generation 1 between two full collections (CPython's default: 10)."""


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """The collector's thresholds before :func:`tune_collector` (to restore them)."""

    thresholds: tuple[int, int, int]


def tune_collector(full_every: int = FULL_EVERY) -> CollectorSettings:
    """Freeze the objects alive now and make full collections ``full_every`` times rarer than
    collections of generation 1 (see the module docstring); the settings it replaced."""
    before = CollectorSettings(gc.get_threshold())
    young, middle, _ = before.thresholds
    gc.collect()  # garbage of the start-up is not frozen with the live objects
    gc.freeze()
    gc.set_threshold(young, middle, full_every)
    return before


def restore_collector(settings: CollectorSettings) -> None:
    """Undo :func:`tune_collector`: the old thresholds, nothing frozen."""
    gc.unfreeze()
    gc.set_threshold(*settings.thresholds)
