"""The pieces under place(): count recursion, CP-SAT level models, fill order, bound, metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ortools.sat.python import cp_model
from placement_builders import fat_tree, free_hosts, tree

from placement import Parallelism, PlacementParams, PlacementRequest, Snapshot
from placement.bound import lower_bound
from placement.context import count_problem, job_context
from placement.cost import monotone_costs_ms, tier_costs_ms
from placement.counts import allocation_below, count_tables
from placement.cpsat import (
    _STATUS,
    LevelChild,
    LevelTerms,
    SolveStatus,
    build_level_model,
    hint_values,
    objective_of,
    solve_level_model,
)
from placement.fill import FillStrategy, choose_gpus, fill_hosts, order_children
from placement.fragmentation import fragmentation
from placement.ranks import job_layout

PARAMS = PlacementParams.bandwidth_only()


def _children() -> list[LevelChild]:
    # Three leaves with 5, 3 and 4 free hosts; blocks of 2 hosts are rewarded 10 us each.
    return [
        LevelChild(f"leaf{i}", i, free, np.arange(free + 1), None, None)
        for i, free in enumerate((5, 3, 4))
    ]


TERMS = LevelTerms(use_ns=1000, partial_ns=1000, blocks=((2, 10_000),))


def test_level_model_keys_are_readable_and_the_full_hint_is_feasible() -> None:
    children = _children()
    model, variables = build_level_model(children, 6, TERMS, None)
    hint = hint_values(children, TERMS, [2, 0, 4])
    for key, value in hint.items():
        if key in variables:
            model.add_hint(variables[key], value)
    solver = cp_model.CpSolver()
    solver.parameters.fix_variables_to_their_hinted_value = True
    status = solver.solve(model)

    assert ("hosts", "leaf0") in variables
    assert ("whole", "leaf2", 2) in variables
    assert status == cp_model.OPTIMAL
    assert solver.objective_value == objective_of(children, TERMS, [2, 0, 4])


def test_level_model_finds_the_best_counts() -> None:
    # 6 hosts: the best keep three whole blocks of 2 (-30 us) in two leaves (+2 us), one of
    # them exhausted (+1 us for the other): -27 us, e.g. [2, 0, 4] or [0, 2, 4]. Exhausting
    # leaf0 ([5, 1, 0]) keeps only two blocks and leaves two partial ones (+2 x 10/64 us,
    # the partial-block tie-breaker). (No gap allowance: the default 0.5 ms covers this
    # whole toy objective.)
    children = _children()
    model, variables = build_level_model(children, 6, TERMS, None)
    exact = PlacementParams(absolute_gap_ms=0.0)
    status, counts, objective, bound = solve_level_model(
        model, variables=variables, children=children, hint=None, params=exact, budget_s=1.0
    )

    assert status is SolveStatus.OPTIMAL
    assert counts is not None
    assert objective == -27_000
    assert objective_of(children, TERMS, counts) == objective
    assert objective_of(children, TERMS, [5, 1, 0]) == -17_000 + 2 * (10_000 // 64)
    assert bound is not None
    assert bound <= objective


def test_infeasible_model_maps_to_infeasible_and_every_status_is_mapped() -> None:
    children = _children()
    model, variables = build_level_model(children, 13, TERMS, None)
    status, counts, _, bound = solve_level_model(
        model, variables=variables, children=children, hint=None, params=PARAMS, budget_s=1.0
    )
    capped, cap_vars = build_level_model(children, 8, TERMS, leaf_cap=1)
    cap_status, _, _, _ = solve_level_model(
        capped, variables=cap_vars, children=children, hint=None, params=PARAMS, budget_s=1.0
    )

    assert status is SolveStatus.INFEASIBLE
    assert counts is None
    assert bound is None
    assert cap_status is SolveStatus.INFEASIBLE
    statuses = {cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.INFEASIBLE}
    statuses |= {cp_model.MODEL_INVALID, cp_model.UNKNOWN}
    assert statuses <= set(_STATUS)


def test_count_recursion_is_exact_against_brute_force() -> None:
    # Two pods x two leaves of 3 hosts with 3, 1 / 2, 2 free; TP8 DP2 PP3 (6 hosts, DP blocks
    # of 2 hosts). Enumerate every way to take 6 hosts and score it with the same local costs.
    topo = fat_tree(2, 2, 3)
    snap = free_hosts(topo, {"leaf0.0": 3, "leaf0.1": 1, "leaf1.0": 2, "leaf1.1": 2})
    request = PlacementRequest(gpus=48, parallelism=Parallelism(tp=8, dp=2, pp=3))
    ctx = job_context(snap, request, PARAMS)
    problem = count_problem(ctx, ctx.layouts[0])
    tables = count_tables(problem)
    index = topo.index
    best = float("inf")
    free = problem.free[1].tolist()
    for leaves in itertools.product(*(range(f + 1) for f in free)):
        if sum(leaves) != problem.hosts:
            continue
        pods = [leaves[0] + leaves[1], leaves[2] + leaves[3]]
        total = sum(problem.local_value(1, i, x) for i, x in enumerate(leaves))
        total += sum(problem.local_value(2, i, x) for i, x in enumerate(pods))
        total += problem.local_value(3, 0, problem.hosts)
        best = min(best, total)
    counts = allocation_below(tables, index.cluster_level, np.array([problem.hosts]))

    assert tables.optimum == best
    assert int(counts[1].sum()) == problem.hosts
    assert (counts[1] <= problem.free[1]).all()


def test_order_children_puts_aligned_first_and_pairs_remainders() -> None:
    items = [(0, 100), (1, 28), (2, 128), (3, 100)]

    assert order_children(items, 0, [(128, 1.0)]) == [2, 0, 1, 3]


def test_fill_keeps_each_domain_contiguous() -> None:
    topo = fat_tree(2, 2, 4)
    snap = Snapshot.empty(topo.index)
    request = PlacementRequest(gpus=96, parallelism=Parallelism(tp=8, dp=4, pp=3))
    ctx = job_context(snap, request, PARAMS)
    problem = count_problem(ctx, ctx.layouts[0])
    counts = allocation_below(count_tables(problem), 3, np.array([12]))
    hosts = fill_hosts(problem, counts, FillStrategy.PAIRED)
    leaves = topo.index.ancestors[hosts, 1].tolist()

    assert sorted(hosts.tolist()) == sorted(set(hosts.tolist()))
    assert len(hosts) == 12
    assert [k for k, _ in itertools.groupby(leaves)] == list(dict.fromkeys(leaves))


@pytest.mark.parametrize(
    ("free", "count", "expected"),
    [
        ([3, 4, 5, 6, 7], 2, [4, 5]),
        ([0, 1, 3, 4, 5, 6], 4, [3, 4, 5, 6]),
        ([0, 2, 4, 6], 2, [0, 2]),
        ([1, 2, 3, 4, 5, 6, 7], 4, [4, 5, 6, 7]),
    ],
)
def test_choose_gpus_prefers_aligned_then_contiguous(
    free: list[int], count: int, expected: list[int]
) -> None:
    assert choose_gpus(np.array(free), count, 8).tolist() == expected


def test_pairwise_bound_sees_that_dp_and_pp_cannot_both_stay_in_pods() -> None:
    # TP8 DP2 PP4 on two pods of 4 hosts: lines of DP (2 hosts) and PP (4 hosts) fit a pod
    # one at a time, so the per-dimension bound keeps both inside (526.22 + 376 + 21.4) while
    # the pairwise bound knows one crosses: 526.22 + 376 + 149.8 (DP is heavier).
    topo = tree([[4], [4]])
    par = Parallelism(tp=8, dp=2, pp=4)
    index = topo.index
    every = np.ones(index.num_hosts, dtype=np.bool_)
    weights = {"tp": 236.8, "dp": 18.8, "pp": 1.07}
    per_gb = monotone_costs_ms(tier_costs_ms(index))
    bound = lower_bound(
        index,
        par=par,
        layout=job_layout(par, 8),
        free_hosts=every,
        eligible_hosts=every,
        costs={d: w * per_gb for d, w in weights.items()},
    )

    assert sum(bound.by_dim_ms.values()) == pytest.approx(526.2222 + 376 + 21.4, rel=1e-6)
    assert bound.total_ms == pytest.approx(526.2222 + 376 + 149.8, rel=1e-6)
    assert bound.joint_ms == pytest.approx(149.8 - 21.4, rel=1e-6)
    assert bound.min_domains == {"leaf": 2, "pod": 2}
    assert bound.forced_crossings["pp"] == {"leaf": 16, "pod": 0, "cluster": 0}


def test_bound_forces_crossings_when_no_domain_holds_a_line() -> None:
    # DP lines of 4 hosts, leaves with at most 3 free: every DP group crosses leaves.
    topo = fat_tree(1, 2, 4)
    snap = free_hosts(topo, {"leaf0.0": 3, "leaf0.1": 3})
    request = PlacementRequest(gpus=32, parallelism=Parallelism(tp=8, dp=4))
    ctx = job_context(snap, request, PARAMS)
    bound = lower_bound(
        topo.index,
        par=request.par,
        layout=ctx.layouts[0],
        free_hosts=ctx.eligible,
        eligible_hosts=np.ones(topo.index.num_hosts, dtype=np.bool_),
        costs=ctx.monotone,
    )

    assert bound.forced_crossings["dp"] == {"leaf": 8, "pod": 8, "cluster": 0}
    assert bound.ideal_ms == pytest.approx(bound.total_ms)


def test_fragmentation_counts_stranded_capacity_and_whole_domains() -> None:
    topo = fat_tree(2, 2, 2)
    index = topo.index
    free = index.host_gpus.copy()
    free[0] = 3  # h001 partly busy: 3 stranded GPUs
    free[2] = 0  # h003 busy: leaf0.1 keeps one whole free host (stranded below 2)
    available = np.ones(index.num_hosts, dtype=np.bool_)
    frag = fragmentation(index, free, available, 8, stranded_leaf_hosts=2)

    assert frag.free_gpus == 3 + 8 * 6
    assert frag.stranded_gpus == 3
    assert frag.stranded_hosts == 2  # h002 (leaf0.0) and h004 (leaf0.1)
    assert frag.whole_free_domains == {"leaf": 2, "pod": 1}
    assert frag.largest_job == {"host": 8, "leaf": 16, "pod": 32, "cluster": 48}
