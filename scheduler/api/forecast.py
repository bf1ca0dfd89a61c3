"""Start-time forecasts for the API: one simulation at a time, off the event loop, reused.

:class:`Forecaster` serves ``ForecastCluster`` and the estimate in ``ExplainJob``. It takes a
:func:`~scheduler.sim.forecast.snapshot` of the live state on the event loop (list copies of
immutable records), runs :func:`~scheduler.sim.forecast.run_forecast` on its own worker thread
under a wall-clock budget, and keeps the answer for ``cache_s`` seconds. Callers that arrive
while a simulation runs wait for that one (single flight), so a flood of calls runs at most one
simulation per ``cache_s`` plus the one in flight. A job submitted after the cached forecast
was made is not in it; explaining such a job starts a fresh forecast (still one at a time).

The simulation is pure Python on a thread: it holds the GIL for most of its run, and the event
loop gets it back at the interpreter's switch interval (5 ms), which bounds the extra latency
of other requests while a forecast runs (``tests/test_forecast_api.py`` measures ``GetJob``).

The wire translation of a forecast (``StartEstimate``, ``ForecastInfo``) lives here too.

This is the one module of the API that reaches the simulator, and only its forecast module
(an import-linter contract says so). Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from firsthop.v1 import jobs_pb2
from scheduler.api.spec_serde import set_time, timestamp_to_proto
from scheduler.core.records import Job
from scheduler.core.states import JobState
from scheduler.runtime.runtime import Runtime
from scheduler.sim.forecast import (
    DEFAULT_HORIZON_S,
    WAITING_STATES,
    Forecast,
    run_forecast,
    snapshot,
)

__all__ = ["WAITING_STATES", "Answer", "Forecaster"]

BEYOND_HORIZON = "beyond_horizon"
BUDGET_EXHAUSTED = "budget_exhausted"


@dataclass(frozen=True, slots=True)
class Answer:
    """A forecast with the records of the jobs it estimated, as taken from the live state.

    Attributes:
        forecast: the simulation's result.
        jobs: waiting job id -> its record at the snapshot.
        running_without_limit: running jobs whose end was assumed (no time limit).
        made: the forecaster's monotonic clock when the simulation finished.
        positions: waiting job id -> 1-based position: by estimated start (none last), then
            in the order the simulated core admitted them, then by id.
        cached: this answer was made for an earlier call.
    """

    forecast: Forecast
    jobs: dict[str, Job]
    running_without_limit: int
    made: float
    positions: dict[str, int]
    cached: bool = False

    @classmethod
    def of(
        cls, forecast: Forecast, jobs: dict[str, Job], running_without_limit: int, made: float
    ) -> Answer:
        """An answer with its order computed (on the worker thread)."""
        starts = forecast.starts
        admitted = {job_id: i for i, job_id in enumerate(forecast.hosts)}
        order = sorted(
            starts,
            key=lambda j: (starts[j] is None, starts[j] or forecast.at, admitted.get(j, 0), j),
        )
        positions = {job_id: i for i, job_id in enumerate(order, start=1)}
        return cls(forecast, jobs, running_without_limit, made, positions)


class Forecaster:
    """Runs and caches forecasts of one runtime's live state (module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        budget_s: float = 3.0,
        cache_s: float = 5.0,
        horizon_s: float = DEFAULT_HORIZON_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self.budget_s = budget_s
        self.cache_s = cache_s
        self.horizon_s = horizon_s
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecast")
        self._latest: Answer | None = None
        self._running: asyncio.Future[Answer] | None = None
        self._running_at: datetime | None = None
        self.runs = 0
        """Simulations started (each call that found none fresh and none in flight)."""

    @property
    def running(self) -> bool:
        """Whether a simulation is in flight."""
        return self._running is not None and not self._running.done()

    async def answer(self, *, newer_than: datetime | None = None) -> Answer:
        """The latest forecast if fresh (made within ``cache_s``, and after ``newer_than``
        when given), else the one in flight, else a new one.

        Raises:
            FirsthopError: the live state cannot be simulated (as the core refuses it).
        """
        latest = self._latest
        if (
            latest is not None
            and self._clock() - latest.made < self.cache_s
            and (newer_than is None or latest.forecast.at >= newer_than)
        ):
            return _as_cached(latest)
        running = self._running
        stale = newer_than is not None and (self._running_at or newer_than) < newer_than
        fresh = running is None or stale
        if running is None or stale:
            running = self._start()
        result = await asyncio.shield(running)
        return result if fresh else _as_cached(result)

    def _start(self) -> asyncio.Future[Answer]:
        runtime = self._runtime
        core = runtime.core
        now = runtime.now()
        snap = snapshot(core.state, core.config, now, core.cache.placer)
        work = functools.partial(
            run_forecast, snap, horizon_s=self.horizon_s, budget_s=self.budget_s
        )

        def run() -> Answer:  # on the forecaster's thread
            forecast = work()
            waiting = {j.id: j for j in snap.jobs if j.state in WAITING_STATES}
            unlimited = sum(
                1 for j in snap.jobs if j.state is JobState.RUNNING and j.spec.time_limit_s is None
            )
            return Answer.of(forecast, waiting, unlimited, self._clock())

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, run)
        self.runs += 1
        self._running = future
        self._running_at = now
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: asyncio.Future[Answer]) -> None:
        if self._running is future:
            self._running = None
            self._running_at = None
        if future.cancelled() or future.exception() is not None:
            return
        answer, latest = future.result(), self._latest
        if latest is None or answer.forecast.at >= latest.forecast.at:
            self._latest = answer

    def close(self) -> None:
        """Stop taking work (a simulation in flight ends at its budget)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _as_cached(answer: Answer) -> Answer:
    return dataclasses.replace(answer, cached=True)


# ---------------------------------------------------------------- wire


def forecast_info_to_proto(answer: Answer, sent_at: datetime) -> jobs_pb2.ForecastInfo:
    """How ``answer`` was made (``ForecastInfo``)."""
    forecast = answer.forecast
    return jobs_pb2.ForecastInfo(
        made_at=timestamp_to_proto(forecast.at),
        horizon_s=forecast.horizon_s,
        simulated_until=timestamp_to_proto(forecast.simulated_until),
        complete=forecast.complete,
        compute_s=forecast.compute_s,
        default_time_limit_s=forecast.default_time_limit_s,
        running_without_limit=answer.running_without_limit,
        cached=answer.cached,
        age_s=max(0.0, (sent_at - forecast.at).total_seconds()),
    )


def start_estimate_to_proto(
    answer: Answer, job_id: str, position: int, *, hosts: bool = True
) -> jobs_pb2.StartEstimate:
    """The estimate of one waiting job of ``answer`` (``StartEstimate``)."""
    forecast = answer.forecast
    job = answer.jobs[job_id]
    start = forecast.starts.get(job_id)
    msg = jobs_pb2.StartEstimate(
        job_id=job_id,
        user=job.user,
        queue=job.spec.queue,
        gpus=job.spec.gpus,
        assumed_time_limit=job_id in forecast.assumed_limits,
        position=position,
    )
    if start is None:
        msg.reason = BEYOND_HORIZON if forecast.complete else BUDGET_EXHAUSTED
    else:
        set_time(msg, "start", start)
        msg.wait_s = max(0.0, (start - forecast.at).total_seconds())
        if hosts:
            msg.hosts.extend(forecast.hosts.get(job_id, ()))
    return msg


def estimates_to_proto(
    answer: Answer, job_ids: Iterable[str], *, hosts: bool, max_bytes: int
) -> tuple[list[jobs_pb2.StartEstimate], bool]:
    """Estimates of ``job_ids`` (waiting jobs of ``answer``), in the forecast's order, within
    ``max_bytes`` (at least one); and whether some were cut."""
    positions = answer.positions
    out: list[jobs_pb2.StartEstimate] = []
    size = 0
    for job_id in sorted(job_ids, key=lambda j: positions[j]):
        msg = start_estimate_to_proto(answer, job_id, positions[job_id], hosts=hosts)
        size += msg.ByteSize()
        if out and size > max_bytes:
            return out, True
        out.append(msg)
    return out, False
