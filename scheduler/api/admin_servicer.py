"""``AdminService``: translates operator requests to runtime calls and records back.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

from typing import Any

import grpc.aio

from firsthop.v1 import admin_pb2, admin_pb2_grpc
from scheduler import limits
from scheduler.api.auth import current_identity, is_open, require_job_access
from scheduler.api.cluster_serde import cluster_status_to_proto, queue_status_to_proto
from scheduler.api.forecast import Forecaster, estimates_to_proto, forecast_info_to_proto
from scheduler.api.maintenance_serde import campaign_spec_from_proto, campaign_to_proto
from scheduler.api.serde import node_to_proto, queue_from_proto, queue_to_proto
from scheduler.api.spec_serde import node_state_from_proto
from scheduler.api.topology_serde import topology_to_proto
from scheduler.core.campaigns import UnknownCampaignError
from scheduler.core.events import (
    CampaignControlRequested,
    CampaignStartRequested,
    Event,
    MaintenanceReported,
    NodeDrainRequested,
    NodeSpareSet,
    QueueSet,
)
from scheduler.core.records import Node
from scheduler.runtime import queries
from scheduler.runtime.requests import AgentRequests, resume_node
from scheduler.runtime.runtime import Runtime
from topology.model import Topology

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """The AdminService over one runtime and its topology."""

    def __init__(
        self,
        runtime: Runtime,
        topology: Topology,
        requests: AgentRequests | None = None,
        *,
        health_check_timeout_s: float = 600.0,
        forecaster: Forecaster | None = None,
    ) -> None:
        self._runtime = runtime
        self._forecaster = forecaster or Forecaster(runtime)
        self._requests = requests or AgentRequests(runtime)
        self._check_timeout_s = health_check_timeout_s
        self._topology = topology
        self._topology_msg = topology_to_proto(topology)
        self._locations = {name: topology.location(name) for name in topology.hosts}

    def _node(self, node: Node) -> admin_pb2.Node:
        msg = node_to_proto(node)
        gpus, job_ids = queries.node_usage(self._runtime.state, node.name)
        msg.gpus_allocated = gpus
        msg.job_ids.extend(job_ids)
        msg.location.extend(self._locations.get(node.name, ()))
        return msg

    async def ListNodes(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListNodesRequest, context: Context
    ) -> admin_pb2.ListNodesResponse:
        protos: dict[str, admin_pb2.Node] = {}

        def size_of(node: Node) -> int:
            protos[node.name] = self._node(node)
            return protos[node.name].ByteSize()

        page = queries.list_nodes(
            self._runtime.state,
            states=[node_state_from_proto(s) for s in request.states],
            page_size=request.page_size,
            page_token=request.page_token,
            size_of=size_of,
            max_bytes=limits.MAX_LIST_RESPONSE_BYTES,
        )
        return admin_pb2.ListNodesResponse(
            nodes=[protos[n.name] for n in page.items],
            next_page_token=page.next_token,
            total_size=page.total,
        )

    async def GetNode(  # noqa: N802
        self, request: admin_pb2.GetNodeRequest, context: Context
    ) -> admin_pb2.GetNodeResponse:
        return admin_pb2.GetNodeResponse(node=self._node(self._runtime.get_node(request.name)))

    async def DrainNode(  # noqa: N802
        self, request: admin_pb2.DrainNodeRequest, context: Context
    ) -> admin_pb2.DrainNodeResponse:
        name, reason = request.name, limits.check_reason(request.reason)
        self._runtime.get_node(name)

        def drain(at: Any) -> Event:
            return NodeDrainRequested(at=at, node=name, reason=reason)

        node = await self._runtime.apply(drain, lambda _: self._runtime.get_node(name))
        if node is None:  # pragma: no cover - apply returns the result
            raise RuntimeError("drain produced no node")
        return admin_pb2.DrainNodeResponse(node=self._node(node))

    async def SetNodeSpare(  # noqa: N802
        self, request: admin_pb2.SetNodeSpareRequest, context: Context
    ) -> admin_pb2.SetNodeSpareResponse:
        names, spare = tuple(request.names), request.spare
        for name in names:
            self._runtime.get_node(name)  # unknown_node before queueing anything

        def spared(at: Any) -> Event:
            return NodeSpareSet(at=at, nodes=names, spare=spare)

        await self._runtime.apply(spared)
        return admin_pb2.SetNodeSpareResponse(
            nodes=[self._node(self._runtime.get_node(name)) for name in names]
        )

    async def ResumeNode(  # noqa: N802
        self, request: admin_pb2.ResumeNodeRequest, context: Context
    ) -> admin_pb2.ResumeNodeResponse:
        node, check = await resume_node(
            self._runtime,
            self._requests,
            request.name,
            limits.check_reason(request.reason),
            skip_check=request.skip_health_check,
            timeout_s=self._check_timeout_s,
        )
        response = admin_pb2.ResumeNodeResponse(node=self._node(node))
        if check is not None:
            response.health_check.CopyFrom(
                admin_pb2.NodeHealthCheck(
                    passed=check.passed,
                    summary=check.summary,
                    report_json=check.report_json,
                    duration_s=check.duration_s,
                )
            )
        return response

    async def GetTopology(  # noqa: N802
        self, request: admin_pb2.GetTopologyRequest, context: Context
    ) -> admin_pb2.GetTopologyResponse:
        return admin_pb2.GetTopologyResponse(topology=self._topology_msg)

    async def GetClusterStatus(  # noqa: N802
        self, request: admin_pb2.GetClusterStatusRequest, context: Context
    ) -> admin_pb2.GetClusterStatusResponse:
        status = self._runtime.core.status(self._runtime.now())
        return admin_pb2.GetClusterStatusResponse(status=cluster_status_to_proto(status))

    async def SetQueue(  # noqa: N802
        self, request: admin_pb2.SetQueueRequest, context: Context
    ) -> admin_pb2.SetQueueResponse:
        limits.check_labels(request.queue.labels)
        queue = queue_from_proto(request.queue)

        def set_queue(at: Any) -> Event:
            return QueueSet(at=at, queue=queue)

        stored = await self._runtime.apply(
            set_queue, lambda _: self._runtime.state.queues[queue.name]
        )
        if stored is None:  # pragma: no cover - apply returns the result
            raise RuntimeError("set queue produced no queue")
        return admin_pb2.SetQueueResponse(queue=queue_to_proto(stored))

    async def ListQueues(  # noqa: N802
        self, request: admin_pb2.ListQueuesRequest, context: Context
    ) -> admin_pb2.ListQueuesResponse:
        state = self._runtime.state
        status = self._runtime.core.status(self._runtime.now())
        out = []
        for queue_status in status.queues:
            msg = queue_status_to_proto(queue_status)
            record = state.queues.get(queue_status.name)
            if record is not None:
                msg.queue.CopyFrom(queue_to_proto(record))
            out.append(msg)
        return admin_pb2.ListQueuesResponse(queues=out)

    async def ForecastCluster(  # noqa: N802
        self, request: admin_pb2.ForecastClusterRequest, context: Context
    ) -> admin_pb2.ForecastClusterResponse:
        queue = limits.check_text("queue", request.queue, limits.MAX_NAME_CHARS)
        user = limits.check_user(request.user)
        identity = current_identity()
        if identity is not None and not is_open(identity) and not identity.is_operator:
            require_job_access(user or identity.name)  # a user sees their own jobs only
            user = identity.name
        answer = await self._forecaster.answer()
        wanted = [
            job.id
            for job in answer.jobs.values()
            if (not queue or job.spec.queue == queue) and (not user or job.user == user)
        ]
        estimates, truncated = estimates_to_proto(
            answer, wanted, hosts=request.hosts, max_bytes=limits.MAX_LIST_RESPONSE_BYTES
        )
        return admin_pb2.ForecastClusterResponse(
            forecast=forecast_info_to_proto(answer, self._runtime.now()),
            jobs=estimates,
            waiting_jobs=len(answer.jobs),
            truncated=truncated,
        )

    # ------------------------------------------------------------------ maintenance

    def _campaign(self, name: str) -> admin_pb2.MaintenanceResponse:
        campaign = self._runtime.core.campaigns.all.get(name)
        if campaign is None:
            raise UnknownCampaignError(f"no maintenance campaign named {name[:80]!r}")
        return admin_pb2.MaintenanceResponse(campaign=campaign_to_proto(campaign))

    async def StartMaintenance(  # noqa: N802
        self, request: admin_pb2.StartMaintenanceRequest, context: Context
    ) -> admin_pb2.MaintenanceResponse:
        spec = campaign_spec_from_proto(request.name, request.spec)

        def start(at: Any) -> Event:
            return CampaignStartRequested(at=at, spec=spec)

        await self._runtime.apply(start)
        return self._campaign(spec.name)

    async def GetMaintenance(  # noqa: N802
        self, request: admin_pb2.GetMaintenanceRequest, context: Context
    ) -> admin_pb2.MaintenanceResponse:
        return self._campaign(request.name)

    async def ListMaintenance(  # noqa: N802
        self, request: admin_pb2.ListMaintenanceRequest, context: Context
    ) -> admin_pb2.ListMaintenanceResponse:
        campaigns = self._runtime.core.campaigns.all
        return admin_pb2.ListMaintenanceResponse(
            campaigns=[campaign_to_proto(campaigns[name]) for name in sorted(campaigns)]
        )

    async def ControlMaintenance(  # noqa: N802
        self, request: admin_pb2.ControlMaintenanceRequest, context: Context
    ) -> admin_pb2.MaintenanceResponse:
        name, op, reason = request.name, request.op, request.reason

        def control(at: Any) -> Event:
            return CampaignControlRequested(at=at, name=name, op=op, reason=reason)

        await self._runtime.apply(control)
        return self._campaign(name)

    async def MaintenanceHostDone(  # noqa: N802
        self, request: admin_pb2.MaintenanceHostDoneRequest, context: Context
    ) -> admin_pb2.MaintenanceResponse:
        name, host, failed, reason = request.name, request.host, request.failed, request.reason

        def done(at: Any) -> Event:
            return MaintenanceReported(
                at=at,
                campaign=name,
                node=host,
                attempt=None,
                step="external",
                ok=not failed,
                detail=reason,
            )

        await self._runtime.apply(done)
        return self._campaign(name)
