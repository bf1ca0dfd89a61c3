"""The cost model's terms (exposure, ECMP contention, latency), the exact line relaxation of
the lower bound, and what the terms change in placements.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from placement_builders import fat_tree, free_hosts, tree

from placement import Parallelism, Placement, PlacementParams, PlacementRequest, Snapshot, place
from placement.context import job_context
from placement.cost import contention_factors, dimension_costs
from placement.relax import line_values, max_contained
from placement.volumes import dimension_messages

LEAF_PER_GB = 1000 / 50  # ms per GB at 50 GB/s


def test_dimension_costs_are_exposure_times_bandwidth_with_contention_plus_latency() -> None:
    index = fat_tree(2, 2, 2).index
    par = Parallelism(tp=8, cp=2, dp=2)
    request = PlacementRequest(gpus=32, parallelism=par)
    params = PlacementParams(ecmp_contention=1.5, exposure={"dp": 0.25})
    costs = dimension_costs(index, request, params)
    messages = dimension_messages(par.sizes)
    # Levels host, leaf, pod, cluster: latencies 0.47, 2.7, 6.7 and 10.7 us.
    assert index.latency_us.tolist() == pytest.approx([0.47, 2.7, 6.7, 10.7])
    assert contention_factors(index, params).tolist() == [1.0, 1.0, 1.5, 1.5]
    cp_leaf = 15.9 * LEAF_PER_GB + messages["cp"] * 2.7e-3
    cp_pod = 15.9 * LEAF_PER_GB * 1.5 + messages["cp"] * 6.7e-3
    assert costs["cp"][1] == pytest.approx(cp_leaf)
    assert costs["cp"][2] == pytest.approx(cp_pod)
    assert costs["dp"][2] == pytest.approx(
        0.25 * (18.8 * LEAF_PER_GB * 1.5 + messages["dp"] * 6.7e-3)
    )
    # CP2 in a ring: 16 micro-batches x 126/1 layers x 2 collectives x 1 step.
    assert messages["cp"] == pytest.approx(16 * 126 / 16 * 2)
    assert messages["dp"] == pytest.approx(126 / 16 * 2 * (2 * 2 - 1))
    flat = dimension_costs(index, request, PlacementParams.bandwidth_only())
    assert flat["cp"][2] == pytest.approx(15.9 * LEAF_PER_GB) == flat["cp"][1]


def test_tier_contention_overrides_by_tier_name() -> None:
    index = tree([[[2], [2]], [[2]]]).index  # leaf, pod, core
    params = PlacementParams(ecmp_contention=1.2, tier_contention={"core": 2.0})
    assert contention_factors(index, params).tolist() == [1.0, 1.0, 1.2, 2.0, 1.2]


def test_new_terms_keep_cp_pairs_inside_a_leaf_where_bandwidth_alone_is_indifferent() -> None:
    # Two leaves of one pod with 3 free hosts each; TP8 CP2 DP2 needs 4 hosts. Leaf and pod
    # have the same bandwidth, so bytes over bandwidth alone sees no difference between
    # splitting the CP pairs and splitting the DP groups; with ECMP contention and latency
    # above the leaf, splitting the CP pairs (15.9 GB, exposure 1) costs more than splitting
    # DP (18.8 GB at exposure 0.3), so each leaf must hold whole CP pairs.
    topo = fat_tree(1, 2, 4)
    snap = free_hosts(topo, {"leaf0.0": 3, "leaf0.1": 3})
    request = PlacementRequest(gpus=32, parallelism=Parallelism(tp=8, cp=2, dp=2))
    new = place(snap, request)
    old = place(snap, request, PlacementParams.bandwidth_only())
    assert isinstance(new, Placement)
    assert isinstance(old, Placement)
    assert new.spans["cp"] == {"host": 0, "leaf": 16, "pod": 0, "cluster": 0}
    assert new.spans["dp"]["pod"] == 16
    assert old.cost_ms == pytest.approx(old.lower_bound.total_ms)
    assert new.cost_ms == pytest.approx(new.lower_bound.total_ms)


def _brute_values(sizes: list[int], weights: list[float]) -> list[float]:
    cells = list(itertools.product(*(range(n) for n in sizes)))
    best = [0.0] * (len(cells) + 1)
    for mask in range(1 << len(cells)):
        chosen = {c for i, c in enumerate(cells) if mask >> i & 1}
        value = 0.0
        for axis, w in enumerate(weights):
            others = [range(n) for i, n in enumerate(sizes) if i != axis]
            for rest in itertools.product(*others):
                line = [(*rest[:axis], t, *rest[axis:]) for t in range(sizes[axis])]
                value += w * all(c in chosen for c in line)
        best[len(chosen)] = max(best[len(chosen)], value)
    return list(np.maximum.accumulate(best))


@pytest.mark.parametrize(
    ("sizes", "weights"),
    [
        ([2, 3], [1.0, 2.5]),
        ([3, 3], [1.0, 1.0]),
        ([2, 3, 2], [1.0, 3.0, 0.5]),
        ([2, 2, 3], [2, 1, 1]),
    ],
)
def test_line_values_match_every_subset_of_a_small_box(
    sizes: list[int], weights: list[float]
) -> None:
    values = line_values(sizes, [float(w) for w in weights])
    assert values is not None
    assert values.tolist() == pytest.approx(_brute_values(sizes, [float(w) for w in weights]))


def test_knapsack_takes_the_best_split_of_the_job_over_domains() -> None:
    values = np.array([0.0, 0.0, 1.0, 1.0, 3.0, 3.0, 5.0])
    # Six cells over domains of 4, 2 and 2 free: 4 + 2 gives 3 + 1 = 4, beating 2 + 2 + 2 = 3.
    assert max_contained(values, np.array([4, 2, 2]), 6) == pytest.approx(4.0)
    assert max_contained(values, np.array([6, 1]), 6) == pytest.approx(5.0)
    assert max_contained(values, np.array([2, 2]), 6) == float("-inf")


def test_three_way_conflict_bound_is_tighter_than_pairs_and_still_below_the_cost() -> None:
    # TP8 CP2 DP3 PP2 (12 hosts) on pods of 4 leaves x 3 hosts: no leaf holds a CP x DP plane,
    # and CP, DP and PP compete for the same leaves. The all-digits bound must add to the
    # per-dimension and pairwise ones and stay below the placement found.
    topo = fat_tree(2, 4, 3)
    snap = Snapshot.empty(topo.index)
    request = PlacementRequest(gpus=96, parallelism=Parallelism(tp=8, cp=2, dp=3, pp=2))
    p = place(snap, request)
    assert isinstance(p, Placement)
    assert p.lower_bound.joint_ms > 0
    assert p.cost_ms >= p.lower_bound.total_ms - 1e-9
    ctx = job_context(snap, request, PlacementParams())
    assert len(ctx.layouts[0].digits) == 3
