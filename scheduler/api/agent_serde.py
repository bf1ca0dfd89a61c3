"""The scheduler's side of the agent protocol (``proto/firsthop/v1/agent.proto``): core
actions and hub commands to agent commands, agent reports to core events.

The agent's side is :mod:`agents.wire`. The two are tested against each other in pairs: every
encoder here against the agent's decoder, every decoder here against the agent's encoder, so a
field that one side drops fails a test. Nothing here decodes what the scheduler sends or
encodes what an agent sends: that is the other side's job.

Decoders of agent messages return event **factories** (``at -> event``): the runtime stamps
every event once, with the scheduler's clock, when it applies it (agent clocks may be
skewed). A decoder validates its message at once, so a bad message fails before anything is
queued, with :class:`~topology.errors.InvalidInputError`.

The launcher environment of every rank is the core's rule
(:meth:`scheduler.core.actions.StartRanks.rank_env`); it is only carried here.

Must not import ``scheduler.store`` or ``agents``; of ``scheduler.runtime`` only the
command types the hub sends (:mod:`scheduler.runtime.agents`) and the acknowledgement
statuses (:class:`~scheduler.runtime.fleet.AckStatus`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final

from firsthop.reasons import ErrorReason, RankExitReason
from firsthop.v1 import agent_pb2
from scheduler.api.spec_serde import health_from_proto
from scheduler.core.actions import RunMaintenance, StartRanks, StopRanks
from scheduler.core.events import (
    CheckpointReported,
    HeartbeatReceived,
    MaintenanceReported,
    NodeRegistered,
    RankExited,
    RanksStarted,
)
from scheduler.limits import MAX_AGENT_MESSAGE_CHARS, clip_message
from scheduler.runtime.agents import (
    FetchLogs,
    HeartbeatAcked,
    Outgoing,
    ReportAcked,
    RunHealthCheck,
)
from scheduler.runtime.fleet import AckStatus
from topology.errors import InvalidInputError

SIGNAL_EXIT_BASE: Final = 128
"""A rank killed by signal ``n`` is reported to the core with exit code ``128 + n`` (shells'
convention)."""

_EXIT_REASONS: Final[Mapping[agent_pb2.RankExitReason.ValueType, RankExitReason]] = {
    agent_pb2.RankExitReason.Value(f"RANK_EXIT_REASON_{reason.name}"): reason
    for reason in RankExitReason
}


# ---------------------------------------------------------------- commands down


def start_ranks_to_proto(action: StartRanks) -> agent_pb2.Command:
    """The command that starts this host's ranks, with every rank's launcher environment."""
    start = agent_pb2.StartRanks(
        job_id=action.job_id,
        attempt=action.attempt,
        argv=list(action.command),
        env=dict(action.env),
        ranks=[
            agent_pb2.RankLaunch(rank=slot.rank, local_rank=i, gpu=slot.gpu, env=action.rank_env(i))
            for i, slot in enumerate(action.ranks)
        ],
        world_size=action.world_size,
        node_rank=action.node_rank,
        num_nodes=action.num_nodes,
        master_addr=action.master_addr,
        master_port=action.master_port,
        job_name=action.job_name,
        user=action.user,
        per_host=action.per_host,
    )
    if action.checkpoint_dir is not None:
        start.checkpoint_dir = action.checkpoint_dir
    if action.time_limit_s is not None:
        start.time_limit_s = action.time_limit_s
    return agent_pb2.Command(command_id=action.command_id, start_ranks=start)


def stop_ranks_to_proto(action: StopRanks) -> agent_pb2.Command:
    """The command that stops every rank of the job attempt on the host."""
    stop = agent_pb2.StopRanks(
        job_id=action.job_id,
        attempt=action.attempt,
        grace_s=action.grace_s,
        reason=action.reason,
        signal="" if action.signal == "SIGTERM" else action.signal,
    )
    return agent_pb2.Command(command_id=action.command_id, stop_ranks=stop)


def run_health_check_to_proto(command: RunHealthCheck) -> agent_pb2.Command:
    """The command that runs a node's deep health check."""
    return agent_pb2.Command(
        command_id=command.command_id,
        run_health_check=agent_pb2.RunHealthCheck(check_id=command.check_id),
    )


def fetch_logs_to_proto(command: FetchLogs) -> agent_pb2.Command:
    """The command that reads part of a rank's log."""
    return agent_pb2.Command(
        command_id=command.command_id,
        fetch_logs=agent_pb2.FetchLogs(
            request_id=command.request_id,
            job_id=command.job_id,
            attempt=command.attempt,
            rank=command.rank,
            offset=command.offset,
            max_bytes=command.max_bytes,
        ),
    )


def run_maintenance_to_proto(action: RunMaintenance) -> agent_pb2.Command:
    """A maintenance step for ``action.node``'s agent."""
    return agent_pb2.Command(
        command_id=action.command_id,
        run_maintenance=agent_pb2.RunMaintenance(
            campaign=action.campaign,
            attempt=action.attempt,
            step=action.step,
            argv=list(action.argv),
            timeout_s=action.timeout_s,
            health_check=action.health_check,
        ),
    )


def outgoing_to_proto(item: Outgoing, *, epoch: int = 0) -> agent_pb2.SchedulerMessage:
    """What goes down a host's stream: a command (stamped with the leader's fencing
    ``epoch``), or the acknowledgement of a report."""
    if isinstance(item, ReportAcked):
        return agent_pb2.SchedulerMessage(report_ack=agent_pb2.ReportAck(report_id=item.report_id))
    if isinstance(item, HeartbeatAcked):
        return agent_pb2.SchedulerMessage(heartbeat_ack=agent_pb2.HeartbeatAck())
    if isinstance(item, StartRanks):
        command = start_ranks_to_proto(item)
    elif isinstance(item, StopRanks):
        command = stop_ranks_to_proto(item)
    elif isinstance(item, RunHealthCheck):
        command = run_health_check_to_proto(item)
    elif isinstance(item, RunMaintenance):
        command = run_maintenance_to_proto(item)
    else:
        command = fetch_logs_to_proto(item)
    command.epoch = epoch
    return agent_pb2.SchedulerMessage(command=command)


def keep_alive_to_proto(epoch: int) -> agent_pb2.SchedulerMessage:
    """What an idle stream carries every heartbeat interval (proof the scheduler is alive)."""
    return agent_pb2.SchedulerMessage(keep_alive=agent_pb2.KeepAlive(epoch=epoch))


# ---------------------------------------------------------------- reports up


def node_registered_from_proto(
    request: agent_pb2.RegisterNodeRequest,
) -> Callable[[datetime], NodeRegistered]:
    """The registration event of a request (its location is checked by the caller)."""
    if not request.host:
        raise InvalidInputError("RegisterNode: host is required", reason=ErrorReason.INVALID_INPUT)
    indices = sorted(gpu.index for gpu in request.gpus)
    if indices != list(range(len(indices))):
        raise InvalidInputError(
            f"RegisterNode {request.host}: GPU indices must be 0..n-1, got {indices}",
            reason=ErrorReason.INVALID_INPUT,
        )
    node, version, address = request.host, request.agent_version, request.address

    def make(at: datetime) -> NodeRegistered:
        return NodeRegistered(
            at=at, node=node, gpus=len(indices), agent_version=version, address=address
        )

    return make


def running_from_proto(running: list[agent_pb2.RunningRanks]) -> Mapping[str, int]:
    """Job id -> attempt of every job with live ranks (the latest attempt when several)."""
    out: dict[str, int] = {}
    for entry in running:
        out[entry.job_id] = max(entry.attempt, out.get(entry.job_id, entry.attempt))
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A decoded heartbeat: the event to apply, and the running attempts (the fleet reads
    them to finish stops whose ranks are gone)."""

    make: Callable[[datetime], HeartbeatReceived]
    running: Mapping[str, int]


def heartbeat_from_proto(beat: agent_pb2.Heartbeat, node: str) -> Heartbeat:
    """The heartbeat of a message from ``node``."""
    health = health_from_proto(beat.health)
    running = running_from_proto(list(beat.running))
    detail = beat.health_detail

    def make(at: datetime) -> HeartbeatReceived:
        return HeartbeatReceived(at=at, node=node, health=health, running=running, detail=detail)

    return Heartbeat(make, running)


def ranks_started_from_proto(
    report: agent_pb2.RanksStarted, node: str
) -> Callable[[datetime], RanksStarted]:
    """The event of a ranks-started report from ``node``."""
    job_id, attempt = report.job_id, report.attempt

    def make(at: datetime) -> RanksStarted:
        return RanksStarted(at=at, job_id=job_id, node=node, attempt=attempt)

    return make


def exit_code_of(report: agent_pb2.RankExited) -> int:
    """The exit code the core sees: the process's, or ``128 + signal``, or 1 if neither."""
    if report.HasField("exit_code"):
        return report.exit_code
    if report.HasField("signal"):
        return SIGNAL_EXIT_BASE + report.signal
    return 1


def exit_reason_of(report: agent_pb2.RankExited) -> RankExitReason:
    """How the rank ended: ``exit_reason``, else the word in ``reason`` (agents before
    ``exit_reason``), else what the exit code says."""
    reason = _EXIT_REASONS.get(report.exit_reason)
    if reason is not None:
        return reason
    if report.reason in RankExitReason.__members__.values():
        return RankExitReason(report.reason)
    return RankExitReason.COMPLETED if exit_code_of(report) == 0 else RankExitReason.FAILED


def rank_exited_from_proto(
    report: agent_pb2.RankExited, node: str
) -> Callable[[datetime], RankExited]:
    """The event of a rank-exited report from ``node``."""
    job_id, attempt, rank = report.job_id, report.attempt, report.rank
    message = clip_message(report.message, MAX_AGENT_MESSAGE_CHARS)  # it lands in the record
    exit_code, reason = exit_code_of(report), exit_reason_of(report)
    signal = report.signal if report.HasField("signal") else None

    def make(at: datetime) -> RankExited:
        return RankExited(
            at=at,
            job_id=job_id,
            node=node,
            attempt=attempt,
            rank=rank,
            exit_code=exit_code,
            signal=signal,
            reason=reason,
            message=message,
        )

    return make


def checkpoint_from_proto(
    report: agent_pb2.CheckpointReported,
) -> Callable[[datetime], CheckpointReported]:
    """The event of a checkpoint report (work up to the scheduler's ``at`` is safe)."""
    job_id, attempt = report.job_id, report.attempt

    def make(at: datetime) -> CheckpointReported:
        return CheckpointReported(at=at, job_id=job_id, attempt=attempt)

    return make


MAINTENANCE_STEPS: Final = frozenset({"action", "check"})


def maintenance_from_proto(
    result: agent_pb2.MaintenanceResult, node: str
) -> Callable[[datetime], MaintenanceReported]:
    """The event of a maintenance step's report from ``node``.

    Raises:
        InvalidInputError: ``invalid_report`` (an unknown step or no campaign).
    """
    if result.step not in MAINTENANCE_STEPS or not result.campaign:
        raise InvalidInputError(
            f"maintenance report with step {result.step[:20]!r} and campaign "
            f"{result.campaign[:80]!r}",
            reason="invalid_report",
        )
    campaign, attempt, step = result.campaign, result.attempt, result.step
    ok, detail, output = result.ok, result.detail, result.output

    def make(at: datetime) -> MaintenanceReported:
        return MaintenanceReported(
            at=at,
            campaign=campaign,
            node=node,
            attempt=attempt,
            step=step,
            ok=ok,
            detail=detail,
            output=output,
        )

    return make


@dataclass(frozen=True, slots=True)
class HealthCheckResult:
    """The outcome of a deep health check an agent ran."""

    check_id: str
    passed: bool
    summary: str
    report_json: str


def health_check_from_proto(result: agent_pb2.HealthCheckResult) -> HealthCheckResult:
    """The outcome of a ``RunHealthCheck`` command."""
    summary = clip_message(result.summary, MAX_AGENT_MESSAGE_CHARS)
    return HealthCheckResult(result.check_id, result.passed, summary, result.report_json)


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Part of a rank's log, answering a ``FetchLogs`` command."""

    request_id: str
    found: bool
    offset: int
    size: int
    data: bytes
    error: str


def log_chunk_from_proto(chunk: agent_pb2.LogChunk) -> LogChunk:
    """The answer to a ``FetchLogs`` command."""
    return LogChunk(
        chunk.request_id, chunk.found, chunk.offset, chunk.size, chunk.data, chunk.error
    )


@dataclass(frozen=True, slots=True)
class CommandAck:
    """An agent's acknowledgement of a command."""

    command_id: str
    status: AckStatus
    message: str


_ACK_STATUS: Final = {
    agent_pb2.COMMAND_STATUS_APPLIED: AckStatus.APPLIED,
    agent_pb2.COMMAND_STATUS_DUPLICATE: AckStatus.DUPLICATE,
    agent_pb2.COMMAND_STATUS_REJECTED: AckStatus.REJECTED,
}


def ack_from_proto(ack: agent_pb2.CommandAck) -> CommandAck:
    """An acknowledgement (an unspecified status reads as applied)."""
    return CommandAck(ack.command_id, _ACK_STATUS.get(ack.status, AckStatus.APPLIED), ack.message)
