"""Maintenance campaigns on the admin wire: the operator's request to a campaign spec, the
campaign record to its wire form (``proto/firsthop/v1/admin.proto``, ``Maintenance*``).

Must not import ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from firsthop.v1 import admin_pb2
from scheduler.api.spec_serde import get_time, set_time
from scheduler.core.campaign_records import (
    BusyPolicy,
    Campaign,
    CampaignSpec,
    HealthCheckDepth,
)
from topology.errors import InvalidInputError

DEFAULT_TIMEOUT_S = 3600.0


def campaign_spec_from_proto(name: str, msg: admin_pb2.MaintenanceSpec) -> CampaignSpec:
    """The spec of ``StartMaintenance`` (defaults: budget 1, busy wait, fast check, 1 h).

    Raises:
        InvalidInputError: ``invalid_campaign`` for an unknown busy policy or check depth.
    """
    try:
        busy = BusyPolicy(msg.busy or "wait")
        depth = HealthCheckDepth(msg.health_check or "fast")
    except ValueError as exc:
        raise InvalidInputError(
            f"{exc} (busy: wait|migrate, health check: fast|deep)", reason="invalid_campaign"
        ) from None
    return CampaignSpec(
        name=name,
        selector=msg.selector or "all",
        max_unavailable=msg.max_unavailable or "1",
        per_domain=msg.per_domain,
        busy=busy,
        force=msg.force,
        health_check=depth,
        max_failures=msg.max_failures if msg.HasField("max_failures") else None,
        not_before=get_time(msg, "not_before"),
        deadline=get_time(msg, "deadline"),
        command=tuple(msg.command),
        external=msg.external,
        timeout_s=msg.timeout_s or DEFAULT_TIMEOUT_S,
    )


def campaign_spec_to_proto(spec: CampaignSpec) -> admin_pb2.MaintenanceSpec:
    """The wire form of a campaign's spec."""
    msg = admin_pb2.MaintenanceSpec(
        selector=spec.selector,
        max_unavailable=spec.max_unavailable,
        per_domain=spec.per_domain,
        busy=spec.busy.value,
        force=spec.force,
        health_check=spec.health_check.value,
        command=list(spec.command),
        external=spec.external,
        timeout_s=spec.timeout_s,
    )
    if spec.max_failures is not None:
        msg.max_failures = spec.max_failures
    set_time(msg, "not_before", spec.not_before)
    set_time(msg, "deadline", spec.deadline)
    return msg


def campaign_to_proto(campaign: Campaign) -> admin_pb2.MaintenanceCampaign:
    """The wire form of a campaign and its hosts."""
    msg = admin_pb2.MaintenanceCampaign(
        name=campaign.name,
        state=campaign.state.value,
        reason=campaign.reason,
        spec=campaign_spec_to_proto(campaign.spec),
        jobs_moved=list(campaign.jobs_moved),
        jobs_waited=list(campaign.jobs_waited),
        gpu_hours_lost=campaign.gpu_hours_lost,
    )
    for entry in campaign.hosts:
        host = msg.hosts.add(
            host=entry.host,
            state=entry.phase.value,
            reason=entry.reason,
            attempts=entry.attempts,
            output=entry.output,
        )
        set_time(host, "since", entry.since)
    set_time(msg, "created_at", campaign.created_at)
    set_time(msg, "updated_at", campaign.updated_at)
    return msg
