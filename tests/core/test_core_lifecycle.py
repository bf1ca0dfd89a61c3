"""Job lifecycle details: cancel in every state, rank failures, time limits, checkpoints,
stale reports, idempotent submission, restart recovery."""

from __future__ import annotations

from datetime import timedelta

import pytest
from core_builders import Harness, cluster, spec

from scheduler.core.actions import StartRanks, StopRanks
from scheduler.core.errors import DuplicateSubmissionError, InvalidTransitionError
from scheduler.core.events import (
    JobSubmitted,
    RankExited,
    RanksStarted,
    SchedulerStarted,
    TimerFired,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import JobState, NodeState

J = JobState


def _at_state(h: Harness, state: JobState) -> str:
    """A job brought to ``state`` on a one-host cluster."""
    if state is J.PREEMPTED:
        h.set_queue("low", priority=0)
        h.set_queue("high", priority=10)
        job = h.submit(8, queue="low")
        h.tick()
        h.start(job)
        h.submit(8, queue="high")
        h.tick()
        assert h.job(job).state is J.PREEMPTED
        return job
    job = h.submit(8)
    if state is J.PENDING:
        return job
    h.tick()
    if state is J.RUNNING:
        h.start(job)
    return job


@pytest.mark.parametrize("state", [J.PENDING, J.ADMITTED, J.RUNNING, J.PREEMPTED, J.REQUEUED])
def test_cancel_in_each_live_state(state: JobState) -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    if state is J.REQUEUED:
        job = h.submit(8, max_restarts=1)
        h.tick()
        h.start(job)
        h.finish(job, code=1, rank=0)
    else:
        job = _at_state(h, state)
    assert h.job(job).state is state
    mark = len(h.actions)
    h.cancel(job)
    done = h.job(job)
    assert done.state is J.CANCELLED
    assert done.allocation is None
    assert done.finished_at == h.clock.now()
    held = state in (J.ADMITTED, J.RUNNING, J.PREEMPTED)
    stops = [s for s in h.stops(mark) if s.job_id == job]
    assert bool(stops) == held
    assert all(s.reason == "cancelled" for s in stops)
    h.cancel(job)  # idempotent
    assert h.job(job).version == done.version


def test_cancel_while_starting() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(16)
    h.tick()
    first = h.hosts_of(job)[0]
    h.handle(RanksStarted(h.clock.now(), job, first, 0))
    assert h.job(job).state is J.STARTING
    assert h.job(job).started_hosts == {first}
    h.cancel(job)
    assert h.job(job).state is J.CANCELLED
    assert len([s for s in h.stops() if s.job_id == job]) == 2


def test_finished_jobs_cannot_be_cancelled() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    job = h.submit(8)
    h.tick()
    h.start(job)
    h.finish(job)
    with pytest.raises(InvalidTransitionError, match="already finished") as info:
        h.cancel(job)
    assert getattr(info.value, "reason", None) == "job_finished"
    assert h.job(job).state is J.SUCCEEDED


def test_rank_failure_requeues_without_excluding_the_host() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    job = h.submit(8, max_restarts=1)
    h.tick()
    h.start(job)
    h.wait(30)
    h.finish(job, code=3, rank=5)
    requeued = h.job(job)
    assert requeued.state is J.REQUEUED
    assert requeued.excluded_hosts == frozenset()
    assert requeued.failures[-1].reason == "rank_exited"
    assert requeued.failures[-1].lost_s == 30.0
    assert "rank 5" in requeued.message
    h.stopped(job, attempt=0)
    h.tick()
    h.start(job)
    h.finish(job, code=1, rank=0)
    assert h.job(job).state is J.FAILED  # second failure: restarts exhausted


def test_time_limit_fails_the_job() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    job = h.submit(8, time_limit_s=60, max_restarts=5)
    h.tick()
    h.start(job)
    h.wait(59)
    h.tick(0)
    assert h.job(job).state is J.RUNNING
    h.wait(1)
    mark = len(h.actions)
    h.tick(0)
    assert h.job(job).state is J.FAILED
    assert h.job(job).reason == "time_limit"
    assert [s.reason for s in h.stops(mark)] == ["time_limit"]


def test_checkpoints_count_as_productive_time() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    job = h.submit(8, max_restarts=1)
    h.tick()
    h.start(job)
    h.wait(40)
    h.checkpoint(job)
    h.wait(20)
    h.checkpoint(job)
    h.wait(15)
    h.finish(job, code=9, rank=0)  # 15 s lost
    assert h.job(job).productive_s == 60.0
    assert h.job(job).failures[-1].lost_s == 15.0
    h.stopped(job, attempt=0)
    h.tick()
    h.start(job)
    h.wait(10)
    h.finish(job)
    done = h.job(job)
    assert done.state is J.SUCCEEDED
    assert done.productive_s == 70.0
    from scheduler.core.status import ettr

    ratio = ettr(done, h.clock.now())
    assert ratio is not None
    assert 0 < ratio < 1


def test_reports_of_an_older_attempt_are_ignored() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    job = h.submit(8, max_restarts=2)
    h.tick()
    h.start(job)
    h.finish(job, code=1, rank=0)
    h.stopped(job, attempt=0)
    h.tick()
    assert h.job(job).state is J.ADMITTED
    assert h.job(job).restarts == 1
    host = h.hosts_of(job)[0]
    version = h.job(job).version
    h.handle(RanksStarted(h.clock.now(), job, host, 0))
    h.handle(RankExited(h.clock.now(), job, host, 0, 0, 1))
    assert h.job(job).state is J.ADMITTED
    assert h.job(job).version == version


def test_duplicate_submission_returns_the_first_job() -> None:
    h = Harness(cluster(1, 1, 1))
    first = h.submit(8, submission_id="abc")
    again = h.submit(8, submission_id="abc")
    assert again == first
    assert len(h.state.jobs) == 1
    other_user = h.submit(8, submission_id="abc", user="bob")
    assert other_user != first
    with pytest.raises(DuplicateSubmissionError, match="different spec") as info:
        h.submit(16, submission_id="abc")
    assert getattr(info.value, "reason", None) == "duplicate_submission_id"


def test_restart_resends_commands_and_restores_state() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    a = h.submit(8)
    h.tick()
    h.start(a)
    b = h.submit(8)
    h.tick()  # b admitted, start commands "lost" with the crash
    stored = h.store.load()
    restored = Scheduler(
        h.topology.index, h.config, jobs=stored.jobs, nodes=stored.nodes, queues=stored.queues
    )
    assert restored.state.jobs == h.state.jobs
    actions = restored.handle(SchedulerStarted(h.clock.now()))
    restored.state.validate()
    starts = [x for x in actions if isinstance(x, StartRanks)]
    assert [s.job_id for s in starts] == [b]
    assert not [x for x in actions if isinstance(x, StopRanks)]
    assert int(restored.state.busy.sum()) == 16


def test_a_restarted_scheduler_gives_every_stored_node_one_timeout_from_its_start() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(16)
    h.tick()
    h.start(job)
    h.clock.advance(h.config.heartbeat_timeout_s * 10)  # the scheduler was down that long
    stored = h.store.load()
    restored = Scheduler(
        h.topology.index, h.config, jobs=stored.jobs, nodes=stored.nodes, queues=stored.queues
    )
    started = h.clock.now()
    timeout = timedelta(seconds=h.config.heartbeat_timeout_s)
    restored.handle(SchedulerStarted(started))
    restored.handle(TimerFired(started + timeout - timedelta(seconds=1)))
    within = {name: node.state for name, node in restored.state.nodes.items()}
    kept = restored.state.jobs[job].state
    restored.handle(TimerFired(started + timeout + timedelta(seconds=1)))
    after = {name: node.state for name, node in restored.state.nodes.items()}

    assert set(within.values()) == {NodeState.READY}
    assert kept is J.RUNNING
    assert set(after.values()) == {NodeState.LOST}  # the grace is one timeout, not forever


def test_submission_event_resolves_to_its_job() -> None:
    h = Harness(cluster(1, 1, 1))
    event = JobSubmitted(h.clock.now(), "x1", spec(8), "alice", "key")
    h.handle(event)
    assert h.scheduler.job_for(event).id == "x1"
    repeat = JobSubmitted(h.clock.now(), "x2", spec(8), "alice", "key")
    assert h.handle(repeat) == []
    assert h.scheduler.job_for(repeat).id == "x1"


def test_a_job_that_never_starts_times_out_and_is_requeued() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(16, max_restarts=1)
    h.tick()
    first, second = h.hosts_of(job)
    h.handle(RanksStarted(h.clock.now(), job, first, 0))
    h.wait(h.config.start_timeout_s - 5)
    h.tick(0)
    assert h.job(job).state is J.STARTING
    h.wait(5)
    h.tick(0)
    requeued = h.job(job)
    assert requeued.state is J.REQUEUED
    assert requeued.reason == "start_timeout"
    assert requeued.failures[-1].host == second
    assert second in requeued.message


def test_finished_jobs_can_be_forgotten_and_live_ones_cannot() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    done = h.submit(8, submission_id="s-done")
    live = h.submit(8, submission_id="s-live")
    h.tick()
    h.start(done)
    h.finish(done)
    h.start(live)
    h.clock.advance(10)
    finished_at = h.job(done).finished_at
    assert finished_at is not None

    kept = h.state.forget_finished(finished_at)  # not before the cutoff: kept
    gone = h.state.forget_finished(h.clock.now())
    h.state.validate()

    assert kept == []
    assert gone == [done]
    assert done not in h.state.jobs
    assert h.state.job_for_submission("alice", "s-done") is None
    assert h.job(live).state is J.RUNNING
    assert h.state.job_for_submission("alice", "s-live") is not None
