"""What a client sees of maintenance campaigns, and the requests that drive them.

:class:`CampaignRequest` is what ``firsthopctl maintenance start`` asks for;
:class:`CampaignView` / :class:`CampaignHostView` are read from the admin wire
(``MaintenanceCampaign``). The server's encoder is :mod:`scheduler.api.maintenance_serde`.

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firsthop.v1 import admin_pb2
from scheduler.api.spec_serde import get_time, set_time

HOST_STATES = ("WAITING", "DRAINING", "IN_MAINTENANCE", "CHECKING", "DONE", "FAILED")


@dataclass(frozen=True, slots=True)
class CampaignRequest:
    """``maintenance start``'s flags."""

    name: str
    selector: str
    max_unavailable: str = "1"
    per_domain: str = ""
    busy: str = "wait"
    force: bool = False
    health_check: str = "fast"
    max_failures: int | None = None
    not_before: datetime | None = None
    deadline: datetime | None = None
    command: tuple[str, ...] = ()
    external: bool = False
    timeout_s: float = 0.0
    """0: the server's default."""


@dataclass(frozen=True, slots=True)
class CampaignHostView:
    """One host of a campaign."""

    host: str
    state: str
    reason: str
    attempts: int
    since: datetime | None
    output: str


@dataclass(frozen=True, slots=True)
class CampaignView:
    """A campaign as the server reports it."""

    name: str
    state: str
    reason: str
    selector: str
    max_unavailable: str
    external: bool
    command: tuple[str, ...]
    hosts: tuple[CampaignHostView, ...]
    jobs_moved: tuple[str, ...]
    jobs_waited: tuple[str, ...]
    gpu_hours_lost: float
    created_at: datetime | None
    updated_at: datetime | None

    def count(self, state: str) -> int:
        """Hosts in ``state``."""
        return sum(1 for h in self.hosts if h.state == state)

    def ready(self) -> list[str]:
        """Hosts handed over for external work (``--external`` campaigns)."""
        if not self.external:
            return []
        return [h.host for h in self.hosts if h.state == "IN_MAINTENANCE"]

    def to_dict(self) -> dict[str, Any]:
        """The ``status --output json`` document (the issue's keys, and more)."""
        return {
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "selector": self.selector,
            "max_unavailable": self.max_unavailable,
            "external": self.external,
            "command": list(self.command),
            "hosts_total": len(self.hosts),
            "hosts_done": self.count("DONE"),
            "hosts_failed": self.count("FAILED"),
            "hosts_out": sum(self.count(s) for s in ("DRAINING", "IN_MAINTENANCE", "CHECKING")),
            "hosts": [
                {
                    "host": h.host,
                    "state": h.state,
                    "reason": h.reason,
                    "attempts": h.attempts,
                    "since": h.since.isoformat() if h.since else None,
                }
                for h in self.hosts
            ],
            "jobs_moved": len(self.jobs_moved),
            "jobs_waited": len(self.jobs_waited),
            "job_ids_moved": list(self.jobs_moved),
            "job_ids_waited": list(self.jobs_waited),
            "gpu_hours_lost": self.gpu_hours_lost,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def start_request_to_proto(request: CampaignRequest) -> admin_pb2.StartMaintenanceRequest:
    """The ``StartMaintenance`` request of ``request``."""
    spec = admin_pb2.MaintenanceSpec(
        selector=request.selector,
        max_unavailable=request.max_unavailable,
        per_domain=request.per_domain,
        busy=request.busy,
        force=request.force,
        health_check=request.health_check,
        command=list(request.command),
        external=request.external,
        timeout_s=request.timeout_s,
    )
    if request.max_failures is not None:
        spec.max_failures = request.max_failures
    set_time(spec, "not_before", request.not_before)
    set_time(spec, "deadline", request.deadline)
    return admin_pb2.StartMaintenanceRequest(name=request.name, spec=spec)


def campaign_view_from_proto(msg: admin_pb2.MaintenanceCampaign) -> CampaignView:
    """A campaign read from the wire."""
    return CampaignView(
        name=msg.name,
        state=msg.state,
        reason=msg.reason,
        selector=msg.spec.selector,
        max_unavailable=msg.spec.max_unavailable,
        external=msg.spec.external,
        command=tuple(msg.spec.command),
        hosts=tuple(
            CampaignHostView(h.host, h.state, h.reason, h.attempts, get_time(h, "since"), h.output)
            for h in msg.hosts
        ),
        jobs_moved=tuple(msg.jobs_moved),
        jobs_waited=tuple(msg.jobs_waited),
        gpu_hours_lost=msg.gpu_hours_lost,
        created_at=get_time(msg, "created_at"),
        updated_at=get_time(msg, "updated_at"),
    )
