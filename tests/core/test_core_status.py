"""Cluster status and job explanations: the numbers operators and users see."""

from __future__ import annotations

from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.events import NodeDrainRequested, NodeResumeRequested
from scheduler.core.states import JobState

J = JobState


def test_status_of_an_idle_cluster() -> None:
    h = Harness(cluster(2, 2, 4))  # 16 hosts, 128 GPUs
    h.register()
    status = h.scheduler.status(h.clock.now())
    assert (status.hosts, status.gpus, status.schedulable_gpus) == (16, 128, 128)
    assert (status.allocated_gpus, status.free_gpus, status.utilisation) == (0, 128, 0.0)
    assert status.largest_job == {"host": 8, "leaf": 32, "pod": 64, "cluster": 128}
    assert status.fits == {8: 16, 64: 2, 512: 0}
    tiers = {t.name: t for t in status.tiers}
    assert (tiers["leaf"].domains, tiers["leaf"].whole_free, tiers["leaf"].full) == (4, 4, 0)
    assert status.nodes_by_state == {"READY": 16}
    assert status.jobs_by_state == {}


def test_status_tracks_usage_fragmentation_and_queues() -> None:
    h = Harness(cluster(2, 2, 4))
    h.set_queue("research", gpu_quota=16, weight=2.0)
    h.register()
    whole_leaf = h.submit(32)
    crumbs = [h.submit(1) for _ in range(3)]
    h.tick()
    waiting = [h.submit(16, queue="research") for _ in range(2)]
    h.submit(128)
    h.tick()
    idle = next(n for n in h.hosts if not h.state.host_jobs.get(n))
    h.handle(NodeDrainRequested(h.clock.now(), idle, "maintenance"))
    status = h.scheduler.status(h.clock.now())
    assert status.allocated_gpus == 32 + 3 + 16
    assert status.schedulable_gpus == 120  # the drained host is out of service
    # 3 one-GPU jobs share one host: its other 5 GPUs are stranded for whole-host jobs.
    assert status.stranded_gpus == 5
    assert status.fits[8] == 16 - 4 - 1 - 2 - 1
    assert status.largest_job["leaf"] == 32
    assert status.largest_job["host"] == 8
    queues = {q.name: q for q in status.queues}
    assert queues["research"].held_gpus == 16
    assert queues["research"].pending_jobs == 1
    assert queues["default"].pending_jobs == 1
    assert queues["default"].pending_gpus == 128
    assert queues["default"].running_jobs == 4
    assert status.nodes_by_state == {"DRAINED": 1, "READY": 15}
    assert status.jobs_by_state == {"ADMITTED": 5, "PENDING": 2}
    assert h.job(whole_leaf).state is J.ADMITTED
    assert all(h.job(c).state is J.ADMITTED for c in crumbs)
    assert h.job(waiting[1]).state is J.PENDING


def test_explain_a_job_that_will_be_admitted_next_cycle() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(16)
    why = h.scheduler.explain(job, h.clock.now())
    assert why.reason == "next_cycle"
    assert why.would_place is not None
    assert len(why.would_place.hosts) == 2
    assert why.queue_position == 1


def test_explain_a_placed_job() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(16)
    h.tick()
    why = h.scheduler.explain(job, h.clock.now())
    assert (why.state, why.reason) == (J.ADMITTED, "placed")
    assert why.would_place is None
    assert "2 host(s)" in why.details[0]


def test_explain_cycle_budget() -> None:
    h = Harness(cluster(1, 1, 4), config=SchedulerConfig(max_placements_per_cycle=2))
    h.register()
    jobs = [h.submit(8) for _ in range(4)]
    h.tick()
    assert h.states(*jobs) == [J.ADMITTED, J.ADMITTED, J.PENDING, J.PENDING]
    assert h.scheduler.last_cycle is not None
    assert h.scheduler.last_cycle.truncated
    assert h.scheduler.explain(jobs[2], h.clock.now()).reason == "cycle_budget"
    h.tick()
    assert h.states(*jobs[2:]) == [J.ADMITTED, J.ADMITTED]


def test_refused_requests_are_not_retried_until_capacity_grows() -> None:
    h = Harness(cluster(1, 2, 2))  # two leaves of two hosts
    h.register()
    first_of_each_leaf = [h.hosts[0], h.hosts[2]]
    for host in first_of_each_leaf:
        h.handle(NodeDrainRequested(h.clock.now(), host))
    # One usable host per leaf: the counts allow a 2-host job, but not within one leaf.
    calls: list[str] = []
    real = h.scheduler.cache.place

    def counting(snapshot, job):  # type: ignore[no-untyped-def]
        calls.append(job.id)
        return real(snapshot, job)

    h.scheduler.cache.place = counting  # type: ignore[method-assign]
    same = [h.submit(16, placement={"max_leaves": 1}) for _ in range(4)]
    h.tick()
    report = h.scheduler.last_cycle
    assert report is not None
    assert [report.blocked[j] for j in same[1:]] == ["too_many_leaves"] * 3
    assert same[0] in calls
    assert not set(calls) & set(same[1:])  # one refusal answers every equal request
    calls.clear()
    h.tick()
    assert not set(calls) & set(same[1:])
    # Capacity grows: the request is tried again and fits.
    h.handle(NodeResumeRequested(h.clock.now(), h.hosts[0]))
    h.tick()
    assert h.job(same[0]).state is J.ADMITTED
