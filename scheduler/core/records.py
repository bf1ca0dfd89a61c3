"""The records the scheduler keeps: jobs, nodes, queues, and what a job was given.

Frozen, slotted dataclasses; a change is a new record (``dataclasses.replace``). Timestamps
are timezone-aware UTC ``datetime`` values supplied by events, never read from a clock here.
These are the types the store persists and the API translates; they import no protobuf.

Must not import grpc, generated protos, databases or clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from firsthop.reasons import FailureReason
from scheduler.core.states import Health, JobState, NodeState
from scheduler.jobspec import JobSpec


@dataclass(frozen=True, slots=True)
class RankSlot:
    """One rank of a placed job: which host and which local GPU runs it."""

    rank: int
    host: str
    gpu: int


@dataclass(frozen=True, slots=True)
class Allocation:
    """What a job was given by the placer: its rank table and the quality of that choice."""

    ranks: tuple[RankSlot, ...]
    cost: float
    """Modelled communication time per step (ms) of this placement."""
    lower_bound: float
    """Lower bound on that cost for the free capacity at placement time (ms)."""
    placed_at: datetime
    hosts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Hosts in rank order, each once (node rank order for launchers); derived from ranks."""
    _gpus: Mapping[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once, in one pass: heartbeats, acks and fencing ask for these on every
        # event, and a scan of every rank per host is quadratic for a 16K-rank job.
        gpus: dict[str, list[int]] = {}
        for slot in self.ranks:
            gpus.setdefault(slot.host, []).append(slot.gpu)
        object.__setattr__(self, "hosts", tuple(gpus))
        object.__setattr__(self, "_gpus", MappingProxyType({h: tuple(g) for h, g in gpus.items()}))

    def gpus_on(self, host: str) -> tuple[int, ...]:
        """Local GPU indices the job holds on ``host``, in rank order."""
        return self._gpus.get(host, ())


@dataclass(frozen=True, slots=True)
class Failure:
    """One interruption of a job and what it cost."""

    at: datetime
    reason: FailureReason
    host: str | None
    lost_s: float
    """Work lost: time since the last checkpoint (or since start) when it failed; 0 for a
    planned stop the job answered with a checkpoint (or a clean exit of every rank)."""
    message: str = ""
    """What happened, in words (a rank's start failure as its agent reported it)."""
    checkpointed: bool = False
    """A planned stop the job answered by checkpointing in its grace (nothing lost)."""


@dataclass(frozen=True, slots=True)
class Repair:
    """One in-place repair of a job: the hosts it left, where their ranks went, and when
    each phase ended (failure -> survivors stopped -> new rank table -> all ranks running).

    ``method`` is the placer's (``partial``: only the vacated hosts' ranks moved; ``full``;
    ``unchanged``: restarted on the same hosts) or ``queue`` when no replacement was found
    and the job went back to the queue.
    """

    failed_at: datetime
    reason: FailureReason
    vacated: tuple[str, ...]
    moves: tuple[tuple[str, str], ...] = ()
    """(old host, new host) for every vacated host whose ranks moved."""
    method: str = ""
    stopped_at: datetime | None = None
    placed_at: datetime | None = None
    running_at: datetime | None = None
    ranks_moved: int = 0
    victims: tuple[str, ...] = ()
    """Jobs preempted to free hosts for this repair (in the failed hosts' leaf or pod); the
    job waits, stopped, until they let go of their GPUs, then is placed again."""


@dataclass(frozen=True, slots=True)
class Job:
    """A submitted job and everything the scheduler knows about it."""

    id: str
    spec: JobSpec
    user: str
    state: JobState
    submitted_at: datetime
    updated_at: datetime
    submission_id: str | None = None
    """Client-chosen idempotency key: a second submission with it returns the first job."""
    reason: str = ""
    """Stable reason for the latest state change (a :class:`~firsthop.reasons.JobReason`)."""
    message: str = ""
    allocation: Allocation | None = None
    first_started_at: datetime | None = None
    started_at: datetime | None = None
    """Start of the current run (all ranks running)."""
    finished_at: datetime | None = None
    last_checkpoint_at: datetime | None = None
    restarts: int = 0
    """Times the job went back to the queue (failures and preemptions alike). It is also the
    attempt number of the current run: agents report it with every rank event, reports of an
    older attempt are ignored, and ranks see it as ``FIRSTHOP_RESTART_COUNT``."""
    failures: tuple[Failure, ...] = ()
    excluded_hosts: frozenset[str] = frozenset()
    productive_s: float = 0.0
    """Run time up to each run's last checkpoint (or its successful end), summed over runs."""
    started_hosts: frozenset[str] = frozenset()
    """Hosts whose ranks of the current attempt report running."""
    exited_ranks: frozenset[int] = frozenset()
    """Ranks of the current attempt that exited with status 0."""
    stopped_hosts: frozenset[str] = frozenset()
    """While ``PREEMPTED``: hosts whose ranks have stopped (or were lost)."""
    stop_deadline: datetime | None = None
    """While ``PREEMPTED``: when a forced stop is sent to hosts still running ranks."""
    checkpoint_requested_at: datetime | None = None
    """While ``PREEMPTED`` gracefully: when the job was asked to checkpoint; a checkpoint
    reported after it (or every rank exiting 0) makes the stop lose nothing."""
    clean_hosts: frozenset[str] = frozenset()
    """While ``PREEMPTED``: hosts whose ranks all exited 0 after the stop."""
    repairs: tuple[Repair, ...] = ()
    """In-place repairs, oldest first (the one in progress is :attr:`repair`)."""
    repair: Repair | None = None
    """The in-place repair in progress: set while the job stops (PREEMPTED) and restarts
    (ADMITTED, STARTING); moved to :attr:`repairs` once every rank runs again."""
    rank_failed_at: datetime | None = None
    """While RUNNING: when a rank exited with a failure whose blame is not settled yet
    (:mod:`scheduler.core.repair`)."""
    rank_failed_host: str | None = None
    """The host of that rank."""
    last_allocation: Allocation | None = None
    """The allocation of the latest attempt that let go of its GPUs (where its ranks ran, so
    their logs can be found after the job finished or was requeued)."""
    version: int = 0
    """One more per handled event that changed the record (1 when created); the store
    refuses to overwrite a version with an older or equal one."""

    @property
    def fault_restarts(self) -> int:
        """Requeues caused by failures (preemptions excluded); ``max_restarts`` bounds these."""
        return sum(1 for f in self.failures if f.reason != FailureReason.PREEMPTED)

    @property
    def lost_s(self) -> float:
        """Work lost to interruptions, summed over failures and preemptions."""
        return sum(f.lost_s for f in self.failures)

    @property
    def priority(self) -> int:
        """The job's priority within its queue."""
        return self.spec.priority

    @property
    def queue(self) -> str:
        """The queue the job was submitted to."""
        return self.spec.queue

    @property
    def gpus(self) -> int:
        """GPUs the job needs (all at once)."""
        return self.spec.gpus


@dataclass(frozen=True, slots=True)
class Node:
    """A host as the scheduler sees it."""

    name: str
    state: NodeState
    gpus: int
    health: Health = Health.UNKNOWN
    reason: str = ""
    """Why it is drained, draining, lost or unhealthy (operator text or stable reason)."""
    agent_version: str = ""
    address: str = ""
    """How ranks on other hosts reach this host (``MASTER_ADDR`` when it runs rank 0), as
    its agent registered it; empty: the host name."""
    registered_at: datetime | None = None
    spare: bool = False
    """In the operator's spare pool: only preemptible jobs run on it (preempted first), and
    in-place repairs take it before other free hosts."""
    last_heartbeat_at: datetime | None = None
    """Kept current in memory on every heartbeat, but stored only with other changes of the
    node: after a restart every node gets a fresh heartbeat timeout anyway."""
    version: int = 0
    """As :attr:`Job.version`."""


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue: jobs in it compete by priority then submit time; queues share by weight."""

    name: str
    priority: int = 0
    """Jobs of a higher-priority queue may preempt jobs of lower-priority queues."""
    gpu_quota: int | None = None
    """Most GPUs the queue's jobs may hold at once (None: no limit)."""
    weight: float = 1.0
    """Fair-share weight between queues of equal priority."""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    version: int = 0
    """One more per handled event that changed the record (1 when created); the store
    refuses to overwrite a version with an older or equal one."""
