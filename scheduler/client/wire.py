"""The client's half of the job and admin APIs: requests built, answers read into the view
types of :mod:`scheduler.client.views`.

The server's encoders of the same messages are :mod:`scheduler.api.serde` and
:mod:`scheduler.api.cluster_serde`; the two halves are tested against each other. Job specs,
the state vocabularies and times go through :mod:`scheduler.api.spec_serde`, the topology
through :mod:`scheduler.api.topology_serde` (both free of the scheduler's core).

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from types import MappingProxyType

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api.spec_serde import (
    get_time,
    health_from_proto,
    job_spec_from_proto,
    job_state_from_proto,
    node_state_from_proto,
    require_time,
)
from scheduler.client.forecast import forecast_info_from_proto, start_estimate_from_proto
from scheduler.client.views import (
    ClusterView,
    Explanation,
    FailureView,
    JobView,
    NodeView,
    PlacementView,
    QueueSettings,
    QueueView,
    RankView,
    RepairView,
    TierView,
)


def placement_view_from_proto(msg: jobs_pb2.Allocation) -> PlacementView:
    """A placement (allocation) as the server sent it."""
    return PlacementView(
        ranks=tuple(RankView(r.rank, r.host, r.gpu) for r in msg.ranks),
        hosts=tuple(msg.hosts),
        cost_ms=msg.cost,
        lower_bound_ms=msg.lower_bound,
        placed_at=get_time(msg, "placed_at"),
    )


def failure_view_from_proto(msg: jobs_pb2.Failure) -> FailureView:
    """One interruption of a job."""
    return FailureView(
        at=require_time(msg, "at", "failure"),
        reason=msg.reason,
        host=msg.host if msg.HasField("host") else None,
        lost_s=msg.lost_s,
        message=msg.message,
        checkpointed=msg.checkpointed,
    )


def repair_view_from_proto(msg: jobs_pb2.Repair) -> RepairView:
    """One in-place repair of a job."""
    return RepairView(
        failed_at=get_time(msg, "failed_at"),
        reason=msg.reason,
        vacated=tuple(msg.vacated),
        moves=tuple(msg.moves),
        method=msg.method,
        stopped_at=get_time(msg, "stopped_at"),
        placed_at=get_time(msg, "placed_at"),
        running_at=get_time(msg, "running_at"),
        ranks_moved=msg.ranks_moved,
    )


def job_view_from_proto(msg: jobs_pb2.Job) -> JobView:
    """A job as the server shows it."""
    return JobView(
        id=msg.id,
        spec=job_spec_from_proto(msg.spec),
        user=msg.user,
        state=job_state_from_proto(msg.state),
        reason=msg.reason,
        message=msg.message,
        submitted_at=require_time(msg, "submitted_at", "job"),
        updated_at=require_time(msg, "updated_at", "job"),
        submission_id=msg.submission_id if msg.HasField("submission_id") else None,
        placement=(
            placement_view_from_proto(msg.allocation) if msg.HasField("allocation") else None
        ),
        last_placement=(
            placement_view_from_proto(msg.last_allocation)
            if msg.HasField("last_allocation")
            else None
        ),
        first_started_at=get_time(msg, "first_started_at"),
        started_at=get_time(msg, "started_at"),
        finished_at=get_time(msg, "finished_at"),
        last_checkpoint_at=get_time(msg, "last_checkpoint_at"),
        restarts=msg.restarts,
        fault_restarts=msg.fault_restarts,
        failures=tuple(failure_view_from_proto(f) for f in msg.failures),
        repairs=tuple(repair_view_from_proto(r) for r in msg.repairs),
        excluded_hosts=tuple(msg.excluded_hosts),
        hosts_running=msg.hosts_running,
        productive_s=msg.productive_s,
        lost_s=msg.lost_s,
        ettr=msg.ettr if msg.HasField("ettr") else None,
        as_of=get_time(msg, "as_of"),
    )


def explanation_from_proto(msg: jobs_pb2.ExplainJobResponse) -> Explanation:
    """Why a job is where it is."""
    return Explanation(
        job=job_view_from_proto(msg.job),
        reason=msg.reason,
        message=msg.message,
        details=tuple(msg.details),
        would_place=(
            placement_view_from_proto(msg.would_place) if msg.HasField("would_place") else None
        ),
        queue_position=msg.queue_position,
        reservation_start=get_time(msg, "reservation_start"),
        placement_failure=msg.placement_failure,
        start_estimate=(
            start_estimate_from_proto(msg.start_estimate)
            if msg.HasField("start_estimate")
            else None
        ),
        forecast=forecast_info_from_proto(msg.forecast) if msg.HasField("forecast") else None,
    )


def node_view_from_proto(msg: admin_pb2.Node) -> NodeView:
    """A node with the server's live view of it."""
    return NodeView(
        name=msg.name,
        state=node_state_from_proto(msg.state),
        health=health_from_proto(msg.health),
        gpus=msg.gpus,
        reason=msg.reason,
        agent_version=msg.agent_version,
        address=msg.address,
        spare=msg.spare,
        registered_at=get_time(msg, "registered_at"),
        last_heartbeat_at=get_time(msg, "last_heartbeat_at"),
        gpus_allocated=msg.gpus_allocated,
        job_ids=tuple(msg.job_ids),
        location=tuple(msg.location),
    )


def queue_settings_to_proto(queue: QueueSettings) -> admin_pb2.Queue:
    """The queue settings to send (the server validates them)."""
    msg = admin_pb2.Queue(
        name=queue.name, priority=queue.priority, weight=queue.weight, labels=dict(queue.labels)
    )
    if queue.gpu_quota is not None:
        msg.gpu_quota = queue.gpu_quota
    return msg


def queue_settings_from_proto(msg: admin_pb2.Queue) -> QueueSettings:
    """A queue's settings as the server holds them."""
    return QueueSettings(
        name=msg.name,
        priority=msg.priority,
        gpu_quota=msg.gpu_quota if msg.HasField("gpu_quota") else None,
        weight=msg.weight,
        labels=MappingProxyType(dict(msg.labels)),
    )


def queue_view_from_proto(msg: admin_pb2.QueueStatus) -> QueueView:
    """A queue with its jobs and GPUs now."""
    return QueueView(
        queue=queue_settings_from_proto(msg.queue),
        pending_jobs=msg.pending_jobs,
        active_jobs=msg.active_jobs,
        gpus_allocated=msg.gpus_allocated,
        gpus_pending=msg.gpus_pending,
    )


def cluster_view_from_proto(msg: admin_pb2.ClusterStatus) -> ClusterView:
    """The cluster status."""
    return ClusterView(
        at=require_time(msg, "at", "cluster status"),
        hosts=msg.hosts_total,
        gpus=msg.gpus_total,
        schedulable_gpus=msg.gpus_schedulable,
        allocated_gpus=msg.gpus_allocated,
        fenced_gpus=msg.gpus_fenced,
        free_gpus=msg.gpus_free,
        stranded_gpus=msg.stranded_gpus,
        stranded_hosts=msg.stranded_hosts,
        nodes_by_state=dict(sorted(msg.hosts_by_state.items())),
        nodes_by_health=dict(sorted(msg.hosts_by_health.items())),
        jobs_by_state=dict(sorted(msg.jobs_by_state.items())),
        queues=tuple(queue_view_from_proto(q) for q in msg.queues),
        tiers=tuple(
            TierView(
                name=t.tier,
                domains=t.domains,
                whole_free=t.whole_free_domains,
                partly_free=t.partly_free_domains,
                full=t.full_domains,
                largest_job=t.largest_placeable_gpus,
            )
            for t in msg.tiers
        ),
        fits={f.gpus: f.jobs for f in msg.fits},
    )
