"""Scheduling-core benchmark: cycle time with 20,000 pending jobs on 16,384 hosts, and durable
store saves per second on memory, SQLite and PostgreSQL.

Cycle time. A 32 pods x 32 leaves x 16 hosts x 8 GPUs fat tree (131,072 GPUs), every host
registered. 2,000 background jobs of 64 GPUs (time limits 1-2 h) fill 97.7 % of it; then
20,000 jobs whose sizes are drawn from the Philly trace (``data/traces/philly_2017_pollux.csv.gz``;
sizes above 8 rounded up to whole hosts) are queued (``--quick``: 16 x 16 x 16 hosts, 500
background jobs, 10,000 queued, the scale of earlier runs). Measured, with the queue full:

- cycles while the free GPUs fill up (admissions, backfill reservation);
- steady-state cycles of a full cluster (nothing fits);
- a cycle right after 5 % of the background jobs finish (admissions again);
- the core's cost of one heartbeat, with the queue full.

Each cycle is timed in wall time and in the thread's CPU time: on a shared machine the wall
time includes waiting for a core, the CPU time is what the cycle costs.

Baseline in the same run: a naive cycle that calls the placer for every pending job, estimated
from the mean time of 200 such calls on the same state.

Store. ``save`` of one new job per change set (as a submission is), sequentially, durable
when it returns: memory (baseline, not durable), SQLite in WAL mode with ``synchronous=FULL``
and ``NORMAL``, and PostgreSQL started like the test fixture but with ``fsync=on``. Also
group commit: 100 jobs per change set.

Run: ``python -m bench.core``; writes ``bench/results/core.json`` (``core_quick.json``).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import write_results
from bench.harness.postgres import PostgresUnavailableError, start_throwaway_postgres
from placement import place
from scheduler.core.actions import ChangeSet
from scheduler.core.capacity import FreeCapacity
from scheduler.core.clock import ManualClock
from scheduler.core.events import (
    HeartbeatReceived,
    JobSubmitted,
    NodeRegistered,
    RankExited,
    RanksStarted,
    SchedulerStarted,
    TimerFired,
)
from scheduler.core.records import Job
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import JobState
from scheduler.jobspec import JobSpec
from scheduler.store.memory import MemoryStore
from scheduler.store.protocol import Store
from scheduler.store.sql import SqlStore
from topology.generators import fat_tree
from topology.model import Topology

TRACE = Path(__file__).resolve().parents[1] / "data" / "traces" / "philly_2017_pollux.csv.gz"
GPUS = 8
BACKGROUND_GPUS = 64


@dataclass(frozen=True)
class Scale:
    """Cluster and queue size."""

    pods: int
    leaves: int
    hosts: int
    background_jobs: int
    pending: int


FULL = Scale(32, 32, 16, 2_000, 20_000)
QUICK = Scale(16, 16, 16, 500, 10_000)
NAIVE_CALLS = 200
SAVES = 1000
BATCH, BATCHES = 100, 20


def _trace_sizes() -> list[int]:
    with gzip.open(TRACE, "rt", newline="") as handle:
        sizes = [int(row["num_gpus"]) for row in csv.DictReader(handle)]
    return [g if g <= GPUS else -(-g // GPUS) * GPUS for g in sizes]


class Bench:
    """The scheduler under test with a manual clock and helpers that play the agents."""

    def __init__(self, scale: Scale) -> None:
        self.topology = Topology.from_spec(
            fat_tree(scale.pods, scale.leaves, scale.hosts, gpus_per_host=GPUS)
        )
        self.index = self.topology.index
        self.clock = ManualClock()
        self.scheduler = Scheduler(self.index)
        self.cycles = 0
        self.scheduler.handle(SchedulerStarted(self.clock.now()))
        for name in self.index.host_names:
            self.scheduler.handle(NodeRegistered(self.clock.now(), name, GPUS))
            self.scheduler.handle(HeartbeatReceived(self.clock.now(), name))

    def heartbeats(self) -> None:
        for name in self.index.host_names:
            self.scheduler.handle(HeartbeatReceived(self.clock.now(), name))

    def cycle(self) -> dict[str, Any]:
        self.clock.advance(1)
        self.cycles += 1
        if self.cycles % 10 == 0:  # agents heartbeat (untimed), or the hosts would be LOST
            self.heartbeats()
        start, cpu = time.perf_counter(), time.thread_time()
        self.scheduler.handle(TimerFired(self.clock.now()))
        wall = time.perf_counter() - start
        cpu = time.thread_time() - cpu
        report = self.scheduler.last_cycle
        assert report is not None
        pending = sum(len(k) for k in self.scheduler.state.pending.values())
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "admitted": len(report.admitted),
            "backfilled": len(report.backfilled),
            "placer_calls": report.placements,
            "examined": report.examined,
            "reservation": report.reservation.kind if report.reservation else None,
            "pending_after": pending,
        }

    def start_admitted(self) -> None:
        state = self.scheduler.state
        for job_id in sorted(state.allocated):
            job = state.jobs[job_id]
            if job.state is JobState.ADMITTED and job.allocation is not None:
                for host in job.allocation.hosts:
                    self.scheduler.handle(
                        RanksStarted(self.clock.now(), job.id, host, job.restarts)
                    )

    def finish(self, job: Job) -> None:
        assert job.allocation is not None
        for slot in job.allocation.ranks:
            self.scheduler.handle(
                RankExited(self.clock.now(), job.id, slot.host, job.restarts, slot.rank, 0)
            )


def bench_cycles(scale: Scale) -> dict[str, Any]:
    rng = random.Random(2017)
    sizes = _trace_sizes()
    setup = time.perf_counter()
    b = Bench(scale)
    for i in range(scale.background_jobs):
        spec = JobSpec(name="background", gpus=BACKGROUND_GPUS, time_limit_s=3600 + 7 * i)
        b.scheduler.handle(JobSubmitted(b.clock.now(), f"bg{i:04d}", spec, "bg"))
    fill_cycles = []
    while b.scheduler.state.pending["default"]:
        fill_cycles.append(b.cycle())
    b.start_admitted()
    setup_s = time.perf_counter() - setup
    submit = time.perf_counter()
    for i in range(scale.pending):
        spec = JobSpec(
            name="philly",
            gpus=rng.choice(sizes),
            time_limit_s=rng.choice([600, 3600, 4 * 3600, None]),
        )
        b.scheduler.handle(JobSubmitted(b.clock.now(), f"p{i:05d}", spec, f"user{i % 40}"))
    submit_s = time.perf_counter() - submit

    state = b.scheduler.state
    capacity = FreeCapacity(state, state.busy.copy())
    queued = [state.jobs[k[2]] for k in state.pending["default"]]
    calls = queued[:NAIVE_CALLS]
    naive = time.perf_counter()
    for job in calls:
        place(capacity.snapshot(), b.scheduler.cache.request(job), b.scheduler.config.placement)
    naive_per_call = (time.perf_counter() - naive) / len(calls)

    filling = []
    while True:
        result = b.cycle()
        filling.append(result)
        b.start_admitted()
        if result["admitted"] == 0:
            break
    steady = [b.cycle() for _ in range(5)]
    beats = time.perf_counter()
    b.heartbeats()
    heartbeat_s = (time.perf_counter() - beats) / b.index.num_hosts
    background = [state.jobs[f"bg{i:04d}"] for i in range(0, scale.background_jobs, 20)]
    for job in background:
        b.finish(job)
    b.heartbeats()
    after_release = []
    while True:
        result = b.cycle()
        after_release.append(result)
        b.start_admitted()
        if result["admitted"] == 0:
            break
    measured = filling + steady + after_release
    walls = [c["wall_s"] for c in measured]
    cpus = sorted(c["cpu_s"] for c in measured)
    return {
        "cluster": {"hosts": b.index.num_hosts, "gpus": b.index.num_gpus},
        "background_jobs": scale.background_jobs,
        "pending_jobs": scale.pending,
        "setup_s": setup_s,
        "fill_cycles": len(fill_cycles),
        "submit_all_s": submit_s,
        "cycles_filling_free_gpus": filling,
        "cycles_steady_full_cluster": steady,
        "cycles_after_5pct_released": after_release,
        "summary": {
            "cycles": len(measured),
            "min_pending_during_measurement": min(c["pending_after"] for c in measured),
            "max_cycle_s": max(walls),
            "p99_cycle_s": sorted(walls)[min(len(walls) - 1, int(0.99 * len(walls)))],
            "p99_cycle_cpu_s": cpus[min(len(cpus) - 1, int(0.99 * len(cpus)))],
            "max_cycle_cpu_s": cpus[-1],
            "median_cycle_cpu_s": statistics.median(cpus),
            "median_cycle_s": statistics.median(walls),
            "steady_median_s": statistics.median(c["wall_s"] for c in steady),
            "heartbeat_handle_s": heartbeat_s,
            "heartbeats_per_s": 1 / heartbeat_s,
            "naive_placer_call_s": naive_per_call,
            "naive_cycle_estimate_s": naive_per_call * scale.pending,
        },
    }


def _job(i: int) -> Job:
    at = ManualClock().now() + timedelta(microseconds=i)
    return Job(
        id=f"s{i:07d}",
        spec=JobSpec(name="bench", gpus=8),
        user="bench",
        state=JobState.PENDING,
        submitted_at=at,
        updated_at=at,
        submission_id=f"k{i}",
        version=1,
    )


def _saves(store: Store, count: int, batch: int, first: int = 0) -> dict[str, float]:
    latencies = []
    start = time.perf_counter()
    for n in range(count):
        jobs = tuple(_job(first + n * batch + k) for k in range(batch))
        began = time.perf_counter()
        store.save(ChangeSet(jobs=jobs))
        latencies.append(time.perf_counter() - began)
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "saves": count,
        "jobs_per_save": batch,
        "saves_per_s": count / wall,
        "jobs_per_s": count * batch / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def bench_store() -> dict[str, Any]:
    results: dict[str, Any] = {}
    openers: dict[str, Callable[[], Store]] = {"memory": MemoryStore}
    with tempfile.TemporaryDirectory() as tmp:
        openers["sqlite_full"] = lambda: SqlStore(f"sqlite:///{tmp}/full.db")
        openers["sqlite_normal"] = lambda: SqlStore(
            f"sqlite:///{tmp}/normal.db", sqlite_synchronous="NORMAL"
        )
        server = None
        try:
            server = start_throwaway_postgres(fsync=True)
            url = server.create_database("bench")
            openers["postgresql"] = lambda: SqlStore(url)
        except PostgresUnavailableError as exc:
            results["postgresql_skipped"] = str(exc)
        try:
            for name, opener in openers.items():
                store = opener()
                try:
                    results[name] = {
                        "single": _saves(store, SAVES, 1),
                        "batched": _saves(store, BATCHES, BATCH, first=SAVES),
                    }
                finally:
                    store.close()
        finally:
            if server is not None:
                server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4,096 hosts, 10,000 pending jobs")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    cycles = bench_cycles(scale)
    store = bench_store()
    name = "core_quick" if args.quick else "core"
    out = write_results(name, {"cycle": cycles, "store": store})
    s = cycles["summary"]
    print(
        f"core benchmark: {cycles['cluster']['hosts']:,} hosts, "
        f"{cycles['cluster']['gpus']:,} GPUs, {scale.pending:,} pending jobs"
    )
    print(
        f"  cycle CPU time: max {s['max_cycle_cpu_s'] * 1e3:.0f} ms, "
        f"p99 {s['p99_cycle_cpu_s'] * 1e3:.0f} ms, median {s['median_cycle_cpu_s'] * 1e3:.0f} ms"
    )
    print(
        f"  cycle wall: max {s['max_cycle_s'] * 1e3:.0f} ms, p99 {s['p99_cycle_s'] * 1e3:.0f} ms, "
        f"median {s['median_cycle_s'] * 1e3:.0f} ms "
        f"over {s['cycles']} cycles (steady full cluster {s['steady_median_s'] * 1e3:.0f} ms); "
        f"naive placer-per-job cycle ~{s['naive_cycle_estimate_s']:.1f} s"
    )
    print(
        f"  heartbeat: {s['heartbeat_handle_s'] * 1e6:.0f} us each in the core "
        f"({s['heartbeats_per_s']:,.0f}/s; {cycles['cluster']['hosts']:,} hosts every 5 s need "
        f"{cycles['cluster']['hosts'] / 5:,.0f}/s)"
    )
    for phase in ("cycles_filling_free_gpus", "cycles_after_5pct_released"):
        rows = cycles[phase]
        print(
            f"  {phase}: {len(rows)} cycles, admitted {sum(r['admitted'] for r in rows)}, "
            f"max {max(r['wall_s'] for r in rows) * 1e3:.0f} ms"
        )
    for name, row in store.items():
        if isinstance(row, str):
            print(f"  store {name}: {row}")
            continue
        single, batched = row["single"], row["batched"]
        print(
            f"  store {name}: {single['saves_per_s']:,.0f} saves/s (p99 {single['p99_ms']:.2f} ms);"
            f" batched {batched['jobs_per_s']:,.0f} jobs/s"
        )
    print(f"  wrote {out}")


if __name__ == "__main__":
    main()
