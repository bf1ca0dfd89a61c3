"""Start-time forecasts through the real server: ``ForecastCluster``, the estimate in
``ExplainJob``, ``firsthopctl cluster forecast`` and ``firsthop explain``.

A live server with simulated agents on every host runs a job holding all 128 GPUs with a
one-hour time limit; jobs queued behind it fit only once it ends, so the forecast must put
their start at its ``started_at + time_limit_s``. Other tests check the cache (a flood of
calls runs one simulation) and that the event loop keeps answering ``GetJob`` while a
simulation runs on the forecaster's thread.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from server_builders import (
    WAIT_S,
    running_agents,
    running_server,
    small_topology,
    spec,
    stubs,
    submit,
    wait_for_state,
)
from typer.testing import CliRunner, Result

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api.spec_serde import timestamp_from_proto
from scheduler.cli.ctl import app as ctl_app
from scheduler.cli.user import app as user_app
from scheduler.client import FirsthopClient, JobState
from scheduler.core.states import JobState as CoreJobState

runner = CliRunner()
LIMIT_S = 3600
GET_DEADLINE_S = 1.0
TOLERANCE_S = 5.0
"""Cycles are simulated each second, and the runtime's clock moves between the snapshot and
the job's start report: a few seconds either way."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    """A server whose 128 GPUs are all held by ``big`` (limit one hour); ``next`` (64 GPUs)
    and ``small`` (8 GPUs, no time limit) wait behind it."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        topology = small_topology()
        async with (
            running_server(topology) as live,
            running_agents(live, topology) as _agents,
            stubs(live.address) as s,
        ):
            big = (await submit(s, spec(128, 7200, time_limit_s=LIMIT_S))).job.id
            running = await wait_for_state(s, big, {CoreJobState.RUNNING})
            box["next"] = (await submit(s, spec(64, 60, time_limit_s=600))).job.id
            box["small"] = (await submit(s, spec(8, 60))).job.id
            box["big_started"] = timestamp_from_proto(running.started_at)
            box["address"] = live.address
            box["server"] = live
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(120), "the server did not start"
    yield box
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(60)


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def _expected_start(cluster: dict[str, Any]) -> datetime:
    started: datetime = cluster["big_started"]
    return started + timedelta(seconds=LIMIT_S)


def test_the_forecast_starts_waiting_jobs_when_the_running_job_reaches_its_limit(
    cluster: dict[str, Any],
) -> None:
    with FirsthopClient(cluster["address"]) as client:
        view = client.forecast_cluster(hosts=True)
    by_id = {e.job_id: e for e in view.jobs}
    expected = _expected_start(cluster)

    assert view.waiting_jobs == 2
    assert set(by_id) == {cluster["next"], cluster["small"]}
    assert view.info.complete
    for estimate in by_id.values():
        assert estimate.start is not None
        assert abs((estimate.start - expected).total_seconds()) <= TOLERANCE_S
        assert estimate.reason == ""
    assert len(by_id[cluster["next"]].hosts) == 8
    assert len(by_id[cluster["small"]].hosts) == 1
    assert set(by_id[cluster["next"]].hosts).isdisjoint(by_id[cluster["small"]].hosts)
    assert by_id[cluster["small"]].assumed_time_limit
    assert not by_id[cluster["next"]].assumed_time_limit
    # Submitted first, "next" is first in the forecast's order (both start at the same cycle).
    assert [e.job_id for e in view.jobs] == [cluster["next"], cluster["small"]]
    assert [e.position for e in view.jobs] == [1, 2]


def test_cluster_forecast_json_keys_and_table(cluster: dict[str, Any]) -> None:
    server = cluster["address"]
    data = json.loads(
        _ok(runner.invoke(ctl_app, ["cluster", "forecast", "-o", "json", "--server", server]))
    )
    table = _ok(runner.invoke(ctl_app, ["cluster", "forecast", "--server", server]))
    filtered = json.loads(
        _ok(
            runner.invoke(
                ctl_app,
                ["cluster", "forecast", "-o", "json", "--queue", "nope", "--server", server],
            )
        )
    )

    assert set(data) == {"forecast", "jobs", "waiting_jobs", "truncated"}
    assert set(data["forecast"]) == {
        "made_at",
        "horizon_s",
        "simulated_until",
        "complete",
        "compute_s",
        "default_time_limit_s",
        "running_without_limit",
        "cached",
        "age_s",
    }
    assert set(data["jobs"][0]) == {
        "job_id",
        "user",
        "queue",
        "gpus",
        "start",
        "wait_s",
        "hosts",
        "reason",
        "assumed_time_limit",
        "position",
    }
    start = datetime.fromisoformat(data["jobs"][0]["start"])
    assert abs((start - _expected_start(cluster)).total_seconds()) <= TOLERANCE_S
    assert data["jobs"][0]["hosts"] == []  # only with --hosts
    assert data["forecast"]["default_time_limit_s"] == 24 * 3600
    assert data["forecast"]["running_without_limit"] == 0
    assert cluster["next"] in table
    assert "estimated starts" in table
    assert filtered["jobs"] == []
    assert filtered["waiting_jobs"] == 2


def test_explain_shows_the_estimated_start(cluster: dict[str, Any]) -> None:
    server = cluster["address"]
    job_id = cluster["next"]
    data = json.loads(
        _ok(runner.invoke(user_app, ["explain", job_id, "-o", "json", "--server", server]))
    )
    text = _ok(runner.invoke(user_app, ["explain", job_id, "--server", server]))
    bare = json.loads(
        _ok(
            runner.invoke(
                user_app, ["explain", job_id, "-o", "json", "--no-forecast", "--server", server]
            )
        )
    )

    start = datetime.fromisoformat(data["estimated_start"])
    assert abs((start - _expected_start(cluster)).total_seconds()) <= TOLERANCE_S
    assert data["start_estimate"]["job_id"] == job_id
    assert data["start_estimate"]["position"] == 1
    assert len(data["start_estimate"]["hosts"]) == 8
    assert data["forecast"]["complete"] is True
    assert "estimated start: " in text
    assert bare["estimated_start"] is None
    assert bare["start_estimate"] is None
    assert bare["forecast"] is None


def test_explain_of_a_running_job_has_no_estimate(cluster: dict[str, Any]) -> None:
    with FirsthopClient(cluster["address"]) as client:
        running = [j for j in client.list_jobs() if j.state is JobState.RUNNING]
        explained = client.explain_job(running[0].id)

    assert explained.start_estimate is None
    assert explained.forecast is None


async def test_a_flood_of_calls_runs_one_simulation() -> None:
    topology = small_topology()
    async with (
        running_server(topology, forecast_cache_s=60.0) as live,
        running_agents(live, topology, hosts=2),
        stubs(live.address) as s,
    ):
        await submit(s, spec(16, 600, time_limit_s=600))
        await submit(s, spec(64, 60, time_limit_s=60))
        forecaster = live.forecaster
        assert forecaster is not None
        calls = [
            s.admin.ForecastCluster(admin_pb2.ForecastClusterRequest(), timeout=WAIT_S)
            for _ in range(20)
        ]
        answers = await asyncio.gather(*calls)
        again = await s.admin.ForecastCluster(admin_pb2.ForecastClusterRequest(), timeout=WAIT_S)

    assert forecaster.runs == 1
    assert sum(not a.forecast.cached for a in answers) == 1
    assert again.forecast.cached
    assert {a.forecast.made_at.ToDatetime() for a in answers} == {
        again.forecast.made_at.ToDatetime()
    }


async def test_a_job_newer_than_the_cached_forecast_gets_a_fresh_one() -> None:
    topology = small_topology()
    async with (
        running_server(topology, forecast_cache_s=600.0) as live,
        running_agents(live, topology, hosts=2),
        stubs(live.address) as s,
    ):
        first_id = (await submit(s, spec(16, 600, time_limit_s=900))).job.id
        await wait_for_state(s, first_id, {CoreJobState.RUNNING})
        first = await s.admin.ForecastCluster(admin_pb2.ForecastClusterRequest(), timeout=WAIT_S)
        late = (await submit(s, spec(16, 60, time_limit_s=60))).job.id
        explained = await s.jobs.ExplainJob(jobs_pb2.ExplainJobRequest(job_id=late), timeout=WAIT_S)
        forecaster = live.forecaster
        assert forecaster is not None

    assert first.waiting_jobs == 0
    assert forecaster.runs == 2
    assert explained.HasField("start_estimate")
    assert explained.start_estimate.job_id == late
    assert not explained.forecast.cached


async def test_get_job_stays_fast_while_a_forecast_runs() -> None:
    """The simulation runs on the forecaster's thread: ``GetJob`` answers within a deadline
    all through it (one placement of 300 queued jobs after another)."""
    topology = small_topology()
    async with (
        running_server(topology, forecast_budget_s=60.0) as live,
        running_agents(live, topology) as _agents,
        stubs(live.address) as s,
    ):
        big = (await submit(s, spec(128, 7200, time_limit_s=3600))).job.id
        await wait_for_state(s, big, {CoreJobState.RUNNING})
        for i in range(300):
            gpus = (8, 16, 32, 64)[i % 4]
            await submit(s, spec(gpus, 60, time_limit_s=300 + 60 * (i % 7)))
        forecaster = live.forecaster
        assert forecaster is not None
        call = asyncio.ensure_future(
            s.admin.ForecastCluster(admin_pb2.ForecastClusterRequest(), timeout=WAIT_S)
        )
        deadline = time.monotonic() + WAIT_S
        while not forecaster.running:
            assert time.monotonic() < deadline, "the forecast never started"
            await asyncio.sleep(0)
        latencies: list[float] = []
        while forecaster.running:
            began = time.monotonic()
            # The deadline: a loop blocked by the simulation fails the call.
            await s.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=big), timeout=GET_DEADLINE_S)
            latencies.append(time.monotonic() - began)
        answer = await call

    assert answer.waiting_jobs == 300
    assert answer.forecast.complete
    assert len(answer.jobs) == 300
    assert all(e.HasField("start") for e in answer.jobs)
    # The forecast took a while, and GetJob kept answering all through it (the machine is
    # shared, so single calls may wait for a CPU: the median is the figure that shows the
    # loop is not held, the deadline and the maximum that it never was for long).
    assert answer.forecast.compute_s > 0.3
    assert len(latencies) >= 10
    assert statistics.median(latencies) < 0.05
    assert max(latencies) < answer.forecast.compute_s / 2
    starts = [timestamp_from_proto(e.start) for e in answer.jobs]
    assert starts == sorted(starts)
    assert min(starts) >= datetime.now(UTC) + timedelta(seconds=3000)


def test_forecast_config_is_checked(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from scheduler.config import ServerConfig

    with pytest.raises(ValidationError, match="forecast_budget_s"):
        ServerConfig(forecast_budget_s=0)


async def test_explain_answers_without_an_estimate_when_the_forecast_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topology = small_topology()
    async with (
        running_server(topology) as live,
        running_agents(live, topology, hosts=1),
        stubs(live.address) as s,
    ):
        first = (await submit(s, spec(8, 600, time_limit_s=600))).job.id
        await wait_for_state(s, first, {CoreJobState.RUNNING})
        waiting = (await submit(s, spec(8, 60, time_limit_s=60))).job.id
        forecaster = live.forecaster
        assert forecaster is not None

        async def broken(**_: object) -> object:
            raise RuntimeError("simulator bug")

        monkeypatch.setattr(forecaster, "answer", broken)
        explained = await s.jobs.ExplainJob(
            jobs_pb2.ExplainJobRequest(job_id=waiting), timeout=WAIT_S
        )

    assert explained.job.id == waiting
    assert explained.reason
    assert not explained.HasField("start_estimate")
    assert "estimated start: unavailable (the forecast failed)" in explained.details
