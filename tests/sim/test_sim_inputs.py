"""Workloads, failure schedules, the run-time model, forecasts and the console script."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

import pytest
from sim_builders import DAY, index
from typer.testing import CliRunner

from scheduler.core.clock import EPOCH
from scheduler.core.config import SchedulerConfig
from scheduler.core.events import (
    HeartbeatReceived,
    JobSubmitted,
    NodeRegistered,
    RanksStarted,
    TimerFired,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import Health
from scheduler.jobspec import job_spec_from_data
from scheduler.sim.cli import app, load_topology
from scheduler.sim.config import FailureModel, RunModel
from scheduler.sim.failures import (
    LLAMA3_COUNTS,
    FailureKind,
    llama3_rate_per_host_s,
    llama3_schedule,
    load_schedule,
)
from scheduler.sim.forecast import forecast
from scheduler.sim.runmodel import checkpoint_interval_s, slowdown, young_daly_interval_s
from scheduler.sim.workload import build_workload, parse_spec, trace_jobs
from topology.errors import InvalidInputError


def test_workload_spec_errors_have_a_reason() -> None:
    for bad in ("", "philly", "philly=0", "foo=1", "llm=abc", "philly=nan"):
        with pytest.raises(InvalidInputError) as err:
            parse_spec(bad)
        assert err.value.reason == "invalid_workload"
    assert parse_spec("philly=0.5, llm=0.2") == {"philly": 0.5, "llm": 0.2}


def test_trace_is_scaled_to_the_offered_load() -> None:
    for load in (0.4, 0.8):
        jobs = trace_jobs("philly", load, 4096, 30 * DAY)
        first = [j for j in jobs if j.id.startswith("philly-0-")]
        second = [j for j in jobs if j.id.startswith("philly-1-")]
        period = second[0].submit_s - first[0].submit_s
        offered = sum(j.gpus * j.work_s for j in first) / (4096 * period)
        assert offered == pytest.approx(load, rel=0.01)
        assert all(j.gpus <= 8 or j.gpus % 8 == 0 for j in jobs)
    few = trace_jobs("philly", 0.4, 512, 30 * DAY)
    many = trace_jobs("philly", 0.8, 512, 30 * DAY)
    assert all(0 <= j.submit_s < 30 * DAY for j in few + many)
    assert len(many) > 1.5 * len(few)


def test_openb_and_llm_and_hero() -> None:
    jobs = build_workload(
        "openb=0.5,llm=0.5,hero=1024", cluster_gpus=2048, horizon_s=40 * DAY, seed=1
    )
    sources = {j.source for j in jobs}
    assert sources == {"openb", "llm", "hero"}
    llm = [j for j in jobs if j.source == "llm"]
    assert all(64 <= j.gpus <= 2048 and j.spec.par.tp == 8 for j in llm)
    assert all(DAY <= j.work_s <= 21 * DAY for j in llm)
    hero = next(j for j in jobs if j.source == "hero")
    assert (hero.spec.par.tp, hero.spec.par.pp, hero.spec.par.dp) == (8, 16, 8)
    with pytest.raises(InvalidInputError):
        build_workload("hero=1000", cluster_gpus=2048, horizon_s=DAY, seed=1)


def test_llama3_schedule_matches_the_published_rate() -> None:
    idx = index(4, 8, 16)
    horizon = 200 * DAY
    events = llama3_schedule(idx, horizon, FailureModel(), seed=3)
    per_host_day = len(events) / (idx.num_hosts * 200)
    assert per_host_day == pytest.approx(419 / (2048 * 54), rel=0.15)
    kinds = {e.kind for e in events}
    assert kinds == set(FailureKind)
    software = sum(1 for e in events if e.kind is FailureKind.SOFTWARE)
    assert software / len(events) == pytest.approx(LLAMA3_COUNTS["software"] / 419, abs=0.05)
    assert llama3_schedule(idx, horizon, FailureModel(), seed=3) == events
    assert llama3_rate_per_host_s() * 2048 * 54 * DAY == pytest.approx(419)
    leaf_wide = [e for e in events if len(e.hosts) > 1]
    assert leaf_wide
    assert all(len(e.hosts) == 16 for e in leaf_wide)


def test_failure_file(tmp_path: Path) -> None:
    idx = index()
    path = tmp_path / "f.csv"
    path.write_text(
        "time_s,kind,host,repair_s\n60,hardware,h0002,3600\n10,network,leaf:"
        + idx.domain_names[1][1]
        + ",600\n"
    )
    events = load_schedule(path, idx)
    assert [e.at_s for e in events] == [10.0, 60.0]
    assert len(events[0].hosts) == 4
    assert events[1].hosts == (1,)
    path.write_text("time_s,kind,host,repair_s\n60,cosmic,h0002,3600\n")
    with pytest.raises(InvalidInputError) as err:
        load_schedule(path, idx)
    assert err.value.reason == "invalid_failures"


def test_run_model() -> None:
    model = RunModel(step_compute_ms=1000, exposure=0.5)
    assert slowdown(100.0, 100.0, model) == 1.0
    assert slowdown(300.0, 100.0, model) == pytest.approx(1.1)
    assert slowdown(50.0, 100.0, model) == 1.0
    # Young/Daly: sqrt(2 C (M + R)).
    assert young_daly_interval_s(10, 10_000, 200) == pytest.approx(math.sqrt(2 * 10 * 10_200))
    from scheduler.sim.config import CheckpointModel

    ck = CheckpointModel(save_s=10, restart_s=200, min_interval_s=60)
    rate = 1 / (2048 * 10_000)
    assert checkpoint_interval_s(2048, rate, ck) == pytest.approx(math.sqrt(2 * 10 * 10_200))
    assert checkpoint_interval_s(2048, rate, ck, given_s=900) == 900
    assert checkpoint_interval_s(1, 0.0, ck) == ck.default_interval_s


def _core_with_running_job() -> tuple[Scheduler, list[str]]:
    idx = index(1, 1, 4)
    core = Scheduler(idx, SchedulerConfig(max_placement_seconds_per_cycle=None))
    t = EPOCH
    for name in idx.host_names:
        core.handle(NodeRegistered(t, name, 8))
        core.handle(HeartbeatReceived(t, name, Health.HEALTHY))

    def spec(name: str, gpus: int, limit: int):
        return job_spec_from_data({"name": name, "gpus": gpus, "time_limit_s": limit})

    core.handle(JobSubmitted(t, "run", spec("run", 24, 3600), "u"))
    core.handle(TimerFired(t))
    alloc = core.state.jobs["run"].allocation
    assert alloc is not None
    for host in alloc.hosts:
        core.handle(RanksStarted(t, "run", host, 0))
    core.handle(JobSubmitted(t, "big", spec("big", 32, 7200), "u"))
    core.handle(JobSubmitted(t, "small", spec("small", 8, 1800), "u"))
    core.handle(JobSubmitted(t, "after", spec("after", 32, 600), "u"))
    core.handle(TimerFired(t))
    return core, ["big", "small", "after"]


def test_forecast_from_a_live_state() -> None:
    core, _queued = _core_with_running_job()
    now = EPOCH + timedelta(seconds=600)
    before = dict(core.state.jobs)
    result = forecast(core.state, now, config=core.config)
    assert core.state.jobs == before, "the live state must not change"
    # "small" took the free host already (admitted, not queued). "after" and "big" were
    # submitted at the same instant, so the core orders them by id: "after" starts when "run"
    # reaches its limit at 3600 s, and "big" when "after" reaches its own (600 s later).
    assert "small" not in result.starts
    big = result.starts["big"]
    after = result.starts["after"]
    assert big is not None
    assert after is not None
    assert (after - EPOCH).total_seconds() == pytest.approx(3600, abs=2)
    assert (big - EPOCH).total_seconds() == pytest.approx(3600 + 600, abs=4)
    with pytest.raises(InvalidInputError):
        forecast(core.state, now, horizon_s=0)


def test_topology_argument() -> None:
    idx = load_topology("fat-tree:pods=2,leaves-per-pod=2,hosts-per-leaf=4,oversubscription=4")
    assert idx.num_gpus == 128
    with pytest.raises(InvalidInputError) as err:
        load_topology("fat-tree:pods=x")
    assert err.value.reason == "invalid_topology_arg"


def test_cli_writes_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--topology",
            "fat-tree:pods=2,leaves-per-pod=2,hosts-per-leaf=4,oversubscription=4",
            "--workload",
            "philly=0.9",
            "--policy",
            "firsthop,first-fit",
            "--failures",
            "llama3",
            "--days",
            "0.5",
            "--seed",
            "3",
            "--out",
            str(out),
            "--sensitivity",
            "1.0",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    for key in ("seed", "days", "gpus", "policies", "ratios", "sensitivity"):
        assert key in report
    policy = report["policies"]["firsthop"]
    for key in (
        "jobs_submitted",
        "jobs_finished",
        "utilisation",
        "jct_mean_s",
        "jct_p50_s",
        "jct_p99_s",
        "wait_mean_s",
        "gpu_hours_lost",
        "comm_cost_mean",
        "ettr",
    ):
        assert key in policy
    assert report["seed"] == 3
    assert report["gpus"] == 128
    assert 0 < policy["utilisation"] <= 1
    for name in ("utilisation.png", "queue.png", "jct.png", "fragmentation.png", "ettr.png"):
        assert (out / name).stat().st_size > 1000
    assert "| utilisation |" in (out / "report.md").read_text()
    bad = CliRunner().invoke(app, ["run", "--topology", "fat-tree:pods=1", "--workload", "x=1"])
    assert bad.exit_code == 2
