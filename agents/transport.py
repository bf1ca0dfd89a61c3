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
from typing import Any, Final, Protocol

import grpc
import grpc.aio

from firsthop.v1 import agent_pb2, agent_pb2_grpc
from topology.errors import FirsthopError

REASON_KEY: Final = "firsthop-reason"

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

    def __init__(self, message: str, *, reason: str | None = None, status: str = "") -> None:
        super().__init__(message, reason=reason)
        if status:
            self.status_code = status


def reason_of(metadata: Any) -> str:
    """The ``firsthop-reason`` value of trailing metadata, or ``""``."""
    for key, value in metadata or ():
        if key == REASON_KEY:
            return value if isinstance(value, str) else bytes(value).decode()
    return ""


def error_from_rpc(exc: grpc.aio.AioRpcError) -> FirsthopError:
    """The firsthop error of a failed call: rejected (with its reason) or unavailable."""
    reason = reason_of(exc.trailing_metadata())
    details = exc.details() or exc.code().name
    if not reason and exc.code() in _UNAVAILABLE_CODES:
        return TransportError(f"{exc.code().name}: {details}")
    return SchedulerRejectedError(
        details, reason=reason or exc.code().name.lower(), status=exc.code().name
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
                        details or code.name, reason=str(reason), status=code.name
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
