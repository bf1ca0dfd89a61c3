"""A lower bound on the cost of any placement, in milliseconds (placement.md section 6).

**Telescoping.** With ``C'_d`` the non-decreasing envelope of dimension ``d``'s cost per
level (:mod:`placement.cost`: exposure, bytes over bandwidth with ECMP contention, messages
times latency) and ``m_{d,l}`` the number of groups of ``d`` that span level ``l`` or higher
(are *not contained* in one domain of level ``l-1``)::

    cost >= sum_d C'_d(0)  +  sum_{l >= 1} U_l,
    U_l = sum_d ((C'_d(l) - C'_d(l-1)) / |groups_d|) * m_{d,l}

so any lower bound on each ``U_l`` gives a lower bound on the cost. Each ``U_l`` is bounded
separately, by the largest of three valid bounds:

1. **Forced splits, per dimension.** A group's *host set* is the set of host slots its ranks
   use (``rank // G``). In a regular layout the host sets of ``d`` are disjoint *lines* of
   ``h_d`` slots, each shared by ``r_d`` groups (one per rail, for instance). A domain with
   ``F`` free hosts holds at most ``floor(F / h_d)`` whole lines, and the job has only
   ``floor(H / h_d)`` hosts' worth, so at most ``r_d * min(sum_D floor(F_D / h_d),
   floor(H / h_d))`` groups are contained at level ``l-1``; the rest must cross. This covers
   the section 6 "forced splits" and "tier floor" (a line larger than every domain crosses).
   Where lines are irregular, rank capacity ``floor(F_D * G / n_d)`` is used instead.
2. **Conflicting dimensions, per pair.** Lines of two digits ``a`` and ``b`` in one
   ``n_a x n_b`` *plane* of slots always intersect. If a plane does not fit in the largest
   domain, contained ``a``-lines and contained ``b``-lines of that plane must all share one
   domain ``D*`` whose ``alpha*n_a + beta*(n_b - alpha)`` hosts cannot exceed ``max F``;
   otherwise only one of the two dimensions keeps lines contained, and no more of them than
   bound 1 allows. Minimising over ``alpha, beta`` per plane bounds the pair's crossings
   jointly: for TP8/PP16/DP128 on pods smaller than the job, DP and PP cannot both stay
   inside pods. With several planes, only ``sum_D floor(F_D / plane)`` of them can lie wholly
   inside one domain; each of the others pays the plane's minimum (capacity caps dropped:
   they are global).

3. **All digits at once, per level** (:mod:`placement.relax`): the most line weight each
   domain's free hosts can hold, whatever the assignment, from the exact best *down-set* of
   the slot box, summed over domains by a knapsack. It sees three or more dimensions that
   cannot all stay inside one domain, which the pairwise bound cannot. It runs where the
   knapsack is small (:data:`MAX_KNAPSACK_WORK`).

The bound also reports the fewest domains per tier that can hold the job
(``k_l = min{k : k largest F_D sum to at least H}``), the forced crossings per dimension and
tier, and the same bound on an empty cluster (``ideal_ms``: the price of fragmentation is
``lower bound / ideal``). Cost is ``O(#domains + #ranks)`` numpy work per level.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from placement.dims import Dim
from placement.ranks import JobLayout, group_ranks, multi_rank_dims
from placement.relax import line_values, max_contained
from placement.request import Parallelism
from topology.index import BoolArray, FloatArray, IntArray, TopologyIndex

MAX_KNAPSACK_WORK = 2_000_000
"""Largest knapsack (job hosts times free slots summed over domains) bound 3 solves; beyond
it (a 2,048-host job over 384 leaves) bounds 1 and 2 stand alone, within the time target."""


@dataclass(frozen=True, slots=True)
class LowerBound:
    """The lower bound and its components.

    Attributes:
        total_ms: the bound.
        by_dim_ms: per dimension, its share from the per-dimension bound (1 above).
        joint_ms: what the pairwise bound (2 above) adds to the sum of ``by_dim_ms``.
        forced_crossings: per dimension and level name, groups that must span that level or
            higher (``m_{d,l}`` of the per-dimension bound).
        min_domains: per switch tier name, the fewest domains whose free hosts hold the job
            (``None`` when even all of them together do not).
        ideal_ms: the same bound with every host of the job's size free.
    """

    total_ms: float
    by_dim_ms: dict[Dim, float]
    joint_ms: float
    forced_crossings: dict[Dim, dict[str, int]]
    min_domains: dict[str, int | None]
    ideal_ms: float


@dataclass(frozen=True, slots=True)
class _Lines:
    groups: int
    hosts_per_group: IntArray
    line_hosts: int | None
    groups_per_line: int | None


def _lines(par: Parallelism, dim: Dim, gpus_per_host: int) -> _Lines:
    slots = np.sort(group_ranks(par, dim) // gpus_per_host, axis=1)
    distinct = np.ones(slots.shape, dtype=np.bool_)
    distinct[:, 1:] = slots[:, 1:] != slots[:, :-1]
    per_group = distinct.sum(axis=1).astype(np.int64)
    groups = slots.shape[0]
    h = int(per_group[0])
    if not np.all(per_group == h):
        return _Lines(groups, per_group, None, None)
    sets = slots[distinct].reshape(groups, h)
    unique, counts = np.unique(sets, axis=0, return_counts=True)
    if np.unique(unique).size != unique.size or not np.all(counts == counts[0]):
        return _Lines(groups, per_group, None, None)
    return _Lines(groups, per_group, h, int(counts[0]))


def _contained_max(lines: _Lines, free: IntArray, hosts: int, group_size: int, g: int) -> int:
    """Most groups of a dimension that can lie inside single domains with ``free`` hosts.

    Groups on one host are contained in every domain that holds the host.
    """
    if lines.line_hosts == 1:
        return lines.groups
    if lines.line_hosts is not None and lines.groups_per_line is not None:
        h = lines.line_hosts
        whole = min(int(np.sum(free // h)), hosts // h)
        return min(lines.groups, lines.groups_per_line * whole)
    on_one_host = int(np.sum(lines.hosts_per_group == 1))
    capacity = int(np.sum(free * g // group_size))
    return min(lines.groups, on_one_host + capacity)


@dataclass(frozen=True, slots=True)
class _Plane:
    """One ``n_a x n_b`` plane of a pair of digits and what its lines weigh.

    ``n_b`` lines of ``a`` (each ``n_a`` hosts) cross ``n_a`` lines of ``b`` (each ``n_b``
    hosts); ``cost_a`` / ``cost_b`` weigh one uncontained line; ``cap_a`` / ``cap_b`` bound
    how many lines of each the free capacity can contain at all.
    """

    n_a: int
    n_b: int
    cost_a: float
    cost_b: float
    cap_a: int
    cap_b: int


def _pair_plane_min(plane: _Plane, fmax: int) -> float:
    """Least weighted uncontained lines of one plane (see the module docstring).

    Either no ``b``-line is contained (then at most ``cap_a`` ``a``-lines are), or no
    ``a``-line is, or both kinds are and all of them share one domain of at most ``fmax``
    hosts holding ``alpha * n_a + beta * (n_b - alpha)`` of them.
    """
    n_a, n_b = plane.n_a, plane.n_b
    only_a = plane.cost_a * (n_b - min(n_b, plane.cap_a)) + plane.cost_b * n_a
    only_b = plane.cost_a * n_b + plane.cost_b * (n_a - min(n_a, plane.cap_b))
    best = min(only_a, only_b)
    alpha = np.arange(1, min(n_b - 1, plane.cap_a) + 1, dtype=np.int64)
    if alpha.size and plane.cap_b >= 1:
        room = fmax - alpha * n_a
        beta = np.minimum(min(n_a - 1, plane.cap_b), np.maximum(room, -1) // (n_b - alpha))
        ok = (room >= 0) & (beta >= 1)
        if np.any(ok):
            mixed = plane.cost_a * (n_b - alpha[ok]) + plane.cost_b * (n_a - beta[ok])
            best = min(best, float(mixed.min()))
    return best


def _level_weights(
    costs: Mapping[Dim, FloatArray], lines: Mapping[Dim, _Lines], top: int
) -> dict[Dim, FloatArray]:
    """Per dimension and level ``l >= 1``, what one more group spanning ``l`` adds (ms).

    ``(C'_d(l) - C'_d(l-1)) / |groups_d|``; index 0 is unused (0).
    """
    out: dict[Dim, FloatArray] = {}
    for dim, info in lines.items():
        steps = np.zeros(top + 1, dtype=np.float64)
        if dim in costs:
            steps[1:] = np.diff(costs[dim]) / info.groups
        out[dim] = steps
    return out


def _level_bounds(
    index: TopologyIndex,
    *,
    par: Parallelism,
    layout: JobLayout,
    free_hosts: BoolArray,
    costs: Mapping[Dim, FloatArray],
    lines: Mapping[Dim, _Lines],
) -> tuple[dict[Dim, IntArray], FloatArray]:
    """Per level: the per-dimension ``m_{d,l}`` and the best bound on ``U_l`` (ms)."""
    top = index.cluster_level
    sizes = par.sizes
    g = layout.gpus_per_host
    hosts = layout.num_hosts
    forced: dict[Dim, IntArray] = {}
    for dim, info in lines.items():
        m = np.zeros(top + 1, dtype=np.int64)
        m[1] = int(np.sum(info.hosts_per_group >= 2))
        for level in range(2, top + 1):
            free = index.sum_per_domain(level - 1, free_hosts.astype(np.int64))
            m[level] = info.groups - _contained_max(info, free, hosts, sizes[dim], g)
        # Groups spanning level l also span every level below it.
        forced[dim] = np.maximum.accumulate(m[::-1])[::-1].copy()
    weight = _level_weights(costs, lines, top)
    best = np.zeros(top + 1, dtype=np.float64)
    for dim, m in forced.items():
        best += weight[dim] * m
    digits = [(d.dim, d.hosts) for d in layout.digits if d.dim is not None]
    if not layout.regular or len(digits) < 2:
        return forced, best
    for level in range(2, top + 1):
        free = index.sum_per_domain(level - 1, free_hosts.astype(np.int64))
        joint = _knapsack_level(
            digits, lines=lines, weight=weight, forced=forced, level=level, free=free
        )
        best[level] = max(best[level], joint)
        fmax = min(int(free.max()), hosts)
        for i, (a_dim, a_hosts) in enumerate(digits):
            for b_dim, b_hosts in digits[i + 1 :]:
                planes = hosts // (a_hosts * b_hosts)
                # Planes lying wholly in one domain are disjoint host sets of that domain.
                whole_planes = min(planes, int(np.sum(free // (a_hosts * b_hosts))))
                if whole_planes >= planes:
                    continue
                la, lb = lines[a_dim], lines[b_dim]
                if la.groups_per_line is None or lb.groups_per_line is None:
                    continue
                # Capacity caps are global, so they only bind a single plane exactly.
                cap_a = (la.groups - int(forced[a_dim][level])) // la.groups_per_line
                cap_b = (lb.groups - int(forced[b_dim][level])) // lb.groups_per_line
                shape = _Plane(
                    n_a=a_hosts,
                    n_b=b_hosts,
                    cost_a=float(weight[a_dim][level]) * la.groups_per_line,
                    cost_b=float(weight[b_dim][level]) * lb.groups_per_line,
                    cap_a=cap_a if planes == 1 else b_hosts,
                    cap_b=cap_b if planes == 1 else a_hosts,
                )
                plane = _pair_plane_min(shape, fmax)
                rest = sum(
                    float(weight[d][level]) * float(forced[d][level])
                    for d in forced
                    if d not in (a_dim, b_dim)
                )
                best[level] = max(best[level], (planes - whole_planes) * plane + rest)
    return forced, best


def _knapsack_level(
    digits: Sequence[tuple[Dim, int]],
    *,
    lines: Mapping[Dim, _Lines],
    weight: Mapping[Dim, FloatArray],
    forced: Mapping[Dim, IntArray],
    level: int,
    free: IntArray,
) -> float:
    """Bound 3 on ``U_l``: all digits' lines at once (:mod:`placement.relax`), or 0."""
    if any(lines[d].groups_per_line is None for d, _ in digits):
        return 0.0
    sizes = [n for _, n in digits]
    line_w = [float(weight[d][level]) * (lines[d].groups_per_line or 0) for d, _ in digits]
    if not any(line_w):
        return 0.0
    hosts = int(np.prod(sizes))
    if (hosts + 1) * int(np.minimum(free, hosts).sum()) > MAX_KNAPSACK_WORK:
        return 0.0
    values = line_values(sizes, line_w)
    if values is None:
        return 0.0
    total = sum(w * (hosts // n) for w, n in zip(line_w, sizes, strict=True))
    kept = max_contained(values, free, hosts)
    if not np.isfinite(kept):
        return 0.0
    named = {d for d, _ in digits}
    rest = sum(float(weight[d][level]) * float(forced[d][level]) for d in forced if d not in named)
    return max(0.0, total - kept) + rest


def _bound_ms(costs: Mapping[Dim, FloatArray], dims: list[Dim], u: FloatArray) -> float:
    base = sum(float(costs[d][0]) for d in dims if d in costs)
    return base + float(u[1:].sum())


def lower_bound(
    index: TopologyIndex,
    *,
    par: Parallelism,
    layout: JobLayout,
    free_hosts: BoolArray,
    eligible_hosts: BoolArray,
    costs: Mapping[Dim, FloatArray],
) -> LowerBound:
    """The lower bound of any placement of the job (see the module docstring).

    Args:
        index: the topology index.
        par: the job's parallelism.
        layout: the job's identity layout (slot digits).
        free_hosts: per host, usable by this job now (whole, free, healthy, not excluded).
        eligible_hosts: per host, usable on an empty cluster (right GPU count); for
            ``ideal_ms``.
        costs: per dimension, the non-decreasing costs ``C'_d(l)`` (ms per step) of its
            groups spanning each level (:mod:`placement.cost`).
    """
    dims = multi_rank_dims(par)
    lines = {d: _lines(par, d, layout.gpus_per_host) for d in dims}
    forced, best = _level_bounds(
        index, par=par, layout=layout, free_hosts=free_hosts, costs=costs, lines=lines
    )
    total = _bound_ms(costs, dims, best)
    weight = _level_weights(costs, lines, index.cluster_level)
    by_dim: dict[Dim, float] = {}
    for dim in dims:
        base = float(costs[dim][0]) if dim in costs else 0.0
        by_dim[dim] = base + float(np.dot(weight[dim][1:], forced[dim][1:]))
    _, ideal_u = _level_bounds(
        index, par=par, layout=layout, free_hosts=eligible_hosts, costs=costs, lines=lines
    )
    names = index.level_names
    min_domains: dict[str, int | None] = {}
    for level in range(1, index.cluster_level):
        free = np.sort(index.sum_per_domain(level, free_hosts.astype(np.int64)))[::-1]
        reach = np.cumsum(free)
        k = int(np.searchsorted(reach, layout.num_hosts)) + 1
        min_domains[names[level]] = k if reach.size and reach[-1] >= layout.num_hosts else None
    return LowerBound(
        total_ms=total,
        by_dim_ms=by_dim,
        joint_ms=total - sum(by_dim.values()),
        forced_crossings={
            d: {names[lv]: int(forced[d][lv]) for lv in range(1, index.num_levels)} for d in dims
        },
        min_domains=min_domains,
        ideal_ms=_bound_ms(costs, dims, ideal_u),
    )
