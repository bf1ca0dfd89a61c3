"""Preemption: victims chosen for least lost work and a good placement; requeued once stopped."""

from __future__ import annotations

from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.states import JobState

J = JobState


def _fill_low(h: Harness, count: int, gpus: int = 8, **fields: object) -> list[str]:
    jobs = [h.submit(gpus, queue="low", **fields) for _ in range(count)]
    h.tick()
    for job in jobs:
        h.start(job)
    return jobs


def _queues(h: Harness) -> None:
    h.set_queue("low", priority=0)
    h.set_queue("high", priority=10)


def test_victims_with_least_lost_work_are_chosen() -> None:
    h = Harness(cluster(1, 1, 4))
    _queues(h)
    h.register()
    a, b, c, d = _fill_low(h, 4)
    h.wait(50)
    h.checkpoint(b)  # b: 50 s lost by t=100
    h.wait(30)
    h.checkpoint(d)  # d: 20 s lost
    h.wait(10)
    h.checkpoint(a)  # a: 10 s lost
    h.wait(10)  # t = 100; c never checkpointed: 100 s lost
    high = h.submit(16, queue="high")
    h.tick()
    report = h.scheduler.last_cycle
    assert report is not None
    assert sorted(report.preempted) == sorted([a, d])
    assert h.states(a, b, c, d) == [J.PREEMPTED, J.RUNNING, J.RUNNING, J.PREEMPTED]
    assert h.job(high).state is J.PENDING
    assert h.scheduler.explain(high, h.clock.now()).reason == "preempting"
    stops = [s for s in h.stops() if s.job_id in (a, d)]
    assert {s.reason for s in stops} == {"preempted"}
    assert all(s.grace_s == h.config.stop_grace_s for s in stops)
    victims_hosts = set(h.hosts_of(a)) | set(h.hosts_of(d))
    # Ranks stop: the victims are requeued with the lost work recorded, the job gets their GPUs.
    h.stopped(a)
    h.stopped(d)
    assert h.states(a, d) == [J.REQUEUED, J.REQUEUED]
    failure = h.job(a).failures[-1]
    assert failure.reason == "preempted"
    assert 10.0 <= failure.lost_s <= 12.0
    assert h.job(a).restarts == 1
    assert h.job(a).fault_restarts == 0
    h.tick()
    assert h.job(high).state is J.ADMITTED
    assert set(h.hosts_of(high)) == victims_hosts
    h.store_matches()


def test_ties_in_lost_work_go_to_the_better_placement() -> None:
    h = Harness(cluster(1, 2, 2))  # two leaves of two hosts
    _queues(h)
    h.register()
    low = [h.submit(8, queue="low") for _ in range(4)]
    h.tick()  # admitted but not started: nothing to lose
    high = h.submit(16, queue="high")
    h.tick()
    report = h.scheduler.last_cycle
    assert report is not None
    assert len(report.preempted) == 2
    index = h.topology.index
    leaves = {int(index.ancestors[index.host_ids[h.hosts_of(v)[0]], 1]) for v in report.preempted}
    assert len(leaves) == 1  # both victims under one leaf: the cheaper placement
    for victim in report.preempted:
        h.stopped(victim)
    h.tick()
    assert h.job(high).state is J.ADMITTED
    assert all(h.job(j).state is not J.FAILED for j in low)


def test_only_lower_priority_jobs_are_preempted() -> None:
    h = Harness(cluster(1, 1, 2))
    h.set_queue("a", priority=5)
    h.set_queue("b", priority=5)
    h.register()
    same_level = [h.submit(8, queue="a") for _ in range(2)]
    h.tick()
    other_queue = h.submit(8, queue="b", priority=100)
    h.tick()
    assert h.job(other_queue).state is J.PENDING
    assert all(h.job(j).state is J.ADMITTED for j in same_level)
    # Within one queue, a higher job priority may preempt.
    h.cancel(other_queue)
    urgent = h.submit(8, queue="a", priority=1)
    h.tick()
    report = h.scheduler.last_cycle
    assert report is not None
    assert len(report.preempted) == 1
    assert h.job(urgent).state is J.PENDING


def test_preemption_can_be_turned_off() -> None:
    h = Harness(cluster(1, 1, 2), config=SchedulerConfig(preemption=False))
    _queues(h)
    h.register()
    low = _fill_low(h, 2, time_limit_s=100)
    high = h.submit(8, queue="high")
    h.tick()
    assert h.states(*low) == [J.RUNNING, J.RUNNING]
    assert h.scheduler.explain(high, h.clock.now()).reason == "reserved"


def test_head_waits_for_its_victims_and_nobody_takes_their_gpus() -> None:
    h = Harness(cluster(1, 1, 3))
    _queues(h)
    h.register()
    low = _fill_low(h, 3)
    high = h.submit(16, queue="high")
    h.tick()
    victims = list(h.scheduler.last_cycle.preempted)  # type: ignore[union-attr]
    assert len(victims) == 2
    h.stopped(victims[0])
    sneaky = h.submit(8, queue="low", priority=0)
    h.tick()
    # No new victims; the freed host is kept for the head job.
    assert [j for j in low if h.job(j).state is J.PREEMPTED] == [victims[1]]
    assert h.job(sneaky).state is J.PENDING
    assert h.scheduler.explain(high, h.clock.now()).reason == "waiting_for_preemption"
    h.stopped(victims[1])
    h.tick()
    assert h.states(high, sneaky) == [J.ADMITTED, J.PENDING]


def test_slow_victims_get_a_forced_stop() -> None:
    h = Harness(cluster(1, 1, 1))
    _queues(h)
    h.register()
    (victim,) = _fill_low(h, 1)
    h.submit(8, queue="high")
    h.tick()
    assert h.job(victim).state is J.PREEMPTED
    mark = len(h.actions)
    h.wait(h.config.stop_grace_s)
    h.tick()
    forced = [s for s in h.stops(mark) if s.job_id == victim]
    assert forced
    assert all(s.grace_s == 0.0 and s.command_id.endswith(":force") for s in forced)
    assert h.job(victim).state is J.PREEMPTED


def test_lost_host_counts_as_stopped_for_a_preempted_job() -> None:
    h = Harness(cluster(1, 1, 2))
    _queues(h)
    h.register()
    (victim,) = _fill_low(h, 1, gpus=16)
    high = h.submit(8, queue="high")
    h.tick()
    assert h.job(victim).state is J.PREEMPTED
    first, second = h.hosts_of(victim)
    from scheduler.core.events import RanksStopped

    h.handle(RanksStopped(h.clock.now(), victim, first, 0))
    assert h.job(victim).state is J.PREEMPTED
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[second])
    h.tick()
    assert h.state.nodes[second].state.value == "LOST"
    assert h.job(victim).state is J.REQUEUED
    assert h.job(high).state is J.ADMITTED
