"""Bounded inputs at the server's edge: every request field has a limit with a stable reason,
checked before anything changes; errors never echo a huge value; list responses are cut by
size as well as by count; ``firsthop status <100 KB id>`` is ``unknown_job``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from server_builders import reason_of, running_server, spec, stubs, submit
from typer.testing import CliRunner

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler import limits
from scheduler.api.spec_serde import job_spec_to_proto
from scheduler.cli.ctl import app as ctl_app
from scheduler.cli.user import app as user_app
from topology.errors import ExitCode

runner = CliRunner()


async def _refused(call: Any, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() is code, info.value.details()
    assert reason_of(info.value) == reason
    details = info.value.details() or ""
    assert len(details) <= limits.MAX_ERROR_CHARS + 64
    return details


async def test_every_request_field_is_bounded_and_a_refusal_changes_nothing() -> None:
    async with running_server() as server, stubs(server.address) as s:
        job = (await submit(s, spec(8))).job
        node_before = (await s.admin.ListNodes(admin_pb2.ListNodesRequest())).nodes[0]
        node = node_before.name
        huge = "x" * 100_000
        bad = limits.MAX_REASON_CHARS + 1
        too_long = [
            s.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(spec(8)), user=huge)),
            s.jobs.SubmitJob(
                jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(spec(8)), submission_id=huge)
            ),
            s.jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job.id, reason="r" * bad)),
            s.admin.DrainNode(admin_pb2.DrainNodeRequest(name=node, reason="r" * bad)),
            s.admin.ResumeNode(admin_pb2.ResumeNodeRequest(name=node, reason="r" * bad)),
            s.admin.SetQueue(
                admin_pb2.SetQueueRequest(
                    queue=admin_pb2.Queue(
                        name="q", labels={f"k{i}": "v" for i in range(limits.MAX_LABELS + 1)}
                    )
                )
            ),
            s.admin.SetQueue(
                admin_pb2.SetQueueRequest(queue=admin_pb2.Queue(name="q", labels={"k": huge}))
            ),
        ]
        for call in too_long:
            await _refused(call, grpc.StatusCode.INVALID_ARGUMENT, "field_too_large")
        no_command = job_spec_to_proto(spec(8))
        del no_command.command[:]
        await _refused(
            s.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=no_command)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_job_spec",
        )
        nul = job_spec_to_proto(spec(8))
        nul.env["A"] = "x\x00y"
        await _refused(
            s.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=nul)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_text",
        )
        jobs = await s.jobs.ListJobs(jobs_pb2.ListJobsRequest())
        after = await s.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.id))
        drained = await s.admin.GetNode(admin_pb2.GetNodeRequest(name=node))
        queues = await s.admin.ListQueues(admin_pb2.ListQueuesRequest())

    assert [j.id for j in jobs.jobs] == [job.id]
    assert after.job.state == job.state
    assert drained.node == node_before
    assert [q.queue.name for q in queues.queues] == ["default"]


async def test_a_huge_id_is_unknown_and_its_error_is_short() -> None:
    huge = "j" * 100_000
    async with running_server() as server, stubs(server.address) as s:
        details = [
            await _refused(call, grpc.StatusCode.NOT_FOUND, reason)
            for call, reason in (
                (s.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=huge)), "unknown_job"),
                (s.jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=huge)), "unknown_job"),
                (s.admin.GetNode(admin_pb2.GetNodeRequest(name=huge)), "unknown_node"),
            )
        ]

    assert all(len(d) < 2_000 for d in details)


async def test_list_responses_are_cut_by_size_and_pages_cover_everything() -> None:
    # Jobs of ~200 KB each: 30 of them are ~6 MB, more than one response may carry.
    env = {f"K{i:04d}": "v" * 200 for i in range(1_000)}
    async with running_server() as server, stubs(server.address) as s:
        ids = [(await submit(s, spec(8, env=env))).job.id for _ in range(30)]
        pages: list[jobs_pb2.ListJobsResponse] = []
        token = ""
        while True:
            page = await s.jobs.ListJobs(jobs_pb2.ListJobsRequest(page_token=token))
            pages.append(page)
            token = page.next_page_token
            if not token:
                break

    assert [j.id for p in pages for j in p.jobs] == ids
    assert len(pages) > 1
    assert all(p.ByteSize() <= limits.MAX_LIST_RESPONSE_BYTES + 256 * 1024 for p in pages)
    assert all(p.total_size == len(ids) for p in pages)


@pytest.fixture(scope="module")
def server_address() -> Iterator[str]:
    """A server in a thread (its own loop) for the CLI tests of this module."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with running_server() as live:
            box["address"] = live.address
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(60), "the server did not start"
    yield str(box["address"])
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(60)


def test_firsthop_status_of_a_100_kb_id_is_unknown_job(server_address: str) -> None:
    result = runner.invoke(user_app, ["status", "j" * 100_000, "--server", server_address])

    assert result.exit_code == ExitCode.NOT_FOUND, result.output
    assert result.output.startswith("error: unknown_job: ")
    assert len(result.output) < 2_000


def test_global_options_come_before_the_command_in_both_clis(
    server_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIRSTHOP_SERVER", raising=False)
    before = runner.invoke(user_app, ["--server", server_address, "list", "-o", "json"])
    ctl = runner.invoke(ctl_app, ["--server", server_address, "nodes", "list", "-o", "json"])
    topo = runner.invoke(ctl_app, ["-s", server_address, "topology", "show", "-o", "json"])
    monkeypatch.setenv("FIRSTHOP_SERVER", server_address)
    from_env = runner.invoke(user_app, ["list"])
    # The command's own option wins over the global one; the global one over the environment.
    monkeypatch.setenv("FIRSTHOP_SERVER", "127.0.0.1:1")
    own = runner.invoke(user_app, ["--server", "127.0.0.1:1", "list", "--server", server_address])
    global_over_env = runner.invoke(user_app, ["--server", server_address, "list"])

    for result in (before, ctl, topo, from_env, own, global_over_env):
        assert result.exit_code == 0, result.output
    assert before.output.strip() == "[]"
    assert '"name": "h0001"' in ctl.output
    assert '"tiers"' in topo.output or '"hosts"' in topo.output
