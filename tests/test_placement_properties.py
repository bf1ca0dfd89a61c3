"""Property tests of place() on random small topologies, occupancies and job shapes.

Every placement must be valid (no GPU twice, only free healthy allowed GPUs, whole hosts and
rail alignment for jobs of a host or more, NVLink-bound groups inside one NVLink domain,
required tiers and leaf caps kept, a complete rank table), its cost must equal the cost
recomputed here from independently enumerated groups and be at least the lower bound and at
most either baseline; the input snapshot must be unchanged; the same seed must give the same
answer. Failures must say why, consistently with the snapshot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_builders import tree
from placement_reference import group_span, megatron_groups

from placement import (
    DIMS,
    FailureReason,
    Parallelism,
    Placement,
    PlacementFailure,
    PlacementParams,
    PlacementRequest,
    Snapshot,
    place,
)
from placement.context import common_gpus_per_host
from placement.volumes import dimension_messages, dimension_volumes_gb
from topology.errors import InvalidInputError
from topology.index import TopologyIndex
from topology.model import Topology

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PARAMS = PlacementParams(time_limit_s=0.5)
KNOWN_BAD_INPUT = {
    "nvlink_group_misaligned",
    "nvlink_group_too_large",
    "tp_exceeds_nvlink_domain",
    "group_exceeds_host",
}


@st.composite
def clusters(draw: st.DrawFn) -> tuple[Topology, Snapshot]:
    """A random tree (1-3 switch tiers) with random busy GPUs and hosts out of service."""
    depth = draw(st.integers(1, 3))
    gpus = draw(st.sampled_from([4, 8]))

    def node(level: int) -> Any:
        if level == 1:
            return draw(st.integers(1, 5))
        return [node(level - 1) for _ in range(draw(st.integers(1, 3)))]

    shape = [node(depth) for _ in range(draw(st.integers(1, 3)))]
    topo = tree(shape, gpus=gpus)
    index = topo.index
    hosts = index.num_hosts
    state = draw(st.lists(st.sampled_from("fffffbpd"), min_size=hosts, max_size=hosts))
    busy = np.zeros(index.num_gpus, dtype=np.bool_)
    down = set()
    for h, s in enumerate(state):
        first = int(index.gpu_offset[h])
        if s == "b":
            busy[first : first + gpus] = True
        elif s == "p":
            picks = draw(st.lists(st.integers(0, gpus - 1), min_size=1, max_size=gpus - 1))
            busy[[first + g for g in picks]] = True
        elif s == "d":
            down.add(h)
    return topo, Snapshot(index, busy, frozenset(down))


@st.composite
def requests(draw: st.DrawFn, topo: Topology) -> PlacementRequest:
    """A random job: sizes, order and convention, optional tiers, caps and exclusions."""
    g = common_gpus_per_host(topo.index)
    tp = draw(st.sampled_from([d for d in (1, 2, 4, 8) if g % d == 0]))
    sizes = {"tp": tp}
    for dim in ("cp", "ep", "dp", "pp"):
        sizes[dim] = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))
    for dim in ("dp", "cp", "ep"):
        if np.prod(list(sizes.values())) > 96:
            sizes[dim] = 1
    rest = draw(st.permutations(["cp", "ep", "dp", "pp"]))
    order = ["tp", *rest] if draw(st.integers(0, 5)) else draw(st.permutations(list(DIMS)))
    convention = draw(st.sampled_from(["megatron", "row_major"]))
    if convention == "row_major":
        order = order[::-1]
    par = Parallelism(**sizes, order="-".join(order), order_convention=convention)
    names = topo.index.level_names
    required = draw(
        st.dictionaries(st.sampled_from(["cp", "dp", "pp"]), st.sampled_from(names[1:]), max_size=2)
    )
    nvlink = draw(st.sampled_from([(), (), (), ("ep",), ("cp",)]))
    cap = draw(st.none() | st.integers(1, 4))
    excluded = draw(st.sets(st.sampled_from(topo.index.host_names), max_size=2))
    return PlacementRequest(
        gpus=par.world_size,
        parallelism=par,
        required_tier=required,
        nvlink_dims=frozenset(nvlink) | {"tp"},
        max_leaves=cap,
        excluded_hosts=frozenset(excluded),
    )


def _usable(snap: Snapshot, request: PlacementRequest) -> np.ndarray:
    index = snap.index
    excluded = np.array([n in request.excluded_hosts for n in index.host_names])
    return snap.available_hosts & ~excluded


def _costs_by_formula(
    index: TopologyIndex, par: Parallelism, params: PlacementParams
) -> dict[str, np.ndarray]:
    """``C_d(l) = e_d * (V_d * kappa_l * 1000 / BW_l + M_d * lambda_l / 1000)`` written out."""
    volumes = dimension_volumes_gb(par.sizes)
    messages = dimension_messages(par.sizes)
    out: dict[str, np.ndarray] = {}
    for dim in DIMS:
        row = []
        for level in range(index.num_levels):
            kappa = params.ecmp_contention if level > index.nvlink_level + 1 else 1.0
            seconds_per_gb = kappa / float(index.bandwidth_gbytes_per_s[level])
            latency_ms = float(index.latency_us[level]) / 1000.0
            row.append(volumes[dim] * seconds_per_gb * 1000 + messages[dim] * latency_ms)
        out[dim] = params.exposure_of(dim) * np.array(row)
    return out


def check_placement(snap: Snapshot, request: PlacementRequest, p: Placement) -> None:
    """Every invariant of a placement, checked against independent definitions."""
    index = snap.index
    par = request.par
    n = request.gpus
    g = common_gpus_per_host(index)
    usable = _usable(snap, request)
    assert len(p.ranks) == n
    gpu_ids = p.ranks.global_gpu_ids(index)
    assert len(set(gpu_ids.tolist())) == n, "a GPU is used twice"
    assert not snap.busy[gpu_ids].any(), "a busy GPU is used"
    assert usable[p.ranks.hosts].all(), "an unavailable or excluded host is used"
    assert (p.ranks.gpus < index.host_gpus[p.ranks.hosts]).all()
    if n >= g:
        used = np.unique(p.ranks.hosts)
        assert snap.whole_free_hosts[used].all(), "multi-host jobs need whole free hosts"
        assert (index.host_gpus[used] == g).all()
        assert np.array_equal(p.ranks.gpus, np.arange(n) % g), "rail alignment"
    else:
        assert np.unique(p.ranks.hosts).size == 1
    anc = index.ancestors.tolist()
    hosts = p.ranks.hosts.tolist()
    costs = _costs_by_formula(index, par, PARAMS)
    expected_cost = 0.0
    for dim in DIMS:
        if par.sizes[dim] == 1:
            continue
        spans = [group_span(anc, [hosts[r] for r in grp]) for grp in megatron_groups(par, dim)]
        assert p.spans[dim] == {
            index.level_names[lv]: spans.count(lv) for lv in range(index.num_levels)
        }
        if dim in request.nvlink_dims:
            assert max(spans) <= index.nvlink_level, f"{dim} group outside NVLink"
        if dim in request.required_tier:
            assert max(spans) <= index.level(request.required_tier[dim])
        expected_cost += float(np.mean(costs[dim][spans]))
    assert p.cost_ms == np.float64(expected_cost) or abs(p.cost_ms - expected_cost) < 1e-6
    assert p.cost_ms >= p.lower_bound.total_ms - 1e-6
    assert p.lower_bound.total_ms >= p.lower_bound.ideal_ms - 1e-6
    if request.max_leaves is not None and index.cluster_level > 1:
        assert np.unique(index.ancestors[p.ranks.hosts, 1]).size <= request.max_leaves
    for name in ("best_fit", "first_fit"):
        if name in p.candidates:
            assert p.cost_ms <= p.candidates[name] + 1e-6


def check_failure(snap: Snapshot, request: PlacementRequest, f: PlacementFailure) -> None:
    """A failure's reason agrees with the snapshot."""
    usable = _usable(snap, request)
    free = int(snap.free_gpus_per_host[usable].sum())
    if f.reason is FailureReason.INSUFFICIENT_GPUS:
        assert free < request.gpus
    else:
        assert free >= request.gpus
    if f.reason is FailureReason.INSUFFICIENT_FREE_HOSTS:
        g = common_gpus_per_host(snap.index)
        whole = snap.whole_free_hosts & usable & (snap.index.host_gpus == g)
        assert int(whole.sum()) * g < request.gpus
    assert f.message


@SETTINGS
@given(st.data())
def test_every_placement_is_valid_and_deterministic(data: st.DataObject) -> None:
    topo, snap = data.draw(clusters())
    request = data.draw(requests(topo))
    before = snap.busy.copy()
    try:
        first = place(snap, request, PARAMS)
    except InvalidInputError as exc:
        rejected = exc.reason
    else:
        rejected = None
    if rejected is not None:
        assert rejected in KNOWN_BAD_INPUT
        return
    assert np.array_equal(snap.busy, before), "the snapshot changed"
    if isinstance(first, PlacementFailure):
        check_failure(snap, request, first)
        return
    check_placement(snap, request, first)
    again = place(snap, request, PARAMS)
    assert isinstance(again, Placement)
    assert np.array_equal(again.ranks.hosts, first.ranks.hosts)
    assert np.array_equal(again.ranks.gpus, first.ranks.gpus)
    assert again.cost_ms == first.cost_ms


@SETTINGS
@given(st.data(), st.integers(0, 3))
def test_cpsat_path_is_valid_and_same_seed_same_answer(data: st.DataObject, seed: int) -> None:
    topo, snap = data.draw(clusters())
    request = data.draw(requests(topo))
    params = PlacementParams(
        time_limit_s=0.5, fast_path_max_hosts=0, random_seed=seed, prove_count_model=True
    )
    try:
        first = place(snap, request, params)
    except InvalidInputError:
        return
    if isinstance(first, PlacementFailure):
        check_failure(snap, request, first)
        return
    check_placement(snap, request, first)
    again = place(snap, request, params)
    assert isinstance(again, Placement)
    assert np.array_equal(again.ranks.hosts, first.ranks.hosts)
    assert again.solver.status == first.solver.status


def test_the_caller_array_is_copied_into_the_snapshot() -> None:
    topo = tree([[2, 2]])
    busy = np.zeros(topo.index.num_gpus, dtype=np.bool_)
    snap = Snapshot(topo.index, busy)
    busy[:] = True

    assert not snap.busy.any()
    assert not snap.busy.flags.writeable
