"""Every bad input gets a stable reason and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from core_builders import Harness, cluster, spec

from scheduler.core.errors import FirsthopError
from scheduler.core.events import (
    CheckpointReported,
    Event,
    HeartbeatReceived,
    JobCancelRequested,
    JobSubmitted,
    NodeDrainRequested,
    NodeRegistered,
    NodeResumeRequested,
    QueueSet,
    RankExited,
    RanksStarted,
    RanksStopped,
    StartAcknowledged,
)
from scheduler.core.records import Node, Queue
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import NodeState


def _busy_cluster() -> Harness:
    """Two pods x two leaves x two hosts; some jobs in several states, one host unregistered."""
    h = Harness(cluster(2, 2, 2))
    h.set_queue("small", gpu_quota=8)
    h.register(h.hosts[:-1])
    running = h.submit(16, job_id="running")
    h.tick()
    h.start(running)
    h.submit(8, job_id="admitted")
    h.tick()
    done = h.submit(8, job_id="done")
    h.tick()
    h.start(done)
    h.finish(done)
    h.submit(64, job_id="pending")
    h.submit(8, job_id="keyed", submission_id="k1")
    h.cancel("admitted")  # leaves a fence
    h.tick()
    return h


def _snapshot(h: Harness) -> dict[str, Any]:
    s = h.state
    # Records are frozen; copying the containers is enough.
    return {
        "jobs": dict(s.jobs),
        "nodes": dict(s.nodes),
        "queues": dict(s.queues),
        "busy": s.busy.tolist(),
        "fences": dict(s.fences),
        "pending": {q: list(k) for q, k in s.pending.items()},
        "usage": dict(s.queue_usage),
        "submissions": dict(s.submissions),
        "unavailable": set(s.unavailable),
        "allocated": set(s.allocated),
        "epoch": s.capacity_epoch,
    }


def _submit(gpus: int, job_id: str = "new", **fields: Any) -> Callable[[Harness], Event]:
    return lambda h: JobSubmitted(h.clock.now(), job_id, spec(gpus, **fields), "alice")


UNREGISTERED = -1

CASES: list[tuple[str, Callable[[Harness], Event], str]] = [
    ("unknown queue", _submit(8, queue="nope"), "unknown_queue"),
    ("larger than the cluster", _submit(1024), "job_too_large"),
    ("more whole hosts than exist", _submit(136), "job_too_large"),
    (
        "required tier too small",
        _submit(32, placement={"required_tier": {"dp": "leaf"}}),
        "unplaceable_job",
    ),
    (
        "tp beyond the NVLink domain",
        _submit(16, parallelism={"tp": 16}),
        "tp_exceeds_nvlink_domain",
    ),
    ("unknown tier", _submit(8, placement={"required_tier": {"dp": "rack"}}), "unknown_tier"),
    ("over the queue quota", _submit(16, queue="small"), "quota_exceeded"),
    ("job id in use", _submit(8, job_id="pending"), "duplicate_job"),
    (
        "submission id reused with another spec",
        lambda h: JobSubmitted(h.clock.now(), "new", spec(16), "alice", "k1"),
        "duplicate_submission_id",
    ),
    ("cancel unknown job", lambda h: JobCancelRequested(h.clock.now(), "nope"), "unknown_job"),
    ("cancel finished job", lambda h: JobCancelRequested(h.clock.now(), "done"), "job_finished"),
    (
        "start ack of unknown job",
        lambda h: StartAcknowledged(h.clock.now(), "nope", h.hosts[0], 0),
        "unknown_job",
    ),
    (
        "ranks started of unknown job",
        lambda h: RanksStarted(h.clock.now(), "nope", h.hosts[0], 0),
        "unknown_job",
    ),
    (
        "rank exit of unknown job",
        lambda h: RankExited(h.clock.now(), "nope", h.hosts[0], 0, 0, 1),
        "unknown_job",
    ),
    (
        "ranks stopped of unknown job",
        lambda h: RanksStopped(h.clock.now(), "nope", h.hosts[0], 0),
        "unknown_job",
    ),
    (
        "checkpoint of unknown job",
        lambda h: CheckpointReported(h.clock.now(), "nope", 0),
        "unknown_job",
    ),
    (
        "register unknown node",
        lambda h: NodeRegistered(h.clock.now(), "ghost", 8),
        "unknown_node",
    ),
    (
        "register with wrong GPU count",
        lambda h: NodeRegistered(h.clock.now(), h.hosts[0], 4),
        "gpu_count_mismatch",
    ),
    (
        "heartbeat of unknown node",
        lambda h: HeartbeatReceived(h.clock.now(), "ghost"),
        "unknown_node",
    ),
    (
        "heartbeat before registering",
        lambda h: HeartbeatReceived(h.clock.now(), h.hosts[UNREGISTERED]),
        "node_not_registered",
    ),
    ("drain unknown node", lambda h: NodeDrainRequested(h.clock.now(), "ghost"), "unknown_node"),
    ("resume unknown node", lambda h: NodeResumeRequested(h.clock.now(), "ghost"), "unknown_node"),
    (
        "resume a node never registered",
        lambda h: NodeResumeRequested(h.clock.now(), h.hosts[UNREGISTERED]),
        "node_not_registered",
    ),
    ("bad queue name", lambda h: QueueSet(h.clock.now(), Queue(name="a b")), "invalid_queue"),
    (
        "negative quota",
        lambda h: QueueSet(h.clock.now(), Queue(name="q", gpu_quota=-1)),
        "invalid_queue",
    ),
    ("zero weight", lambda h: QueueSet(h.clock.now(), Queue(name="q", weight=0)), "invalid_queue"),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_has_a_stable_reason_and_changes_nothing(
    make: Callable[[Harness], Event], reason: str
) -> None:
    h = _busy_cluster()
    before = _snapshot(h)
    event = make(h)
    with pytest.raises(FirsthopError) as info:
        h.scheduler.handle(event)
    assert info.value.reason == reason
    assert info.value.message
    assert _snapshot(h) == before
    changes, jobs, nodes = h.state.take_changes()
    assert not changes
    assert not jobs
    assert not nodes
    h.state.validate()


def test_the_same_bad_submission_fails_the_same_way_twice() -> None:
    h = _busy_cluster()
    for _ in range(2):
        with pytest.raises(FirsthopError) as info:
            h.scheduler.handle(_submit(1024)(h))
        assert info.value.reason == "job_too_large"


def test_stored_state_that_does_not_fit_the_topology_is_refused() -> None:
    topology = cluster(1, 1, 2)
    ghost = Node(name="ghost", state=NodeState.READY, gpus=8, version=1)
    with pytest.raises(FirsthopError) as info:
        Scheduler(topology.index, nodes=[ghost])
    assert info.value.reason == "topology_mismatch"
    wrong = Node(name=topology.index.host_names[0], state=NodeState.READY, gpus=4, version=1)
    with pytest.raises(FirsthopError) as info:
        Scheduler(topology.index, nodes=[wrong])
    assert info.value.reason == "topology_mismatch"
