"""Translation of the scheduler's records into the wire messages of the job and admin APIs.

Jobs go out as their **public view** (``Job`` in jobs.proto): the spec, state and reason,
placement and rank table, restart and failure history, and what the server computes when it
answers (``ettr``, ``lost_s``, ``hosts_running``); the core's bookkeeping stays in. Clients
decode these messages into their own view types (:mod:`scheduler.client.wire`), never back
into core records; the two halves are tested against each other.

Input from the wire (a queue to set) is validated like the same input from a file, failing
with :class:`~topology.errors.InvalidInputError` and a stable reason. The vocabularies, times
and job specs are in :mod:`scheduler.api.spec_serde`, the topology in
:mod:`scheduler.api.topology_serde`, the cluster status and explanations in
:mod:`scheduler.api.cluster_serde`, agent messages in :mod:`scheduler.api.agent_serde`.

Must not import ``scheduler.store``, ``scheduler.runtime`` or ``agents``; only this package
and the clients import the generated protos.
"""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType

from firsthop.reasons import ErrorReason
from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api.spec_serde import (
    health_to_proto,
    job_spec_to_proto,
    job_state_to_proto,
    node_state_to_proto,
    set_time,
)
from scheduler.core.records import Allocation, Failure, Job, Node, Queue, RankSlot, Repair
from scheduler.core.status import ettr
from topology.errors import InvalidInputError

# ---------------------------------------------------------------- jobs


def rank_slot_to_proto(slot: RankSlot) -> jobs_pb2.RankSlot:
    """The wire form of one rank's slot."""
    return jobs_pb2.RankSlot(rank=slot.rank, host=slot.host, gpu=slot.gpu)


def allocation_to_proto(allocation: Allocation) -> jobs_pb2.Allocation:
    """The wire form of an allocation: its rank table, hosts in node-rank order, cost."""
    msg = jobs_pb2.Allocation(
        ranks=[rank_slot_to_proto(slot) for slot in allocation.ranks],
        cost=allocation.cost,
        lower_bound=allocation.lower_bound,
        hosts=list(allocation.hosts),
    )
    set_time(msg, "placed_at", allocation.placed_at)
    return msg


def failure_to_proto(failure: Failure) -> jobs_pb2.Failure:
    """The wire form of one interruption."""
    msg = jobs_pb2.Failure(
        reason=failure.reason.value,
        lost_s=failure.lost_s,
        message=failure.message,
        checkpointed=failure.checkpointed,
    )
    set_time(msg, "at", failure.at)
    if failure.host is not None:
        msg.host = failure.host
    return msg


def repair_to_proto(repair: Repair) -> jobs_pb2.Repair:
    """The wire form of one in-place repair."""
    msg = jobs_pb2.Repair(
        reason=repair.reason.value,
        vacated=list(repair.vacated),
        moves=[f"{old}->{new}" for old, new in repair.moves],
        method=repair.method,
        ranks_moved=repair.ranks_moved,
    )
    for name in ("failed_at", "stopped_at", "placed_at", "running_at"):
        set_time(msg, name, getattr(repair, name))
    return msg


def job_to_proto(job: Job, now: datetime) -> jobs_pb2.Job:
    """The public view of a job as the server answers at ``now`` (see the module docstring)."""
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
        lost_s=job.lost_s,
        hosts_running=len(job.started_hosts),
        fault_restarts=job.fault_restarts,
        repairs=[repair_to_proto(r) for r in (*job.repairs, *filter(None, [job.repair]))],
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
    ):
        set_time(msg, name, getattr(job, name))
    ratio = ettr(job, now)
    if ratio is not None:
        msg.ettr = ratio
    set_time(msg, "as_of", now)
    return msg


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
        spare=node.spare,
    )
    set_time(msg, "registered_at", node.registered_at)
    set_time(msg, "last_heartbeat_at", node.last_heartbeat_at)
    return msg


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
