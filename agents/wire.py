"""The agent's side of the agent protocol (``proto/firsthop/v1/agent.proto``): every message
the agent sends is built here, every message it receives is read here.

The session (:mod:`agents.session`) works with the plain types below and never touches a
generated message field itself. The scheduler's side of the same protocol is
:mod:`scheduler.api.agent_serde`; the two are tested against each other in pairs (the
scheduler's encoder against this decoder for every command, this encoder against the
scheduler's decoder for every report), so a field dropped on either side fails a test.

- **Down** (scheduler to agent): :func:`scheduler_message_from_proto` reads a
  ``SchedulerMessage`` into one of the command types (:class:`StartCommand`,
  :class:`StopCommand`, :class:`SignalCommand`, :class:`HealthCheckCommand`,
  :class:`FetchLogsCommand`, :class:`MaintenanceCommand`, :class:`UnknownCommand`) or a
  :class:`ReportAck`. A
  ``StartRanks`` carries every rank's launcher environment as the scheduler computed it;
  :func:`launches_of` turns it into what the executor runs.
- **Up** (agent to scheduler): registration, the hello, heartbeats, command
  acknowledgements, reports (ranks started, rank exited, checkpoint, health check result) and
  log chunks.

Timestamps the agent puts on messages are informational: the scheduler stamps events with
its own clock.

Must not import ``scheduler``.
"""

from __future__ import annotations

import signal as signal_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from types import MappingProxyType
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from agents.health.verdict import Health
from agents.launch import LogPiece
from agents.ranks import RankExit, RankKey, RankLaunch
from firsthop.reasons import RankExitReason
from firsthop.v1 import admin_pb2, agent_pb2, topology_pb2

PER_RANK_VARIABLES: Final = frozenset({"RANK", "LOCAL_RANK"})
"""Left out of the environment of a per-host process (its launcher sets them per worker)."""

RunningRanks = Mapping[tuple[str, int], Sequence[int]]
"""(job id, attempt) -> ranks of every job attempt running on the host."""

_HEALTH: Final[Mapping[Health, admin_pb2.Health.ValueType]] = {
    Health.HEALTHY: admin_pb2.HEALTH_HEALTHY,
    Health.SUSPECT: admin_pb2.HEALTH_SUSPECT,
    Health.FAILED: admin_pb2.HEALTH_FAILED,
}
_EXIT_REASON: Final[Mapping[RankExitReason, agent_pb2.RankExitReason.ValueType]] = {
    reason: agent_pb2.RankExitReason.Value(f"RANK_EXIT_REASON_{reason.name}")
    for reason in RankExitReason
}


# ---------------------------------------------------------------- who the agent is


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who the agent says it is when it registers."""

    host: str
    gpus: int
    location: tuple[str, ...] = ()
    """Switch domains above the host, nearest first."""
    agent_version: str = ""
    agent_instance: str = ""
    """Changes whenever the agent process restarts."""
    address: str = ""
    """How ranks on other hosts reach this one (``MASTER_ADDR``); empty: the host name."""


@dataclass(frozen=True, slots=True)
class Registered:
    """The scheduler's answer to a registration."""

    session_id: str
    heartbeat_interval_s: float | None
    """How often to send heartbeats; ``None`` when the scheduler did not say."""
    heartbeat_timeout_s: float | None = None
    """After how long without a heartbeat the scheduler takes the host for lost."""
    epoch: int = 0
    """The leader's fencing epoch (0: a scheduler without a leader lease)."""
    fence_after_s: float = 0.0
    """Stop every rank after hearing nothing from any scheduler this long (0: never)."""


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """The scheduler heard a heartbeat."""


@dataclass(frozen=True, slots=True)
class HealthCheckOutcome:
    """What a deep health check found, as the scheduler is told."""

    passed: bool
    summary: str
    report_json: str = ""


def register_request(identity: AgentIdentity) -> agent_pb2.RegisterNodeRequest:
    """The registration of this host (its GPUs by local index, rail = index)."""
    return agent_pb2.RegisterNodeRequest(
        host=identity.host,
        gpus=[topology_pb2.Gpu(index=i, rail=i) for i in range(identity.gpus)],
        location=list(identity.location),
        agent_version=identity.agent_version,
        agent_instance=identity.agent_instance,
        address=identity.address,
    )


def registered_from_proto(response: agent_pb2.RegisterNodeResponse) -> Registered:
    """The session, heartbeat interval and timeout the scheduler gave this agent."""
    interval = response.heartbeat_interval_ms / 1000.0 if response.heartbeat_interval_ms else None
    timeout = response.heartbeat_timeout_ms / 1000.0 if response.heartbeat_timeout_ms else None
    return Registered(
        response.session_id,
        interval,
        timeout,
        epoch=response.epoch,
        fence_after_s=response.fence_after_ms / 1000.0,
    )


# ---------------------------------------------------------------- commands down


@dataclass(frozen=True, slots=True)
class RankStart:
    """One rank of a start command, with the launcher environment the scheduler computed."""

    rank: int
    local_rank: int
    gpu: int
    env: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class StartCommand:
    """Start this host's slice of a job attempt (``StartRanks``)."""

    command_id: str
    job_id: str
    attempt: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    """The job spec's environment (each rank's launcher variables go on top)."""
    ranks: tuple[RankStart, ...]
    world_size: int
    node_rank: int
    num_nodes: int
    master_addr: str
    master_port: int
    job_name: str
    user: str
    checkpoint_dir: str | None
    time_limit_s: int | None
    per_host: bool


@dataclass(frozen=True, slots=True)
class StopCommand:
    """Stop ranks of a job attempt: ``signal`` (SIGTERM), then SIGKILL after ``grace_s``."""

    command_id: str
    job_id: str
    attempt: int
    ranks: tuple[int, ...]
    """Empty: every rank of the attempt on this host."""
    grace_s: float
    reason: str
    signal: int = signal_module.SIGTERM
    """The job's checkpoint signal on a planned stop; SIGTERM otherwise (or when the name is
    unknown to this host)."""


def signal_number(name: str) -> int:
    """The number of the signal called ``name`` (``SIGUSR1``...); SIGTERM for an empty or
    unknown name (a stop must still stop)."""
    try:
        return int(signal_module.Signals[name]) if name else int(signal_module.SIGTERM)
    except KeyError:
        return int(signal_module.SIGTERM)


@dataclass(frozen=True, slots=True)
class SignalCommand:
    """Send ``signal`` to ranks of a job attempt."""

    command_id: str
    job_id: str
    attempt: int
    ranks: tuple[int, ...]
    signal: int


@dataclass(frozen=True, slots=True)
class HealthCheckCommand:
    """Run the deep health check and report its outcome under ``check_id``."""

    command_id: str
    check_id: str


@dataclass(frozen=True, slots=True)
class FetchLogsCommand:
    """Read part of one rank's log and answer with a log chunk."""

    command_id: str
    request_id: str
    job_id: str
    attempt: int
    rank: int
    offset: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class MaintenanceCommand:
    """One step of a maintenance campaign: run ``argv`` (step ``action``) or only the health
    check (step ``check``); report a :class:`MaintenanceOutcome` under ``command_id``."""

    command_id: str
    campaign: str
    attempt: int
    step: str
    argv: tuple[str, ...]
    timeout_s: float
    health_check: str


@dataclass(frozen=True, slots=True)
class MaintenanceOutcome:
    """How one maintenance step went, as the scheduler is told."""

    ok: bool
    detail: str = ""
    output: str = ""
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """A command this agent does not know (a newer scheduler's); it is rejected."""

    command_id: str
    kind: str


AgentCommand = (
    StartCommand
    | StopCommand
    | SignalCommand
    | HealthCheckCommand
    | FetchLogsCommand
    | MaintenanceCommand
    | UnknownCommand
)


@dataclass(frozen=True, slots=True)
class ReportAck:
    """The scheduler made a report durable: stop resending it."""

    report_id: str


def command_from_proto(command: agent_pb2.Command) -> AgentCommand:
    """The command a ``Command`` message carries."""
    cid = command.command_id
    kind = command.WhichOneof("body")
    if kind == "start_ranks":
        start = command.start_ranks
        return StartCommand(
            command_id=cid,
            job_id=start.job_id,
            attempt=start.attempt,
            argv=tuple(start.argv),
            env=MappingProxyType(dict(start.env)),
            ranks=tuple(
                RankStart(r.rank, r.local_rank, r.gpu, MappingProxyType(dict(r.env)))
                for r in start.ranks
            ),
            world_size=start.world_size,
            node_rank=start.node_rank,
            num_nodes=start.num_nodes,
            master_addr=start.master_addr,
            master_port=start.master_port,
            job_name=start.job_name,
            user=start.user,
            checkpoint_dir=start.checkpoint_dir if start.HasField("checkpoint_dir") else None,
            time_limit_s=start.time_limit_s if start.HasField("time_limit_s") else None,
            per_host=start.per_host,
        )
    if kind == "stop_ranks":
        stop = command.stop_ranks
        return StopCommand(
            cid,
            stop.job_id,
            stop.attempt,
            tuple(stop.ranks),
            stop.grace_s,
            stop.reason,
            signal_number(stop.signal),
        )
    if kind == "signal_ranks":
        sig = command.signal_ranks
        return SignalCommand(cid, sig.job_id, sig.attempt, tuple(sig.ranks), sig.signal)
    if kind == "run_health_check":
        return HealthCheckCommand(cid, command.run_health_check.check_id)
    if kind == "fetch_logs":
        fetch = command.fetch_logs
        return FetchLogsCommand(
            command_id=cid,
            request_id=fetch.request_id,
            job_id=fetch.job_id,
            attempt=fetch.attempt,
            rank=fetch.rank,
            offset=fetch.offset,
            max_bytes=fetch.max_bytes,
        )
    if kind == "run_maintenance":
        run = command.run_maintenance
        return MaintenanceCommand(
            command_id=cid,
            campaign=run.campaign,
            attempt=run.attempt,
            step=run.step,
            argv=tuple(run.argv),
            timeout_s=run.timeout_s,
            health_check=run.health_check,
        )
    return UnknownCommand(cid, kind or "")


def scheduler_message_from_proto(
    message: agent_pb2.SchedulerMessage,
) -> AgentCommand | ReportAck | HeartbeatAck | None:
    """What a message down the stream says (``None``: nothing this agent knows)."""
    kind = message.WhichOneof("body")
    if kind == "command":
        return command_from_proto(message.command)
    if kind == "report_ack":
        return ReportAck(message.report_ack.report_id)
    if kind == "heartbeat_ack":
        return HeartbeatAck()
    return None


def command_epoch(message: agent_pb2.SchedulerMessage | agent_pb2.Command) -> int:
    """The fencing epoch a command (or a message down the stream) carries (0: none)."""
    if isinstance(message, agent_pb2.Command):
        return message.epoch
    return message.command.epoch if message.WhichOneof("body") == "command" else 0


def launches_of(start: StartCommand) -> list[RankLaunch]:
    """What the executor runs for a start command.

    Each rank's environment is the spec's, then the rank's launcher variables on top. With
    ``per_host`` one process (torchrun, say) stands for all of the host's ranks: it gets the
    first rank's environment without ``RANK`` and ``LOCAL_RANK``, which its launcher sets per
    worker.
    """
    launches = [
        RankLaunch(
            key=RankKey(start.job_id, start.attempt, r.rank),
            argv=start.argv,
            env={**start.env, **r.env},
            gpu=r.gpu,
            local_rank=r.local_rank,
            user=start.user,
        )
        for r in start.ranks
    ]
    if start.per_host and launches:
        first = launches[0]
        env = {k: v for k, v in first.env.items() if k not in PER_RANK_VARIABLES}
        covers = tuple(launch.key.rank for launch in launches)
        launches = [replace(first, env=env, covers=covers)]
    return launches


# ---------------------------------------------------------------- messages up


class AckStatus(Enum):
    """What the agent did with a command."""

    APPLIED = agent_pb2.COMMAND_STATUS_APPLIED
    """Applied now."""
    DUPLICATE = agent_pb2.COMMAND_STATUS_DUPLICATE
    """Applied before (a resent copy): nothing was done again."""
    REJECTED = agent_pb2.COMMAND_STATUS_REJECTED
    """Cannot be applied; the message says why."""


def ack_to_proto(command_id: str, status: AckStatus, message: str) -> agent_pb2.AgentMessage:
    """The acknowledgement of a command (every copy of it is acknowledged)."""
    ack = agent_pb2.CommandAck(command_id=command_id, status=status.value, message=message)
    return agent_pb2.AgentMessage(ack=ack)


def _running_to_proto(running: RunningRanks) -> list[agent_pb2.RunningRanks]:
    return [
        agent_pb2.RunningRanks(job_id=job_id, attempt=attempt, ranks=list(ranks))
        for (job_id, attempt), ranks in running.items()
    ]


def hello_to_proto(host: str, session_id: str, running: RunningRanks) -> agent_pb2.AgentMessage:
    """The first message of a stream: the session and every rank running now."""
    hello = agent_pb2.ConnectHello(
        host=host, session_id=session_id, running=_running_to_proto(running)
    )
    return agent_pb2.AgentMessage(hello=hello)


def heartbeat_to_proto(
    seq: int, health: Health, detail: str, running: RunningRanks, sent_at: datetime
) -> agent_pb2.AgentMessage:
    """A heartbeat: the host's health verdict (and why, when not healthy) and its ranks."""
    beat = agent_pb2.Heartbeat(
        seq=seq,
        sent_at=_timestamp(sent_at),
        health=_HEALTH[health],
        health_detail=detail,
        running=_running_to_proto(running),
    )
    return agent_pb2.AgentMessage(heartbeat=beat)


def identified(report: agent_pb2.Report, report_id: str) -> agent_pb2.Report:
    """``report`` with its id (unique per agent instance; the scheduler acknowledges by it)."""
    report.report_id = report_id
    return report


def report_message(report: agent_pb2.Report) -> agent_pb2.AgentMessage:
    """A report as it goes up the stream (first time or resent)."""
    return agent_pb2.AgentMessage(report=report)


def ranks_started_report(
    job_id: str, attempt: int, ranks: Sequence[int], at: datetime
) -> agent_pb2.Report:
    """Ranks of a job attempt began running (the report id is set when it is queued)."""
    started = agent_pb2.RanksStarted(
        job_id=job_id, attempt=attempt, ranks=list(ranks), at=_timestamp(at)
    )
    return agent_pb2.Report(ranks_started=started)


def rank_exited_report(key: RankKey, result: RankExit, at: datetime) -> agent_pb2.Report:
    """One rank's process ended: its status or signal, how and why."""
    reason = RankExitReason(result.reason)
    exited = agent_pb2.RankExited(
        job_id=key.job_id,
        attempt=key.attempt,
        rank=key.rank,
        reason=reason.value,
        exit_reason=_EXIT_REASON[reason],
        message=result.message,
        at=_timestamp(at),
    )
    if result.exit_code is not None:
        exited.exit_code = result.exit_code
    if result.signal is not None:
        exited.signal = result.signal
    return agent_pb2.Report(rank_exited=exited)


def checkpoint_report(key: RankKey, step: int, path: str, at: datetime) -> agent_pb2.Report:
    """A rank wrote a checkpoint."""
    checkpoint = agent_pb2.CheckpointReported(
        job_id=key.job_id,
        attempt=key.attempt,
        rank=key.rank,
        step=step,
        path=path,
        at=_timestamp(at),
    )
    return agent_pb2.Report(checkpoint=checkpoint)


def health_check_report(
    check_id: str, outcome: HealthCheckOutcome, at: datetime
) -> agent_pb2.Report:
    """The outcome of a ``RunHealthCheck`` command."""
    result = agent_pb2.HealthCheckResult(
        check_id=check_id,
        passed=outcome.passed,
        summary=outcome.summary,
        report_json=outcome.report_json,
        at=_timestamp(at),
    )
    return agent_pb2.Report(health_check=result)


def maintenance_report(
    command: MaintenanceCommand, outcome: MaintenanceOutcome, at: datetime
) -> agent_pb2.Report:
    """The outcome of a ``RunMaintenance`` command."""
    result = agent_pb2.MaintenanceResult(
        command_id=command.command_id,
        campaign=command.campaign,
        attempt=command.attempt,
        step=command.step,
        ok=outcome.ok,
        detail=outcome.detail,
        output=outcome.output,
        at=_timestamp(at),
    )
    if outcome.exit_code is not None:
        result.exit_code = outcome.exit_code
    return agent_pb2.Report(maintenance=result)


def log_chunk_to_proto(request_id: str, piece: LogPiece) -> agent_pb2.AgentMessage:
    """The answer to a ``FetchLogs`` command."""
    chunk = agent_pb2.LogChunk(
        request_id=request_id,
        found=piece.found,
        offset=piece.offset,
        data=piece.data,
        size=piece.size,
        error=piece.error,
    )
    return agent_pb2.AgentMessage(log_chunk=chunk)


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp
