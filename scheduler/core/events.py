"""What happened: the events the scheduling core handles (past tense, frozen dataclasses).

Every event carries ``at``, the aware UTC instant it happened (stamped by the runtime from its
clock, or by the simulator); the core takes time from nowhere else. Events from agents about a
job carry the job's ``attempt`` (its restart count when the ranks were started), so a late
report from an earlier attempt is recognised and ignored.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from firsthop.reasons import RankExitReason
from scheduler.core.campaign_records import CampaignSpec
from scheduler.core.proposals import Proposal
from scheduler.core.records import Queue
from scheduler.core.states import Health
from scheduler.jobspec import JobSpec


def _empty() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SchedulerStarted:
    """The scheduler (re)started on its stored state.

    Every known node gets a fresh heartbeat deadline, hosts of the default queue and the
    topology that the store lacked are created, and start/stop commands that may not have
    reached their agents before the restart are sent again (they are idempotent).
    """

    at: datetime


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    """A user submitted a job (the server assigned ``job_id``)."""

    at: datetime
    job_id: str
    spec: JobSpec
    user: str
    submission_id: str | None = None
    """Client idempotency key: resubmitting the same spec with it returns the first job."""


@dataclass(frozen=True, slots=True)
class JobCancelRequested:
    """A user or operator asked to cancel a job."""

    at: datetime
    job_id: str
    reason: str = ""
    graceful: bool = False
    """Ask the job to checkpoint first (its checkpoint signal and grace)."""


@dataclass(frozen=True, slots=True)
class NodeRegistered:
    """An agent registered its host (first start, restart or reconnection)."""

    at: datetime
    node: str
    gpus: int
    agent_version: str = ""
    address: str = ""
    """How other hosts reach this one; empty: the host name."""


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """An agent's heartbeat: its health verdict and the job attempts it is running."""

    at: datetime
    node: str
    health: Health = Health.HEALTHY
    running: Mapping[str, int] = field(default_factory=_empty)
    """Job id -> attempt of every job with live ranks on the host."""
    detail: str = ""
    """The agent's one-line reason for a SUSPECT or FAILED verdict."""


@dataclass(frozen=True, slots=True)
class NodeDrainRequested:
    """An operator asked that a node take no new jobs (running ones continue)."""

    at: datetime
    node: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NodeSpareSet:
    """An operator put hosts into the spare pool (``spare``) or took them out."""

    at: datetime
    nodes: tuple[str, ...]
    spare: bool = True


@dataclass(frozen=True, slots=True)
class NodeResumeRequested:
    """An operator returned a drained or draining node to service."""

    at: datetime
    node: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StartAcknowledged:
    """An agent accepted a job's start command and is launching its ranks."""

    at: datetime
    job_id: str
    node: str
    attempt: int


@dataclass(frozen=True, slots=True)
class RanksStarted:
    """All of a job's ranks on one host are running."""

    at: datetime
    job_id: str
    node: str
    attempt: int


@dataclass(frozen=True, slots=True)
class RankExited:
    """One rank of a job exited on its own (not because it was asked to stop)."""

    at: datetime
    job_id: str
    node: str
    attempt: int
    rank: int
    exit_code: int
    """The process's status, or ``128 + signal`` when a signal ended it (shells' rule)."""
    signal: int | None = None
    """The signal that ended it, when one did."""
    reason: RankExitReason = RankExitReason.FAILED
    """How it ended, in the agent's words."""
    message: str = ""
    """The agent's one line about it (empty when it has nothing to add)."""


@dataclass(frozen=True, slots=True)
class RanksStopped:
    """A job's ranks on one host are gone after a stop command."""

    at: datetime
    job_id: str
    node: str
    attempt: int
    clean: bool = False
    """Every rank of the host exited with status 0 after the stop (within the grace)."""


@dataclass(frozen=True, slots=True)
class CheckpointReported:
    """A job wrote a complete checkpoint (work up to ``at`` is safe)."""

    at: datetime
    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class QueueSet:
    """An operator created or changed a queue."""

    at: datetime
    queue: Queue


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The periodic tick: heartbeat timeouts, time limits, stop deadlines, then a cycle."""

    at: datetime


@dataclass(frozen=True, slots=True)
class CampaignStartRequested:
    """An operator started a maintenance campaign (:mod:`scheduler.core.campaigns`)."""

    at: datetime
    spec: CampaignSpec


@dataclass(frozen=True, slots=True)
class CampaignControlRequested:
    """An operator paused, resumed or aborted a campaign (``op``: pause, resume, abort)."""

    at: datetime
    name: str
    op: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MaintenanceReported:
    """A host finished one step of a campaign.

    ``step`` is ``action`` or ``check`` (reported by the agent, echoing the command's
    ``attempt``), or ``external`` (``maintenance done``: the operator handed the host back;
    ``attempt`` is ``None``, meaning the host's current one).
    """

    at: datetime
    campaign: str
    node: str
    attempt: int | None
    step: str
    ok: bool
    detail: str = ""
    """Why it failed (exit status, timeout, the failed health check)."""
    output: str = ""
    """The tail of the action's captured output."""


@dataclass(frozen=True, slots=True)
class PlacementsProposed:
    """Placements computed away from the cycle arrived (:mod:`~scheduler.core.proposals`);
    a scheduling cycle runs at once to use the ones still valid."""

    at: datetime
    proposals: tuple[Proposal, ...]


Event = (
    SchedulerStarted
    | JobSubmitted
    | JobCancelRequested
    | NodeRegistered
    | HeartbeatReceived
    | NodeDrainRequested
    | NodeResumeRequested
    | NodeSpareSet
    | StartAcknowledged
    | RanksStarted
    | RankExited
    | RanksStopped
    | CheckpointReported
    | QueueSet
    | TimerFired
    | CampaignStartRequested
    | CampaignControlRequested
    | MaintenanceReported
    | PlacementsProposed
)
"""Every event :meth:`Scheduler.handle <scheduler.core.scheduler.Scheduler.handle>` takes."""
