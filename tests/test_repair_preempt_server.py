"""A running server repairs a job by preempting a lower-priority job in the failed host's leaf:
the in-process server with simulated agents; one host's agent starts reporting FAILED."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from server_builders import (
    WAIT_S,
    Stubs,
    quick_options,
    running_server,
    small_topology,
    spec,
    stubs,
    submit,
    wait_for_state,
)

from agents.ranks import SimulatedExecutor
from agents.session import SessionOptions
from agents.simulate import SimulatedCluster, identities
from firsthop.v1 import jobs_pb2
from scheduler.api.spec_serde import job_state_to_proto
from scheduler.core.states import Health, JobState

J = JobState
CKPT = {"dir": "/ckpt", "interval_s": 60}


RUNNING = job_state_to_proto(J.RUNNING)


async def _until(s: Stubs, job_id: str, done: Callable[[jobs_pb2.Job], bool]) -> jobs_pb2.Job:
    """Follow ``WatchJob`` until ``done`` holds for the job (with a deadline)."""

    async def follow() -> jobs_pb2.Job:
        call = s.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id))
        try:
            async for response in call:
                if done(response.job):
                    return response.job
        finally:
            call.cancel()
        raise AssertionError(f"job {job_id} ended before the condition held")

    return await asyncio.wait_for(follow(), WAIT_S)


def _hosts(job: jobs_pb2.Job) -> list[str]:
    """The job's hosts in rank order (from its rank table)."""
    return list(dict.fromkeys(slot.host for slot in job.allocation.ranks))


async def test_a_failed_host_is_replaced_by_a_preempted_lower_priority_jobs_host() -> None:
    topology = small_topology(1, 2, 4)  # two leaves of four hosts
    index = topology.index
    verdicts: dict[str, tuple[Health, str]] = {}
    hosts = iter(index.host_names)

    def options(rng: random.Random) -> SessionOptions:
        host = next(hosts)  # sessions are built in host order
        opts = quick_options(rng)
        opts.health = lambda: verdicts.get(host, (Health.HEALTHY, ""))
        return opts

    def leaf(name: str) -> int:
        return int(index.ancestors[index.host_ids[name], 1])

    async with running_server(topology) as server, stubs(server.address) as s:
        cluster = SimulatedCluster(
            server.address,
            identities(topology),
            SimulatedExecutor(default_duration_s=600.0),
            options=options,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(cluster.run(stop))
        try:
            await asyncio.wait_for(cluster.wait_connected(), WAIT_S)
            big = (await submit(s, spec(24, checkpoint=CKPT, priority=5, max_restarts=3))).job.id
            big_hosts = _hosts(await wait_for_state(s, big, [J.RUNNING]))
            blocker = (await submit(s, spec(16, priority=5))).job.id
            await wait_for_state(s, blocker, [J.RUNNING])
            low = (await submit(s, spec(8, checkpoint=CKPT))).job.id
            running_low = await wait_for_state(s, low, [J.RUNNING])
            (low_host,) = _hosts(running_low)
            assert {leaf(x) for x in big_hosts} == {leaf(low_host)}, "setup: one crowded leaf"

            failed = big_hosts[1]
            verdicts[failed] = (Health.FAILED, "test: ecc")
            back = await _until(s, big, lambda j: j.restarts == 1 and j.state == RUNNING)
            victim = await _until(s, low, lambda j: len(j.failures) == 1)
            assert victim.failures[0].reason == "preempted"
            assert set(_hosts(back)) == {*big_hosts, low_host} - {failed}
            (repair,) = back.repairs
            assert list(repair.moves) == [f"{failed}->{low_host}"]
            assert repair.method == "partial"
            assert back.restarts == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, WAIT_S)
