"""Where the CLIs find a token (flag, environment, a private file), and who a job belongs to:
the caller, or the user an operator names (the audit trail records the operator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from firsthop.v1 import jobs_pb2, jobs_pb2_grpc
from scheduler.api.spec_serde import job_spec_to_proto
from scheduler.cli import credentials
from tests.security.secure_builders import secure_cluster
from tests.server_builders import reason_of, spec
from topology.errors import InvalidInputError


def test_the_token_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "token"
    path.write_text("fh1.abc\n")
    monkeypatch.delenv(credentials.TOKEN_ENV, raising=False)
    monkeypatch.setenv(credentials.TOKEN_FILE_ENV, str(path))
    path.chmod(0o644)
    with pytest.raises(InvalidInputError) as caught:
        credentials.token()
    assert caught.value.reason == "insecure_token_file"
    path.chmod(0o600)
    assert credentials.token() == "fh1.abc"
    monkeypatch.setenv(credentials.TOKEN_ENV, "from-env")
    assert credentials.token() == "from-env"
    assert credentials.token("from-flag") == "from-flag"


def test_no_token_file_means_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(credentials.TOKEN_ENV, raising=False)
    monkeypatch.setenv(credentials.TOKEN_FILE_ENV, str(tmp_path / "absent"))
    assert credentials.token() is None


async def test_operators_submit_for_users_and_users_only_for_themselves(tmp_path: Path) -> None:
    async with secure_cluster(tmp_path) as cluster:
        channel = cluster.user_channel()
        stub: Any = jobs_pb2_grpc.JobServiceStub(channel)
        try:

            async def submit(caller: str, user: str) -> Any:
                request = jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(spec(8)), user=user)
                metadata = (("authorization", f"Bearer {cluster.tokens[caller]}"),)
                return await stub.SubmitJob(request, metadata=metadata, timeout=10)

            for_bob = await submit("olga", "bob")
            own = await submit("alice", "")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await submit("alice", "bob")
            with pytest.raises(grpc.aio.AioRpcError) as bad_name:
                await submit("olga", "../root")
        finally:
            await channel.close(None)
    trail = cluster.principals.audit(limit=100)  # after the stop, which flushes the trail
    assert for_bob.job.user == "bob"
    assert own.job.user == "alice"
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(refused.value) == "not_your_job"
    assert reason_of(bad_name.value) == "invalid_user"
    recorded = [e for e in trail if e.who == "olga" and e.result == "ok"]
    assert len(recorded) == 1
    assert recorded[0].resource.endswith(f"job {for_bob.job.id} for bob")
