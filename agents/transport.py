"""The agent's gRPC seam: register a node and open the ``Connect`` stream of AgentService.

:class:`AgentTransport` is the protocol the session talks to; :class:`GrpcAgentTransport`
implements it over a ``grpc.aio`` channel. Errors the scheduler sends come back as
:class:`SchedulerRejectedError` with the stable reason from the ``firsthop-reason`` trailing
metadata; a broken connection is :class:`TransportError`. Both derive from
:class:`~topology.errors.FirsthopError`, so callers switch on ``reason``.

Must not import ``scheduler`` (agents reach the scheduler only over gRPC).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import grpc
import grpc.aio

from firsthop.v1 import agent_pb2, agent_pb2_grpc
from topology.errors import FirsthopError

REASON_KEY: Final = "firsthop-reason"
LEADER_KEY: Final = "firsthop-leader"
"""Trailing metadata of a ``not_leader`` answer: the leader's ``HOST:PORT`` where known."""
NOT_LEADER: Final = "not_leader"
MOVE_REASONS: Final = frozenset({NOT_LEADER, "shutting_down"})
"""Answers after which an agent tries another scheduler address."""

_log = logging.getLogger(__name__)

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]

_UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class TransportError(FirsthopError):
    """The scheduler could not be reached, or the stream broke."""

    status_code = "UNAVAILABLE"
    default_reason = "unavailable"


class SchedulerRejectedError(FirsthopError):
    """The scheduler answered with an error (``reason`` is its stable reason, ``status_code``
    the status it answered with)."""

    status_code = "FAILED_PRECONDITION"
    default_reason = "rejected"

    def __init__(
        self, message: str, *, reason: str | None = None, status: str = "", leader: str = ""
    ) -> None:
        super().__init__(message, reason=reason)
        if status:
            self.status_code = status
        self.leader = leader
        """With ``not_leader``: the leader's address, when the standby knows it."""


def reason_of(metadata: Any, key_wanted: str = REASON_KEY) -> str:
    """The ``firsthop-reason`` (or ``key_wanted``) value of trailing metadata, or ``""``."""
    for key, value in metadata or ():
        if key == key_wanted:
            return value if isinstance(value, str) else bytes(value).decode()
    return ""


def error_from_rpc(exc: grpc.aio.AioRpcError) -> FirsthopError:
    """The firsthop error of a failed call: rejected (with its reason) or unavailable."""
    reason = reason_of(exc.trailing_metadata())
    details = exc.details() or exc.code().name
    if not reason and exc.code() in _UNAVAILABLE_CODES:
        return TransportError(f"{exc.code().name}: {details}")
    return SchedulerRejectedError(
        details,
        reason=reason or exc.code().name.lower(),
        status=exc.code().name,
        leader=reason_of(exc.trailing_metadata(), LEADER_KEY),
    )


class AgentStream(Protocol):
    """One open ``Connect`` stream."""

    async def write(self, message: agent_pb2.AgentMessage) -> None:
        """Send one message up (raises :class:`TransportError` when the stream broke)."""
        ...

    async def read(self) -> agent_pb2.SchedulerMessage | None:
        """The next message down; ``None`` when the scheduler closed the stream cleanly."""
        ...

    def close(self) -> None:
        """Abandon the stream."""
        ...


class AgentTransport(Protocol):
    """How an agent reaches the scheduler."""

    async def register(
        self, request: agent_pb2.RegisterNodeRequest
    ) -> agent_pb2.RegisterNodeResponse:
        """Call ``RegisterNode``."""
        ...

    def connect(self) -> AgentStream:
        """Open a ``Connect`` stream."""
        ...


class _GrpcStream:
    def __init__(self, call: Any) -> None:
        self._call = call

    async def write(self, message: agent_pb2.AgentMessage) -> None:
        try:
            await self._call.write(message)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        except (grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError) as exc:
            # Writing after the call ended: the read side reports why.
            raise TransportError(f"stream closed: {exc}") from None

    async def read(self) -> agent_pb2.SchedulerMessage | None:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        if message is _EOF:
            code = await self._call.code()
            if code is not grpc.StatusCode.OK:
                details = await self._call.details()
                metadata = await self._call.trailing_metadata()
                reason = reason_of(metadata)
                if reason:
                    raise SchedulerRejectedError(
                        details or code.name,
                        reason=str(reason),
                        status=code.name,
                        leader=reason_of(metadata, LEADER_KEY),
                    )
                raise TransportError(f"{code.name}: {details}")
            return None
        if not isinstance(message, agent_pb2.SchedulerMessage):
            raise TransportError(f"unexpected message {type(message).__name__}")
        return message

    def close(self) -> None:
        self._call.cancel()


class GrpcAgentTransport:
    """:class:`AgentTransport` over one ``grpc.aio`` channel (shared by many agents)."""

    def __init__(self, channel: grpc.aio.Channel, *, register_timeout_s: float = 10.0) -> None:
        self._stub = agent_pb2_grpc.AgentServiceStub(channel)
        self._timeout = register_timeout_s

    async def register(
        self, request: agent_pb2.RegisterNodeRequest
    ) -> agent_pb2.RegisterNodeResponse:
        try:
            response: agent_pb2.RegisterNodeResponse = await self._stub.RegisterNode(
                request, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return response

    def connect(self) -> AgentStream:
        # Called without a request iterator, an asyncio stream call is written to with write().
        return _GrpcStream(self._stub.Connect())  # type: ignore[call-arg]


def parse_addresses(servers: str) -> list[str]:
    """The addresses of a comma-separated ``--server`` list (blanks dropped, order kept).

    Raises:
        FirsthopError: ``invalid_server_address`` when the list names none.
    """
    addresses = list(dict.fromkeys(a.strip() for a in servers.split(",") if a.strip()))
    if not addresses:
        raise FirsthopError(f"no scheduler address in {servers!r}", reason="invalid_server_address")
    return addresses


SILENCE_INTERVALS: Final = 3.0
"""A stream is dead after this many keep-alive intervals without a message."""
MIN_SILENCE_S: Final = 1.0


class _WatchedStream:
    """Reports failures to the failover transport; declares the stream dead when a scheduler
    that sends keep-alives (every heartbeat interval) stays silent for three intervals. The
    interval is learnt from the gap between two keep-alives; until then reads wait as long
    as the call lives (a scheduler without keep-alives is never timed out)."""

    def __init__(self, stream: AgentStream, failed: Callable[[FirsthopError], None]) -> None:
        self._stream = stream
        self._failed = failed
        self._last_keep_alive: float | None = None
        self.silence_s: float | None = None

    async def write(self, message: agent_pb2.AgentMessage) -> None:
        try:
            await self._stream.write(message)
        except FirsthopError as exc:
            self._failed(exc)
            raise

    async def read(self) -> agent_pb2.SchedulerMessage | None:
        try:
            async with asyncio.timeout(self.silence_s):
                message = await self._stream.read()
        except TimeoutError:
            silent = TransportError(f"the scheduler sent nothing for {self.silence_s:.1f} s")
            self._stream.close()
            self._failed(silent)
            raise silent from None
        except FirsthopError as exc:
            self._failed(exc)
            raise
        if message is not None and message.WhichOneof("body") == "keep_alive":
            now = asyncio.get_running_loop().time()
            if self._last_keep_alive is not None:
                gap = now - self._last_keep_alive
                self.silence_s = max(SILENCE_INTERVALS * gap, MIN_SILENCE_S, self.silence_s or 0)
            self._last_keep_alive = now
        return message

    def close(self) -> None:
        self._stream.close()


class FailoverAgentTransport:
    """:class:`AgentTransport` over several scheduler addresses: it talks to one at a time and
    moves on when that one is unreachable or answers ``not_leader`` / ``shutting_down``,
    straight to the leader when the answer names it, else to the next address in the list.
    The session's own backoff paces the retries. One instance may serve many sessions: a
    failure moves the shared choice only if it happened on the address still chosen.

    Args:
        addresses: scheduler ``HOST:PORT`` addresses (see :func:`parse_addresses`).
        channel: opens a channel to one address (insecure, or with credentials).
    """

    def __init__(
        self,
        addresses: Sequence[str],
        channel: Callable[[str], grpc.aio.Channel],
        *,
        register_timeout_s: float = 10.0,
    ) -> None:
        if not addresses:
            raise FirsthopError("no scheduler address", reason="invalid_server_address")
        self.addresses = list(addresses)
        self.current = self.addresses[0]
        self.moves = 0
        """How many times the chosen address changed."""
        self._open = channel
        self._timeout = register_timeout_s
        self._transports: dict[str, GrpcAgentTransport] = {}
        self._channels: list[grpc.aio.Channel] = []

    def _transport(self, address: str) -> GrpcAgentTransport:
        transport = self._transports.get(address)
        if transport is None:
            channel = self._open(address)
            self._channels.append(channel)
            transport = GrpcAgentTransport(channel, register_timeout_s=self._timeout)
            self._transports[address] = transport
        return transport

    async def register(
        self, request: agent_pb2.RegisterNodeRequest
    ) -> agent_pb2.RegisterNodeResponse:
        address = self.current
        try:
            return await self._transport(address).register(request)
        except FirsthopError as exc:
            self.failed(address, exc)
            raise

    def connect(self) -> AgentStream:
        address = self.current
        return _WatchedStream(
            self._transport(address).connect(), lambda exc: self.failed(address, exc)
        )

    def failed(self, address: str, exc: FirsthopError) -> None:
        """Move on from ``address`` if ``exc`` says another scheduler should be tried."""
        if address != self.current:
            return
        leader = exc.leader if isinstance(exc, SchedulerRejectedError) else ""
        if isinstance(exc, SchedulerRejectedError) and exc.reason not in MOVE_REASONS:
            return
        if leader and leader != address:
            if leader not in self.addresses:
                self.addresses.append(leader)
            target = leader
        else:
            target = self.addresses[(self.addresses.index(address) + 1) % len(self.addresses)]
        if target != address:
            _log.info("scheduler %s: %s; trying %s", address, exc.reason, target)
            self.current = target
            self.moves += 1

    async def close(self) -> None:
        """Close every channel this transport opened."""
        for channel in self._channels:
            await channel.close(None)
        self._channels.clear()
        self._transports.clear()
