"""Users, tokens and the audit trail in a store: :class:`MemoryPrincipals` and
:class:`SqlPrincipals` implement :class:`scheduler.security.principals.Principals`.

Kept beside the job store rather than inside it: the scheduling core never sees these tables,
and the job store's protocol stays what the core needs. ``SqlPrincipals`` shares the job
store's engine (one database, one migration history: revision 0004 creates ``users`` and
``audit``).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.runtime`` or
``scheduler.cli``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from threading import Lock
from typing import Any

import sqlalchemy as sa

from scheduler.security.policy import Role
from scheduler.security.principals import AuditEntry, UserToken
from scheduler.store import schema
from scheduler.store.protocol import StoreError


class MemoryPrincipals:
    """Users and audit entries in process memory (tests, ``memory://``)."""

    def __init__(self) -> None:
        self._tokens: dict[str, UserToken] = {}
        self._audit: list[AuditEntry] = []
        self._lock = Lock()

    def add_token(self, token: UserToken) -> None:
        """Store a new token."""
        with self._lock:
            self._tokens[token.token_id] = token

    def find_token(self, token_id: str) -> UserToken | None:
        """The token with this id, or ``None``."""
        with self._lock:
            return self._tokens.get(token_id)

    def list_tokens(self) -> tuple[UserToken, ...]:
        """Every token, oldest first."""
        with self._lock:
            return tuple(sorted(self._tokens.values(), key=lambda t: (t.created_at, t.token_id)))

    def revoke_user(self, user: str, at: datetime) -> int:
        """Revoke every live token of ``user``."""
        with self._lock:
            live = [t for t in self._tokens.values() if t.user == user and t.revoked_at is None]
            for token in live:
                self._tokens[token.token_id] = _revoked(token, at)
            return len(live)

    def record_all(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit entries."""
        with self._lock:
            self._audit.extend(entries)

    def audit(self, *, limit: int = 100, user: str = "") -> tuple[AuditEntry, ...]:
        """The newest ``limit`` entries, oldest first."""
        with self._lock:
            chosen = [e for e in self._audit if not user or e.who == user]
        return tuple(chosen[-limit:])


def _revoked(token: UserToken, at: datetime) -> UserToken:
    return UserToken(token.token_id, token.user, token.role, token.digest, token.created_at, at)


class SqlPrincipals:
    """Users and audit entries in the SQL store's database (``users``, ``audit``)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    @staticmethod
    @contextmanager
    def _run(what: str) -> Iterator[None]:
        """Database failures become ``store_unavailable``."""
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot {what}: {type(exc).__name__}") from exc

    def add_token(self, token: UserToken) -> None:
        """Store a new token."""
        with self._run("add a token"), self._engine.begin() as conn:
            conn.execute(
                sa.insert(schema.users).values(
                    token_id=token.token_id,
                    user=token.user,
                    role=token.role.value,
                    digest=token.digest,
                    created_at=token.created_at,
                    revoked_at=token.revoked_at,
                )
            )

    def find_token(self, token_id: str) -> UserToken | None:
        """The token with this id, or ``None``."""
        t = schema.users
        with self._run("read a token"), self._engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.token_id == token_id)).one_or_none()
        return None if row is None else _token_of(row._asdict())

    def list_tokens(self) -> tuple[UserToken, ...]:
        """Every token, oldest first."""
        t = schema.users
        with self._run("list tokens"), self._engine.connect() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.created_at, t.c.token_id)).all()
        return tuple(_token_of(r._asdict()) for r in rows)

    def revoke_user(self, user: str, at: datetime) -> int:
        """Revoke every live token of ``user``."""
        t = schema.users
        with self._run("revoke a user"), self._engine.begin() as conn:
            result = conn.execute(
                sa.update(t).where(t.c.user == user, t.c.revoked_at.is_(None)).values(revoked_at=at)
            )
        return int(result.rowcount)

    def record_all(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit entries in one transaction."""
        if not entries:
            return
        rows = [
            {
                "at": e.at,
                "who": e.who,
                "role": e.role,
                "via": e.via,
                "method": e.method,
                "resource": e.resource,
                "result": e.result,
            }
            for e in entries
        ]
        with self._run("record audit entries"), self._engine.begin() as conn:
            conn.execute(sa.insert(schema.audit), rows)

    def audit(self, *, limit: int = 100, user: str = "") -> tuple[AuditEntry, ...]:
        """The newest ``limit`` entries, oldest first."""
        a = schema.audit
        query = sa.select(a).order_by(a.c.at.desc(), a.c.id.desc()).limit(limit)
        if user:
            query = query.where(a.c.who == user)
        with self._run("read the audit trail"), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return tuple(
            AuditEntry(r.at, r.who, r.role, r.via, r.method, r.resource, r.result)
            for r in reversed(rows)
        )


def _token_of(row: dict[str, Any]) -> UserToken:
    return UserToken(
        token_id=row["token_id"],
        user=row["user"],
        role=Role(row["role"]),
        digest=row["digest"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
