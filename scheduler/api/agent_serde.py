"""Translation of the AgentService wire messages: agent reports to core events, core actions
to agent commands, in paired functions.

Kept apart from :mod:`scheduler.api.serde` (records) because this half speaks the agent
protocol; the same rules hold: ``from(to(x)) == x`` is tested for each pair, and bad input
fails with :class:`~topology.errors.InvalidInputError`.

Events are stamped with the scheduler's time (``at``), never the agent's: agent clocks may be
skewed, and the core orders everything by its own clock.

The launcher environment of every rank (DESIGN.md "Rank environment") is computed here, on
the scheduler side, so every agent (simulated or real) launches ranks identically.

Must not import ``scheduler.store`` or ``agents``; of ``scheduler.runtime`` only the
command types the hub sends (:mod:`scheduler.runtime.agents`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final

from firsthop.v1 import agent_pb2, topology_pb2
from scheduler.api.serde import health_from_proto, health_to_proto, timestamp_to_proto
from scheduler.core.actions import StartRanks, StopRanks
from scheduler.core.events import (
    CheckpointReported,
    HeartbeatReceived,
    NodeRegistered,
    RankExited,
    RanksStarted,
)
from scheduler.core.records import RankSlot
from scheduler.runtime.agents import FetchLogs, RunHealthCheck
from topology.errors import InvalidInputError

SIGNAL_EXIT_BASE: Final = 128
"""A rank killed by signal ``n`` is reported to the core with exit code ``128 + n`` (shells'
convention)."""


# ---------------------------------------------------------------- commands down


def rank_env(action: StartRanks, local_rank: int) -> dict[str, str]:
    """The launcher environment of the ``local_rank``-th rank of a start command."""
    slot = action.ranks[local_rank]
    env = {
        "RANK": str(slot.rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(action.world_size),
        "LOCAL_WORLD_SIZE": str(len(action.ranks)),
        "NODE_RANK": str(action.node_rank),
        "MASTER_ADDR": action.master_addr,
        "MASTER_PORT": str(action.master_port),
        "CUDA_VISIBLE_DEVICES": ",".join(str(s.gpu) for s in action.ranks),
        "FIRSTHOP_JOB_ID": action.job_id,
        "FIRSTHOP_RESTART_COUNT": str(action.attempt),
        "FIRSTHOP_NODE_RANK": str(action.node_rank),
        "FIRSTHOP_NNODES": str(action.num_nodes),
        "FIRSTHOP_HOST": action.node,
    }
    if action.checkpoint_dir is not None:
        env["FIRSTHOP_CHECKPOINT_DIR"] = action.checkpoint_dir
    return env


def start_ranks_to_proto(action: StartRanks) -> agent_pb2.Command:
    """The command that starts this host's ranks, with every rank's launcher environment."""
    start = agent_pb2.StartRanks(
        job_id=action.job_id,
        attempt=action.attempt,
        argv=list(action.command),
        env=dict(action.env),
        ranks=[
            agent_pb2.RankLaunch(
                rank=slot.rank, local_rank=i, gpu=slot.gpu, env=rank_env(action, i)
            )
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


def start_ranks_from_proto(command: agent_pb2.Command, node: str) -> StartRanks:
    """The start action of a command sent to ``node`` (the rank environments are derived)."""
    if command.WhichOneof("body") != "start_ranks":
        raise InvalidInputError("not a start_ranks command", reason="invalid_command")
    start = command.start_ranks
    return StartRanks(
        command_id=command.command_id,
        job_id=start.job_id,
        node=node,
        attempt=start.attempt,
        job_name=start.job_name,
        user=start.user,
        ranks=tuple(RankSlot(rank=r.rank, host=node, gpu=r.gpu) for r in start.ranks),
        node_rank=start.node_rank,
        num_nodes=start.num_nodes,
        world_size=start.world_size,
        master_addr=start.master_addr,
        master_port=start.master_port,
        command=tuple(start.argv),
        env=MappingProxyType(dict(start.env)),
        checkpoint_dir=start.checkpoint_dir if start.HasField("checkpoint_dir") else None,
        time_limit_s=start.time_limit_s if start.HasField("time_limit_s") else None,
        per_host=start.per_host,
    )


def stop_ranks_to_proto(action: StopRanks) -> agent_pb2.Command:
    """The command that stops every rank of the job attempt on the host."""
    stop = agent_pb2.StopRanks(
        job_id=action.job_id, attempt=action.attempt, grace_s=action.grace_s, reason=action.reason
    )
    return agent_pb2.Command(command_id=action.command_id, stop_ranks=stop)


def stop_ranks_from_proto(command: agent_pb2.Command, node: str) -> StopRanks:
    """The stop action of a command sent to ``node``."""
    if command.WhichOneof("body") != "stop_ranks":
        raise InvalidInputError("not a stop_ranks command", reason="invalid_command")
    stop = command.stop_ranks
    return StopRanks(
        command_id=command.command_id,
        job_id=stop.job_id,
        node=node,
        attempt=stop.attempt,
        grace_s=stop.grace_s,
        reason=stop.reason,
    )


def run_health_check_to_proto(command: RunHealthCheck) -> agent_pb2.Command:
    """The command that runs a node's deep health check."""
    return agent_pb2.Command(
        command_id=command.command_id,
        run_health_check=agent_pb2.RunHealthCheck(check_id=command.check_id),
    )


def run_health_check_from_proto(command: agent_pb2.Command, node: str) -> RunHealthCheck:
    """The deep-check request of a command sent to ``node``."""
    if command.WhichOneof("body") != "run_health_check":
        raise InvalidInputError("not a run_health_check command", reason="invalid_command")
    return RunHealthCheck(command.command_id, node, command.run_health_check.check_id)


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


def fetch_logs_from_proto(command: agent_pb2.Command, node: str) -> FetchLogs:
    """The log read of a command sent to ``node``."""
    if command.WhichOneof("body") != "fetch_logs":
        raise InvalidInputError("not a fetch_logs command", reason="invalid_command")
    fetch = command.fetch_logs
    return FetchLogs(
        command_id=command.command_id,
        node=node,
        request_id=fetch.request_id,
        job_id=fetch.job_id,
        attempt=fetch.attempt,
        rank=fetch.rank,
        offset=fetch.offset,
        max_bytes=fetch.max_bytes,
    )


# ---------------------------------------------------------------- reports up


def node_registered_to_proto(event: NodeRegistered) -> agent_pb2.RegisterNodeRequest:
    """The registration request an agent sends for this event."""
    return agent_pb2.RegisterNodeRequest(
        host=event.node,
        gpus=[topology_pb2.Gpu(index=i, rail=i) for i in range(event.gpus)],
        agent_version=event.agent_version,
        address=event.address,
    )


def node_registered_from_proto(
    request: agent_pb2.RegisterNodeRequest, at: datetime
) -> NodeRegistered:
    """The registration event of a request (location is checked by the caller)."""
    if not request.host:
        raise InvalidInputError("RegisterNode: host is required", reason="invalid_input")
    indices = sorted(gpu.index for gpu in request.gpus)
    if indices != list(range(len(indices))):
        raise InvalidInputError(
            f"RegisterNode {request.host}: GPU indices must be 0..n-1, got {indices}",
            reason="invalid_input",
        )
    return NodeRegistered(
        at=at,
        node=request.host,
        gpus=len(indices),
        agent_version=request.agent_version,
        address=request.address,
    )


def running_to_proto(running: Mapping[str, int]) -> list[agent_pb2.RunningRanks]:
    """Running job attempts as the agent lists them (ranks are not carried by the event)."""
    return [
        agent_pb2.RunningRanks(job_id=job_id, attempt=attempt)
        for job_id, attempt in sorted(running.items())
    ]


def running_from_proto(running: list[agent_pb2.RunningRanks]) -> Mapping[str, int]:
    """Job id -> attempt of every job with live ranks (the latest attempt when several)."""
    out: dict[str, int] = {}
    for entry in running:
        out[entry.job_id] = max(entry.attempt, out.get(entry.job_id, entry.attempt))
    return MappingProxyType(out)


def heartbeat_to_proto(event: HeartbeatReceived) -> agent_pb2.Heartbeat:
    """The heartbeat an agent sends for this event (sequence and send time left unset)."""
    return agent_pb2.Heartbeat(
        health=health_to_proto(event.health),
        health_detail=event.detail,
        running=running_to_proto(event.running),
    )


def heartbeat_from_proto(beat: agent_pb2.Heartbeat, node: str, at: datetime) -> HeartbeatReceived:
    """The heartbeat event of a message from ``node``."""
    return HeartbeatReceived(
        at=at,
        node=node,
        health=health_from_proto(beat.health),
        running=running_from_proto(list(beat.running)),
        detail=beat.health_detail,
    )


def ranks_started_to_proto(event: RanksStarted, ranks: list[int]) -> agent_pb2.RanksStarted:
    """The report of ranks started (the event does not carry which ranks)."""
    return agent_pb2.RanksStarted(
        job_id=event.job_id, attempt=event.attempt, ranks=ranks, at=timestamp_to_proto(event.at)
    )


def ranks_started_from_proto(
    report: agent_pb2.RanksStarted, node: str, at: datetime
) -> RanksStarted:
    """The event of a ranks-started report from ``node``."""
    return RanksStarted(at=at, job_id=report.job_id, node=node, attempt=report.attempt)


def exit_code_of(report: agent_pb2.RankExited) -> int:
    """The exit code the core sees: the process's, or ``128 + signal``, or 1 if neither."""
    if report.HasField("exit_code"):
        return report.exit_code
    if report.HasField("signal"):
        return SIGNAL_EXIT_BASE + report.signal
    return 1


def rank_exited_to_proto(event: RankExited) -> agent_pb2.RankExited:
    """The report of a rank that exited on its own."""
    report = agent_pb2.RankExited(
        job_id=event.job_id,
        attempt=event.attempt,
        rank=event.rank,
        reason="completed" if event.exit_code == 0 else "failed",
        at=timestamp_to_proto(event.at),
    )
    if event.exit_code >= SIGNAL_EXIT_BASE:
        report.signal = event.exit_code - SIGNAL_EXIT_BASE
    else:
        report.exit_code = event.exit_code
    return report


def rank_exited_from_proto(report: agent_pb2.RankExited, node: str, at: datetime) -> RankExited:
    """The event of a rank-exited report from ``node``."""
    return RankExited(
        at=at,
        job_id=report.job_id,
        node=node,
        attempt=report.attempt,
        rank=report.rank,
        exit_code=exit_code_of(report),
    )


def checkpoint_to_proto(event: CheckpointReported) -> agent_pb2.CheckpointReported:
    """The report of a completed checkpoint."""
    return agent_pb2.CheckpointReported(
        job_id=event.job_id, attempt=event.attempt, at=timestamp_to_proto(event.at)
    )


def checkpoint_from_proto(report: agent_pb2.CheckpointReported, at: datetime) -> CheckpointReported:
    """The event of a checkpoint report (work up to the scheduler's ``at`` is safe)."""
    return CheckpointReported(at=at, job_id=report.job_id, attempt=report.attempt)
