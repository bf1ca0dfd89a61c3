"""Timing helpers and result files shared by the benchmarks."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

RESULTS = Path(__file__).parent / "results"


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of ``repeat`` wall-clock timings of ``fn()``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """The median of ``repeat`` wall-clock timings of ``fn()``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "node": platform.node(),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the machine) to ``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class TimedCalls:
    """What :func:`timed_calls` measured: each call's latency (seconds, sorted), the calls
    that raised one of the tolerated errors, and when the first started and the last ended."""

    latencies: list[float]
    errors: int
    started: float
    ended: float

    @property
    def wall_s(self) -> float:
        """Seconds from the first call's start to the last one's end."""
        return self.ended - self.started

    def ms_at(self, share: float) -> float:
        """The latency below which ``share`` of the calls fell, in milliseconds."""
        return 1000 * self.latencies[int(len(self.latencies) * share)]


async def timed_calls(
    call: Callable[[T], Awaitable[object]],
    items: Sequence[T],
    concurrency: int,
    *,
    errors: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> TimedCalls:
    """``call`` each item with ``concurrency`` calls in flight, timing each; a call that raises
    one of ``errors`` is counted (and timed), any other exception propagates."""
    latencies: list[float] = []
    failed = 0
    pending = iter(items)

    async def worker() -> None:
        nonlocal failed
        for item in pending:
            started = time.perf_counter()
            try:
                await call(item)
            except errors:
                failed += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ended = time.perf_counter()
    latencies.sort()
    return TimedCalls(latencies, failed, started, ended)
