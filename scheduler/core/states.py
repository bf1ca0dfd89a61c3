"""Job and node lifecycles as data: state enums, one transitions table each, health verdicts.

::

    job:   PENDING -> ADMITTED -> STARTING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
           (ADMITTED | STARTING | RUNNING) -> PREEMPTED -> REQUEUED -> ADMITTED ...
           (ADMITTED | STARTING | RUNNING) -> REQUEUED  (a node failed; restarts left)
    node:  UNKNOWN -> READY <-> DRAINING -> DRAINED -> READY;  any -> LOST -> READY | DRAINED

``PREEMPTED`` means "being stopped to make room"; once its ranks are gone the job is
``REQUEUED``, which queues like ``PENDING`` but keeps its restart history.

The state words themselves (:class:`JobState`, :class:`NodeState`, :class:`Health`) are defined
in :mod:`firsthop.states`, beside the other vocabularies the clients share; the lifecycle
rules (which transition is allowed, which state holds GPUs) are the core's and live here.

External vocabularies (Slurm states, agent health codes) map through tables that default to
``UNKNOWN``. Must not import anything outside the standard library, ``topology.errors`` and
the vocabularies of :mod:`firsthop`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from firsthop.reasons import ErrorReason
from firsthop.states import Health, JobState, NodeState
from topology.errors import FirsthopError

J = JobState
JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        J.PENDING: frozenset({J.ADMITTED, J.CANCELLED, J.FAILED}),
        J.ADMITTED: frozenset({J.STARTING, J.CANCELLED, J.PREEMPTED, J.REQUEUED, J.FAILED}),
        J.STARTING: frozenset(
            {J.RUNNING, J.SUCCEEDED, J.FAILED, J.CANCELLED, J.PREEMPTED, J.REQUEUED}
        ),
        J.RUNNING: frozenset({J.SUCCEEDED, J.FAILED, J.CANCELLED, J.PREEMPTED, J.REQUEUED}),
        J.PREEMPTED: frozenset({J.REQUEUED, J.CANCELLED, J.FAILED}),
        J.REQUEUED: frozenset({J.ADMITTED, J.CANCELLED, J.FAILED}),
        J.SUCCEEDED: frozenset(),
        J.FAILED: frozenset(),
        J.CANCELLED: frozenset(),
    }
)

N = NodeState
NODE_TRANSITIONS: Mapping[NodeState, frozenset[NodeState]] = MappingProxyType(
    {
        N.UNKNOWN: frozenset({N.READY, N.DRAINED, N.LOST}),
        N.READY: frozenset({N.DRAINING, N.DRAINED, N.LOST}),
        N.DRAINING: frozenset({N.DRAINED, N.READY, N.LOST}),
        N.DRAINED: frozenset({N.READY, N.LOST}),
        N.LOST: frozenset({N.READY, N.DRAINED}),
    }
)

#: Jobs in these states hold GPUs.
ALLOCATED_JOB_STATES = frozenset({J.ADMITTED, J.STARTING, J.RUNNING, J.PREEMPTED})
#: Jobs in these states wait for placement.
QUEUED_JOB_STATES = frozenset({J.PENDING, J.REQUEUED})
#: Nodes in these states may receive new jobs (when also healthy).
SCHEDULABLE_NODE_STATES = frozenset({N.READY})


class InvalidTransitionError(FirsthopError):
    """A state change the lifecycle does not allow (a bug, or a request in the wrong state)."""

    status_code = "FAILED_PRECONDITION"
    default_reason = ErrorReason.INVALID_TRANSITION


def is_terminal(state: JobState) -> bool:
    """Whether a job in ``state`` is finished for good."""
    return not JOB_TRANSITIONS[state]


def check_job_transition(src: JobState, dst: JobState) -> None:
    """Raise :class:`InvalidTransitionError` unless ``src -> dst`` is in the table."""
    if dst not in JOB_TRANSITIONS[src]:
        raise InvalidTransitionError(f"job cannot go from {src} to {dst}")


def check_node_transition(src: NodeState, dst: NodeState) -> None:
    """Raise :class:`InvalidTransitionError` unless ``src -> dst`` is in the table."""
    if dst not in NODE_TRANSITIONS[src]:
        raise InvalidTransitionError(f"node cannot go from {src} to {dst}")


def health_from_external(code: str) -> Health:
    """Map an external health word (agent, NVML summary, Slurm) to :class:`Health`."""
    return _EXTERNAL_HEALTH.get(code.strip().upper(), Health.UNKNOWN)


_EXTERNAL_HEALTH: Mapping[str, Health] = MappingProxyType(
    {
        "HEALTHY": Health.HEALTHY,
        "OK": Health.HEALTHY,
        "PASS": Health.HEALTHY,
        "SUSPECT": Health.SUSPECT,
        "DEGRADED": Health.SUSPECT,
        "WARN": Health.SUSPECT,
        "FAILED": Health.FAILED,
        "FAIL": Health.FAILED,
        "CRITICAL": Health.FAILED,
    }
)


__all__ = [
    "ALLOCATED_JOB_STATES",
    "JOB_TRANSITIONS",
    "NODE_TRANSITIONS",
    "QUEUED_JOB_STATES",
    "SCHEDULABLE_NODE_STATES",
    "Health",
    "InvalidTransitionError",
    "JobState",
    "NodeState",
    "check_job_transition",
    "check_node_transition",
    "health_from_external",
    "is_terminal",
]
