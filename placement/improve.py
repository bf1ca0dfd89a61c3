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
   free host, repeating from the new best whenever one improves.

The phase is deterministic: it stops after ``improve_resolves`` re-solves, scaled down for
large jobs by ``improve_work`` (re-solves times hosts), never by the clock.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from placement.candidates import Candidate, fills
from placement.context import JobContext, count_problem
from placement.counts import allocation_below, count_tables
from topology.index import BoolArray

SEEDS = 3
"""Distinct best candidates whose domains seed restricted re-solves."""

BASELINES = ("best_fit", "first_fit")
"""Candidates that always seed (the compact subsets other schedulers pick)."""


def resolve_budget(ctx: JobContext) -> int:
    """Re-solves allowed for this job (deterministic; fewer for large jobs)."""
    params = ctx.params
    by_work = params.improve_work // max(ctx.hosts, 1)
    return int(max(0, min(params.improve_resolves, by_work)))


def _domain_mask(ctx: JobContext, level: int, domains: Sequence[int]) -> BoolArray:
    index = ctx.index
    mask = np.zeros(index.num_domains(level), dtype=np.bool_)
    mask[list(domains)] = True
    return np.asarray(mask[index.ancestors[:, level]] & ctx.eligible, dtype=np.bool_)


def _seed_subsets(ctx: JobContext, seeds: Sequence[Candidate]) -> Iterator[BoolArray]:
    index = ctx.index
    for seed in seeds:
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


def _resolve(ctx: JobContext, eligible: BoolArray) -> list[Candidate]:
    """The recursion's answer on ``eligible`` for every layout, both fills, verified."""
    out: list[Candidate] = []
    top = ctx.index.cluster_level
    for layout in ctx.layouts:
        problem = count_problem(ctx, layout, eligible)
        tables = count_tables(problem)
        if not np.isfinite(tables.optimum):
            continue
        counts = allocation_below(tables, top, np.array([problem.hosts]))
        out += fills(
            ctx, name="improved", layout=layout, problem=problem, tables=tables, counts=counts
        )
    return out


def improve(ctx: JobContext, candidates: Sequence[Candidate]) -> list[Candidate]:
    """New candidates from restricted re-solves (see the module docstring).

    Args:
        ctx: the job context.
        candidates: every candidate found so far (valid ones seed the search).

    Returns:
        The candidates the re-solves produced, valid or not (the caller filters).
    """
    budget = resolve_budget(ctx)
    valid = sorted((c for c in candidates if c.valid), key=lambda c: c.cost_ms)
    if budget == 0 or not valid:
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

    def attempt(mask: BoolArray) -> bool:
        """Re-solve on ``mask`` unless tried or too small; True when the best improved."""
        nonlocal best, budget
        key = np.packbits(mask).tobytes()
        if key in tried or int(mask.sum()) < ctx.hosts:
            return False
        tried.add(key)
        budget -= 1
        new = _resolve(ctx, mask)
        found.extend(new)
        better = [c for c in new if c.valid and c.cost_ms < best.cost_ms - 1e-9]
        if better:
            best = min(better, key=lambda c: c.cost_ms)
            return True
        return False

    for mask in _seed_subsets(ctx, seeds):
        if budget <= 0:
            return found
        attempt(mask)
    improved = True
    while improved and budget > 0:
        improved = False
        for mask in _destroy_subsets(ctx, best):
            if budget <= 0:
                break
            if attempt(mask):
                improved = True
                break
    return found
