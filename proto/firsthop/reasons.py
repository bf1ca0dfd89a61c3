"""The catalogue of stable reasons: the machine-readable words the scheduler, its agents and
its clients exchange, one :class:`~enum.StrEnum` per vocabulary.

Each member's value is the string that travels (in a ``reason`` field, in the
``firsthop-reason`` trailing metadata, in the store) and that users and scripts switch on: the
values are a contract, documented in ``proto/firsthop/v1/*.proto`` and the README. Add members
freely; never change a value.

Both sides import this module: the scheduler (core, API, store, CLIs) and the agents, which
import nothing else of the scheduler's. It sits in the wire-contract package beside the
generated code, and like it imports nothing of ours.

Must not import ``topology``, ``placement``, ``scheduler``, ``agents`` or the generated protos.
"""

from __future__ import annotations

from enum import StrEnum


class FailureReason(StrEnum):
    """Why a job was interrupted (``Failure.reason``; also the job's ``reason`` after it)."""

    PREEMPTED = "preempted"
    """Stopped to make room for a higher-priority job (not counted against max_restarts)."""
    RANK_EXITED = "rank_exited"
    """A rank exited with a non-zero status (or a signal)."""
    NODE_LOST = "node_lost"
    """A host of the job stopped sending heartbeats."""
    NODE_FAILED = "node_failed"
    """A host of the job reported a FAILED health verdict."""
    TIME_LIMIT = "time_limit"
    """It ran past its time limit (never requeued)."""
    START_TIMEOUT = "start_timeout"
    """Its ranks were not all running within the start timeout."""
    START_FAILED = "start_failed"
    """A rank's process could not be started (no such program, a bad environment...); the
    failure's message carries the agent's words."""


class JobReason(StrEnum):
    """The reason of a job's latest state change (``Job.reason``); every
    :class:`FailureReason` is one too."""

    SUBMITTED = "submitted"
    PLACED = "placed"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    UNPLACEABLE_JOB = "unplaceable_job"
    """It can never fit this cluster (the message says why); the job FAILED."""
    PREEMPTED = "preempted"
    RANK_EXITED = "rank_exited"
    NODE_LOST = "node_lost"
    NODE_FAILED = "node_failed"
    TIME_LIMIT = "time_limit"
    START_TIMEOUT = "start_timeout"
    START_FAILED = "start_failed"


class PendingReason(StrEnum):
    """Why a queued job is not placed yet (``ExplainJobResponse.reason``). A placer refusal
    (``insufficient_gpus``, ``too_many_leaves``...) is reported with the placer's own reason."""

    QUOTA = "quota"
    """Its queue's GPU quota is used up."""
    RESERVED = "reserved"
    """It heads the queue and holds a reservation of GPUs that will free up."""
    PREEMPTING = "preempting"
    """Lower-priority jobs are being stopped to make room for it."""
    WAITING_FOR_PREEMPTION = "waiting_for_preemption"
    """It waits for GPUs that preempted jobs are still releasing."""
    INSUFFICIENT_CAPACITY = "insufficient_capacity"
    """Not enough free capacity now."""
    BACKFILL_WOULD_DELAY = "backfill_would_delay"
    """It would fit, but would delay the reservation of a job ahead of it."""
    BLOCKED_BY_HEAD = "blocked_by_head"
    """A job ahead of it in its queue holds the capacity."""
    CYCLE_BUDGET = "cycle_budget"
    """The last scheduling cycle ran out of time before reaching it."""
    PLACING = "placing"
    """Its placement is being computed off the scheduling cycle; the next cycle admits it if
    the cluster did not change meanwhile."""
    NEXT_CYCLE = "next_cycle"
    """Submitted after the last cycle; the next one will consider it."""


class StopReason(StrEnum):
    """Why a job's ranks on a host are being stopped (``StopRanks.reason``); every
    :class:`FailureReason` is one too."""

    CANCELLED = "cancelled"
    ORPHAN = "orphan"
    """Ranks of a job (or an attempt) that should not run there any more."""
    PREEMPTED = "preempted"
    RANK_EXITED = "rank_exited"
    NODE_LOST = "node_lost"
    NODE_FAILED = "node_failed"
    TIME_LIMIT = "time_limit"
    START_TIMEOUT = "start_timeout"
    START_FAILED = "start_failed"


class NodeReason(StrEnum):
    """Reasons the scheduler gives a node's state change (operators' own text also appears
    in ``Node.reason`` after a drain or resume)."""

    REGISTERED = "registered"
    RECONNECTED = "reconnected"
    """Its agent came back before the heartbeat timeout."""
    RESUMED = "resumed"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    HEALTH_FAILED = "health_failed"
    """Its agent reported a FAILED verdict (the detail follows after a colon)."""
    RETURNED_AFTER_LOSS = "returned_after_loss"
    """It came back after being LOST: drained until an operator resumes it."""


class ErrorReason(StrEnum):
    """Why a call or a stream was refused: the ``firsthop-reason`` trailing metadata of a gRPC
    error (and the ``reason`` of :class:`topology.errors.FirsthopError`), which clients switch
    on. Component-local errors (a bad file, a bad flag) keep their reason beside them."""

    # requests
    INVALID_INPUT = "invalid_input"
    INVALID_JOB_SPEC = "invalid_job_spec"
    INVALID_JOB_STATE = "invalid_job_state"
    INVALID_QUEUE = "invalid_queue"
    INVALID_PAGE_TOKEN = "invalid_page_token"
    INVALID_PAGE_SIZE = "invalid_page_size"
    FIELD_TOO_LARGE = "field_too_large"
    """A field over its documented limit (``scheduler.limits``, README "Limits")."""
    INVALID_TEXT = "invalid_text"
    """Text that cannot travel: a NUL byte or a lone surrogate."""
    # jobs
    UNKNOWN_JOB = "unknown_job"
    UNKNOWN_QUEUE = "unknown_queue"
    JOB_TOO_LARGE = "job_too_large"
    DUPLICATE_SUBMISSION_ID = "duplicate_submission_id"
    """The submission id was used before by the same user with a different spec."""
    DUPLICATE_JOB = "duplicate_job"
    QUOTA_EXCEEDED = "quota_exceeded"
    JOB_FINISHED = "job_finished"
    UNPLACEABLE_JOB = "unplaceable_job"
    """The job breaks a placement rule no cluster state can satisfy."""
    INVALID_TRANSITION = "invalid_transition"
    UNKNOWN_RANK = "unknown_rank"
    NO_LOG = "no_log"
    LOG_TIMEOUT = "log_timeout"
    # nodes and agents
    UNKNOWN_NODE = "unknown_node"
    NODE_NOT_REGISTERED = "node_not_registered"
    TOPOLOGY_MISMATCH = "topology_mismatch"
    GPU_COUNT_MISMATCH = "gpu_count_mismatch"
    UNKNOWN_SESSION = "unknown_session"
    SESSION_REPLACED = "session_replaced"
    HELLO_REQUIRED = "hello_required"
    NODE_NOT_CONNECTED = "node_not_connected"
    HEALTH_CHECK_FAILED = "health_check_failed"
    HEALTH_CHECK_TIMEOUT = "health_check_timeout"
    AGENT_TIMEOUT = "agent_timeout"
    # the server
    SHUTTING_DOWN = "shutting_down"
    STORE_UNAVAILABLE = "store_unavailable"
    NOT_LEADER = "not_leader"
    """A standby scheduler (or a deposed leader): ask the leader, whose address the
    ``firsthop-leader`` trailing metadata gives where known."""
    VERSION_CONFLICT = "version_conflict"
    INVARIANT_VIOLATED = "invariant_violated"
    INTERNAL = "internal"
    # identity and access (scheduler.security.policy.Denial, scheduler.api.auth)
    UNAUTHENTICATED = "unauthenticated"
    INVALID_TOKEN = "invalid_token"
    REVOKED_TOKEN = "revoked_token"
    """A token that is unknown, revoked, or whose secret does not match (one reason for all)."""
    PERMISSION_DENIED = "permission_denied"
    NOT_YOUR_JOB = "not_your_job"
    WRONG_HOST = "wrong_host"
    """An agent's certificate names another host than the one it speaks for."""
    UNKNOWN_METHOD = "unknown_method"
    INVALID_MESSAGE = "invalid_message"
    """The request bytes are not a valid encoding of the method's message."""
    UNKNOWN_USER = "unknown_user"
    INVALID_USER = "invalid_user"
    INVALID_ROLE = "invalid_role"
    # the client side
    SERVER_UNAVAILABLE = "server_unavailable"
    REMOTE_ERROR = "remote_error"


class RankExitReason(StrEnum):
    """How one rank's process ended, as its agent reports it (``RankExited``)."""

    COMPLETED = "completed"
    """Exited with status 0."""
    FAILED = "failed"
    """Exited with another status, or was killed by a signal it was not sent."""
    STOPPED = "stopped"
    """Ended after a ``StopRanks`` command (SIGTERM, then SIGKILL after the grace period)."""
    START_FAILED = "start_failed"
    """Its process could not be started (no such program, not executable...)."""
    LOST = "lost"
    """The agent lost track of it (for example after the agent restarted)."""
