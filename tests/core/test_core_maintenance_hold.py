"""``--busy wait`` campaigns hold their WAITING hosts against new jobs that would overlap."""

from __future__ import annotations

from datetime import timedelta

import pytest
from core_builders import Harness, cluster

from scheduler.core.actions import RunMaintenance
from scheduler.core.campaign_records import (
    BusyPolicy,
    Campaign,
    CampaignHost,
    CampaignSpec,
    CampaignState,
    HostPhase,
)
from scheduler.core.events import (
    CampaignControlRequested,
    CampaignStartRequested,
    MaintenanceReported,
)
from scheduler.core.maintenance_hold import REASON, hold_of
from scheduler.core.states import JobState, NodeState

C = CampaignState
P = HostPhase
TIMEOUT_S = 3600.0


def _held() -> tuple[Harness, list[str], list[str]]:
    """Eight hosts; one runs a job; a ``--busy wait`` campaign over four idle others with a
    budget of one host.

    The campaign takes one host at once and leaves it in maintenance (no report), so three
    wait (idle, ranked by name: reached in about 0, 0 and ``TIMEOUT_S`` seconds). Returns the
    harness, the three waiting hosts in that order, and the three hosts outside the campaign.
    """
    h = Harness(cluster(1, 2, 4))
    h.register()
    first = h.submit(8, job_id="first")
    h.tick()
    h.start(first)
    others = [x for x in h.hosts if x not in h.hosts_of(first)]
    spec = CampaignSpec(
        name="drv",
        selector=",".join(others[:4]),
        max_unavailable="1",
        busy=BusyPolicy.WAIT,
        command=("/usr/bin/upgrade",),
        timeout_s=TIMEOUT_S,
    )
    h.handle(CampaignStartRequested(h.clock.now(), spec))
    campaign = h.scheduler.campaigns.all["drv"]
    assert sorted(e.phase for e in campaign.hosts) == sorted([P.IN_MAINTENANCE] + [P.WAITING] * 3)
    waiting = sorted(e.host for e in campaign.hosts if e.phase is P.WAITING)
    return h, waiting, others[4:]


def test_long_jobs_go_around_waiting_hosts_and_wait_when_nothing_else_fits() -> None:
    h, _, outside = _held()
    longs = [h.submit(8, job_id=f"long{i}") for i in range(3)]
    h.tick()
    assert sorted(x for j in longs for x in h.hosts_of(j)) == outside
    extra = h.submit(8, job_id="extra")
    limited = h.submit(8, job_id="limited", time_limit_s=int(TIMEOUT_S) + 1)
    h.tick(5)
    assert h.states(extra, limited) == [JobState.PENDING, JobState.PENDING]
    why = h.scheduler.explain(extra, h.clock.now())
    assert why.reason == REASON
    assert "drv" in why.message
    assert any("campaign drv holds 3" in d for d in why.details)
    # Running jobs are untouched: nothing was stopped or moved.
    assert h.states("first", *longs) == [JobState.RUNNING] + [JobState.ADMITTED] * 3
    assert not h.stops()


def test_a_short_job_may_use_a_host_the_campaign_reaches_after_it_ends() -> None:
    h, waiting, _ = _held()
    for i in range(3):
        h.submit(8, job_id=f"long{i}")
    h.tick()
    short = h.submit(8, job_id="short", time_limit_s=600)
    h.tick()
    # The first two waiting hosts are in the next two waves (held from now); the third is
    # reached after about TIMEOUT_S, when the short job has ended.
    assert h.hosts_of(short) == (waiting[2],)


@pytest.mark.parametrize("how", ["abort", "pause", "finish"])
def test_hosts_take_anything_again_once_the_campaign_stops_holding(how: str) -> None:
    h, held, _ = _held()
    for i in range(3):
        h.submit(8, job_id=f"long{i}")
    h.tick()
    waiting = h.submit(8, job_id="waiting")
    h.tick()
    assert h.job(waiting).state is JobState.PENDING
    if how == "finish":
        _play(h)
        assert h.scheduler.campaigns.all["drv"].state is C.SUCCEEDED
    else:
        h.handle(CampaignControlRequested(h.clock.now(), "drv", how, "window closed"))
    h.tick()
    assert h.job(waiting).state is not JobState.PENDING
    campaign_hosts = {e.host for e in h.scheduler.campaigns.all["drv"].hosts}
    assert h.hosts_of(waiting)[0] in (campaign_hosts if how == "finish" else held)
    assert h.scheduler.explain(waiting, h.clock.now()).reason != REASON


def test_migrate_campaigns_hold_nothing() -> None:
    h = Harness(cluster(1, 1, 4))
    h.register()
    spec = CampaignSpec(
        name="mig",
        selector="all",
        max_unavailable="1",
        busy=BusyPolicy.MIGRATE,
        command=("/usr/bin/upgrade",),
    )
    h.handle(CampaignStartRequested(h.clock.now(), spec))
    job = h.submit(8)
    h.tick()
    assert h.job(job).state is not JobState.PENDING


def test_reach_estimate_idle_first_then_observed_pace() -> None:
    start = Harness(cluster(1, 1, 1)).clock.now()
    names = [f"n{i}" for i in range(8)]
    spec = CampaignSpec(
        name="c", selector="all", max_unavailable="2", command=("x",), timeout_s=1000.0
    )
    entries = [CampaignHost(n, P.DONE if i < 2 else P.WAITING) for i, n in enumerate(names)]
    campaign = Campaign(spec, C.RUNNING, start, start, tuple(entries))
    # Two hosts done in 200 s with a budget of two: one wave took 200 s (< the timeout).
    hold = hold_of(
        campaign, start + timedelta(seconds=200), cluster_hosts=8, host_jobs={"n2": {"j"}}
    )
    assert hold is not None
    assert hold.hosts == ("n3", "n4", "n5", "n6", "n7", "n2")  # idle first, busy n2 last
    assert hold.reach_s == (0.0, 0.0, 0.0, 0.0, 200.0, 200.0)
    assert hold.closed_to(None) == 6
    assert hold.closed_to(200) == 4
    assert hold.closed_to(201) == 6
    # Before any host finished, a wave is expected to last the action's timeout.
    fresh = Campaign(spec, C.RUNNING, start, start, tuple(CampaignHost(n) for n in names))
    first = hold_of(fresh, start, cluster_hosts=8, host_jobs={})
    assert first is not None
    assert first.reach_s[-1] == 2000.0
    for state in (C.PAUSED, C.PENDING, C.ABORTED, C.SUCCEEDED):
        paused = Campaign(spec, state, start, start, tuple(CampaignHost(n) for n in names))
        assert hold_of(paused, start, cluster_hosts=8, host_jobs={}) is None


def _play(h: Harness) -> None:
    """Report every maintenance command ok (and let the campaign take its next waves)."""
    done: set[str] = set()
    for _ in range(100):
        todo = [a for a in h.actions if isinstance(a, RunMaintenance) and a.command_id not in done]
        if not todo:
            h.tick()
            if h.scheduler.campaigns.all["drv"].state is not C.RUNNING:
                return
            continue
        for cmd in todo:
            done.add(cmd.command_id)
            h.handle(
                MaintenanceReported(
                    h.clock.now(), cmd.campaign, cmd.node, cmd.attempt, cmd.step, True, "", ""
                )
            )
    raise AssertionError("campaign never finished")


def test_nodes_held_are_still_ready() -> None:
    h, waiting, _ = _held()
    assert [h.state.nodes[x].state for x in waiting] == [NodeState.READY] * 3
