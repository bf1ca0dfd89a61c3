"""The error interceptor: firsthop errors become their status with the reason in trailing
metadata and details; anything else becomes INTERNAL and is logged with its traceback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from scheduler.api.errors import REASON_KEY, ErrorInterceptor
from scheduler.core.errors import DuplicateSubmissionError, UnknownJobError
from topology.errors import FirsthopError, InvalidInputError


class OddError(FirsthopError):
    status_code = "NOT_A_CODE"
    default_reason = "odd"


ERRORS: dict[str, Exception] = {
    "unknown": UnknownJobError("unknown job 'j-1'"),
    "invalid": InvalidInputError("gpus: must be >= 1", reason="invalid_job_spec"),
    "duplicate": DuplicateSubmissionError("used before"),
    "odd": OddError("bad status name"),
    "bug": ZeroDivisionError("division by zero"),
}


async def _unary(request: bytes, context: Any) -> bytes:
    raise ERRORS[request.decode()]


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"first"
    raise ERRORS[request.decode()]


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    handlers = grpc.method_handlers_generic_handler(
        "test.Errors",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )
    server = grpc.aio.server(interceptors=(ErrorInterceptor(),))
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(0)


def _reason(exc: grpc.aio.AioRpcError) -> str:
    return dict(exc.trailing_metadata() or ()).get(REASON_KEY, "")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "code", "reason", "details"),
    [
        ("unknown", grpc.StatusCode.NOT_FOUND, "unknown_job", "unknown_job: unknown job 'j-1'"),
        (
            "invalid",
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_job_spec",
            "invalid_job_spec: gpus: must be >= 1",
        ),
        (
            "duplicate",
            grpc.StatusCode.ALREADY_EXISTS,
            "duplicate_submission_id",
            "duplicate_submission_id: used before",
        ),
        ("odd", grpc.StatusCode.INTERNAL, "odd", "odd: bad status name"),
    ],
)
async def test_firsthop_errors_map_to_their_status(
    channel: grpc.aio.Channel, name: str, code: grpc.StatusCode, reason: str, details: str
) -> None:
    call = channel.unary_unary("/test.Errors/Unary")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(name.encode())

    assert info.value.code() is code
    assert _reason(info.value) == reason
    assert info.value.details() == details


async def test_unknown_exceptions_are_internal_and_logged(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    call = channel.unary_unary("/test.Errors/Unary")

    with (
        caplog.at_level(logging.ERROR, logger="scheduler.api.errors"),
        pytest.raises(grpc.aio.AioRpcError) as info,
    ):
        await call(b"bug")

    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert _reason(info.value) == "internal"
    assert "division" not in (info.value.details() or "")
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


async def test_streams_are_mapped_after_their_first_messages(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream("/test.Errors/Stream")
    stream = call(b"unknown")

    received = [await stream.read()]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()

    assert received == [b"first"]
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert _reason(info.value) == "unknown_job"
