"""The root error type of firsthop and the topology errors.

Every error firsthop raises on purpose derives from :class:`FirsthopError`. Each subclass
declares a stable machine-readable ``reason`` and the name of the gRPC status code it maps to
(as a string, so this module stays free of grpc). Clients switch on ``reason``, never on the
message text.

Must not import anything outside the standard library.
"""

from __future__ import annotations

from typing import ClassVar


class FirsthopError(Exception):
    """Root of every deliberate firsthop error.

    Attributes:
        reason: stable, machine-readable reason, e.g. ``"topology_cycle"``.
        status_code: name of the ``grpc.StatusCode`` this error maps to.
    """

    status_code: ClassVar[str] = "INTERNAL"
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
