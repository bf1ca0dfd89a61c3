"""Spare counts per domain: the scheduler keeps ``spares_per_leaf`` / ``spares_per_pod`` idle
healthy hosts in the spare pool and replenishes it as spares are used, lost or drained."""

from __future__ import annotations

from collections import Counter

import pytest
from core_builders import Harness, cluster
from pydantic import ValidationError

from scheduler.core.config import SchedulerConfig
from scheduler.core.events import HeartbeatReceived, NodeDrainRequested, NodeSpareSet
from scheduler.core.states import Health, JobState

J = JobState
CKPT = {"dir": "/ckpt", "interval_s": 60}


def _leaf(h: Harness, host: str) -> int:
    index = h.topology.index
    return int(index.ancestors[index.host_ids[host], 1])


def _pod(h: Harness, host: str) -> int:
    index = h.topology.index
    return int(index.ancestors[index.host_ids[host], 2])


def test_every_leaf_gets_its_count_of_idle_healthy_spares() -> None:
    h = Harness(cluster(2, 2, 4), config=SchedulerConfig(spares_per_leaf=1))
    assert h.state.spares == frozenset()  # nothing registered: no healthy idle host
    h.register()
    h.tick()
    spares = h.state.spares
    assert Counter(_leaf(h, x) for x in spares) == dict.fromkeys(range(4), 1)
    # The highest-numbered host of each leaf: the placer fills leaves from the low end.
    assert spares == {h.hosts[i] for i in (3, 7, 11, 15)}
    assert all(h.state.nodes[x].spare for x in spares)  # persisted like operators' spares
    h.store_matches()


def test_ordinary_jobs_stay_off_the_counted_spares() -> None:
    h = Harness(cluster(1, 2, 4), config=SchedulerConfig(spares_per_leaf=1))
    h.register()
    h.tick()
    jobs = [h.submit(8) for _ in range(8)]
    h.tick()
    placed = [j for j in jobs if h.job(j).state is J.ADMITTED]
    assert len(placed) == 6  # eight hosts less two spares
    assert not {x for j in placed for x in h.hosts_of(j)} & h.state.spares


def test_a_spare_taken_by_a_repair_is_replaced_by_another_idle_host_of_its_leaf() -> None:
    h = Harness(cluster(1, 2, 4), config=SchedulerConfig(spares_per_leaf=1))
    h.register()
    h.tick()
    job = h.submit(24, max_restarts=3, checkpoint=CKPT)
    h.tick()
    h.start(job)
    leaf = _leaf(h, h.hosts_of(job)[0])
    (spare,) = [x for x in h.state.spares if _leaf(h, x) == leaf]
    lost = h.hosts_of(job)[0]
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[lost])
    h.tick()
    h.stopped(job, attempt=0)
    repaired = h.job(job)
    assert repaired.repair is not None
    assert repaired.repair.moves == ((lost, spare),)
    assert not h.state.nodes[spare].spare
    h.tick()
    # The leaf has no idle healthy host left (the lost one is LOST): it waits for one.
    assert not [x for x in h.state.spares if _leaf(h, x) == leaf]
    other = [x for x in h.hosts if _leaf(h, x) != leaf]
    assert len([x for x in h.state.spares if x in other]) == 1


def test_lost_and_drained_spares_are_replaced() -> None:
    h = Harness(cluster(1, 1, 4), config=SchedulerConfig(spares_per_leaf=1))
    h.register()
    h.tick()
    (first,) = h.state.spares
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[first])
    h.tick()
    serving = {x for x in h.state.spares if x != first}
    assert len(serving) == 1
    (second,) = serving
    h.handle(NodeDrainRequested(h.clock.now(), second, "maintenance"))
    h.tick()
    assert len(h.state.spares - {first, second}) == 1
    h.handle(HeartbeatReceived(h.clock.now(), h.hosts[0], Health.SUSPECT, {}, "ecc"))
    h.tick()
    # h0001 is not a spare (SUSPECT hosts are never chosen) and the count is met anyway.
    assert h.hosts[0] not in h.state.spares


def test_pods_spread_their_spares_over_their_leaves_and_count_leaf_spares() -> None:
    config = SchedulerConfig(spares_per_leaf=1, spares_per_pod=3)
    h = Harness(cluster(2, 2, 4), config=config)
    h.register()
    h.tick()
    per_pod = Counter(_pod(h, x) for x in h.state.spares)
    assert per_pod == {0: 3, 1: 3}
    per_leaf = Counter(_leaf(h, x) for x in h.state.spares)
    assert sorted(per_leaf.values()) == [1, 1, 2, 2]


def test_operators_spares_count_towards_the_target() -> None:
    h = Harness(cluster(1, 1, 4), config=SchedulerConfig(spares_per_leaf=2))
    h.register()
    h.handle(NodeSpareSet(h.clock.now(), (h.hosts[0],)))
    h.tick()
    assert len(h.state.spares) == 2
    assert h.hosts[0] in h.state.spares


def test_no_counts_no_designations() -> None:
    h = Harness(cluster(1, 2, 4))
    h.register()
    h.tick()
    assert h.state.spares == frozenset()


def test_counts_are_not_negative() -> None:
    with pytest.raises(ValidationError):
        SchedulerConfig(spares_per_leaf=-1)
