"""The one place where errors become gRPC statuses: a ``grpc.aio`` server interceptor.

Every deliberate error derives from :class:`~topology.errors.FirsthopError`, which names its
gRPC status code (as a string) and carries a stable ``reason``. The interceptor wraps every
handler of the server and turns such an error into that status, with the reason

- in the trailing metadata under ``firsthop-reason`` (what clients switch on), and
- at the start of the details: ``"<reason>: <message>"`` (what people read).

Any other exception is a bug: it becomes ``INTERNAL`` with reason ``internal`` and a generic
message, and is logged with its traceback. Servicers therefore never catch-and-abort.

A request that is not a valid encoding of its message (truncated bytes, a wrong wire type,
invalid UTF-8 in a string field) would end in gRPC's own ``INTERNAL`` before any handler ran;
the interceptor decodes instead, and answers ``INVALID_ARGUMENT`` ``invalid_message``.

Must not import ``scheduler.core`` or ``scheduler.store``; it knows errors only by the root
type.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, NoReturn

import grpc
import grpc.aio

from firsthop.reasons import ErrorReason
from scheduler.limits import clip_message
from topology.errors import FirsthopError

REASON_KEY: Final = "firsthop-reason"
"""Trailing metadata key holding the stable reason of a failed call."""

INTERNAL_REASON: Final = ErrorReason.INTERNAL

_log = logging.getLogger(__name__)

Behavior = Callable[..., Any]

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor


def status_code_of(error: FirsthopError) -> grpc.StatusCode:
    """The gRPC status an error maps to (``INTERNAL`` when its class names no valid code)."""
    code = getattr(grpc.StatusCode, error.status_code, None)
    if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
        return grpc.StatusCode.INTERNAL
    return code


def details_of(error: FirsthopError) -> str:
    """The status details of an error: ``"<reason>: <message>"``, the message cut to
    :data:`scheduler.limits.MAX_ERROR_CHARS` (it never echoes a huge value back)."""
    message = clip_message(" ".join(error.message.split()))
    return f"{error.reason}: {message}" if message else error.reason


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
    """End the call with the status, details and reason metadata ``exc`` maps to."""
    if isinstance(exc, FirsthopError):
        code, reason, details = status_code_of(exc), exc.reason, details_of(exc)
    else:
        _log.error("unexpected error in an RPC handler", exc_info=exc)
        code, reason = grpc.StatusCode.INTERNAL, INTERNAL_REASON
        details = f"{INTERNAL_REASON}: internal error ({type(exc).__name__}); see the scheduler log"
    await context.abort(code, details, trailing_metadata=((REASON_KEY, reason),))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


class ErrorInterceptor(Interceptor):
    """Maps exceptions raised by any handler to statuses (see the module docstring)."""

    def __init__(self) -> None:
        self._wrapped = HandlerCache()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._wrapped.get(
            handler_call_details.method,
            handler,
            lambda: wrap_handler(
                handler,
                _guard_unary,
                _guard_stream,
                deserializer=_safe_decoder(handler.request_deserializer),
            ),
        )


class InvalidMessageError(FirsthopError):
    """Request bytes that do not decode as the method's request message."""

    status_code = "INVALID_ARGUMENT"
    default_reason = "invalid_message"


class _Undecodable:
    """What a request that failed to decode becomes (raised as :class:`InvalidMessageError`
    by the guard, where a status can be sent)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _safe_decoder(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if decode is None:
        return None

    def safe(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:
            return _Undecodable(exc)

    return safe


def _check_decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise InvalidMessageError(
            f"the request is not a valid message ({type(request.error).__name__})"
        )
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return request


async def _checked_stream(requests: Any) -> Any:
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise InvalidMessageError(
                f"a streamed message is not valid ({type(request.error).__name__})"
            )
        yield request


class HandlerCache:
    """Wrapped handlers by method, so each is wrapped once rather than on every call."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler, wrap: Callable[[], Handler]) -> Handler:
        """The wrapped ``handler`` of ``method`` (wrapped again if the handler changed)."""
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap()
        self._cache[method] = (handler, wrapped)
        return wrapped


def wrap_handler(
    handler: Handler,
    wrap_unary: Callable[[Behavior], Behavior],
    wrap_stream: Callable[[Behavior], Behavior],
    *,
    deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """A copy of ``handler`` whose behaviour is wrapped (unary or streaming response), and
    whose request deserializer is ``deserializer`` when given."""
    des, ser = deserializer or handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), des, ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary), des, ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap_stream(handler.unary_stream), des, ser)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(wrap_stream(handler.stream_stream), des, ser)
    return handler  # pragma: no cover - a handler always has one behaviour


def _guard_unary(behavior: Behavior) -> Behavior:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(_check_decoded(request), context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc)

    return guarded


def _guard_stream(behavior: Behavior) -> Behavior:
    if not inspect.isasyncgenfunction(behavior):
        # A handler that writes with context.write() and returns: guard it like a unary one.
        return _guard_unary(behavior)

    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            stream: AsyncIterator[Any] = behavior(_check_decoded(request), context)
            async for item in stream:
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc)

    return guarded
