"""``place(snapshot, request, params) -> Placement | PlacementFailure``: the placer.

Pure: reads its inputs, never mutates them, returns a value. Steps for a job of a host or more:

1. validate and derive the context (:mod:`placement.context`); cheap capacity checks give the
   stable failure reasons with counts;
2. for each candidate layout (the framework's nesting, and the heaviest dimension innermost):
   build the count problem and solve its exact recursion (:mod:`placement.counts`); lay hosts
   out with two fill orders (:mod:`placement.fill`);
3. for a job with a leaf cap (which couples the children, so the recursion alone is not
   exact), or with ``prove_count_model`` for jobs above ``fast_path_max_hosts``, solve the
   hierarchical CP-SAT models of the best layout from the recursion's hint
   (:mod:`placement.cpsat`) and fill again, also with the zone repair of
   :mod:`placement.zones` (remainders laid out so that partial blocks pair up);
4. add the two baselines (:mod:`placement.greedy`), so the answer is never worse than either;
5. compute the lower bound (:mod:`placement.bound`); unless a candidate already meets it, run
   the improvement phase (:mod:`placement.improve`: restricted re-solves seeded from the
   domains of the best candidates and the baselines, destroy-and-repair over the leaves and
   pods in use, and a hill-climb on hosts per leaf), all scored by the true cost, so that
   more free hosts do not give a worse answer in practice;
6. every candidate is verified by enumerating the real groups from the framework's order
   (:mod:`placement.ranks`, :mod:`placement.candidates`); drop any that breaks a hard rule
   and return the cheapest (ties: CP-SAT, recursion, improved, best fit, first fit) with its
   cost, lower bound (and proven gap), spans and fragmentation.

Jobs smaller than a host take one host's free GPUs (best fit) without any solver.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

import time

import numpy as np

from placement.bound import LowerBound, lower_bound
from placement.candidates import PRIORITY, Candidate, evaluate, fills
from placement.context import NS_PER_MS, JobContext, count_problem, job_context
from placement.cost import cost_from_histograms
from placement.counts import CountProblem, CountTables, allocation_below, count_tables
from placement.cpsat import HierarchyResult, solve_hierarchy
from placement.dims import Dim
from placement.errors import FailureReason
from placement.fill import choose_gpus
from placement.fragmentation import Fragmentation, fragmentation
from placement.greedy import best_fit_host, best_fit_hosts, first_fit_hosts
from placement.improve import improve
from placement.params import PlacementParams
from placement.ranks import JobLayout, job_layout, span_histograms
from placement.request import PlacementRequest
from placement.result import Placement, PlacementFailure, RankTable, SolverReport
from placement.snapshot import Snapshot
from topology.index import BoolArray, IntArray


def place(
    snapshot: Snapshot, request: PlacementRequest, params: PlacementParams | None = None
) -> Placement | PlacementFailure:
    """Place ``request`` on ``snapshot`` (see the module docstring).

    Raises:
        InvalidInputError: the request can never be placed as stated (bad parallelism for
            the NVLink domain, unknown host or tier); subclasses carry a stable ``reason``.
    """
    params = params or PlacementParams()
    start = time.perf_counter()
    ctx = job_context(snapshot, request, params)
    if ctx.sub_host:
        return _place_on_one_host(ctx, start)
    return _place_whole_hosts(ctx, start)


# ---------------------------------------------------------------------------- failures


def _failure(reason: FailureReason, message: str, start: float, **counts: int) -> PlacementFailure:
    return PlacementFailure(reason, message, counts, time.perf_counter() - start)


def _capacity_failure(ctx: JobContext, start: float) -> PlacementFailure | None:
    index = ctx.index
    free_gpus = int(ctx.snapshot.free_gpus_per_host[ctx.usable].sum())
    need = ctx.request.gpus
    if free_gpus < need:
        return _failure(
            FailureReason.INSUFFICIENT_GPUS,
            f"the job needs {need} GPUs; {free_gpus} are free and healthy",
            start,
            needed_gpus=need,
            free_gpus=free_gpus,
        )
    if ctx.sub_host:
        return None
    hosts = ctx.hosts
    free_hosts = int(ctx.eligible.sum())
    if free_hosts < hosts:
        return _failure(
            FailureReason.INSUFFICIENT_FREE_HOSTS,
            f"the job needs {hosts} whole free hosts of {ctx.gpus_per_host} GPUs; "
            f"{free_hosts} exist ({free_gpus} free GPUs in all)",
            start,
            needed_hosts=hosts,
            free_hosts=free_hosts,
            free_gpus=free_gpus,
        )
    layout = ctx.layouts[0]
    tp_digit = next((d for d in layout.digits if d.dim == "tp"), None)
    if tp_digit is not None and index.nvlink_level > 0:
        per_domain = index.sum_per_domain(index.nvlink_level, ctx.eligible.astype(np.int64))
        fit = int(np.sum(per_domain // tp_digit.hosts))
        need_blocks = hosts // tp_digit.hosts
        if fit < need_blocks:
            return _failure(
                FailureReason.NO_NVLINK_DOMAIN_FOR_TP,
                f"TP groups need {need_blocks} blocks of {tp_digit.hosts} free hosts inside "
                f"one NVLink domain; only {fit} fit",
                start,
                needed_blocks=need_blocks,
                available_blocks=fit,
            )
    cap = ctx.request.max_leaves
    if cap is not None and index.cluster_level > 1:
        leaves = np.sort(index.sum_per_domain(1, ctx.eligible.astype(np.int64)))[::-1]
        reach = int(leaves[:cap].sum())
        if reach < hosts:
            return _failure(
                FailureReason.TOO_MANY_LEAVES,
                f"the {cap} leaves with the most free hosts hold {reach}; the job needs {hosts}",
                start,
                max_leaves=cap,
                hosts_in_best_leaves=reach,
                needed_hosts=hosts,
            )
    return None


def _required_failure(ctx: JobContext, start: float) -> PlacementFailure:
    index = ctx.index
    layout = ctx.layouts[0]
    for digit_index, block in layout.blocks():
        dim = layout.digits[digit_index].dim
        level = ctx.required.get(dim) if dim is not None else None
        if level is None or level < 1:
            continue
        per_domain = index.sum_per_domain(level, ctx.eligible.astype(np.int64))
        fit = int(np.sum(per_domain // block))
        need = layout.num_hosts // block
        if fit < need:
            tier = index.level_names[level]
            return _failure(
                FailureReason.REQUIRED_TIER_IMPOSSIBLE,
                f"{dim} groups must stay in one {tier}: {need} blocks of {block} hosts are "
                f"needed, the free hosts of every {tier} hold {fit}",
                start,
                needed_blocks=need,
                available_blocks=fit,
                block_hosts=block,
            )
    return _failure(
        FailureReason.REQUIRED_TIER_IMPOSSIBLE,
        "the required tiers cannot all be met together with the free hosts there are",
        start,
        needed_hosts=layout.num_hosts,
        free_hosts=int(ctx.eligible.sum()),
    )


# ---------------------------------------------------------------------------- candidates


def _recursion_candidates(
    ctx: JobContext,
) -> tuple[list[Candidate], dict[int, tuple[CountProblem, CountTables]]]:
    out: list[Candidate] = []
    solved: dict[int, tuple[CountProblem, CountTables]] = {}
    top = ctx.index.cluster_level
    for i, layout in enumerate(ctx.layouts):
        problem = count_problem(ctx, layout)
        tables = count_tables(problem)
        if not np.isfinite(tables.optimum):
            continue
        solved[i] = (problem, tables)
        counts = allocation_below(tables, top, np.array([problem.hosts]))
        out += fills(
            ctx, name="recursion", layout=layout, problem=problem, tables=tables, counts=counts
        )
    return out, solved


def _cpsat_candidates(
    ctx: JobContext,
    problem: CountProblem,
    tables: CountTables,
    layout: JobLayout,
    hint: dict[int, IntArray] | None,
) -> tuple[list[Candidate], HierarchyResult]:
    result = solve_hierarchy(problem, tables, ctx.params, hint)
    if not result.complete:
        return [], result
    found = fills(
        ctx, name="cpsat", layout=layout, problem=problem, tables=tables, counts=result.counts
    )
    return found, result


def _counts_of_hosts(problem: CountProblem, hosts: IntArray) -> dict[int, IntArray]:
    index = problem.index
    chosen = np.zeros(index.num_hosts, dtype=np.int64)
    chosen[hosts] = 1
    return {lv: index.sum_per_domain(lv, chosen) for lv in range(1, problem.top + 1)}


def _proxy_ms(problem: CountProblem, counts: dict[int, IntArray], from_level: int) -> float:
    total = 0.0
    for level in range(from_level, problem.top + 1):
        x = counts[level]
        used = np.flatnonzero(x > 0)
        if used.size == 0:
            continue
        local = problem.local(level, used, int(x[used].max()))
        total += float(local[np.arange(used.size), x[used]].sum())
    base = 0.0
    for block in problem.blocks:
        base += float(block.reward_ns.sum()) * (problem.hosts // block.hosts)
    return (base + total) / NS_PER_MS


def _solver_report(problem: CountProblem, result: HierarchyResult, base_ms: float) -> SolverReport:
    """The top model's status, and its objective and bound in cost units (ms).

    The proxy cost of counts is ``base + sum_b sum_l rho_{b,l} * H/B_b + sum_D local_D(x_D)``
    (:mod:`placement.counts`); the top model optimises the part below its own level, so its
    bound plus the fixed rest bounds the proxy.
    """
    root = result.root
    if root is None:
        return SolverReport(status="not_run")
    objective = base_ms + _proxy_ms(problem, result.counts, 1)
    bound = None
    if root.bound_ns is not None:
        fixed = _proxy_ms(problem, result.counts, root.level + 1)
        bound = base_ms + fixed + root.bound_ns / NS_PER_MS
        bound = min(bound, objective)
    return SolverReport(root.status.value, tuple(result.models), objective, bound)


# ---------------------------------------------------------------------------- assembly


def _fragmentation_pair(ctx: JobContext, ranks: RankTable) -> tuple[Fragmentation, Fragmentation]:
    index = ctx.index
    snap = ctx.snapshot
    before = fragmentation(
        index,
        snap.free_gpus_per_host,
        snap.available_hosts,
        ctx.gpus_per_host,
        ctx.params.stranded_leaf_hosts,
    )
    used = np.bincount(ranks.hosts, minlength=index.num_hosts)
    after = fragmentation(
        index,
        snap.free_gpus_per_host - used,
        snap.available_hosts,
        ctx.gpus_per_host,
        ctx.params.stranded_leaf_hosts,
    )
    return before, after


def _domains(ctx: JobContext, hosts: IntArray) -> dict[str, dict[str, int]]:
    index = ctx.index
    out: dict[str, dict[str, int]] = {}
    for level in range(1, index.cluster_level):
        ids, counts = np.unique(index.ancestors[hosts, level], return_counts=True)
        names = index.domain_names[level]
        out[index.level_names[level]] = {
            names[i]: int(c) for i, c in zip(ids.tolist(), counts.tolist(), strict=True)
        }
    return out


def _spans(ctx: JobContext, histograms: dict[Dim, IntArray]) -> dict[Dim, dict[str, int]]:
    names = ctx.index.level_names
    return {
        d: {names[lv]: int(n) for lv, n in enumerate(h.tolist())} for d, h in histograms.items()
    }


def _bound(ctx: JobContext, free_hosts: BoolArray) -> LowerBound:
    index = ctx.index
    layout = ctx.layouts[0]
    if ctx.sub_host:
        ideal = index.host_gpus >= ctx.request.gpus
    else:
        ideal = index.host_gpus == ctx.gpus_per_host
    return lower_bound(
        index,
        par=ctx.par,
        layout=layout,
        free_hosts=free_hosts,
        eligible_hosts=ideal,
        costs=ctx.monotone,
    )


def _assemble(
    ctx: JobContext,
    *,
    best: Candidate,
    bound: LowerBound,
    solver: SolverReport,
    candidates: dict[str, float],
    start: float,
) -> Placement:
    before, after = _fragmentation_pair(ctx, best.ranks)
    return Placement(
        request=ctx.request,
        ranks=best.ranks,
        hosts=best.hosts,
        cost_ms=best.cost_ms,
        cost_by_dim_ms=best.by_dim,
        lower_bound=bound,
        solver=solver,
        solve_seconds=time.perf_counter() - start,
        spans=_spans(ctx, best.histograms),
        fragmentation_before=before,
        fragmentation_after=after,
        domains=_domains(ctx, best.hosts),
        method=best.name,
        layout=best.layout.physical_dims,
        candidates=candidates,
        gpus_per_host=ctx.gpus_per_host,
    )


def _place_whole_hosts(ctx: JobContext, start: float) -> Placement | PlacementFailure:
    failure = _capacity_failure(ctx, start)
    if failure is not None:
        return failure
    index = ctx.index
    candidates, solved = _recursion_candidates(ctx)
    if not solved:
        return _required_failure(ctx, start)
    identity = ctx.layouts[0]
    for name, finder in (("best_fit", best_fit_hosts), ("first_fit", first_fit_hosts)):
        hosts = finder(index, ctx.eligible, ctx.hosts)
        if hosts is not None:
            candidates.append(evaluate(ctx, name, identity, hosts))
    solver = SolverReport()
    cap = ctx.request.max_leaves
    big = ctx.hosts > ctx.params.fast_path_max_hosts
    hierarchy: HierarchyResult | None = None
    prove = ctx.params.use_cpsat and ctx.params.prove_count_model and big
    if prove or cap is not None:
        # The level models are where a leaf cap is enforced, so a capped job always runs
        # them (skipped, with the hint, when use_cpsat is off). Without a cap they optimise
        # the recursion's own separable objective, whose exact optimum they start from: they
        # can only prove it (prove_count_model), never improve it.
        best_layout = min(
            solved,
            key=lambda i: min(
                (c.cost_ms for c in candidates if c.valid and c.layout is ctx.layouts[i]),
                default=float("inf"),
            ),
        )
        problem, tables = solved[best_layout]
        hint = None
        if cap is not None:
            greedy = next((c for c in candidates if c.name == "best_fit" and c.valid), None)
            if greedy is not None:
                hint = _counts_of_hosts(problem, greedy.hosts)
        found, hierarchy = _cpsat_candidates(ctx, problem, tables, ctx.layouts[best_layout], hint)
        candidates += found
        base = sum(float(c[0]) for c in ctx.monotone.values())
        solver = _solver_report(problem, hierarchy, base)
    bound = _bound(ctx, ctx.eligible)
    if ctx.params.improve:
        candidates += improve(ctx, candidates, bound.total_ms)
    valid = [c for c in candidates if c.valid]
    if not valid:
        if cap is not None and hierarchy is not None and not hierarchy.infeasible:
            return _failure(
                FailureReason.NO_SOLUTION_IN_TIME,
                f"no placement within {cap} leaves was found in the time limit "
                f"(the count model was not proved infeasible)",
                start,
                max_leaves=cap,
                needed_hosts=ctx.hosts,
            )
        if cap is not None:
            return _failure(
                FailureReason.TOO_MANY_LEAVES,
                f"no placement within {cap} leaves meets the other rules",
                start,
                max_leaves=cap,
                needed_hosts=ctx.hosts,
            )
        return _required_failure(ctx, start)
    best = min(valid, key=lambda c: (round(c.cost_ms, 9), PRIORITY[c.name]))
    summary: dict[str, float] = {}
    for c in candidates:
        if c.valid:
            summary[c.name] = min(summary.get(c.name, float("inf")), c.cost_ms)
    return _assemble(ctx, best=best, bound=bound, solver=solver, candidates=summary, start=start)


def _place_on_one_host(ctx: JobContext, start: float) -> Placement | PlacementFailure:
    failure = _capacity_failure(ctx, start)
    if failure is not None:
        return failure
    snap = ctx.snapshot
    need = ctx.request.gpus
    host = best_fit_host(snap, ctx.usable, need)
    if host is None:
        most = int(snap.free_gpus_per_host[ctx.usable].max(initial=0))
        return _failure(
            FailureReason.NO_NVLINK_DOMAIN_FOR_TP,
            f"the job's {need} GPUs must share one NVLink domain; the most free GPUs on one "
            f"host is {most}",
            start,
            needed_gpus=need,
            most_free_on_one_host=most,
        )
    gpus = choose_gpus(snap.free_gpu_indices(host), need, int(ctx.index.host_gpus[host]))
    hosts = np.array([host], dtype=np.int64)
    ranks = RankTable(np.full(need, host, dtype=np.int64), gpus)
    histograms = span_histograms(ctx.index, ctx.par, ranks.hosts)
    cost, by_dim = cost_from_histograms(ctx.costs, histograms)
    layout = job_layout(ctx.par, ctx.gpus_per_host)
    candidate = Candidate("single_host", layout, hosts, ranks, cost, by_dim, histograms, True)
    fits = ctx.usable & (snap.free_gpus_per_host >= need)
    bound = _bound(ctx, fits)
    return _assemble(
        ctx,
        best=candidate,
        bound=bound,
        solver=SolverReport(),
        candidates={"single_host": cost},
        start=start,
    )
