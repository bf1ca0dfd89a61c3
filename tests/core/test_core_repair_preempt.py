"""In-place repair that preempts a lower-priority job in the failed host's domain when no free
host fits well, and several hosts lost at once (a leaf switch) repaired in one re-placement."""

from __future__ import annotations

from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.events import HeartbeatReceived, NodeSpareSet, RankExited
from scheduler.core.records import Job
from scheduler.core.states import Health, JobState, NodeState
from scheduler.store.serde import job_from_row, job_to_row

J = JobState
N = NodeState
CKPT = {"dir": "/ckpt", "interval_s": 60}


def _leaf(h: Harness, host: str) -> int:
    index = h.topology.index
    return int(index.ancestors[index.host_ids[host], 1])


def _running(h: Harness, gpus: int, **fields: object) -> str:
    return h.running(gpus, max_restarts=3, checkpoint=CKPT, **fields)


def _crowded_leaf(h: Harness, **low_fields: object) -> tuple[str, str]:
    """A 3-host job (priority 5) and a 1-host job filling its leaf; in the other leaf a
    2-host job of priority 5 leaves two hosts free (so no leaf has room for the whole job)."""
    big = _running(h, 24, priority=5)
    blocker = _running(h, 16, priority=5)
    low = _running(h, 8, **low_fields)
    (low_host,) = h.hosts_of(low)
    leaf = {_leaf(h, x) for x in h.hosts_of(big)}
    assert leaf == {_leaf(h, low_host)}, "setup: the small job fills the big job's leaf"
    assert leaf != {_leaf(h, x) for x in h.hosts_of(blocker)}
    h.wait(20)
    h.checkpoint(big)
    h.checkpoint(low)
    return big, low


def _lose(h: Harness, host: str) -> None:
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[host])
    h.tick()
    assert h.state.nodes[host].state is N.LOST


def test_a_lower_priority_job_in_the_leaf_is_preempted_gracefully_for_the_repair() -> None:
    h = Harness(cluster(1, 2, 4))  # two leaves of four hosts
    h.register()
    big, low = _crowded_leaf(h)
    (low_host,) = h.hosts_of(low)
    lost = h.hosts_of(big)[1]
    survivors = [x for x in h.hosts_of(big) if x != lost]
    _lose(h, lost)
    mark = len(h.actions)
    h.stopped(big, attempt=0)
    waiting = h.job(big)
    assert waiting.state is J.PREEMPTED  # stopped, holding its survivors' GPUs
    assert waiting.repair is not None
    assert waiting.repair.victims == (low,)
    assert waiting.stop_deadline is None
    victim = h.job(low)
    assert victim.state is J.PREEMPTED
    assert victim.checkpoint_requested_at is not None  # asked to checkpoint first
    (signal,) = [s for s in h.stops(mark) if s.job_id == low]
    assert signal.grace_s > 0
    h.tick()  # nothing may take the survivors' GPUs meanwhile
    assert h.job(big).state is J.PREEMPTED
    h.checkpoint(low)  # the victim saves in its grace...
    h.stopped(low)  # ...and exits: its host is free, the repair goes on in the same event
    placed = h.job(big)
    assert placed.state is J.ADMITTED
    assert set(h.hosts_of(big)) == {*survivors, low_host}
    assert placed.repair is not None
    assert placed.repair.moves == ((lost, low_host),)
    assert placed.repair.method == "partial"
    requeued = h.job(low)
    assert requeued.state is J.REQUEUED
    assert requeued.failures[-1].checkpointed  # lost nothing
    assert requeued.failures[-1].lost_s == 0
    h.tick()
    assert h.job(low).state is J.ADMITTED  # placed again in the other leaf
    assert {_leaf(h, x) for x in h.hosts_of(low)} != {_leaf(h, low_host)}
    h.start(big)
    assert h.job(big).repairs[-1].victims == (low,)
    h.store_matches()


def test_without_a_lower_priority_job_the_free_host_elsewhere_is_taken() -> None:
    h = Harness(cluster(1, 2, 4))
    h.register()
    big, low = _crowded_leaf(h, priority=5)  # same priority: it may not preempt it
    lost = h.hosts_of(big)[0]
    _lose(h, lost)
    h.stopped(big, attempt=0)
    placed = h.job(big)
    assert placed.state is J.ADMITTED
    assert h.job(low).state is J.RUNNING
    assert placed.repair is not None
    assert placed.repair.victims == ()
    (move,) = placed.repair.moves
    assert _leaf(h, move[1]) != _leaf(h, lost)


def test_repair_preemption_can_be_turned_off() -> None:
    h = Harness(cluster(1, 2, 4), config=SchedulerConfig(repair_preempt_above=None))
    h.register()
    big, low = _crowded_leaf(h)
    _lose(h, h.hosts_of(big)[0])
    h.stopped(big, attempt=0)
    assert h.job(big).state is J.ADMITTED
    assert h.job(low).state is J.RUNNING


def test_a_preemptible_job_on_a_spare_gives_way_to_a_repair_whatever_its_priority() -> None:
    h = Harness(cluster(1, 2, 4))
    h.register()
    big = _running(h, 24)
    leaf = _leaf(h, h.hosts_of(big)[0])
    (spare,) = [x for x in h.hosts if _leaf(h, x) == leaf and x not in h.hosts_of(big)]
    h.handle(NodeSpareSet(h.clock.now(), (spare,)))
    _running(h, 16)  # the other leaf keeps two hosts free: no leaf holds the whole job
    flexible = _running(h, 8, preemptible=True, priority=9)
    assert h.hosts_of(flexible) == (spare,)
    lost = h.hosts_of(big)[2]
    _lose(h, lost)
    h.stopped(big, attempt=0)
    assert h.job(flexible).state is J.PREEMPTED
    h.stopped(flexible)
    placed = h.job(big)
    assert placed.state is J.ADMITTED
    assert placed.repair is not None
    assert placed.repair.moves == ((lost, spare),)
    assert not h.state.nodes[spare].spare  # a spare a repair took leaves the pool


def test_a_victim_cancelled_while_the_repair_waits_releases_it_on_the_next_tick() -> None:
    h = Harness(cluster(1, 2, 4))
    h.register()
    big, low = _crowded_leaf(h)
    (low_host,) = h.hosts_of(low)
    _lose(h, h.hosts_of(big)[0])
    h.stopped(big, attempt=0)
    assert h.job(big).state is J.PREEMPTED
    h.cancel(low)  # its GPUs stay fenced until its ranks are gone
    h.stopped(low)
    assert h.job(big).state is J.PREEMPTED  # the cancel itself does not resume the repair
    h.tick()
    assert h.job(big).state is J.ADMITTED
    assert low_host in h.hosts_of(big)


def test_a_job_preempted_while_restarting_after_a_repair_goes_to_the_queue() -> None:
    h = Harness(cluster(1, 1, 3))
    h.register()
    job = _running(h, 16)
    hosts = h.hosts_of(job)
    h.handle(HeartbeatReceived(h.clock.now(), hosts[0], Health.FAILED, {job: 0}, "ecc"))
    h.stopped(job, attempt=0)
    restarting = h.job(job)
    assert restarting.state is J.ADMITTED
    assert restarting.repair is not None
    urgent = h.submit(16, priority=9)  # the two healthy hosts: the restarting job's
    h.tick()
    assert h.job(job).state is J.PREEMPTED
    assert h.job(job).repair is None  # closed: this stop is a preemption, not a repair
    h.stopped(job)
    assert h.job(job).state is J.REQUEUED
    assert [r.method for r in h.job(job).repairs] == ["queue"]
    h.tick()
    assert h.job(urgent).state is J.ADMITTED


def test_a_waiting_repair_survives_the_store() -> None:
    h = Harness(cluster(1, 2, 4))
    h.register()
    big, low = _crowded_leaf(h)
    _lose(h, h.hosts_of(big)[0])
    h.stopped(big, attempt=0)
    job = h.job(big)
    assert job.repair is not None
    assert job.repair.victims == (low,)
    assert _round_trip(job) == job
    h.stopped(low)
    h.start(big)
    done = h.job(big)
    assert done.repairs
    assert _round_trip(done) == done


def _round_trip(job: Job) -> Job:
    row = job_to_row(job)
    return job_from_row(row)


# ---------------------------------------------------------------------------- several at once


def test_a_dead_leaf_switch_is_repaired_in_one_re_placement_even_with_staggered_losses() -> None:
    h = Harness(cluster(1, 3, 4))  # three leaves of four hosts
    h.register()
    job = _running(h, 48)  # six hosts: two leaves
    by_leaf: dict[int, list[str]] = {}
    for x in h.hosts_of(job):
        by_leaf.setdefault(_leaf(h, x), []).append(x)
    dead_leaf = max(by_leaf, key=lambda leaf: len(by_leaf[leaf]))
    dead = [x for x in h.hosts if _leaf(h, x) == dead_leaf]
    in_job = sorted(set(dead) & set(h.hosts_of(job)))
    assert len(in_job) >= 2
    h.wait(20)
    h.checkpoint(job)
    # The switch dies: its hosts' last heartbeats were up to one interval apart, so they are
    # declared LOST over several ticks; the job stops once and is re-placed once.
    h.clock.advance(1)
    h.heartbeat_all(except_=dead[1:])
    first_placement = len([a for a in h.starts() if a.job_id == job])
    h.wait(h.config.heartbeat_timeout_s, step=5, except_=dead)
    for _ in range(8):
        h.tick()
        h.heartbeat_all(except_=dead)
    assert all(h.state.nodes[x].state is N.LOST for x in dead)
    stopping = h.job(job)
    assert stopping.state is J.PREEMPTED
    assert stopping.repair is not None
    assert stopping.repair.vacated == tuple(in_job)
    h.stopped(job, attempt=0)
    placed = h.job(job)
    assert placed.state is J.ADMITTED
    assert placed.restarts == 1  # one re-placement for all of them
    assert not set(dead) & set(h.hosts_of(job))
    assert len(h.hosts_of(job)) == 6
    assert placed.repair is not None
    assert placed.repair.method in ("partial", "full")
    if placed.repair.method == "partial":
        assert {old for old, _ in placed.repair.moves} == set(in_job)
    starts = [a for a in h.starts() if a.job_id == job]
    assert len(starts) - first_placement == 6  # one start per host of the new rank table
    assert len(placed.failures) == 1


def test_hosts_that_go_silent_together_are_blamed_together_after_a_rank_exit() -> None:
    h = Harness(cluster(1, 3, 4), config=SchedulerConfig(blame_delay_s=10))
    h.register()
    job = _running(h, 48)
    hosts = h.hosts_of(job)
    dead = [x for x in hosts if _leaf(h, x) == _leaf(h, hosts[-1])]
    alive = [x for x in hosts if x not in dead]
    h.wait(20)
    h.clock.advance(1)
    h.handle(RankExited(h.clock.now(), job, alive[0], 0, 0, 1))
    h.wait(15, step=5, except_=dead)
    h.tick()
    stopping = h.job(job)
    assert stopping.state is J.PREEMPTED
    assert stopping.repair is not None
    assert stopping.repair.vacated == tuple(sorted(dead))
    assert stopping.stopped_hosts == set(dead)
    h.stopped(job, attempt=0)
    placed = h.job(job)
    assert placed.state is J.ADMITTED
    assert not set(dead) & set(h.hosts_of(job))
    assert set(alive) <= set(h.hosts_of(job))


def test_a_spare_used_in_one_leaf_is_not_double_booked_by_a_second_repair() -> None:
    h = Harness(cluster(1, 2, 4))
    h.register()
    a = _running(h, 16)
    b = _running(h, 16)
    free = [x for x in h.hosts if x not in {*h.hosts_of(a), *h.hosts_of(b)}]
    h.handle(NodeSpareSet(h.clock.now(), (free[0],)))
    lost = [h.hosts_of(a)[0], h.hosts_of(b)[0]]
    h.wait(h.config.heartbeat_timeout_s + 10, except_=lost)
    h.tick()
    h.stopped(a, attempt=0)
    h.stopped(b, attempt=0)
    ja, jb = h.job(a), h.job(b)
    assert ja.state is J.ADMITTED
    assert jb.state is J.ADMITTED
    assert not set(h.hosts_of(a)) & set(h.hosts_of(b))
    assert sum(x == free[0] for x in (*h.hosts_of(a), *h.hosts_of(b))) == 1
    assert not h.state.nodes[free[0]].spare
