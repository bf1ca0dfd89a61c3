"""Who may call what: roles, identities, and the one table every call is decided by.

Roles (DESIGN.md "Security"): ``user`` submits, sees and cancels their own jobs and sees the
cluster summary; ``operator`` also sees and manages every job, node, queue and maintenance
campaign; ``admin`` also manages users and reads the audit trail; ``agent`` (a host's agent,
identified by its certificate) reaches only the agent service, and only for its own host;
``slurm`` (the Slurm prolog programs) reaches only the Slurm service.

:data:`POLICY` maps every RPC (its full gRPC method name) to an :class:`Access` rule, and
:func:`authorize` decides a call from the caller's identity and the method alone; rules that
depend on a resource (whose job it is, which host an agent speaks for) are the two small
functions :func:`may_act_on_job` and :func:`may_speak_for_host`, which the servicers apply once
they know the resource. A method missing from the table is refused (fail closed), and a test
checks that every method of every service has an entry.

Must not import gRPC, the generated protos, ``scheduler.core``, ``scheduler.store`` or the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """What an identity may do (stable names, stored with users)."""

    USER = "user"
    OPERATOR = "operator"
    ADMIN = "admin"
    AGENT = "agent"
    SLURM = "slurm"


class Access(StrEnum):
    """The rule of one method."""

    PUBLIC = "public"
    """Anyone, authenticated or not (health checking, reflection)."""
    ANY_USER = "any_user"
    """Users, operators and admins."""
    OWN_JOBS = "own_jobs"
    """Users on their own jobs; operators and admins on any (checked per job)."""
    OPERATOR = "operator"
    ADMIN = "admin"
    AGENT = "agent"
    """Agents only, each for its own host (checked per message)."""
    SLURM = "slurm"
    """The Slurm prolog programs, and operators."""


class Denial(StrEnum):
    """Stable reasons of a refused call."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "permission_denied"
    UNKNOWN_METHOD = "unknown_method"
    NOT_YOUR_JOB = "not_your_job"
    WRONG_HOST = "wrong_host"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller.

    Attributes:
        name: the user name, or the host name of an agent, or the Slurm client's name.
        role: its role.
        via: how it was established (``token``, ``certificate`` or ``insecure``).
        token_id: the public id of the token used, for the audit trail.
    """

    name: str
    role: Role
    via: str = "token"
    token_id: str = ""

    @property
    def is_operator(self) -> bool:
        """Operators and admins."""
        return self.role in (Role.OPERATOR, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`authorize`: allowed, or refused with a reason."""

    allowed: bool
    reason: str = ""
    message: str = ""


_JOBS: Final = "/firsthop.v1.JobService/"
_ADMIN: Final = "/firsthop.v1.AdminService/"
_AGENT: Final = "/firsthop.v1.AgentService/"
_SLURM: Final = "/firsthop.v1.SlurmService/"
_ACCESS: Final = "/firsthop.v1.AccessService/"

POLICY: Final[dict[str, Access]] = {
    _JOBS + "SubmitJob": Access.ANY_USER,
    _JOBS + "GetJob": Access.OWN_JOBS,
    _JOBS + "ListJobs": Access.OWN_JOBS,
    _JOBS + "CancelJob": Access.OWN_JOBS,
    _JOBS + "WatchJob": Access.OWN_JOBS,
    _JOBS + "ExplainJob": Access.OWN_JOBS,
    _JOBS + "GetJobLogs": Access.OWN_JOBS,
    _ADMIN + "GetClusterStatus": Access.ANY_USER,
    _ADMIN + "GetTopology": Access.ANY_USER,
    _ADMIN + "ListQueues": Access.ANY_USER,
    # Users see their own jobs' estimates only (the servicer filters; waiting_jobs counts all).
    _ADMIN + "ForecastCluster": Access.ANY_USER,
    _ADMIN + "ListNodes": Access.OPERATOR,
    _ADMIN + "GetNode": Access.OPERATOR,
    _ADMIN + "DrainNode": Access.OPERATOR,
    _ADMIN + "ResumeNode": Access.OPERATOR,
    _ADMIN + "SetNodeSpare": Access.OPERATOR,
    _ADMIN + "SetQueue": Access.OPERATOR,
    _ADMIN + "StartMaintenance": Access.OPERATOR,
    _ADMIN + "GetMaintenance": Access.OPERATOR,
    _ADMIN + "ListMaintenance": Access.OPERATOR,
    _ADMIN + "ControlMaintenance": Access.OPERATOR,
    _ADMIN + "MaintenanceHostDone": Access.OPERATOR,
    _ACCESS + "AddUser": Access.ADMIN,
    _ACCESS + "ListUsers": Access.ADMIN,
    _ACCESS + "RevokeUser": Access.ADMIN,
    _ACCESS + "ListAudit": Access.ADMIN,
    _AGENT + "RegisterNode": Access.AGENT,
    _AGENT + "Connect": Access.AGENT,
    _SLURM + "PublishRankTable": Access.SLURM,
    _SLURM + "GetNodeSlice": Access.SLURM,
    _SLURM + "DeleteRankTable": Access.SLURM,
    "/grpc.health.v1.Health/Check": Access.PUBLIC,
    "/grpc.health.v1.Health/Watch": Access.PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Access.PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Access.PUBLIC,
}

_ALLOWED: Final[dict[Access, frozenset[Role]]] = {
    Access.PUBLIC: frozenset(Role),
    Access.ANY_USER: frozenset({Role.USER, Role.OPERATOR, Role.ADMIN}),
    Access.OWN_JOBS: frozenset({Role.USER, Role.OPERATOR, Role.ADMIN}),
    Access.OPERATOR: frozenset({Role.OPERATOR, Role.ADMIN}),
    Access.ADMIN: frozenset({Role.ADMIN}),
    Access.AGENT: frozenset({Role.AGENT}),
    Access.SLURM: frozenset({Role.SLURM, Role.OPERATOR, Role.ADMIN}),
}


def authorize(
    identity: Identity | None, method: str, policy: dict[str, Access] | None = None
) -> Decision:
    """Whether ``identity`` (``None``: no credentials) may call ``method`` at all."""
    rule = (policy or POLICY).get(method)
    if rule is None:
        return Decision(False, Denial.UNKNOWN_METHOD, f"no access rule for {method}")
    if rule is Access.PUBLIC:
        return Decision(True)
    if identity is None:
        return Decision(False, Denial.UNAUTHENTICATED, "credentials are required")
    if identity.role in _ALLOWED[rule]:
        return Decision(True)
    return Decision(
        False,
        Denial.FORBIDDEN,
        f"role {identity.role.value} may not call {method.rsplit('/', 1)[-1]}",
    )


MUTATING: Final = frozenset(
    {
        _JOBS + "SubmitJob",
        _JOBS + "CancelJob",
        _ADMIN + "DrainNode",
        _ADMIN + "ResumeNode",
        _ADMIN + "SetQueue",
        _ACCESS + "AddUser",
        _ACCESS + "RevokeUser",
        _AGENT + "RegisterNode",
        _SLURM + "PublishRankTable",
        _SLURM + "DeleteRankTable",
    }
)
"""Methods that change state: every call of one (allowed or refused) goes to the audit trail,
as does every refused call of any method."""


def may_act_on_job(identity: Identity | None, owner: str) -> bool:
    """Whether ``identity`` may see or change a job of ``owner``."""
    if identity is None:
        return False
    return identity.is_operator or (identity.role is Role.USER and identity.name == owner)


def may_speak_for_host(identity: Identity | None, host: str) -> bool:
    """Whether ``identity`` may register, heartbeat or report for ``host``."""
    return identity is not None and identity.role is Role.AGENT and identity.name == host


def submitting_user(identity: Identity, requested: str) -> str:
    """The user a job is recorded under: the caller, or whom an operator submits for.

    Raises:
        PermissionError: a user naming someone else.
    """
    if not requested or requested == identity.name:
        return identity.name
    if identity.is_operator:
        return requested
    raise PermissionError(f"{identity.name} may not submit on behalf of {requested}")
