"""Translation between the scheduler's records and the wire messages, in paired functions.

Every record has a ``<name>_to_proto`` and a ``<name>_from_proto``; ``from(to(x)) == x`` is
tested for each pair. Input from the wire is validated exactly like the same input from a file
(job specs through :func:`scheduler.jobspec.job_spec_from_data`, topologies through
:class:`topology.model.Topology`), so a bad message fails with the same stable reason as a
bad file (:class:`~topology.errors.InvalidInputError`), never with a bare ``ValueError``.

Enum mapping: every wire enum has an ``X_UNSPECIFIED = 0`` value; reading it gives the
record's "unknown" member (or is refused where a value is required), and every record member
maps to its own wire value, so round trips are exact.

Timestamps are UTC :class:`datetime.datetime` values; an unset wire timestamp is ``None``.

The topology, the cluster status and explanations are in :mod:`scheduler.api.cluster_serde`,
agent messages in :mod:`scheduler.api.agent_serde` (split by size, same rules).

Must not import ``scheduler.store``, ``scheduler.runtime`` or ``agents``; only this package
and the clients import the generated protos.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from firsthop.reasons import ErrorReason, FailureReason
from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.core.records import Allocation, Failure, Job, Node, Queue, RankSlot
from scheduler.core.states import Health, JobState, NodeState
from scheduler.jobspec import JobSpec, Launch, job_spec_from_data
from topology.errors import InvalidInputError

# ---------------------------------------------------------------- enums and times


def job_state_to_proto(state: JobState) -> jobs_pb2.JobState.ValueType:
    """The wire value of a job state."""
    return jobs_pb2.JobState.Value(f"JOB_STATE_{state.value}")


def job_state_from_proto(value: jobs_pb2.JobState.ValueType) -> JobState:
    """The job state of a wire value; ``JOB_STATE_UNSPECIFIED`` is refused."""
    name = _enum_name(jobs_pb2.JobState, value, "JOB_STATE_")
    if name not in JobState.__members__:
        raise InvalidInputError(
            f"job state {value} is not valid", reason=ErrorReason.INVALID_JOB_STATE
        )
    return JobState(name)


def node_state_to_proto(state: NodeState) -> admin_pb2.NodeState.ValueType:
    """The wire value of a node state."""
    return admin_pb2.NodeState.Value(f"NODE_STATE_{state.value}")


def node_state_from_proto(value: admin_pb2.NodeState.ValueType) -> NodeState:
    """The node state of a wire value; unspecified reads as ``UNKNOWN``."""
    name = _enum_name(admin_pb2.NodeState, value, "NODE_STATE_")
    return NodeState(name) if name in NodeState.__members__ else NodeState.UNKNOWN


def health_to_proto(health: Health) -> admin_pb2.Health.ValueType:
    """The wire value of a health verdict."""
    return admin_pb2.Health.Value(f"HEALTH_{health.value}")


def health_from_proto(value: admin_pb2.Health.ValueType) -> Health:
    """The health verdict of a wire value; unspecified reads as ``UNKNOWN``."""
    name = _enum_name(admin_pb2.Health, value, "HEALTH_")
    return Health(name) if name in Health.__members__ else Health.UNKNOWN


class _EnumWrapper(Protocol):
    def Name(self, number: Any) -> str: ...  # noqa: N802 - protobuf's API


def _enum_name(enum: _EnumWrapper, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return "UNSPECIFIED"


def timestamp_to_proto(at: datetime) -> Timestamp:
    """A wire timestamp of a timezone-aware datetime."""
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


def timestamp_from_proto(stamp: Timestamp) -> datetime:
    """The UTC datetime of a wire timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def set_time(message: Any, field: str, at: datetime | None) -> None:
    if at is not None:
        getattr(message, field).CopyFrom(timestamp_to_proto(at))


def get_time(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return timestamp_from_proto(getattr(message, field))


def require_time(message: Any, field: str, what: str) -> datetime:
    at = get_time(message, field)
    if at is None:
        raise InvalidInputError(f"{what}: {field} is required", reason=ErrorReason.INVALID_INPUT)
    return at


# ---------------------------------------------------------------- job spec


def job_spec_to_proto(spec: JobSpec) -> jobs_pb2.JobSpec:
    """The wire form of a validated job spec (parallelism in canonical form)."""
    msg = jobs_pb2.JobSpec(
        name=spec.name,
        gpus=spec.gpus,
        command=list(spec.command),
        env=dict(spec.env),
        priority=spec.priority,
        queue=spec.queue,
        max_restarts=spec.max_restarts,
        launch="" if spec.launch is Launch.PER_RANK else spec.launch.value,
    )
    par = spec.par
    msg.parallelism.CopyFrom(
        jobs_pb2.Parallelism(
            tp=par.tp,
            cp=par.cp,
            ep=par.ep,
            dp=par.dp,
            pp=par.pp,
            order=par.order,
            order_convention=par.order_convention.value,
        )
    )
    if spec.checkpoint is not None:
        msg.checkpoint.CopyFrom(
            jobs_pb2.CheckpointSpec(dir=spec.checkpoint.dir, interval_s=spec.checkpoint.interval_s)
        )
    if spec.time_limit_s is not None:
        msg.time_limit_s = spec.time_limit_s
    hints = spec.placement
    if hints.model_dump(exclude_defaults=True):
        out = msg.placement
        out.required_tier.update({str(k): v for k, v in hints.required_tier.items()})
        out.nvlink_dims.extend(sorted(hints.nvlink_dims))
        if hints.max_leaves is not None:
            out.max_leaves = hints.max_leaves
        if hints.model is not None:
            out.model.CopyFrom(jobs_pb2.ModelShape(**hints.model.model_dump(mode="json")))
        if hints.volumes_gb is not None:
            out.volumes_gb.update({str(k): v for k, v in hints.volumes_gb.items()})
    return msg


def job_spec_from_proto(msg: jobs_pb2.JobSpec) -> JobSpec:
    """Validate a wire job spec like a spec file (``InvalidInputError`` when invalid)."""
    data: dict[str, Any] = {
        "name": msg.name,
        "gpus": msg.gpus,
        "command": list(msg.command),
        "env": dict(msg.env),
        "priority": msg.priority,
        "max_restarts": msg.max_restarts,
    }
    if msg.queue:
        data["queue"] = msg.queue
    if msg.launch:
        data["launch"] = msg.launch
    if msg.HasField("parallelism"):
        par = msg.parallelism
        data["parallelism"] = {
            dim: getattr(par, dim) or 1 for dim in ("tp", "cp", "ep", "dp", "pp")
        } | _non_empty(order=par.order, order_convention=par.order_convention)
    if msg.HasField("checkpoint"):
        data["checkpoint"] = {"dir": msg.checkpoint.dir, "interval_s": msg.checkpoint.interval_s}
    if msg.HasField("time_limit_s"):
        data["time_limit_s"] = msg.time_limit_s
    if msg.HasField("placement"):
        data["placement"] = _hints_from_proto(msg.placement)
    return job_spec_from_data(data, source="job spec")


def _hints_from_proto(msg: jobs_pb2.PlacementHints) -> dict[str, Any]:
    hints: dict[str, Any] = {
        "required_tier": dict(msg.required_tier),
        "nvlink_dims": list(msg.nvlink_dims),
    }
    if msg.HasField("max_leaves"):
        hints["max_leaves"] = msg.max_leaves
    if msg.HasField("model"):
        model = msg.model
        shape: dict[str, Any] = {
            name: getattr(model, name)
            for name in ("layers", "hidden", "kv_heads", "head_dim", "params", "seq_len")
        }
        for name in (
            "micro_batch",
            "micro_batches",
            "virtual_stages",
            "top_k",
            "bytes_per_element",
            "grad_bytes",
        ):
            if getattr(model, name):
                shape[name] = getattr(model, name)
        shape |= _non_empty(dp_mode=model.dp_mode, cp_mode=model.cp_mode)
        shape["recompute"] = model.recompute
        shape["moe_layers"] = model.moe_layers
        hints["model"] = shape
    if msg.volumes_gb:
        hints["volumes_gb"] = dict(msg.volumes_gb)
    return hints


def _non_empty(**values: str) -> dict[str, str]:
    return {key: value for key, value in values.items() if value}


# ---------------------------------------------------------------- jobs


def rank_slot_to_proto(slot: RankSlot) -> jobs_pb2.RankSlot:
    """The wire form of one rank's slot."""
    return jobs_pb2.RankSlot(rank=slot.rank, host=slot.host, gpu=slot.gpu)


def rank_slot_from_proto(msg: jobs_pb2.RankSlot) -> RankSlot:
    """The rank slot of a wire message."""
    return RankSlot(rank=msg.rank, host=msg.host, gpu=msg.gpu)


def allocation_to_proto(allocation: Allocation) -> jobs_pb2.Allocation:
    """The wire form of an allocation, with its derived host list."""
    msg = jobs_pb2.Allocation(
        ranks=[rank_slot_to_proto(slot) for slot in allocation.ranks],
        cost=allocation.cost,
        lower_bound=allocation.lower_bound,
        hosts=list(allocation.hosts),
    )
    set_time(msg, "placed_at", allocation.placed_at)
    return msg


def allocation_from_proto(msg: jobs_pb2.Allocation) -> Allocation:
    """The allocation of a wire message (the derived host list is ignored)."""
    return Allocation(
        ranks=tuple(rank_slot_from_proto(slot) for slot in msg.ranks),
        cost=msg.cost,
        lower_bound=msg.lower_bound,
        placed_at=require_time(msg, "placed_at", "allocation"),
    )


def failure_to_proto(failure: Failure) -> jobs_pb2.Failure:
    """The wire form of one interruption."""
    msg = jobs_pb2.Failure(reason=failure.reason, lost_s=failure.lost_s)
    set_time(msg, "at", failure.at)
    if failure.host is not None:
        msg.host = failure.host
    return msg


def failure_from_proto(msg: jobs_pb2.Failure) -> Failure:
    """The interruption of a wire message."""
    return Failure(
        at=require_time(msg, "at", "failure"),
        reason=FailureReason(msg.reason),
        host=msg.host if msg.HasField("host") else None,
        lost_s=msg.lost_s,
    )


def job_to_proto(job: Job) -> jobs_pb2.Job:
    """The wire form of a job record."""
    msg = jobs_pb2.Job(
        id=job.id,
        spec=job_spec_to_proto(job.spec),
        user=job.user,
        state=job_state_to_proto(job.state),
        reason=job.reason,
        message=job.message,
        restarts=job.restarts,
        failures=[failure_to_proto(f) for f in job.failures],
        excluded_hosts=sorted(job.excluded_hosts),
        productive_s=job.productive_s,
        version=job.version,
        started_hosts=sorted(job.started_hosts),
        exited_ranks=sorted(job.exited_ranks),
        stopped_hosts=sorted(job.stopped_hosts),
    )
    if job.submission_id is not None:
        msg.submission_id = job.submission_id
    if job.allocation is not None:
        msg.allocation.CopyFrom(allocation_to_proto(job.allocation))
    if job.last_allocation is not None:
        msg.last_allocation.CopyFrom(allocation_to_proto(job.last_allocation))
    for name in (
        "submitted_at",
        "updated_at",
        "first_started_at",
        "started_at",
        "finished_at",
        "last_checkpoint_at",
        "stop_deadline",
    ):
        set_time(msg, name, getattr(job, name))
    return msg


def job_from_proto(msg: jobs_pb2.Job) -> Job:
    """The job record of a wire message."""
    return Job(
        id=msg.id,
        spec=job_spec_from_proto(msg.spec),
        user=msg.user,
        state=job_state_from_proto(msg.state),
        submitted_at=require_time(msg, "submitted_at", "job"),
        updated_at=require_time(msg, "updated_at", "job"),
        submission_id=msg.submission_id if msg.HasField("submission_id") else None,
        reason=msg.reason,
        message=msg.message,
        allocation=allocation_from_proto(msg.allocation) if msg.HasField("allocation") else None,
        last_allocation=allocation_from_proto(msg.last_allocation)
        if msg.HasField("last_allocation")
        else None,
        first_started_at=get_time(msg, "first_started_at"),
        started_at=get_time(msg, "started_at"),
        finished_at=get_time(msg, "finished_at"),
        last_checkpoint_at=get_time(msg, "last_checkpoint_at"),
        restarts=msg.restarts,
        failures=tuple(failure_from_proto(f) for f in msg.failures),
        excluded_hosts=frozenset(msg.excluded_hosts),
        productive_s=msg.productive_s,
        started_hosts=frozenset(msg.started_hosts),
        exited_ranks=frozenset(msg.exited_ranks),
        stopped_hosts=frozenset(msg.stopped_hosts),
        stop_deadline=get_time(msg, "stop_deadline"),
        version=msg.version,
    )


# ---------------------------------------------------------------- nodes and queues


def node_to_proto(node: Node) -> admin_pb2.Node:
    """The wire form of a node record (the live-state fields are left for the caller)."""
    msg = admin_pb2.Node(
        name=node.name,
        state=node_state_to_proto(node.state),
        gpus=node.gpus,
        health=health_to_proto(node.health),
        reason=node.reason,
        agent_version=node.agent_version,
        version=node.version,
        address=node.address,
    )
    set_time(msg, "registered_at", node.registered_at)
    set_time(msg, "last_heartbeat_at", node.last_heartbeat_at)
    return msg


def node_from_proto(msg: admin_pb2.Node) -> Node:
    """The node record of a wire message (live-state fields ignored)."""
    return Node(
        name=msg.name,
        state=node_state_from_proto(msg.state),
        gpus=msg.gpus,
        health=health_from_proto(msg.health),
        reason=msg.reason,
        agent_version=msg.agent_version,
        address=msg.address,
        registered_at=get_time(msg, "registered_at"),
        last_heartbeat_at=get_time(msg, "last_heartbeat_at"),
        version=msg.version,
    )


def queue_to_proto(queue: Queue) -> admin_pb2.Queue:
    """The wire form of a queue."""
    msg = admin_pb2.Queue(
        name=queue.name,
        priority=queue.priority,
        weight=queue.weight,
        labels=dict(queue.labels),
        version=queue.version,
    )
    if queue.gpu_quota is not None:
        msg.gpu_quota = queue.gpu_quota
    return msg


def queue_from_proto(msg: admin_pb2.Queue) -> Queue:
    """The queue of a wire message; a weight of 0 (unset) reads as 1.0."""
    if not msg.name:
        raise InvalidInputError("queue: name is required", reason=ErrorReason.INVALID_QUEUE)
    if msg.weight < 0:
        raise InvalidInputError(
            f"queue {msg.name!r}: weight must be positive, not {msg.weight}",
            reason=ErrorReason.INVALID_QUEUE,
        )
    return Queue(
        name=msg.name,
        priority=msg.priority,
        gpu_quota=msg.gpu_quota if msg.HasField("gpu_quota") else None,
        weight=msg.weight or 1.0,
        labels=MappingProxyType(dict(msg.labels)),
        version=msg.version,
    )
