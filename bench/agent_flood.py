"""Agent flood benchmark: does one agent connection that floods heartbeats slow other clients?

A scheduler (memory store, 16-host fat tree) runs in a thread of this process. The baseline:
``SUBMITS`` sequential job submissions through the ``firsthop`` client, each timed. Then a
child process registers as one host and sends heartbeats on its ``Connect`` stream as fast as
gRPC lets it (``flood``), and the same submissions are timed again while it floods. The
figure is the ratio of the p99 submit latencies (flood / baseline), measured in the same run;
the scheduler's ``firsthop_agent_messages_dropped_total`` says how many heartbeats the
per-session rate limit dropped (:mod:`scheduler.runtime.ratelimit`). For comparison, a third
round floods a session whose limits are lifted (the limiter's constants raised in this
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
from agents.wire import AgentIdentity, heartbeat_to_proto, hello_to_proto, register_request
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


def flood(server: str, host: str, gpus: int) -> None:
    """Register as ``host`` and send heartbeats as fast as possible until killed."""
    with grpc.insecure_channel(server) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        registered = stub.RegisterNode(register_request(AgentIdentity(host=host, gpus=gpus)))

        def messages() -> Iterator[agent_pb2.AgentMessage]:
            yield hello_to_proto(host, registered.session_id, {})
            print("flooding", flush=True)
            seq = 0
            while True:
                seq += 1
                yield heartbeat_to_proto(seq, Health.HEALTHY, "", {}, datetime.now(UTC))

        for _ in stub.Connect(messages()):
            pass


@contextlib.contextmanager
def _flooding(running: Running, host: str, log: Path) -> Iterator[None]:
    child = Proc(
        [sys.executable, "-m", "bench.agent_flood", "flood", running.address, host, "8"], log
    )
    try:
        child.wait_line("flooding")
        yield
    finally:
        child.stop()


def measure(submits: int, log_dir: Path) -> dict[str, Any]:
    """Submit p99 without and with a flooding agent (same run, same server)."""
    topology = Topology.from_spec(fat_tree(2, 2, 4, gpus_per_host=8))
    running = serve(topology)
    try:
        submit_latencies(running.address, 20)  # warm up the channel and the server
        baseline = submit_latencies(running.address, submits)
        hosts = iter(topology.hosts)
        with _flooding(running, next(hosts), log_dir / "flood.log"):
            wait_until(lambda: running.dropped() > 100 or None, "the flood to be dropped")
            flooded = submit_latencies(running.address, submits)
            dropped = running.dropped()
        lifted = (ratelimit.PACE_PER_S, ratelimit.PACE_BURST, ratelimit.HEARTBEAT_FACTOR)
        ratelimit.PACE_PER_S = ratelimit.PACE_BURST = ratelimit.HEARTBEAT_FACTOR = 1e12
        try:
            with _flooding(running, next(hosts), log_dir / "flood-unlimited.log"):
                unlimited = submit_latencies(running.address, submits)
        finally:
            ratelimit.PACE_PER_S, ratelimit.PACE_BURST, ratelimit.HEARTBEAT_FACTOR = lifted
    finally:
        shutdown(running)
    base_p99, flood_p99 = p99(baseline), p99(flooded)
    return {
        "unlimited_flood_p50_ms": statistics.median(unlimited) * 1e3,
        "unlimited_flood_p99_ms": p99(unlimited) * 1e3,
        "unlimited_p99_ratio": p99(unlimited) / base_p99,
        "submits": submits,
        "baseline_p50_ms": statistics.median(baseline) * 1e3,
        "baseline_p99_ms": base_p99 * 1e3,
        "flood_p50_ms": statistics.median(flooded) * 1e3,
        "flood_p99_ms": flood_p99 * 1e3,
        "p99_ratio": flood_p99 / base_p99,
        "heartbeats_dropped": dropped,
    }


def main() -> None:
    """Run the benchmark (or, with ``flood``, be the flooding agent)."""
    if len(sys.argv) > 1 and sys.argv[1] == "flood":
        flood(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.submits, Path(tmp))
    print(f"{'':>10} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'baseline':>10} {result['baseline_p50_ms']:8.2f} {result['baseline_p99_ms']:8.2f}")
    print(f"{'flood':>10} {result['flood_p50_ms']:8.2f} {result['flood_p99_ms']:8.2f}")
    print(
        f"{'unlimited':>10} {result['unlimited_flood_p50_ms']:8.2f} "
        f"{result['unlimited_flood_p99_ms']:8.2f}"
    )
    print(f"p99 ratio {result['p99_ratio']:.2f} (unlimited {result['unlimited_p99_ratio']:.2f})")
    print(f"heartbeats dropped {result['heartbeats_dropped']:.0f}")
    path = write_results("agent_flood", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
