"""Cluster-level figures of one run, and ratios of every policy against every other.

All figures come from the core's own job records at the end of the run (states, submit,
first start and finish times, failures with their lost work, restarts, ``productive_s``,
ETTR as :func:`scheduler.core.status.ettr` defines it) plus the engine's time series.

- utilisation: GPU-seconds held by allocations / (GPUs x horizon);
- JCT: finish - submit of jobs that succeeded within the horizon; wait: first start - submit
  of jobs that started; slowdown: JCT / ideal run time;
- GPU-hours lost to failures: GPUs x work lost since the last checkpoint, summed over
  failures (``Failure.lost_s``); to restarts: GPUs x restart time per restart;
- fragmentation per tier: time averages of the largest job one domain of each tier could
  take, and of stranded GPUs;
- repairs: ``repairs_in_place`` (the core's in-place repairs that completed: the job ran
  again on its new rank table without going through the queue) and
  ``repairs_through_queue`` (times a job went back to the queue after a failure, including
  an in-place repair that found no room); ``host_repairs``: hosts returned to service;
- goodput of each large job (``goodput``): its wall time since the first start split into
  ``useful_s`` (computation saved by checkpoints or the end), ``checkpoint_s`` (saves),
  ``lost_s`` (computation and partial saves a failure threw away), ``restarting_s`` (placed,
  ranks starting: process start, rendezvous, checkpoint load), ``stopping_s`` (stopping the
  survivors), ``queued_s`` (back in the queue) and ``open_s`` (the segment running at the
  horizon, not yet saved); ``ettr`` is the core's figure (saved run time, saves included,
  over wall time), ``ettr_work`` the stricter one (ideal-placement work saved over wall
  time: saves and slower placements count as lost; ``slowdown_s``, part of ``useful_s``, is
  what placements slower than the ideal one cost);
- comm cost: mean modelled communication cost per step (ms) over every attempt that ran, and
  its ratio to the ideal placement's; cross-tier traffic: GB per GPU per step of groups that
  cross the spine, averaged over multi-host attempts.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np

from scheduler.core.clock import EPOCH
from scheduler.core.states import JobState
from scheduler.core.status import ettr
from scheduler.sim.engine import Outcome, Run

SIZE_CLASSES = ((1, 1), (2, 8), (9, 64), (65, 512), (513, 1 << 30))
SHARES = ("useful_s", "checkpoint_s", "lost_s", "restarting_s", "stopping_s", "queued_s", "open_s")
"""Parts of a large job's wall time (:func:`goodput`); they sum to its wall time."""
RATIO_KEYS = ("utilisation", "jct_mean_s", "wait_mean_s", "gpu_hours_lost", "comm_cost_mean")


def size_class(gpus: int) -> str:
    """Name of the size class of a job (``1``, ``2-8``, ``9-64``, ``65-512``, ``513+``)."""
    for lo, hi in SIZE_CLASSES:
        if lo <= gpus <= hi:
            return str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 1 << 30 else f"{lo}+")
    raise ValueError(gpus)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p99": None}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "n": len(values),
        "mean": float(arr.mean()),
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
    }


def goodput(run: Run, horizon_s: float, end_s: float | None, save_s: float) -> dict[str, Any]:
    """Where a job's wall time since its first start went (module docstring)."""
    first = run.first_running_s
    if first is None:
        return {}
    wall = (end_s if end_s is not None else horizon_s) - first
    phases = run.phases
    running = phases.get("running", 0.0)
    checkpoint = run.checkpoints * save_s
    open_s = 0.0
    if end_s is None and run.phase == "running":
        open_s = min(running, horizon_s - run.segment_start)
    out: dict[str, Any] = {
        "wall_s": wall,
        "useful_s": run.useful_s,
        "checkpoint_s": checkpoint,
        "lost_s": max(0.0, running - run.useful_s - checkpoint - open_s),
        "restarting_s": phases.get("restarting", 0.0),
        "stopping_s": phases.get("stopping", 0.0),
        "queued_s": phases.get("queued", 0.0),
        "open_s": open_s,
        "checkpoints": run.checkpoints,
        "interval_s": run.interval_s if math.isfinite(run.interval_s) else None,
        "ettr_work": run.saved_s / wall if wall > 0 else None,
        "slowdown_s": max(0.0, run.useful_s - run.saved_s),
    }
    if wall > 0:
        out["share"] = {k: round(out[k] / wall, 5) for k in SHARES}
    return out


def policy_metrics(
    outcome: Outcome, large_job_gpus: int, restart_s: float, save_s: float = 10.0
) -> dict[str, Any]:
    """The figures of one run (module docstring)."""
    horizon = outcome.horizon_s
    stop = EPOCH + timedelta(seconds=horizon)
    jct: list[float] = []
    wait: list[float] = []
    slow: list[float] = []
    by_class: dict[str, list[float]] = {}
    lost_gpu_s = 0.0
    restart_gpu_s = 0.0
    restarts = 0
    ettrs: dict[str, float] = {}
    goodputs: dict[str, dict[str, Any]] = {}
    in_place = 0
    through_queue = 0
    costs: list[float] = []
    ratios: list[float] = []
    cross: list[float] = []
    finished = 0
    for job_id, job in outcome.jobs.items():
        run = outcome.runs[job_id]
        if job.state is JobState.SUCCEEDED and job.finished_at is not None:
            finished += 1
            t = (job.finished_at - job.submitted_at).total_seconds()
            jct.append(t)
            by_class.setdefault(size_class(job.gpus), []).append(t)
            slow.append(t / max(run.job.work_s, 1.0))
        if job.first_started_at is not None:
            wait.append((job.first_started_at - job.submitted_at).total_seconds())
        lost_gpu_s += job.gpus * sum(f.lost_s for f in job.failures)
        restarts += job.restarts
        in_place += sum(1 for r in job.repairs if r.method != "queue")
        through_queue += run.requeues
        restart_gpu_s += job.gpus * job.restarts * restart_s
        if job.gpus >= large_job_gpus:
            value = ettr(job, stop)
            if value is not None:
                ettrs[job_id] = round(value, 6)
                end = None
                if job.finished_at is not None:
                    end = (job.finished_at - EPOCH).total_seconds()
                goodputs[job_id] = goodput(run, horizon, end, save_s)
        for cost, ideal, gb in run.placements:
            costs.append(cost)
            if ideal > 0:
                ratios.append(cost / ideal)
            if job.gpus > 8:
                cross.append(gb)
    jct_stats = _stats(jct)
    samples = outcome.samples
    tiers = sorted({t for s in samples for t in s.largest_job})
    frag = {t: float(np.mean([s.largest_job.get(t, 0) for s in samples])) for t in tiers}
    return {
        "jobs_submitted": len(outcome.jobs),
        "jobs_rejected": len(outcome.rejected),
        "jobs_finished": finished,
        "utilisation": outcome.busy_gpu_s / (outcome.gpus * horizon),
        "jct_mean_s": jct_stats["mean"],
        "jct_p50_s": jct_stats["p50"],
        "jct_p99_s": jct_stats["p99"],
        "jct_by_size": {k: _stats(v) for k, v in sorted(by_class.items())},
        "wait_mean_s": _stats(wait)["mean"],
        "wait_p99_s": _stats(wait)["p99"],
        "slowdown_mean": _stats(slow)["mean"],
        "gpu_hours_lost": lost_gpu_s / 3600,
        "gpu_hours_restart": restart_gpu_s / 3600,
        "restarts": restarts,
        "repair": outcome.repair,
        "spares": len(outcome.spares),
        "repairs_in_place": in_place,
        "repairs_through_queue": through_queue,
        "host_repairs": outcome.repairs,
        "repairs": outcome.repairs,
        "failures_injected": outcome.failures_injected,
        "comm_cost_mean": float(np.mean(costs)) if costs else None,
        "comm_cost_ratio_to_ideal": float(np.mean(ratios)) if ratios else None,
        "cross_tier_gb_mean": float(np.mean(cross)) if cross else None,
        "largest_job_mean": frag,
        "stranded_gpus_mean": float(np.mean([s.stranded_gpus for s in samples]))
        if samples
        else None,
        "ettr": dict(sorted(ettrs.items())),
        "goodput": dict(sorted(goodputs.items())),
        "events": outcome.events,
        "cycles": outcome.ticks,
    }


def ratios(policies: dict[str, dict[str, Any]], reference: str) -> dict[str, dict[str, Any]]:
    """``reference``'s figures divided by every other policy's (same run)."""
    out: dict[str, dict[str, Any]] = {}
    mine = policies[reference]
    for name, other in policies.items():
        if name == reference:
            continue
        row: dict[str, Any] = {}
        for key in RATIO_KEYS:
            a, b = mine.get(key), other.get(key)
            row[key] = (
                (a / b) if isinstance(a, float | int) and isinstance(b, float | int) and b else None
            )
        out[name] = row
    return out
