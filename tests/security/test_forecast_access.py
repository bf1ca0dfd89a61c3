"""Who sees what of a start-time forecast: a user their own jobs only (the count of waiting
jobs still covers everyone's), an operator every job; a user naming another is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from firsthop.v1 import admin_pb2, admin_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from scheduler.api.spec_serde import job_spec_to_proto
from tests.security.secure_builders import secure_cluster
from tests.server_builders import reason_of, spec


async def test_users_see_only_their_own_jobs_in_a_forecast(tmp_path: Path) -> None:
    async with secure_cluster(tmp_path) as cluster:
        channel = cluster.user_channel()
        jobs: Any = jobs_pb2_grpc.JobServiceStub(channel)
        admin: Any = admin_pb2_grpc.AdminServiceStub(channel)

        def auth(caller: str) -> tuple[tuple[str, str], ...]:
            return (("authorization", f"Bearer {cluster.tokens[caller]}"),)

        try:
            for caller, user in (("olga", "bob"), ("alice", ""), ("olga", "bob")):
                request = jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(spec(8)), user=user)
                await jobs.SubmitJob(request, metadata=auth(caller), timeout=10)
            everyone = admin_pb2.ForecastClusterRequest()
            as_alice = await admin.ForecastCluster(everyone, metadata=auth("alice"), timeout=10)
            as_olga = await admin.ForecastCluster(everyone, metadata=auth("olga"), timeout=10)
            bobs = admin_pb2.ForecastClusterRequest(user="bob")
            for_bob = await admin.ForecastCluster(bobs, metadata=auth("olga"), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.ForecastCluster(bobs, metadata=auth("alice"), timeout=10)
        finally:
            await channel.close(None)

    assert [e.user for e in as_alice.jobs] == ["alice"]
    assert as_alice.waiting_jobs == 3
    assert sorted(e.user for e in as_olga.jobs) == ["alice", "bob", "bob"]
    assert [e.user for e in for_bob.jobs] == ["bob", "bob"]
    # No agent ever registered: nothing can start, and the forecast says so.
    assert all(not e.HasField("start") and e.reason == "beyond_horizon" for e in as_olga.jobs)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(refused.value) == "not_your_job"
