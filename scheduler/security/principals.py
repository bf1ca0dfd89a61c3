"""Who holds a token, and what was done: the records behind authentication and the audit trail.

:class:`UserToken` is one row of the ``users`` table (a token's public id, its user and role,
the SHA-256 digest of its secret, when it was created and revoked); :class:`AuditEntry` one row
of the ``audit`` table. :class:`Principals` is what the API's authorisation interceptor and the
user-management RPCs need from a store; :mod:`scheduler.store.access` implements it in memory
and on SQL. Defined here, not in the store, because the API may not import the store.

:func:`resolve_token` turns a presented ``authorization`` value into an :class:`Identity`.

Must not import gRPC, the generated protos, ``scheduler.core``, ``scheduler.store`` or the API.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

from scheduler.security.policy import Identity, Role
from scheduler.security.tokens import InvalidTokenError, matches, new_token, parse_bearer
from topology.errors import FirsthopError, InvalidInputError

USER_ROLES: Final = (Role.USER, Role.OPERATOR, Role.ADMIN)
"""Roles a token may carry (agents and the Slurm programs use certificates)."""
_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
MAX_AUDIT_PAGE: Final = 1000


class UnknownUserError(FirsthopError):
    """A user with no live token."""

    status_code = "NOT_FOUND"
    default_reason = "unknown_user"


class AccessDeniedError(FirsthopError):
    """An authenticated caller refused by the policy (the reason says which rule)."""

    status_code = "PERMISSION_DENIED"
    default_reason = "permission_denied"


class UnauthenticatedError(FirsthopError):
    """A call that needs credentials and has none (or none that can be checked)."""

    status_code = "UNAUTHENTICATED"
    default_reason = "unauthenticated"


class RevokedTokenError(InvalidTokenError):
    """A token that was revoked, or that no user holds."""

    default_reason = "revoked_token"


@dataclass(frozen=True, slots=True)
class UserToken:
    """One issued token (never the secret: only its digest)."""

    token_id: str
    user: str
    role: Role
    digest: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One state-changing call: who (and how authenticated), which method on what, the result."""

    at: datetime
    who: str
    role: str
    via: str
    method: str
    resource: str
    result: str


class Principals(Protocol):
    """Users, tokens and the audit trail, as the API needs them."""

    def add_token(self, token: UserToken) -> None:
        """Store a new token."""
        ...

    def find_token(self, token_id: str) -> UserToken | None:
        """The token with this id (revoked ones too), or ``None``."""
        ...

    def list_tokens(self) -> tuple[UserToken, ...]:
        """Every token, oldest first."""
        ...

    def revoke_user(self, user: str, at: datetime) -> int:
        """Revoke every live token of ``user``; how many were revoked."""
        ...

    def record_all(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit entries (in one transaction)."""
        ...

    def audit(self, *, limit: int = 100, user: str = "") -> tuple[AuditEntry, ...]:
        """The newest ``limit`` entries (of ``user`` when given), oldest first."""
        ...


def check_user_name(name: str) -> str:
    """A user name: 1-64 of letters, digits, ``_ . @ -`` (no leading punctuation but ``_``).

    Raises:
        InvalidInputError: ``invalid_user``.
    """
    if not _USER_NAME.match(name):
        raise InvalidInputError(
            f"invalid user name {name[:80]!r}: 1-64 of letters, digits, '_', '.', '@', '-'",
            reason="invalid_user",
        )
    return name


def user_role(text: str) -> Role:
    """The role a token may carry, by name.

    Raises:
        InvalidInputError: ``invalid_role``.
    """
    for role in USER_ROLES:
        if text == role.value:
            return role
    raise InvalidInputError(
        f"invalid role {text[:40]!r}: one of {', '.join(r.value for r in USER_ROLES)}",
        reason="invalid_role",
    )


def check_audit_limit(limit: int) -> int:
    """A page size for the audit listing (0: the default of 100)."""
    if limit == 0:
        return 100
    if not 1 <= limit <= MAX_AUDIT_PAGE:
        raise InvalidInputError(
            f"limit must be 1..{MAX_AUDIT_PAGE}, not {limit}", reason="invalid_page_size"
        )
    return limit


def resolve_token(principals: Principals, authorization: str) -> Identity:
    """The identity of an ``authorization: Bearer <token>`` value.

    Raises:
        InvalidTokenError: malformed (``invalid_token``); unknown, revoked or not matching
            (``revoked_token``, one reason for all three so a caller learns nothing).
    """
    presented = parse_bearer(authorization)
    stored = principals.find_token(presented.token_id)
    if stored is None or stored.revoked_at is not None or not matches(presented, stored.digest):
        raise RevokedTokenError("the token is unknown or revoked")
    return Identity(stored.user, stored.role, via="token", token_id=stored.token_id)


BOOTSTRAP_USER: Final = "admin"


def bootstrap_admin(principals: Principals, path: Path, now: datetime) -> bool:
    """Mint the first admin's token into ``path`` (mode 0600) when no admin has a live token.

    The token is written to the file only (never logged); ``FIRSTHOP_TOKEN_FILE=PATH
    firsthopctl ...`` uses it. Returns whether a token was minted.

    Raises:
        InvalidInputError: ``bootstrap_file_exists`` (never overwritten), ``unreadable_file``.
    """
    if any(t.role is Role.ADMIN and t.revoked_at is None for t in principals.list_tokens()):
        return False
    minted = new_token()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInputError(
            f"{path} exists: remove it, or use the token in it", reason="bootstrap_file_exists"
        ) from None
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write {path}: {exc.strerror}", reason="unreadable_file"
        ) from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(minted.token + "\n")
    principals.add_token(UserToken(minted.token_id, BOOTSTRAP_USER, Role.ADMIN, minted.digest, now))
    return True
