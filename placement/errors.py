"""Placement errors (bad requests) and the stable reasons of unplaceable jobs.

Two kinds of "no": a request that can never be valid raises :class:`InvalidRequestError`
(an :class:`~topology.errors.InvalidInputError`: exit code 2 at the CLI, ``INVALID_ARGUMENT``
over gRPC), while a valid request that does not fit the cluster *now* is a value, a
:class:`~placement.result.PlacementFailure` carrying one :class:`FailureReason` (exit code 3).

Must not import anything outside the standard library and ``topology.errors``.
"""

from __future__ import annotations

from enum import StrEnum

from topology.errors import InvalidInputError


class InvalidRequestError(InvalidInputError):
    """A placement request that no cluster state can satisfy.

    Stable reasons: ``parallelism_mismatch`` (``tp*cp*ep*dp*pp != gpus``), ``invalid_order``,
    ``tp_exceeds_nvlink_domain``, ``nvlink_group_too_large`` (a dimension that must stay in
    one NVLink domain spans more GPUs than the domain holds, given the order),
    ``nvlink_group_misaligned`` (its groups would straddle two NVLink domains),
    ``invalid_model_shape``, plus ``unknown_host`` / ``unknown_tier`` from the topology index.
    """

    default_reason = "invalid_request"


class FailureReason(StrEnum):
    """Why a valid request cannot be placed on the current snapshot (stable values)."""

    INSUFFICIENT_GPUS = "insufficient_gpus"
    """Fewer free healthy GPUs in the whole cluster than the job needs."""
    INSUFFICIENT_FREE_HOSTS = "insufficient_free_hosts"
    """Enough free GPUs, but too few wholly free hosts for a job of one host or more."""
    NO_NVLINK_DOMAIN_FOR_TP = "no_nvlink_domain_for_tp"
    """No NVLink domain has enough free GPUs for the job's NVLink-bound groups."""
    REQUIRED_TIER_IMPOSSIBLE = "required_tier_impossible"
    """A dimension's required tier cannot hold its groups with the free hosts there are."""
    TOO_MANY_LEAVES = "too_many_leaves"
    """The job needs more leaf domains than its ``max_leaves`` cap allows."""
    NO_SOLUTION_IN_TIME = "no_solution_in_time"
    """Constraints are satisfiable in principle but neither the solver nor a heuristic found
    a placement within the time limit."""
