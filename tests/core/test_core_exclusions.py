"""Host exclusions last one outage: a job avoids a host that failed it only until the host is
back in service (an operator's checked resume, or a lost node returning by itself)."""

from __future__ import annotations

from core_builders import Harness, cluster

from scheduler.core.config import SchedulerConfig
from scheduler.core.events import HeartbeatReceived, NodeRegistered, NodeResumeRequested
from scheduler.core.states import Health, JobState, NodeState

J = JobState
N = NodeState
CKPT = {"dir": "/ckpt", "interval_s": 60}
QUEUE = SchedulerConfig(repair_in_place=False)


def _fail(h: Harness, host: str, job: str) -> None:
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.FAILED, {job: h.job(job).restarts}))


def _second_host_lost(h: Harness, **fields: object) -> tuple[str, str]:
    """A running 2-host job whose second host falls silent until LOST: the job and that host
    (which the job now excludes)."""
    job = h.running(16, max_restarts=3, **fields)
    _, second = h.hosts_of(job)
    h.wait(h.config.heartbeat_timeout_s + 10, except_=[second])
    h.tick()
    assert h.job(job).excluded_hosts == {second}
    return job, second


def test_a_resumed_host_is_no_longer_excluded_and_takes_the_job_again() -> None:
    h = Harness(cluster(1, 1, 2), config=QUEUE)
    h.register()
    job = h.running(8, max_restarts=3)
    (host,) = h.hosts_of(job)
    other = next(x for x in h.hosts if x != host)
    blocker = h.submit(8, job_id="blocker")
    h.tick()
    assert h.hosts_of(blocker) == (other,)
    _fail(h, host, job)
    assert h.job(job).excluded_hosts == {host}
    h.tick()
    assert h.job(job).state is J.REQUEUED  # its only other host is taken
    h.stopped(job, attempt=0)  # its old ranks are gone: the fence on the host goes
    version = h.job(job).version
    h.handle(NodeResumeRequested(h.clock.now(), host, "repaired"))
    assert h.job(job).excluded_hosts == frozenset()
    assert h.job(job).version == version + 1  # a change the store records
    h.tick()
    assert h.job(job).state is J.ADMITTED
    assert h.hosts_of(job) == (host,)
    h.store_matches()


def test_a_lost_host_back_drained_stays_excluded_until_resumed() -> None:
    h = Harness(cluster(1, 1, 3), config=QUEUE)
    h.register()
    job, second = _second_host_lost(h, checkpoint=CKPT)
    h.handle(NodeRegistered(h.clock.now(), second, 8, "test"))
    assert h.state.nodes[second].state is N.DRAINED
    assert h.job(job).excluded_hosts == {second}  # back, but not yet checked
    h.handle(NodeResumeRequested(h.clock.now(), second, "checked"))
    assert h.job(job).excluded_hosts == frozenset()
    h.store_matches()


def test_a_lost_host_returning_by_itself_lifts_the_exclusion() -> None:
    h = Harness(
        cluster(1, 1, 3), config=SchedulerConfig(repair_in_place=False, return_lost_nodes=True)
    )
    h.register()
    job, second = _second_host_lost(h)
    h.handle(HeartbeatReceived(h.clock.now(), second, Health.HEALTHY))
    assert h.state.nodes[second].state is N.READY
    assert h.job(job).excluded_hosts == frozenset()


def test_a_lost_host_returning_failed_stays_excluded() -> None:
    h = Harness(
        cluster(1, 1, 3), config=SchedulerConfig(repair_in_place=False, return_lost_nodes=True)
    )
    h.register()
    job, second = _second_host_lost(h)
    h.handle(HeartbeatReceived(h.clock.now(), second, Health.FAILED, {}, "xid 79"))
    assert h.state.nodes[second].state is N.DRAINED
    assert h.job(job).excluded_hosts == {second}


def test_an_in_place_repair_exclusion_is_lifted_from_the_running_job() -> None:
    h = Harness(cluster(1, 2, 4))  # in-place repair (the default)
    h.register()
    job = h.running(24, max_restarts=3, checkpoint=CKPT)
    failed = h.hosts_of(job)[1]
    _fail(h, failed, job)
    h.stopped(job, attempt=0)
    h.start(job)
    assert h.job(job).state is J.RUNNING
    assert h.job(job).excluded_hosts == {failed}
    assert failed not in h.hosts_of(job)
    h.handle(NodeResumeRequested(h.clock.now(), failed, "repaired"))
    assert h.job(job).excluded_hosts == frozenset()
    assert h.job(job).state is J.RUNNING  # nothing else about the job changes
    h.store_matches()


def test_finished_jobs_keep_their_exclusions_as_history() -> None:
    h = Harness(cluster(1, 1, 2), config=QUEUE)
    h.register()
    job = h.running(8, max_restarts=3)
    (host,) = h.hosts_of(job)
    _fail(h, host, job)
    h.tick()
    h.start(job)
    h.finish(job)
    assert h.job(job).state is J.SUCCEEDED
    h.handle(NodeResumeRequested(h.clock.now(), host, "repaired"))
    assert h.job(job).excluded_hosts == {host}


def test_resuming_a_ready_host_lifts_exclusions_that_outlived_no_outage() -> None:
    # An operator can clear an exclusion of a host that never left service.
    h = Harness(cluster(1, 1, 2), config=QUEUE)
    h.register()
    job = h.running(8, max_restarts=3)
    (host,) = h.hosts_of(job)
    _fail(h, host, job)
    h.handle(NodeResumeRequested(h.clock.now(), host, "repaired"))
    h.handle(HeartbeatReceived(h.clock.now(), host, Health.HEALTHY))
    assert h.state.nodes[host].state is N.READY
    h.handle(NodeResumeRequested(h.clock.now(), host, "again"))  # READY: no error, no change
    assert h.job(job).excluded_hosts == frozenset()


def test_a_long_job_does_not_run_out_of_hosts_as_failed_ones_are_repaired() -> None:
    # Three hosts, a two-host job, every host fails in turn, twice. With exclusions for
    # good the job could not be placed after its second failure.
    for config in (QUEUE, SchedulerConfig()):
        h = Harness(cluster(1, 1, 3), config=config)
        h.register()
        job = h.running(16, max_restarts=10, checkpoint=CKPT)
        for round_ in range(6):
            victim = h.hosts_of(job)[round_ % 2]
            attempt = h.job(job).restarts
            _fail(h, victim, job)
            h.stopped(job, attempt=attempt)
            h.tick()
            assert h.job(job).state is J.ADMITTED, (config.repair_in_place, round_)
            h.start(job)
            h.handle(NodeResumeRequested(h.clock.now(), victim, "repaired"))
            h.handle(HeartbeatReceived(h.clock.now(), victim, Health.HEALTHY))
        assert h.job(job).restarts == 6
        assert h.job(job).excluded_hosts == frozenset()
