"""Records <-> storage rows: plain dicts of column values, JSON for nested parts.

Enums are stored as their string values and come back as enums; datetimes stay
timezone-aware UTC; the job spec is stored as its JSON form and validated again on load. The
nested job data (allocation, failures, bookkeeping) is one JSON document per job, so adding a
field to a record needs no schema migration when it has a default.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from firsthop.reasons import FailureReason
from scheduler.core.campaign_records import (
    BusyPolicy,
    Campaign,
    CampaignHost,
    CampaignSpec,
    CampaignState,
    HealthCheckDepth,
    HostPhase,
)
from scheduler.core.records import Allocation, Failure, Job, Node, Queue, RankSlot, Repair
from scheduler.core.states import Health, JobState, NodeState
from scheduler.jobspec import JobSpec


def utc(value: datetime | None) -> datetime | None:
    """``value`` as aware UTC (naive values are taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else utc(datetime.fromisoformat(value))


def _required(value: datetime | None) -> datetime:
    if value is None:  # pragma: no cover - columns are NOT NULL
        raise ValueError("missing timestamp")
    return value


def _allocation_to_data(alloc: Allocation | None) -> dict[str, Any] | None:
    if alloc is None:
        return None
    return {
        "ranks": [[s.rank, s.host, s.gpu] for s in alloc.ranks],
        "cost": alloc.cost,
        "lower_bound": alloc.lower_bound,
        "placed_at": _iso(alloc.placed_at),
    }


def _allocation_from_data(alloc: Mapping[str, Any] | None) -> Allocation | None:
    if alloc is None:
        return None
    return Allocation(
        ranks=tuple(RankSlot(int(r), str(h), int(g)) for r, h, g in alloc["ranks"]),
        cost=float(alloc["cost"]),
        lower_bound=float(alloc["lower_bound"]),
        placed_at=_required(_from_iso(alloc["placed_at"])),
    )


def _repair_to_data(repair: Repair | None) -> dict[str, Any] | None:
    if repair is None:
        return None
    return {
        "failed_at": _iso(repair.failed_at),
        "reason": repair.reason,
        "vacated": list(repair.vacated),
        "moves": [list(m) for m in repair.moves],
        "method": repair.method,
        "stopped_at": _iso(repair.stopped_at),
        "placed_at": _iso(repair.placed_at),
        "running_at": _iso(repair.running_at),
        "ranks_moved": repair.ranks_moved,
        "victims": list(repair.victims),
    }


def _repair_from_data(data: Mapping[str, Any] | None) -> Repair | None:
    if data is None:
        return None
    return Repair(
        failed_at=_required(_from_iso(data["failed_at"])),
        reason=FailureReason(data["reason"]),
        vacated=tuple(str(h) for h in data.get("vacated", ())),
        moves=tuple((str(a), str(b)) for a, b in data.get("moves", ())),
        method=str(data.get("method", "")),
        stopped_at=_from_iso(data.get("stopped_at")),
        placed_at=_from_iso(data.get("placed_at")),
        running_at=_from_iso(data.get("running_at")),
        ranks_moved=int(data.get("ranks_moved", 0)),
        victims=tuple(str(v) for v in data.get("victims", ())),
    )


def job_to_row(job: Job) -> dict[str, Any]:
    """Column values of a job."""
    data: dict[str, Any] = {
        "reason": job.reason,
        "message": job.message,
        "allocation": _allocation_to_data(job.allocation),
        "last_allocation": _allocation_to_data(job.last_allocation),
        "first_started_at": _iso(job.first_started_at),
        "started_at": _iso(job.started_at),
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
        "excluded_hosts": sorted(job.excluded_hosts),
        "productive_s": job.productive_s,
        "started_hosts": sorted(job.started_hosts),
        "exited_ranks": sorted(job.exited_ranks),
        "stopped_hosts": sorted(job.stopped_hosts),
        "stop_deadline": _iso(job.stop_deadline),
        "checkpoint_requested_at": _iso(job.checkpoint_requested_at),
        "clean_hosts": sorted(job.clean_hosts),
        "repair": _repair_to_data(job.repair),
        "repairs": [_repair_to_data(r) for r in job.repairs],
        "rank_failed_at": _iso(job.rank_failed_at),
        "rank_failed_host": job.rank_failed_host,
    }
    return {
        "id": job.id,
        "user": job.user,
        "queue": job.queue,
        "state": job.state.value,
        "priority": job.priority,
        "submission_id": job.submission_id,
        "submitted_at": utc(job.submitted_at),
        "updated_at": utc(job.updated_at),
        "finished_at": utc(job.finished_at),
        "version": job.version,
        "spec": job.spec.model_dump(mode="json"),
        "data": data,
    }


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A job from its column values."""
    data = row["data"]
    return Job(
        id=row["id"],
        spec=JobSpec.model_validate(row["spec"]),
        user=row["user"],
        state=JobState(row["state"]),
        submitted_at=_required(utc(row["submitted_at"])),
        updated_at=_required(utc(row["updated_at"])),
        submission_id=row["submission_id"],
        reason=data.get("reason", ""),
        message=data.get("message", ""),
        allocation=_allocation_from_data(data.get("allocation")),
        last_allocation=_allocation_from_data(data.get("last_allocation")),
        first_started_at=_from_iso(data.get("first_started_at")),
        started_at=_from_iso(data.get("started_at")),
        finished_at=utc(row["finished_at"]),
        last_checkpoint_at=_from_iso(data.get("last_checkpoint_at")),
        restarts=int(data.get("restarts", 0)),
        failures=tuple(
            Failure(
                at=_required(_from_iso(f["at"])),
                reason=FailureReason(f["reason"]),
                host=f["host"],
                lost_s=float(f["lost_s"]),
                message=str(f.get("message", "")),
                checkpointed=bool(f.get("checkpointed", False)),
            )
            for f in data.get("failures", ())
        ),
        excluded_hosts=frozenset(data.get("excluded_hosts", ())),
        productive_s=float(data.get("productive_s", 0.0)),
        started_hosts=frozenset(data.get("started_hosts", ())),
        exited_ranks=frozenset(int(r) for r in data.get("exited_ranks", ())),
        stopped_hosts=frozenset(data.get("stopped_hosts", ())),
        stop_deadline=_from_iso(data.get("stop_deadline")),
        checkpoint_requested_at=_from_iso(data.get("checkpoint_requested_at")),
        clean_hosts=frozenset(data.get("clean_hosts", ())),
        repair=_repair_from_data(data.get("repair")),
        repairs=tuple(
            r for r in (_repair_from_data(d) for d in data.get("repairs", ())) if r is not None
        ),
        rank_failed_at=_from_iso(data.get("rank_failed_at")),
        rank_failed_host=data.get("rank_failed_host"),
        version=int(row["version"]),
    )


def node_to_row(node: Node) -> dict[str, Any]:
    """Column values of a node."""
    return {
        "name": node.name,
        "state": node.state.value,
        "health": node.health.value,
        "gpus": node.gpus,
        "reason": node.reason,
        "agent_version": node.agent_version,
        "address": node.address,
        "registered_at": utc(node.registered_at),
        "last_heartbeat_at": utc(node.last_heartbeat_at),
        "spare": node.spare,
        "version": node.version,
    }


def node_from_row(row: Mapping[str, Any]) -> Node:
    """A node from its column values."""
    return Node(
        name=row["name"],
        state=NodeState(row["state"]),
        gpus=int(row["gpus"]),
        health=Health(row["health"]),
        reason=row["reason"],
        agent_version=row["agent_version"],
        address=row.get("address") or "",
        registered_at=utc(row["registered_at"]),
        last_heartbeat_at=utc(row["last_heartbeat_at"]),
        spare=bool(row.get("spare") or False),
        version=int(row["version"]),
    )


def queue_to_row(queue: Queue) -> dict[str, Any]:
    """Column values of a queue."""
    return {
        "name": queue.name,
        "priority": queue.priority,
        "gpu_quota": queue.gpu_quota,
        "weight": queue.weight,
        "labels": dict(queue.labels),
        "version": queue.version,
    }


def queue_from_row(row: Mapping[str, Any]) -> Queue:
    """A queue from its column values."""
    return Queue(
        name=row["name"],
        priority=int(row["priority"]),
        gpu_quota=None if row["gpu_quota"] is None else int(row["gpu_quota"]),
        weight=float(row["weight"]),
        labels=MappingProxyType(dict(row["labels"] or {})),
        version=int(row["version"]),
    )


def campaign_to_row(campaign: Campaign) -> dict[str, Any]:
    """The ``campaigns`` row of a campaign."""
    spec = campaign.spec
    return {
        "name": campaign.name,
        "state": campaign.state.value,
        "created_at": campaign.created_at,
        "updated_at": campaign.updated_at,
        "version": campaign.version,
        "data": {
            "spec": {
                "selector": spec.selector,
                "max_unavailable": spec.max_unavailable,
                "per_domain": spec.per_domain,
                "busy": spec.busy.value,
                "force": spec.force,
                "health_check": spec.health_check.value,
                "max_failures": spec.max_failures,
                "not_before": _iso(spec.not_before),
                "deadline": _iso(spec.deadline),
                "command": list(spec.command),
                "external": spec.external,
                "timeout_s": spec.timeout_s,
            },
            "reason": campaign.reason,
            "jobs_waited": list(campaign.jobs_waited),
            "jobs_moved": list(campaign.jobs_moved),
            "moving": list(campaign.moving),
            "gpu_hours_lost": campaign.gpu_hours_lost,
            "hosts": [
                {
                    "host": h.host,
                    "phase": h.phase.value,
                    "reason": h.reason,
                    "attempts": h.attempts,
                    "since": _iso(h.since),
                    "output": h.output,
                }
                for h in campaign.hosts
            ],
        },
    }


def campaign_from_row(row: Mapping[str, Any]) -> Campaign:
    """The campaign a ``campaigns`` row holds."""
    data = row["data"]
    s = data["spec"]
    spec = CampaignSpec(
        name=row["name"],
        selector=s["selector"],
        max_unavailable=s["max_unavailable"],
        per_domain=s["per_domain"],
        busy=BusyPolicy(s["busy"]),
        force=bool(s["force"]),
        health_check=HealthCheckDepth(s["health_check"]),
        max_failures=s["max_failures"],
        not_before=_from_iso(s["not_before"]),
        deadline=_from_iso(s["deadline"]),
        command=tuple(s["command"]),
        external=bool(s["external"]),
        timeout_s=float(s["timeout_s"]),
    )
    return Campaign(
        spec=spec,
        state=CampaignState(row["state"]),
        created_at=_required(utc(row["created_at"])),
        updated_at=_required(utc(row["updated_at"])),
        hosts=tuple(
            CampaignHost(
                host=h["host"],
                phase=HostPhase(h["phase"]),
                reason=h["reason"],
                attempts=int(h["attempts"]),
                since=_from_iso(h["since"]),
                output=h["output"],
            )
            for h in data["hosts"]
        ),
        reason=data["reason"],
        jobs_waited=tuple(data["jobs_waited"]),
        jobs_moved=tuple(data["jobs_moved"]),
        moving=tuple(data.get("moving", ())),
        gpu_hours_lost=float(data["gpu_hours_lost"]),
        version=int(row["version"]),
    )
