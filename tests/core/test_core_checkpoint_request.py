"""Checkpoint on request: planned stops send the job's signal and grace, and a checkpoint
reported after the request (or a clean exit of every rank) makes the stop lose nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.context import Ctx, Outbox
from scheduler.core.events import CheckpointReported, JobCancelRequested, RanksStopped
from scheduler.core.jobs import stop_for_checkpoint
from scheduler.core.states import InvalidTransitionError, JobState

J = JobState
CKPT = {"dir": "/ckpt", "signal": "SIGUSR1", "grace_s": 45}


def _preempted(h: Harness, **fields: object) -> tuple[str, str]:
    h.set_queue("low", priority=0)
    h.set_queue("high", priority=10)
    h.register()
    victim = h.submit(8, queue="low", **fields)
    h.tick()
    h.start(victim)
    h.wait(100)  # 100 s of work, never checkpointed
    high = h.submit(8, queue="high")
    h.tick()
    assert h.job(victim).state is J.PREEMPTED
    return victim, high


def test_start_commands_tell_ranks_the_signal_and_grace() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    job = h.submit(8, checkpoint=CKPT)
    plain = h.submit(8)
    h.tick()
    starts = {s.job_id: s for s in h.starts()}
    env = starts[job].rank_env(0)
    assert env["FIRSTHOP_CHECKPOINT_SIGNAL"] == "SIGUSR1"
    assert env["FIRSTHOP_CHECKPOINT_GRACE_S"] == "45"
    assert env["FIRSTHOP_CHECKPOINT_DIR"] == "/ckpt"
    assert "FIRSTHOP_CHECKPOINT_SIGNAL" not in starts[plain].rank_env(0)
    assert "FIRSTHOP_CHECKPOINT_GRACE_S" not in starts[plain].rank_env(0)


def test_the_operator_bounds_the_grace() -> None:
    h = Harness(cluster(1, 1, 1), config=SchedulerConfig(max_checkpoint_grace_s=20))
    victim, _ = _preempted(h, checkpoint=CKPT)
    stops = [s for s in h.stops() if s.job_id == victim]
    assert stops
    assert all(s.grace_s == 20 and s.signal == "SIGUSR1" for s in stops)


def test_checkpoint_after_the_request_makes_the_preemption_lose_nothing() -> None:
    h = Harness(cluster(1, 1, 1))
    victim, high = _preempted(h, checkpoint=CKPT)
    (stop,) = [s for s in h.stops() if s.job_id == victim]
    assert (stop.signal, stop.grace_s, stop.reason) == ("SIGUSR1", 45, "preempted")
    assert h.job(victim).failures[-1].lost_s == pytest.approx(100, abs=2)
    h.wait(3, step=3)
    h.checkpoint(victim)
    h.stopped(victim)
    job = h.job(victim)
    assert job.state is J.REQUEUED
    failure = job.failures[-1]
    assert (failure.reason, failure.lost_s, failure.checkpointed) == ("preempted", 0.0, True)
    assert job.lost_s == 0.0
    assert job.productive_s == pytest.approx(103, abs=2)
    assert job.checkpoint_requested_at is None
    h.tick()
    assert h.job(high).state is J.ADMITTED
    h.store_matches()


def test_a_clean_exit_of_every_rank_counts_as_saved() -> None:
    h = Harness(cluster(1, 2, 1))  # two hosts
    h.set_queue("low", priority=0)
    h.set_queue("high", priority=10)
    h.register()
    victim = h.submit(16, queue="low", checkpoint=CKPT)
    h.tick()
    h.start(victim)
    h.wait(50)
    h.submit(16, queue="high")
    h.tick()
    first, second = h.hosts_of(victim)
    h.handle(RanksStopped(h.clock.now(), victim, first, 0, clean=True))
    assert h.job(victim).clean_hosts == {first}
    h.handle(RanksStopped(h.clock.now(), victim, second, 0, clean=True))
    assert h.job(victim).state is J.REQUEUED
    assert h.job(victim).failures[-1].lost_s == 0.0
    h.store_matches()


def test_no_checkpoint_in_the_grace_loses_the_work_as_before() -> None:
    h = Harness(cluster(1, 2, 1))
    h.set_queue("low", priority=0)
    h.set_queue("high", priority=10)
    h.register()
    victim = h.submit(16, queue="low", checkpoint=CKPT)
    h.tick()
    h.start(victim)
    h.wait(60)
    h.submit(16, queue="high")
    h.tick()
    first, second = h.hosts_of(victim)
    h.handle(RanksStopped(h.clock.now(), victim, first, 0, clean=True))
    h.handle(RanksStopped(h.clock.now(), victim, second, 0, clean=False))  # killed
    failure = h.job(victim).failures[-1]
    assert h.job(victim).state is J.REQUEUED
    assert failure.lost_s == pytest.approx(60, abs=2)
    assert not failure.checkpointed


def test_a_checkpoint_older_than_the_request_does_not_count() -> None:
    h = Harness(cluster(1, 1, 1))
    victim, _ = _preempted(h, checkpoint=CKPT)
    requested = h.job(victim).checkpoint_requested_at
    assert requested is not None
    # A report about another attempt is ignored; one from before the request saves the work
    # up to it, not the stop.
    h.handle(CheckpointReported(h.clock.now(), victim, h.job(victim).restarts + 1))
    h.handle(CheckpointReported(requested - timedelta(seconds=5), victim, 0))
    assert not h.job(victim).failures[-1].checkpointed
    h.stopped(victim)
    assert h.job(victim).failures[-1].lost_s == pytest.approx(100, abs=2)


def test_a_job_without_checkpoint_gets_sigterm_and_the_default_grace() -> None:
    h = Harness(cluster(1, 1, 1))
    victim, _ = _preempted(h)
    stops = [s for s in h.stops() if s.job_id == victim]
    assert all(s.signal == "SIGTERM" and s.grace_s == h.config.stop_grace_s for s in stops)
    assert h.job(victim).checkpoint_requested_at is None


def test_graceful_cancel_uses_the_jobs_signal_and_grace() -> None:
    h = Harness(cluster(1, 1, 2))
    h.register()
    a = h.submit(8, checkpoint=CKPT)
    b = h.submit(8, checkpoint=CKPT)
    h.tick()
    h.start(a)
    h.start(b)
    mark = len(h.actions)
    h.handle(JobCancelRequested(h.clock.now(), a, graceful=True))
    h.handle(JobCancelRequested(h.clock.now(), b))
    by_job = {s.job_id: s for s in h.stops(mark)}
    assert (by_job[a].signal, by_job[a].grace_s) == ("SIGUSR1", 45)
    assert (by_job[b].signal, by_job[b].grace_s) == ("SIGTERM", h.config.stop_grace_s)
    # The fence outlives the longer grace.
    fence = h.state.fences[(a, by_job[a].node, 0)]
    assert (fence.deadline - h.clock.now()).total_seconds() >= 2 * 45


def test_stop_for_checkpoint_is_the_entry_point_for_planned_stops() -> None:
    h = Harness(cluster(1, 1, 1))
    h.register()
    job = h.submit(8, checkpoint=CKPT)
    h.tick()
    h.start(job)
    ctx = Ctx(h.state, h.config, Outbox())
    new = stop_for_checkpoint(ctx, h.job(job), h.clock.now(), "maintenance of leaf l0")
    assert new.state is J.PREEMPTED
    assert new.message == "maintenance of leaf l0"
    assert [(s.signal, s.reason) for s in ctx.out.stops] == [("SIGUSR1", "preempted")]
    queued = h.submit(8)
    with pytest.raises(InvalidTransitionError):
        stop_for_checkpoint(ctx, h.job(queued), h.clock.now(), "nothing to stop")
