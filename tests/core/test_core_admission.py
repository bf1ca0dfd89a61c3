"""Gang admission, priority order, fair share between queues, quotas."""

from __future__ import annotations

from core_builders import Harness, cluster

from scheduler.core.actions import PersistChanges, StartRanks
from scheduler.core.config import SchedulerConfig
from scheduler.core.events import HeartbeatReceived, NodeRegistered
from scheduler.core.states import Health, JobState

J = JobState


def test_gang_admission_is_all_or_nothing() -> None:
    h = Harness(cluster(1, 2, 2))  # 4 hosts, 32 GPUs
    h.register()
    big = h.submit(24)
    too_big = h.submit(16)
    h.tick()
    assert h.states(big, too_big) == [J.ADMITTED, J.PENDING]
    assert len(h.job(big).allocation.ranks) == 24  # type: ignore[union-attr]
    assert h.job(too_big).allocation is None
    # No start command for the job that did not fit, one per host for the one that did.
    starts = h.starts()
    assert {s.job_id for s in starts} == {big}
    assert sorted(s.node for s in starts) == sorted(h.hosts_of(big))
    assert sum(len(s.ranks) for s in starts) == 24
    assert int(h.state.busy.sum()) == 24


def test_start_commands_carry_the_rank_table() -> None:
    h = Harness(cluster(1, 1, 4))
    h.register()
    job = h.submit(
        16,
        command=["python", "train.py"],
        env={"A": "1"},
        checkpoint={"dir": "/ckpt", "interval_s": 60},
    )
    actions = h.tick()
    assert isinstance(actions[0], PersistChanges)
    starts = [a for a in actions if isinstance(a, StartRanks)]
    assert [s.node_rank for s in starts] == [0, 1]
    first, second = starts
    assert first.master_addr == second.master_addr == first.node
    assert first.master_port == second.master_port
    assert [r.rank for r in first.ranks] == list(range(8))
    assert [r.rank for r in second.ranks] == list(range(8, 16))
    assert [r.gpu for r in first.ranks] == list(range(8))
    assert first.world_size == 16
    assert first.num_nodes == 2
    assert first.command == ("python", "train.py")
    assert first.env["A"] == "1"
    assert first.checkpoint_dir == "/ckpt"
    assert first.command_id == f"start:{job}:0:{first.node}"


def test_master_addr_is_the_registered_address_of_the_first_host() -> None:
    h = Harness(cluster(1, 1, 2))
    for i, host in enumerate(h.hosts):
        h.handle(NodeRegistered(h.clock.now(), host, 8, "test", address=f"10.0.0.{i + 1}"))
        h.handle(HeartbeatReceived(h.clock.now(), host, Health.HEALTHY))
    job = h.submit(16)
    starts = [a for a in h.tick() if isinstance(a, StartRanks)]
    first_host = h.hosts_of(job)[0]
    assert h.state.nodes[first_host].address == f"10.0.0.{h.hosts.index(first_host) + 1}"
    assert {s.master_addr for s in starts} == {h.state.nodes[first_host].address}
    h.store_matches()


def test_a_job_that_lets_go_of_its_gpus_remembers_where_it_ran() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(16, max_restarts=1)
    h.tick()
    h.start(job)
    placed = h.job(job).allocation
    h.finish(job, 3, rank=5)
    requeued = h.job(job)
    assert requeued.state is JobState.REQUEUED
    assert requeued.allocation is None
    assert requeued.last_allocation == placed
    h.store_matches()


def test_lifecycle_to_success_goes_through_every_state() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(16)
    h.tick()
    h.start(job)
    assert h.job(job).state is J.RUNNING
    h.clock.advance(100)
    h.finish(job)
    assert h.notified(job) == [J.PENDING, J.ADMITTED, J.STARTING, J.RUNNING, J.SUCCEEDED]
    done = h.job(job)
    assert done.allocation is None
    assert done.finished_at == h.clock.now()
    assert done.productive_s == 100.0
    assert int(h.state.busy.sum()) == 0
    h.store_matches()


def test_priority_then_submit_time_within_a_queue() -> None:
    h = Harness(cluster(1, 1, 1))  # one host of 8 GPUs
    h.register()
    blocker = h.submit(8)
    h.tick()
    first = h.submit(8, priority=0)
    urgent = h.submit(8, priority=5)
    second = h.submit(8, priority=0)
    h.start(blocker)
    h.finish(blocker)
    h.tick()
    assert h.states(urgent, first, second) == [J.ADMITTED, J.PENDING, J.PENDING]
    h.start(urgent)
    h.finish(urgent)
    h.tick()
    assert h.states(first, second) == [J.ADMITTED, J.PENDING]


def test_higher_priority_queue_goes_first() -> None:
    h = Harness(
        cluster(1, 1, 1),
    )
    h.set_queue("low", priority=0)
    h.set_queue("high", priority=10)
    h.register()
    low = h.submit(8, queue="low")
    high = h.submit(8, queue="high")
    h.tick()
    assert h.states(high, low) == [J.ADMITTED, J.PENDING]


def test_fair_share_interleaves_queues_of_equal_priority() -> None:
    h = Harness(cluster(1, 1, 4))  # 4 hosts
    h.set_queue("a")
    h.set_queue("b")
    h.register()
    a_jobs = [h.submit(8, queue="a") for _ in range(4)]
    b_jobs = [h.submit(8, queue="b") for _ in range(4)]
    h.tick()
    admitted = [j for j in a_jobs + b_jobs if h.job(j).state is J.ADMITTED]
    assert sum(j in a_jobs for j in admitted) == 2
    assert sum(j in b_jobs for j in admitted) == 2
    assert admitted == [*a_jobs[:2], *b_jobs[:2]]


def test_fair_share_is_weighted_by_usage() -> None:
    h = Harness(cluster(1, 1, 6))
    h.set_queue("a", weight=2.0)
    h.set_queue("b", weight=1.0)
    h.register()
    a_jobs = [h.submit(8, queue="a") for _ in range(6)]
    b_jobs = [h.submit(8, queue="b") for _ in range(6)]
    h.tick()
    held = h.state.queue_usage
    assert held["a"] == 32
    assert held["b"] == 16
    assert all(h.job(j).state is J.PENDING for j in a_jobs[4:] + b_jobs[2:])


def test_queue_usage_counts_running_jobs_for_fair_share() -> None:
    h = Harness(cluster(1, 1, 4))
    h.set_queue("a")
    h.set_queue("b")
    h.register()
    early = [h.submit(8, queue="a") for _ in range(2)]
    h.tick()
    late_a = h.submit(8, queue="a")
    late_b = [h.submit(8, queue="b") for _ in range(2)]
    h.tick()
    assert all(h.job(j).state is J.ADMITTED for j in early + late_b)
    assert h.job(late_a).state is J.PENDING


def test_quota_caps_a_queue_without_blocking_others() -> None:
    h = Harness(cluster(1, 1, 4))
    h.set_queue("capped", gpu_quota=16)
    h.register()
    capped = [h.submit(8, queue="capped") for _ in range(3)]
    other = h.submit(8)
    h.tick()
    assert h.states(*capped, other) == [J.ADMITTED, J.ADMITTED, J.PENDING, J.ADMITTED]
    assert h.scheduler.last_cycle is not None
    assert h.scheduler.last_cycle.blocked[capped[2]] == "quota"
    assert h.scheduler.explain(capped[2], h.clock.now()).reason == "quota"
    # Raising the quota lets it in.
    h.set_queue("capped", gpu_quota=24)
    h.tick()
    assert h.job(capped[2]).state is J.ADMITTED


def test_sub_host_jobs_share_a_host() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    jobs = [h.submit(2) for _ in range(4)]
    h.tick()
    assert all(h.job(j).state is J.ADMITTED for j in jobs)
    gpus = sorted(s.gpu for j in jobs for s in h.job(j).allocation.ranks)  # type: ignore[union-attr]
    assert gpus == list(range(8))


def test_unregistered_and_drained_hosts_get_nothing() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register([h.hosts[0]])
    job = h.submit(16)
    small = h.submit(8)
    h.tick()
    assert h.job(job).state is J.PENDING
    assert h.hosts_of(small) == (h.hosts[0],)


def test_a_cycle_admits_at_most_its_gpu_budget_and_says_it_stopped_early() -> None:
    h = Harness(cluster(1, 2, 4), config=SchedulerConfig(max_admitted_gpus_per_cycle=24))
    h.register()
    jobs = [h.submit(16) for _ in range(4)]
    first = h.tick()
    report = h.scheduler.last_cycle
    second = h.tick()

    def admitted(actions: list[object]) -> set[str]:
        return {
            job.id
            for a in actions
            if isinstance(a, PersistChanges)
            for job in a.changes.jobs
            if job.state is JobState.ADMITTED
        }

    assert report is not None
    assert report.admitted == jobs[:2]  # 32 GPUs: the second job crossed the budget of 24
    assert report.admitted_gpus == 32
    assert report.truncated
    assert report.blocked[jobs[2]] == "cycle_budget"
    assert admitted(first) == set(jobs[:2])
    assert admitted(second) == set(jobs[2:])
