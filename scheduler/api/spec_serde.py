"""Translations that need nothing of the scheduler: the state and health vocabularies, times,
and the job spec. Shared by the server's serde (:mod:`scheduler.api.serde`) and the client
(:mod:`scheduler.client.wire`).

A wire job spec is validated exactly like a spec file (through
:func:`scheduler.jobspec.job_spec_from_data`), so a bad message fails with the same stable
reason as a bad file (:class:`~topology.errors.InvalidInputError`), never with a bare
``ValueError``.

Enum mapping: every wire enum has an ``X_UNSPECIFIED = 0`` value; reading it gives the
"unknown" member (or is refused where a value is required), and every member maps to its own
wire value, so round trips are exact. Timestamps are UTC :class:`datetime.datetime` values; an
unset wire timestamp is ``None``.

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from firsthop.reasons import ErrorReason
from firsthop.states import Health, JobState, NodeState
from firsthop.v1 import admin_pb2, jobs_pb2
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
        preemptible=spec.preemptible,
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
        ckpt = spec.checkpoint
        msg.checkpoint.CopyFrom(
            jobs_pb2.CheckpointSpec(dir=ckpt.dir or "", interval_s=ckpt.interval_s or 0)
        )
        if ckpt.signal != "SIGTERM":
            msg.checkpoint.signal = ckpt.signal
        if ckpt.grace_s is not None:
            msg.checkpoint.grace_s = ckpt.grace_s
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
    if msg.preemptible:
        data["preemptible"] = True
    if msg.HasField("parallelism"):
        par = msg.parallelism
        data["parallelism"] = {
            dim: getattr(par, dim) or 1 for dim in ("tp", "cp", "ep", "dp", "pp")
        } | _non_empty(order=par.order, order_convention=par.order_convention)
    if msg.HasField("checkpoint"):
        ckpt = msg.checkpoint
        checkpoint: dict[str, Any] = {}
        if ckpt.dir:
            checkpoint["dir"] = ckpt.dir
        if ckpt.interval_s:
            checkpoint["interval_s"] = ckpt.interval_s
        if ckpt.HasField("signal"):
            checkpoint["signal"] = ckpt.signal
        if ckpt.HasField("grace_s"):
            checkpoint["grace_s"] = ckpt.grace_s
        data["checkpoint"] = checkpoint
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
