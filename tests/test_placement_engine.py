"""place(): one test per hard rule and per failure reason, and hand-derived golden placements.

Cost arithmetic used below is the bytes-over-bandwidth model
(:meth:`PlacementParams.bandwidth_only`, which :func:`place` here defaults to; the exposure,
ECMP and latency terms have their own tests in ``test_placement_cost_model.py``): default
volumes, H100 tiers of the test trees: per GB, NVLink
costs 1000/450 = 2.222 ms, a leaf or a pod 1000/50 = 20 ms, crossing pods (7:1) 140 ms. So
TP8 costs 236.8 * 2.222 = 526.22 ms; DP (18.8 GB) 376 ms inside a pod, 2632 ms across pods;
PP (1.07 GB) 21.4 ms inside a pod, 149.8 ms across pods.
"""

from __future__ import annotations

import numpy as np
import pytest
from placement_builders import fat_tree, free_hosts, mixed_hosts, nvl72, snapshot, tree

from placement import (
    FailureReason,
    InvalidRequestError,
    Parallelism,
    Placement,
    PlacementFailure,
    PlacementParams,
    PlacementRequest,
    Snapshot,
)
from placement import place as run_placer
from placement.cost import cost_from_histograms, tier_costs_ms
from placement.cpsat import SolveStatus
from placement.ranks import span_histograms
from placement.volumes import DEFAULT_VOLUMES_GB
from topology.errors import InvalidInputError, UnknownHostError
from topology.model import Topology

TP = 526.2222222222
DP_POD, DP_CROSS = 376.0, 2632.0
PP_POD, PP_CROSS = 21.4, 149.8


BANDWIDTH_ONLY = PlacementParams.bandwidth_only()


def place(
    snapshot: Snapshot, request: PlacementRequest, params: PlacementParams | None = None
) -> Placement | PlacementFailure:
    """:func:`placement.place` with the bytes-over-bandwidth cost model by default."""
    return run_placer(snapshot, request, params or BANDWIDTH_ONLY)


def _placed(result: Placement | PlacementFailure) -> Placement:
    assert isinstance(result, Placement), result
    return result


def _failed(result: Placement | PlacementFailure) -> PlacementFailure:
    assert isinstance(result, PlacementFailure), result
    return result


def _hosts(p: Placement, topo: Topology) -> list[str]:
    return [topo.index.host_names[h] for h in p.hosts.tolist()]


def req(gpus: int | None = None, **kwargs: object) -> PlacementRequest:
    """A request with parallelism from keyword sizes (and ``order``)."""
    par_keys = {"tp", "cp", "ep", "dp", "pp", "order", "order_convention"}
    par = Parallelism.model_validate({k: v for k, v in kwargs.items() if k in par_keys})
    rest = {k: v for k, v in kwargs.items() if k not in par_keys}
    return PlacementRequest.model_validate(
        {"gpus": gpus or par.world_size, "parallelism": par, **rest}
    )


# ---------------------------------------------------------------------------- golden


def test_golden_dp_group_in_the_only_leaf_that_holds_it() -> None:
    # Free: leaf0.0 h001-h002, leaf0.1 h005, leaf1.1 h013-h016 (pod1). TP8 DP4 needs four
    # hosts; pod0 has three, so only leaf1.1 keeps the DP groups inside a pod: cost
    # TP 526.22 + DP 376 = 902.22 ms. First fit by name takes h001, h002, h005, h013 and
    # pushes every DP group across pods: 526.22 + 2632.
    topo = fat_tree(2, 2, 4)
    snap = free_hosts(topo, {"leaf0.0": 2, "leaf0.1": 1, "leaf1.1": 4})
    p = _placed(place(snap, req(tp=8, dp=4)))

    assert _hosts(p, topo) == ["h013", "h014", "h015", "h016"]
    assert p.cost_ms == pytest.approx(TP + DP_POD)
    assert p.lower_bound.total_ms == pytest.approx(TP + DP_POD)
    assert p.candidates["first_fit"] == pytest.approx(TP + DP_CROSS)
    assert p.spans["dp"] == {"host": 0, "leaf": 8, "pod": 0, "cluster": 0}
    names = topo.index.host_names
    assert [(names[h], g) for h, g in zip(p.ranks.hosts[:10], p.ranks.gpus[:10], strict=True)] == [
        *[("h013", g) for g in range(8)],
        ("h014", 0),
        ("h014", 1),
    ]


def test_golden_the_placer_honours_the_rank_order() -> None:
    # Two pods of one 4-host leaf, all free; TP8 DP2 PP4 = 8 hosts = both pods. Either DP or
    # PP groups must cross pods; DP is heavier, so the best keeps DP inside pods and lets PP
    # cross: 526.22 + 376 + 149.8 = 1052.02 ms for *either* order. The orders put DP peers on
    # different ranks, so each order gets a different rank table; reading one order's table
    # with the other order's groups sends every DP group across pods.
    topo = tree([[4], [4]])
    snap = Snapshot.empty(topo.index)
    megatron = _placed(place(snap, req(tp=8, dp=2, pp=4, order="tp-dp-pp")))
    llama = _placed(place(snap, req(tp=8, dp=2, pp=4, order="tp-pp-dp")))

    assert megatron.cost_ms == pytest.approx(TP + DP_POD + PP_CROSS)
    assert llama.cost_ms == pytest.approx(TP + DP_POD + PP_CROSS)
    assert megatron.ratio == pytest.approx(1.0)
    assert llama.layout == ("dp", "pp")
    pod = topo.index.ancestors[:, 2]
    # Megatron order: rank 8 is rank 0's DP peer. Llama order: rank 32 is.
    assert pod[megatron.ranks.hosts[8]] == pod[megatron.ranks.hosts[0]]
    assert pod[llama.ranks.hosts[32]] == pod[llama.ranks.hosts[0]]
    wrong = span_histograms(topo.index, llama.request.par, megatron.ranks.hosts)
    per_gb = tier_costs_ms(topo.index)
    costs = {d: DEFAULT_VOLUMES_GB[d] * per_gb for d in ("tp", "dp", "pp")}
    cost, _ = cost_from_histograms(costs, wrong)
    assert cost == pytest.approx(TP + DP_CROSS + PP_POD)


def test_golden_heavier_dimension_goes_innermost_when_cp_and_dp_conflict() -> None:
    # TP8 CP2 DP4 on two pods of 4 hosts: CP lines (2 hosts) and DP lines (4 hosts) form a
    # 2x4 plane larger than a pod, so one of them crosses. DP (18.8 GB) outweighs CP
    # (15.9 GB): keep DP in pods and let CP cross: 526.22 + 376 + 15.9*140 = 3128.22 ms,
    # which is also the pairwise lower bound.
    topo = tree([[4], [4]])
    p = _placed(place(Snapshot.empty(topo.index), req(tp=8, cp=2, dp=4)))

    assert p.layout == ("dp", "cp")
    assert p.cost_ms == pytest.approx(TP + DP_POD + 15.9 * 140)
    assert p.lower_bound.total_ms == pytest.approx(p.cost_ms)
    assert p.spans["cp"]["cluster"] == 32  # all 64 / 2 CP groups


def test_golden_small_job_takes_an_aligned_window_on_the_fullest_host() -> None:
    # h001 has GPUs 0-2 busy (5 free), h002 is empty: best fit picks h001, and the first
    # aligned window of 2 free GPUs there is 4-5; of 3, it is 4-6.
    topo = tree([2])
    snap = snapshot(topo, busy_gpus=["h001:0", "h001:1", "h001:2"])
    two = _placed(place(snap, req(dp=2)))
    three = _placed(place(snap, req(tp=3)))
    six = _placed(place(snap, req(dp=6)))

    assert two.ranks.rows(topo.index) == [
        {"rank": 0, "host": "h001", "gpu": 4},
        {"rank": 1, "host": "h001", "gpu": 5},
    ]
    assert three.ranks.gpus.tolist() == [4, 5, 6]
    assert _hosts(six, topo) == ["h002"]
    assert six.ranks.gpus.tolist() == [0, 1, 2, 3, 4, 5]
    assert two.cost_ms == pytest.approx(18.8 * 1000 / 450)
    assert two.method == "single_host"


def test_golden_tp_across_hosts_inside_an_nvl72_rack() -> None:
    # Racks of 4 hosts x 4 GPUs; TP8 spans two hosts of one rack. Free: rack0 h001-h003,
    # rack1 h005-h006. Four hosts are needed; each rack holds one TP pair.
    topo = nvl72(racks_per_leaf=2, leaves=1, hosts_per_rack=4)
    snap = free_hosts(topo, {"rack0.0": 3, "rack0.1": 2})
    p = _placed(place(snap, req(tp=8, dp=2)))

    assert p.spans["tp"] == {"host": 0, "rack": 2, "leaf": 0, "cluster": 0}
    rack = topo.index.ancestors[:, 1]
    assert rack[p.ranks.hosts[0]] == rack[p.ranks.hosts[7]]
    assert rack[p.ranks.hosts[8]] == rack[p.ranks.hosts[15]]
    assert rack[p.ranks.hosts[0]] != rack[p.ranks.hosts[8]]


# ---------------------------------------------------------------------------- hard rules


def test_rule_tp_groups_stay_in_one_host_and_ranks_are_rail_aligned() -> None:
    topo = fat_tree(2, 2, 4)
    p = _placed(place(Snapshot.empty(topo.index), req(tp=8, cp=2, dp=2, pp=2)))

    assert p.spans["tp"]["host"] == 8
    assert np.array_equal(p.ranks.gpus, np.arange(64) % 8)
    # Every non-TP peer of rank r sits on the same local GPU (same rail).
    assert p.ranks.gpus[3] == p.ranks.gpus[3 + 8] == p.ranks.gpus[3 + 16]


def test_rule_whole_free_hosts_only_for_jobs_of_a_host_or_more() -> None:
    topo = fat_tree(1, 2, 4)
    partial = [f"h00{i}:0" for i in (1, 2, 3, 5, 6, 7)]
    snap = snapshot(topo, busy_gpus=partial)
    p = _placed(place(snap, req(tp=8, dp=2)))

    assert sorted(_hosts(p, topo)) == ["h004", "h008"]
    counts = np.bincount(p.ranks.hosts, minlength=topo.index.num_hosts)
    assert set(counts[counts > 0].tolist()) == {8}


def test_rule_only_free_healthy_allowed_gpus() -> None:
    topo = fat_tree(1, 1, 4)
    snap = snapshot(topo, busy_hosts=["h001"], down=["h002"])
    p = _placed(place(snap, req(tp=8, excluded_hosts=frozenset({"h003"}))))

    assert _hosts(p, topo) == ["h004"]
    gpu_ids = p.ranks.global_gpu_ids(topo.index)
    assert not snap.busy[gpu_ids].any()


def test_rule_multi_host_jobs_use_hosts_of_the_common_size() -> None:
    topo = Topology.from_spec(mixed_hosts())
    snap = snapshot(topo, busy_hosts=["h001"])
    sub = _placed(place(snap, req(tp=4)))
    whole = place(snap, req(tp=8, dp=2))

    assert _hosts(sub, topo) == ["h003"]  # best fit: the 4-GPU host fits exactly
    assert sorted(_hosts(_placed(whole), topo)) == ["h002", "h004"]


def test_rule_required_tier_changes_the_answer() -> None:
    # TP8 DP2 PP2 (4 hosts), pod0 has 2 free hosts and pod1 3. Cheapest: two hosts per pod,
    # DP inside pods, PP across: 526.22 + 376 + 149.8. With PP required inside a pod, PP
    # lines are nested innermost instead and DP crosses: 526.22 + 2632 + 21.4.
    topo = fat_tree(2, 1, 4)
    snap = free_hosts(topo, {"leaf0.0": 2, "leaf1.0": 3})
    free = _placed(place(snap, req(tp=8, dp=2, pp=2)))
    kept = _placed(place(snap, req(tp=8, dp=2, pp=2, required_tier={"pp": "pod"})))

    assert free.cost_ms == pytest.approx(TP + DP_POD + PP_CROSS)
    assert kept.cost_ms == pytest.approx(TP + DP_CROSS + PP_POD)
    assert kept.spans["pp"]["cluster"] == 0


def test_rule_max_leaves_is_honoured_even_at_a_higher_cost() -> None:
    # pod0: four leaves with one free host each (4 hosts); pod1: one leaf with 3. Uncapped,
    # TP8 DP2 PP2 fits pod0 (4 leaves). With at most 2 leaves it must take pod1's 3 hosts
    # plus one more, found by CP-SAT (greedy best fit picks pod0 and breaks the cap).
    topo = tree([[4, 4, 4, 4], [4]])
    keep = {"leaf0.0": 1, "leaf0.1": 1, "leaf0.2": 1, "leaf0.3": 1, "leaf1.0": 3}
    snap = free_hosts(topo, keep)
    free = _placed(place(snap, req(tp=8, dp=2, pp=2)))
    capped = _placed(place(snap, req(tp=8, dp=2, pp=2, max_leaves=2)))

    assert free.cost_ms == pytest.approx(TP + DP_POD + PP_POD)
    assert len(free.domains["leaf"]) == 4
    assert len(capped.domains["leaf"]) <= 2
    assert capped.method == "cpsat"
    assert capped.cost_ms > free.cost_ms


# ---------------------------------------------------------------------------- failures


def test_failure_insufficient_gpus() -> None:
    topo = fat_tree(1, 1, 2)
    f = _failed(place(snapshot(topo, busy_hosts=["h001"]), req(tp=8, dp=2)))

    assert f.reason is FailureReason.INSUFFICIENT_GPUS
    assert f.counts == {"needed_gpus": 16, "free_gpus": 8}


def test_failure_insufficient_free_hosts() -> None:
    topo = fat_tree(1, 1, 3)
    f = _failed(place(snapshot(topo, busy_gpus=["h001:0", "h002:7"]), req(tp=8, dp=2)))

    assert f.reason is FailureReason.INSUFFICIENT_FREE_HOSTS
    assert f.counts == {"needed_hosts": 2, "free_hosts": 1, "free_gpus": 22}


def test_failure_no_nvlink_domain_for_a_small_job() -> None:
    topo = fat_tree(1, 1, 2)
    busy = [f"h00{h}:{g}" for h in (1, 2) for g in range(5)]
    f = _failed(place(snapshot(topo, busy_gpus=busy), req(tp=4)))

    assert f.reason is FailureReason.NO_NVLINK_DOMAIN_FOR_TP
    assert f.counts == {"needed_gpus": 4, "most_free_on_one_host": 3}


def test_failure_no_nvlink_domain_for_tp_across_hosts() -> None:
    topo = nvl72(racks_per_leaf=2, leaves=1, hosts_per_rack=4)
    snap = free_hosts(topo, {"rack0.0": 3, "rack0.1": 1})
    f = _failed(place(snap, req(tp=8, dp=2)))

    assert f.reason is FailureReason.NO_NVLINK_DOMAIN_FOR_TP
    assert f.counts == {"needed_blocks": 2, "available_blocks": 1}


def test_failure_required_tier_impossible() -> None:
    topo = fat_tree(1, 2, 4)
    snap = free_hosts(topo, {"leaf0.0": 3, "leaf0.1": 3})
    ok = place(snap, req(tp=8, dp=4))
    f = _failed(place(snap, req(tp=8, dp=4, required_tier={"dp": "leaf"})))

    assert isinstance(ok, Placement)
    assert f.reason is FailureReason.REQUIRED_TIER_IMPOSSIBLE
    assert f.counts == {"needed_blocks": 1, "available_blocks": 0, "block_hosts": 4}


def test_failure_too_many_leaves() -> None:
    topo = fat_tree(1, 4, 2)
    f = _failed(place(Snapshot.empty(topo.index), req(tp=8, dp=4, max_leaves=1)))

    assert f.reason is FailureReason.TOO_MANY_LEAVES
    assert f.counts == {"max_leaves": 1, "hosts_in_best_leaves": 2, "needed_hosts": 4}


def test_failure_no_solution_in_time_when_the_solver_may_not_run() -> None:
    topo = tree([[4, 4, 4, 4], [4]])
    keep = {"leaf0.0": 1, "leaf0.1": 1, "leaf0.2": 1, "leaf0.3": 1, "leaf1.0": 3}
    params = PlacementParams.bandwidth_only(use_cpsat=False)
    f = _failed(place(free_hosts(topo, keep), req(tp=8, dp=2, pp=2, max_leaves=2), params))

    assert f.reason is FailureReason.NO_SOLUTION_IN_TIME


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"tp": 16}, "tp_exceeds_nvlink_domain"),
        ({"tp": 3, "dp": 8}, "nvlink_group_misaligned"),
        ({"tp": 8, "ep": 2, "nvlink_dims": frozenset({"ep"})}, "nvlink_group_too_large"),
        ({"tp": 8, "dp": 2, "required_tier": {"dp": "host"}}, "group_exceeds_host"),
        ({"tp": 8, "required_tier": {"dp": "spine"}}, "unknown_tier"),
    ],
)
def test_bad_requests_raise_with_stable_reasons(kwargs: dict[str, object], reason: str) -> None:
    topo = fat_tree(1, 2, 4)
    with pytest.raises(InvalidInputError) as caught:
        place(Snapshot.empty(topo.index), req(**kwargs))

    assert caught.value.reason == reason


def test_unknown_excluded_host_is_bad_input() -> None:
    topo = fat_tree(1, 1, 2)
    with pytest.raises(UnknownHostError) as caught:
        place(Snapshot.empty(topo.index), req(tp=8, excluded_hosts=frozenset({"nope"})))

    assert caught.value.reason == "unknown_host"


def test_invalid_request_error_is_bad_input() -> None:
    assert issubclass(InvalidRequestError, InvalidInputError)


# ---------------------------------------------------------------------------- solver


def test_timeout_still_returns_a_placement() -> None:
    topo = fat_tree(4, 4, 8)
    rng = np.random.default_rng(3)
    busy = np.repeat(rng.random(topo.index.num_hosts) < 0.4, 8)
    params = PlacementParams.bandwidth_only(
        time_limit_s=1e-6, fast_path_max_hosts=0, prove_count_model=True
    )
    p = _placed(place(Snapshot(topo.index, busy), req(tp=8, dp=8, pp=4), params))

    assert len(p.ranks) == 256
    assert {m.status for m in p.solver.models} <= {
        SolveStatus.SKIPPED,
        SolveStatus.UNKNOWN,
        SolveStatus.OPTIMAL,
        SolveStatus.FEASIBLE,
    }
    assert p.cost_ms >= p.lower_bound.total_ms - 1e-9


def test_cpsat_proves_the_count_model_on_request_and_reports_its_bound() -> None:
    topo = fat_tree(4, 4, 8)
    rng = np.random.default_rng(5)
    busy = np.repeat(rng.random(topo.index.num_hosts) < 0.5, 8)
    snap = Snapshot(topo.index, busy)
    params = PlacementParams.bandwidth_only(prove_count_model=True)
    p = _placed(place(snap, req(tp=8, dp=8, pp=4), params))
    plain = _placed(place(snap, req(tp=8, dp=8, pp=4)))

    assert p.solver.status in {"optimal", "feasible"}
    assert p.solver.bound_ms is not None
    assert p.solver.objective_ms is not None
    assert p.solver.bound_ms <= p.solver.objective_ms + 1e-9
    assert p.cost_ms <= min(p.candidates["best_fit"], p.candidates["first_fit"]) + 1e-9
    # Without a leaf cap the recursion is exact for the same objective: the same answer.
    assert plain.solver.status == "not_run"
    assert plain.cost_ms == pytest.approx(p.cost_ms)
