"""Users, tokens and the audit trail: one contract for the memory and SQL implementations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.security.policy import Role
from scheduler.security.principals import (
    AuditEntry,
    Principals,
    RevokedTokenError,
    UserToken,
    bootstrap_admin,
    resolve_token,
)
from scheduler.security.tokens import InvalidTokenError, new_token
from scheduler.store.access import MemoryPrincipals, SqlPrincipals
from scheduler.store.sql import SqlStore
from topology.errors import InvalidInputError

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite"])
def principals(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Principals]:
    if request.param == "memory":
        yield MemoryPrincipals()
        return
    store = SqlStore(f"sqlite:///{tmp_path / 'access.db'}")
    try:
        yield SqlPrincipals(store.engine)
    finally:
        store.close()


def _add(p: Principals, user: str, role: Role, at: datetime = T0) -> str:
    minted = new_token()
    p.add_token(UserToken(minted.token_id, user, role, minted.digest, at))
    return minted.token


def test_a_token_resolves_to_its_user_until_revoked(principals: Principals) -> None:
    token = _add(principals, "alice", Role.USER)
    other = _add(principals, "alice", Role.OPERATOR, T0 + timedelta(seconds=1))
    identity = resolve_token(principals, f"Bearer {token}")
    assert (identity.name, identity.role, identity.via) == ("alice", Role.USER, "token")

    assert principals.revoke_user("alice", T0 + timedelta(minutes=1)) == 2
    assert principals.revoke_user("alice", T0 + timedelta(minutes=2)) == 0
    for revoked in (token, other):
        with pytest.raises(RevokedTokenError):
            resolve_token(principals, f"Bearer {revoked}")
    listed = principals.list_tokens()
    assert [t.role for t in listed] == [Role.USER, Role.OPERATOR]
    assert all(t.revoked_at == T0 + timedelta(minutes=1) for t in listed)


def test_a_wrong_secret_or_unknown_id_is_refused_alike(principals: Principals) -> None:
    token = _add(principals, "bob", Role.USER)
    prefix, token_id, secret = token.split(".")
    forged = f"{prefix}.{token_id}.{secret[::-1]}"
    unknown = new_token().token
    for bad in (forged, unknown):
        with pytest.raises(RevokedTokenError) as caught:
            resolve_token(principals, f"Bearer {bad}")
        assert caught.value.reason == "revoked_token"
    with pytest.raises(InvalidTokenError):
        resolve_token(principals, "Bearer not-a-token")


def test_the_audit_trail_keeps_the_newest_entries_in_order(principals: Principals) -> None:
    entries = [
        AuditEntry(
            T0 + timedelta(seconds=i),
            "olga" if i % 2 else "alice",
            "user",
            "token",
            "M",
            f"r{i}",
            "ok",
        )
        for i in range(5)
    ]
    principals.record_all(entries[:2])
    principals.record_all(entries[2:])
    principals.record_all([])
    assert [e.resource for e in principals.audit(limit=3)] == ["r2", "r3", "r4"]
    assert [e.resource for e in principals.audit(user="olga")] == ["r1", "r3"]
    assert principals.audit()[0].at == T0


def test_the_bootstrap_admin_is_minted_once_into_a_private_file(
    principals: Principals, tmp_path: Path
) -> None:
    path = tmp_path / "admin.token"
    assert bootstrap_admin(principals, path, T0)
    assert path.stat().st_mode & 0o777 == 0o600
    identity = resolve_token(principals, f"Bearer {path.read_text().strip()}")
    assert (identity.name, identity.role) == ("admin", Role.ADMIN)
    assert not bootstrap_admin(principals, tmp_path / "second.token", T0)
    assert not (tmp_path / "second.token").exists()
    principals.revoke_user("admin", T0)
    with pytest.raises(InvalidInputError) as exists:
        bootstrap_admin(principals, path, T0)
    assert exists.value.reason == "bootstrap_file_exists"
