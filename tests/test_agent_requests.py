"""Questions the scheduler asks one agent, through the real server and agent sessions in-process:
the deep health check that gates a drained node's return, and reading a rank's log.

Agents are simulated sessions whose deep check and log reader are injected; the log test runs
real rank processes (:class:`~agents.launch.ProcessExecutor`). Waits follow ``WatchJob``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from server_builders import (
    WAIT_S,
    Stubs,
    quick_options,
    reason_of,
    running_server,
    small_topology,
    spec,
    stubs,
    submit,
    wait_for_state,
)

from agents.launch import LogPiece, ProcessExecutor, read_rank_log
from agents.ranks import RankExecutor, SimulatedExecutor
from agents.session import SessionOptions
from agents.simulate import SimulatedCluster, identities
from agents.wire import HealthCheckOutcome
from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.core.states import JobState
from scheduler.server import SchedulerServer
from topology.model import Topology


@contextlib.asynccontextmanager
async def agents_with(
    server: SchedulerServer,
    topology: Topology,
    hosts: int,
    options: Callable[[random.Random], SessionOptions],
    executor: RankExecutor | None = None,
) -> AsyncIterator[tuple[SimulatedCluster, asyncio.Event]]:
    cluster = SimulatedCluster(
        server.address,
        identities(topology, hosts),
        executor or SimulatedExecutor(default_duration_s=30.0),
        options=options,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(cluster.run(stop))
    try:
        await asyncio.wait_for(cluster.wait_connected(), WAIT_S)
        yield cluster, stop
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


async def _resume(s: Stubs, name: str, *, skip: bool = False) -> admin_pb2.ResumeNodeResponse:
    request = admin_pb2.ResumeNodeRequest(name=name, reason="checked", skip_health_check=skip)
    response: admin_pb2.ResumeNodeResponse = await s.admin.ResumeNode(request, timeout=WAIT_S)
    return response


async def _state(s: Stubs, name: str) -> int:
    node = (await s.admin.GetNode(admin_pb2.GetNodeRequest(name=name))).node
    return int(node.state)


async def test_a_drained_node_returns_only_when_its_deep_check_passes() -> None:
    topology = small_topology()
    verdict = {"passed": False}
    checks: list[str] = []

    async def check() -> HealthCheckOutcome:
        checks.append("ran")
        word = "passed" if verdict["passed"] else "failed: memory_pattern (GPU 3)"
        return HealthCheckOutcome(verdict["passed"], word, '{"device": "cuda"}')

    def options(rng: random.Random) -> SessionOptions:
        opts = quick_options(rng)
        opts.health_check = check
        return opts

    async with (
        running_server(topology) as server,
        agents_with(server, topology, 2, options),
        stubs(server.address) as s,
    ):
        await s.admin.DrainNode(admin_pb2.DrainNodeRequest(name="h0001", reason="xid 79"))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _resume(s, "h0001")
        still = await _state(s, "h0001")
        verdict["passed"] = True
        resumed = await _resume(s, "h0001")
        await s.admin.DrainNode(admin_pb2.DrainNodeRequest(name="h0002", reason="trust me"))
        skipped = await _resume(s, "h0002", skip=True)
        await s.admin.DrainNode(admin_pb2.DrainNodeRequest(name="h0002", reason="busy"))

    assert failed.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(failed.value) == "health_check_failed"
    assert "memory_pattern (GPU 3)" in (failed.value.details() or "")
    assert still == admin_pb2.NODE_STATE_DRAINED
    assert resumed.node.state == admin_pb2.NODE_STATE_READY
    assert resumed.HasField("health_check")
    assert resumed.health_check.passed
    assert resumed.health_check.report_json == '{"device": "cuda"}'
    assert skipped.node.state == admin_pb2.NODE_STATE_READY
    assert not skipped.HasField("health_check")
    assert len(checks) == 2


async def test_a_drained_node_without_its_agent_cannot_be_checked_or_returned() -> None:
    topology = small_topology()
    async with running_server(topology) as server, stubs(server.address) as s:
        async with agents_with(server, topology, 2, quick_options):
            await s.admin.DrainNode(admin_pb2.DrainNodeRequest(name="h0002", reason="x"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _resume(s, "h0002")
        state = await _state(s, "h0002")

    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason_of(refused.value) == "node_not_connected"
    assert state == admin_pb2.NODE_STATE_DRAINED


HELLO = "import os, sys; print('hello from rank', os.environ['RANK']); sys.stdout.flush()"


async def test_a_rank_log_is_read_from_the_agent_of_its_host(tmp_path: Path) -> None:
    topology = small_topology()

    def options(rng: random.Random) -> SessionOptions:
        opts = quick_options(rng)

        def logs(job: str, attempt: int, rank: int, offset: int, size: int) -> LogPiece:
            return read_rank_log(tmp_path, job, attempt, rank, offset=offset, max_bytes=size)

        opts.logs = logs
        return opts

    async with (
        running_server(topology) as server,
        agents_with(server, topology, 2, options, ProcessExecutor(tmp_path)),
        stubs(server.address) as s,
    ):
        never = await submit(s, spec(64))  # needs 8 hosts: it never runs
        job_id = (
            await submit(s, spec(16, command=[sys.executable, "-c", HELLO], max_restarts=0))
        ).job.id
        done = await wait_for_state(s, job_id, {JobState.SUCCEEDED, JobState.FAILED})

        async def read(rank: int, offset: int = 0) -> jobs_pb2.GetJobLogsResponse:
            request = jobs_pb2.GetJobLogsRequest(job_id=job_id, rank=rank, offset=offset)
            response: jobs_pb2.GetJobLogsResponse = await s.jobs.GetJobLogs(request)
            return response

        nine = await read(9)
        tail = await read(9, -3)
        errors = {}
        for name, request in {
            "unknown_rank": jobs_pb2.GetJobLogsRequest(job_id=job_id, rank=99),
            "never_ran": jobs_pb2.GetJobLogsRequest(job_id=never.job.id, rank=0),
        }.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.jobs.GetJobLogs(request)
            errors[name] = reason_of(info.value)

    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED
    hosts = {slot.rank: slot.host for slot in done.last_allocation.ranks}
    assert nine.host == hosts[9]
    assert nine.attempt == 0
    assert nine.data == b"hello from rank 9\n"
    assert nine.size == len(nine.data)
    assert (tail.offset, tail.data) == (nine.size - 3, b" 9\n")
    assert errors == {"unknown_rank": "unknown_rank", "never_ran": "no_log"}
