"""``--busy migrate`` in the core: jobs on a campaign's hosts are asked to checkpoint and only
their ranks there move; a job never stops without a fresh checkpoint unless ``--force``."""

from __future__ import annotations

from typing import Any

from core_builders import Harness, cluster

from scheduler.core.actions import RunMaintenance, StopRanks
from scheduler.core.campaign_records import BusyPolicy, CampaignSpec, CampaignState, HostPhase
from scheduler.core.context import UNBOUNDED_GRACE_S
from scheduler.core.events import (
    CampaignStartRequested,
    MaintenanceReported,
    RanksStopped,
    SchedulerStarted,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import JobState, NodeState

C = CampaignState
P = HostPhase
J = JobState
N = NodeState
CKPT = {"dir": "/ckpt", "signal": "SIGUSR1", "grace_s": 30}


def _running(h: Harness, gpus: int, *, checkpointed: bool = True, **fields: Any) -> str:
    job = h.submit(gpus, **fields)
    h.tick()
    h.start(job)
    if checkpointed and "checkpoint" in fields:
        h.clock.advance(1)
        h.checkpoint(job)
    return job


def _migrate(h: Harness, selector: str, **fields: Any) -> None:
    spec = CampaignSpec(
        name="drv",
        selector=selector,
        busy=BusyPolicy.MIGRATE,
        command=("/usr/bin/upgrade",),
        **fields,
    )
    h.handle(CampaignStartRequested(h.clock.now(), spec))


def _stops(h: Harness, job: str, since: int) -> list[StopRanks]:
    return [s for s in h.stops(since) if s.job_id == job]


def _answer(h: Harness, job: str) -> None:
    """Play the job's ranks: checkpoint on the request, then every host exits cleanly."""
    record = h.job(job)
    assert record.allocation is not None
    h.checkpoint(job)
    for host in record.allocation.hosts:
        h.handle(RanksStopped(h.clock.now(), job, host, record.restarts, clean=True))


def _finish_campaign(h: Harness) -> list[str]:
    """Report every maintenance command ok (ticking) until none is left; returns action ids."""
    done: set[str] = set()
    ran = []
    for _ in range(100):
        todo = [a for a in h.actions if isinstance(a, RunMaintenance) and a.command_id not in done]
        if not todo:
            h.tick()
            if h.scheduler.campaigns.all["drv"].state is not C.RUNNING:
                return ran
            continue
        for cmd in todo:
            done.add(cmd.command_id)
            if cmd.step == "action":
                ran.append(cmd.command_id)
            h.handle(
                MaintenanceReported(
                    h.clock.now(), cmd.campaign, cmd.node, cmd.attempt, cmd.step, True, "", ""
                )
            )
    raise AssertionError("campaign never finished")


def test_a_job_is_asked_to_checkpoint_and_only_its_ranks_on_the_host_move() -> None:
    h = Harness(cluster(1, 2, 4))  # 8 hosts: a 2-host job leaves 2 free in its leaf
    h.register()
    job = _running(h, 16, checkpoint=CKPT)
    before = {s.rank: (s.host, s.gpu) for s in h.job(job).allocation.ranks}  # type: ignore[union-attr]
    target, survivor = h.hosts_of(job)
    mark = len(h.actions)
    _migrate(h, target)
    stopping = h.job(job)
    assert stopping.state is J.PREEMPTED
    assert stopping.repair is not None
    assert stopping.repair.vacated == (target,)
    assert stopping.checkpoint_requested_at == h.clock.now()
    assert stopping.stop_deadline is None
    stops = _stops(h, job, mark)
    # The checkpoint request reaches every rank, with no SIGKILL after the grace.
    assert sorted(s.node for s in stops) == sorted([target, survivor])
    assert {(s.signal, s.grace_s) for s in stops} == {("SIGUSR1", UNBOUNDED_GRACE_S)}
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.moving == (job,)
    assert campaign.hosts[0].phase is P.DRAINING
    assert "checkpoint requested" in campaign.hosts[0].reason
    assert not [a for a in h.actions[mark:] if isinstance(a, RunMaintenance)]
    h.clock.advance(5)
    _answer(h, job)
    moved = h.job(job)
    assert moved.state is J.ADMITTED
    assert target not in h.hosts_of(job)
    after = {s.rank: (s.host, s.gpu) for s in moved.allocation.ranks}  # type: ignore[union-attr]
    assert {r for r in before if before[r] != after[r]} == {
        r for r, (host, _) in before.items() if host == target
    }
    assert moved.failures[-1].checkpointed
    assert moved.failures[-1].lost_s == 0.0
    assert moved.failures[-1].message == f"moved for maintenance campaign drv (off {target})"
    assert moved.fault_restarts == 0
    h.start(job)
    h.tick()
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.jobs_moved == (job,)
    assert campaign.moving == ()
    assert campaign.jobs_waited == ()
    assert campaign.gpu_hours_lost == 0.0
    assert h.state.nodes[target].state is N.DRAINED
    assert _finish_campaign(h) == [f"maint:drv:{target}:1:action"]
    assert h.scheduler.campaigns.all["drv"].state is C.SUCCEEDED
    assert h.job(job).state is J.RUNNING
    (repair,) = h.job(job).repairs
    assert repair.method == "partial"
    assert repair.moves[0][0] == target
    h.store_matches()


def test_a_job_that_does_not_answer_is_left_running_and_the_host_waits() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    job = _running(h, 16, checkpoint=CKPT)
    target = h.hosts_of(job)[0]
    mark = len(h.actions)
    _migrate(h, target)
    h.wait(120)
    h.tick()
    # Far past its 30 s grace: no forced stop, still holding its GPUs, the host waits.
    assert all(s.grace_s == UNBOUNDED_GRACE_S for s in _stops(h, job, mark))
    assert h.job(job).state is J.PREEMPTED
    assert target in h.hosts_of(job)
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.jobs_waited == (job,)
    assert "did not checkpoint within its grace (30 s)" in campaign.hosts[0].reason
    assert h.state.nodes[target].state is N.DRAINING
    assert not [a for a in h.actions if isinstance(a, RunMaintenance)]
    # It answers late: the move goes on.
    _answer(h, job)
    h.start(job)
    assert _finish_campaign(h) == [f"maint:drv:{target}:1:action"]
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.state is C.SUCCEEDED
    assert campaign.jobs_moved == (job,)


def test_force_kills_a_job_that_does_not_answer_and_counts_the_loss() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    job = _running(h, 16, checkpointed=False, checkpoint=CKPT)
    target = h.hosts_of(job)[0]
    h.wait(600)  # ten minutes of work since the start, no checkpoint
    mark = len(h.actions)
    _migrate(h, target, force=True)
    assert {s.grace_s for s in _stops(h, job, mark)} == {30.0}
    h.wait(31)
    h.tick()
    forced = [s for s in _stops(h, job, mark) if s.grace_s == 0.0]
    assert len(forced) == 2
    for host in h.hosts_of(job):
        h.handle(RanksStopped(h.clock.now(), job, host, 0))
    assert h.job(job).state is J.ADMITTED
    h.tick()
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.jobs_moved == (job,)
    # 16 GPUs for the 600 s of work since its start.
    assert abs(campaign.gpu_hours_lost - 16 * 600 / 3600) < 1e-6


def test_a_job_without_checkpoints_is_waited_for_unless_forced() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    job = _running(h, 16)
    target = h.hosts_of(job)[0]
    mark = len(h.actions)
    _migrate(h, target)
    h.tick()
    assert h.job(job).state is J.RUNNING
    assert not _stops(h, job, mark)
    campaign = h.scheduler.campaigns.all["drv"]
    assert campaign.jobs_waited == (job,)
    assert "no checkpoint spec" in campaign.hosts[0].reason

    forced = Harness(cluster(1, 2, 2))
    forced.register()
    job = _running(forced, 16)
    mark = len(forced.actions)
    _migrate(forced, forced.hosts_of(job)[0], force=True)
    assert forced.job(job).state is J.PREEMPTED
    assert {s.signal for s in _stops(forced, job, mark)} == {"SIGTERM"}
    forced.stopped(job)
    forced.tick()
    assert forced.job(job).failures[-1].message.startswith("moved for maintenance campaign drv")
    assert forced.scheduler.campaigns.all["drv"].jobs_moved == (job,)


def test_a_restart_in_the_middle_of_a_move_neither_asks_twice_nor_kills() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    job = _running(h, 16, checkpoint=CKPT)
    target = h.hosts_of(job)[0]
    _migrate(h, target)
    stored = h.store.load()
    assert stored.campaigns[0].moving == (job,)
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
    h.tick()
    # The request is sent again (same command ids), still without a SIGKILL after the grace.
    resent = _stops(h, job, mark)
    assert resent
    assert {s.grace_s for s in resent} == {UNBOUNDED_GRACE_S}
    assert h.job(job).failures[-1].message.startswith("moved for maintenance campaign drv")
    assert len(h.job(job).failures) == 1
    _answer(h, job)
    job_now = h.job(job)
    assert job_now.state in (J.ADMITTED, J.REQUEUED)
    h.tick()
    if h.job(job).state is J.ADMITTED:
        h.start(job)
    assert target not in h.hosts_of(job)
    assert _finish_campaign(h) == [f"maint:drv:{target}:1:action"]
    assert h.scheduler.campaigns.all["drv"].jobs_moved == (job,)


def test_a_run_just_started_is_asked_only_once_it_checkpointed_or_ran_its_grace() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    job = _running(h, 16, checkpointed=False, checkpoint=CKPT)
    target = h.hosts_of(job)[0]
    _migrate(h, target)
    # Its program may not handle the signal yet (default action: die without a checkpoint).
    assert h.job(job).state is J.RUNNING
    assert "settle" in h.scheduler.campaigns.all["drv"].hosts[0].reason
    h.clock.advance(1)
    h.checkpoint(job)
    h.tick()
    assert h.job(job).state is J.PREEMPTED
    other = Harness(cluster(1, 2, 2))
    other.register()
    job = _running(other, 16, checkpointed=False, checkpoint=CKPT)
    _migrate(other, other.hosts_of(job)[0])
    other.wait(20)
    other.tick()
    assert other.job(job).state is J.RUNNING
    other.wait(11)
    other.tick()
    assert other.job(job).state is J.PREEMPTED  # ran for its 30 s grace


def test_cancelling_a_job_that_does_not_answer_kills_it() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    job = _running(h, 16, checkpoint=CKPT)
    hosts = h.hosts_of(job)
    _migrate(h, hosts[0])
    mark = len(h.actions)
    h.cancel(job)
    assert h.job(job).state is J.CANCELLED
    # Its stop request would never escalate: the cancel sends a SIGKILL (a new command id).
    forced = _stops(h, job, mark)
    assert sorted(s.node for s in forced) == sorted(hosts)
    assert {s.grace_s for s in forced} == {0.0}
    assert all(s.command_id.endswith("force") for s in forced)
