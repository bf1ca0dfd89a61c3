"""Tokens (minted once, stored as a digest) and the access policy table."""

from __future__ import annotations

import pytest

from firsthop.v1 import access_pb2, admin_pb2, agent_pb2, jobs_pb2, slurm_pb2
from scheduler.security.policy import (
    POLICY,
    Access,
    Denial,
    Identity,
    Role,
    authorize,
    may_act_on_job,
    may_speak_for_host,
    submitting_user,
)
from scheduler.security.tokens import (
    InvalidTokenError,
    matches,
    new_token,
    parse_bearer,
    parse_token,
)


def test_a_token_matches_only_its_own_digest() -> None:
    one, two = new_token(), new_token()
    presented = parse_bearer(f"Bearer {one.token}")

    assert presented.token_id == one.token_id
    assert matches(presented, one.digest)
    assert not matches(presented, two.digest)
    assert one.token_id != two.token_id
    assert one.digest not in one.token


@pytest.mark.parametrize(
    "value",
    ["", "Bearer", "Basic abc", "Bearer fh1.zz.abc", "Bearer " + "x" * 300, "token fh1.a.b"],
)
def test_malformed_credentials_are_refused_with_a_reason(value: str) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        parse_bearer(value)
    assert caught.value.reason == "invalid_token"
    assert caught.value.status_code == "UNAUTHENTICATED"


def test_a_tampered_secret_does_not_match() -> None:
    minted = new_token()
    prefix, token_id, secret = minted.token.split(".")
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    presented = parse_token(f"{prefix}.{token_id}.{flipped}")
    assert not matches(presented, minted.digest)


def _service_methods() -> list[str]:
    out = []
    for module in (jobs_pb2, admin_pb2, agent_pb2, slurm_pb2, access_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            out += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return out


def test_every_rpc_of_every_service_has_an_access_rule() -> None:
    methods = _service_methods()
    assert len(methods) >= 15
    assert [m for m in methods if m not in POLICY] == []


def test_the_policy_names_no_rpc_that_does_not_exist() -> None:
    methods = set(_service_methods())
    stale = [m for m in POLICY if m.startswith("/firsthop.") and m not in methods]
    assert stale == []


USER = Identity("alice", Role.USER)
OPERATOR = Identity("olga", Role.OPERATOR)
ADMIN = Identity("root", Role.ADMIN)
AGENT = Identity("h001", Role.AGENT, via="certificate")
SLURM = Identity("slurmctld", Role.SLURM, via="certificate")
EXPECTED = {
    Access.PUBLIC: {None, USER, OPERATOR, ADMIN, AGENT, SLURM},
    Access.ANY_USER: {USER, OPERATOR, ADMIN},
    Access.OWN_JOBS: {USER, OPERATOR, ADMIN},
    Access.OPERATOR: {OPERATOR, ADMIN},
    Access.ADMIN: {ADMIN},
    Access.AGENT: {AGENT},
    Access.SLURM: {SLURM, OPERATOR, ADMIN},
}


@pytest.mark.parametrize("method", sorted(POLICY))
@pytest.mark.parametrize("who", [None, USER, OPERATOR, ADMIN, AGENT, SLURM])
def test_the_authorisation_matrix(method: str, who: Identity | None) -> None:
    decision = authorize(who, method)
    assert decision.allowed == (who in EXPECTED[POLICY[method]])
    if not decision.allowed:
        expected = Denial.UNAUTHENTICATED if who is None else Denial.FORBIDDEN
        assert decision.reason == expected


def test_unknown_methods_are_refused_even_to_admins() -> None:
    decision = authorize(ADMIN, "/firsthop.v1.JobService/DropDatabase")
    assert not decision.allowed
    assert decision.reason == Denial.UNKNOWN_METHOD


def test_resource_rules() -> None:
    assert may_act_on_job(USER, "alice")
    assert not may_act_on_job(USER, "bob")
    assert may_act_on_job(OPERATOR, "bob")
    assert not may_act_on_job(AGENT, "h001")
    assert not may_act_on_job(None, "alice")
    assert may_speak_for_host(AGENT, "h001")
    assert not may_speak_for_host(AGENT, "h002")
    assert not may_speak_for_host(ADMIN, "h001")
    assert submitting_user(USER, "") == "alice"
    assert submitting_user(OPERATOR, "bob") == "bob"
    with pytest.raises(PermissionError):
        submitting_user(USER, "bob")
