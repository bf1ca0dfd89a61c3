"""Translation of the cluster-wide views into wire messages: the cluster status and
explanations. The client's decoders of the same messages (:mod:`scheduler.client.wire`) are
tested against these encoders.

Must not import ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from datetime import datetime

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api.serde import allocation_to_proto, job_to_proto
from scheduler.api.spec_serde import set_time, timestamp_to_proto
from scheduler.core.explain import Explanation
from scheduler.core.records import Job
from scheduler.core.status import ClusterStatus, QueueStatus

# ---------------------------------------------------------------- cluster status and explain


def queue_status_to_proto(status: QueueStatus) -> admin_pb2.QueueStatus:
    """The wire form of one queue's depth and usage."""
    queue = admin_pb2.Queue(name=status.name, priority=status.priority, weight=status.weight)
    if status.gpu_quota is not None:
        queue.gpu_quota = status.gpu_quota
    return admin_pb2.QueueStatus(
        queue=queue,
        pending_jobs=status.pending_jobs,
        active_jobs=status.running_jobs,
        gpus_allocated=status.held_gpus,
        gpus_pending=status.pending_gpus,
    )


def cluster_status_to_proto(status: ClusterStatus) -> admin_pb2.ClusterStatus:
    """The wire form of the cluster status."""
    return admin_pb2.ClusterStatus(
        at=timestamp_to_proto(status.at),
        hosts_total=status.hosts,
        hosts_by_state=status.nodes_by_state,
        hosts_by_health=status.nodes_by_health,
        gpus_total=status.gpus,
        gpus_allocated=status.allocated_gpus,
        gpus_free=status.free_gpus,
        gpus_schedulable=status.schedulable_gpus,
        gpus_fenced=status.fenced_gpus,
        stranded_gpus=status.stranded_gpus,
        stranded_hosts=status.stranded_hosts,
        tiers=[
            admin_pb2.TierStatus(
                tier=t.name,
                level=level,
                domains=t.domains,
                whole_free_domains=t.whole_free,
                partly_free_domains=t.partly_free,
                full_domains=t.full,
                largest_placeable_gpus=t.largest_job,
            )
            for level, t in enumerate(status.tiers)
        ],
        queues=[queue_status_to_proto(q) for q in status.queues],
        jobs_by_state=status.jobs_by_state,
        fits=[admin_pb2.FitCount(gpus=size, jobs=n) for size, n in sorted(status.fits.items())],
    )


def explanation_to_proto(
    explanation: Explanation, job: Job, at: datetime
) -> jobs_pb2.ExplainJobResponse:
    """The wire form of an explanation (the core converted the placer's result)."""
    msg = jobs_pb2.ExplainJobResponse(
        job=job_to_proto(job, at),
        reason=explanation.reason,
        message=explanation.message,
        details=list(explanation.details),
        queue_position=explanation.queue_position or 0,
    )
    if explanation.would_place is not None:
        msg.would_place.CopyFrom(allocation_to_proto(explanation.would_place))
    if explanation.failure is not None:
        failure = explanation.failure
        msg.placement_failure = f"{failure.reason.value}: {failure.message}"
    set_time(msg, "reservation_start", explanation.reservation_start)
    return msg
