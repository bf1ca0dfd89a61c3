"""In-place repair: a checkpointing job that loses hosts keeps its other ranks where they are
and swaps only the lost hosts, without going back through the queue."""

from __future__ import annotations

import pytest
from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.events import HeartbeatReceived, RankExited
from scheduler.core.states import Health, JobState, NodeState

J = JobState
N = NodeState
CKPT = {"dir": "/ckpt", "interval_s": 60}


def _running(h: Harness, gpus: int, **fields: object) -> str:
    return h.running(gpus, max_restarts=3, checkpoint=CKPT, **fields)


def _slots(h: Harness, job: str) -> dict[int, tuple[str, int]]:
    alloc = h.job(job).allocation
    assert alloc is not None
    return {s.rank: (s.host, s.gpu) for s in alloc.ranks}


def test_a_lost_host_is_swapped_and_the_survivors_keep_their_gpus() -> None:
    h = Harness(cluster(1, 2, 4))  # 8 hosts: a 3-host job leaves 5 free
    h.register()
    job = _running(h, 24)
    before = _slots(h, job)
    lost = h.hosts_of(job)[1]
    survivors = [x for x in h.hosts_of(job) if x != lost]
    h.wait(20)
    h.checkpoint(job)
    mark = len(h.actions)
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[lost])
    h.tick()
    assert h.state.nodes[lost].state is N.LOST
    stopping = h.job(job)
    assert stopping.state is J.PREEMPTED
    assert stopping.reason == "node_lost"
    assert stopping.repair is not None
    assert stopping.repair.vacated == (lost,)
    assert sorted(s.node for s in h.stops(mark) if s.job_id == job) == sorted(survivors)
    h.stopped(job, attempt=0)
    placed = h.job(job)
    # Straight back in, no queue: ADMITTED in the same event as the last stop.
    assert placed.state is J.ADMITTED
    assert placed.restarts == 1
    after = _slots(h, job)
    moved = {r for r in before if before[r] != after[r]}
    assert moved == {r for r, (host, _) in before.items() if host == lost}
    assert lost not in h.hosts_of(job)
    starts = [s for s in h.starts(mark) if s.job_id == job]
    assert {s.node for s in starts} == set(h.hosts_of(job))
    assert all(s.attempt == 1 for s in starts)
    h.wait(5, step=5)
    h.start(job)
    running = h.job(job)
    assert running.state is J.RUNNING
    assert running.repair is None
    (repair,) = running.repairs
    (new_host,) = set(h.hosts_of(job)) - set(survivors)
    assert repair.moves == ((lost, new_host),)
    assert repair.method == "partial"
    assert repair.ranks_moved == 8
    assert repair.failed_at <= repair.stopped_at <= repair.placed_at <= repair.running_at  # type: ignore[operator]
    assert running.failures[-1].reason == "node_lost"
    assert running.failures[-1].host == lost
    h.store_matches()


def test_a_rank_exit_blames_the_silent_host_not_the_survivor_that_noticed() -> None:
    h = Harness(cluster(1, 2, 4), config=SchedulerConfig(blame_delay_s=10))
    h.register()
    job = _running(h, 24)
    first, killed, third = h.hosts_of(job)
    h.wait(20)
    # The killed host's agent and ranks die; the survivors' ranks exit a moment later.
    h.clock.advance(1)
    h.handle(RankExited(h.clock.now(), job, first, 0, 0, 1))
    h.handle(RankExited(h.clock.now(), job, third, 0, 16, 1))
    assert h.job(job).state is J.RUNNING
    assert h.job(job).rank_failed_host == first
    h.wait(5, step=5, except_=[killed])
    h.tick()
    assert h.job(job).state is J.RUNNING  # still within the blame delay
    h.wait(10, step=5, except_=[killed])
    h.tick()
    stopping = h.job(job)
    assert stopping.state is J.PREEMPTED
    assert stopping.repair is not None
    assert stopping.repair.vacated == (killed,)
    failure = stopping.failures[-1]
    assert (failure.reason, failure.host) == ("rank_exited", killed)
    h.stopped(job, attempt=0)
    assert h.job(job).state is J.ADMITTED
    assert killed not in h.hosts_of(job)
    assert {first, third} <= set(h.hosts_of(job))


def test_a_rank_exit_with_every_host_alive_restarts_in_place_on_the_same_hosts() -> None:
    h = Harness(cluster(1, 1, 3), config=SchedulerConfig(blame_delay_s=10))
    h.register()
    job = _running(h, 16)
    hosts = h.hosts_of(job)
    h.wait(20)
    h.handle(RankExited(h.clock.now(), job, hosts[0], 0, 3, 1))
    h.wait(20)
    h.tick()
    assert h.job(job).state is J.PREEMPTED
    h.stopped(job, attempt=0)
    job_now = h.job(job)
    assert job_now.state is J.ADMITTED
    assert h.hosts_of(job) == hosts
    assert job_now.failures[-1].host == hosts[0]
    assert job_now.repair is not None
    assert job_now.repair.method == "unchanged"


def test_several_hosts_lost_at_once_are_repaired_together() -> None:
    h = Harness(cluster(1, 2, 4))
    h.register()
    job = _running(h, 32)  # 4 hosts
    gone = list(h.hosts_of(job)[:2])
    h.wait(h.config.heartbeat_timeout_s + 10, except_=gone)
    h.tick()
    stopping = h.job(job)
    assert stopping.repair is not None
    assert stopping.repair.vacated == tuple(sorted(gone))
    h.stopped(job, attempt=0)
    placed = h.job(job)
    assert placed.state is J.ADMITTED
    assert not set(gone) & set(h.hosts_of(job))
    assert placed.repair is not None
    # One re-placement for both; the placer may prefer a full one when that is much cheaper.
    assert placed.repair.method in ("partial", "full")
    if placed.repair.method == "partial":
        assert len(placed.repair.moves) == 2


def test_a_failed_verdict_is_repaired_in_place() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    job = _running(h, 16)
    bad = h.hosts_of(job)[0]
    h.handle(HeartbeatReceived(h.clock.now(), bad, Health.FAILED, {job: 0}, "ecc"))
    stopping = h.job(job)
    assert stopping.state is J.PREEMPTED
    assert stopping.stopped_hosts == {bad}
    h.stopped(job, attempt=0)
    assert h.job(job).state is J.ADMITTED
    assert bad not in h.hosts_of(job)


def test_no_room_sends_the_job_to_the_queue_and_records_it() -> None:
    h = Harness(cluster(1, 1, 2))  # no free host to swap in
    h.register()
    job = _running(h, 16)
    lost = h.hosts_of(job)[1]
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[lost])
    h.tick()
    h.stopped(job, attempt=0)
    queued = h.job(job)
    assert queued.state is J.REQUEUED
    assert queued.repair is None
    assert [r.method for r in queued.repairs] == ["queue"]
    h.store_matches()


def test_jobs_without_checkpoints_still_go_through_the_queue() -> None:
    h = Harness(cluster(1, 2, 2))
    h.register()
    job = h.submit(16, max_restarts=2)
    h.tick()
    h.start(job)
    lost = h.hosts_of(job)[0]
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[lost])
    h.tick()
    queued = h.job(job)
    assert queued.state in (J.REQUEUED, J.ADMITTED)  # the same tick's cycle may place it
    assert queued.restarts == 1
    assert queued.repair is None
    assert queued.repairs == ()


def test_repairs_prefer_a_spare_host() -> None:
    from dataclasses import replace

    h = Harness(cluster(1, 2, 4))
    h.register()
    job = _running(h, 16)
    lost = h.hosts_of(job)[0]
    index = h.topology.index

    def leaf(name: str) -> int:
        return int(index.ancestors[index.host_ids[name], 1])

    near = [x for x in h.hosts if x not in h.hosts_of(job) and leaf(x) == leaf(lost)]
    assert len(near) >= 2
    spare = near[-1]  # the lowest-id tie-break would pick near[0]
    h.state.put_node(replace(h.state.nodes[spare], spare=True))
    h.state.take_changes()
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[lost])
    h.tick()
    h.stopped(job, attempt=0)
    placed = h.job(job)
    assert placed.repair is not None
    assert placed.repair.moves == ((lost, spare),)


def test_spares_run_only_preemptible_jobs_which_are_preempted_first() -> None:
    from scheduler.core.errors import UnknownNodeError
    from scheduler.core.events import NodeSpareSet

    h = Harness(cluster(1, 1, 3))
    h.register()
    spare = h.hosts[0]
    h.handle(NodeSpareSet(h.clock.now(), (spare,)))
    assert h.state.spares == {spare}
    with pytest.raises(UnknownNodeError):
        h.handle(NodeSpareSet(h.clock.now(), (h.hosts[1], "nope")))
    assert h.state.spares == {spare}  # all or none
    ordinary = [h.submit(8) for _ in range(3)]
    h.tick()
    assert [h.job(j).state for j in ordinary] == [J.ADMITTED, J.ADMITTED, J.PENDING]
    assert spare not in {x for j in ordinary for x in h.hosts_of(j)}
    flexible = h.submit(8, preemptible=True)
    h.tick()
    assert h.hosts_of(flexible) == (spare,)
    h.cancel(ordinary[2])
    for job in (*ordinary[:2], flexible):
        h.start(job)
    h.wait(100)
    h.checkpoint(flexible)  # cheapest to preempt by lost work would be it anyway: make it dear
    h.wait(100)
    for job in ordinary[:2]:
        h.checkpoint(job)
    urgent = h.submit(8, priority=5, preemptible=True)  # may use the spare too
    h.tick()
    assert h.job(flexible).state is J.PREEMPTED  # preemptible first, despite more lost work
    assert all(h.job(j).state is J.RUNNING for j in ordinary[:2])
    h.handle(NodeSpareSet(h.clock.now(), (spare,), spare=False))
    assert h.state.spares == frozenset()
    h.stopped(flexible)
    h.tick()
    assert h.hosts_of(urgent) == (spare,)
    h.store_matches()
