"""The authorisation matrix against a real in-process server with TLS: every RPC x every role,
plus no credentials, a revoked token, and an agent certificate for another host.

Each cell is one real call. "Allowed" means the call got past authorisation (its answer may
still be another error: an empty request is often invalid); "denied" means exactly
UNAUTHENTICATED or PERMISSION_DENIED with the expected stable reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import message_factory
from google.protobuf.message import Message

from firsthop.v1 import access_pb2, admin_pb2, agent_pb2, jobs_pb2, slurm_pb2
from scheduler.api.spec_serde import job_spec_to_proto
from scheduler.security.policy import POLICY, Access, Denial
from tests.security.secure_builders import AGENT_HOST, OTHER_HOST, SecureCluster, secure_cluster
from tests.server_builders import reason_of, spec

SERVICES = (jobs_pb2, admin_pb2, agent_pb2, slurm_pb2, access_pb2)
CALL_TIMEOUT_S = 10.0
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def all_methods() -> dict[str, Any]:
    """Every firsthop RPC by full name -> its method descriptor."""
    out = {}
    for module in SERVICES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                out[f"/{service.full_name}/{method.name}"] = method
    return out


# caller -> (channel kind, credential, role group)
CALLERS = {
    "none": ("user", None, None),
    "revoked": ("user", "mallory", None),
    "user": ("user", "alice", "user"),
    "operator": ("user", "olga", "operator"),
    "admin": ("user", "root", "admin"),
    "agent": ("cert", AGENT_HOST, "agent"),
    "agent_other_host": ("cert", OTHER_HOST, "agent"),
    "slurm": ("cert", "slurmctld", "slurm"),
}
ALLOWED_GROUPS = {
    Access.ANY_USER: {"user", "operator", "admin"},
    Access.OWN_JOBS: {"user", "operator", "admin"},
    Access.OPERATOR: {"operator", "admin"},
    Access.ADMIN: {"admin"},
    Access.AGENT: {"agent"},
    Access.SLURM: {"slurm", "operator", "admin"},
}
JOB_METHODS = {"GetJob", "CancelJob", "WatchJob", "ExplainJob", "GetJobLogs"}


def expected(caller: str, method: str) -> str:
    """``allow`` or the reason of the expected refusal."""
    _, _, group = CALLERS[caller]
    rule = POLICY[method]
    if caller == "none":
        return Denial.UNAUTHENTICATED
    if caller == "revoked":
        return "revoked_token"
    if group not in ALLOWED_GROUPS[rule]:
        return Denial.FORBIDDEN
    name = method.rsplit("/", 1)[-1]
    if caller == "user" and name in JOB_METHODS:
        return Denial.NOT_YOUR_JOB  # the job belongs to bob
    if caller == "agent_other_host":
        return Denial.WRONG_HOST
    return "allow"


def request_for(method: str, descriptor: Any, job_id: str) -> Message:
    """A request that targets bob's job, host h0001 or a harmless name."""
    cls = message_factory.GetMessageClass(descriptor.input_type)
    request: Any = cls()
    name = method.rsplit("/", 1)[-1]
    if name == "SubmitJob":
        request.spec.CopyFrom(job_spec_to_proto(spec(8)))
    fields = descriptor.input_type.fields_by_name
    if "job_id" in fields:
        request.job_id = job_id
    if name in {"GetNode", "DrainNode", "ResumeNode"}:
        request.name = "h0003"
    if name == "RegisterNode":
        request.host = AGENT_HOST
    if name == "AddUser":
        request.user, request.role = "newbie", "user"
    if name == "RevokeUser":
        request.user = "nobody"
    if name == "Connect":
        return agent_pb2.AgentMessage(hello=agent_pb2.ConnectHello(host=AGENT_HOST))
    return request


async def call(
    channel: grpc.aio.Channel, method: str, descriptor: Any, request: Message, token: str | None
) -> tuple[grpc.StatusCode, str]:
    """Make one call; its status code and reason (``OK`` and ``""`` on success)."""
    out = message_factory.GetMessageClass(descriptor.output_type)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    serialize: Callable[[Any], bytes] = lambda m: m.SerializeToString()  # noqa: E731
    try:
        if descriptor.client_streaming:
            stream: Any = channel.stream_stream(method, serialize, out.FromString)(
                metadata=metadata, timeout=CALL_TIMEOUT_S
            )
            await stream.write(request)
            await stream.read()
            stream.cancel()
        elif descriptor.server_streaming:
            stream = channel.unary_stream(method, serialize, out.FromString)(
                request, metadata=metadata, timeout=CALL_TIMEOUT_S
            )
            await stream.read()
            stream.cancel()
        else:
            await channel.unary_unary(method, serialize, out.FromString)(
                request, metadata=metadata, timeout=CALL_TIMEOUT_S
            )
    except grpc.aio.AioRpcError as exc:
        return exc.code(), reason_of(exc)
    return grpc.StatusCode.OK, ""


async def test_every_rpc_for_every_caller(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    methods = all_methods()
    assert set(methods) <= set(POLICY)
    async with secure_cluster(tmp_path) as cluster:
        job_id = await _bobs_job(cluster)
        channels = {
            caller: cluster.user_channel() if kind == "user" else cluster.cert_channel(cred or "")
            for caller, (kind, cred, _) in CALLERS.items()
        }
        wrong: list[str] = []
        cells = 0
        try:
            for method, descriptor in sorted(methods.items()):
                for caller, (kind, cred, _) in CALLERS.items():
                    token = cluster.tokens[cred] if kind == "user" and cred else None
                    request = request_for(method, descriptor, job_id)
                    code, reason = await call(channels[caller], method, descriptor, request, token)
                    cells += 1
                    want = expected(caller, method)
                    got = "allow" if code not in DENIED else reason
                    if got != want:
                        wrong.append(f"{caller} {method}: want {want}, got {code.name} {reason}")
        finally:
            for channel in channels.values():
                await channel.close(None)
    trail = cluster.principals.audit(limit=1000)  # after the stop, which flushes the trail
    assert wrong == []
    assert cells == len(methods) * len(CALLERS)
    # Every refusal and every state-changing call left an audit entry; no secret anywhere.
    assert any(e.result == Denial.NOT_YOUR_JOB and e.who == "alice" for e in trail)
    assert any(e.result == Denial.WRONG_HOST and e.who == OTHER_HOST for e in trail)
    assert any(e.result == "revoked_token" for e in trail)
    assert any(e.method == "JobService/SubmitJob" and e.who == "alice" for e in trail)
    secrets = [t.split(".")[-1] for t in cluster.tokens.values()]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    dumped = "\n".join(repr(e) for e in trail)
    assert not [s for s in secrets if s in logged or s in dumped]


async def _bobs_job(cluster: SecureCluster) -> str:
    channel = cluster.user_channel()
    try:
        stub = jobs_pb2.DESCRIPTOR.services_by_name["JobService"]
        descriptor = stub.methods_by_name["SubmitJob"]
        out = message_factory.GetMessageClass(descriptor.output_type)
        response: Any = await channel.unary_unary(
            "/firsthop.v1.JobService/SubmitJob",
            lambda m: m.SerializeToString(),
            out.FromString,
        )(
            jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(spec(8))),
            metadata=(("authorization", f"Bearer {cluster.tokens['bob']}"),),
            timeout=CALL_TIMEOUT_S,
        )
    finally:
        await channel.close(None)
    assert response.job.user == "bob"
    return str(response.job.id)
