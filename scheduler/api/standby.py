"""The standby gate: while this scheduler does not lead, every firsthop RPC is refused.

Several schedulers may share one PostgreSQL store (:mod:`scheduler.store.lease`); only the
leader serves. :class:`LeaderGate` is the server's view of that (leading or not, and where the
leader is); :class:`StandbyInterceptor` ends every call to a ``firsthop.v1`` service with
``UNAVAILABLE``, reason ``not_leader`` and, when the leader's address is known, the trailing
metadata ``firsthop-leader: HOST:PORT``, so clients and agents move to the leader. Health
checking and reflection stay open (a standby reports NOT_SERVING through health).

Must not import ``scheduler.store``, ``scheduler.core`` or ``agents``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
import grpc.aio

from firsthop.reasons import ErrorReason
from scheduler.api.errors import REASON_KEY, Handler, HandlerCache, Interceptor, wrap_handler

LEADER_KEY: Final = "firsthop-leader"
"""Trailing metadata key holding the leader's ``HOST:PORT`` in a ``not_leader`` answer."""
GATED_PREFIX: Final = "/firsthop.v1."


class LeaderGate:
    """Whether this server leads, and the leader's address when another one does."""

    def __init__(self, *, leading: bool = True) -> None:
        self.leading = leading
        self.leader_address = ""

    def refusal(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The details and trailing metadata of a ``not_leader`` answer."""
        where = f"; the leader is at {self.leader_address}" if self.leader_address else ""
        details = f"{ErrorReason.NOT_LEADER}: this scheduler is a standby{where}"
        metadata: tuple[tuple[str, str], ...] = ((REASON_KEY, str(ErrorReason.NOT_LEADER)),)
        if self.leader_address:
            metadata += ((LEADER_KEY, self.leader_address),)
        return details, metadata


class StandbyInterceptor(Interceptor):
    """Refuses every firsthop RPC while the gate is closed (see the module docstring)."""

    def __init__(self, gate: LeaderGate) -> None:
        self._gate = gate
        self._wrapped = HandlerCache()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(GATED_PREFIX):
            return handler
        return self._wrapped.get(method, handler, lambda: self._gated(handler))

    def _gated(self, handler: Handler) -> Handler:
        gate = self._gate

        async def refuse(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            details, metadata = gate.refusal()
            await context.abort(grpc.StatusCode.UNAVAILABLE, details, trailing_metadata=metadata)

        def gate_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if not gate.leading:
                    await refuse(context)
                return await behavior(request, context)

            return run

        def gate_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
            async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if not gate.leading:
                    await refuse(context)
                async for item in behavior(request, context):
                    yield item

            return run

        return wrap_handler(handler, gate_unary, gate_stream)
