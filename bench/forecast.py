"""Start-time forecast benchmark: what a ``firsthopctl cluster forecast`` costs on a busy
4,096-GPU cluster, where the time goes, and how much it slows the event loop that serves RPCs.

The cluster: a 4 pods x 8 leaves x 16 hosts x 8 GPUs fat tree (1:4 pod uplinks), every host
registered. Background jobs of 8-128 GPUs (time limits 9-16 h, started ten seconds apart) fill
97 % of it; 8 h later, ``N`` jobs are queued (sizes 1-256 GPUs drawn with Philly-like weights:
mostly small, a few wide; limits 0.5-12 h, one in ten without a limit); those that do not fit
in the free 3 % wait (``waiting``). For each ``N``:

- one forecast without a budget: wall and CPU seconds, the share spent in the placer (timed
  through the placer seam), simulated events, whether every queued job got a start;
- one forecast under the server's default budget (3 s): how many of the ``N`` got a start;
- loop lag: an asyncio loop in the main thread sleeps 1 ms at a time and records how late each
  wake-up is, first with nothing else running (the baseline, same run), then while the forecast
  runs on a worker thread as :class:`scheduler.api.forecast.Forecaster` runs it. The lag is
  what an RPC waits for the GIL on top of its own work.

Run: ``python -m bench.forecast [--quick]``; writes ``bench/results/forecast.json``
(``forecast_quick.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import datetime, timedelta
from typing import Any

from bench.common import write_results
from placement import Placement, PlacementFailure, PlacementParams, PlacementRequest, Snapshot
from placement import place as run_placer
from scheduler.core.clock import EPOCH
from scheduler.core.config import SchedulerConfig
from scheduler.core.events import (
    HeartbeatReceived,
    JobSubmitted,
    NodeRegistered,
    RanksStarted,
    TimerFired,
)
from scheduler.core.scheduler import Scheduler
from scheduler.core.states import Health, JobState
from scheduler.jobspec import JobSpec, job_spec_from_data
from scheduler.sim.forecast import LiveSnapshot, run_forecast, snapshot
from topology.generators import fat_tree
from topology.model import Topology

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WEIGHTS = (40, 10, 10, 20, 8, 5, 4, 2, 1)
DEFAULT_BUDGET_S = 3.0


def _spec(name: str, gpus: int, limit: int | None) -> JobSpec:
    data: dict[str, Any] = {"name": name, "gpus": gpus}
    if limit is not None:
        data["time_limit_s"] = limit
    return job_spec_from_data(data)


def busy_cluster(pods: int, queued: int, seed: int = 1) -> tuple[Scheduler, datetime]:
    """A full cluster with ``queued`` jobs waiting (module docstring); the core and now."""
    rng = random.Random(seed)
    topology = Topology.from_spec(fat_tree(pods, 8, 16, gpus_per_host=8, oversubscription=4))
    config = SchedulerConfig(max_placement_seconds_per_cycle=None, heartbeat_timeout_s=1e9)
    core = Scheduler(topology.index, config)
    for name in topology.index.host_names:
        core.handle(NodeRegistered(EPOCH, name, 8))
        core.handle(HeartbeatReceived(EPOCH, name, Health.HEALTHY))
    now = EPOCH + timedelta(hours=8)
    i = 0
    while core.state.busy.sum() < 0.97 * topology.index.num_gpus and i < 10_000:
        gpus = rng.choice((8, 16, 32, 64, 128))
        started = EPOCH + timedelta(seconds=10 * i)
        job_id = f"bg-{i:05d}"
        limit = rng.randint(9, 16) * 3600
        core.handle(JobSubmitted(started, job_id, _spec(job_id, gpus, limit), "bg"))
        core.handle(TimerFired(started))
        job = core.state.jobs[job_id]
        if job.allocation is None:
            break
        for host in job.allocation.hosts:
            core.handle(RanksStarted(started, job_id, host, 0))
        i += 1
    for q in range(queued):
        gpus = rng.choices(SIZES, WEIGHTS)[0]
        queued_limit = None if rng.random() < 0.1 else rng.randint(1, 24) * 1800
        job_id = f"q-{q:05d}"
        core.handle(JobSubmitted(now, job_id, _spec(job_id, gpus, queued_limit), f"u{q % 7}"))
    core.handle(TimerFired(now))
    return core, now


def _timed_placer(spent: list[float]) -> Any:
    def placer(
        snap: Snapshot, request: PlacementRequest, params: PlacementParams
    ) -> Placement | PlacementFailure:
        began = time.perf_counter()
        try:
            return run_placer(snap, request, params)
        finally:
            spent.append(time.perf_counter() - began)

    return placer


def measure(snap: LiveSnapshot, queued: int) -> dict[str, Any]:
    """One unbudgeted and one budgeted forecast of ``snap``."""
    spent: list[float] = []
    timed = LiveSnapshot(**{**_fields(snap), "placer": _timed_placer(spent)})
    cpu0, wall0 = time.process_time(), time.perf_counter()
    full = run_forecast(timed)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    started = [t for t in full.starts.values() if t is not None]
    budgeted = run_forecast(snap, budget_s=DEFAULT_BUDGET_S)
    return {
        "queued": queued,
        "waiting": len(full.starts),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "placer_s": round(sum(spent), 3),
        "placer_calls": len(spent),
        "placer_share": round(sum(spent) / wall, 3) if wall else 0.0,
        "complete": full.complete,
        "started": len(started),
        "last_start_h": (
            round((max(started) - full.at).total_seconds() / 3600, 2) if started else None
        ),
        "budgeted_started": sum(t is not None for t in budgeted.starts.values()),
        "budgeted_complete": budgeted.complete,
        "budgeted_compute_s": round(budgeted.compute_s, 3),
    }


def _fields(snap: LiveSnapshot) -> dict[str, Any]:
    return {name: getattr(snap, name) for name in LiveSnapshot.__slots__}


async def _lags(until: asyncio.Future[Any] | float) -> list[float]:
    """Wake-up delays of 1 ms sleeps, until the future is done or for that many seconds."""
    lags: list[float] = []
    end = time.perf_counter() + until if isinstance(until, float) else None
    while True:
        if end is not None and time.perf_counter() >= end:
            return lags
        if isinstance(until, asyncio.Future) and until.done():
            return lags
        began = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - began - 0.001)


def _summary(lags: list[float]) -> dict[str, float]:
    ordered = sorted(lags)
    return {
        "samples": len(lags),
        "p50_ms": round(1000 * statistics.median(ordered), 3),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 3),
        "max_ms": round(1000 * ordered[-1], 3),
    }


async def loop_lag(snap: LiveSnapshot) -> dict[str, Any]:
    """Loop lag idle (baseline) and during a forecast on a worker thread."""
    idle = await _lags(2.0)
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, lambda: run_forecast(snap))
    during = await _lags(future)
    await future
    base, busy = _summary(idle), _summary(during)
    return {
        "idle": base,
        "during_forecast": busy,
        "p50_ratio": round(busy["p50_ms"] / base["p50_ms"], 2) if base["p50_ms"] else None,
    }


def main() -> None:
    """Run the benchmark and write its result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 pods, fewer queued jobs")
    args = parser.parse_args()
    pods = 2 if args.quick else 4
    sizes = (50, 200) if args.quick else (100, 500, 2000)
    rows = []
    lag: dict[str, Any] = {}
    for queued in sizes:
        core, now = busy_cluster(pods, queued)
        running = sum(j.state is JobState.RUNNING for j in core.state.jobs.values())
        snap = snapshot(core.state, core.config, now, run_placer)
        row = {"gpus": core.index.num_gpus, "running": running, **measure(snap, queued)}
        rows.append(row)
        print(row, flush=True)
        if queued == sizes[1]:
            lag = {"queued": queued, **asyncio.run(loop_lag(snap))}
            print(lag, flush=True)
    path = write_results(
        "forecast_quick" if args.quick else "forecast",
        {
            "benchmark": "forecast",
            "topology": f"fat tree {pods}x8x16 hosts x 8 GPUs, 1:4 pod uplinks",
            "default_budget_s": DEFAULT_BUDGET_S,
            "runs": rows,
            "loop_lag": lag,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
