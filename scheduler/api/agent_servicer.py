"""``AgentService``: registration and the agents' ``Connect`` streams, translated.

``Connect`` reads the hello, binds the stream to the agent's session (stale sessions get
``unknown_session``), then runs two things until either ends: a reader that turns heartbeats,
reports and acknowledgements into runtime calls (in the order received), and a writer that
sends what the runtime queues for this host (commands, report acknowledgements). A newer
session of the same host ends this stream with ``session_replaced``.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

import grpc.aio

from firsthop.v1 import agent_pb2, agent_pb2_grpc
from scheduler.api.agent_serde import (
    checkpoint_from_proto,
    fetch_logs_to_proto,
    heartbeat_from_proto,
    node_registered_from_proto,
    rank_exited_from_proto,
    ranks_started_from_proto,
    run_health_check_to_proto,
    running_from_proto,
    start_ranks_to_proto,
    stop_ranks_to_proto,
)
from scheduler.api.serde import node_to_proto
from scheduler.core.actions import StartRanks
from scheduler.core.events import Event
from scheduler.runtime.agents import (
    AgentLink,
    FetchLogs,
    Outgoing,
    ReportAcked,
    RunHealthCheck,
    SessionReplacedError,
    ShuttingDownError,
)
from scheduler.runtime.fleet import AckStatus, Fleet
from scheduler.runtime.runtime import Runtime
from topology.errors import InvalidInputError

Context = grpc.aio.ServicerContext[Any, Any]

_ACK_STATUS: Final = {
    agent_pb2.COMMAND_STATUS_APPLIED: AckStatus.APPLIED,
    agent_pb2.COMMAND_STATUS_DUPLICATE: AckStatus.DUPLICATE,
    agent_pb2.COMMAND_STATUS_REJECTED: AckStatus.REJECTED,
}


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """The AgentService over one runtime."""

    def __init__(
        self,
        runtime: Runtime,
        fleet: Fleet,
        *,
        heartbeat_interval_s: float,
        heartbeat_timeout_s: float,
    ) -> None:
        self._runtime = runtime
        self._fleet = fleet
        self._interval_ms = round(heartbeat_interval_s * 1000)
        self._timeout_ms = round(heartbeat_timeout_s * 1000)

    async def RegisterNode(  # noqa: N802 - gRPC method name
        self, request: agent_pb2.RegisterNodeRequest, context: Context
    ) -> agent_pb2.RegisterNodeResponse:
        event = node_registered_from_proto(request, self._runtime.now())
        node, session = await self._fleet.register(
            lambda at: replace(event, at=at), tuple(request.location)
        )
        return agent_pb2.RegisterNodeResponse(
            node=node_to_proto(node),
            session_id=session,
            heartbeat_interval_ms=self._interval_ms,
            heartbeat_timeout_ms=self._timeout_ms,
        )

    async def Connect(  # noqa: N802
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: Context
    ) -> AsyncIterator[agent_pb2.SchedulerMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("body") != "hello":
            raise InvalidInputError(
                "the first message of a Connect stream must be a hello", reason="hello_required"
            )
        hello = first.hello
        link = self._fleet.attach(hello.host, hello.session_id)
        try:
            await self._fleet.hello(link, running_from_proto(list(hello.running)))
            reader = asyncio.create_task(self._read(link, request_iterator))
            try:
                async for message in self._write(link, reader):
                    yield message
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        finally:
            self._fleet.detach(link)

    async def _write(
        self, link: AgentLink, reader: asyncio.Task[None]
    ) -> AsyncIterator[agent_pb2.SchedulerMessage]:
        replaced = asyncio.ensure_future(link.replaced.wait())
        try:
            while True:
                item = asyncio.ensure_future(link.outbox.get())
                done, _ = await asyncio.wait(
                    {item, replaced, reader}, return_when=asyncio.FIRST_COMPLETED
                )
                if item not in done:
                    item.cancel()
                    if reader in done:
                        reader.result()  # the agent closed its side, or a read error
                        return
                    if self._runtime.agents.closing:
                        raise ShuttingDownError("the scheduler is shutting down; reconnect")
                    raise SessionReplacedError(f"{link.node}: a newer session took over")
                yield _outgoing(item.result())
        finally:
            replaced.cancel()

    async def _read(
        self, link: AgentLink, request_iterator: AsyncIterator[agent_pb2.AgentMessage]
    ) -> None:
        fleet, node = self._fleet, link.node
        async for message in request_iterator:
            kind = message.WhichOneof("body")
            now = self._runtime.now()
            if kind == "heartbeat":
                event = heartbeat_from_proto(message.heartbeat, node, now)
                fleet.heartbeat(link, _restamped(event), event.running)
            elif kind == "report":
                await self._report(link, message.report)
            elif kind == "ack":
                ack = message.ack
                status = _ACK_STATUS.get(ack.status, AckStatus.APPLIED)
                await fleet.acknowledged(link, ack.command_id, status, ack.message)
            elif kind == "log_chunk":
                chunk = message.log_chunk
                fleet.requests.log_chunk(
                    chunk.request_id,
                    found=chunk.found,
                    offset=chunk.offset,
                    size=chunk.size,
                    data=chunk.data,
                    error=chunk.error,
                )

    async def _report(self, link: AgentLink, report: agent_pb2.Report) -> None:
        fleet, node, now = self._fleet, link.node, self._runtime.now()
        kind = report.WhichOneof("body")
        if kind == "ranks_started":
            started = ranks_started_from_proto(report.ranks_started, node, now)
            await fleet.report(link, report.report_id, lambda at: replace(started, at=at))
        elif kind == "rank_exited":
            exited = rank_exited_from_proto(report.rank_exited, node, now)
            await fleet.rank_exited(link, report.report_id, lambda at: replace(exited, at=at))
        elif kind == "checkpoint":
            checkpoint = checkpoint_from_proto(report.checkpoint, now)
            await fleet.report(link, report.report_id, lambda at: replace(checkpoint, at=at))
        elif kind == "health_check":
            result = report.health_check
            fleet.health_check_reported(
                link,
                report.report_id,
                result.check_id,
                passed=result.passed,
                summary=result.summary,
                report_json=result.report_json,
            )


def _restamped(event: Event) -> Callable[[datetime], Event]:
    def make(at: datetime) -> Event:
        return replace(event, at=at)

    return make


def _outgoing(item: Outgoing) -> agent_pb2.SchedulerMessage:
    if isinstance(item, ReportAcked):
        return agent_pb2.SchedulerMessage(report_ack=agent_pb2.ReportAck(report_id=item.report_id))
    if isinstance(item, StartRanks):
        return agent_pb2.SchedulerMessage(command=start_ranks_to_proto(item))
    if isinstance(item, RunHealthCheck):
        return agent_pb2.SchedulerMessage(command=run_health_check_to_proto(item))
    if isinstance(item, FetchLogs):
        return agent_pb2.SchedulerMessage(command=fetch_logs_to_proto(item))
    return agent_pb2.SchedulerMessage(command=stop_ranks_to_proto(item))
