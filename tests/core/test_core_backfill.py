"""Backfill: small jobs start ahead of a blocked head job only when they do not delay it."""

from __future__ import annotations

from datetime import timedelta

from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.states import JobState

J = JobState


def _running(h: Harness, gpus: int, limit: int) -> str:
    return h.running(gpus, time_limit_s=limit)


def test_short_job_backfills_long_job_waits() -> None:
    h = Harness(cluster(1, 1, 4))  # 4 hosts, 32 GPUs
    h.register()
    running = _running(h, 24, limit=1000)
    started = h.job(running).started_at
    head = h.submit(32)
    long = h.submit(8, time_limit_s=2000)
    unbounded = h.submit(8)
    short = h.submit(8, time_limit_s=500)
    h.tick()
    report = h.scheduler.last_cycle
    assert report is not None
    assert report.reservation is not None
    assert report.reservation.job_id == head
    assert started is not None
    assert report.reservation.start == started + timedelta(seconds=1000)
    assert h.states(head, short, long, unbounded) == [J.PENDING, J.ADMITTED, J.PENDING, J.PENDING]
    assert report.backfilled == [short]
    assert report.blocked[long] == "backfill_would_delay"
    assert report.blocked[unbounded] == "backfill_would_delay"
    assert report.blocked[head] == "reserved"
    # Now that the short job took the last free host, the long one does not fit at all.
    assert h.scheduler.explain(long, h.clock.now()).reason == "insufficient_gpus"
    head_why = h.scheduler.explain(head, h.clock.now())
    assert head_why.reason == "reserved"
    assert head_why.reservation_start == report.reservation.start


def test_explain_names_the_reservation_a_job_would_delay() -> None:
    h = Harness(cluster(1, 1, 4))
    h.register()
    _running(h, 24, limit=1000)
    head = h.submit(32)
    long = h.submit(8, time_limit_s=2000)
    h.tick()
    why = h.scheduler.explain(long, h.clock.now())
    assert why.reason == "backfill_would_delay"
    assert why.would_place is not None  # it would fit now, on GPUs reserved for the head
    assert any(head in line for line in why.details)


def test_job_outside_the_reservation_backfills_and_head_starts_on_time() -> None:
    h = Harness(cluster(1, 1, 5))  # 5 hosts
    h.register()
    running = _running(h, 24, limit=1000)
    head = h.submit(32)
    long_jobs = [h.submit(8, time_limit_s=5000) for _ in range(2)]
    h.tick()
    report = h.scheduler.last_cycle
    assert report is not None
    assert report.reservation is not None
    reserved_hosts = {h.hosts[int(i) // 8] for i in report.reservation.mask.nonzero()[0].tolist()}
    assert len(reserved_hosts) == 4
    first, second = long_jobs
    assert h.states(first, second) == [J.ADMITTED, J.PENDING]
    assert not set(h.hosts_of(first)) & reserved_hosts
    assert report.blocked[second] == "backfill_would_delay"
    # The running job ends on time: the head starts though the backfilled job still runs.
    h.wait(999)
    h.start(first)
    h.finish(running)
    h.tick()
    assert h.states(head, first) == [J.ADMITTED, J.RUNNING]
    assert set(h.hosts_of(head)) == reserved_hosts


def test_jobs_without_time_limits_are_planned_with_the_default() -> None:
    config = SchedulerConfig(default_time_limit_s=100)
    h = Harness(cluster(1, 1, 2), config=config)
    h.register()
    running = h.submit(8)  # no limit: assumed to end after 100 s
    h.tick()
    h.start(running)
    head = h.submit(16)
    fits_before = h.submit(8, time_limit_s=50)
    h.tick()
    report = h.scheduler.last_cycle
    assert report is not None
    assert report.reservation is not None
    assert report.reservation.start == h.job(running).started_at + timedelta(seconds=100)  # type: ignore[operator]
    assert h.states(head, fits_before) == [J.PENDING, J.ADMITTED]


def test_without_backfill_nothing_passes_a_blocked_head() -> None:
    h = Harness(cluster(1, 1, 4), config=SchedulerConfig(backfill=False))
    h.register()
    _running(h, 24, limit=1000)
    head = h.submit(32)
    short = h.submit(8, time_limit_s=10)
    h.tick()
    assert h.states(head, short) == [J.PENDING, J.PENDING]
    assert h.scheduler.explain(short, h.clock.now()).reason == "blocked_by_head"


def test_head_that_fits_nowhere_does_not_block() -> None:
    h = Harness(cluster(1, 1, 4))
    h.register(h.hosts[:2])  # two hosts never register
    head = h.submit(32)  # can never fit on two hosts
    small = h.submit(8)
    h.tick()
    assert h.states(head, small) == [J.PENDING, J.ADMITTED]
    why = h.scheduler.explain(head, h.clock.now())
    assert why.reason == "insufficient_gpus"
    assert why.failure is not None
