"""Errors of the scheduling core, each with a gRPC status name and a stable ``reason``.

A handler validates its event completely before it changes anything, so an event that raises
one of these leaves the scheduler exactly as it was.

Stable reasons (:class:`firsthop.reasons.ErrorReason`):

- ``unknown_job``, ``unknown_node``, ``unknown_queue`` (``NOT_FOUND``);
- ``job_too_large``: the job needs more GPUs (or whole hosts) than the cluster has, even empty;
- ``unplaceable_job``: the job breaks a placement rule no cluster state can satisfy (for
  example a required tier smaller than its groups); the message names the placer's reason;
- ``duplicate_submission_id``: a submission id already used *with a different spec* by the same
  user. Re-submitting the same spec with the same id is not an error: it is answered with the
  first job (see :meth:`scheduler.core.state.SchedulerState.job_for_submission`);
- ``duplicate_job``: a job id already in use (a runtime bug: ids are assigned by the server);
- ``quota_exceeded``: the job alone needs more GPUs than its queue's quota, so it could never
  run there;
- ``invalid_queue``: bad queue parameters; ``gpu_count_mismatch``: an agent registered a host
  with a GPU count other than the topology's;
- ``invalid_transition`` / ``node_not_registered`` / ``job_finished``
  (:class:`~scheduler.core.states.InvalidTransitionError`, ``FAILED_PRECONDITION``).

Must not import anything outside the standard library, ``topology.errors`` and
``scheduler.core.states``.
"""

from __future__ import annotations

from firsthop.reasons import ErrorReason
from scheduler.core.states import InvalidTransitionError
from topology.errors import FirsthopError, InvalidInputError


class UnknownJobError(FirsthopError):
    """No job has this id."""

    status_code = "NOT_FOUND"
    default_reason = ErrorReason.UNKNOWN_JOB


class UnknownNodeError(FirsthopError):
    """No host of the topology has this name."""

    status_code = "NOT_FOUND"
    default_reason = ErrorReason.UNKNOWN_NODE


class UnknownQueueError(FirsthopError):
    """No queue has this name."""

    status_code = "NOT_FOUND"
    default_reason = ErrorReason.UNKNOWN_QUEUE


class JobTooLargeError(InvalidInputError):
    """The job can never be placed on this cluster (``job_too_large``/``unplaceable_job``)."""

    default_reason = ErrorReason.JOB_TOO_LARGE


class DuplicateSubmissionError(FirsthopError):
    """A submission id reused by the same user with a different job spec."""

    status_code = "ALREADY_EXISTS"
    default_reason = ErrorReason.DUPLICATE_SUBMISSION_ID


class DuplicateJobError(FirsthopError):
    """A job id already in use."""

    status_code = "ALREADY_EXISTS"
    default_reason = ErrorReason.DUPLICATE_JOB


class QuotaExceededError(FirsthopError):
    """The job needs more GPUs than its queue may ever hold."""

    status_code = "FAILED_PRECONDITION"
    default_reason = ErrorReason.QUOTA_EXCEEDED


class InvalidQueueError(InvalidInputError):
    """Queue parameters out of range (name, quota, weight)."""

    default_reason = ErrorReason.INVALID_QUEUE


__all__ = [
    "DuplicateJobError",
    "DuplicateSubmissionError",
    "FirsthopError",
    "InvalidInputError",
    "InvalidQueueError",
    "InvalidTransitionError",
    "JobTooLargeError",
    "QuotaExceededError",
    "UnknownJobError",
    "UnknownNodeError",
    "UnknownQueueError",
]
