"""Placement quality on irregularly busy clusters (issue 12), part of ``bench.placement``.

For scattered occupancy (30-55 % of hosts busy, independently), small and large trees, shapes
with CP and EP, and a fat tree whose leaves are 2:1 oversubscribed, every case reports:

- ``cost / lower bound``: the proven gap (the bound holds for every placement);
- ``cost / best restricted``: firsthop's cost with every free host against the best of its
  own placements restricted to a subset of them: the hosts greedy best fit picks (what a
  Slurm-like scheduler would give the job), whole leaves' free hosts in a random order, and
  random free hosts, each trimmed to a random size that still fits. Above 1 means that more
  freedom gave a worse answer;
- the same two figures for the first placement engine (bytes-over-bandwidth cost, no
  improvement phase), whose costs are in its own units;
- groups per tier of every dimension, *before* (bytes over bandwidth) and *after* (the cost
  model with exposure, ECMP contention above the leaf and latency), summed over the cases.

Distributions are min / median / p90 / max over the cases. Seeds are fixed.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

import numpy as np

from placement import Parallelism, Placement, PlacementParams, PlacementRequest, Snapshot, place
from placement.greedy import best_fit_hosts
from topology.generators import fat_tree
from topology.index import TopologyIndex
from topology.model import Topology
from topology.spec import TopologySpec

NEW = PlacementParams()
OLD = PlacementParams.bandwidth_only(improve=False)
RESTRICTED = 4
"""Random restricted subsets per case (plus greedy best fit's hosts)."""


def _oversubscribed_leaves(spec: TopologySpec, ratio: float) -> TopologySpec:
    tiers = list(spec.tiers)
    tiers[0] = tiers[0].model_copy(update={"oversubscription": ratio})
    return spec.model_copy(update={"tiers": tuple(tiers), "name": f"{spec.name}-leaf{ratio:g}"})


def _scattered(index: TopologyIndex, rng: np.random.Generator) -> np.ndarray:
    """Whole hosts busy independently with a probability drawn from 30-55 %."""
    return np.asarray(rng.random(index.num_hosts) < rng.uniform(0.3, 0.55), dtype=np.bool_)


def _subsets(
    index: TopologyIndex, busy_hosts: np.ndarray, hosts: int, rng: np.random.Generator
) -> list[np.ndarray]:
    free = np.flatnonzero(~busy_hosts)
    out = []
    picked = best_fit_hosts(index, ~busy_hosts, hosts)
    if picked is not None:
        out.append(picked)
    leaf = index.ancestors[free, 1]
    for k in range(RESTRICTED):
        if k % 2:
            pool = rng.permutation(free)
        else:
            pool = np.concatenate([free[leaf == lf] for lf in rng.permutation(np.unique(leaf))])
        out.append(pool[: int(rng.integers(hosts, free.size + 1))])
    return out


def _place(
    index: TopologyIndex, busy_hosts: np.ndarray, request: PlacementRequest, params: PlacementParams
) -> tuple[Placement | None, float]:
    g = int(index.host_gpus[0])
    start = time.perf_counter()
    result = place(Snapshot(index, np.repeat(busy_hosts, g)), request, params)
    return (result if isinstance(result, Placement) else None), time.perf_counter() - start


def _case(
    index: TopologyIndex, par: Parallelism, rng: np.random.Generator
) -> dict[str, Any] | None:
    g = int(index.host_gpus[0])
    hosts = par.world_size // g
    busy = _scattered(index, rng)
    if int((~busy).sum()) < hosts:
        return None
    request = PlacementRequest(gpus=par.world_size, parallelism=par)
    subsets = _subsets(index, busy, hosts, rng)
    out: dict[str, Any] = {}
    for label, params in (("after", NEW), ("before", OLD)):
        full, seconds = _place(index, busy, request, params)
        if full is None:
            return None
        restricted = []
        for subset in subsets:
            only = np.ones(index.num_hosts, dtype=np.bool_)
            only[subset] = False
            result, _ = _place(index, only, request, params)
            if result is not None:
                restricted.append(result.cost_ms)
        out[label] = {
            "cost_ms": full.cost_ms,
            "lower_bound_ms": full.lower_bound.total_ms,
            "cost_over_bound": full.ratio,
            "best_restricted_ms": min(restricted),
            "cost_over_best_restricted": full.cost_ms / min(restricted),
            "solve_s": seconds,
            "method": full.method,
            "spans": {d: {t: n for t, n in tiers.items() if n} for d, tiers in full.spans.items()},
        }
    return out


def _dist(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p90": p90,
        "max": ordered[-1],
    }


def _groups(cases: list[dict[str, Any]], label: str) -> dict[str, dict[str, int]]:
    total: dict[str, Counter[str]] = {}
    for case in cases:
        for dim, tiers in case[label]["spans"].items():
            if dim == "tp":
                continue
            total.setdefault(dim, Counter()).update(tiers)
    return {dim: dict(counts) for dim, counts in total.items()}


def family(name: str, topo: Topology, shapes: list[Parallelism], seeds: int) -> dict[str, Any]:
    """Every shape on ``seeds`` scattered snapshots of one tree; distributions and groups."""
    cases = []
    for shape_index, par in enumerate(shapes):
        for seed in range(seeds):
            rng = np.random.default_rng(1000 * shape_index + seed)
            case = _case(topo.index, par, rng)
            if case is not None:
                case["job"] = {"sizes": par.sizes, "order": par.order}
                cases.append(case)
    summary: dict[str, Any] = {"family": name, "cases": len(cases)}
    for label in ("after", "before"):
        rows = [c[label] for c in cases]
        summary[label] = {
            "cost_over_bound": _dist([r["cost_over_bound"] for r in rows]),
            "cost_over_best_restricted": _dist([r["cost_over_best_restricted"] for r in rows]),
            "beaten_by_a_subset": sum(r["cost_over_best_restricted"] > 1 + 1e-9 for r in rows),
            "optimal_proven": sum(r["cost_over_bound"] < 1 + 1e-9 for r in rows),
            "solve_s": _dist([r["solve_s"] for r in rows]),
            "groups_per_tier": _groups(cases, label),
        }
    summary["detail"] = cases
    return summary


def quality() -> list[dict[str, Any]]:
    """The irregular-occupancy families of the benchmark."""
    small = Topology.from_spec(fat_tree(4, 4, 8, 8))
    small_oversub = Topology.from_spec(_oversubscribed_leaves(fat_tree(4, 4, 8, 8), 2.0))
    large = Topology.from_spec(fat_tree(8, 8, 16, 8))
    small_shapes = [
        Parallelism(tp=8, cp=2, dp=12, pp=2),
        Parallelism(tp=8, cp=2, dp=6, pp=2, order="tp-cp-ep-pp-dp"),
        Parallelism(tp=4, cp=2, ep=2, dp=4, pp=2),
        Parallelism(tp=8, ep=4, dp=4),
    ]
    large_shapes = [
        Parallelism(tp=8, cp=4, dp=24, pp=2),
        Parallelism(tp=8, cp=2, ep=2, dp=16, pp=2),
    ]
    return [
        family("128 hosts (4x4x8), scattered 30-55%", small, small_shapes, 8),
        family("128 hosts, leaves 2:1, scattered 30-55%", small_oversub, small_shapes, 4),
        family("1,024 hosts (8x8x16), scattered 30-55%", large, large_shapes, 4),
    ]


def print_quality(families: list[dict[str, Any]]) -> None:
    """One block per family: distributions before/after and groups per tier."""
    for fam in families:
        print(f"\n{fam['family']}: {fam['cases']} cases")
        for label in ("before", "after"):
            s = fam[label]
            cb, cr = s["cost_over_bound"], s["cost_over_best_restricted"]
            print(
                f"  {label:<6} cost/LB median {cb['median']:.3f} p90 {cb['p90']:.3f} max "
                f"{cb['max']:.3f} (optimal proven {s['optimal_proven']}); cost/best restricted "
                f"max {cr['max']:.4f}, beaten by a subset {s['beaten_by_a_subset']}; solve "
                f"median {s['solve_s']['median']:.3f} s max {s['solve_s']['max']:.3f} s"
            )
            groups = "; ".join(
                f"{d} " + "/".join(f"{t} {n}" for t, n in tiers.items() if t != "host" and n)
                for d, tiers in s["groups_per_tier"].items()
            )
            print(f"         groups per tier: {groups}")
