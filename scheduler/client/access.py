"""The client's views of users' tokens and audit entries, read from AccessService answers.

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from firsthop.v1 import access_pb2


@dataclass(frozen=True, slots=True)
class UserTokenView:
    """One issued token (never its secret)."""

    token_id: str
    user: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditView:
    """One audit entry."""

    at: datetime
    who: str
    role: str
    via: str
    method: str
    resource: str
    result: str


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def user_token_from_proto(msg: access_pb2.UserToken) -> UserTokenView:
    """A token's view."""
    revoked = _time(msg.revoked_at) if msg.HasField("revoked_at") else None
    return UserTokenView(msg.token_id, msg.user, msg.role, _time(msg.created_at), revoked)


def audit_from_proto(msg: access_pb2.AuditEntry) -> AuditView:
    """An audit entry's view."""
    return AuditView(
        _time(msg.at), msg.who, msg.role, msg.via, msg.method, msg.resource, msg.result
    )
