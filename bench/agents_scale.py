"""Agents at scale: thousands of simulated agents on one server, and the nodes it falsely
marks LOST (every agent is alive, so every LOST is false).

One scheduler (SQLite store, heartbeat every 5 s, timeout 30 s, no jobs) on a fat tree of
``--agents`` hosts, and ``firsthop-agent simulate`` for all of them, three times in the same
run:

1. **baseline**: every agent in one generator process (what the control-plane benchmark did)
   and the scheduler with CPython's garbage collector defaults (``gc_full_every`` 0: what
   the scheduler did);
2. **sharded_gc_defaults**: the agents spread over ``--processes`` generator processes
   (``firsthop-agent simulate --shard I/P``), the collector still at its defaults;
3. **sharded**: the same with the scheduler as it ships (full collections made rare,
   :mod:`scheduler.runtime.collector`).

For each: the time until every agent is connected (``null`` past 150 s), then an
observation window longer than the heartbeat timeout: heartbeats the scheduler handled per
second, the scheduler's CPU, the generators' CPU (all of them, and the busiest process: one
at 1.0 is saturated, its heartbeats go out late and the scheduler is right to take their
hosts for lost), and, sampled every 5 s from the first agent's start to the end of the
window, the LOST node count and the longest the scheduler went without hearing from a node
it watches (``heartbeat_age_max_s``: the margin left under the 30 s timeout), and from the
moment every agent is connected (or the connect wait ran out) the READY count: a node that
was LOST and came back is DRAINED, so ``ready_nodes_min`` below ``hosts`` also shows a LOST
that was over by the next sample.

The scheduler and the generators share this machine's cores (a 2-core VM shared with other
work): the generator's CPU is part of the figure, not a footnote.

Run: ``python -m bench.agents_scale [--agents 8192] [--processes 4]``; writes
``bench/results/agents_scale.json`` and the sharded run into the ``agents`` key of
``bench/results/control_plane.json`` (other keys kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc.aio

from bench.common import RESULTS, machine, write_results
from bench.harness.procs import BIN, Proc, cpu_s, scheduler_argv
from firsthop.v1 import admin_pb2, admin_pb2_grpc
from topology.generators import fat_tree
from topology.spec import dump_spec

HEARTBEAT_S = 5.0
TIMEOUT_S = 30.0
AGENTS_PER_PROCESS = 2048
"""Default shard size: a few thousand agents keep one generator process well under a core."""
SAMPLE_S = 5.0
CONNECT_WAIT_S = 150.0
"""Longest wait for every agent to connect (the window is observed either way)."""


async def _status(address: str) -> admin_pb2.ClusterStatus:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        response = await stub.GetClusterStatus(admin_pb2.GetClusterStatusRequest(), timeout=60)
        return response.status


def _heartbeats(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("firsthop_events_total") and "HeartbeatReceived" in line
    )


async def _heartbeat_ages(address: str) -> list[float]:
    """Seconds since the scheduler last heard from each node it watches (READY, DRAINING,
    DRAINED): it takes one for lost past the timeout."""
    watched = [
        admin_pb2.NODE_STATE_READY,
        admin_pb2.NODE_STATE_DRAINING,
        admin_pb2.NODE_STATE_DRAINED,
    ]
    ages: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        token = ""
        while True:
            request = admin_pb2.ListNodesRequest(states=watched, page_size=10_000, page_token=token)
            response = await stub.ListNodes(request, timeout=60)
            now = time.time()
            ages.extend(
                now - n.last_heartbeat_at.seconds - n.last_heartbeat_at.nanos / 1e9
                for n in response.nodes
                if n.HasField("last_heartbeat_at")
            )
            token = response.next_page_token
            if not token:
                return ages


class _Nodes:
    """LOST and READY counts, and the oldest last heartbeat, over the samples taken."""

    def __init__(self, hosts: int) -> None:
        self.lost_max = 0
        self.ready_min = hosts
        self.age_max = 0.0

    def sample(self, address: str, *, connected: bool = True) -> None:
        """One sample (READY counts only once every agent connected: before, some are still
        UNKNOWN)."""
        status = asyncio.run(_status(address))
        self.lost_max = max(self.lost_max, status.hosts_by_state.get("LOST", 0))
        if connected:
            self.ready_min = min(self.ready_min, status.hosts_by_state.get("READY", 0))
        self.age_max = max([self.age_max, *asyncio.run(_heartbeat_ages(address))])


def _wait_connected(generators: list[Proc], nodes: _Nodes, address: str) -> bool:
    """Wait for every generator's ``connected`` line, sampling the nodes meanwhile; false if
    some did not connect all their agents within :data:`CONNECT_WAIT_S`."""
    deadline = time.monotonic() + CONNECT_WAIT_S
    waiting = set(range(len(generators)))
    next_sample = time.monotonic() + SAMPLE_S
    while waiting:
        for i in list(waiting):
            try:
                line = generators[i].lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"generator {i} exited; see {generators[i].log}")
            if line.startswith("connected "):
                waiting.discard(i)
        if time.monotonic() >= next_sample:
            nodes.sample(address, connected=False)
            next_sample += SAMPLE_S
        if time.monotonic() > deadline:
            return False
    return True


def run_agents(
    pods: int, work: Path, observe_s: float, processes: int = 1, *, gc_full_every: int = 1000
) -> dict[str, Any]:
    """``pods * 256`` simulated agents in ``processes`` generator processes on one server
    (SQLite store, no jobs; ``gc_full_every`` as ``ServerConfig.gc_full_every``, 0: CPython's
    collector defaults): connect time, heartbeats handled, the scheduler's and the
    generators' CPU, and the nodes the scheduler falsely marks LOST."""
    topology = work / f"agents-{pods}.yaml"
    dump_spec(fat_tree(pods, 16, 16, gpus_per_host=8), topology)
    hosts = pods * 16 * 16
    db = work / f"agents-{pods}-{processes}-{gc_full_every}.db"
    argv = scheduler_argv(f"sqlite:///{db}", topology, metrics=True)
    scheduler = Proc(
        argv,
        work / f"agents-{processes}-{gc_full_every}-scheduler.log",
        env={"FIRSTHOP_GC_FULL_EVERY": str(gc_full_every)},
    )
    generators: list[Proc] = []
    try:
        address = scheduler.wait_line("listening on ").split()[-1]
        metrics = scheduler.wait_line("metrics on ").split()[-1]
        nodes = _Nodes(hosts)
        started = time.perf_counter()
        for i in range(processes):
            generators.append(
                Proc(
                    [str(BIN / "firsthop-agent"), "simulate", "--server", address,
                     "--topology", str(topology), "--shard", f"{i}/{processes}"],
                    work / f"agents-{processes}-{gc_full_every}-generator-{i}.log",
                )
            )  # fmt: skip
        connected = _wait_connected(generators, nodes, address)
        connect_s = time.perf_counter() - started
        beats_before = _heartbeats(metrics)
        cpu_before = cpu_s(scheduler.pid)
        gen_before = [cpu_s(g.pid) for g in generators]
        observe_started = time.perf_counter()
        while time.perf_counter() - observe_started < observe_s:
            nodes.sample(address)
            time.sleep(SAMPLE_S)  # a sampling period of the observation, not synchronisation
        window = time.perf_counter() - observe_started
        beats = _heartbeats(metrics) - beats_before
        cpu = (cpu_s(scheduler.pid) - cpu_before) / window
        gen = [(cpu_s(g.pid) - b) / window for g, b in zip(generators, gen_before, strict=True)]
        nodes.sample(address)
        return {
            "hosts": hosts,
            "heartbeat_s": HEARTBEAT_S,
            "timeout_s": TIMEOUT_S,
            "agents_connect_s": round(connect_s, 2) if connected else None,
            "all_agents_connected": connected,
            "observe_s": round(window, 1),
            "heartbeats_per_s": round(beats / window, 1),
            "expected_heartbeats_per_s": round(hosts / HEARTBEAT_S, 1),
            "scheduler_cpu_cores": round(cpu, 2),
            "scheduler_gc_full_every": gc_full_every,
            "generator_processes": processes,
            "generator_cpu_cores": round(sum(gen), 2),
            "generator_cpu_cores_busiest": round(max(gen), 2),
            "lost_nodes_max": nodes.lost_max,
            "heartbeat_age_max_s": round(nodes.age_max, 1),
            "ready_nodes_min": nodes.ready_min,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        for generator in generators:
            generator.stop()
        scheduler.stop()


def merge_into_control_plane(agents: dict[str, Any]) -> Path:
    """Put ``agents`` under the ``agents`` key of ``control_plane.json``, other keys kept."""
    path = RESULTS / "control_plane.json"
    data = json.loads(path.read_text()) if path.exists() else {"machine": machine()}
    data["agents"] = agents
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--agents", type=int, default=8192, help="simulated agents (a multiple of 256)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help=f"generator processes of the sharded run (default: one per {AGENTS_PER_PROCESS})",
    )
    parser.add_argument("--observe", type=float, default=45.0, help="observation window (s)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="only the sharded run as the scheduler ships"
    )
    args = parser.parse_args()
    if args.agents < 256 or args.agents % 256:
        parser.error("--agents must be a positive multiple of 256")
    processes = args.processes or max(1, -(-args.agents // AGENTS_PER_PROCESS))
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="firsthop-agents-") as tmp:
        work = Path(tmp)
        pods = args.agents // 256
        if not args.no_baseline:
            runs["baseline"] = run_agents(pods, work, args.observe, 1, gc_full_every=0)
            print(f"{'baseline':>12}: {runs['baseline']}", flush=True)
            runs["sharded_gc_defaults"] = run_agents(
                pods, work, args.observe, processes, gc_full_every=0
            )
            print(f"{'sharded':>12}: {runs['sharded_gc_defaults']}", flush=True)
        sharded = run_agents(pods, work, args.observe, processes)
        print(f"{'sharded, gc':>12}: {sharded}", flush=True)
    runs["sharded"] = sharded
    path = write_results("agents_scale", runs)
    print(f"wrote {path} and {merge_into_control_plane(sharded)}")


if __name__ == "__main__":
    main()
