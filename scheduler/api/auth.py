"""The one authorisation interceptor: who is calling, may they call this, and the audit trail.

Every call is decided from (identity, role, method) by :func:`scheduler.security.policy.authorize`;
rules that depend on the resource (whose job, which host) are applied by the servicers through
:func:`require_job_access` and :func:`require_host`, which read the caller from
:func:`current_identity` (a context variable the interceptor sets for the call's task).

Identity, in order:

1. an ``authorization: Bearer <token>`` metadata value, looked up in the store's ``users``
   table (malformed: ``invalid_token``; unknown, revoked or wrong secret: ``revoked_token``);
2. the peer's client certificate (only on the agents' port, which requires one): ``OU=agent``
   is the agent of the host in ``CN``, ``OU=slurm`` the Slurm programs;
3. otherwise, on a server started without TLS (loopback, or ``--insecure``), the local
   ``anonymous`` caller, to whom every rule is open: the demo's mode. With TLS: none, and
   every non-public method answers ``UNAUTHENTICATED``.

State-changing calls (:data:`~scheduler.security.policy.MUTATING`) and every refused call are
appended to the audit trail (who, how authenticated, method, resource, result, when). Entries
are written in batches by one background task (group commit: one transaction for whatever
accumulated while the previous one was written), so auditing costs the request path no
fsync; :meth:`AuthInterceptor.flush` waits for them (reads of the trail, shutdown). No token,
key or certificate ever reaches a log line or the trail: only a token's public id.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import grpc
import grpc.aio

from scheduler.api.errors import Behavior, Handler, HandlerCache, Interceptor, wrap_handler
from scheduler.security.certs import AGENT_OU, SLURM_OU, peer_of_pem
from scheduler.security.policy import (
    MUTATING,
    Denial,
    Identity,
    Role,
    authorize,
    may_act_on_job,
    may_speak_for_host,
)
from scheduler.security.principals import (
    AccessDeniedError,
    AuditEntry,
    Principals,
    UnauthenticatedError,
    resolve_token,
)
from scheduler.security.tokens import AUTHORIZATION
from topology.errors import FirsthopError

ANONYMOUS: Final = Identity("anonymous", Role.ADMIN, via="insecure")
"""The caller without credentials on a server without TLS (every rule open)."""
RESOURCE_FIELDS: Final = ("job_id", "name", "host", "user", "slurm_job_id")

_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "firsthop_identity", default=None
)
_resource: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "firsthop_resource", default=None
)
_log = logging.getLogger(__name__)


def current_identity() -> Identity | None:
    """The caller of the RPC being served (``None`` outside the interceptor)."""
    return _identity.get()


def is_open(identity: Identity | None) -> bool:
    """Whether ``identity`` is the insecure local caller, for whom resource rules are open."""
    return identity is not None and identity.via == ANONYMOUS.via


def require_job_access(owner: str, job_id: str = "") -> None:
    """Refuse (``PERMISSION_DENIED`` ``not_your_job``) unless the caller may act on the job.

    Raises:
        AccessDeniedError: a user acting on someone else's job.
    """
    identity = current_identity()
    if is_open(identity) or may_act_on_job(identity, owner):
        return
    raise AccessDeniedError(
        f"job {job_id or '?'} belongs to another user", reason=Denial.NOT_YOUR_JOB
    )


def require_host(host: str) -> None:
    """Refuse (``PERMISSION_DENIED`` ``wrong_host``) unless the caller is the agent of ``host``.

    Raises:
        AccessDeniedError: an agent certificate for another host.
    """
    identity = current_identity()
    if is_open(identity) or may_speak_for_host(identity, host):
        return
    named = identity.name if identity is not None else "nobody"
    raise AccessDeniedError(
        f"the certificate of {named[:255]!r} may not speak for host {host[:255]!r}",
        reason=Denial.WRONG_HOST,
    )


def note_resource(resource: str) -> None:
    """Name what the current call acted on, for its audit entry (e.g. ``job j-1``)."""
    noted = _resource.get()
    if noted is not None:
        noted.append(resource)


def identity_of(
    metadata: Any,
    auth_context: Mapping[str, Iterable[bytes]],
    principals: Principals,
    *,
    insecure: bool,
) -> Identity | None:
    """The caller of one call (module docstring: token, then certificate, then insecure).

    Raises:
        InvalidTokenError: a malformed, unknown or revoked token.
    """
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            text = value if isinstance(value, str) else bytes(value).decode("latin-1")
            return resolve_token(principals, text)
    pem = next(iter(auth_context.get("x509_pem_cert", ())), None)
    if pem:
        peer = peer_of_pem(pem)
        if peer.unit == AGENT_OU and peer.common_name:
            return Identity(peer.common_name, Role.AGENT, via="certificate")
        if peer.unit == SLURM_OU and peer.common_name:
            return Identity(peer.common_name, Role.SLURM, via="certificate")
        return None
    return ANONYMOUS if insecure else None


class AuthInterceptor(Interceptor):
    """Authenticates, authorises and audits every call (module docstring).

    Args:
        principals: users, tokens and the audit trail.
        insecure: the server has no TLS: callers without credentials are :data:`ANONYMOUS`.
        clock: the audit trail's clock.
    """

    def __init__(
        self,
        principals: Principals,
        *,
        insecure: bool,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._principals = principals
        self._insecure = insecure
        self._clock = clock or (lambda: datetime.now(UTC))
        self._wrapped = HandlerCache()
        self._pending: list[AuditEntry] = []
        self._writer: asyncio.Task[None] | None = None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        return self._wrapped.get(
            method,
            handler,
            lambda: wrap_handler(handler, self._unary(method), self._stream(method)),
        )

    async def _admit(
        self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[Identity | None, list[str]]:
        """Authenticate and authorise; set the call's context variables."""
        identity: Identity | None = None
        noted: list[str] = []
        _resource.set(noted)
        noted.extend(_resource_of(request))
        try:
            identity = identity_of(
                context.invocation_metadata(),
                context.auth_context(),
                self._principals,
                insecure=self._insecure,
            )
            decision = authorize(identity, method)
            if not decision.allowed and not is_open(identity):
                error_type = UnauthenticatedError if identity is None else AccessDeniedError
                raise error_type(decision.message, reason=decision.reason)
        except FirsthopError as exc:
            await self._audit_async(identity, method, noted, exc.reason)
            raise
        _identity.set(identity)
        return identity, noted

    def _unary(self, method: str) -> Callable[[Behavior], Behavior]:
        def wrap(behavior: Behavior) -> Behavior:
            async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                identity, noted = await self._admit(method, request, context)
                result = "ok"
                try:
                    return await behavior(request, context)
                except FirsthopError as exc:
                    result = exc.reason
                    raise
                except grpc.aio.AbortError:
                    result = "aborted"
                    raise
                finally:
                    await self._audit_async(identity, method, noted, result)

            return run

        return wrap

    def _stream(self, method: str) -> Callable[[Behavior], Behavior]:
        def wrap(behavior: Behavior) -> Behavior:
            if not inspect.isasyncgenfunction(behavior):
                return self._unary(method)(behavior)

            async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                identity, noted = await self._admit(method, request, context)
                result = "ok"
                try:
                    async for item in behavior(request, context):
                        yield item
                except FirsthopError as exc:
                    result = exc.reason
                    raise
                finally:
                    await self._audit_async(identity, method, noted, result)

            return run

        return wrap

    async def _audit_async(
        self, identity: Identity | None, method: str, noted: list[str], result: str
    ) -> None:
        if method not in MUTATING and result not in _REFUSALS:
            return
        who = identity or Identity("", Role.USER, via="none")
        self._pending.append(
            AuditEntry(
                at=self._clock(),
                who=who.name,
                role=who.role.value if identity is not None else "",
                via=who.via,
                method=method.lstrip("/").removeprefix("firsthop.v1."),
                resource=", ".join(dict.fromkeys(noted))[:255],
                result=result[:64],
            )
        )
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        """Write what is pending, in batches (one transaction each), until nothing is."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._principals.record_all, batch)
            except FirsthopError as exc:
                _log.error("cannot record %d audit entries: %s", len(batch), exc.reason)

    async def flush(self) -> None:
        """Wait until every audit entry so far is written (before reads, and at shutdown)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._pending:
            await self._write_pending()


_REFUSALS: Final = frozenset(
    {
        Denial.UNAUTHENTICATED,
        Denial.FORBIDDEN,
        Denial.UNKNOWN_METHOD,
        Denial.NOT_YOUR_JOB,
        Denial.WRONG_HOST,
        "invalid_token",
        "revoked_token",
    }
)


def _resource_of(request: Any) -> list[str]:
    """``field value`` of the first identifying field a request has (``job_id j-1``)."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return []
    for name in RESOURCE_FIELDS:
        if name in descriptor.fields_by_name:
            value = getattr(request, name)
            if value:
                label = "job" if name == "job_id" else name
                return [f"{label} {str(value)[:128]}"]
    return []
