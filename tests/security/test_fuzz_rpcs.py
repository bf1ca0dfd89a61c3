"""Bad input, measured: random and malformed messages at every RPC of a real server.

Every input gets OK or a deliberate error (a stable reason in ``firsthop-reason``), never
INTERNAL or UNKNOWN; a refused call changes no record; the server keeps serving. Inputs:
random raw bytes (most are not valid encodings, many hold invalid UTF-8 in a string field),
messages built from each method's descriptor (any subset of fields, numbers at the edges of
their range, long and odd names, repeated fields up to thousands of items), and messages at
and just over the server's size limit. The concurrency limit is tested on its own.

The server runs in insecure local mode (the anonymous caller may call everything), so inputs
reach the servicers rather than stopping at authorisation. Counts: ``FIRSTHOP_FUZZ_REPORT=FILE``
writes them as JSON; ``FIRSTHOP_FUZZ_EXAMPLES=N`` sets the examples per test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firsthop.v1 import admin_pb2, jobs_pb2
from scheduler.api.spec_serde import job_spec_to_proto
from tests.security.fuzz_builders import (
    EXAMPLES,
    TALLY,
    Answer,
    ThreadedServer,
    invoke,
    message_strategy,
    methods,
    write_report,
)
from tests.server_builders import spec

MAX_MESSAGE = 256 * 1024
CALL_TIMEOUT_S = 10.0
METHODS = methods()
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Statuses gRPC itself answers (before any handler): they carry no firsthop reason.
TRANSPORT = {grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ThreadedServer, grpc.Channel]]:
    server = ThreadedServer(max_message_bytes=MAX_MESSAGE)
    channel = grpc.insecure_channel(
        server.server.address,
        options=[
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE),
            ("grpc.max_receive_message_length", 4 * MAX_MESSAGE),
        ],
    )
    try:
        yield server, channel
    finally:
        channel.close()
        server.close()
        write_report()


def check(
    served: tuple[ThreadedServer, grpc.Channel], kind: str, method: str, payload: bytes
) -> Answer:
    """Send one input; assert the answer is OK or deliberate, and nothing changed on error."""
    server, channel = served
    before = server.snapshot()
    answer = invoke(channel, method, METHODS[method], payload, CALL_TIMEOUT_S)
    TALLY.add(kind, answer.code.name, answer.reason)
    assert answer.code not in NEVER, f"{method}: {answer.code.name} {answer.details}"
    if answer.code is not grpc.StatusCode.OK:
        if answer.code not in TRANSPORT:
            assert answer.reason, f"{method}: {answer.code.name} without a reason"
            assert answer.details.startswith(answer.reason)
        assert server.snapshot() == before, f"{method}: refused, yet state changed"
    return answer


def still_serving(channel: grpc.Channel) -> None:
    stub: Any = channel.unary_unary(
        "/firsthop.v1.AdminService/GetClusterStatus",
        admin_pb2.GetClusterStatusRequest.SerializeToString,
        admin_pb2.GetClusterStatusResponse.FromString,
    )
    assert stub(admin_pb2.GetClusterStatusRequest(), timeout=CALL_TIMEOUT_S).status.gpus_total > 0


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)), payload=st.binary(max_size=2048))
def test_raw_bytes_at_every_rpc(served: Any, method: str, payload: bytes) -> None:
    check(served, "raw_bytes", method, payload)


@FUZZ
@given(data=st.data(), method=st.sampled_from(sorted(METHODS)))
def test_random_messages_at_every_rpc(served: Any, data: st.DataObject, method: str) -> None:
    message = data.draw(message_strategy(METHODS[method].input_type))
    check(served, "random_message", method, message.SerializeToString())


@FUZZ
@given(name=st.text(max_size=80), user=st.text(max_size=80), gpus=st.integers(-5, 10**6))
def test_job_specs_with_odd_names_and_sizes(served: Any, name: str, user: str, gpus: int) -> None:
    request = jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(spec(8)), user=user)
    request.spec.name = name
    request.spec.gpus = max(gpus, 0) if gpus < 2**32 else 0
    check(served, "job_spec", "/firsthop.v1.JobService/SubmitJob", request.SerializeToString())


@pytest.mark.parametrize("utf8_in", ["name", "user"])
def test_invalid_utf8_in_a_name_is_refused_as_a_bad_message(served: Any, utf8_in: str) -> None:
    # field 1 (spec) holding field 1 (name) = b"\xff\xfe"; or field 3 (user) = b"\xff"
    name, user = bytes([0x0A, 4, 0x0A, 2, 0xFF, 0xFE]), bytes([0x1A, 1, 0xFF])
    payload = name if utf8_in == "name" else user
    answer = check(served, "invalid_utf8", "/firsthop.v1.JobService/SubmitJob", payload)
    assert (answer.code, answer.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_message")


def test_messages_at_and_over_the_size_limit(served: Any) -> None:
    channel = served[1]
    method = "/firsthop.v1.JobService/SubmitJob"
    base = jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(spec(8)))
    # An unknown field padded so the whole message is exactly the limit, then one byte over.
    for size, want in ((MAX_MESSAGE, None), (MAX_MESSAGE + 1, grpc.StatusCode.RESOURCE_EXHAUSTED)):
        payload = _padded(base.SerializeToString(), size)
        assert len(payload) == size
        answer = check(served, "size_limit", method, payload)
        if want is None:
            assert answer.code is not grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            assert answer.code is want
    still_serving(channel)


def _padded(body: bytes, size: int) -> bytes:
    """``body`` plus an unknown bytes field (number 1000) making ``size`` bytes in all."""
    tag = bytes([0xC2, 0x3E])  # field 1000, wire type 2
    for length_bytes in range(1, 5):
        length = size - len(body) - len(tag) - length_bytes
        encoded = _varint(length)
        if len(encoded) == length_bytes:
            return body + tag + encoded + b"x" * length
    raise AssertionError("cannot pad")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def test_the_server_keeps_serving_after_the_fuzzing(served: Any) -> None:
    still_serving(served[1])


def test_calls_over_the_concurrency_limit_are_refused_then_served_again() -> None:
    limit = 3
    server = ThreadedServer(max_concurrent_rpcs=limit)
    channel = grpc.insecure_channel(server.server.address)
    submit: Any = channel.unary_unary(
        "/firsthop.v1.JobService/SubmitJob",
        jobs_pb2.SubmitJobRequest.SerializeToString,
        jobs_pb2.SubmitJobResponse.FromString,
    )
    watch: Any = channel.unary_stream(
        "/firsthop.v1.JobService/WatchJob",
        jobs_pb2.WatchJobRequest.SerializeToString,
        jobs_pb2.WatchJobResponse.FromString,
    )
    streams: list[Any] = []
    try:
        job = submit(jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(spec(8))), timeout=10).job
        for _ in range(limit):
            stream = watch(jobs_pb2.WatchJobRequest(job_id=job.id), timeout=60)
            next(stream)  # the stream is being served
            streams.append(stream)
        with pytest.raises(grpc.RpcError) as refused:
            still_serving(channel)
        err: Any = refused.value
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        streams.pop().cancel()
        _until_served(channel)
    finally:
        for stream in streams:
            stream.cancel()
        channel.close()
        server.close()


def _until_served(channel: grpc.Channel, deadline_s: float = 10.0) -> None:
    """Retry until a call is served (the cancelled stream's slot frees asynchronously)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            still_serving(channel)
            return
        except grpc.RpcError as exc:
            err: Any = exc
            if err.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > end:
                raise
