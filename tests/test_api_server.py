"""gRPC integration tests: the real server in-process on port 0, with simulated agents.

Every wait is on a ``WatchJob`` stream or an event with a timeout; no test sleeps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import generate_latest
from server_builders import (
    WAIT_S,
    Stubs,
    live_cluster,
    reason_of,
    running_server,
    small_topology,
    spec,
    stubs,
    submit,
    wait_for_state,
)

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api import auth
from scheduler.api.job_pages import LIST_CHUNK
from scheduler.api.jobs_servicer import JobServicer
from scheduler.api.spec_serde import job_spec_to_proto
from scheduler.core.states import JobState
from scheduler.store.memory import MemoryStore

J = JobState


async def test_a_job_runs_to_success_on_simulated_agents() -> None:
    topology = small_topology()
    async with live_cluster(topology) as live:
        s = live.s
        response = await submit(s, spec(16, 0.2, parallelism={"tp": 8, "dp": 2}))
        assert response.created
        job_id = response.job.id
        assert response.job.state == jobs_pb2.JOB_STATE_PENDING

        running = await wait_for_state(s, job_id, [J.RUNNING])
        done = await wait_for_state(s, job_id, [J.SUCCEEDED, J.FAILED])

    assert len(running.allocation.hosts) == 2
    assert sorted(r.rank for r in running.allocation.ranks) == list(range(16))
    assert running.hosts_running == len(running.allocation.hosts)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert done.HasField("finished_at")


async def test_watch_streams_every_state_in_order_and_ends() -> None:
    topology = small_topology()
    async with live_cluster(topology) as live:
        s = live.s
        job_id = (await submit(s, spec(8, 0.1))).job.id
        states = [
            r.job.state async for r in s.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id))
        ]

    names = [jobs_pb2.JobState.Name(state) for state in states]
    assert names[-1] == "JOB_STATE_SUCCEEDED"
    order = [
        "JOB_STATE_PENDING",
        "JOB_STATE_ADMITTED",
        "JOB_STATE_STARTING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_SUCCEEDED",
    ]
    seen = list(dict.fromkeys(names))
    assert seen == [n for n in order if n in seen]
    assert "JOB_STATE_RUNNING" in seen


async def test_cancel_stops_the_running_ranks() -> None:
    topology = small_topology()
    async with live_cluster(topology) as live:
        server, s = live.server, live.s
        agents = live.agents
        job_id = (await submit(s, spec(8, 600))).job.id
        running = await wait_for_state(s, job_id, [J.RUNNING])
        host = running.allocation.hosts[0]
        session = next(a for a in agents.sessions if a.identity.host == host)
        assert session.supervisor.running()

        cancelled = await s.jobs.CancelJob(
            jobs_pb2.CancelJobRequest(job_id=job_id, reason="test"), timeout=WAIT_S
        )
        assert cancelled.job.state == jobs_pb2.JOB_STATE_CANCELLED
        # The stop command reaches the agent; the ranks exit and the GPUs come back.
        while True:
            status = await s.admin.GetClusterStatus(admin_pb2.GetClusterStatusRequest())
            if status.status.gpus_fenced == 0 and not session.supervisor.running():
                break
            await asyncio.wait_for(server.runtime.next_tick(), WAIT_S)

    assert cancelled.job.message == "test"


async def test_submission_ids_make_submit_idempotent() -> None:
    async with running_server() as server, stubs(server.address) as s:
        first = await submit(s, spec(8), submission_id="abc", user="ann")
        again = await submit(s, spec(8), submission_id="abc", user="ann")
        other_user = await submit(s, spec(8), submission_id="abc", user="bob")

    assert first.created
    assert not again.created
    assert again.job.id == first.job.id
    assert other_user.created
    assert other_user.job.id != first.job.id


async def _job_count(s: Stubs) -> int:
    listing = await s.jobs.ListJobs(jobs_pb2.ListJobsRequest(), timeout=WAIT_S)
    return listing.total_size


async def _expect_error(call: object, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() is code
    assert reason_of(info.value) == reason
    details = info.value.details() or ""
    assert details.startswith(f"{reason}: ")
    return details


async def test_bad_inputs_get_stable_reasons_and_change_nothing() -> None:
    topology = small_topology()
    async with running_server(topology) as server, stubs(server.address) as s:
        await submit(s, spec(8), submission_id="dup")
        before = await _job_count(s)
        nodes_before = await s.admin.ListNodes(admin_pb2.ListNodesRequest())

        malformed = job_spec_to_proto(spec(8))
        malformed.gpus = 0
        await _expect_error(
            s.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=malformed)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_job_spec",
        )
        mismatch = job_spec_to_proto(spec(16, parallelism={"tp": 8, "dp": 2}))
        mismatch.gpus = 24
        await _expect_error(
            s.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=mismatch)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parallelism_mismatch",
        )
        too_large = await _expect_error(
            submit(s, spec(129 * 8)), grpc.StatusCode.INVALID_ARGUMENT, "job_too_large"
        )
        await _expect_error(
            submit(s, spec(8, queue="nope")), grpc.StatusCode.NOT_FOUND, "unknown_queue"
        )
        await _expect_error(
            submit(s, spec(16), submission_id="dup"),
            grpc.StatusCode.ALREADY_EXISTS,
            "duplicate_submission_id",
        )
        for call in (
            s.jobs.GetJob(jobs_pb2.GetJobRequest(job_id="j-missing")),
            s.jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id="j-missing")),
            s.jobs.ExplainJob(jobs_pb2.ExplainJobRequest(job_id="j-missing")),
        ):
            await _expect_error(call, grpc.StatusCode.NOT_FOUND, "unknown_job")
        stream = s.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id="j-missing"))
        with pytest.raises(grpc.aio.AioRpcError) as watch_error:
            async for _ in stream:
                pass
        for call in (
            s.admin.GetNode(admin_pb2.GetNodeRequest(name="nope")),
            s.admin.DrainNode(admin_pb2.DrainNodeRequest(name="nope", reason="x")),
            s.admin.ResumeNode(admin_pb2.ResumeNodeRequest(name="nope")),
        ):
            await _expect_error(call, grpc.StatusCode.NOT_FOUND, "unknown_node")
        await _expect_error(
            s.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_token="garbage!")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_page_token",
        )
        await _expect_error(
            s.admin.SetQueue(admin_pb2.SetQueueRequest(queue=admin_pb2.Queue(name="a b"))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_queue",
        )

        after = await _job_count(s)
        nodes_after = await s.admin.ListNodes(admin_pb2.ListNodesRequest())
        queues = await s.admin.ListQueues(admin_pb2.ListQueuesRequest())

    assert "1032 GPUs" in too_large
    assert watch_error.value.code() is grpc.StatusCode.NOT_FOUND
    assert reason_of(watch_error.value) == "unknown_job"
    assert after == before == 1
    assert nodes_after == nodes_before
    assert [q.queue.name for q in queues.queues] == ["default"]


async def test_list_jobs_filters_and_pages() -> None:
    async with running_server() as server, stubs(server.address) as s:
        ids = [(await submit(s, spec(8, queue="default"))).job.id for _ in range(7)]
        await s.jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=ids[0]))
        pages: list[str] = []
        token = ""
        while True:
            page = await s.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_size=3, page_token=token))
            pages.append(",".join(j.id for j in page.jobs))
            assert page.total_size == 7
            token = page.next_page_token
            if not token:
                break
        cancelled = await s.jobs.ListJobs(
            jobs_pb2.ListJobsRequest(states=[jobs_pb2.JOB_STATE_CANCELLED])
        )

    assert ",".join(pages).split(",") == ids
    assert len(pages) == 3
    assert [j.id for j in cancelled.jobs] == [ids[0]]


async def test_queues_drain_resume_and_cluster_status() -> None:
    topology = small_topology()
    async with live_cluster(topology, hosts=4) as live:
        s = live.s
        queue = admin_pb2.Queue(name="train", priority=5, gpu_quota=64, weight=2.0)
        stored = await s.admin.SetQueue(admin_pb2.SetQueueRequest(queue=queue))
        queues = await s.admin.ListQueues(admin_pb2.ListQueuesRequest())
        drained = await s.admin.DrainNode(
            admin_pb2.DrainNodeRequest(name="h0001", reason="firmware")
        )
        status = (await s.admin.GetClusterStatus(admin_pb2.GetClusterStatusRequest())).status
        resumed = await s.admin.ResumeNode(admin_pb2.ResumeNodeRequest(name="h0001"))
        node = (await s.admin.GetNode(admin_pb2.GetNodeRequest(name="h0002"))).node
        topo = (await s.admin.GetTopology(admin_pb2.GetTopologyRequest())).topology

    assert stored.queue.gpu_quota == 64
    assert stored.queue.version == 1
    assert {q.queue.name for q in queues.queues} == {"default", "train"}
    assert drained.node.state == admin_pb2.NODE_STATE_DRAINED
    assert drained.node.reason == "firmware"
    assert status.hosts_total == 16
    assert status.hosts_by_state["READY"] == 3
    assert status.hosts_by_state["UNKNOWN"] == 12
    assert status.gpus_free == 24
    assert [t.tier for t in status.tiers] == ["host", "leaf", "pod", "cluster"]
    assert {f.gpus: f.jobs for f in status.fits} == {8: 3, 64: 0, 512: 0}
    assert resumed.node.state == admin_pb2.NODE_STATE_READY
    assert node.state == admin_pb2.NODE_STATE_READY
    assert list(node.location) == ["pod00-leaf00", "pod00"]
    assert len(topo.hosts) == 16


async def test_explain_says_why_a_job_waits() -> None:
    topology = small_topology()
    async with live_cluster(topology, hosts=2) as live:
        s = live.s
        job_id = (await submit(s, spec(32))).job.id
        explained = await s.jobs.ExplainJob(jobs_pb2.ExplainJobRequest(job_id=job_id))

    assert explained.job.state == jobs_pb2.JOB_STATE_PENDING
    assert explained.reason in {"insufficient_gpus", "insufficient_free_hosts"}
    assert explained.queue_position == 1
    assert explained.placement_failure


async def test_health_reflection_and_metrics() -> None:
    async with running_server() as server, stubs(server.address) as s:
        health = health_pb2_grpc.HealthStub(s.channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        jobs = await health.Check(health_pb2.HealthCheckRequest(service="firsthop.v1.JobService"))
        reflect = reflection_pb2_grpc.ServerReflectionStub(s.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        services = [
            svc.name
            async for answer in reflect.ServerReflectionInfo(iter([request]))
            for svc in answer.list_services_response.service
        ]
        await submit(s, spec(8))
        with pytest.raises(grpc.aio.AioRpcError):
            await s.jobs.GetJob(jobs_pb2.GetJobRequest(job_id="j-missing"))
        exposition = generate_latest(server.runtime.metrics.registry).decode()

    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert jobs.status == health_pb2.HealthCheckResponse.SERVING
    assert {
        "firsthop.v1.JobService",
        "firsthop.v1.AdminService",
        "firsthop.v1.AgentService",
        "grpc.health.v1.Health",
    } <= set(services)
    assert 'firsthop_rpc_duration_seconds_count{code="OK",method="SubmitJob"} 1.0' in exposition
    assert 'firsthop_rpc_duration_seconds_count{code="NOT_FOUND",method="GetJob"} 1.0' in (
        exposition
    )
    assert "firsthop_scheduling_cycle_seconds_count" in exposition


async def test_preemption_stops_the_victim_requeues_it_and_runs_the_urgent_job() -> None:
    topology = small_topology()
    async with live_cluster(topology, hosts=2) as live:
        s = live.s
        low = (await submit(s, spec(16, 600, priority=0, max_restarts=1))).job.id
        await wait_for_state(s, low, [J.RUNNING])
        high = (await submit(s, spec(16, 0.2, priority=10))).job.id

        requeued = await wait_for_state(s, low, [J.REQUEUED])
        urgent = await wait_for_state(s, high, [J.SUCCEEDED])
        again = await wait_for_state(s, low, [J.RUNNING])

    assert requeued.reason == "preempted"
    assert requeued.restarts == 1
    assert [f.reason for f in requeued.failures] == ["preempted"]
    assert urgent.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert again.restarts == 1


async def test_a_large_job_list_lets_other_requests_run_while_it_is_built() -> None:
    async with running_server() as server, stubs(server.address) as s:
        for i in range(5 * LIST_CHUNK):
            await submit(s, spec(8), submission_id=f"many-{i}")
        servicer = JobServicer(server.runtime)
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count_turns())
        await asyncio.sleep(0)
        before = turns
        response = await servicer.ListJobs(
            jobs_pb2.ListJobsRequest(page_size=5 * LIST_CHUNK),
            None,  # type: ignore[arg-type]
        )
        during = turns - before
        counter.cancel()

    assert len(response.jobs) == 5 * LIST_CHUNK
    assert during >= 4  # the loop ran between chunks, not once after the whole page


async def test_a_get_job_issued_while_a_page_is_built_is_answered_before_the_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_server() as server, stubs(server.address) as s:
        ids = [
            (await submit(s, spec(8), submission_id=f"many-{i}")).job.id
            for i in range(5 * LIST_CHUNK)
        ]
        servicer = JobServicer(server.runtime)
        list_jobs = server.runtime.list_jobs
        fetched = asyncio.Event()
        order: list[str] = []

        async def fetch_and_tell(**filters: Any) -> Any:
            page = await list_jobs(**filters)
            fetched.set()
            return page

        monkeypatch.setattr(server.runtime, "list_jobs", fetch_and_tell)

        async def listing() -> jobs_pb2.ListJobsResponse:
            request = jobs_pb2.ListJobsRequest(page_size=5 * LIST_CHUNK)
            response = await servicer.ListJobs(request, None)  # type: ignore[arg-type]
            order.append("list")
            return response

        async def get() -> jobs_pb2.GetJobResponse:
            await fetched.wait()  # the page is being built now
            auth._identity.set(auth.ANONYMOUS)  # what the interceptor does for a local caller
            request = jobs_pb2.GetJobRequest(job_id=ids[-1])
            response = await servicer.GetJob(request, None)  # type: ignore[arg-type]
            order.append("get")
            return response

        listed, got = await asyncio.gather(listing(), get())

    assert order == ["get", "list"]
    assert [j.id for j in listed.jobs] == ids
    assert got.job.id == ids[-1]


async def test_finished_jobs_leave_memory_after_the_window_and_are_read_from_the_store() -> None:
    store = MemoryStore()
    async with (
        running_server(store=store, job_retention_s=0.2) as server,
        stubs(server.address) as s,
    ):
        first = await submit(s, spec(8), submission_id="keep-me")
        job_id = first.job.id
        await s.jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id, reason="done"))
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while job_id in server.runtime.state.jobs:  # swept once its window has passed
            assert asyncio.get_running_loop().time() < deadline
            await server.runtime.next_tick()
        got = (await s.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id))).job
        listed = await s.jobs.ListJobs(jobs_pb2.ListJobsRequest())
        again = await submit(s, spec(8), submission_id="keep-me")
        with pytest.raises(grpc.aio.AioRpcError) as other_spec:
            await submit(s, spec(16), submission_id="keep-me")
        cancelled_again = await s.jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id))
    async with (
        running_server(store=store, job_retention_s=0.2) as restarted,
        stubs(restarted.address) as s,
    ):
        loaded = set(restarted.runtime.state.jobs)
        after_restart = (await s.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id))).job

    assert got.state == jobs_pb2.JOB_STATE_CANCELLED
    assert [j.id for j in listed.jobs] == [job_id]
    assert listed.total_size == 1
    assert again.job.id == job_id
    assert not again.created
    assert reason_of(other_spec.value) == "duplicate_submission_id"
    assert cancelled_again.job.state == jobs_pb2.JOB_STATE_CANCELLED
    assert job_id not in loaded  # a restart loads what is live, not the history
    assert after_restart.state == jobs_pb2.JOB_STATE_CANCELLED
