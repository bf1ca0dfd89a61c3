"""A typed, synchronous client of the scheduler's JobService and AdminService.

Methods take and return the client's own view types (:mod:`scheduler.client.views`: jobs,
nodes, queues, the cluster), never protobuf messages and never the scheduler's records, so
the CLIs stay free of the wire and of the core. Answers are read by
:mod:`scheduler.client.wire`.
A failed call raises :class:`RemoteError` carrying the server's stable ``reason`` (from the
``firsthop-reason`` trailing metadata) and its status code name, or
:class:`ServerUnavailableError` when the server cannot be reached. Callers switch on
``reason``, never on the message.

Credentials (docs/security.md): ``token`` is sent on every call as ``authorization: Bearer
TOKEN`` metadata; ``ca`` (the cluster CA's PEM bytes) makes the channel TLS, checking the
scheduler's certificate against it.

**Several schedulers.** ``server`` may be a comma-separated list of addresses (a leader and its
standbys on one PostgreSQL store). A call goes to the address last found to lead; when that
one cannot be reached, or answers ``not_leader`` or ``shutting_down`` (none of which applied
anything), the call is retried with backoff, straight at the leader the answer names
(``firsthop-leader`` trailing metadata) or else at the next address, until ``failover_s``
runs out. A lone address is retried only while it answers ``not_leader`` (an election is
under way). A retried ``SubmitJob`` carries the same submission id, so it cannot create a
second job. ``WatchJob`` streams are not moved: watch again.

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

import grpc

from firsthop.reasons import ErrorReason
from firsthop.states import Health, JobState, NodeState
from firsthop.v1 import (
    access_pb2,
    access_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)
from scheduler.api.spec_serde import job_spec_to_proto, job_state_to_proto, node_state_to_proto
from scheduler.api.topology_serde import topology_from_proto
from scheduler.client.access import (
    AuditView,
    UserTokenView,
    audit_from_proto,
    user_token_from_proto,
)
from scheduler.client.forecast import ForecastView, StartEstimateView, forecast_from_proto
from scheduler.client.maintenance import (
    CampaignRequest,
    CampaignView,
    campaign_view_from_proto,
    start_request_to_proto,
)
from scheduler.client.views import (
    ClusterView,
    Explanation,
    FailureView,
    HealthCheck,
    JobPage,
    JobView,
    LogPiece,
    NodeView,
    PlacementView,
    QueueSettings,
    QueueView,
    RankView,
    RepairView,
)
from scheduler.client.wire import (
    cluster_view_from_proto,
    explanation_from_proto,
    job_view_from_proto,
    node_view_from_proto,
    queue_settings_from_proto,
    queue_settings_to_proto,
    queue_view_from_proto,
)
from scheduler.jobspec import JobSpec
from topology.errors import FirsthopError, InvalidInputError
from topology.model import Topology

REASON_KEY: Final = "firsthop-reason"
LEADER_KEY: Final = "firsthop-leader"
"""Trailing metadata of a ``not_leader`` answer: the leader's ``HOST:PORT`` where known."""
_MOVE_REASONS: Final = frozenset({ErrorReason.NOT_LEADER, ErrorReason.SHUTTING_DOWN})
_BACKOFF_S: Final = (0.05, 1.0)
DEFAULT_SERVER: Final = "127.0.0.1:50051"
RESUME_TIMEOUT_S: Final = 900.0
"""Deadline of a resume, which waits for the node's deep health check."""

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_UNAVAILABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class RemoteError(FirsthopError):
    """The server refused a call; ``reason`` is its stable reason, ``code`` (and
    ``status_code``) the status name it answered with."""

    status_code = "UNKNOWN"
    default_reason = ErrorReason.REMOTE_ERROR

    def __init__(self, message: str, *, reason: str, code: str) -> None:
        super().__init__(message, reason=reason)
        self.code = code
        self.status_code = code


class ServerUnavailableError(FirsthopError):
    """The server could not be reached (or did not answer in time)."""

    status_code = "UNAVAILABLE"
    default_reason = ErrorReason.SERVER_UNAVAILABLE


def error_from_rpc(exc: grpc.RpcError, server: str) -> FirsthopError:
    """The firsthop error of a failed call."""
    call: Any = exc  # failed calls are also grpc.Call objects
    code: grpc.StatusCode = call.code()
    details: str = call.details() or ""
    reason = ""
    for key, value in call.trailing_metadata() or ():
        if key == REASON_KEY:
            reason = value if isinstance(value, str) else bytes(value).decode()
    if not reason and code in _UNAVAILABLE:
        return ServerUnavailableError(f"cannot reach the scheduler at {server}: {details}")
    message = details.removeprefix(f"{reason}: ") if reason else details
    return RemoteError(message, reason=reason or code.name.lower(), code=code.name)


class FirsthopClient:
    """Blocking client over one channel; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        timeout_s: float = 30.0,
        token: str | None = None,
        ca: bytes | None = None,
        failover_s: float | None = None,
    ) -> None:
        self.server = server
        self.addresses = parse_servers(server)
        self.timeout_s = timeout_s
        self.failover_s = timeout_s if failover_s is None else failover_s
        """How long a call keeps looking for the leader (module docstring)."""
        self.failovers = 0
        """How many times a call moved to another address."""
        self._credentials = None if ca is None else grpc.ssl_channel_credentials(ca)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._channels: dict[str, grpc.Channel] = {}
        self._method_names: dict[int, tuple[str, str]] = {}
        self._use(self.addresses[0])

    def _use(self, address: str) -> None:
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is None:
                channel = grpc.insecure_channel(address)
            else:
                channel = grpc.secure_channel(address, self._credentials)
            self._channels[address] = channel
        self.current = address
        self._channel = channel
        self._access = access_pb2_grpc.AccessServiceStub(channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(channel)
        self._stubs: dict[str, Any] = {
            "access": self._access,
            "jobs": self._jobs,
            "admin": self._admin,
        }
        for kind, stub in self._stubs.items():
            for name, method in vars(stub).items():
                self._method_names[id(method)] = (kind, name)

    def __enter__(self) -> FirsthopClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channels."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    # ------------------------------------------------------------------ jobs

    def submit_job(
        self, spec: JobSpec, *, submission_id: str | None = None, user: str = ""
    ) -> tuple[JobView, bool]:
        """Submit a job; return it and whether this call created it.

        A fresh submission id is generated when none is given, so a retried call inside this
        method cannot create a second job.
        """
        request = jobs_pb2.SubmitJobRequest(
            spec=job_spec_to_proto(spec),
            submission_id=submission_id or uuid.uuid4().hex,
            user=user,
        )
        response = self._call(self._jobs.SubmitJob, request)
        return job_view_from_proto(response.job), response.created

    def get_job(self, job_id: str) -> JobView:
        """One job."""
        response = self._call(self._jobs.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))
        return job_view_from_proto(response.job)

    def list_jobs_page(
        self,
        *,
        states: Sequence[JobState] = (),
        queue: str = "",
        user: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> JobPage:
        """One page of jobs matching the filters, oldest submission first."""
        request = jobs_pb2.ListJobsRequest(
            states=[job_state_to_proto(s) for s in states],
            queue=queue,
            user=user,
            page_size=page_size,
            page_token=page_token,
        )
        response = self._call(self._jobs.ListJobs, request)
        return JobPage(
            tuple(job_view_from_proto(j) for j in response.jobs),
            response.next_page_token,
            response.total_size,
        )

    def list_jobs(
        self,
        *,
        states: Sequence[JobState] = (),
        queue: str = "",
        user: str = "",
        limit: int | None = None,
        page_size: int = 500,
    ) -> Iterator[JobView]:
        """Every job matching the filters (up to ``limit``), fetched page by page."""
        token, count = "", 0
        while True:
            page = self.list_jobs_page(
                states=states, queue=queue, user=user, page_size=page_size, page_token=token
            )
            for job in page.jobs:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield job
            token = page.next_page_token
            if not token:
                return

    def cancel_job(self, job_id: str, reason: str = "", *, graceful: bool = False) -> JobView:
        """Cancel a job; the job after the request. ``graceful``: its ranks get the job's
        checkpoint signal and grace (they may save a checkpoint before they exit)."""
        request = jobs_pb2.CancelJobRequest(job_id=job_id, reason=reason, graceful=graceful)
        return job_view_from_proto(self._call(self._jobs.CancelJob, request).job)

    def watch_job(self, job_id: str) -> Iterator[JobView]:
        """The job now, then every change, until it ends (no deadline on the stream)."""
        stream: Any = self._jobs.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=job_id), metadata=self._metadata
        )
        try:
            for response in stream:
                yield job_view_from_proto(response.job)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.server) from None
        finally:
            stream.cancel()

    def explain_job(self, job_id: str, *, forecast: bool = True) -> Explanation:
        """Why a job is pending (or where it runs), the placement it would get, and (unless
        ``forecast`` is off) when a waiting job is expected to start."""
        request = jobs_pb2.ExplainJobRequest(job_id=job_id, skip_forecast=not forecast)
        return explanation_from_proto(self._call(self._jobs.ExplainJob, request))

    # ------------------------------------------------------------------ admin

    def forecast_cluster(
        self, *, queue: str = "", user: str = "", hosts: bool = False
    ) -> ForecastView:
        """When each waiting job is expected to start (a user sees their own jobs only)."""
        request = admin_pb2.ForecastClusterRequest(queue=queue, user=user, hosts=hosts)
        return forecast_from_proto(self._call(self._admin.ForecastCluster, request))

    def list_nodes(self, states: Sequence[NodeState] = ()) -> list[NodeView]:
        """Every node (in the states given), in topology order."""
        out: list[NodeView] = []
        token = ""
        while True:
            request = admin_pb2.ListNodesRequest(
                states=[node_state_to_proto(s) for s in states], page_token=token
            )
            response = self._call(self._admin.ListNodes, request)
            out.extend(node_view_from_proto(n) for n in response.nodes)
            token = response.next_page_token
            if not token:
                return out

    def get_node(self, name: str) -> NodeView:
        """One node."""
        return node_view_from_proto(
            self._call(self._admin.GetNode, admin_pb2.GetNodeRequest(name=name)).node
        )

    def drain_node(self, name: str, reason: str) -> NodeView:
        """Stop placing jobs on a node."""
        request = admin_pb2.DrainNodeRequest(name=name, reason=reason)
        return node_view_from_proto(self._call(self._admin.DrainNode, request).node)

    def set_node_spare(self, names: list[str], *, spare: bool) -> list[NodeView]:
        """Put hosts into the spare pool or take them out (all or none)."""
        request = admin_pb2.SetNodeSpareRequest(names=names, spare=spare)
        return [
            node_view_from_proto(n) for n in self._call(self._admin.SetNodeSpare, request).nodes
        ]

    def resume_node(
        self, name: str, reason: str = "", *, skip_health_check: bool = False
    ) -> tuple[NodeView, HealthCheck | None]:
        """Return a node to service; a drained one after its deep health check passed.

        Returns:
            The node, and the deep health check that gated it (``None`` when none ran).
        """
        request = admin_pb2.ResumeNodeRequest(
            name=name, reason=reason, skip_health_check=skip_health_check
        )
        # The server may wait for a deep health check (up to its health_check_timeout_s).
        response = self._call(self._admin.ResumeNode, request, timeout=RESUME_TIMEOUT_S)
        check = None
        if response.HasField("health_check"):
            msg = response.health_check
            check = HealthCheck(msg.passed, msg.summary, msg.report_json, msg.duration_s)
        return node_view_from_proto(response.node), check

    def get_job_logs(
        self, job_id: str, rank: int, *, offset: int = 0, max_bytes: int = 0
    ) -> LogPiece:
        """Part of one rank's log (the current attempt's, or the last one's)."""
        request = jobs_pb2.GetJobLogsRequest(
            job_id=job_id, rank=rank, offset=offset, max_bytes=max_bytes
        )
        response = self._call(self._jobs.GetJobLogs, request)
        return LogPiece(
            response.host, response.attempt, response.offset, response.size, response.data
        )

    def get_topology(self) -> Topology:
        """The cluster's topology."""
        response = self._call(self._admin.GetTopology, admin_pb2.GetTopologyRequest())
        return topology_from_proto(response.topology)

    def cluster_status(self) -> ClusterView:
        """Capacity, usage, fragmentation per tier, queue depths and fits."""
        response = self._call(self._admin.GetClusterStatus, admin_pb2.GetClusterStatusRequest())
        return cluster_view_from_proto(response.status)

    def set_queue(self, queue: QueueSettings) -> QueueSettings:
        """Create a queue or replace its settings; the settings the server holds now."""
        request = admin_pb2.SetQueueRequest(queue=queue_settings_to_proto(queue))
        return queue_settings_from_proto(self._call(self._admin.SetQueue, request).queue)

    def list_queues(self) -> list[QueueView]:
        """Every queue with its jobs and GPUs now."""
        response = self._call(self._admin.ListQueues, admin_pb2.ListQueuesRequest())
        return [queue_view_from_proto(q) for q in response.queues]

    # ------------------------------------------------------------------ maintenance

    def start_maintenance(self, request: CampaignRequest) -> CampaignView:
        """Start a maintenance campaign (the same request again answers the campaign)."""
        response = self._call(self._admin.StartMaintenance, start_request_to_proto(request))
        return campaign_view_from_proto(response.campaign)

    def get_maintenance(self, name: str) -> CampaignView:
        """One campaign with its hosts."""
        request = admin_pb2.GetMaintenanceRequest(name=name)
        return campaign_view_from_proto(self._call(self._admin.GetMaintenance, request).campaign)

    def list_maintenance(self) -> list[CampaignView]:
        """Every campaign, by name."""
        response = self._call(self._admin.ListMaintenance, admin_pb2.ListMaintenanceRequest())
        return [campaign_view_from_proto(c) for c in response.campaigns]

    def control_maintenance(self, name: str, op: str, reason: str = "") -> CampaignView:
        """``pause``, ``resume`` or ``abort`` a campaign."""
        request = admin_pb2.ControlMaintenanceRequest(name=name, op=op, reason=reason)
        response = self._call(self._admin.ControlMaintenance, request)
        return campaign_view_from_proto(response.campaign)

    def maintenance_host_done(
        self, name: str, host: str, *, failed: str | None = None
    ) -> CampaignView:
        """Hand a host of an ``--external`` campaign back (or report its failure)."""
        request = admin_pb2.MaintenanceHostDoneRequest(
            name=name, host=host, failed=failed is not None, reason=failed or ""
        )
        response = self._call(self._admin.MaintenanceHostDone, request)
        return campaign_view_from_proto(response.campaign)

    # ------------------------------------------------------------------ access (admins)

    def add_user(self, user: str, role: str) -> tuple[UserTokenView, str]:
        """Mint a token for ``user``; the token is returned here only."""
        request = access_pb2.AddUserRequest(user=user, role=role)
        response = self._call(self._access.AddUser, request)
        return user_token_from_proto(response.info), response.token

    def list_users(self) -> list[UserTokenView]:
        """Every token (live and revoked), oldest first."""
        response = self._call(self._access.ListUsers, access_pb2.ListUsersRequest())
        return [user_token_from_proto(t) for t in response.tokens]

    def revoke_user(self, user: str) -> int:
        """Revoke every live token of ``user``; how many."""
        request = access_pb2.RevokeUserRequest(user=user)
        return self._call(self._access.RevokeUser, request).revoked

    def list_audit(self, *, limit: int = 100, user: str = "") -> list[AuditView]:
        """The newest audit entries, oldest first."""
        request = access_pb2.ListAuditRequest(limit=limit, user=user)
        response = self._call(self._access.ListAudit, request)
        return [audit_from_proto(e) for e in response.entries]

    # ------------------------------------------------------------------ plumbing

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        timeout: float | None = None,
    ) -> _Resp:
        deadline = time.monotonic() + self.failover_s
        kind, name = self._method_names.get(id(method), ("", ""))
        delay = _BACKOFF_S[0]
        while True:
            address = self.current
            try:
                return method(request, timeout=timeout or self.timeout_s, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc, address)
                target = self._next_address(address, exc, error)
                if target is None or not name or time.monotonic() + delay > deadline:
                    raise error from None
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_S[1])
            if target != address:
                self.failovers += 1
                self._use(target)
            method = getattr(self._stubs[kind], name)

    def _next_address(self, address: str, exc: grpc.RpcError, error: FirsthopError) -> str | None:
        """Where to retry a call that failed on ``address`` (``None``: do not retry)."""
        call: Any = exc
        if call.code() is not grpc.StatusCode.UNAVAILABLE:
            return None  # a deadline may have passed after the call was applied
        if isinstance(error, RemoteError) and error.reason not in _MOVE_REASONS:
            return None
        if error.reason == ErrorReason.NOT_LEADER:
            leader = _metadata_value(call.trailing_metadata(), LEADER_KEY)
            if leader and leader != address:
                if leader not in self.addresses:
                    self.addresses.append(leader)
                return leader
            if len(self.addresses) == 1:
                return address
        if len(self.addresses) == 1:
            return None
        return self.addresses[(self.addresses.index(address) + 1) % len(self.addresses)]


def parse_servers(server: str) -> list[str]:
    """The addresses of a comma-separated server list (blanks dropped, order kept).

    Raises:
        InvalidInputError: ``invalid_server_address`` when the list names none.
    """
    addresses = list(dict.fromkeys(a.strip() for a in server.split(",") if a.strip()))
    if not addresses:
        raise InvalidInputError(
            f"no scheduler address in {server!r}", reason="invalid_server_address"
        )
    return addresses


def _metadata_value(metadata: Any, wanted: str) -> str:
    for key, value in metadata or ():
        if key == wanted:
            return value if isinstance(value, str) else bytes(value).decode()
    return ""


__all__ = [
    "DEFAULT_SERVER",
    "AuditView",
    "ClusterView",
    "Explanation",
    "FailureView",
    "FirsthopClient",
    "ForecastView",
    "Health",
    "HealthCheck",
    "JobPage",
    "JobState",
    "JobView",
    "LogPiece",
    "NodeState",
    "NodeView",
    "PlacementView",
    "QueueSettings",
    "QueueView",
    "RankView",
    "RemoteError",
    "RepairView",
    "ServerUnavailableError",
    "StartEstimateView",
    "UserTokenView",
]
