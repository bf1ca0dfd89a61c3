"""Node lifecycle: registration, heartbeats and LOST, health verdicts, drain and resume."""

from __future__ import annotations

from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.events import (
    HeartbeatReceived,
    NodeDrainRequested,
    NodeRegistered,
    NodeResumeRequested,
    RanksStarted,
    StartAcknowledged,
)
from scheduler.core.states import Health, JobState, NodeState

J = JobState
N = NodeState


def test_registration_makes_a_node_ready() -> None:
    h = Harness(cluster(1, 1, 2))
    assert {n.state for n in h.state.nodes.values()} == {N.UNKNOWN}
    h.register([h.hosts[0]])
    node = h.state.nodes[h.hosts[0]]
    assert node.state is N.READY
    assert node.agent_version == "test"
    assert node.health is Health.HEALTHY
    assert h.state.nodes[h.hosts[1]].state is N.UNKNOWN


def test_heartbeats_keep_nodes_alive() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    h.wait(10 * h.config.heartbeat_timeout_s)
    h.tick()
    assert {n.state for n in h.state.nodes.values()} == {N.READY}


def test_lost_node_requeues_its_job_excluding_the_node() -> None:
    # The queue path (in-place repair has its own tests: test_core_repair.py).
    h = Harness(cluster(1, 1, 3), config=SchedulerConfig(repair_in_place=False))
    h.register()
    job = h.running(16, max_restarts=2, checkpoint={"dir": "/c", "interval_s": 10})
    first, second = h.hosts_of(job)
    h.wait(20)
    h.checkpoint(job)
    mark = len(h.actions)
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[second])
    h.tick()
    assert h.state.nodes[second].state is N.LOST
    requeued = h.job(job)
    assert requeued.state is J.REQUEUED
    assert requeued.excluded_hosts == {second}
    assert requeued.restarts == 1
    assert requeued.fault_restarts == 1
    failure = requeued.failures[-1]
    assert failure.reason == "node_lost"
    assert failure.host == second
    assert failure.lost_s > 0
    assert requeued.productive_s == 20.0
    # The surviving host is told to stop; the lost one is not contacted.
    assert [s.node for s in h.stops(mark) if s.job_id == job] == [first]
    # The job comes back on the two healthy hosts (the surviving host once its ranks stopped).
    h.stopped(job, attempt=0)
    h.tick()
    assert h.job(job).state is J.ADMITTED
    assert second not in h.hosts_of(job)
    assert all(s.attempt == 1 for s in h.starts(mark) if s.job_id == job)
    h.store_matches()


def test_restarts_exhausted_fails_the_job() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.running(16, max_restarts=0)
    _, second = h.hosts_of(job)
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[second])
    h.tick()
    failed = h.job(job)
    assert failed.state is J.FAILED
    assert failed.reason == "node_lost"
    assert "restarts exhausted" in failed.message
    assert failed.allocation is None
    assert failed.finished_at is not None


def test_lost_node_that_returns_is_drained_and_orphans_are_stopped() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.running(8, max_restarts=1)
    (host,) = h.hosts_of(job)
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[host])
    h.tick()
    assert h.state.nodes[host].state is N.LOST
    mark = len(h.actions)
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.HEALTHY, {job: 0}))
    node = h.state.nodes[host]
    assert node.state is N.DRAINED
    assert node.reason.startswith("returned_after_loss")
    orphan = [s for s in h.stops(mark) if s.job_id == job]
    assert len(orphan) == 1
    assert orphan[0].reason == "orphan"
    assert orphan[0].attempt == 0
    h.handle(NodeResumeRequested(h.clock.now(), host, "checked"))
    assert h.state.nodes[host].state is N.READY
    h.store_matches()


def test_lost_nodes_can_be_configured_to_return_by_themselves() -> None:
    h = Harness(cluster(1, 1, 2), config=SchedulerConfig(return_lost_nodes=True))
    h.register()
    host = h.hosts[0]
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[host])
    h.tick()
    assert h.state.nodes[host].state is N.LOST
    h.handle(NodeRegistered(h.clock.now(), host, 8, "test"))
    assert h.state.nodes[host].state is N.READY
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[host])
    h.tick()
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.FAILED, {}, "xid 79"))
    assert h.state.nodes[host].state is N.DRAINED


def test_failed_health_drains_the_node_and_requeues_its_jobs() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.running(8, max_restarts=1)
    (host,) = h.hosts_of(job)
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.FAILED, {job: 0}, "xid 79"))
    node = h.state.nodes[host]
    assert node.state is N.DRAINED
    assert node.health is Health.FAILED
    assert "xid 79" in node.reason
    assert h.job(job).state is J.REQUEUED
    assert h.job(job).excluded_hosts == {host}
    h.tick()
    assert h.hosts_of(job) != (host,)
    assert h.job(job).state is J.ADMITTED


def test_suspect_health_keeps_new_jobs_away_until_healthy() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    running = h.running(4)
    (host,) = h.hosts_of(running)
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.SUSPECT, {running: 0}, "throttling"))
    waiting = h.submit(4)
    h.tick()
    assert h.states(running, waiting) == [J.RUNNING, J.PENDING]
    assert h.state.nodes[host].state is N.READY
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.HEALTHY, {running: 0}))
    h.tick()
    assert h.job(waiting).state is J.ADMITTED


def test_drain_waits_for_jobs_and_resume_returns_the_node() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    running = h.running(8)
    (host,) = h.hosts_of(running)
    h.handle(NodeDrainRequested(h.clock.now(), host, "driver upgrade"))
    assert h.state.nodes[host].state is N.DRAINING
    assert h.state.nodes[host].reason == "driver upgrade"
    waiting = h.submit(8)
    h.finish(running)
    assert h.state.nodes[host].state is N.DRAINED
    h.tick()
    assert h.job(waiting).state is J.PENDING
    h.handle(NodeDrainRequested(h.clock.now(), host, "driver upgrade"))  # repeat: no-op
    assert h.state.nodes[host].state is N.DRAINED
    h.handle(NodeResumeRequested(h.clock.now(), host, "upgraded"))
    assert h.state.nodes[host].state is N.READY
    h.tick()
    assert h.job(waiting).state is J.ADMITTED


def test_drain_of_an_idle_node_is_immediate() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    h.handle(NodeDrainRequested(h.clock.now(), h.hosts[0]))
    assert h.state.nodes[h.hosts[0]].state is N.DRAINED


def test_fenced_gpus_wait_for_the_agent() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    job = h.running(8)
    h.cancel(job)
    assert h.job(job).state is J.CANCELLED
    assert int(h.state.busy.sum()) == 8  # fenced until the ranks are gone
    waiting = h.submit(8)
    h.tick()
    assert h.job(waiting).state is J.PENDING
    h.stopped(job)
    assert int(h.state.busy.sum()) == 0
    h.tick()
    assert h.job(waiting).state is J.ADMITTED


def test_fence_released_by_a_heartbeat_or_its_deadline() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    a = h.running(8)
    b = h.running(8)
    (host_a,), (host_b,) = h.hosts_of(a), h.hosts_of(b)
    h.cancel(a)
    h.cancel(b)
    assert int(h.state.busy.sum()) == 16
    # A heartbeat that no longer lists the job releases its fence at once.
    h.handle(HeartbeatReceived(h.clock.now(), host_a, Health.HEALTHY, {}))
    assert int(h.state.busy.sum()) == 8
    # An agent that keeps reporting the ranks keeps the fence until its deadline.
    for _ in range(int(2 * h.config.stop_grace_s // 10)):
        h.clock.advance(10)
        h.handle(HeartbeatReceived(h.clock.now(), host_a, Health.HEALTHY, {}))
        h.handle(HeartbeatReceived(h.clock.now(), host_b, Health.HEALTHY, {b: 0}))
        assert int(h.state.busy.sum()) == 8
        h.tick(0)
    h.clock.advance(1)
    h.handle(HeartbeatReceived(h.clock.now(), host_b, Health.HEALTHY, {b: 0}))
    h.tick(0)
    assert int(h.state.busy.sum()) == 0
    assert h.state.nodes[host_b].state is N.READY


def _starting(h: Harness, gpus: int, **fields: object) -> str:
    """A job placed on two hosts whose first host acknowledged its start; the other did not."""
    job = h.submit(gpus, **fields)
    h.tick()
    first = h.hosts_of(job)[0]
    attempt = h.job(job).restarts
    h.handle(StartAcknowledged(h.clock.now(), job, first, attempt))
    h.handle(RanksStarted(h.clock.now(), job, first, attempt))
    assert h.job(job).state is J.STARTING
    return job


def test_a_node_lost_while_its_job_starts_counts_as_a_failure() -> None:
    h = Harness(cluster(1, 1, 3))
    h.register()
    job = _starting(h, 16, max_restarts=1)
    first, second = h.hosts_of(job)
    mark = len(h.actions)
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[second])
    h.tick()
    requeued = h.job(job)
    assert requeued.state is J.REQUEUED
    assert requeued.restarts == requeued.fault_restarts == 1
    assert requeued.excluded_hosts == {second}
    assert [(f.reason, f.host, f.lost_s) for f in requeued.failures] == [("node_lost", second, 0.0)]
    assert [s.node for s in h.stops(mark) if s.job_id == job] == [first]
    h.stopped(job, attempt=0)
    h.tick()
    assert h.job(job).state is J.ADMITTED
    assert second not in h.hosts_of(job)
    # The restart limit holds for failures while starting too.
    third = next(host for host in h.hosts_of(job) if host != first)
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[second, third])
    h.tick()
    assert h.job(job).state is J.FAILED
    assert "restarts exhausted" in h.job(job).message
    h.store_matches()


def test_a_failed_verdict_while_its_job_starts_drains_and_requeues() -> None:
    h = Harness(cluster(1, 1, 3))
    h.register()
    job = _starting(h, 16, max_restarts=2)
    _, second = h.hosts_of(job)
    h.handle(HeartbeatReceived(h.clock.now(), second, Health.FAILED, {}, "gpu_lost: GPU 3"))
    assert h.state.nodes[second].state is N.DRAINED
    requeued = h.job(job)
    assert requeued.state is J.REQUEUED
    assert requeued.failures[-1].reason == "node_failed"
    assert requeued.excluded_hosts == {second}


def test_a_suspect_node_keeps_its_running_job_through_heartbeats_and_ticks() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.running(8, max_restarts=1)
    (host,) = h.hosts_of(job)
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.SUSPECT, {job: 0}, "hot"))
    other = h.submit(8)
    for _ in range(5):
        h.clock.advance(5)
        h.handle(HeartbeatReceived(h.clock.now(), host, Health.SUSPECT, {job: 0}, "hot"))
        h.tick(0)
    assert h.job(job).state is J.RUNNING
    assert h.job(job).restarts == 0
    assert h.job(other).state is J.ADMITTED
    assert host not in h.hosts_of(other)
    assert h.state.nodes[host].reason.startswith("health suspect")
