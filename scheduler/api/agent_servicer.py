"""``AgentService``: registration and the agents' ``Connect`` streams, translated.

``Connect`` reads the hello, binds the stream to the agent's session (stale sessions get
``unknown_session``), then runs two things until either ends: a reader that turns heartbeats,
reports and acknowledgements into runtime calls (in the order received), and a writer that
sends what the runtime queues for this host (commands, report acknowledgements). A newer
session of the same host ends this stream with ``session_replaced``. The reader is paced per
session (:mod:`scheduler.runtime.ratelimit`): a flooding agent is read late and its excess
heartbeats are dropped and counted, so it cannot slow other clients.

An agent speaks only for the host in its certificate (:func:`scheduler.api.auth.require_host`,
``wrong_host``): checked on registration and on the hello, to which every later heartbeat and
report of the stream is bound.

Must not import ``scheduler.store`` or ``agents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from firsthop.reasons import ErrorReason
from firsthop.v1 import agent_pb2, agent_pb2_grpc
from scheduler.api.agent_serde import (
    ack_from_proto,
    checkpoint_from_proto,
    health_check_from_proto,
    heartbeat_from_proto,
    keep_alive_to_proto,
    log_chunk_from_proto,
    maintenance_from_proto,
    node_registered_from_proto,
    outgoing_to_proto,
    rank_exited_from_proto,
    ranks_started_from_proto,
    running_from_proto,
)
from scheduler.api.auth import require_host
from scheduler.api.serde import node_to_proto
from scheduler.runtime.agents import (
    AgentLink,
    HeartbeatAcked,
    Outgoing,
    SessionReplacedError,
    ShuttingDownError,
)
from scheduler.runtime.fleet import Fleet
from scheduler.runtime.ratelimit import SessionLimiter
from scheduler.runtime.runtime import Runtime
from topology.errors import InvalidInputError

Context = grpc.aio.ServicerContext[Any, Any]

_log = logging.getLogger(__name__)


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """The AgentService over one runtime."""

    def __init__(
        self,
        runtime: Runtime,
        fleet: Fleet,
        *,
        heartbeat_interval_s: float,
        heartbeat_timeout_s: float,
        fence_after_s: float = 0.0,
    ) -> None:
        self._runtime = runtime
        self._fleet = fleet
        self._interval_s = heartbeat_interval_s
        self._interval_ms = round(heartbeat_interval_s * 1000)
        self._timeout_ms = round(heartbeat_timeout_s * 1000)
        self._fence_ms = round(fence_after_s * 1000)

    async def RegisterNode(  # noqa: N802 - gRPC method name
        self, request: agent_pb2.RegisterNodeRequest, context: Context
    ) -> agent_pb2.RegisterNodeResponse:
        require_host(request.host)
        make = node_registered_from_proto(request)
        node, session = await self._fleet.register(make, tuple(request.location))
        return agent_pb2.RegisterNodeResponse(
            node=node_to_proto(node),
            session_id=session,
            heartbeat_interval_ms=self._interval_ms,
            heartbeat_timeout_ms=self._timeout_ms,
            epoch=self._runtime.agents.epoch,
            fence_after_ms=self._fence_ms,
        )

    async def Connect(  # noqa: N802
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: Context
    ) -> AsyncIterator[agent_pb2.SchedulerMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("body") != "hello":
            raise InvalidInputError(
                "the first message of a Connect stream must be a hello",
                reason=ErrorReason.HELLO_REQUIRED,
            )
        hello = first.hello
        require_host(hello.host)
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
        loop = asyncio.get_running_loop()
        every_s = self._interval_ms / 1000
        keep_alive_at = loop.time()
        item: asyncio.Task[Outgoing] | None = None
        try:
            while True:
                if loop.time() >= keep_alive_at:
                    # Every heartbeat interval, busy or idle: proof this scheduler is alive.
                    keep_alive_at = loop.time() + every_s
                    yield keep_alive_to_proto(self._runtime.agents.epoch)
                if item is None:
                    item = asyncio.ensure_future(link.outbox.get())
                done, _ = await asyncio.wait(
                    {item, replaced, reader},
                    timeout=max(0.0, keep_alive_at - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:
                    continue  # a keep-alive is due; the read of the outbox stays pending
                if item not in done:
                    if reader in done:
                        reader.result()  # the agent closed its side, or a read error
                        return
                    if self._runtime.agents.closing:
                        raise ShuttingDownError("the scheduler is shutting down; reconnect")
                    raise SessionReplacedError(f"{link.node}: a newer session took over")
                outgoing, item = item.result(), None
                yield outgoing_to_proto(outgoing, epoch=self._runtime.agents.epoch)
        finally:
            replaced.cancel()
            if item is not None:
                item.cancel()  # not left pending (and destroyed) when the stream ends

    async def _read(
        self, link: AgentLink, request_iterator: AsyncIterator[agent_pb2.AgentMessage]
    ) -> None:
        fleet, node = self._fleet, link.node
        limiter = SessionLimiter(self._interval_s, time.monotonic())
        metrics = self._runtime.metrics
        async for message in request_iterator:
            wait = limiter.pace(time.monotonic())
            if wait > 0:
                metrics.agent_throttled.inc()
                await asyncio.sleep(wait)  # pacing, not synchronisation: the excess waits
            kind = message.WhichOneof("body")
            if kind == "heartbeat":
                if not limiter.heartbeat(time.monotonic()):
                    metrics.agent_dropped.labels("heartbeat").inc()
                    if limiter.counts.dropped_heartbeats == 1:
                        _log.warning("%s: heartbeats faster than asked; dropping the excess", node)
                    continue
                beat = heartbeat_from_proto(message.heartbeat, node)
                fleet.heartbeat(link, beat.make, beat.running)
                link.outbox.put_nowait(HeartbeatAcked())
            elif kind == "report":
                await self._report(link, message.report)
            elif kind == "ack":
                ack = ack_from_proto(message.ack)
                await fleet.acknowledged(link, ack.command_id, ack.status, ack.message)
            elif kind == "log_chunk":
                chunk = log_chunk_from_proto(message.log_chunk)
                fleet.requests.log_chunk(
                    chunk.request_id,
                    found=chunk.found,
                    offset=chunk.offset,
                    size=chunk.size,
                    data=chunk.data,
                    error=chunk.error,
                )

    async def _report(self, link: AgentLink, report: agent_pb2.Report) -> None:
        fleet, node, report_id = self._fleet, link.node, report.report_id
        kind = report.WhichOneof("body")
        if kind == "ranks_started":
            await fleet.report(
                link, report_id, ranks_started_from_proto(report.ranks_started, node)
            )
        elif kind == "rank_exited":
            await fleet.rank_exited(
                link, report_id, rank_exited_from_proto(report.rank_exited, node)
            )
        elif kind == "checkpoint":
            await fleet.report(link, report_id, checkpoint_from_proto(report.checkpoint))
        elif kind == "maintenance":
            await fleet.report(link, report_id, maintenance_from_proto(report.maintenance, node))
        elif kind == "health_check":
            result = health_check_from_proto(report.health_check)
            fleet.health_check_reported(
                link,
                report_id,
                result.check_id,
                passed=result.passed,
                summary=result.summary,
                report_json=result.report_json,
            )
