"""Maintenance campaign metrics: hosts per state, jobs waited on, GPU-hours lost."""

from __future__ import annotations

from core_builders import Harness, cluster
from prometheus_client import generate_latest

from scheduler.core.campaign_records import CampaignSpec
from scheduler.core.events import CampaignStartRequested
from scheduler.runtime.metrics import Metrics
from scheduler.runtime.runtime import snapshot_of


def test_live_campaigns_are_exported() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(8)
    h.tick()
    h.start(job)
    spec = CampaignSpec(name="drv", selector="all", max_unavailable="2", command=("up",))
    h.handle(CampaignStartRequested(h.clock.now(), spec))
    metrics = Metrics()
    metrics.set_snapshot(snapshot_of(h.state, 2, h.scheduler.campaigns.all.values()))
    text = generate_latest(metrics.registry).decode()
    assert 'firsthop_maintenance_hosts{campaign="drv",state="IN_MAINTENANCE"} 1.0' in text
    assert 'firsthop_maintenance_hosts{campaign="drv",state="DRAINING"} 1.0' in text
    assert 'firsthop_maintenance_jobs{campaign="drv",kind="waited"} 1.0' in text
    assert 'firsthop_maintenance_gpu_hours_lost{campaign="drv"} 0.0' in text
