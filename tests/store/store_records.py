"""Record builders for the store tests: every field set to something other than its default."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType

from scheduler.core.records import Allocation, Failure, Job, Node, Queue, RankSlot
from scheduler.core.states import Health, JobState, NodeState
from scheduler.jobspec import job_spec_from_data
from scheduler.store.protocol import Store


@dataclass
class StoreKit:
    """Opens the store under test; calling ``open`` again opens the same database again."""

    kind: str
    open: Callable[[], Store]
    durable: bool


T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def rich_job(
    job_id: str = "j1",
    *,
    state: JobState = JobState.RUNNING,
    version: int = 1,
    submitted: float = 0.0,
    user: str = "alice",
    queue: str = "default",
    submission_id: str | None = "sub-1",
) -> Job:
    """A job with an allocation, failures and every optional field set."""
    spec = job_spec_from_data(
        {
            "name": "llm",
            "gpus": 16,
            "parallelism": {"tp": 8, "dp": 2, "order": "tp-dp"},
            "command": ["python", "-m", "train", "--lr", "3e-4"],
            "env": {"NCCL_DEBUG": "INFO", "UNICODE": "héllo ✓"},
            "priority": 3,
            "queue": queue,
            "checkpoint": {"dir": "/ckpt/llm", "interval_s": 600},
            "max_restarts": 4,
            "time_limit_s": 7200,
            "placement": {
                "required_tier": {"dp": "pod"},
                "max_leaves": 2,
                "volumes_gb": {"tp": 100.0, "dp": 10.5},
            },
        }
    )
    ranks = tuple(RankSlot(r, "h001" if r < 8 else "h002", r % 8) for r in range(16))
    holds = state in (JobState.ADMITTED, JobState.STARTING, JobState.RUNNING, JobState.PREEMPTED)
    return Job(
        id=job_id,
        spec=spec,
        user=user,
        state=state,
        submitted_at=at(submitted),
        updated_at=at(submitted + 50),
        submission_id=submission_id,
        reason="running",
        message="all ranks running",
        allocation=Allocation(ranks, cost=526.25, lower_bound=500.5, placed_at=at(10))
        if holds
        else None,
        last_allocation=None
        if holds
        else Allocation(ranks[:8], cost=1.5, lower_bound=1.0, placed_at=at(3)),
        first_started_at=at(11),
        started_at=at(12),
        finished_at=at(99) if state in (JobState.SUCCEEDED, JobState.FAILED) else None,
        last_checkpoint_at=at(40),
        restarts=2,
        failures=(
            Failure(at(5), "node_lost", "h009", 123.5),
            Failure(at(7), "preempted", None, 0.0),
        ),
        excluded_hosts=frozenset({"h009", "h010"}),
        productive_s=1234.5,
        started_hosts=frozenset({"h001", "h002"}) if holds else frozenset(),
        exited_ranks=frozenset({3, 5}) if holds else frozenset(),
        stopped_hosts=frozenset({"h001"}) if state is JobState.PREEMPTED else frozenset(),
        stop_deadline=at(70) if state is JobState.PREEMPTED else None,
        version=version,
    )


def rich_node(name: str = "h001", *, version: int = 1) -> Node:
    """A node with every field set."""
    return Node(
        name=name,
        state=NodeState.DRAINING,
        gpus=8,
        health=Health.SUSPECT,
        reason="health suspect: throttling",
        agent_version="0.1.0+abc",
        address="10.1.2.3",
        registered_at=at(1),
        last_heartbeat_at=at(2).astimezone(timezone(timedelta(hours=2))),
        version=version,
    )


def rich_queue(name: str = "research", *, version: int = 1) -> Queue:
    """A queue with every field set."""
    return Queue(
        name=name,
        priority=7,
        gpu_quota=512,
        weight=2.5,
        labels=MappingProxyType({"team": "llm", "cost-centre": "42"}),
        version=version,
    )


def bumped(job: Job, **fields: object) -> Job:
    """``job`` one version later, with changes."""
    return replace(job, version=job.version + 1, **fields)  # type: ignore[arg-type]
