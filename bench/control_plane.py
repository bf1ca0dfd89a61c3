"""Control-plane benchmark: the real server process, 4,096 simulated agents, 10,000 jobs.

For each store (``memory://`` as the baseline, SQLite in WAL mode with ``synchronous=FULL``,
PostgreSQL started with ``fsync=on``; ``sqlite-inline``: SQLite with the placement worker
off, so the cycle places on the event loop, the worker's baseline), one run of:

1. ``firsthop-scheduler`` on a 16 pods x 16 leaves x 16 hosts x 8 GPUs fat tree (4,096 hosts,
   32,768 GPUs), heartbeat interval 5 s and timeout 30 s, tick 1 s;
2. ``firsthop-agent simulate`` for all 4,096 hosts (one process, real gRPC streams; ranks run
   for an hour, so admitted jobs stay running);
3. fill: 1,000 jobs of the mix below are submitted and the scheduler admits what fits (about
   530 jobs fill the cluster); the admission rate of this phase is reported as well, with
   the cycle times while it filled (``fill_cycle``) and the placement worker's runs;
4. steady state: 10,000 more ``SubmitJob`` calls from this process, ``CONCURRENCY`` in flight,
   sizes 8/16/64/128/512 GPUs (40/20/25/10/5 %), into the full cluster. Every call returns only
   once its job is durable, so calls per second is the durable submission rate;
5. an observation window longer than the heartbeat timeout with ~10,500 jobs pending:
   scheduling cycle times (the server's ``firsthop_scheduling_cycle_seconds`` histogram over
   the window: mean, and the bucket bound under which 99 % of cycles fell), and the nodes the
   scheduler marked LOST (every agent is alive, so any LOST node is a false one).

The three processes share this machine's cores; the figures are end-to-end (gRPC, runtime,
core, store).

Agents at scale, in the same run: ``--agents N`` (default 8,192; 1,024 with ``--quick``)
simulated agents heartbeating every 5 s on one server with an empty queue, for longer than the
heartbeat timeout, spread over ``--agent-processes`` generator processes
(:func:`bench.agents_scale.run_agents`): connect time, heartbeats handled per second, the
server's and the generators' CPU, and the nodes it falsely marks LOST.

The peer, in the same run: a real ``slurmctld`` (:mod:`bench.slurm_peer`) with one node per host
of the same fabric (its ``topology/tree`` loaded from our export) takes the same job mix (the
fill jobs, then the steady-state jobs, as whole-host ``sbatch`` requests) from ``CONCURRENCY``
concurrent ``sbatch`` processes; ``submit_rate_vs_slurm`` is each store's durable submission
rate over Slurm's. It is skipped, saying why, without Slurm.

Run: ``python -m bench.control_plane`` (``--quick`` for 512 hosts and 2,000 jobs); writes
``bench/results/control_plane.json`` (a run of some parts only, ``--stores ''`` or
``--agents 0``, keeps the figures of the others).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.agents_scale import AGENTS_PER_PROCESS, run_agents
from bench.common import RESULTS, timed_calls, write_results
from bench.harness.postgres import PostgresUnavailableError, start_throwaway_postgres
from bench.harness.procs import Proc, scheduler_argv
from bench.slurm_peer import SlurmUnavailableError, running_slurmctld, sbatch_all, slurm_version
from firsthop.v1 import admin_pb2, admin_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from scheduler.api.spec_serde import job_spec_to_proto
from scheduler.jobspec import JobSpec, job_spec_from_data
from topology.generators import fat_tree
from topology.model import Topology
from topology.spec import dump_spec

BIN = Path(sys.executable).parent
CONCURRENCY = 64
SIZES = ((8, 0.40), (16, 0.20), (64, 0.25), (128, 0.10), (512, 0.05))
HEARTBEAT_S = 5.0
TIMEOUT_S = 30.0
START_WAIT_S = 600.0


@dataclass(frozen=True)
class Scale:
    """Cluster and load size."""

    pods: int
    leaves: int
    hosts: int
    jobs: int
    observe_s: float


FULL = Scale(16, 16, 16, 10_000, 45.0)
QUICK = Scale(4, 8, 16, 2_000, 35.0)
FILL_JOBS = 1_000


def _specs(count: int, seed: int = 7, prefix: str = "bench") -> list[JobSpec]:
    rng = random.Random(seed)
    sizes = [s for s, _ in SIZES]
    weights = [w for _, w in SIZES]
    out = []
    for i in range(count):
        gpus = rng.choices(sizes, weights)[0]
        parallelism = {"tp": 8, "dp": gpus // 8} if gpus >= 8 else {"dp": gpus}
        out.append(
            job_spec_from_data(
                {
                    "name": f"{prefix}-{i}",
                    "gpus": gpus,
                    "parallelism": parallelism,
                    "command": ["train"],
                    "env": {"FIRSTHOP_SIM_DURATION_S": "3600"},
                    "time_limit_s": rng.choice((3600, 7200, 14400)),
                }
            )
        )
    return out


async def _submit_all(address: str, specs: list[JobSpec]) -> dict[str, Any]:
    requests = [
        jobs_pb2.SubmitJobRequest(spec=job_spec_to_proto(s), submission_id=f"{s.name}-{i}")
        for i, s in enumerate(specs)
    ]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        await stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=1), timeout=60)
        timed = await timed_calls(
            lambda r: stub.SubmitJob(r, timeout=120),
            requests,
            CONCURRENCY,
            errors=grpc.aio.AioRpcError,
        )
    return {
        "jobs": len(requests),
        "errors": timed.errors,
        "concurrency": CONCURRENCY,
        "wall_s": round(timed.wall_s, 3),
        "durable_submissions_per_s": round(len(requests) / timed.wall_s, 1),
        "latency_p50_ms": round(timed.ms_at(0.5), 2),
        "latency_p99_ms": round(timed.ms_at(0.99), 2),
    }


async def _rpc_floor(address: str, calls: int) -> dict[str, Any]:
    """The same client and concurrency against the server's trivial health check: what the
    gRPC stack alone costs per call on this machine (the ceiling for any unary RPC)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        timed = await timed_calls(
            lambda r: stub.Check(r, timeout=60),
            [health_pb2.HealthCheckRequest()] * calls,
            CONCURRENCY,
        )
    return {
        "calls": calls,
        "calls_per_s": round(calls / timed.wall_s, 1),
        "latency_p99_ms": round(timed.ms_at(0.99), 2),
    }


def _histogram(metrics_url: str, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def _cycle_stats(before: dict[str, float], after: dict[str, float], name: str) -> dict[str, Any]:
    count = after[f"{name}_count"] - before.get(f"{name}_count", 0.0)
    total = after[f"{name}_sum"] - before.get(f"{name}_sum", 0.0)
    buckets = []
    for key, value in after.items():
        if key.startswith(f"{name}_bucket"):
            bound = key.split('le="')[1].rstrip('"}')
            buckets.append((float(bound), value - before.get(key, 0.0)))
    buckets.sort()
    p99 = next((bound for bound, n in buckets if count and n >= 0.99 * count), float("inf"))
    below_1s = next((n for bound, n in buckets if bound == 1.0), 0.0)
    return {
        "cycles": int(count),
        "mean_s": round(total / count, 4) if count else None,
        "p99_below_s": p99,
        "share_under_1s": round(below_1s / count, 4) if count else None,
    }


def _wait_full(address: str) -> float:
    """Seconds until the admissions of the fill phase are over (pending count settles)."""
    started = time.perf_counter()
    last = -1
    while True:
        status = asyncio.run(_status(address))
        pending = status.jobs_by_state.get("PENDING", 0)
        if pending == last and status.gpus_free < 512:
            return time.perf_counter() - started
        last = pending
        time.sleep(2.0)  # sampling period of a benchmark probe


async def _status(address: str) -> admin_pb2.ClusterStatus:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        response = await stub.GetClusterStatus(admin_pb2.GetClusterStatusRequest(), timeout=60)
        return response.status


def run_backend(
    name: str, db_url: str, scale: Scale, work: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One full run against one store (``env``: extra settings of the scheduler process)."""
    topology = work / "cluster.yaml"
    dump_spec(fat_tree(scale.pods, scale.leaves, scale.hosts, gpus_per_host=8), topology)
    hosts = scale.pods * scale.leaves * scale.hosts
    argv = scheduler_argv(db_url, topology, metrics=True)
    scheduler = Proc(argv, work / f"{name}-scheduler.log", env=env)
    agents: Proc | None = None
    try:
        address = scheduler.wait_line("listening on ", START_WAIT_S).split()[-1]
        metrics = scheduler.wait_line("metrics on ", START_WAIT_S).split()[-1]
        started = time.perf_counter()
        agents = Proc(
            [
                str(BIN / "firsthop-agent"),
                "simulate",
                "--server",
                address,
                "--topology",
                str(topology),
                "--duration",
                "3600",
            ],
            work / f"{name}-agents.log",
        )
        agents.wait_line("connected ", START_WAIT_S)
        connect_s = time.perf_counter() - started
        fill_before = _histogram(metrics, "firsthop_scheduling_cycle_seconds")
        fill = asyncio.run(_submit_all(address, _specs(FILL_JOBS, seed=1, prefix="fill")))
        fill_s = _wait_full(address)
        fill_after = _histogram(metrics, "firsthop_scheduling_cycle_seconds")
        worker = _histogram(metrics, "firsthop_placement_work_seconds")
        submit = asyncio.run(_submit_all(address, _specs(scale.jobs)))
        floor = asyncio.run(_rpc_floor(address, scale.jobs))
        before = _histogram(metrics, "firsthop_scheduling_cycle_seconds")
        observe_started = time.perf_counter()
        lost_seen = 0
        pending: list[int] = []
        while time.perf_counter() - observe_started < scale.observe_s:
            status = asyncio.run(_status(address))
            lost_seen = max(lost_seen, status.hosts_by_state.get("LOST", 0))
            pending.append(status.jobs_by_state.get("PENDING", 0))
            time.sleep(5.0)  # a sampling period of the observation, not synchronisation
        after = _histogram(metrics, "firsthop_scheduling_cycle_seconds")
        status = asyncio.run(_status(address))
        return {
            "store": name,
            "hosts": hosts,
            "agents_connect_s": round(connect_s, 2),
            "fill_submit": fill,
            "fill_admitted_after_s": round(fill_s, 2),
            "fill_cycle": _cycle_stats(
                fill_before, fill_after, "firsthop_scheduling_cycle_seconds"
            ),
            "placement_worker": {
                "runs": int(worker.get("firsthop_placement_work_seconds_count", 0)),
                "seconds": round(worker.get("firsthop_placement_work_seconds_sum", 0.0), 2),
            },
            "submit": submit,
            "grpc_health_check_floor": floor,
            "observe_s": scale.observe_s,
            "cycle": _cycle_stats(before, after, "firsthop_scheduling_cycle_seconds"),
            "pending_jobs_during_window": (min(pending), max(pending)) if pending else None,
            "running_jobs": status.jobs_by_state.get("RUNNING", 0),
            "gpus_allocated": status.gpus_allocated,
            "lost_nodes_max": max(lost_seen, status.hosts_by_state.get("LOST", 0)),
            "ready_nodes": status.hosts_by_state.get("READY", 0),
        }
    finally:
        if agents is not None:
            agents.stop(timeout=120)
        scheduler.stop(timeout=120)


def run_slurm(scale: Scale, work: Path) -> dict[str, Any]:
    """The same fill and steady-state job mix, submitted to a real slurmctld with ``sbatch``."""
    topology = Topology.from_spec(fat_tree(scale.pods, scale.leaves, scale.hosts, gpus_per_host=8))
    fill = [s.gpus for s in _specs(FILL_JOBS, seed=1, prefix="fill")]
    steady = [s.gpus for s in _specs(scale.jobs)]
    try:
        with running_slurmctld(topology, work / "slurm", 4 * (len(fill) + len(steady))) as env:
            fill_result = asyncio.run(sbatch_all(env, fill, CONCURRENCY))
            submit = asyncio.run(sbatch_all(env, steady, CONCURRENCY))
    except SlurmUnavailableError as exc:
        return {"store": "slurm", "skipped": str(exc)}
    return {
        "store": "slurm",
        "version": slurm_version(),
        "hosts": len(topology.hosts),
        "fill_submit": fill_result,
        "submit": {**submit, "durable_submissions_per_s": submit["submissions_per_s"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 hosts, 2,000 jobs")
    parser.add_argument("--stores", default="memory,sqlite,sqlite-inline,postgresql,slurm")
    parser.add_argument(
        "--agents",
        type=int,
        default=None,
        help="also run this many simulated agents (a multiple of 256) on one server "
        "and count false LOST nodes (default: 8,192; --quick: 1,024; 0: skip)",
    )
    parser.add_argument(
        "--agent-processes",
        type=int,
        default=None,
        help="generator processes the simulated agents are spread over "
        f"(default: one per {AGENTS_PER_PROCESS} agents; see bench.agents_scale)",
    )
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="firsthop-bench-") as tmp:
        work = Path(tmp)
        for store in filter(None, args.stores.split(",")):
            if store == "memory":
                results.append(run_backend("memory", "memory://", scale, work))
            elif store == "sqlite":
                url = f"sqlite:///{work / 'bench.db'}"
                results.append(run_backend("sqlite", url, scale, work))
            elif store == "sqlite-inline":
                # The baseline of the placement worker: the cycle places on the event loop.
                url = f"sqlite:///{work / 'bench-inline.db'}"
                off = {"FIRSTHOP_PLACEMENT_WORKER": "false"}
                results.append(run_backend("sqlite-inline", url, scale, work, env=off))
            elif store == "slurm":
                results.append(run_slurm(scale, work))
            elif store == "postgresql":
                try:
                    server = start_throwaway_postgres(fsync=True)
                except PostgresUnavailableError as exc:
                    results.append({"store": "postgresql", "skipped": str(exc)})
                    continue
                try:
                    url = server.create_database("firsthop_bench")
                    results.append(run_backend("postgresql", url, scale, work))
                finally:
                    server.stop()
            else:
                parser.error(f"unknown store {store!r}")
            _print(results[-1])
        agents = args.agents if args.agents is not None else (1024 if args.quick else 8192)
        agent_run = None
        if agents:
            processes = args.agent_processes or max(1, -(-agents // AGENTS_PER_PROCESS))
            agent_run = run_agents(agents // 256, work, scale.observe_s, processes)
            print(f"{'agents':>10}: {agent_run}", flush=True)
    baseline = next((r for r in results if r.get("store") == "memory"), None)
    if baseline is not None:
        base_rate = baseline["submit"]["durable_submissions_per_s"]
        for r in results:
            if "submit" in r:
                r["submit_rate_vs_memory"] = round(
                    r["submit"]["durable_submissions_per_s"] / base_rate, 3
                )
    slurm = next((r for r in results if r.get("store") == "slurm" and "submit" in r), None)
    if slurm is not None:
        slurm_rate = slurm["submit"]["durable_submissions_per_s"]
        slurm_fill = slurm["fill_submit"]["submissions_per_s"]
        for r in results:
            if "submit" in r and r is not slurm:
                r["submit_rate_vs_slurm"] = round(
                    r["submit"]["durable_submissions_per_s"] / slurm_rate, 2
                )
                r["fill_rate_vs_slurm"] = round(
                    r["fill_submit"]["durable_submissions_per_s"] / slurm_fill, 2
                )
    name = "control_plane" + ("_quick" if args.quick else "")
    payload: dict[str, Any] = {"scale": scale.__dict__, "results": results, "agents": agent_run}
    # A run of only some parts (``--stores ''``, ``--agents 0``) keeps the others' figures.
    previous = RESULTS / f"{name}.json"
    if previous.exists():
        kept = json.loads(previous.read_text())
        if not results:
            payload["scale"], payload["results"] = kept.get("scale"), kept.get("results", [])
        if agent_run is None:
            payload["agents"] = kept.get("agents")
    path = write_results(name, payload)
    print(f"wrote {path}")


def _print(r: dict[str, Any]) -> None:
    if "skipped" in r:
        print(f"{r['store']:>10}: skipped ({r['skipped']})")
        return
    s = r["submit"]
    if r["store"] == "slurm":
        print(
            f"{'slurm':>10}: {s['submissions_per_s']:8.1f} sbatch/s (p50 {s['latency_p50_ms']} ms, "
            f"p99 {s['latency_p99_ms']} ms, errors {s['errors']}); while filling "
            f"{r['fill_submit']['submissions_per_s']}/s; {r['version']}, {r['hosts']} nodes",
            flush=True,
        )
        return
    c = r["cycle"]
    print(
        f"{r['store']:>10}: {s['durable_submissions_per_s']:8.1f} durable submits/s "
        f"(gRPC floor {r['grpc_health_check_floor']['calls_per_s']} health checks/s) "
        f"(p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms, errors {s['errors']}); "
        f"cycle mean {c['mean_s']} s, p99 < {c['p99_below_s']} s over {c['cycles']} cycles; "
        f"{r['hosts']} agents connected in {r['agents_connect_s']} s; "
        f"LOST nodes {r['lost_nodes_max']}; pending {r['pending_jobs_during_window']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
