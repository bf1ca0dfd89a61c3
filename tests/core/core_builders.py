"""A harness around the scheduling core for tests: a manual clock, small clusters, helpers
that play the agents' part, and ``validate()`` after every event."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scheduler.core.actions import (
    Action,
    ChangeSet,
    NotifyJobChanged,
    PersistChanges,
    StartRanks,
    StopRanks,
)
from scheduler.core.clock import ManualClock
from scheduler.core.config import SchedulerConfig
from scheduler.core.events import (
    CheckpointReported,
    Event,
    HeartbeatReceived,
    JobCancelRequested,
    JobSubmitted,
    NodeRegistered,
    RankExited,
    RanksStarted,
    RanksStopped,
    SchedulerStarted,
    StartAcknowledged,
    TimerFired,
)
from scheduler.core.records import Job, Queue
from scheduler.core.scheduler import Scheduler
from scheduler.core.state import SchedulerState
from scheduler.core.states import Health, JobState
from scheduler.jobspec import JobSpec, job_spec_from_data
from scheduler.store.memory import MemoryStore
from topology.generators import fat_tree
from topology.model import Topology


def cluster(pods: int = 2, leaves: int = 2, hosts: int = 4, gpus: int = 8) -> Topology:
    """A fat tree with hosts named in depth-first order."""
    return Topology.from_spec(fat_tree(pods, leaves, hosts, gpus_per_host=gpus))


def spec(gpus: int, **fields: Any) -> JobSpec:
    """A job spec (name defaults to ``job``)."""
    data: dict[str, Any] = {"name": "job", "gpus": gpus, **fields}
    return job_spec_from_data(data)


@dataclass
class Harness:
    """Drives a :class:`Scheduler` like a runtime would, checking invariants after each event.

    Every ``PersistChanges`` is applied to a :class:`MemoryStore`, so a test can check that the
    store holds what the scheduler holds.
    """

    topology: Topology
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    clock: ManualClock = field(default_factory=ManualClock)
    store: MemoryStore = field(default_factory=MemoryStore)
    actions: list[Action] = field(default_factory=list)
    seq: int = 0

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.topology.index, self.config)
        self.handle(SchedulerStarted(self.clock.now()))

    @property
    def state(self) -> SchedulerState:
        """The scheduler state."""
        return self.scheduler.state

    @property
    def hosts(self) -> tuple[str, ...]:
        """Host names in topology order."""
        return self.topology.index.host_names

    def handle(self, event: Event) -> list[Action]:
        """Handle one event, persist its changes, validate, and return its actions."""
        actions = self.scheduler.handle(event)
        self.scheduler.state.validate()
        for action in actions:
            if isinstance(action, PersistChanges):
                self.store.save(action.changes)
        self.actions.extend(actions)
        return actions

    # ------------------------------------------------------------------ nodes

    def register(self, hosts: Iterable[str] | None = None) -> None:
        """Register and heartbeat hosts (all by default)."""
        for host in self.hosts if hosts is None else hosts:
            gpus = self.state.nodes[host].gpus
            self.handle(NodeRegistered(self.clock.now(), host, gpus, "test"))
            self.handle(HeartbeatReceived(self.clock.now(), host, Health.HEALTHY))

    def heartbeat_all(self, *, except_: Iterable[str] = ()) -> None:
        """A heartbeat from every registered host but ``except_``, reporting what it runs."""
        skip = set(except_)
        for name, node in sorted(self.state.nodes.items()):
            if name in skip or node.registered_at is None:
                continue
            running = {
                j.id: j.restarts for j in self.state.jobs_on(name) if name in j.started_hosts
            }
            self.handle(HeartbeatReceived(self.clock.now(), name, node.health, running))

    # ------------------------------------------------------------------ jobs

    def submit(
        self,
        gpus: int,
        *,
        job_id: str | None = None,
        user: str = "alice",
        submission_id: str | None = None,
        **fields: Any,
    ) -> str:
        """Submit a job; returns its id."""
        self.seq += 1
        job_id = job_id or f"j{self.seq:03d}"
        event = JobSubmitted(self.clock.now(), job_id, spec(gpus, **fields), user, submission_id)
        self.handle(event)
        return self.scheduler.job_for(event).id

    def running(self, gpus: int, **fields: Any) -> str:
        """Submit a job, admit it in a cycle and start it; returns its id (RUNNING)."""
        job_id = self.submit(gpus, **fields)
        self.tick()
        self.start(job_id)
        assert self.job(job_id).state is JobState.RUNNING
        return job_id

    def wait(self, seconds: float, *, step: float = 10.0, except_: Iterable[str] = ()) -> None:
        """Let time pass with every registered host heartbeating (but ``except_``)."""
        left = seconds
        while left > 0:
            self.clock.advance(min(step, left))
            left -= step
            self.heartbeat_all(except_=except_)

    def tick(self, seconds: float = 1.0) -> list[Action]:
        """Advance the clock and fire the timer."""
        return self.handle(TimerFired(self.clock.advance(seconds)))

    def job(self, job_id: str) -> Job:
        """The job's current record."""
        return self.state.jobs[job_id]

    def start(self, job_id: str) -> None:
        """Play the agents: acknowledge and report every host's ranks running."""
        job = self.job(job_id)
        assert job.allocation is not None
        for host in job.allocation.hosts:
            self.handle(StartAcknowledged(self.clock.now(), job_id, host, job.restarts))
            self.handle(RanksStarted(self.clock.now(), job_id, host, job.restarts))

    def finish(self, job_id: str, code: int = 0, *, rank: int | None = None) -> None:
        """Report ranks exiting (all of them, or one)."""
        job = self.job(job_id)
        assert job.allocation is not None
        for slot in job.allocation.ranks:
            if rank is None or slot.rank == rank:
                self.handle(
                    RankExited(self.clock.now(), job_id, slot.host, job.restarts, slot.rank, code)
                )

    def stopped(self, job_id: str, attempt: int | None = None) -> None:
        """Report the job's ranks stopped on every host that was asked to stop them."""
        for action in list(self.actions):
            if (
                isinstance(action, StopRanks)
                and action.job_id == job_id
                and (attempt is None or action.attempt == attempt)
            ):
                self.handle(RanksStopped(self.clock.now(), job_id, action.node, action.attempt))

    def checkpoint(self, job_id: str) -> None:
        """Report a checkpoint of the job's current attempt."""
        self.handle(CheckpointReported(self.clock.now(), job_id, self.job(job_id).restarts))

    def cancel(self, job_id: str) -> None:
        """Cancel a job."""
        self.handle(JobCancelRequested(self.clock.now(), job_id))

    def set_queue(self, name: str, **fields: Any) -> None:
        """Create or change a queue."""
        from scheduler.core.events import QueueSet

        self.handle(QueueSet(self.clock.now(), Queue(name=name, **fields)))

    # ------------------------------------------------------------------ inspection

    def states(self, *job_ids: str) -> list[JobState]:
        """Current states of jobs."""
        return [self.job(j).state for j in job_ids]

    def starts(self, since: int = 0) -> list[StartRanks]:
        """Start commands emitted since action index ``since``."""
        return [a for a in self.actions[since:] if isinstance(a, StartRanks)]

    def stops(self, since: int = 0) -> list[StopRanks]:
        """Stop commands emitted since action index ``since``."""
        return [a for a in self.actions[since:] if isinstance(a, StopRanks)]

    def notified(self, job_id: str) -> list[JobState]:
        """States announced for a job, in order."""
        return [
            a.job.state
            for a in self.actions
            if isinstance(a, NotifyJobChanged) and a.job.id == job_id
        ]

    def hosts_of(self, job_id: str) -> tuple[str, ...]:
        """Hosts of a job's allocation (empty when it holds none)."""
        alloc = self.job(job_id).allocation
        return () if alloc is None else alloc.hosts

    def store_matches(self) -> None:
        """The store holds exactly the scheduler's records (heartbeat times aside)."""
        stored = self.store.load()
        assert {j.id: j for j in stored.jobs} == self.state.jobs
        assert {q.name: q for q in stored.queues} == self.state.queues
        live = {n: _no_beat(node) for n, node in self.state.nodes.items()}
        assert {n.name: _no_beat(n) for n in stored.nodes} == live


def _no_beat(node: Any) -> Any:
    from dataclasses import replace

    return replace(node, last_heartbeat_at=None)


def changes_of(actions: list[Action]) -> ChangeSet:
    """The change set of a handled event (empty if none)."""
    for action in actions:
        if isinstance(action, PersistChanges):
            return action.changes
    return ChangeSet()
