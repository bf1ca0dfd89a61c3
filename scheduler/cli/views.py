"""How the CLIs show jobs, nodes, queues and the cluster: plain dicts for JSON and tables.

The JSON of a job is a stable contract (scripts rely on it): at least ``id``, ``state``
(upper case: PENDING, ADMITTED, STARTING, RUNNING, SUCCEEDED, FAILED, CANCELLED, PREEMPTED,
REQUEUED) and, once placed, ``placement`` with ``hosts`` (node-rank order) and ``ranks``
(``[{rank, host, gpu}]``); ``placement`` is ``null`` before that. Recovery: ``restarts``,
``failures`` (``[{at, reason, host, lost_s, message}]``: each interruption and the work it lost),
``lost_s`` (their sum) and ``ettr`` (effective training time ratio: productive time over wall
time since the first start; ``null`` before the job first ran).

Must not import ``scheduler.core``, ``scheduler.store``, ``placement`` or the generated
protos; it only reads the view types the client returns. ``ettr`` and ``lost_s`` are the
server's figures (computed when it answered), never recomputed here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.client import (
    ClusterView,
    Explanation,
    JobView,
    NodeView,
    QueueView,
    RepairView,
)
from scheduler.client.forecast import estimate_dict, forecast_info_dict

JOB_COLUMNS = (
    "id",
    "name",
    "state",
    "queue",
    "priority",
    "gpus",
    "hosts",
    "restarts",
    "reason",
    "age",
)
ADMIN_JOB_COLUMNS = (
    "id",
    "name",
    "user",
    "state",
    "queue",
    "priority",
    "gpus",
    "hosts",
    "restarts",
    "reason",
)
NODE_COLUMNS = ("name", "state", "health", "gpus", "allocated", "jobs", "leaf", "reason")
QUEUE_COLUMNS = ("name", "priority", "weight", "gpu_quota", "pending", "active", "gpus_allocated")


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def placement_dict(job: JobView) -> dict[str, Any] | None:
    """The placement of a job for JSON (``None`` until placed)."""
    alloc = job.placement
    if alloc is None:
        return None
    return {
        "hosts": list(alloc.hosts),
        "ranks": [{"rank": s.rank, "host": s.host, "gpu": s.gpu} for s in alloc.ranks],
        "cost": alloc.cost_ms,
        "lower_bound": alloc.lower_bound_ms,
        "placed_at": _iso(alloc.placed_at),
    }


def job_dict(job: JobView) -> dict[str, Any]:
    """Everything about a job, for ``--output json`` (see the module docstring)."""
    spec = job.spec
    return {
        "id": job.id,
        "name": spec.name,
        "state": job.state.value,
        "reason": job.reason,
        "message": job.message,
        "user": job.user,
        "queue": spec.queue,
        "priority": spec.priority,
        "gpus": spec.gpus,
        "parallelism": spec.par.model_dump(mode="json"),
        "submission_id": job.submission_id,
        "submitted_at": _iso(job.submitted_at),
        "updated_at": _iso(job.updated_at),
        "first_started_at": _iso(job.first_started_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "last_checkpoint_at": _iso(job.last_checkpoint_at),
        "restarts": job.restarts,
        "failures": [
            {
                "at": _iso(f.at),
                "reason": f.reason,
                "host": f.host,
                "lost_s": f.lost_s,
                "message": f.message,
                "checkpointed": f.checkpointed,
            }
            for f in job.failures
        ],
        "repairs": [_repair_dict(r) for r in job.repairs],
        "lost_s": job.lost_s,
        "ettr": job.ettr,
        "excluded_hosts": sorted(job.excluded_hosts),
        "hosts_running": job.hosts_running,
        "productive_s": job.productive_s,
        "placement": placement_dict(job),
    }


def _repair_dict(repair: RepairView) -> dict[str, Any]:
    """One in-place repair for JSON, with the seconds each phase took."""

    def span(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else (b - a).total_seconds()

    return {
        "reason": repair.reason,
        "vacated": list(repair.vacated),
        "moves": list(repair.moves),
        "method": repair.method,
        "ranks_moved": repair.ranks_moved,
        "failed_at": _iso(repair.failed_at),
        "stop_s": span(repair.failed_at, repair.stopped_at),
        "place_s": span(repair.stopped_at, repair.placed_at),
        "start_s": span(repair.placed_at, repair.running_at),
        "total_s": span(repair.failed_at, repair.running_at),
    }


def _repair_line(r: dict[str, Any]) -> str:
    moves = ", ".join(r["moves"]) or "same hosts"
    phases = " ".join(
        f"{name} {r[key]:.1f} s"
        for name, key in (("stop", "stop_s"), ("place", "place_s"), ("start", "start_s"))
        if r[key] is not None
    )
    total = f", back in {r['total_s']:.1f} s" if r["total_s"] is not None else ", in progress"
    return f"{r['reason']}: {moves} ({r['method']}; {phases}{total})"


def job_row(job: JobView, now: datetime | None = None) -> dict[str, Any]:
    """One table row of a job."""
    hosts = job.placement.hosts if job.placement is not None else ()
    shown = ",".join(hosts[:3]) + (f",+{len(hosts) - 3}" if len(hosts) > 3 else "")
    age = ""
    if now is not None:
        age = _duration((now - job.submitted_at).total_seconds())
    return {
        "id": job.id,
        "name": job.spec.name,
        "user": job.user,
        "state": job.state.value,
        "queue": job.spec.queue,
        "priority": job.spec.priority,
        "gpus": job.spec.gpus,
        "hosts": shown,
        "restarts": job.restarts,
        "reason": job.reason,
        "age": age,
    }


def job_fields(job: JobView) -> dict[str, Any]:
    """Field/value rows of ``status`` in table form (the rank table is shown apart)."""
    data = job_dict(job)
    data.pop("placement")
    failures = data.pop("failures")
    repairs = data.pop("repairs")
    if repairs:
        data["repairs"] = "; ".join(_repair_line(r) for r in repairs)
    if data["ettr"] is not None:
        data["ettr"] = f"{data['ettr']:.3f}"
    data["lost_s"] = f"{job.lost_s:.1f}"
    data["failures"] = (
        "; ".join(
            f"{f['reason']}"
            + (f" on {f['host']}" if f["host"] else "")
            + f" (lost {f['lost_s']:.1f} s"
            + (", checkpointed on request)" if f["checkpointed"] else ")")
            + (
                f": {f['message']}"
                if f["message"] and f["reason"] in ("start_failed", "preempted")
                else ""
            )
            for f in failures
        )
        or "none"
    )
    alloc = job.placement
    if alloc is not None:
        data["hosts"] = ", ".join(alloc.hosts)
        data["cost_ms"] = (
            f"{alloc.cost_ms:.3f} (lower bound {alloc.lower_bound_ms:.3f}, x{alloc.ratio:.2f})"
        )
    return data


def explanation_dict(explanation: Explanation) -> dict[str, Any]:
    """An explanation for JSON. ``estimated_start`` (ISO 8601 or ``null``), and
    ``start_estimate`` and ``forecast`` (:mod:`scheduler.client.forecast`, ``null`` unless the
    job is waiting and a forecast was made)."""
    would = explanation.would_place
    estimate = explanation.start_estimate
    forecast = explanation.forecast
    return {
        "id": explanation.job.id,
        "state": explanation.job.state.value,
        "reason": explanation.reason,
        "message": explanation.message,
        "details": list(explanation.details),
        "queue_position": explanation.queue_position,
        "reservation_start": _iso(explanation.reservation_start),
        "placement_failure": explanation.placement_failure,
        "would_place": (
            None
            if would is None
            else {
                "hosts": list(would.hosts),
                "ranks": [{"rank": s.rank, "host": s.host, "gpu": s.gpu} for s in would.ranks],
                "cost": would.cost_ms,
                "lower_bound": would.lower_bound_ms,
            }
        ),
        "estimated_start": _iso(estimate.start if estimate is not None else None),
        "start_estimate": None if estimate is None else estimate_dict(estimate),
        "forecast": None if forecast is None else forecast_info_dict(forecast),
    }


def node_dict(node: NodeView) -> dict[str, Any]:
    """A node for JSON."""
    return {
        "name": node.name,
        "state": node.state.value,
        "health": node.health.value,
        "gpus": node.gpus,
        "gpus_allocated": node.gpus_allocated,
        "jobs": list(node.job_ids),
        "location": list(node.location),
        "reason": node.reason,
        "spare": node.spare,
        "agent_version": node.agent_version,
        "registered_at": _iso(node.registered_at),
        "last_heartbeat_at": _iso(node.last_heartbeat_at),
    }


def node_row(node: NodeView) -> dict[str, Any]:
    """One table row of a node."""
    return {
        "name": node.name,
        "state": node.state.value,
        "health": node.health.value,
        "gpus": node.gpus,
        "allocated": node.gpus_allocated,
        "jobs": ",".join(node.job_ids),
        "leaf": node.location[0] if node.location else "",
        "reason": node.reason,
    }


def queue_dict(view: QueueView) -> dict[str, Any]:
    """A queue for JSON and tables."""
    queue = view.queue
    return {
        "name": queue.name,
        "priority": queue.priority,
        "weight": queue.weight,
        "gpu_quota": queue.gpu_quota,
        "labels": dict(queue.labels),
        "pending": view.pending_jobs,
        "active": view.active_jobs,
        "gpus_allocated": view.gpus_allocated,
        "gpus_pending": view.gpus_pending,
    }


def cluster_dict(status: ClusterView) -> dict[str, Any]:
    """The cluster status for JSON."""
    return {
        "at": _iso(status.at),
        "hosts_total": status.hosts,
        "hosts_by_state": status.nodes_by_state,
        "hosts_by_health": status.nodes_by_health,
        "gpus_total": status.gpus,
        "gpus_schedulable": status.schedulable_gpus,
        "gpus_allocated": status.allocated_gpus,
        "gpus_free": status.free_gpus,
        "gpus_fenced": status.fenced_gpus,
        "utilisation": round(status.utilisation, 4),
        "stranded_gpus": status.stranded_gpus,
        "stranded_hosts": status.stranded_hosts,
        "tiers": [
            {
                "tier": t.name,
                "domains": t.domains,
                "whole_free": t.whole_free,
                "partly_free": t.partly_free,
                "full": t.full,
                "largest_placeable_gpus": t.largest_job,
            }
            for t in status.tiers
        ],
        "queues": [
            {
                "name": q.queue.name,
                "priority": q.queue.priority,
                "weight": q.queue.weight,
                "gpu_quota": q.queue.gpu_quota,
                "pending": q.pending_jobs,
                "active": q.active_jobs,
                "gpus_allocated": q.gpus_allocated,
                "gpus_pending": q.gpus_pending,
            }
            for q in status.queues
        ],
        "jobs_by_state": status.jobs_by_state,
        "fits": {str(size): count for size, count in sorted(status.fits.items())},
    }


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
