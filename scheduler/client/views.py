"""What a client sees of jobs, nodes, queues and the cluster: small frozen view types, decoded
from the public wire messages by :mod:`scheduler.client.wire`.

These are not the scheduler's records: a :class:`JobView` carries what users and operators
should see (state and reason, placement and rank table, restarts, failures with their lost
time, ETTR, productive and lost seconds, timestamps), computed by the server when it answers;
the core's bookkeeping never reaches a client.

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime``,
``scheduler.api``, ``agents`` or the generated protos.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from firsthop.states import Health, JobState, NodeState
from scheduler.client.forecast import ForecastInfoView, StartEstimateView
from scheduler.jobspec import JobSpec


@dataclass(frozen=True, slots=True)
class RankView:
    """One rank of a job's rank table: the host and local GPU that run it."""

    rank: int
    host: str
    gpu: int


@dataclass(frozen=True, slots=True)
class PlacementView:
    """A job's placement: its rank table, hosts in node-rank order, and modelled cost."""

    ranks: tuple[RankView, ...]
    hosts: tuple[str, ...]
    cost_ms: float
    """Modelled communication time per training step."""
    lower_bound_ms: float
    """Lower bound on that cost for the free capacity when it was placed."""
    placed_at: datetime | None

    @property
    def ratio(self) -> float:
        """Cost over the lower bound (1.0 when the bound is 0)."""
        return self.cost_ms / self.lower_bound_ms if self.lower_bound_ms > 0 else 1.0


@dataclass(frozen=True, slots=True)
class FailureView:
    """One interruption of a job and the work it lost."""

    at: datetime
    reason: str
    """A :class:`firsthop.reasons.FailureReason` value."""
    host: str | None
    lost_s: float
    message: str = ""
    """What happened, in words (for ``start_failed``, the agent's message)."""
    checkpointed: bool = False
    """A planned stop the job answered with a checkpoint (nothing lost)."""


@dataclass(frozen=True, slots=True)
class RepairView:
    """One in-place repair: hosts left, where their ranks went, and when each phase ended."""

    failed_at: datetime | None
    reason: str
    vacated: tuple[str, ...]
    moves: tuple[str, ...]
    """``OLD->NEW`` per vacated host whose ranks moved."""
    method: str
    stopped_at: datetime | None = None
    placed_at: datetime | None = None
    running_at: datetime | None = None
    ranks_moved: int = 0


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as the server shows it (see the module docstring)."""

    id: str
    spec: JobSpec
    user: str
    state: JobState
    reason: str
    """Stable reason of the latest state change (:class:`firsthop.reasons.JobReason`)."""
    message: str
    submitted_at: datetime
    updated_at: datetime
    submission_id: str | None = None
    placement: PlacementView | None = None
    """Set while the job holds GPUs."""
    last_placement: PlacementView | None = None
    """The rank table of the latest attempt that let go of its GPUs (where its logs are)."""
    first_started_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_checkpoint_at: datetime | None = None
    restarts: int = 0
    fault_restarts: int = 0
    """Restarts counted against ``max_restarts`` (preemptions are not)."""
    failures: tuple[FailureView, ...] = ()
    repairs: tuple[RepairView, ...] = ()
    excluded_hosts: tuple[str, ...] = ()
    hosts_running: int = 0
    """Hosts whose ranks of the current attempt report running."""
    productive_s: float = 0.0
    lost_s: float = 0.0
    ettr: float | None = None
    """Effective training time ratio as of :attr:`as_of`; ``None`` before the job first ran."""
    as_of: datetime | None = None
    """When the server computed :attr:`ettr`."""

    @property
    def gpus(self) -> int:
        """GPUs the job asks for."""
        return self.spec.gpus


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node with the server's live view of it."""

    name: str
    state: NodeState
    health: Health
    gpus: int
    reason: str = ""
    agent_version: str = ""
    address: str = ""
    registered_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    spare: bool = False
    """In the spare pool."""
    gpus_allocated: int = 0
    job_ids: tuple[str, ...] = ()
    location: tuple[str, ...] = ()
    """Switch domains above the host, nearest first."""


def _no_labels() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's settings, as set by an operator."""

    name: str
    priority: int = 0
    gpu_quota: int | None = None
    weight: float = 1.0
    labels: Mapping[str, str] = field(default_factory=_no_labels)


@dataclass(frozen=True, slots=True)
class QueueView:
    """A queue with its jobs and GPUs now."""

    queue: QueueSettings
    pending_jobs: int
    active_jobs: int
    gpus_allocated: int
    gpus_pending: int


@dataclass(frozen=True, slots=True)
class TierView:
    """Fragmentation of one tier (host, each switch tier, cluster)."""

    name: str
    domains: int
    whole_free: int
    partly_free: int
    full: int
    largest_job: int


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Capacity, usage and fragmentation of the cluster at ``at``."""

    at: datetime
    hosts: int
    gpus: int
    schedulable_gpus: int
    allocated_gpus: int
    fenced_gpus: int
    free_gpus: int
    stranded_gpus: int
    stranded_hosts: int
    nodes_by_state: dict[str, int]
    nodes_by_health: dict[str, int]
    jobs_by_state: dict[str, int]
    queues: tuple[QueueView, ...]
    tiers: tuple[TierView, ...]
    fits: dict[int, int]

    @property
    def utilisation(self) -> float:
        """Allocated share of the GPUs in service (0 when none is)."""
        in_service = self.schedulable_gpus
        return self.allocated_gpus / in_service if in_service else 0.0


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a job is where it is (see ``ExplainJobResponse`` in jobs.proto)."""

    job: JobView
    reason: str
    message: str
    details: tuple[str, ...]
    would_place: PlacementView | None
    queue_position: int
    reservation_start: datetime | None
    placement_failure: str
    start_estimate: StartEstimateView | None = None
    """When a waiting job is expected to start (``None``: not waiting, or not asked)."""
    forecast: ForecastInfoView | None = None
    """How that estimate was made."""


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a job listing."""

    jobs: tuple[JobView, ...]
    next_page_token: str
    total_size: int


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The deep health check that gated a resume."""

    passed: bool
    summary: str
    report_json: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class LogPiece:
    """Part of a rank's log: where it ran, which attempt, the bytes from ``offset``."""

    host: str
    attempt: int
    offset: int
    size: int
    data: bytes
