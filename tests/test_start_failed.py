"""A rank that fails to start carries its agent's ``start_failed`` reason and message through
the scheduler: into the job's failure record, ``firsthop status`` and ``firsthop logs``.

One host runs real processes (:class:`agents.launch.ProcessExecutor`) under an in-process
server; the job names a program that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

from server_builders import (
    WAIT_S,
    quick_options,
    running_server,
    small_topology,
    stubs,
    submit,
    wait_for_state,
)
from typer.testing import CliRunner

from agents.launch import LogPiece, ProcessExecutor, read_rank_log
from agents.session import SessionOptions
from agents.simulate import SimulatedCluster, identities
from scheduler.cli.user import app as user_app
from scheduler.core.states import JobState
from scheduler.jobspec import job_spec_from_data
from scheduler.server import SchedulerServer
from topology.model import Topology

runner = CliRunner()
MISSING = "/nonexistent/firsthop-test-program"


@contextlib.asynccontextmanager
async def process_agent(
    server: SchedulerServer, topology: Topology, log_dir: Path
) -> AsyncIterator[None]:
    """One agent that starts real processes and serves their logs from ``log_dir``."""

    def logs(job_id: str, attempt: int, rank: int, offset: int, size: int) -> LogPiece:
        return read_rank_log(log_dir, job_id, attempt, rank, offset=offset, max_bytes=size)

    def options(rng: random.Random) -> SessionOptions:
        opts = quick_options(rng)
        opts.logs = logs
        return opts

    cluster = SimulatedCluster(
        server.address, identities(topology, 1), ProcessExecutor(log_dir), options=options
    )
    stop = asyncio.Event()
    task = asyncio.create_task(cluster.run(stop))
    try:
        await asyncio.wait_for(cluster.wait_connected(), WAIT_S)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


async def test_a_missing_program_fails_the_job_with_start_failed_and_says_why(
    tmp_path: Path,
) -> None:
    topology = small_topology()
    spec = job_spec_from_data({"name": "missing", "gpus": 8, "command": [MISSING, "--x"]})
    async with (
        running_server(topology) as server,
        process_agent(server, topology, tmp_path),
        stubs(server.address) as s,
    ):
        job_id = (await submit(s, spec)).job.id
        failed = await wait_for_state(s, job_id, {JobState.FAILED})
        address = str(server.address)
        status = await asyncio.to_thread(
            runner.invoke, user_app, ["--server", address, "status", job_id, "-o", "json"]
        )
        table = await asyncio.to_thread(
            runner.invoke, user_app, ["--server", address, "status", job_id]
        )
        logs = await asyncio.to_thread(
            runner.invoke, user_app, ["--server", address, "logs", job_id]
        )

    assert failed.reason == "start_failed"
    assert failed.failures[-1].reason == "start_failed"
    assert MISSING in failed.failures[-1].message
    assert MISSING in failed.message
    assert status.exit_code == 0, status.output
    view = json.loads(status.output)
    assert view["reason"] == "start_failed"
    assert MISSING in view["failures"][-1]["message"]
    assert MISSING in table.output
    assert logs.exit_code == 0, logs.output
    assert "could not be started" in logs.stdout
    assert MISSING in logs.stdout
