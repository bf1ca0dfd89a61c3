"""Helpers for tests of the gRPC server: a real server in-process on port 0, simulated agents,
typed stubs, and waits on streams (never sleeps).

``running_server`` starts :func:`scheduler.server.build_server` on ``127.0.0.1:0`` with a
memory store (or the store given) and a fast tick; ``running_agents`` starts simulated agents
for the first hosts of its topology. Waits go through ``WatchJob`` streams with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from agents.ranks import RankExecutor, SimulatedExecutor
from agents.session import SessionOptions
from agents.simulate import SimulatedCluster, identities
from agents.timing import Backoff
from firsthop.v1 import admin_pb2_grpc, agent_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from scheduler.api.spec_serde import job_spec_to_proto, job_state_to_proto
from scheduler.config import ServerConfig
from scheduler.core.states import JobState
from scheduler.jobspec import JobSpec, job_spec_from_data
from scheduler.server import SchedulerServer, build_server
from scheduler.store.memory import MemoryStore
from scheduler.store.protocol import Store
from topology.generators import fat_tree
from topology.model import Topology

WAIT_S = 20.0
"""Longest any test waits for a state (a generous bound; waits end as soon as it is met)."""


def small_topology(pods: int = 2, leaves: int = 2, hosts: int = 4, gpus: int = 8) -> Topology:
    """A fat tree of ``pods * leaves * hosts`` hosts (16 by default, 128 GPUs)."""
    return Topology.from_spec(fat_tree(pods, leaves, hosts, gpus_per_host=gpus))


def spec(gpus: int, duration_s: float | None = None, **fields: Any) -> JobSpec:
    """A job spec; ``duration_s`` sets the simulated run time of its ranks."""
    data: dict[str, Any] = {"name": "job", "gpus": gpus, "command": ["train"], **fields}
    if duration_s is not None:
        data["env"] = {**data.get("env", {}), "FIRSTHOP_SIM_DURATION_S": str(duration_s)}
    return job_spec_from_data(data)


def fast_config(**fields: Any) -> ServerConfig:
    """A server config for tests: port 0, memory store, fast ticks and heartbeats."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "db_url": "memory://",
        "tick_interval_s": 0.05,
        "heartbeat_interval_s": 0.2,
        "heartbeat_timeout_s": 10.0,
        "stop_grace_s": 2.0,
        "shutdown_grace_s": 1.0,
    }
    values.update(fields)
    return ServerConfig(**values)


@contextlib.asynccontextmanager
async def running_server(
    topology: Topology | None = None,
    *,
    store: Store | None = None,
    **config: Any,
) -> AsyncIterator[SchedulerServer]:
    """A started server on a free port; stopped (and its store closed) on exit."""
    server = build_server(
        fast_config(**config), topology=topology or small_topology(), store=store or MemoryStore()
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.5)


def quick_options(rng: random.Random) -> SessionOptions:
    """Agent session options for tests: short backoff."""
    return SessionOptions(rng=rng, backoff=Backoff(initial_s=0.02, max_s=0.2, rng=rng))


@contextlib.asynccontextmanager
async def running_agents(
    server: SchedulerServer,
    topology: Topology,
    hosts: int | None = None,
    executor: RankExecutor | None = None,
) -> AsyncIterator[SimulatedCluster]:
    """Simulated agents for the first ``hosts`` hosts, connected before the body runs."""
    cluster = SimulatedCluster(
        server.address,
        identities(topology, hosts),
        executor or SimulatedExecutor(default_duration_s=30.0),
        options=quick_options,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(cluster.run(stop))
    try:
        await asyncio.wait_for(cluster.wait_connected(), WAIT_S)
        yield cluster
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


@dataclass
class Stubs:
    """Typed stubs over one asyncio channel."""

    channel: grpc.aio.Channel
    jobs: jobs_pb2_grpc.JobServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    agent: agent_pb2_grpc.AgentServiceStub


@contextlib.asynccontextmanager
async def stubs(address: str) -> AsyncIterator[Stubs]:
    """Stubs for a server; the channel is closed on exit."""
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Stubs(
            channel,
            jobs_pb2_grpc.JobServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            agent_pb2_grpc.AgentServiceStub(channel),
        )
    finally:
        await channel.close(None)


async def submit(
    s: Stubs, job: JobSpec, *, submission_id: str = "", user: str = ""
) -> jobs_pb2.SubmitJobResponse:
    """Submit a spec."""
    request = jobs_pb2.SubmitJobRequest(
        spec=job_spec_to_proto(job), submission_id=submission_id, user=user
    )
    response: jobs_pb2.SubmitJobResponse = await s.jobs.SubmitJob(request, timeout=WAIT_S)
    return response


async def wait_for_state(
    s: Stubs, job_id: str, states: Collection[JobState], timeout: float = WAIT_S
) -> jobs_pb2.Job:
    """Follow ``WatchJob`` until the job is in one of ``states``; the job then."""
    wanted = {job_state_to_proto(state) for state in states}

    async def follow() -> jobs_pb2.Job:
        call = s.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id))
        try:
            async for response in call:
                if response.job.state in wanted:
                    return response.job
        finally:
            call.cancel()
        raise AssertionError(f"job {job_id} ended without reaching {sorted(states)}")

    return await asyncio.wait_for(follow(), timeout)


def reason_of(exc: grpc.aio.AioRpcError) -> str:
    """The ``firsthop-reason`` trailing metadata of a failed call."""
    for key, value in exc.trailing_metadata() or ():
        if key == "firsthop-reason":
            return str(value)
    return ""


@dataclass
class Live:
    """A running server, its simulated agents and stubs to it."""

    server: SchedulerServer
    agents: SimulatedCluster
    s: Stubs


@contextlib.asynccontextmanager
async def live_cluster(topology: Topology, hosts: int | None = None) -> AsyncIterator[Live]:
    """:func:`running_server` with :func:`running_agents` and :func:`stubs` in one."""
    async with (
        running_server(topology) as server,
        running_agents(server, topology, hosts) as agents,
        stubs(server.address) as s,
    ):
        yield Live(server, agents, s)
