"""The root error type of firsthop and the topology errors.

Every error firsthop raises on purpose derives from :class:`FirsthopError`. Each subclass
declares a stable machine-readable ``reason`` and the name of the gRPC status code it maps to
(as a string, so this module stays free of grpc). Clients switch on ``reason``, never on the
message text.

The command lines (``firsthop``, ``firsthopctl``, ``firsthop-scheduler``, ``firsthop-agent``)
turn an error into a process exit code through one table, :func:`exit_code_of` (by the
error's status code), and into one stderr line, :func:`format_error`; the README lists the
codes. They live here, beside the root error, because the agent's CLI may import nothing of
the scheduler's.

Must not import anything outside the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import ClassVar, Final


class FirsthopError(Exception):
    """Root of every deliberate firsthop error.

    Attributes:
        reason: stable, machine-readable reason, e.g. ``"topology_cycle"``.
        status_code: name of the ``grpc.StatusCode`` this error maps to.
    """

    status_code: str = "INTERNAL"
    default_reason: ClassVar[str] = "internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason
        self.message = message


class InvalidInputError(FirsthopError):
    """Input that can never be accepted (bad file, bad flag, malformed spec)."""

    status_code = "INVALID_ARGUMENT"
    default_reason = "invalid_input"


class TopologyError(InvalidInputError):
    """A topology file, CSV or generator request that does not describe a valid cluster.

    Stable reasons: ``invalid_topology`` (schema), ``topology_cycle``, ``duplicate_name``,
    ``unknown_tier``, ``unknown_switch``, ``host_multiple_parents``, ``tier_order``,
    ``mixed_depth``, ``empty_topology``, ``invalid_csv``, ``unreadable_file``,
    ``invalid_generator_args``, ``invalid_hostlist``, ``invalid_host_name``,
    ``invalid_block_sizes``.
    """

    default_reason = "invalid_topology"


class UnknownHostError(InvalidInputError):
    """A host name that is not part of the topology."""

    status_code = "NOT_FOUND"
    default_reason = "unknown_host"


class ExitCode(IntEnum):
    """Exit codes of every firsthop command line, one meaning each (the README's table)."""

    OK = 0
    FAILED = 1
    """It ran and failed: a deep health check found a fault, simulated agents failed, or the
    server failed the request (``INTERNAL``, ``ABORTED``, ``UNKNOWN``)."""
    BAD_INPUT = 2
    """Bad input, or a request refused as it stands: a file, flag or spec that is invalid
    (``INVALID_ARGUMENT``, ``OUT_OF_RANGE``), or one that conflicts with the cluster's state
    (``ALREADY_EXISTS``, ``FAILED_PRECONDITION``: a reused submission id, a finished job, a
    quota, a host whose GPUs or location disagree with the topology, no GPU with
    ``--require-gpu``)."""
    NOT_FOUND = 3
    """Not found, or no room: an unknown job, node, queue, host or rank (``NOT_FOUND``), or a
    job for which no placement exists (``firsthopctl place``, ``RESOURCE_EXHAUSTED``)."""
    UNAVAILABLE = 4
    """The scheduler (or something it needs: its store, an agent) cannot be reached or did not
    answer in time (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``)."""
    JOB_DID_NOT_SUCCEED = 5
    """``firsthop watch``: the job ended in a state other than SUCCEEDED."""


_EXIT_BY_STATUS: Final[Mapping[str, ExitCode]] = MappingProxyType(
    {
        "INVALID_ARGUMENT": ExitCode.BAD_INPUT,
        "OUT_OF_RANGE": ExitCode.BAD_INPUT,
        "ALREADY_EXISTS": ExitCode.BAD_INPUT,
        "FAILED_PRECONDITION": ExitCode.BAD_INPUT,
        "PERMISSION_DENIED": ExitCode.BAD_INPUT,
        "UNAUTHENTICATED": ExitCode.BAD_INPUT,
        "NOT_FOUND": ExitCode.NOT_FOUND,
        "RESOURCE_EXHAUSTED": ExitCode.NOT_FOUND,
        "UNAVAILABLE": ExitCode.UNAVAILABLE,
        "DEADLINE_EXCEEDED": ExitCode.UNAVAILABLE,
    }
)


def exit_code_of(exc: FirsthopError) -> ExitCode:
    """The exit code of a command that ended with ``exc`` (by its status code; any other
    status, such as ``INTERNAL`` or ``ABORTED``, is :attr:`ExitCode.FAILED`)."""
    return _EXIT_BY_STATUS.get(exc.status_code, ExitCode.FAILED)


def format_error(exc: BaseException) -> str:
    """The one-line ``error: <reason>: <message>`` form of an error (the class name when it
    has no stable reason)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, Enum):
        reason = reason.value
    if not isinstance(reason, str) or not reason:
        reason = type(exc).__name__
    message = " ".join(str(exc).split())
    return f"error: {reason}: {message}" if message else f"error: {reason}"
