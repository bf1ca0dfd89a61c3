"""Random event sequences (hypothesis state machine): invariants hold after every event, the
store always matches the scheduler, and a restart from the store loses nothing."""

from __future__ import annotations

from dataclasses import replace

from core_builders import Harness, cluster
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from scheduler.core.config import SchedulerConfig
from scheduler.core.errors import FirsthopError
from scheduler.core.events import (
    HeartbeatReceived,
    NodeDrainRequested,
    NodeRegistered,
    NodeResumeRequested,
    RanksStarted,
    RanksStopped,
    SchedulerStarted,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.state import InvariantError
from scheduler.core.states import QUEUED_JOB_STATES, Health, JobState, is_terminal

J = JobState
TOPOLOGY = cluster(2, 2, 2)  # 8 hosts, 64 GPUs


class SchedulerMachine(RuleBasedStateMachine):
    """Drives the core with random but well-formed events."""

    def __init__(self) -> None:
        super().__init__()
        config = SchedulerConfig(
            heartbeat_timeout_s=30, stop_grace_s=10, max_placements_per_cycle=20
        )
        self.h = Harness(TOPOLOGY, config=config)
        self.h.set_queue("high", priority=10)
        self.h.register()
        self.silent: set[str] = set()

    # ------------------------------------------------------------------ helpers

    def _jobs(self, *states: JobState) -> list[str]:
        return sorted(j.id for j in self.h.state.jobs.values() if j.state in states)

    def _try(self, event: object) -> None:
        try:
            self.h.handle(event)  # type: ignore[arg-type]
        except InvariantError:
            raise
        except FirsthopError:
            changes, _, _ = self.h.state.take_changes()
            assert not changes

    # ------------------------------------------------------------------ rules

    @rule(host=st.sampled_from(TOPOLOGY.index.host_names))
    def register(self, host: str) -> None:
        self.silent.discard(host)
        self.h.handle(NodeRegistered(self.h.clock.now(), host, 8))

    @rule(
        gpus=st.sampled_from([1, 2, 4, 8, 16, 24, 32]),
        high=st.booleans(),
        priority=st.integers(0, 2),
        limit=st.sampled_from([None, 30, 300]),
        restarts=st.integers(0, 2),
    )
    def submit(
        self, gpus: int, high: bool, priority: int, limit: int | None, restarts: int
    ) -> None:
        fields: dict[str, object] = {"priority": priority, "max_restarts": restarts}
        if limit is not None:
            fields["time_limit_s"] = limit
        self.h.submit(gpus, queue="high" if high else "default", **fields)

    @rule(low=st.integers(2, 8), high_gpus=st.sampled_from([8, 16, 32]))
    def contention(self, low: int, high_gpus: int) -> None:
        """Fill the cluster with low-priority work, then ask for room at high priority."""
        for _ in range(low):
            self.h.submit(8, max_restarts=1, time_limit_s=200)
        self.h.tick()
        for job_id in self._jobs(J.ADMITTED, J.STARTING):
            self.h.start(job_id)
        self.h.submit(high_gpus, queue="high")
        self.h.tick()

    @rule(seconds=st.sampled_from([0, 1, 5, 20]))
    def tick(self, seconds: int) -> None:
        self.h.tick(seconds)

    @rule(seconds=st.sampled_from([5, 15, 40]))
    def time_passes(self, seconds: int) -> None:
        self.h.wait(seconds, except_=self.silent)

    @rule(host=st.sampled_from(TOPOLOGY.index.host_names))
    def agent_dies(self, host: str) -> None:
        self.silent.add(host)

    @rule(data=st.data())
    def ranks_start(self, data: st.DataObject) -> None:
        jobs = self._jobs(J.ADMITTED, J.STARTING)
        if not jobs:
            return
        job = self.h.job(data.draw(st.sampled_from(jobs)))
        assert job.allocation is not None
        host = data.draw(st.sampled_from(job.allocation.hosts))
        self.h.handle(RanksStarted(self.h.clock.now(), job.id, host, job.restarts))

    @rule(data=st.data(), code=st.sampled_from([0, 0, 1]))
    def ranks_exit(self, data: st.DataObject, code: int) -> None:
        jobs = self._jobs(J.RUNNING)
        if jobs:
            self.h.finish(data.draw(st.sampled_from(jobs)), code=code)

    @rule(data=st.data())
    def checkpoint(self, data: st.DataObject) -> None:
        jobs = self._jobs(J.RUNNING)
        if jobs:
            self.h.checkpoint(data.draw(st.sampled_from(jobs)))

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        jobs = sorted(j.id for j in self.h.state.jobs.values() if not is_terminal(j.state))
        if jobs:
            self.h.cancel(data.draw(st.sampled_from(jobs)))

    @rule()
    def stops_confirmed(self) -> None:
        for job_id, host, attempt in sorted(self.h.state.fences):
            self.h.handle(RanksStopped(self.h.clock.now(), job_id, host, attempt))
        for job_id in self._jobs(J.PREEMPTED):
            job = self.h.job(job_id)
            if job.state is J.PREEMPTED and job.allocation is not None:
                for host in job.allocation.hosts:
                    self.h.handle(RanksStopped(self.h.clock.now(), job_id, host, job.restarts))

    @rule(data=st.data())
    def start_everything(self, data: st.DataObject) -> None:
        for job_id in self._jobs(J.ADMITTED, J.STARTING):
            if data.draw(st.booleans()):
                self.h.start(job_id)

    @rule(host=st.sampled_from(TOPOLOGY.index.host_names), drain=st.booleans())
    def operator(self, host: str, drain: bool) -> None:
        event = (NodeDrainRequested if drain else NodeResumeRequested)(self.h.clock.now(), host)
        self._try(event)

    @rule(host=st.sampled_from(TOPOLOGY.index.host_names), health=st.sampled_from(list(Health)))
    def health(self, host: str, health: Health) -> None:
        running = {j.id: j.restarts for j in self.h.state.jobs_on(host)}
        self._try(HeartbeatReceived(self.h.clock.now(), host, health, running, "probe"))

    @precondition(lambda self: len(self.h.state.jobs) > 0)
    @rule()
    def restart(self) -> None:
        h = self.h
        stored = h.store.load()
        before = dict(h.state.jobs)
        h.scheduler = Scheduler(
            TOPOLOGY.index, h.config, jobs=stored.jobs, nodes=stored.nodes, queues=stored.queues
        )
        assert h.state.jobs == before
        h.handle(SchedulerStarted(h.clock.now()))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def store_matches(self) -> None:
        self.h.store_matches()

    @invariant()
    def queued_jobs_hold_nothing(self) -> None:
        for job in self.h.state.jobs.values():
            if job.state in QUEUED_JOB_STATES or is_terminal(job.state):
                assert job.allocation is None
            assert job.fault_restarts <= job.spec.max_restarts + 1
            assert replace(job) == job


SchedulerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_event_sequences = SchedulerMachine.TestCase
