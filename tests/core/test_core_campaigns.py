"""Maintenance campaigns in the core: pacing, busy hosts, failures, restarts, bad input."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from core_builders import Harness, cluster

from scheduler.core.actions import RunMaintenance
from scheduler.core.campaign_records import (
    BusyPolicy,
    CampaignSpec,
    CampaignState,
    HostPhase,
)
from scheduler.core.events import (
    CampaignControlRequested,
    CampaignStartRequested,
    MaintenanceReported,
    SchedulerStarted,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import JobState, NodeState
from topology.errors import FirsthopError

C = CampaignState
P = HostPhase
N = NodeState


def _start(h: Harness, name: str = "drv", **fields: Any) -> None:
    fields.setdefault("selector", "all")
    fields.setdefault("command", ("/usr/bin/upgrade", "--to", "550"))
    h.handle(CampaignStartRequested(h.clock.now(), CampaignSpec(name=name, **fields)))


def _commands(h: Harness, since: int = 0) -> list[RunMaintenance]:
    return [a for a in h.actions[since:] if isinstance(a, RunMaintenance)]


def _report(h: Harness, cmd: RunMaintenance, ok: bool = True, detail: str = "") -> None:
    h.handle(
        MaintenanceReported(
            h.clock.now(), cmd.campaign, cmd.node, cmd.attempt, cmd.step, ok, detail, "out"
        )
    )


def _out_of_service(h: Harness) -> int:
    """Nodes out of service, but the campaigns' failed hosts (``--max-failures`` bounds those)."""
    failed = {
        e.host for c in h.scheduler.campaigns.all.values() for e in c.hosts if e.phase is P.FAILED
    }
    return sum(1 for n in h.state.nodes.values() if n.state is not N.READY and n.name not in failed)


def _play(
    h: Harness, *, fail: frozenset[str] | set[str] = frozenset(), budget: int = 1
) -> list[str]:
    """Play the agents until no command is left; returns the action command ids run."""
    ran: list[str] = []
    done: set[str] = set()
    for _ in range(200):
        todo = [c for c in _commands(h) if c.command_id not in done]
        if not todo:
            h.tick()
            todo = [c for c in _commands(h) if c.command_id not in done]
            if not todo:
                return ran
        for cmd in todo:
            done.add(cmd.command_id)
            assert _out_of_service(h) <= budget
            if cmd.step == "action":
                ran.append(cmd.command_id)
            _report(h, cmd, ok=cmd.node not in fail or cmd.step != "action", detail="exit 3")
    raise AssertionError("campaign never settled")


def test_idle_fleet_one_host_at_a_time_each_action_once() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    _start(h)
    first = _commands(h)
    assert [(c.node, c.step) for c in first] == [(h.hosts[0], "action")]
    assert first[0].argv == ("/usr/bin/upgrade", "--to", "550")
    ran = _play(h)
    assert sorted(ran) == sorted(f"maint:drv:{host}:1:action" for host in h.hosts)
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.SUCCEEDED
    assert {e.phase for e in campaign.hosts} == {P.DONE}
    assert {n.state for n in h.state.nodes.values()} == {N.READY}
    assert h.store.load().campaigns[0] == campaign


def test_whole_idle_leaf_taken_at_once_within_budget() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    _start(h, max_unavailable="2")
    assert sorted(c.node for c in _commands(h)) == sorted(h.hosts[:2])
    assert _out_of_service(h) == 2


def test_busy_wait_drains_and_waits_for_the_job() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(16)
    h.tick()
    h.start(job)
    _start(h, busy=BusyPolicy.WAIT, max_unavailable="2")
    campaign = h.scheduler.campaigns.all["drv"]
    assert {e.phase for e in campaign.hosts} == {P.DRAINING}
    assert campaign.jobs_waited == (job,)
    assert {h.state.nodes[x].state for x in h.hosts} == {N.DRAINING}
    assert not _commands(h)
    h.finish(job)
    assert h.job(job).state is JobState.SUCCEEDED
    h.tick()
    assert sorted(c.node for c in _commands(h)) == sorted(h.hosts)
    _play(h, budget=2)
    assert h.scheduler.campaigns.all["drv"].state is C.SUCCEEDED


def test_no_new_job_lands_on_a_draining_host() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(8)
    h.tick()
    h.start(job)
    busy = h.job(job).allocation
    assert busy is not None
    _start(h, selector=busy.hosts[0])
    other = h.submit(8)
    h.tick()
    alloc = h.job(other).allocation
    assert alloc is not None
    assert alloc.hosts[0] != busy.hosts[0]


def test_max_failures_pauses_and_resume_retries() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    _start(h, max_failures=2)
    bad = {h.hosts[0], h.hosts[1]}
    _play(h, fail=bad)
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.PAUSED
    assert campaign.reason.startswith("max_failures: 2 hosts failed")
    for host in bad:
        entry = campaign.host(host)
        assert entry is not None
        assert entry.phase is P.FAILED
        assert entry.reason == "action_failed: exit 3"
        node = h.state.nodes[host]
        assert node.state is N.DRAINED
        assert "action_failed" in node.reason
    assert campaign.count(P.DONE) == 0  # nothing rolled on after the second failure
    h.handle(CampaignControlRequested(h.clock.now(), "drv", "resume"))
    retried = _commands(h)[-2:]
    assert sorted(c.command_id for c in retried) == sorted(f"maint:drv:{x}:2:action" for x in bad)
    ran = _play(h, budget=2)  # the two retried hosts were out already; nothing else joins them
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.SUCCEEDED
    assert {e.attempts for e in campaign.hosts if e.host in bad} == {2}
    assert sorted(ran).count(f"maint:drv:{h.hosts[0]}:2:action") == 1


def test_failed_check_leaves_the_host_drained() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    _start(h, selector=h.hosts[0])
    (action,) = _commands(h)
    mark = len(h.actions)
    _report(h, action)
    (check,) = _commands(h, mark)
    assert check.step == "check"
    assert check.argv == ()
    _report(h, check, ok=False, detail="gpu 1 missing")
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.FAILED
    assert h.state.nodes[h.hosts[0]].state is N.DRAINED


def test_restart_neither_repeats_nor_skips() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    _start(h)
    (first,) = _commands(h)
    _report(h, first)  # action done; the check is in flight when the scheduler dies
    stored = h.store.load()
    h.scheduler = Scheduler(
        h.topology.index,
        h.config,
        jobs=stored.jobs,
        nodes=stored.nodes,
        queues=stored.queues,
        campaigns=stored.campaigns,
    )
    mark = len(h.actions)
    h.handle(SchedulerStarted(h.clock.now()))
    resent = _commands(h, mark)
    assert [(c.node, c.step, c.attempt) for c in resent] == [(first.node, "check", 1)]
    ran = _play(h)
    actions = [c.command_id for c in _commands(h) if c.step == "action"]
    assert sorted(set(actions)) == sorted(f"maint:drv:{x}:1:action" for x in h.hosts)
    assert f"maint:drv:{first.node}:1:action" not in ran[1:]
    assert h.scheduler.campaigns.all["drv"].state is C.SUCCEEDED


def test_stale_report_is_ignored() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    _start(h, selector=h.hosts[0])
    (action,) = _commands(h)
    _report(h, replace(action, attempt=7), ok=False)
    entry = h.scheduler.campaigns.all["drv"].host(h.hosts[0])
    assert entry is not None
    assert entry.phase is P.IN_MAINTENANCE


def test_external_campaign_hands_hosts_over() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    _start(h, command=(), external=True)
    assert not _commands(h)
    campaign = h.scheduler.campaigns.all["drv"]
    ready = [e.host for e in campaign.hosts if e.phase is P.IN_MAINTENANCE]
    assert ready == [h.hosts[0]]
    with pytest.raises(FirsthopError) as err:
        h.handle(MaintenanceReported(h.clock.now(), "drv", h.hosts[1], None, "external", True))
    assert err.value.reason == "invalid_campaign_state"
    h.handle(MaintenanceReported(h.clock.now(), "drv", h.hosts[0], None, "external", True))
    (check,) = _commands(h)
    assert check.step == "check"


def test_pause_stops_new_waves_and_abort_returns_draining_hosts() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(8)
    h.tick()
    h.start(job)
    _start(h, max_unavailable="2")
    h.handle(CampaignControlRequested(h.clock.now(), "drv", "pause", "change window"))
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.PAUSED
    assert campaign.reason == "change window"
    h.handle(CampaignControlRequested(h.clock.now(), "drv", "abort"))
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.ABORTED
    alloc = h.job(job).allocation
    assert alloc is not None
    assert h.state.nodes[alloc.hosts[0]].state is N.READY


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"name": "bad name"}, "invalid_campaign"),
        ({"external": True}, "invalid_campaign"),
        ({"command": ()}, "invalid_campaign"),
        ({"selector": "nosuchhost"}, "invalid_selector"),
        ({"selector": "rack=3"}, "invalid_selector"),
        ({"max_unavailable": "0"}, "invalid_budget"),
        ({"per_domain": "rack=1"}, "unknown_tier"),
        ({"max_failures": 0}, "invalid_campaign"),
    ],
)
def test_bad_campaign_is_refused_and_changes_nothing(fields: dict[str, Any], reason: str) -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    name = fields.pop("name", "drv")
    with pytest.raises(FirsthopError) as err:
        _start(h, name=name, **fields)
    assert err.value.reason == reason
    assert not h.scheduler.campaigns.all
    assert {n.state for n in h.state.nodes.values()} == {N.READY}


def test_selectors() -> None:
    h = Harness(cluster(2, 2, 2))
    h.register()
    index = h.topology.index
    leaf = index.domain_names[1][0]
    _start(h, name="a", selector=leaf)
    assert len(h.scheduler.campaigns.all["a"].hosts) == 2
    _start(h, name="b", selector=f"{h.hosts[0]},{h.hosts[5]}")
    assert [e.host for e in h.scheduler.campaigns.all["b"].hosts] == [h.hosts[0], h.hosts[5]]
    _start(h, name="c", selector="agent_version=test")
    assert len(h.scheduler.campaigns.all["c"].hosts) == len(h.hosts)
    _start(h, name="a", selector=leaf)  # the same request again changes nothing
    with pytest.raises(FirsthopError) as err:
        _start(h, name="a", selector="all")
    assert err.value.reason == "campaign_exists"


def test_per_domain_budget_holds_one_host_per_leaf() -> None:
    h = Harness(cluster(1, 2, 3))
    h.register()
    _start(h, max_unavailable="4", per_domain="leaf=1")
    index = h.topology.index
    first = _commands(h)
    leaves = {int(index.ancestors_of(index.host_ids[c.node])[1]) for c in first}
    assert len(first) == 2
    assert len(leaves) == 2
    _play(h, budget=2)
    assert h.scheduler.campaigns.all["drv"].state is C.SUCCEEDED


def test_not_before_and_deadline() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    now = h.clock.now()
    _start(
        h,
        not_before=now + timedelta(seconds=60),
        deadline=now + timedelta(seconds=90),
    )
    assert h.scheduler.campaigns.all["drv"].state is C.PENDING
    assert not _commands(h)
    h.wait(61)
    h.tick()
    assert h.scheduler.campaigns.all["drv"].state is C.RUNNING
    (first,) = _commands(h)
    h.wait(30)
    h.tick()  # past the deadline: the host in flight finishes, no other is taken
    mark = len(h.actions)
    _report(h, first)
    (check,) = _commands(h, mark)
    _report(h, check)
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.FAILED
    assert campaign.reason == "deadline_passed: 1 hosts not done"
    assert [e.phase for e in campaign.hosts] == [P.DONE, P.WAITING]


def test_a_host_never_registered_waits_with_the_reason() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register([h.hosts[0]])
    _start(h, max_unavailable="2")  # the unregistered host is out already: one of two left
    _play(h, budget=2)
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.RUNNING
    entry = campaign.host(h.hosts[1])
    assert entry is not None
    assert (entry.phase, entry.reason) == (P.WAITING, "node not in service: UNKNOWN")
    h.register([h.hosts[1]])
    _play(h, budget=2)
    assert h.scheduler.campaigns.all["drv"].state is C.SUCCEEDED
