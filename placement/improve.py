"""Improvement phase: restricted re-solves around the best candidates, scored by the true cost.

The count models (:mod:`placement.counts`, :mod:`placement.cpsat`) optimise a *proxy*: whole
blocks kept inside domains. The true cost (:mod:`placement.cost`, from the groups the fill
order actually produces) can differ where partial blocks do not pair up, so the proxy's
optimum over all free hosts can be beaten by the proxy's optimum over a *subset* of them,
whose counts happen to fill better: more freedom gave a worse answer (issue 12). This phase
searches exactly that space. Each *re-solve* restricts the eligible hosts to a subset, solves
the exact recursion there for every layout, fills both ways, and scores the result with the
verifier; any candidate it returns is a valid placement of the full problem (a subset of
the free hosts is still free).

Subsets, in order (large-neighbourhood search over the leaves and pods in use):

1. *seeds*: for each of the best few distinct candidates and the two baselines, its exact
   hosts, the free hosts of the leaves it uses, and those of the pods it uses (restarts
   seeded from the domains of good subsets; greedy best fit is a seed, so the compact subset
   a Slurm-like scheduler would pick is always tried);
2. *destroy and repair*: from the current best, drop one domain it uses (each leaf, then each
   pod, least used first) and re-solve on the rest of its leaves and pods plus every other
   free host, repeating from the new best whenever one improves;
3. *count moves*: hill-climb on the hosts per leaf of the best candidate and of the next
   distinct one (two starts share the budget), moving 1, 2 or a block's
   worth of hosts from a leaf it uses to another leaf with room (same parent first), filled
   both ways and scored by the true cost; the first improving move is taken, until none
   improves or ``improve_move_work`` (evaluations times hosts) is spent. The count models
   cannot see these moves: they change only how partial blocks line up.

A candidate that reaches the lower bound is optimal, so the phase then does nothing (most small
jobs, which fit one leaf). Jobs of more than :data:`ALL_LAYOUTS_MAX_HOSTS` hosts re-solve only
the layout of the candidate they start from. The phase is deterministic: it stops after
``improve_resolves`` re-solves, scaled down for large jobs by ``improve_work`` (re-solves
times job hosts) and for large clusters by ``improve_cluster_work`` (re-solves, or move
evaluations, times cluster hosts: each walks the whole cluster), never by the clock.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from placement.candidates import Candidate, evaluate, fills
from placement.context import JobContext, count_problem
from placement.counts import CountProblem, allocation_below, count_tables, parents_of
from placement.fill import FillStrategy, fill_hosts
from placement.ranks import JobLayout
from topology.index import BoolArray, IntArray

SEEDS = 3
"""Distinct best candidates whose domains seed restricted re-solves."""

MOVE_STARTS = 2
"""Distinct candidates (the best first) the count-move hill-climb starts from."""

ALL_LAYOUTS_MAX_HOSTS = 256
"""Jobs up to this many hosts re-solve every candidate layout; larger ones only the seed's."""

BASELINES = ("best_fit", "first_fit")
"""Candidates that always seed (the compact subsets other schedulers pick)."""


def resolve_budget(ctx: JobContext) -> int:
    """Re-solves allowed for this job (deterministic; fewer for large jobs and clusters)."""
    params = ctx.params
    by_work = params.improve_work // max(ctx.hosts, 1)
    by_cluster = params.improve_cluster_work // ctx.index.num_hosts
    return int(max(0, min(params.improve_resolves, by_work, by_cluster)))


def _domain_mask(ctx: JobContext, level: int, domains: Sequence[int]) -> BoolArray:
    index = ctx.index
    mask = np.zeros(index.num_domains(level), dtype=np.bool_)
    mask[list(domains)] = True
    return np.asarray(mask[index.ancestors[:, level]] & ctx.eligible, dtype=np.bool_)


def _seed_subsets(ctx: JobContext, seed: Candidate) -> Iterator[BoolArray]:
    """The seed's exact hosts, then the free hosts of the leaves, pods... it uses."""
    index = ctx.index
    exact = np.zeros(index.num_hosts, dtype=np.bool_)
    exact[seed.hosts] = True
    yield exact
    for level in range(1, index.cluster_level):
        used = np.unique(index.ancestors[seed.hosts, level]).tolist()
        yield _domain_mask(ctx, level, used)


def _destroy_subsets(ctx: JobContext, best: Candidate) -> Iterator[BoolArray]:
    """The free hosts without one domain the best candidate uses, least used first."""
    index = ctx.index
    for level in range(1, index.cluster_level):
        ids, counts = np.unique(index.ancestors[best.hosts, level], return_counts=True)
        if ids.size < 2:
            continue
        for k in np.argsort(counts, kind="stable").tolist():
            mask = ctx.eligible & (index.ancestors[:, level] != ids[k])
            yield np.asarray(mask, dtype=np.bool_)


def _resolve(ctx: JobContext, eligible: BoolArray, layouts: Sequence[JobLayout]) -> list[Candidate]:
    """The recursion's answer on ``eligible`` for each layout, both fills, verified."""
    out: list[Candidate] = []
    top = ctx.index.cluster_level
    for layout in layouts:
        problem = count_problem(ctx, layout, eligible)
        tables = count_tables(problem)
        if not np.isfinite(tables.optimum):
            continue
        counts = allocation_below(tables, top, np.array([problem.hosts]))
        out += fills(
            ctx, name="improved", layout=layout, problem=problem, tables=tables, counts=counts
        )
    return out


def improve(
    ctx: JobContext, candidates: Sequence[Candidate], lower_bound_ms: float
) -> list[Candidate]:
    """New candidates from restricted re-solves and count moves (module docstring).

    Args:
        ctx: the job context.
        candidates: every candidate found so far (valid ones seed the search).
        lower_bound_ms: a lower bound on the cost: a candidate that reaches it is optimal
            and the phase does nothing.

    Returns:
        The candidates the re-solves produced, valid or not (the caller filters).
    """
    budget = resolve_budget(ctx)
    valid = sorted((c for c in candidates if c.valid), key=lambda c: c.cost_ms)
    if not valid or valid[0].cost_ms <= lower_bound_ms * (1 + 1e-9) + 1e-9:
        return []
    seen: set[bytes] = set()
    seeds: list[Candidate] = []
    baselines = [c for c in valid if c.name in BASELINES]
    for c in [*valid[: SEEDS * 4], *baselines]:
        key = np.sort(c.hosts).tobytes()
        if key in seen or (len(seeds) >= SEEDS and c.name not in BASELINES):
            continue
        seen.add(key)
        seeds.append(c)
    found: list[Candidate] = []
    tried: set[bytes] = set()
    best = valid[0]

    def attempt(mask: BoolArray, layout: JobLayout) -> bool:
        """Re-solve on ``mask`` unless tried or too small; True when the best improved."""
        nonlocal best, budget
        key = np.packbits(mask).tobytes()
        if key in tried or int(mask.sum()) < ctx.hosts:
            return False
        tried.add(key)
        budget -= 1
        layouts = ctx.layouts if ctx.hosts <= ALL_LAYOUTS_MAX_HOSTS else (layout,)
        new = _resolve(ctx, mask, layouts)
        found.extend(new)
        better = [c for c in new if c.valid and c.cost_ms < best.cost_ms - 1e-9]
        if better:
            best = min(better, key=lambda c: c.cost_ms)
            return True
        return False

    for seed in seeds:
        for mask in _seed_subsets(ctx, seed):
            if budget > 0:
                attempt(mask, seed.layout)
    improved = True
    while improved and budget > 0:
        improved = False
        for mask in _destroy_subsets(ctx, best):
            if budget <= 0:
                break
            if attempt(mask, best.layout):
                improved = True
                break
    starts = [best]
    for c in sorted((c for c in [*valid, *found] if c.valid), key=lambda c: c.cost_ms):
        if len(starts) == MOVE_STARTS:
            break
        if all(np.sort(c.hosts).tobytes() != np.sort(s.hosts).tobytes() for s in starts):
            starts.append(c)
    share = ctx.params.improve_move_work // len(starts)
    for start in starts:
        found += count_moves(ctx, start, share)
    return found


def _counts_from_leaves(problem: CountProblem, leaves: IntArray) -> dict[int, IntArray]:
    """Counts per domain at every level from the hosts taken per leaf."""
    index = problem.index
    out = {1: leaves}
    for level in range(2, problem.top + 1):
        parent = parents_of(index, level - 1)
        summed = np.bincount(parent, weights=out[level - 1], minlength=index.num_domains(level))
        out[level] = np.rint(summed).astype(np.int64)
    return out


def _moves(problem: CountProblem, leaves: IntArray, sizes: Sequence[int]) -> Iterator[IntArray]:
    """Leaf counts one move away: ``k`` hosts from a used leaf to another with room.

    Moves inside one parent come first, then to a used leaf elsewhere, then to an unused one;
    generated lazily (a large job has hundreds of leaves and a budget of a few moves).
    """
    index = problem.index
    free = problem.free[1]
    used = np.flatnonzero(leaves > 0)
    room = np.flatnonzero(free > leaves)
    parent = parents_of(index, 1) if problem.top > 1 else np.zeros(len(free), dtype=np.int64)
    for k in sizes:
        givers = used[leaves[used] >= k]
        takers = room[free[room] - leaves[room] >= k]
        for near, busy_only in ((True, False), (False, True), (False, False)):
            for a in givers.tolist():
                same = parent[takers] == parent[a]
                mask = same if near else ~same
                mask &= (leaves[takers] > 0) if busy_only else np.ones_like(mask)
                if not near and not busy_only:
                    mask &= leaves[takers] == 0
                for b in takers[mask & (takers != a)].tolist():
                    moved = leaves.copy()
                    moved[a] -= k
                    moved[b] += k
                    yield moved


def count_moves(ctx: JobContext, best: Candidate, work: int) -> list[Candidate]:
    """Hill-climb on hosts per leaf from ``best`` (phase 3 of the module docstring).

    ``work`` is evaluations times job hosts allowed.
    """
    evaluations = min(
        work // max(ctx.hosts, 1), ctx.params.improve_cluster_work // ctx.index.num_hosts
    )
    if evaluations <= 0 or ctx.index.cluster_level < 2:
        return []
    problem = count_problem(ctx, best.layout)
    sizes = sorted({1, 2, *(b.hosts for b in problem.blocks if b.hosts < ctx.hosts)})
    found: list[Candidate] = []
    leaves = np.bincount(
        ctx.index.ancestors[best.hosts, 1], minlength=ctx.index.num_domains(1)
    ).astype(np.int64)
    seen = {leaves.tobytes()}
    improved = True
    while improved and evaluations > 0:
        improved = False
        for moved in _moves(problem, leaves, sizes):
            if evaluations <= 0:
                break
            if moved.tobytes() in seen:
                continue
            seen.add(moved.tobytes())
            counts = _counts_from_leaves(problem, moved)
            for strategy in FillStrategy:
                evaluations -= 1
                hosts = fill_hosts(problem, counts, strategy)
                found.append(evaluate(ctx, "improved", best.layout, hosts))
            better = [c for c in found[-2:] if c.valid and c.cost_ms < best.cost_ms - 1e-9]
            if better:
                best = min(better, key=lambda c: c.cost_ms)
                leaves = moved
                improved = True
                break
    return found
