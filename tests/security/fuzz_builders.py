"""A scheduler served from a background thread (so Hypothesis can drive it with plain
blocking calls), random protobuf messages built from descriptors, and the tallies the fuzz
tests report."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as pd
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import strategies as st

from firsthop.v1 import access_pb2, admin_pb2, agent_pb2, jobs_pb2, slurm_pb2
from scheduler.server import SchedulerServer, build_server
from scheduler.store.memory import MemoryStore
from tests.server_builders import fast_config, small_topology

SERVICES = (jobs_pb2, admin_pb2, agent_pb2, slurm_pb2, access_pb2)
FD = pd.FieldDescriptor
INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
EXAMPLES = int(os.environ.get("FIRSTHOP_FUZZ_EXAMPLES", "40"))
"""Hypothesis examples per fuzz test (more with FIRSTHOP_FUZZ_EXAMPLES)."""


def methods() -> dict[str, pd.MethodDescriptor]:
    """Every firsthop RPC by full name."""
    out: dict[str, pd.MethodDescriptor] = {}
    for module in SERVICES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                out[f"/{service.full_name}/{method.name}"] = method
    return out


def _scalar(f: pd.FieldDescriptor) -> st.SearchStrategy[Any]:
    if f.type in INT_RANGES:
        lo, hi = INT_RANGES[f.type]
        edges = st.sampled_from([lo, hi, 0, -1 if lo < 0 else 1, 2**31 - 1 if hi > 0 else 0])
        return st.one_of(edges, st.integers(lo, hi))
    if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if f.type == FD.TYPE_BOOL:
        return st.booleans()
    if f.type == FD.TYPE_STRING:
        names = st.sampled_from(["", "h0001", "default", "alice", "j-1", "..", "../../etc"])
        return st.one_of(names, st.text(max_size=40), st.text(min_size=200, max_size=600))
    if f.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if f.type == FD.TYPE_ENUM:
        return st.one_of(
            st.sampled_from([v.number for v in f.enum_type.values]), st.integers(-5, 99)
        )
    raise AssertionError(f"unhandled field type {f.type}")


def message_strategy(desc: pd.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random messages of ``desc``: any subset of fields, edge numbers, long and odd strings,
    repeated fields from empty to large."""
    cls = message_factory.GetMessageClass(desc)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg: Any = cls()
        for f in desc.fields:
            if not draw(st.booleans()):
                continue
            if f.message_type is not None:
                if f.message_type.full_name == "google.protobuf.Timestamp":
                    sub = draw(st.integers(-(2**40), 2**40))
                    target = getattr(msg, f.name)
                    (target.add() if _repeated(f) else target).seconds = sub
                    continue
                if f.message_type.GetOptions().map_entry:
                    continue
                if depth >= 3:
                    continue
                inner = message_strategy(f.message_type, depth + 1)
                if _repeated(f):
                    count = draw(st.sampled_from([0, 1, 2, 5, 300]))
                    items = draw(st.lists(inner, min_size=min(count, 3), max_size=min(count, 3)))
                    target = getattr(msg, f.name)
                    for i in range(count):
                        target.add().CopyFrom(items[i % len(items)] if items else inner.example())
                else:
                    getattr(msg, f.name).CopyFrom(draw(inner))
                continue
            if _repeated(f):
                values = draw(st.lists(_scalar(f), max_size=5))
                big = draw(st.sampled_from([0, 0, 0, 2000]))
                values += values[:1] * big
                getattr(msg, f.name).extend(values)
            else:
                setattr(msg, f.name, draw(_scalar(f)))
        return msg

    return build()


def _repeated(f: pd.FieldDescriptor) -> bool:
    return f.label == FD.LABEL_REPEATED


@dataclass
class Tally:
    """Inputs tried and answers by status code (and reason)."""

    tried: collections.Counter[str] = field(default_factory=collections.Counter)
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, kind: str, code: str, reason: str) -> None:
        self.tried[kind] += 1
        self.codes[code] += 1
        if reason:
            self.reasons[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs_tried": dict(self.tried),
            "total": sum(self.tried.values()),
            "answers_by_code": dict(self.codes.most_common()),
            "errors_by_reason": dict(self.reasons.most_common()),
        }


TALLY = Tally()


def write_report(path: Path | None = None) -> None:
    """Write the tallies so far (every fuzz module of the session) as JSON where
    ``FIRSTHOP_FUZZ_REPORT`` says (if it says)."""
    target = path or (
        Path(os.environ["FIRSTHOP_FUZZ_REPORT"]) if os.environ.get("FIRSTHOP_FUZZ_REPORT") else None
    )
    if target is not None:
        target.write_text(json.dumps({"examples_per_test": EXAMPLES, **TALLY.as_dict()}, indent=2))


class ThreadedServer:
    """A scheduler on its own event loop in a daemon thread."""

    def __init__(self, **config: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: SchedulerServer = self.run(self._start(config))

    async def _start(self, config: dict[str, Any]) -> SchedulerServer:
        server = build_server(fast_config(**config), topology=small_topology(), store=MemoryStore())
        await server.start()
        return server

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def snapshot(self) -> tuple[Any, ...]:
        """What a refused call must not change: records and their versions, users."""

        async def take() -> tuple[Any, ...]:
            state = self.server.runtime.state
            jobs = tuple(sorted((j.id, j.version) for j in state.jobs.values()))
            nodes = tuple(sorted((n.name, n.version) for n in state.nodes.values()))
            queues = tuple(sorted((q.name, q.version) for q in state.queues.values()))
            assert self.server.principals is not None
            users = tuple((t.token_id, t.revoked_at) for t in self.server.principals.list_tokens())
            return jobs, nodes, queues, users

        result: tuple[Any, ...] = self.run(take())
        return result

    def close(self) -> None:
        self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Answer:
    code: grpc.StatusCode
    reason: str
    details: str


def invoke(
    channel: grpc.Channel, method: str, desc: pd.MethodDescriptor, payload: bytes, timeout: float
) -> Answer:
    """Send raw request bytes to ``method``; the answer's code, reason and details."""
    out = message_factory.GetMessageClass(desc.output_type)
    ident = lambda b: b  # noqa: E731 - raw bytes on the wire
    try:
        if desc.client_streaming:
            call: Any = channel.stream_stream(method, ident, out.FromString)
            responses = call(iter([payload]), timeout=timeout)
            for _ in _first(responses):
                pass
        elif desc.server_streaming:
            responses = channel.unary_stream(method, ident, out.FromString)(
                payload, timeout=timeout
            )
            for _ in _first(responses):
                pass
        else:
            channel.unary_unary(method, ident, out.FromString)(payload, timeout=timeout)
    except grpc.RpcError as exc:
        err: Any = exc
        reason = ""
        for key, value in err.trailing_metadata() or ():
            if key == "firsthop-reason":
                reason = str(value)
        return Answer(err.code(), reason, err.details() or "")
    return Answer(grpc.StatusCode.OK, "", "")


def _first(responses: Any) -> Iterator[Any]:
    try:
        yield next(responses)
    except StopIteration:
        return
    finally:
        responses.cancel()
