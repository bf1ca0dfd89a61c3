"""Maintenance campaigns in every store: exact round trip, versions, survival of a reopen."""

from __future__ import annotations

from dataclasses import replace

import pytest
from store_records import StoreKit, at

from scheduler.core.actions import ChangeSet
from scheduler.core.campaign_records import (
    BusyPolicy,
    Campaign,
    CampaignHost,
    CampaignSpec,
    CampaignState,
    HealthCheckDepth,
    HostPhase,
)
from scheduler.store.protocol import VersionConflictError


def rich_campaign(name: str = "drv-550", *, version: int = 1) -> Campaign:
    spec = CampaignSpec(
        name=name,
        selector="leaf-0,h002",
        max_unavailable="5%",
        per_domain="leaf=1",
        busy=BusyPolicy.WAIT,
        force=True,
        health_check=HealthCheckDepth.DEEP,
        max_failures=2,
        not_before=at(10),
        deadline=at(99_000),
        command=("/opt/upgrade", "--driver", "550 beta"),
        timeout_s=900.0,
    )
    return Campaign(
        spec=spec,
        state=CampaignState.PAUSED,
        created_at=at(1),
        updated_at=at(70),
        hosts=(
            CampaignHost("h001", HostPhase.DONE, "", 1, at(60), "ok\n"),
            CampaignHost("h002", HostPhase.FAILED, "action_failed: exit 3", 2, at(65), "é"),
            CampaignHost("h003"),
        ),
        reason="max_failures: 1 hosts failed (h002)",
        jobs_waited=("j1", "j2"),
        gpu_hours_lost=1.5,
        version=version,
    )


def test_campaigns_round_trip_exactly(kit: StoreKit) -> None:
    store = kit.open()
    campaign = rich_campaign()
    store.save(ChangeSet(campaigns=(campaign,)))
    assert store.load().campaigns == (campaign,)
    newer = replace(campaign, state=CampaignState.RUNNING, reason="", version=2)
    store.save(ChangeSet(campaigns=(newer,)))
    assert store.load().campaigns == (newer,)


@pytest.mark.parametrize("version", [1, 2])
def test_stale_campaign_versions_are_refused(kit: StoreKit, version: int) -> None:
    store = kit.open()
    store.save(ChangeSet(campaigns=(rich_campaign(version=2),)))
    with pytest.raises(VersionConflictError):
        store.save(ChangeSet(campaigns=(rich_campaign(version=version),)))
    assert store.load().campaigns == (rich_campaign(version=2),)


def test_campaigns_survive_reopening(durable_kit: StoreKit) -> None:
    store = durable_kit.open()
    store.save(ChangeSet(campaigns=(rich_campaign(),)))
    store.close()
    assert durable_kit.open().load().campaigns == (rich_campaign(),)
