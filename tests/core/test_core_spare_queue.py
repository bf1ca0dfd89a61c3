"""Spare hosts serve repairs through the queue too: a job back in the queue after a failure
may be placed on them; new jobs and preempted ones may not (unless preemptible)."""

from __future__ import annotations

from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.events import HeartbeatReceived, NodeSpareSet
from scheduler.core.states import Health, JobState

J = JobState
CKPT = {"dir": "/ckpt", "interval_s": 60}


def _fail(h: Harness, host: str) -> None:
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.FAILED, {}, "xid 79"))


def test_a_job_requeued_by_a_failure_may_use_the_spare_pool() -> None:
    h = Harness(cluster(1, 1, 3), config=SchedulerConfig(repair_in_place=False))
    h.register()
    spare = h.hosts[2]
    h.handle(NodeSpareSet(h.clock.now(), (spare,)))
    job = h.running(16, max_restarts=3, checkpoint=CKPT)
    assert spare not in h.hosts_of(job)
    first, second = h.hosts_of(job)
    _fail(h, first)
    h.stopped(job, attempt=0)
    h.tick()
    assert h.job(job).state is J.ADMITTED
    assert set(h.hosts_of(job)) == {second, spare}
    h.store_matches()


def test_new_jobs_stay_off_the_spare_pool() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    spare = h.hosts[1]
    h.handle(NodeSpareSet(h.clock.now(), (spare,)))
    h.running(8)
    waiting = h.submit(8)
    h.tick()
    assert h.job(waiting).state is J.PENDING
    flexible = h.submit(8, preemptible=True)
    h.tick()
    assert h.hosts_of(flexible) == (spare,)


def test_a_failure_while_restarting_after_a_repair_goes_to_the_queue_and_onto_spares() -> None:
    h = Harness(cluster(1, 1, 5))  # in-place repair (the default)
    h.register()
    spares = h.hosts[3:]
    h.handle(NodeSpareSet(h.clock.now(), spares))
    job = h.running(16, max_restarts=5, checkpoint=CKPT)
    blocker = h.running(8)
    first, second = h.hosts_of(job)
    assert h.hosts_of(blocker) == (h.hosts[2],)
    _fail(h, first)
    h.stopped(job, attempt=0)
    assert h.job(job).state is J.ADMITTED  # repaired in place onto a spare
    assert set(h.hosts_of(job)) - {second} <= set(spares)
    _fail(h, second)  # before its ranks run again: through the queue
    requeued = h.job(job)
    assert requeued.state is J.REQUEUED
    assert requeued.repairs[-1].method == "queue"
    h.stopped(job, attempt=1)
    h.tick()
    # Its other hosts are down or busy; the spare pool takes it.
    assert h.job(job).state is J.ADMITTED
    assert set(h.hosts_of(job)) == set(spares)
    h.store_matches()
