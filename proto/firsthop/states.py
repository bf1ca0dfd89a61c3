"""The lifecycle words of jobs and nodes, and the health verdicts, shared by the scheduler and
its clients: :class:`JobState`, :class:`NodeState`, :class:`Health`.

The values are the names the wire uses without their prefix (``JOB_STATE_RUNNING`` is
``RUNNING``) and the ``state`` of the CLIs' JSON. Which transitions are allowed is a rule of
the scheduling core (``scheduler/core/states.py``), not of this vocabulary.

Must not import ``topology``, ``placement``, ``scheduler``, ``agents`` or the generated protos.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its lifecycle."""

    PENDING = "PENDING"
    ADMITTED = "ADMITTED"
    """Placed; its GPUs are reserved; start commands not yet acknowledged."""
    STARTING = "STARTING"
    """Start commands sent; waiting for every rank to report running."""
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"
    """Chosen to make room for a higher-priority job; its ranks are being stopped."""
    REQUEUED = "REQUEUED"
    """Back in the queue after a preemption or a node failure, restart history kept."""


class NodeState(StrEnum):
    """Schedulability of a node, as the scheduler sees it."""

    UNKNOWN = "UNKNOWN"
    READY = "READY"
    DRAINING = "DRAINING"
    """No new jobs; running jobs continue until they end or are moved."""
    DRAINED = "DRAINED"
    LOST = "LOST"
    """Missed heartbeats past the timeout."""


class Health(StrEnum):
    """The agent's verdict on a node's GPUs and host."""

    UNKNOWN = "UNKNOWN"
    HEALTHY = "HEALTHY"
    SUSPECT = "SUSPECT"
    """Degraded (thermal throttling, rising correctable errors): no new jobs."""
    FAILED = "FAILED"
    """Uncorrectable errors or a lost GPU: drain and recover its jobs."""
