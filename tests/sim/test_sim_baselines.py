"""Baseline placement policies against hand-worked cases, and the cost adapter's fidelity.

The cluster of these cases: 2 pods x 2 leaves x 4 hosts (h0001-h0004 in leaf 0 of pod 0,
h0005-h0008 in leaf 1 of pod 0, h0009-h0012 in leaf 2 / pod 1, h0013-h0016 in leaf 3 / pod 1).
"""

from __future__ import annotations

import numpy as np
import pytest
from sim_builders import index

from placement import Parallelism, Placement, PlacementParams, PlacementRequest, Snapshot
from placement import place as run_placer
from scheduler.sim import baselines
from scheduler.sim.costing import rank_cost
from scheduler.sim.policies import parse_policies, placer_for
from topology.errors import InvalidInputError


def free_hosts(idx, per_leaf: list[int]) -> np.ndarray:
    """Eligible mask with the first ``per_leaf[i]`` hosts of leaf ``i`` free."""
    mask = np.zeros(idx.num_hosts, dtype=np.bool_)
    for leaf, count in enumerate(per_leaf):
        mask[leaf * 4 : leaf * 4 + count] = True
    return mask


def names(idx, hosts) -> list[str]:
    return [idx.host_names[h] for h in hosts.tolist()]


def test_first_fit_takes_the_first_free_hosts_by_name() -> None:
    idx = index()
    eligible = free_hosts(idx, [1, 0, 4, 4])
    assert names(idx, baselines.first_fit_hosts(idx, eligible, 3)) == ["h0001", "h0009", "h0010"]
    assert baselines.first_fit_hosts(idx, eligible, 10) is None


def test_slurm_tree_best_fit_leaf() -> None:
    idx = index()
    eligible = free_hosts(idx, [3, 4, 2, 4])
    # Lowest level that fits 2 hosts is a leaf; the leaf with the fewest available is leaf 2.
    assert names(idx, baselines.slurm_tree_hosts(idx, eligible, 2)) == ["h0009", "h0010"]


def test_slurm_tree_spreads_from_the_tightest_pod() -> None:
    idx = index()
    eligible = free_hosts(idx, [3, 4, 2, 4])
    # 6 hosts: pods hold 7 and 6, so pod 1; no leaf holds 6, so the largest (leaf 3, 4 hosts),
    # then the remaining 2 from the leaf that holds them with fewest nodes (leaf 2).
    got = names(idx, baselines.slurm_tree_hosts(idx, eligible, 6))
    assert got == ["h0009", "h0010", "h0013", "h0014", "h0015", "h0016"]


def test_slurm_tree_ranks_follow_the_node_list_not_the_switch_order() -> None:
    idx = index()
    eligible = free_hosts(idx, [3, 0, 2, 2])
    # 5 hosts: only the cluster holds them; leaf 0 (3) first, then leaf 2 (2, fits exactly);
    # ranks still go in node-name order.
    got = names(idx, baselines.slurm_tree_hosts(idx, eligible, 5))
    assert got == ["h0001", "h0002", "h0003", "h0009", "h0010"]


def test_kueue_waits_for_a_domain_of_the_required_tier() -> None:
    idx = index()
    eligible = free_hosts(idx, [3, 0, 2, 2])
    # 5 hosts need a pod (a leaf holds 4); no pod has 5 free: Kueue waits, Slurm spreads.
    assert baselines.kueue_required_level(idx, 5) == 2
    assert baselines.kueue_tas_hosts(idx, eligible, 5) is None
    assert baselines.slurm_tree_hosts(idx, eligible, 5) is not None


def test_kueue_best_fit_inside_the_tightest_pod() -> None:
    idx = index()
    eligible = free_hosts(idx, [3, 4, 2, 4])
    # 5 hosts: pods hold 7 and 6 -> pod 1; leaves by free capacity (4, 2): all of leaf 3, and
    # the last host from the smallest leaf that holds the remaining 1 (leaf 2).
    got = names(idx, baselines.kueue_tas_hosts(idx, eligible, 5))
    assert got == ["h0009", "h0013", "h0014", "h0015", "h0016"]
    # 2 hosts: required tier leaf; the leaf with the least free that fits (leaf 2).
    assert names(idx, baselines.kueue_tas_hosts(idx, eligible, 2)) == ["h0009", "h0010"]


def test_single_host_rules() -> None:
    idx = index()
    free = np.full(idx.num_hosts, 8, dtype=np.int64)
    free[[2, 6, 9]] = [3, 2, 5]
    usable = np.ones(idx.num_hosts, dtype=np.bool_)
    assert baselines.first_fit_host(idx, free, usable, 2) == 0
    # Kueue BestFit: least free capacity that fits.
    assert baselines.kueue_tas_host(idx, free, usable, 2) == 6
    assert baselines.kueue_tas_host(idx, free, usable, 4) == 9
    # Slurm tree: the leaf with the fewest fitting nodes, then its first fitting node.
    free[[0, 1, 3]] = 0  # leaf 0 has one fitting node (h0003, 3 free)
    assert baselines.slurm_tree_host(idx, free, usable, 3) == 2


@pytest.mark.parametrize("policy", ["slurm-tree", "kueue-tas", "first-fit"])
def test_baseline_placements_use_their_rank_order_and_the_placer_cost_model(policy: str) -> None:
    idx = index()
    snap = Snapshot(idx, np.zeros(idx.num_gpus, dtype=np.bool_))
    request = PlacementRequest(gpus=64, parallelism=Parallelism(tp=8, pp=2, dp=4))
    params = PlacementParams(time_limit_s=0.25)
    result = placer_for(policy)(snap, request, params)
    assert isinstance(result, Placement)
    assert result.method == policy
    hosts = result.ranks.hosts
    assert len(set(hosts.tolist())) == 8
    assert result.ranks.gpus.tolist() == list(range(8)) * 8
    assert result.cost_ms == pytest.approx(rank_cost(idx, request, params, hosts).cost_ms)


def test_cost_adapter_reproduces_the_placer_cost() -> None:
    """If the placer's cost model changes, this fails instead of baselines drifting."""
    idx = index(2, 2, 4)
    busy = np.zeros(idx.num_gpus, dtype=np.bool_)
    busy[: 3 * 8] = True  # three hosts of leaf 0 busy: force spans
    snap = Snapshot(idx, busy)
    params = PlacementParams(time_limit_s=0.25)
    for par in (Parallelism(tp=8, dp=8), Parallelism(tp=8, pp=4, dp=2), Parallelism(tp=4, dp=16)):
        request = PlacementRequest(gpus=par.world_size, parallelism=par)
        result = run_placer(snap, request, params)
        assert isinstance(result, Placement)
        assert rank_cost(idx, request, params, result.ranks.hosts).cost_ms == pytest.approx(
            result.cost_ms, rel=1e-9
        )


def test_excluded_hosts_are_respected() -> None:
    idx = index()
    snap = Snapshot(idx, np.zeros(idx.num_gpus, dtype=np.bool_))
    request = PlacementRequest(gpus=16, excluded_hosts=frozenset({"h0001", "h0002"}))
    result = placer_for("first-fit")(snap, request, PlacementParams())
    assert isinstance(result, Placement)
    assert names(idx, result.hosts) == ["h0003", "h0004"]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_policies("firsthop,slurm")
    assert err.value.reason == "unknown_policy"
