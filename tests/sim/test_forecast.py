"""The start-time forecast on core states built by hand: time limits and their absence, jobs
caught starting, the early stop, the compute budget, the snapshot's isolation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sim_builders import index

from placement import Placement, PlacementFailure, PlacementParams, PlacementRequest, Snapshot
from placement import place as run_placer
from scheduler.core.clock import EPOCH
from scheduler.core.config import SchedulerConfig
from scheduler.core.events import (
    HeartbeatReceived,
    JobSubmitted,
    NodeDrainRequested,
    NodeRegistered,
    RanksStarted,
    TimerFired,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import Health, JobState
from scheduler.jobspec import JobSpec, job_spec_from_data
from scheduler.sim.forecast import forecast, run_forecast, snapshot
from topology.errors import InvalidInputError

HOUR = 3600.0
DEFAULT_LIMIT = 24 * 3600


def _spec(name: str, gpus: int, limit: int | None) -> JobSpec:
    data: dict[str, Any] = {"name": name, "gpus": gpus}
    if limit is not None:
        data["time_limit_s"] = limit
    return job_spec_from_data(data)


def _core(hosts: int = 4) -> Scheduler:
    idx = index(1, 1, hosts)
    core = Scheduler(idx, SchedulerConfig(max_placement_seconds_per_cycle=None))
    for name in idx.host_names:
        core.handle(NodeRegistered(EPOCH, name, 8))
        core.handle(HeartbeatReceived(EPOCH, name, Health.HEALTHY))
    return core


def _run(core: Scheduler, job_id: str, gpus: int, limit: int | None, *, start: bool = True) -> None:
    core.handle(JobSubmitted(EPOCH, job_id, _spec(job_id, gpus, limit), "u"))
    core.handle(TimerFired(EPOCH))
    job = core.state.jobs[job_id]
    assert job.allocation is not None
    if start:
        for host in job.allocation.hosts:
            core.handle(RanksStarted(EPOCH, job_id, host, 0))
        assert core.state.jobs[job_id].state is JobState.RUNNING


def _queue(core: Scheduler, job_id: str, gpus: int, limit: int | None) -> None:
    core.handle(JobSubmitted(EPOCH, job_id, _spec(job_id, gpus, limit), "u"))
    core.handle(TimerFired(EPOCH))
    assert core.state.jobs[job_id].state is JobState.PENDING


def _seconds(result_start: Any) -> float:
    assert result_start is not None
    return float((result_start - EPOCH).total_seconds())


def test_a_running_job_without_a_limit_runs_the_default() -> None:
    core = _core()
    _run(core, "open", 32, None)
    _queue(core, "next", 16, 600)

    result = forecast(core.state, EPOCH + timedelta(seconds=HOUR), config=core.config)

    assert _seconds(result.starts["next"]) == pytest.approx(DEFAULT_LIMIT, abs=2)
    assert result.assumed_limits == frozenset({"open"})
    assert result.default_time_limit_s == DEFAULT_LIMIT
    assert result.complete
    # It stopped once "next" started, long before the 30-day horizon.
    assert (result.simulated_until - EPOCH).total_seconds() == pytest.approx(DEFAULT_LIMIT, abs=2)
    assert len(result.hosts["next"]) == 2


def test_a_job_running_past_the_default_is_assumed_to_run_it_again() -> None:
    core = _core()
    _run(core, "open", 32, None)
    _queue(core, "next", 16, 600)
    now = EPOCH + timedelta(seconds=DEFAULT_LIMIT + HOUR)

    result = forecast(core.state, now, config=core.config)

    assert (result.starts["next"] - now).total_seconds() == pytest.approx(DEFAULT_LIMIT, abs=2)


def test_a_job_caught_starting_runs_its_limit_from_now() -> None:
    core = _core()
    _run(core, "starting", 32, 7200, start=False)
    assert core.state.jobs["starting"].state is JobState.ADMITTED
    _queue(core, "next", 16, 600)
    now = EPOCH + timedelta(seconds=60)

    result = forecast(core.state, now, config=core.config)

    assert (result.starts["next"] - now).total_seconds() == pytest.approx(7200, abs=2)
    assert "starting" not in result.starts


def test_a_queued_job_without_a_limit_holds_its_hosts_for_the_default() -> None:
    core = _core()
    _run(core, "run", 32, 3600)
    _queue(core, "first", 32, None)
    _queue(core, "second", 32, 60)

    result = forecast(core.state, EPOCH, config=core.config)

    assert _seconds(result.starts["first"]) == pytest.approx(3600, abs=2)
    assert _seconds(result.starts["second"]) == pytest.approx(3600 + DEFAULT_LIMIT, abs=4)
    assert result.assumed_limits == frozenset({"first"})


def test_a_job_that_fits_nowhere_has_no_start_within_the_horizon() -> None:
    core = _core()
    _run(core, "run", 8, 600)
    core.handle(NodeDrainRequested(EPOCH, core.index.host_names[-1], "repair"))
    _queue(core, "huge", 32, 60)

    result = forecast(core.state, EPOCH, config=core.config, horizon_s=7200)

    assert result.starts == {"huge": None}
    assert result.complete
    assert result.simulated_until == EPOCH + timedelta(seconds=7200)


def test_the_budget_stops_the_simulation_with_what_it_found() -> None:
    core = _core()
    _run(core, "run", 32, 3600)
    for i in range(6):
        _queue(core, f"q{i}", 32, 600)
    calls: list[str] = []

    def placer(
        snap: Snapshot, request: PlacementRequest, params: PlacementParams
    ) -> Placement | PlacementFailure:
        calls.append("place")
        return run_placer(snap, request, params)

    snap = snapshot(core.state, core.config, EPOCH, placer)
    # A clock that moves one "second" per reading; the full run takes ``readings`` of them,
    # so half as many runs out part way.
    ticks = iter(range(10**6))
    full = run_forecast(snap, clock=lambda: float(next(ticks)))
    readings = next(ticks)
    ticks = iter(range(10**6))
    cut = run_forecast(snap, budget_s=readings // 2, clock=lambda: float(next(ticks)))

    assert full.complete
    assert all(full.starts[f"q{i}"] is not None for i in range(6))
    assert not cut.complete
    started = [job for job, at in cut.starts.items() if at is not None]
    assert 0 < len(started) < 6
    for job in started:
        assert cut.starts[job] == full.starts[job]
    assert cut.simulated_until < full.simulated_until
    assert calls


def test_the_live_state_is_not_touched_and_bad_arguments_are_refused() -> None:
    core = _core()
    _run(core, "run", 32, 3600)
    _queue(core, "next", 8, 60)
    jobs, nodes = dict(core.state.jobs), dict(core.state.nodes)
    busy = core.state.busy.copy()

    forecast(core.state, EPOCH, config=core.config)

    assert core.state.jobs == jobs
    assert core.state.nodes == nodes
    assert (core.state.busy == busy).all()
    snap = snapshot(core.state, core.config, EPOCH)
    bad: list[Callable[[], object]] = [
        lambda: run_forecast(snap, horizon_s=0),
        lambda: run_forecast(snap, horizon_s=float("inf")),
        lambda: run_forecast(snap, budget_s=0),
    ]
    reasons = []
    for call in bad:
        with pytest.raises(InvalidInputError) as err:
            call()
        reasons.append(err.value.reason)
    assert reasons == ["invalid_horizon", "invalid_horizon", "invalid_budget"]
