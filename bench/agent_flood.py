"""Agent flood benchmark: does one agent connection that floods heartbeats slow other clients?

A scheduler (memory store, 16-host fat tree) runs in a thread of this process. The baseline:
``SUBMITS`` sequential job submissions through the ``firsthop`` client, each timed. Then a
child process registers as one host and sends heartbeats on its ``Connect`` stream as fast as
gRPC lets it (``flood``), and the same submissions are timed again while it floods; then the
same with a child flooding checkpoint reports (each one an event the scheduler commits). The
figure is the ratio of the p99 submit latencies (flood / baseline), measured in the same run;
the scheduler's ``firsthop_agent_messages_dropped_total`` says how many heartbeats the
per-session rate limit dropped (:mod:`scheduler.runtime.ratelimit`). For comparison, a third
round of each kind floods a session whose limits are lifted (the limiter's constants raised in this
process, where the scheduler runs), which is what a flood cost before the limit.

Run: ``python -m bench.agent_flood [--submits N]``; writes ``bench/results/agent_flood.json``.
The flooding child: ``python -m bench.agent_flood flood SERVER HOST GPUS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from agents.health.verdict import Health
from agents.ranks import RankKey
from agents.wire import (
    AgentIdentity,
    checkpoint_report,
    heartbeat_to_proto,
    hello_to_proto,
    identified,
    register_request,
    report_message,
)
from bench.common import write_results
from bench.harness.procs import Proc, wait_until
from firsthop.v1 import agent_pb2, agent_pb2_grpc
from scheduler.client import FirsthopClient
from scheduler.config import ServerConfig
from scheduler.jobspec import job_spec_from_data
from scheduler.runtime import ratelimit
from scheduler.server import SchedulerServer, build_server
from scheduler.store.memory import MemoryStore
from topology.generators import fat_tree
from topology.model import Topology


@dataclass
class Running:
    """A scheduler serving from a thread of this process."""

    server: SchedulerServer
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread

    @property
    def address(self) -> str:
        return str(self.server.address)

    def dropped(self) -> float:
        """Heartbeats the rate limit dropped so far."""
        value = self.server.runtime.metrics.registry.get_sample_value(
            "firsthop_agent_messages_dropped_total", {"kind": "heartbeat"}
        )
        return value or 0.0

    def limited(self) -> float:
        """Agent messages the rate limit dropped or read late so far."""
        value = self.server.runtime.metrics.registry.get_sample_value(
            "firsthop_agent_messages_throttled_total", {}
        )
        return self.dropped() + (value or 0.0)


def serve(topology: Topology) -> Running:
    """Start a scheduler in a thread; it serves until :func:`shutdown`."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        config = ServerConfig(
            listen="127.0.0.1:0",
            db_url="memory://",
            tick_interval_s=0.05,
            heartbeat_interval_s=1.0,
            heartbeat_timeout_s=30.0,
            shutdown_grace_s=1.0,
        )
        server = build_server(config, topology=topology, store=MemoryStore())
        await server.start()
        box.update(server=server, loop=asyncio.get_running_loop(), stop=asyncio.Event())
        ready.set()
        try:
            await box["stop"].wait()
        finally:
            await server.stop(0.5)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not ready.wait(60):
        raise RuntimeError("the scheduler did not start")
    return Running(box["server"], box["loop"], box["stop"], thread)


def shutdown(running: Running) -> None:
    """Stop a scheduler started by :func:`serve`."""
    running.loop.call_soon_threadsafe(running.stop.set)
    running.thread.join(60)


def submit_latencies(address: str, count: int) -> list[float]:
    """Seconds each of ``count`` sequential submissions took."""
    spec = job_spec_from_data({"name": "flood", "gpus": 8, "command": ["train"]})
    out = []
    with FirsthopClient(address) as client:
        for _ in range(count):
            start = time.perf_counter()
            client.submit_job(spec)
            out.append(time.perf_counter() - start)
    return out


def p99(values: list[float]) -> float:
    """The 99th percentile."""
    return statistics.quantiles(values, n=100)[98]


def flood(server: str, host: str, gpus: int, kind: str) -> None:
    """Register as ``host`` and send heartbeats (or checkpoint reports, each with a new id, of
    a job that is not there) as fast as possible until killed."""
    with grpc.insecure_channel(server) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        registered = stub.RegisterNode(register_request(AgentIdentity(host=host, gpus=gpus)))

        def messages() -> Iterator[agent_pb2.AgentMessage]:
            yield hello_to_proto(host, registered.session_id, {})
            print("flooding", flush=True)
            seq = 0
            while True:
                seq += 1
                now = datetime.now(UTC)
                if kind == "report":
                    report = checkpoint_report(RankKey("j-flood", 0, 0), seq, "/c", now)
                    yield report_message(identified(report, f"flood-{seq}"))
                else:
                    yield heartbeat_to_proto(seq, Health.HEALTHY, "", {}, now)

        for _ in stub.Connect(messages()):
            pass


@contextlib.contextmanager
def _flooding(running: Running, host: str, log: Path, kind: str) -> Iterator[None]:
    argv = [sys.executable, "-m", "bench.agent_flood", "flood", running.address, host, "8", kind]
    child = Proc(argv, log)
    try:
        child.wait_line("flooding")
        yield
    finally:
        child.stop()


def _wait_limited(running: Running, goal: float) -> None:
    wait_until(lambda: running.limited() > goal or None, "the flood to be limited")


@contextlib.contextmanager
def _lifted() -> Iterator[None]:
    """The rate limits lifted for the sessions opened meanwhile (constants read at connect)."""
    names = ("PACE_PER_S", "PACE_BURST", "HEARTBEAT_FACTOR")
    saved = {name: getattr(ratelimit, name) for name in names}
    for name in names:
        setattr(ratelimit, name, 1e12)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ratelimit, name, value)


def measure(submits: int, log_dir: Path) -> dict[str, Any]:
    """Submit latencies without and with a flooding agent, heartbeats then reports, with the
    limits and without them (same run, same server)."""
    topology = Topology.from_spec(fat_tree(2, 2, 4, gpus_per_host=8))
    running = serve(topology)
    hosts = iter(topology.hosts)
    rounds: dict[str, list[float]] = {}
    try:
        submit_latencies(running.address, 20)  # warm up the channel and the server
        rounds["baseline"] = submit_latencies(running.address, submits)
        for kind in ("heartbeat", "report"):
            with _flooding(running, next(hosts), log_dir / f"{kind}.log", kind):
                _wait_limited(running, running.limited() + 100)
                rounds[f"{kind}_flood"] = submit_latencies(running.address, submits)
            with _lifted(), _flooding(running, next(hosts), log_dir / f"{kind}-u.log", kind):
                rounds[f"{kind}_flood_unlimited"] = submit_latencies(running.address, submits)
        dropped = running.dropped()
    finally:
        shutdown(running)
    base_p99 = p99(rounds["baseline"])
    result: dict[str, Any] = {"submits": submits, "heartbeats_dropped": dropped}
    for name, values in rounds.items():
        result[name] = {
            "p50_ms": statistics.median(values) * 1e3,
            "p99_ms": p99(values) * 1e3,
            "p99_ratio": p99(values) / base_p99,
        }
    return result


def main() -> None:
    """Run the benchmark (or, with ``flood``, be the flooding agent)."""
    if len(sys.argv) > 1 and sys.argv[1] == "flood":
        flood(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.submits, Path(tmp))
    print(f"{'':>26} {'p50 ms':>8} {'p99 ms':>8} {'p99 ratio':>9}")
    for name, row in result.items():
        if isinstance(row, dict):
            print(f"{name:>26} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['p99_ratio']:9.2f}")
    print(f"heartbeats dropped {result['heartbeats_dropped']:.0f}")
    path = write_results("agent_flood", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
