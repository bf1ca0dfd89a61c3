"""``AccessService``: users, their tokens and the audit trail, translated (admins only).

A new token is minted here (:func:`scheduler.security.tokens.new_token`), its digest stored,
and the token itself returned once in the answer; it is never logged.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from firsthop.v1 import access_pb2, access_pb2_grpc
from scheduler.api.auth import note_resource
from scheduler.security.principals import (
    AuditEntry,
    Principals,
    UnknownUserError,
    UserToken,
    check_audit_limit,
    check_user_name,
    user_role,
)
from scheduler.security.tokens import new_token

Context = grpc.aio.ServicerContext[Any, Any]


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


def token_to_proto(token: UserToken) -> access_pb2.UserToken:
    """The wire form of a stored token (never its digest)."""
    msg = access_pb2.UserToken(
        token_id=token.token_id,
        user=token.user,
        role=token.role.value,
        created_at=_stamp(token.created_at),
    )
    if token.revoked_at is not None:
        msg.revoked_at.CopyFrom(_stamp(token.revoked_at))
    return msg


def audit_to_proto(entry: AuditEntry) -> access_pb2.AuditEntry:
    """The wire form of an audit entry."""
    return access_pb2.AuditEntry(
        at=_stamp(entry.at),
        who=entry.who,
        role=entry.role,
        via=entry.via,
        method=entry.method,
        resource=entry.resource,
        result=entry.result,
    )


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    """The AccessService over one :class:`~scheduler.security.principals.Principals`."""

    def __init__(
        self,
        principals: Principals,
        clock: Callable[[], datetime] | None = None,
        *,
        before_reading_audit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._principals = principals
        self._clock = clock or (lambda: datetime.now(UTC))
        self._before_audit = before_reading_audit

    async def AddUser(  # noqa: N802 - gRPC method name
        self, request: access_pb2.AddUserRequest, context: Context
    ) -> access_pb2.AddUserResponse:
        user = check_user_name(request.user)
        role = user_role(request.role)
        minted = new_token()
        token = UserToken(minted.token_id, user, role, minted.digest, self._clock())
        await asyncio.to_thread(self._principals.add_token, token)
        note_resource(f"token {minted.token_id} ({role.value})")
        return access_pb2.AddUserResponse(info=token_to_proto(token), token=minted.token)

    async def ListUsers(  # noqa: N802
        self, request: access_pb2.ListUsersRequest, context: Context
    ) -> access_pb2.ListUsersResponse:
        tokens = await asyncio.to_thread(self._principals.list_tokens)
        return access_pb2.ListUsersResponse(tokens=[token_to_proto(t) for t in tokens])

    async def RevokeUser(  # noqa: N802
        self, request: access_pb2.RevokeUserRequest, context: Context
    ) -> access_pb2.RevokeUserResponse:
        user = check_user_name(request.user)
        revoked = await asyncio.to_thread(self._principals.revoke_user, user, self._clock())
        if revoked == 0:
            raise UnknownUserError(f"user {user!r} has no live token")
        return access_pb2.RevokeUserResponse(revoked=revoked)

    async def ListAudit(  # noqa: N802
        self, request: access_pb2.ListAuditRequest, context: Context
    ) -> access_pb2.ListAuditResponse:
        limit = check_audit_limit(request.limit)
        if self._before_audit is not None:
            await self._before_audit()
        entries = await asyncio.to_thread(
            lambda: self._principals.audit(limit=limit, user=request.user)
        )
        return access_pb2.ListAuditResponse(entries=[audit_to_proto(e) for e in entries])
