"""The real agent's parts without a scheduler: the process executor over a fake process runner,
rank logs and checkpoint reports, the health probe of heartbeats, the deep-check and log
commands of the session, and ``firsthop-agent check``.

Time goes through injected wait functions; no test sleeps.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agents.cli import app
from agents.health.fake import FakeGpuProbe, FakeHostProbe
from agents.health.verdict import Health, HealthThresholds
from agents.launch import (
    CHECKPOINT_REPORT_ENV,
    LogPiece,
    ProcessExecutor,
    parse_checkpoint_report,
    rank_log_path,
    read_rank_log,
)
from agents.node import (
    AgentSettings,
    HostHealth,
    NodeAgent,
    deep_check_fn,
    parse_fault_schedule,
)
from agents.ranks import RankControl, RankExit, RankKey, RankLaunch
from agents.session import AgentSession, SessionOptions
from agents.wire import AgentIdentity, HealthCheckOutcome
from firsthop.v1 import agent_pb2
from topology.errors import InvalidInputError

# ---------------------------------------------------------------- a fake process runner


class FakeProcess:
    """A process that exits when the test (or a signal it is scripted to obey) says."""

    def __init__(self, pid: int, obeys: frozenset[int]) -> None:
        self.pid = pid
        self.signals: list[int] = []
        self.exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._obeys = obeys

    async def wait(self) -> int:
        return await asyncio.shield(self.exit)

    def signal_group(self, sig: int) -> None:
        self.signals.append(sig)
        if sig in self._obeys and not self.exit.done():
            self.exit.set_result(-sig)


class FakeRunner:
    """Records every spawn; processes obey only the signals given."""

    def __init__(self, obeys: frozenset[int] = frozenset({signal.SIGKILL})) -> None:
        self.spawned: list[tuple[Sequence[str], Mapping[str, str], Path, FakeProcess]] = []
        self.obeys = obeys
        self.started = asyncio.Event()

    async def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, account: Any = None
    ) -> FakeProcess:
        proc = FakeProcess(1000 + len(self.spawned), self.obeys)
        self.spawned.append((argv, env, log_path, proc))
        self.started.set()
        return proc


class GraceWait:
    """A wait function that records delays; grace periods end at once (never stopped)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, stop: asyncio.Event, seconds: float) -> bool:
        self.delays.append(seconds)
        await asyncio.sleep(0)
        return stop.is_set()


def _launch(rank: int = 0, env: Mapping[str, str] | None = None) -> RankLaunch:
    return RankLaunch(
        key=RankKey("j-1", 2, rank),
        argv=("train", "--fast"),
        env={"RANK": str(rank), **(env or {})},
        gpu=rank,
        local_rank=rank,
    )


async def test_a_rank_runs_with_its_environment_and_logs_per_rank(tmp_path: Path) -> None:
    runner = FakeRunner()
    executor = ProcessExecutor(tmp_path, runner=runner, wait=GraceWait(), base_env={"PATH": "/x"})
    task = asyncio.create_task(executor.run(_launch(1, {"A": "b"}), RankControl(lambda *_: None)))
    await runner.started.wait()
    argv, env, log, proc = runner.spawned[0]
    proc.exit.set_result(3)
    result = await task

    assert argv == ("train", "--fast")
    assert env["PATH"] == "/x"
    assert env["A"] == "b"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert CHECKPOINT_REPORT_ENV not in env  # only rank 0 reports checkpoints
    assert log == rank_log_path(tmp_path, "j-1", 2, 1) == tmp_path / "j-1/attempt-2/rank-1.log"
    assert result == RankExit(3, None, "failed")
    assert proc.signals == [signal.SIGKILL]  # leftovers of the process group are killed


async def test_stop_is_sigterm_to_the_group_then_sigkill_after_the_grace(tmp_path: Path) -> None:
    runner = FakeRunner(obeys=frozenset({signal.SIGKILL}))  # ignores SIGTERM
    wait = GraceWait()
    executor = ProcessExecutor(tmp_path, runner=runner, wait=wait, base_env={})
    control = RankControl(lambda *_: None)
    task = asyncio.create_task(executor.run(_launch(), control))
    await runner.started.wait()
    control.signals.put_nowait(signal.SIGUSR1)
    control.request_stop(7.5)
    result = await task

    proc = runner.spawned[0][3]
    assert proc.signals[:3] == [signal.SIGUSR1, signal.SIGTERM, signal.SIGKILL]
    assert 7.5 in wait.delays
    assert result == RankExit(None, signal.SIGKILL, "stopped")


async def test_a_rank_that_obeys_sigterm_is_not_killed_early(tmp_path: Path) -> None:
    runner = FakeRunner(obeys=frozenset({signal.SIGTERM, signal.SIGKILL}))
    executor = ProcessExecutor(tmp_path, runner=runner, wait=GraceWait(), base_env={})
    control = RankControl(lambda *_: None)
    control.request_stop(30.0)
    result = await executor.run(_launch(), control)

    assert runner.spawned[0][3].signals[0] == signal.SIGTERM
    assert result == RankExit(None, signal.SIGTERM, "stopped")


async def test_a_planned_stop_sends_the_jobs_signal_and_a_clean_exit_is_status_0(
    tmp_path: Path,
) -> None:
    in_grace = asyncio.Event()
    delays: list[float] = []

    async def patient(event: asyncio.Event, seconds: float) -> bool:
        delays.append(seconds)
        in_grace.set()
        await event.wait()  # the grace never runs out here
        return True

    runner = FakeRunner(obeys=frozenset({signal.SIGKILL}))
    executor = ProcessExecutor(tmp_path, runner=runner, wait=patient, base_env={})
    control = RankControl(lambda *_: None)
    task = asyncio.create_task(executor.run(_launch(), control))
    await runner.started.wait()
    proc = runner.spawned[0][3]
    control.request_stop(45.0, signal.SIGUSR1)
    control.request_stop(5.0)  # a repeated stop changes nothing once one is under way
    await asyncio.wait_for(in_grace.wait(), 5)
    proc.exit.set_result(0)  # the program saved its checkpoint and exited
    result = await task

    assert proc.signals == [signal.SIGUSR1, signal.SIGKILL]  # SIGKILL: group leftovers
    assert 45.0 in delays
    assert result == RankExit(0, None, "stopped")


async def test_a_forced_stop_during_a_long_grace_kills_at_once(tmp_path: Path) -> None:
    in_grace = asyncio.Event()

    async def patient(event: asyncio.Event, seconds: float) -> bool:
        in_grace.set()
        await event.wait()  # a year's grace: only a wake-up ends it
        return True

    runner = FakeRunner(obeys=frozenset({signal.SIGKILL}))  # ignores its checkpoint signal
    executor = ProcessExecutor(tmp_path, runner=runner, wait=patient, base_env={})
    control = RankControl(lambda *_: None)
    task = asyncio.create_task(executor.run(_launch(), control))
    await runner.started.wait()
    control.request_stop(366 * 24 * 3600.0, signal.SIGUSR1)
    await asyncio.wait_for(in_grace.wait(), 5)
    assert not task.done()
    control.request_stop(0.0)  # the scheduler's forced stop
    result = await asyncio.wait_for(task, 5)

    proc = runner.spawned[0][3]
    assert proc.signals[:2] == [signal.SIGUSR1, signal.SIGKILL]
    assert result == RankExit(None, signal.SIGKILL, "stopped")


async def test_rank_zero_checkpoint_reports_reach_the_supervisor(tmp_path: Path) -> None:
    runner = FakeRunner()
    executor = ProcessExecutor(tmp_path, runner=runner, wait=GraceWait(), base_env={})
    reported: list[tuple[int, str]] = []
    seen = asyncio.Event()

    def checkpoint(step: int, path: str) -> None:
        reported.append((step, path))
        seen.set()

    task = asyncio.create_task(executor.run(_launch(0), RankControl(checkpoint)))
    await runner.started.wait()
    env, proc = runner.spawned[0][1], runner.spawned[0][3]
    report = Path(env[CHECKPOINT_REPORT_ENV])
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("10 /ckpt/checkpoint.pt\n")
    await asyncio.wait_for(seen.wait(), 5)
    proc.exit.set_result(0)
    await task

    assert reported == [(10, "/ckpt/checkpoint.pt")]
    assert parse_checkpoint_report("garbage") is None
    assert parse_checkpoint_report("7 /p q") == (7, "/p q")


async def test_a_program_that_cannot_start_is_start_failed(tmp_path: Path) -> None:
    executor = ProcessExecutor(tmp_path, wait=GraceWait())
    launch = RankLaunch(RankKey("j-1", 0, 0), ("/nonexistent/bin",), {}, 0, 0)

    result = await executor.run(launch, RankControl(lambda *_: None))

    assert result.reason == "start_failed"


async def test_a_real_process_group_is_stopped_whole(tmp_path: Path) -> None:
    child_pid = tmp_path / "child"
    script = (
        "import pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(child_pid)!r}).write_text(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    control = RankControl(lambda *_: None)
    launch = RankLaunch(RankKey("j-1", 0, 0), (sys.executable, "-c", script), {}, 0, 0)
    task = asyncio.create_task(ProcessExecutor(tmp_path).run(launch, control))
    while not child_pid.exists():  # the program announces its child through a file
        await asyncio.wait({task}, timeout=0.05)
    control.request_stop(10.0)
    result = await asyncio.wait_for(task, 10)
    grandchild = int(child_pid.read_text())

    assert result == RankExit(None, signal.SIGTERM, "stopped")
    # SIGKILL went to the group; the kernel may take a moment to end the grandchild.
    deadline = asyncio.get_running_loop().time() + 10
    while _state(grandchild) not in ("gone", "Z") and asyncio.get_running_loop().time() < deadline:
        await asyncio.wait({task}, timeout=0.05)
    assert _state(grandchild) in ("gone", "Z")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_logs_are_read_in_pieces_and_from_the_end(tmp_path: Path) -> None:
    path = rank_log_path(tmp_path, "j-1", 0, 3)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"0123456789")

    head = read_rank_log(tmp_path, "j-1", 0, 3, offset=0, max_bytes=4)
    tail = read_rank_log(tmp_path, "j-1", 0, 3, offset=-3, max_bytes=100)
    past = read_rank_log(tmp_path, "j-1", 0, 3, offset=50, max_bytes=100)
    missing = read_rank_log(tmp_path, "j-1", 1, 3, offset=0, max_bytes=100)

    assert (head.found, head.offset, head.data, head.size) == (True, 0, b"0123", 10)
    assert (tail.offset, tail.data) == (7, b"789")
    assert (past.offset, past.data) == (10, b"")
    assert not missing.found
    assert "attempt 1" in missing.error
    assert rank_log_path(tmp_path, "../x", 0, 0).is_relative_to(tmp_path)


# ---------------------------------------------------------------- health of heartbeats


def test_the_heartbeat_verdict_follows_the_fake_probe() -> None:
    probe = FakeGpuProbe(2, schedule=parse_fault_schedule(["2:temp:0:95", "3:lost:1"]))
    clock = iter(range(100))
    health = HostHealth(probe, FakeHostProbe(), HealthThresholds(), clock=lambda: next(clock))

    first, second, third = health(), health(), health()

    assert first == (Health.HEALTHY, "")
    assert second[0] == Health.SUSPECT
    assert "temperature_high" in second[1]
    assert third[0] == Health.FAILED
    assert "gpu_lost" in third[1]


def test_a_closed_gpu_probe_makes_the_host_suspect() -> None:
    probe = FakeGpuProbe(2)
    probe.close()
    health = HostHealth(probe, FakeHostProbe(), HealthThresholds())

    word, detail = health()

    assert word == Health.SUSPECT
    assert "gpu probe" in detail


@pytest.mark.parametrize("bad", ["xid:1:79", "0:xid:1:79", "x:lost:0", "3:nope:0"])
def test_bad_fault_schedules_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_fault_schedule([bad])

    assert info.value.reason == "invalid_fake_fault"


def _settings(tmp_path: Path, **fields: object) -> AgentSettings:
    values: dict[str, object] = {
        "server": "127.0.0.1:1",
        "host": "h0001",
        "fake_gpus": 2,
        "checkpoint_path": tmp_path,
        "log_dir": tmp_path / "logs",
    }
    values.update(fields)
    return AgentSettings.model_validate(values)


async def test_fake_deep_checks_are_scriptable(tmp_path: Path) -> None:
    passed = await deep_check_fn(_settings(tmp_path, fake_deep_check="pass"))()
    failed = await deep_check_fn(_settings(tmp_path, fake_deep_check="fail"))()

    assert passed.passed
    assert not failed.passed
    assert "fail" in failed.summary


@pytest.mark.slow
async def test_the_cpu_deep_check_of_a_host_with_fake_gpus_passes(tmp_path: Path) -> None:
    outcome = await deep_check_fn(_settings(tmp_path, fake_deep_check="cpu"))()

    report = json.loads(outcome.report_json)
    assert outcome.passed, outcome.summary
    assert report["device"] == "cpu"
    assert {r["name"] for r in report["results"]} == {
        "matmul_throughput",
        "matmul_accuracy",
        "memory_pattern",
        "h2d_bandwidth",
        "allreduce_busbw",
    }
    assert all(r["outcome"] != "fail" for r in report["results"])


def test_the_agent_registers_fake_gpus_and_its_address(tmp_path: Path) -> None:
    agent = NodeAgent(_settings(tmp_path, address="10.0.0.9", location=("leaf", "pod")))

    assert agent.identity.gpus == 2
    assert agent.identity.address == "10.0.0.9"
    assert agent.identity.location == ("leaf", "pod")


# ---------------------------------------------------------------- session commands


class OneStream:
    """A transport with one stream that records what the agent writes."""

    def __init__(self) -> None:
        self.sent: list[agent_pb2.AgentMessage] = []
        self.changed = asyncio.Event()
        self.inbox: asyncio.Queue[agent_pb2.SchedulerMessage | None] = asyncio.Queue()

    async def register(
        self, request: agent_pb2.RegisterNodeRequest
    ) -> agent_pb2.RegisterNodeResponse:
        self.registered = request
        return agent_pb2.RegisterNodeResponse(session_id="s1", heartbeat_interval_ms=60_000)

    def connect(self) -> OneStream:
        return self

    async def write(self, message: agent_pb2.AgentMessage) -> None:
        self.sent.append(message)
        self.changed.set()

    async def read(self) -> agent_pb2.SchedulerMessage | None:
        return await self.inbox.get()

    def close(self) -> None:
        pass

    async def wait_for(self, kind: str) -> agent_pb2.AgentMessage:
        while True:
            for message in self.sent:
                body = message.report.WhichOneof("body") if message.HasField("report") else None
                if message.WhichOneof("body") == kind or body == kind:
                    return message
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


class NoRanks:
    async def run(self, launch: RankLaunch, control: RankControl) -> RankExit:
        return RankExit(0)


async def test_health_checks_and_log_reads_are_served_on_the_stream(tmp_path: Path) -> None:
    log = rank_log_path(tmp_path, "j-7", 1, 2)
    log.parent.mkdir(parents=True)
    log.write_bytes(b"hello from rank 2\n")

    async def check() -> HealthCheckOutcome:
        return HealthCheckOutcome(False, "memory_pattern (GPU 1)", json.dumps({"x": 1}))

    def logs(job: str, attempt: int, rank: int, offset: int, size: int) -> LogPiece:
        return read_rank_log(tmp_path, job, attempt, rank, offset=offset, max_bytes=size)

    stream = OneStream()
    options = SessionOptions(rng=random.Random(0), health_check=check, logs=logs)
    session = AgentSession(
        AgentIdentity("h0001", 2, address="10.1.1.1"), stream, NoRanks(), options
    )
    stop = asyncio.Event()
    task = asyncio.create_task(session.run(stop))
    stream.inbox.put_nowait(
        agent_pb2.SchedulerMessage(
            command=agent_pb2.Command(
                command_id="check-1", run_health_check=agent_pb2.RunHealthCheck(check_id="c1")
            )
        )
    )
    stream.inbox.put_nowait(
        agent_pb2.SchedulerMessage(
            command=agent_pb2.Command(
                command_id="logs-1",
                fetch_logs=agent_pb2.FetchLogs(
                    request_id="r1", job_id="j-7", attempt=1, rank=2, offset=-9, max_bytes=100
                ),
            )
        )
    )
    result = (await stream.wait_for("health_check")).report.health_check
    chunk = (await stream.wait_for("log_chunk")).log_chunk
    stop.set()
    stream.inbox.put_nowait(None)
    await asyncio.wait_for(task, 5)

    assert stream.registered.address == "10.1.1.1"
    assert (result.check_id, result.passed, result.summary) == (
        "c1",
        False,
        "memory_pattern (GPU 1)",
    )
    assert json.loads(result.report_json) == {"x": 1}
    assert (chunk.request_id, chunk.found, chunk.data, chunk.size) == (
        "r1",
        True,
        b"m rank 2\n",
        18,
    )


async def test_an_agent_without_a_deep_check_rejects_the_command() -> None:
    session = AgentSession(AgentIdentity("h0001", 2), OneStream(), NoRanks())
    ack = session.handle_command(
        agent_pb2.Command(command_id="c", run_health_check=agent_pb2.RunHealthCheck(check_id="c"))
    )

    assert ack.status == agent_pb2.COMMAND_STATUS_REJECTED


# ---------------------------------------------------------------- firsthop-agent check


def test_check_without_a_gpu_skips_or_fails_as_asked() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: the check would run for real (see the gpu tests)")
    runner = CliRunner()
    skipped = runner.invoke(app, ["check"])
    required = runner.invoke(app, ["check", "--require-gpu", "--output", "json"])

    assert skipped.exit_code == 0, skipped.output
    assert "skipped: no CUDA device" in skipped.output
    assert required.exit_code == 2
    assert json.loads(required.output)["skipped_reason"] == "no CUDA device"


async def test_a_per_host_launch_is_one_process_standing_for_the_hosts_ranks() -> None:
    launched: list[RankLaunch] = []

    class Recording:
        async def run(self, launch: RankLaunch, control: RankControl) -> RankExit:
            launched.append(launch)
            return RankExit(3, None, "failed")

    stream = OneStream()
    session = AgentSession(AgentIdentity("h0001", 2), stream, Recording())
    stop = asyncio.Event()
    task = asyncio.create_task(session.run(stop))
    start = agent_pb2.StartRanks(
        job_id="j-1",
        attempt=1,
        argv=["torchrun"],
        per_host=True,
        ranks=[
            agent_pb2.RankLaunch(rank=r, local_rank=i, gpu=i, env={"RANK": str(r), "X": "1"})
            for i, r in enumerate((4, 5))
        ],
    )
    stream.inbox.put_nowait(
        agent_pb2.SchedulerMessage(command=agent_pb2.Command(command_id="s", start_ranks=start))
    )
    await stream.wait_for("ranks_started")
    while sum(m.report.WhichOneof("body") == "rank_exited" for m in stream.sent) < 2:
        stream.changed.clear()
        await asyncio.wait_for(stream.changed.wait(), 5)
    stop.set()
    stream.inbox.put_nowait(None)
    await asyncio.wait_for(task, 5)

    (only,) = launched
    assert only.ranks == (4, 5)
    assert "RANK" not in only.env
    assert only.env["X"] == "1"
    started = next(m.report.ranks_started for m in stream.sent if m.HasField("report"))
    assert list(started.ranks) == [4, 5]
    exits = [m.report.rank_exited for m in stream.sent if m.report.HasField("rank_exited")]
    assert sorted((e.rank, e.exit_code) for e in exits) == [(4, 3), (5, 3)]
