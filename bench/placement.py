"""Placement benchmark: firsthop against first fit and greedy best fit, and the lower bound.

Scenarios (issue 4):

- the 98,304-GPU fat tree (24 pods x 16 leaves x 32 hosts x 8 GPUs, 7:1 above the pods) at
  50 % and 70 % random occupancy (whole hosts busy independently, plus 3 % of the rest partly
  busy) and at 70 % and 80 % *clustered* occupancy (earlier jobs of 1-64 hosts laid down
  contiguously; at 80 % no pod has room for a 128-host DP block of the 16K job),
  with a 16,384-GPU TP8/PP16/DP128 job and a 4,096-GPU TP8/CP4/DP128 job;
- small jobs (1 to 4 hosts) on the same cluster at 70 %: solve time;
- a rail-optimized cluster (4 pods x 8 rail groups x 32 hosts, 2:1 above the pods);
- the real 847-host Alibaba Lingjun topology (``data/topology``, 8 GPUs per host assumed);
- a stream of jobs with the Philly trace's sizes and times on a 1,024-GPU
  fat tree, replayed once per policy (FIFO with backfill), plus firsthop's cost against both
  baselines on the very same snapshots;
- irregular occupancy (issue 12, :mod:`bench.placement_quality`): scattered 30-55 % busy
  hosts on small and large trees and on 2:1 oversubscribed leaves, shapes with CP and EP;
  the distribution of cost / lower bound and of cost against the best of several restricted
  re-solves, and groups per tier before (bytes over bandwidth) and after the cost model's
  exposure, ECMP and latency terms.

Costs are milliseconds of exposed communication per training step (:mod:`placement.cost`)
with the default volumes and the default cost model (exposure, ECMP contention above the
leaf, latency). Baselines run the same rank-table rules (whole hosts, rail alignment) and
differ only in which hosts they take and in what order. Timings are wall-clock on this
machine, median of repeats. Run: ``python -m bench.placement``; writes
``bench/results/placement.json``.
"""

from __future__ import annotations

import csv
import gzip
import heapq
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_results
from bench.placement_quality import print_quality, quality
from placement import Parallelism, Placement, PlacementParams, PlacementRequest, Snapshot, place
from placement.bound import lower_bound
from placement.context import job_context
from placement.cost import cost_from_histograms
from placement.fill import choose_gpus, rank_table
from placement.greedy import best_fit_host, best_fit_hosts, first_fit_host, first_fit_hosts
from placement.ranks import span_histograms
from topology.csv_import import parse_hosts_csv
from topology.generators import fat_tree, rail_optimized
from topology.index import IntArray, TopologyIndex
from topology.model import Topology
from topology.spec import TopologySpec

ROOT = Path(__file__).resolve().parents[1]
LINGJUN = ROOT / "data" / "topology" / "crux_lingjun_2023_topo.csv"
PHILLY = ROOT / "data" / "traces" / "philly_2017_pollux.csv.gz"
PARAMS = PlacementParams()
FIRST_ENGINE = PlacementParams.bandwidth_only(improve=False, prove_count_model=True)
REPEAT = 3

BIG = Parallelism(tp=8, pp=16, dp=128)
LONG = Parallelism(tp=8, cp=4, dp=128)


# ---------------------------------------------------------------------------- occupancy


def iid_busy(index: TopologyIndex, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Whole hosts busy independently with probability ``fraction``; 3 % of the rest partly."""
    busy = np.zeros(index.num_gpus, dtype=np.bool_)
    hosts = rng.random(index.num_hosts) < fraction
    partly = ~hosts & (rng.random(index.num_hosts) < 0.03)
    for h in np.flatnonzero(hosts | partly).tolist():
        first, gpus = int(index.gpu_offset[h]), int(index.host_gpus[h])
        count = gpus if hosts[h] else int(rng.integers(1, gpus))
        busy[first + rng.choice(gpus, count, replace=False)] = True
    return busy


def clustered_busy(index: TopologyIndex, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Earlier jobs of 1-64 hosts, each on a contiguous run of free hosts from a random start."""
    taken = np.zeros(index.num_hosts, dtype=np.bool_)
    sizes = np.array([1, 1, 2, 4, 8, 16, 32, 64])
    while taken.mean() < fraction:
        size = int(rng.choice(sizes))
        start = int(rng.integers(index.num_hosts))
        free = np.flatnonzero(~taken[start:])[:size] + start
        taken[free] = True
    return np.repeat(taken, index.host_gpus)


def lingjun_spec() -> TopologySpec:
    """The Lingjun CSV (columns farthest tier first) in firsthop's hosts-CSV order."""
    with LINGJUN.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    lines = ["host,ASW,PSW,DSW"] + [f"{ip},{asw},{psw},{dsw}" for ip, dsw, psw, asw in rows]
    return parse_hosts_csv("\n".join(lines) + "\n", name="lingjun", source=str(LINGJUN))


# ---------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class Outcome:
    """One policy's placement of one job."""

    hosts: IntArray
    gpus: IntArray
    cost_ms: float
    spans: dict[str, list[int]]
    seconds: float


def baseline(snapshot: Snapshot, request: PlacementRequest, kind: str) -> Outcome | None:
    """First fit (host-name order) or greedy best fit, with the same rank-table rules."""
    start = time.perf_counter()
    ctx = job_context(snapshot, request, PARAMS)
    index = snapshot.index
    if ctx.sub_host:
        pick = best_fit_host if kind == "best_fit" else first_fit_host
        host = pick(snapshot, ctx.usable, request.gpus)
        if host is None:
            return None
        free = snapshot.free_gpu_indices(host)
        gpus = (
            choose_gpus(free, request.gpus, int(index.host_gpus[host]))
            if kind == "best_fit"
            else free[: request.gpus]
        )
        rank_hosts = np.full(request.gpus, host, dtype=np.int64)
    else:
        finder = best_fit_hosts if kind == "best_fit" else first_fit_hosts
        hosts = finder(index, ctx.eligible, ctx.hosts)
        if hosts is None:
            return None
        rank_hosts, gpus = rank_table(ctx.layouts[0], hosts)
    histograms = span_histograms(index, request.par, rank_hosts)
    cost, _ = cost_from_histograms(ctx.costs, histograms)
    spans = {str(d): h.tolist() for d, h in histograms.items()}
    return Outcome(rank_hosts, gpus, cost, spans, time.perf_counter() - start)


def bound_ms(snapshot: Snapshot, request: PlacementRequest) -> float:
    """The lower bound of ``request`` on ``snapshot`` (as place() reports it)."""
    ctx = job_context(snapshot, request, PARAMS)
    index = snapshot.index
    if ctx.sub_host:
        free = ctx.usable & (snapshot.free_gpus_per_host >= request.gpus)
        every = index.host_gpus >= request.gpus
    else:
        free, every = ctx.eligible, index.host_gpus == ctx.gpus_per_host
    return lower_bound(
        index,
        par=request.par,
        layout=ctx.layouts[0],
        free_hosts=free,
        eligible_hosts=every,
        costs=ctx.monotone,
    ).total_ms


# ---------------------------------------------------------------------------- scenarios


def timed_place(
    snapshot: Snapshot, request: PlacementRequest, params: PlacementParams = PARAMS
) -> tuple[Placement, list[float]]:
    """place() ``REPEAT`` times; the result and every wall time."""
    times = []
    result = None
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = place(snapshot, request, params)
        times.append(time.perf_counter() - start)
    if not isinstance(result, Placement):
        raise SystemExit(f"benchmark job unplaceable: {result}")
    return result, times


def _names(index: TopologyIndex, spans: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    return {d: dict(zip(index.level_names, h, strict=True)) for d, h in spans.items()}


def scenario(
    name: str, topo: Topology, busy: np.ndarray, par: Parallelism, **extra: Any
) -> dict[str, Any]:
    """Run firsthop and both baselines on one snapshot and one job."""
    index = topo.index
    snap = Snapshot(index, busy)
    request = PlacementRequest(gpus=par.world_size, parallelism=par)
    result, times = timed_place(snap, request)
    # The same-run baseline for solve times (the machine is shared and noisy): the first
    # placement engine's configuration (bytes over bandwidth, CP-SAT on every large job, no
    # improvement phase) on the same snapshot, timed right after.
    _, first_times = timed_place(snap, request, FIRST_ENGINE)
    tp = result.cost_by_dim_ms.get("tp", 0.0)
    sensitive_lb = result.lower_bound.total_ms - result.lower_bound.by_dim_ms.get("tp", 0.0)
    row: dict[str, Any] = {
        "scenario": name,
        "cluster_gpus": index.num_gpus,
        "free_gpus": int(snap.free_gpus_per_host.sum()),
        "job": {"gpus": par.world_size, "order": par.order, "sizes": par.sizes},
        **extra,
        "firsthop": {
            "solve_s_median": statistics.median(times),
            "solve_s_min": min(times),
            "first_engine_solve_s_median": statistics.median(first_times),
            "solve_over_first_engine": statistics.median(times) / statistics.median(first_times),
            "cost_ms": result.cost_ms,
            "lower_bound_ms": result.lower_bound.total_ms,
            "ratio": result.ratio,
            "ratio_without_tp": (result.cost_ms - tp) / sensitive_lb if sensitive_lb else 1.0,
            "gap": result.gap,
            "count_model_bound_ms": result.solver.bound_ms,
            "cost_over_count_model_bound": (
                result.cost_ms / result.solver.bound_ms if result.solver.bound_ms else None
            ),
            "solver_status": result.solver.status,
            "models": len(result.solver.models),
            "method": result.method,
            "layout": list(result.layout),
            "spans": result.spans,
            "lower_bound_ideal_ms": result.lower_bound.ideal_ms,
            "stranded_gpus_after": result.fragmentation_after.stranded_gpus,
            "whole_free_after": result.fragmentation_after.whole_free_domains,
        },
    }
    for kind in ("best_fit", "first_fit"):
        out = baseline(snap, request, kind)
        if out is None:
            row[kind] = None
            continue
        row[kind] = {
            "cost_ms": out.cost_ms,
            "ratio": out.cost_ms / result.lower_bound.total_ms,
            "seconds": out.seconds,
            "spans": _names(index, out.spans),
        }
        row[f"firsthop_over_{kind}"] = result.cost_ms / out.cost_ms
    return row


def small_jobs(topo: Topology, busy: np.ndarray) -> list[dict[str, Any]]:
    """Solve times of jobs of at most a few hosts on the big cluster."""
    snap = Snapshot(topo.index, busy)
    rows = []
    for par in (
        Parallelism(dp=1),
        Parallelism(tp=4),
        Parallelism(tp=8),
        Parallelism(tp=8, dp=2),
        Parallelism(tp=8, dp=4),
        Parallelism(tp=8, pp=2, dp=4),
    ):
        request = PlacementRequest(gpus=par.world_size, parallelism=par)
        place(snap, request, PARAMS)
        times = []
        for _ in range(7):
            start = time.perf_counter()
            result = place(snap, request, PARAMS)
            times.append(time.perf_counter() - start)
        assert isinstance(result, Placement)
        rows.append(
            {
                "gpus": par.world_size,
                "sizes": par.sizes,
                "solve_s_median": statistics.median(times),
                "solve_s_max": max(times),
                "ratio": result.ratio,
                "method": result.method,
            }
        )
    return rows


# ---------------------------------------------------------------------------- Philly stream


STREAM_JOBS = 12_000
STREAM_SPEEDUP = 1
STREAM_WINDOW = 64
STREAM_NOTE = (
    f"1,024-GPU fat tree 4x4x8x8, first {STREAM_JOBS:,} jobs from day 14 at "
    f"{STREAM_SPEEDUP}x trace speed, FIFO with backfill over the first {STREAM_WINDOW} queued"
)


def philly_jobs(limit: int) -> list[tuple[int, int, int]]:
    """``(submit_s, duration_s, gpus)`` of the first ``limit`` jobs from day 14 on."""
    out = []
    with gzip.open(PHILLY, "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            submit = int(row["submit_time_s"])
            if submit < 14 * 86400:
                continue
            submit = (submit - 14 * 86400) // STREAM_SPEEDUP
            out.append((submit, int(row["duration_s"]), int(row["num_gpus"])))
            if len(out) == limit:
                break
    return out


def replay(topo: Topology, jobs: list[tuple[int, int, int]], policy: str) -> dict[str, Any]:
    """Replay ``jobs`` FIFO with backfill under one policy; costs, waits, times, strands."""
    index = topo.index
    busy = np.zeros(index.num_gpus, dtype=np.bool_)
    events: list[tuple[int, int, int]] = [(s, 1, i) for i, (s, _, _) in enumerate(jobs)]
    heapq.heapify(events)
    queue: list[int] = []
    running: dict[int, IntArray] = {}
    waits, ratios, multi_ratios, solve, stranded = [], [], [], [], []
    vs_best, vs_first = [], []
    cross_pod = 0
    while events:
        now, kind, i = heapq.heappop(events)
        if kind == 0:
            busy[running.pop(i)] = False
        else:
            queue.append(i)
        kept: list[int] = []
        for j in queue[:STREAM_WINDOW]:
            gpus = jobs[j][2]
            request = PlacementRequest(gpus=gpus, parallelism=Parallelism(dp=gpus))
            snap = Snapshot(index, busy)
            start = time.perf_counter()
            if policy == "firsthop":
                result = place(snap, request, PARAMS)
                ids = result.ranks.global_gpu_ids(index) if isinstance(result, Placement) else None
                if isinstance(result, Placement):
                    cost, lb = result.cost_ms, result.lower_bound.total_ms
                    stranded.append(result.fragmentation_after.stranded_gpus)
                    if gpus > 8:
                        vs_best.append(cost / result.candidates["best_fit"])
                        vs_first.append(cost / result.candidates["first_fit"])
            else:
                out = baseline(snap, request, policy)
                ids = None if out is None else index.gpu_offset[out.hosts] + out.gpus
                if out is not None:
                    cost, lb = out.cost_ms, bound_ms(snap, request)
            elapsed = time.perf_counter() - start
            if ids is None:
                kept.append(j)
                continue
            busy[ids] = True
            running[j] = ids
            heapq.heappush(events, (now + max(jobs[j][1], 1), 0, j))
            waits.append(now - jobs[j][0])
            solve.append((gpus, elapsed))
            ratios.append(_ratio(cost, lb))
            if gpus > 8:
                multi_ratios.append(_ratio(cost, lb))
                hosts = np.unique(ids // 8)
                cross_pod += int(np.unique(index.ancestors[hosts, 2]).size > 1)
        queue = kept + queue[STREAM_WINDOW:]
    multi_times = [t for g, t in solve if g > 8]
    small_times = [t for g, t in solve if g <= 8]
    row: dict[str, Any] = {
        "policy": policy,
        "jobs": len(jobs),
        "placed": len(waits),
        "mean_wait_s": statistics.fmean(waits),
        "multi_host_jobs": len(multi_ratios),
        "multi_host_mean_ratio": statistics.fmean(multi_ratios) if multi_ratios else None,
        "multi_host_max_ratio": max(multi_ratios) if multi_ratios else None,
        "multi_host_cross_pod": cross_pod,
        "all_jobs_mean_ratio": statistics.fmean(ratios),
        "solve_s_small_median": statistics.median(small_times),
        "solve_s_small_p99": float(np.percentile(small_times, 99)),
        "solve_s_multi_median": statistics.median(multi_times) if multi_times else None,
        "solve_s_multi_max": max(multi_times) if multi_times else None,
    }
    if policy == "firsthop":
        row["mean_stranded_gpus"] = statistics.fmean(stranded)
        row["same_snapshot_over_best_fit_mean"] = statistics.fmean(vs_best) if vs_best else None
        row["same_snapshot_over_best_fit_max"] = max(vs_best) if vs_best else None
        row["same_snapshot_over_first_fit_mean"] = statistics.fmean(vs_first) if vs_first else None
    return row


def _ratio(cost: float, bound: float) -> float:
    return 1.0 if bound <= 0 and cost <= 0 else cost / bound


# ---------------------------------------------------------------------------- main


def main() -> None:
    rng = np.random.default_rng(2024)
    rows: list[dict[str, Any]] = []
    big = Topology.from_spec(fat_tree(24, 16, 32, 8))
    for label, busy in (
        ("50% random", iid_busy(big.index, 0.5, rng)),
        ("70% random", iid_busy(big.index, 0.7, rng)),
        ("70% clustered", clustered_busy(big.index, 0.7, rng)),
        ("80% clustered", clustered_busy(big.index, 0.8, rng)),
    ):
        for job, par in (("16K TP8/PP16/DP128", BIG), ("4K TP8/CP4/DP128", LONG)):
            rows.append(scenario(f"fat tree 98K, {label}, {job}", big, busy, par))
            print(_line(rows[-1]), flush=True)
    small = small_jobs(big, iid_busy(big.index, 0.7, rng))
    rail = Topology.from_spec(rail_optimized(4, 8, 32, 8, oversubscription=2.0))
    rows.append(
        scenario(
            "rail-optimized 8K (2:1), 40% clustered, 2K TP8/PP4/DP64",
            rail,
            clustered_busy(rail.index, 0.4, rng),
            Parallelism(tp=8, pp=4, dp=64),
        )
    )
    print(_line(rows[-1]), flush=True)
    lingjun = Topology.from_spec(lingjun_spec())
    lj_busy = iid_busy(lingjun.index, 0.4, rng)
    for job, par in (
        ("2K TP8/PP4/DP64", Parallelism(tp=8, pp=4, dp=64)),
        ("512 TP8/CP2/DP32", Parallelism(tp=8, cp=2, dp=32)),
    ):
        rows.append(scenario(f"Lingjun 847 hosts, 40% random, {job}", lingjun, lj_busy, par))
        print(_line(rows[-1]), flush=True)
    irregular = quality()
    stream_topo = Topology.from_spec(fat_tree(4, 4, 8, 8))
    jobs = philly_jobs(STREAM_JOBS)
    stream = [replay(stream_topo, jobs, policy) for policy in ("firsthop", "best_fit", "first_fit")]
    payload = {
        "params": PARAMS.model_dump(),
        "scenarios": rows,
        "small_jobs": small,
        "philly_stream": {"setup": STREAM_NOTE, "policies": stream},
        "irregular": irregular,
    }
    path = write_results("placement", payload)
    _print_summary(rows, small, stream)
    print_quality(irregular)
    print(f"\nwrote {path}")


def _line(row: dict[str, Any]) -> str:
    fh = row["firsthop"]
    return (
        f"{row['scenario']:<58} {fh['solve_s_median']:6.3f}s "
        f"(x{fh['solve_over_first_engine']:.2f} of the first engine)  cost {fh['cost_ms']:8.1f}  "
        f"LB {fh['lower_bound_ms']:8.1f}  x{fh['ratio']:.3f}  "
        f"vs best-fit x{row.get('firsthop_over_best_fit', float('nan')):.3f}  "
        f"vs first-fit x{row.get('firsthop_over_first_fit', float('nan')):.3f}"
    )


def _top_crossings(spans: dict[str, dict[str, int]]) -> str:
    parts = []
    for dim, counts in spans.items():
        if dim == "tp":
            continue
        tiers = list(counts)
        parts.append(f"{dim} " + "/".join(str(counts[t]) for t in tiers[1:]))
    return ", ".join(parts)


def _print_summary(
    rows: list[dict[str, Any]], small: list[dict[str, Any]], stream: list[dict[str, Any]]
) -> None:
    print(
        "\nscenario | solve s | cost/LB | cost/count-model bound | vs best fit | vs first fit | "
        "groups per tier above host (firsthop; best fit)"
    )
    for row in rows:
        fh = row["firsthop"]
        cpsat = fh["cost_over_count_model_bound"]
        best = row.get("best_fit") or {}
        print(
            f"{row['scenario']} | {fh['solve_s_median']:.3f} | {fh['ratio']:.3f} | "
            f"{'-' if cpsat is None else f'{cpsat:.3f}'} | "
            f"{row.get('firsthop_over_best_fit', float('nan')):.3f} | "
            f"{row.get('firsthop_over_first_fit', float('nan')):.3f} | "
            f"{_top_crossings(fh['spans'])}; {_top_crossings(best.get('spans', {}))}"
        )
    print("\nsmall jobs (98K cluster, 70% random): gpus -> median / max solve ms")
    for s in small:
        median, most = 1e3 * s["solve_s_median"], 1e3 * s["solve_s_max"]
        print(f"  {s['gpus']:>4} GPUs: {median:.1f} / {most:.1f} ms ({s['method']})")
    print(f"\nPhilly stream ({STREAM_NOTE}):")
    for s in stream:
        mean, worst = s["multi_host_mean_ratio"], s["multi_host_max_ratio"]
        print(
            f"  {s['policy']:<9} placed {s['placed']}/{s['jobs']}, mean wait "
            f"{s['mean_wait_s']:.0f} s, multi-host jobs {s['multi_host_jobs']}: cost/LB mean "
            f"{mean or float('nan'):.3f} max {worst or float('nan'):.3f}, "
            f"DP across pods {s['multi_host_cross_pod']}; solve median "
            f"{1e3 * s['solve_s_small_median']:.2f} ms (<= 8 GPUs), "
            f"{1e3 * (s['solve_s_multi_median'] or 0):.1f} ms (more)"
        )


if __name__ == "__main__":
    main()
