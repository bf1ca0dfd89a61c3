"""The agent protocol, both sides against each other: every scheduler encoder
(:mod:`scheduler.api.agent_serde`) read by the agent's decoder (:mod:`agents.wire`), every agent
encoder read by the scheduler's decoder, and a running session's reports read by the scheduler.
Neither side is tested against a mirror of itself."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from test_agent_session import FakeTransport, HeldExecutor, _session

from agents import wire
from agents.health.verdict import Health as AgentHealth
from agents.launch import LogPiece
from agents.ranks import RankExit, RankKey
from firsthop.reasons import RankExitReason
from firsthop.v1 import agent_pb2
from scheduler.api import agent_serde
from scheduler.core.actions import StartRanks, StopRanks
from scheduler.core.events import (
    CheckpointReported,
    HeartbeatReceived,
    NodeRegistered,
    RankExited,
    RanksStarted,
)
from scheduler.core.records import RankSlot
from scheduler.core.states import Health
from scheduler.runtime.agents import FetchLogs, ReportAcked, RunHealthCheck
from scheduler.runtime.fleet import AckStatus
from topology.errors import InvalidInputError

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC)


def _start(*, checkpoint: bool = True, per_host: bool = False) -> StartRanks:
    return StartRanks(
        command_id="start:j-1:2:h0002",
        job_id="j-1",
        node="h0002",
        attempt=2,
        job_name="train",
        user="ann",
        ranks=(RankSlot(8, "h0002", 3), RankSlot(9, "h0002", 5)),
        node_rank=1,
        num_nodes=2,
        world_size=16,
        master_addr="10.0.0.1",
        master_port=23456,
        command=("python", "train.py", "--lr", "3e-4"),
        env=MappingProxyType({"A": "1", "RANK": "spec-value"}),
        checkpoint_dir="/ckpt" if checkpoint else None,
        time_limit_s=60 if checkpoint else None,
        per_host=per_host,
    )


def _down(item: StartRanks | StopRanks | RunHealthCheck | FetchLogs | ReportAcked) -> object:
    """What the agent reads from what the scheduler sends (through serialised bytes)."""
    data = agent_serde.outgoing_to_proto(item).SerializeToString()
    return wire.scheduler_message_from_proto(agent_pb2.SchedulerMessage.FromString(data))


# ---------------------------------------------------------------- the rank environment


def test_the_core_builds_every_rank_environment() -> None:
    action = _start()

    assert action.rank_env(1) == {
        "RANK": "9",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "16",
        "LOCAL_WORLD_SIZE": "2",
        "NODE_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "23456",
        "CUDA_VISIBLE_DEVICES": "3,5",
        "FIRSTHOP_JOB_ID": "j-1",
        "FIRSTHOP_RESTART_COUNT": "2",
        "FIRSTHOP_NODE_RANK": "1",
        "FIRSTHOP_NNODES": "2",
        "FIRSTHOP_HOST": "h0002",
        "FIRSTHOP_CHECKPOINT_DIR": "/ckpt",
    }
    assert "FIRSTHOP_CHECKPOINT_DIR" not in _start(checkpoint=False).rank_env(0)


# ---------------------------------------------------------------- commands down


@pytest.mark.parametrize("checkpoint", [True, False])
def test_the_agent_reads_every_field_of_a_start_command(checkpoint: bool) -> None:
    action = _start(checkpoint=checkpoint)

    command = _down(action)

    assert command == wire.StartCommand(
        command_id="start:j-1:2:h0002",
        job_id="j-1",
        attempt=2,
        argv=("python", "train.py", "--lr", "3e-4"),
        env={"A": "1", "RANK": "spec-value"},
        ranks=(
            wire.RankStart(8, 0, 3, action.rank_env(0)),
            wire.RankStart(9, 1, 5, action.rank_env(1)),
        ),
        world_size=16,
        node_rank=1,
        num_nodes=2,
        master_addr="10.0.0.1",
        master_port=23456,
        job_name="train",
        user="ann",
        checkpoint_dir="/ckpt" if checkpoint else None,
        time_limit_s=60 if checkpoint else None,
        per_host=False,
    )


def test_launches_put_the_rank_environment_over_the_spec_environment() -> None:
    action = _start()
    command = _down(action)
    assert isinstance(command, wire.StartCommand)

    launches = wire.launches_of(command)

    assert [(launch.key, launch.gpu, launch.local_rank) for launch in launches] == [
        (RankKey("j-1", 2, 8), 3, 0),
        (RankKey("j-1", 2, 9), 5, 1),
    ]
    assert launches[1].env == {"A": "1", **action.rank_env(1)}
    assert launches[1].argv == action.command


def test_a_per_host_start_is_one_process_without_per_rank_variables() -> None:
    command = _down(_start(per_host=True))
    assert isinstance(command, wire.StartCommand)

    (launch,) = wire.launches_of(command)

    assert launch.ranks == (8, 9)
    assert "RANK" not in launch.env
    assert "LOCAL_RANK" not in launch.env
    assert launch.env["LOCAL_WORLD_SIZE"] == "2"


def test_the_agent_reads_stop_health_check_and_log_commands_and_report_acks() -> None:
    stop = StopRanks("stop:j-1:2:h0002:force", "j-1", "h0002", 2, 12.5, "preempted")
    check = RunHealthCheck("check:h0002:1", "h0002", "check-7")
    logs = FetchLogs("logs:h0002:2", "h0002", "req-2", "j-1", 3, 9, -4096, 65536)

    assert _down(stop) == wire.StopCommand(
        "stop:j-1:2:h0002:force", "j-1", 2, (), 12.5, "preempted"
    )
    assert _down(check) == wire.HealthCheckCommand("check:h0002:1", "check-7")
    assert _down(logs) == wire.FetchLogsCommand("logs:h0002:2", "req-2", "j-1", 3, 9, -4096, 65536)
    assert _down(ReportAcked("i1-4")) == wire.ReportAck("i1-4")


def test_a_planned_stop_carries_the_jobs_checkpoint_signal() -> None:
    stop = StopRanks("stop:j-1:2:h0002", "j-1", "h0002", 2, 45.0, "preempted", "SIGUSR1")
    assert _down(stop) == wire.StopCommand(
        "stop:j-1:2:h0002", "j-1", 2, (), 45.0, "preempted", signal.SIGUSR1
    )
    assert wire.signal_number("") == signal.SIGTERM
    assert wire.signal_number("SIGNOTHING") == signal.SIGTERM  # a stop must still stop


def test_signal_and_unknown_commands() -> None:
    # The scheduler sends no SignalRanks yet; the agent reads the documented message.
    sig = agent_pb2.Command(
        command_id="sig-1",
        signal_ranks=agent_pb2.SignalRanks(job_id="j-1", attempt=1, ranks=[0, 2], signal=10),
    )

    assert wire.command_from_proto(sig) == wire.SignalCommand("sig-1", "j-1", 1, (0, 2), 10)
    assert wire.command_from_proto(agent_pb2.Command(command_id="x")) == wire.UnknownCommand(
        "x", ""
    )
    assert wire.scheduler_message_from_proto(agent_pb2.SchedulerMessage()) is None


# ---------------------------------------------------------------- reports up


def _up(message: agent_pb2.AgentMessage) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage.FromString(message.SerializeToString())


def _report(report: agent_pb2.Report) -> agent_pb2.Report:
    return agent_pb2.Report.FromString(report.SerializeToString())


def test_registration_reads_as_the_event_the_agent_meant() -> None:
    identity = wire.AgentIdentity(
        "h0001", 4, ("leaf0", "pod0"), agent_version="v2", agent_instance="i1", address="10.0.0.9"
    )
    request = agent_pb2.RegisterNodeRequest.FromString(
        wire.register_request(identity).SerializeToString()
    )

    make = agent_serde.node_registered_from_proto(request)

    assert make(T1) == NodeRegistered(
        at=T1, node="h0001", gpus=4, agent_version="v2", address="10.0.0.9"
    )
    assert tuple(request.location) == ("leaf0", "pod0")


def test_registration_with_gaps_in_gpu_indices_is_refused() -> None:
    request = agent_pb2.RegisterNodeRequest(host="h1", gpus=[{"index": 0}, {"index": 2}])

    with pytest.raises(InvalidInputError, match=r"0\.\.n-1"):
        agent_serde.node_registered_from_proto(request)


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        (AgentHealth.HEALTHY, Health.HEALTHY),
        (AgentHealth.SUSPECT, Health.SUSPECT),
        (AgentHealth.FAILED, Health.FAILED),
    ],
)
def test_heartbeats_and_hellos_read_as_the_agent_sent_them(
    health: AgentHealth, expected: Health
) -> None:
    running = {("j-1", 2): [0, 1], ("j-2", 0): [5], ("j-1", 1): [3]}

    beat = _up(wire.heartbeat_to_proto(7, health, "gpu 3 hot", running, T0)).heartbeat
    hello = _up(wire.hello_to_proto("h0001", "s9", running)).hello
    decoded = agent_serde.heartbeat_from_proto(beat, "h0001")

    latest = {"j-1": 2, "j-2": 0}
    assert decoded.make(T1) == HeartbeatReceived(
        at=T1, node="h0001", health=expected, running=MappingProxyType(latest), detail="gpu 3 hot"
    )
    assert decoded.running == latest
    assert (hello.host, hello.session_id) == ("h0001", "s9")
    assert agent_serde.running_from_proto(list(hello.running)) == latest


def test_ranks_started_and_checkpoints_read_as_events_stamped_once() -> None:
    started = _report(wire.ranks_started_report("j-1", 2, [4, 5], T0)).ranks_started
    checkpoint = _report(wire.checkpoint_report(RankKey("j-1", 2, 0), 1200, "/ckpt/1200", T0))

    make_started = agent_serde.ranks_started_from_proto(started, "h0001")
    make_checkpoint = agent_serde.checkpoint_from_proto(checkpoint.checkpoint)

    # The agent's clock (T0) is informational: events carry the time they are applied at.
    assert make_started(T1) == RanksStarted(at=T1, job_id="j-1", node="h0001", attempt=2)
    assert make_checkpoint(T1) == CheckpointReported(at=T1, job_id="j-1", attempt=2)


@pytest.mark.parametrize(
    ("result", "exit_code", "reason"),
    [
        (RankExit(0), 0, RankExitReason.COMPLETED),
        (RankExit(3, None, RankExitReason.FAILED, "loss is nan"), 3, RankExitReason.FAILED),
        (RankExit(None, signal.SIGKILL, RankExitReason.FAILED), 137, RankExitReason.FAILED),
        (RankExit(None, signal.SIGTERM, RankExitReason.STOPPED), 143, RankExitReason.STOPPED),
        (RankExit(None, None, RankExitReason.START_FAILED, "no such file"), 1, "start_failed"),
    ],
)
def test_a_rank_exit_keeps_its_status_signal_reason_and_message(
    result: RankExit, exit_code: int, reason: RankExitReason
) -> None:
    report = _report(wire.rank_exited_report(RankKey("j-1", 2, 7), result, T0)).rank_exited

    event = agent_serde.rank_exited_from_proto(report, "h0003")(T1)

    assert event == RankExited(
        at=T1,
        job_id="j-1",
        node="h0003",
        attempt=2,
        rank=7,
        exit_code=exit_code,
        signal=result.signal,
        reason=reason,
        message=result.message,
    )


def test_a_rank_exit_from_an_agent_without_exit_reason_reads_its_word() -> None:
    old = agent_pb2.RankExited(job_id="j-1", attempt=0, rank=1, signal=15, reason="stopped")
    vague = agent_pb2.RankExited(job_id="j-1", attempt=0, rank=1, exit_code=0, reason="?")

    assert agent_serde.rank_exited_from_proto(old, "h1")(T1).reason is RankExitReason.STOPPED
    assert agent_serde.rank_exited_from_proto(vague, "h1")(T1).reason is RankExitReason.COMPLETED


def test_health_check_results_log_chunks_and_acks_read_as_sent() -> None:
    outcome = wire.HealthCheckOutcome(False, "gpu 2: matmul 40% slow", '{"checks": []}')
    report = _report(wire.health_check_report("check-7", outcome, T0))
    chunk = _up(wire.log_chunk_to_proto("req-2", LogPiece(True, 4096, b"step 10\n", 9000)))
    missing = _up(wire.log_chunk_to_proto("req-3", LogPiece(False, error="no log of rank 9")))

    assert agent_serde.health_check_from_proto(report.health_check) == (
        agent_serde.HealthCheckResult("check-7", False, "gpu 2: matmul 40% slow", '{"checks": []}')
    )
    assert agent_serde.log_chunk_from_proto(chunk.log_chunk) == agent_serde.LogChunk(
        "req-2", True, 4096, 9000, b"step 10\n", ""
    )
    assert agent_serde.log_chunk_from_proto(missing.log_chunk) == agent_serde.LogChunk(
        "req-3", False, 0, 0, b"", "no log of rank 9"
    )
    for status in wire.AckStatus:
        ack = _up(wire.ack_to_proto("c1", status, "why")).ack
        assert agent_serde.ack_from_proto(ack) == agent_serde.CommandAck(
            "c1", AckStatus[status.name], "why"
        )


# ---------------------------------------------------------------- a running session


async def test_a_sessions_rank_exit_reports_reach_the_core_as_they_happened() -> None:
    transport = FakeTransport()
    executor = HeldExecutor()
    session = _session(transport, executor)
    stop = asyncio.Event()
    runner = asyncio.create_task(session.run(stop))
    stream = await transport.next_stream(1)
    stream.inbox.put_nowait(agent_serde.outgoing_to_proto(_start()))
    await stream.wait_for(lambda s: "report" in s.kinds())

    executor.exits[RankKey("j-1", 2, 8)].set_result(RankExit(3, None, RankExitReason.FAILED))
    executor.exits[RankKey("j-1", 2, 9)].set_result(
        RankExit(None, signal.SIGKILL, RankExitReason.FAILED, "oom killer")
    )
    await stream.wait_for(lambda s: s.kinds().count("report") == 3)
    stop.set()
    await asyncio.wait_for(runner, 5)

    exits = [
        agent_serde.rank_exited_from_proto(_up(m).report.rank_exited, "h0002")(T1)
        for m in stream.sent
        if m.WhichOneof("body") == "report" and m.report.WhichOneof("body") == "rank_exited"
    ]
    by_rank = {e.rank: (e.exit_code, e.signal, e.reason, e.message) for e in exits}
    assert by_rank == {
        8: (3, None, RankExitReason.FAILED, ""),
        9: (128 + signal.SIGKILL, signal.SIGKILL, RankExitReason.FAILED, "oom killer"),
    }
