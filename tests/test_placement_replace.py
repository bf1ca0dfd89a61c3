"""Partial re-placement (:func:`placement.replace.replace`): hand-worked cases and properties.

Properties over random small clusters and jobs: the result is a valid placement on the cluster
with the job's own GPUs free again; with the ``partial`` method every rank on a surviving host
keeps its GPU and the vacated hosts' ranks move whole to hosts that were free; the cost is
never more than the threshold above a full re-placement; the input is not mutated.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from placement_builders import tree
from placement_reference import group_span, megatron_groups
from test_placement_properties import clusters, requests

from placement import (
    DIMS,
    Parallelism,
    Placement,
    PlacementFailure,
    PlacementParams,
    PlacementRequest,
    RankTable,
    Snapshot,
    place,
)
from placement.context import common_gpus_per_host
from placement.replace import Replacement, ReplaceMethod, replace
from topology.errors import InvalidInputError
from topology.model import Topology

PARAMS = PlacementParams(time_limit_s=0.5)


def _job(topo: Topology, snap: Snapshot, request: PlacementRequest) -> Placement:
    placed = place(snap, request, PARAMS)
    assert isinstance(placed, Placement)
    return placed


def _table(topo: Topology, names: list[str], gpus: int = 8) -> RankTable:
    """Whole hosts in the given order, ranks in order (rail-aligned)."""
    hosts = [topo.index.host_id(n) for n in names]
    return RankTable(np.repeat(hosts, gpus), np.tile(np.arange(gpus), len(hosts)))


def _running(snap: Snapshot, ranks: RankTable, down: list[int]) -> Snapshot:
    """The cluster with the job running on its GPUs and ``down`` out of service."""
    busy = snap.busy.copy()
    busy[ranks.global_gpu_ids(snap.index)] = True
    return Snapshot(snap.index, busy, snap.unavailable | frozenset(down))


def _names(topo: Topology, hosts: list[int]) -> list[str]:
    return [topo.index.host_names[h] for h in hosts]


def _dp(gpus: int, tp: int = 8) -> PlacementRequest:
    return PlacementRequest(gpus=gpus, parallelism=Parallelism(tp=tp, dp=gpus // tp))


def test_a_failed_host_is_replaced_in_its_own_leaf_and_nothing_else_moves() -> None:
    topo = tree([[5, 4], [4]])
    index = topo.index
    snap = Snapshot.build(index, [])
    table = _table(topo, ["h001", "h002", "h003", "h004"])
    victim = index.host_id("h002")

    out = replace(_running(snap, table, [victim]), _dp(32), table, [victim])

    assert isinstance(out, Replacement)
    assert out.method == ReplaceMethod.PARTIAL
    assert _names(topo, list(out.moves.values())) == ["h005"]
    survivors = table.hosts != victim
    assert np.array_equal(out.ranks.hosts[survivors], table.hosts[survivors])
    assert np.array_equal(out.ranks.gpus, table.gpus)
    assert out.ranks_moved == 8
    assert out.cost_ms == pytest.approx(out.cost_before_ms)


def test_the_same_leaf_beats_the_same_pod_and_a_spare_wins_a_tie() -> None:
    topo = tree([[5, 4], [4]])
    index = topo.index
    snap = Snapshot.build(index, [])
    table = _table(topo, ["h001", "h002", "h003", "h004"])
    request = _dp(32)
    victim = index.host_id("h001")
    h005, h006, h007 = (index.host_id(n) for n in ("h005", "h006", "h007"))

    running = _running(snap, table, [victim])
    near = replace(running, request, table, [victim], spares=[h007])
    assert isinstance(near, Replacement)
    assert near.moves == {victim: h005}
    assert near.spares_used == ()

    leaf_busy = Snapshot(index, running.busy, running.unavailable | {h005})
    spare = replace(leaf_busy, request, table, [victim], spares=[h007])
    assert isinstance(spare, Replacement)
    assert spare.moves == {victim: h007}
    assert spare.spares_used == (h007,)
    plain = replace(leaf_busy, request, table, [victim])
    assert isinstance(plain, Replacement)
    assert plain.moves == {victim: h006}, "best fit without spares: the lowest id of the leaf"


def test_a_full_re_placement_wins_when_the_partial_one_is_much_worse() -> None:
    # The job fills leaf 0.0 and leaf 0.1 is busy: its only free replacement is in the other
    # pod, whose leaf of 4 hosts can hold the whole job.
    topo = tree([[4, 1], [4]])
    index = topo.index
    snap = Snapshot.build(index, ["h005"])
    table = _table(topo, ["h001", "h002", "h003", "h004"])
    request = _dp(32)
    victim = index.host_id("h002")
    running = _running(snap, table, [victim])

    out = replace(running, request, table, [victim])
    assert isinstance(out, Replacement)
    assert out.method == ReplaceMethod.FULL
    assert _names(topo, sorted(set(out.ranks.hosts.tolist()))) == ["h006", "h007", "h008", "h009"]
    assert out.full_cost_ms is not None
    assert out.cost_ms == out.full_cost_ms
    assert out.lower_bound_ms is not None
    assert out.cost_ms >= out.lower_bound_ms - 1e-9

    never_full = replace(running, request, table, [victim], full_threshold=1e9)
    assert isinstance(never_full, Replacement)
    assert never_full.method == ReplaceMethod.PARTIAL
    assert never_full.cost_ms > out.cost_ms


def test_several_hosts_are_repaired_together() -> None:
    topo = tree([[4, 4], [4, 4]])
    index = topo.index
    snap = Snapshot.build(index, [])
    placed = _job(topo, snap, _dp(48))
    hosts = sorted(set(placed.ranks.hosts.tolist()))
    gone = hosts[:2]

    out = replace(_running(snap, placed.ranks, gone), placed.request, placed.ranks, gone)
    assert isinstance(out, Replacement)
    assert out.method == ReplaceMethod.PARTIAL
    assert sorted(out.moves) == gone
    assert len(set(out.moves.values())) == 2
    assert not set(out.moves.values()) & set(hosts)
    assert out.ranks_moved == 16


def test_nothing_free_is_a_failure_with_a_reason() -> None:
    topo = tree([[4]])
    snap = Snapshot.build(topo.index, [])
    placed = _job(topo, snap, _dp(32))
    victim = int(placed.ranks.hosts[0])

    out = replace(_running(snap, placed.ranks, [victim]), placed.request, placed.ranks, [victim])
    assert isinstance(out, PlacementFailure)
    assert out.reason.value == "insufficient_gpus"


def test_nothing_to_vacate_changes_nothing() -> None:
    topo = tree([[4]])
    snap = Snapshot.build(topo.index, [])
    placed = _job(topo, snap, _dp(16))
    out = replace(_running(snap, placed.ranks, []), placed.request, placed.ranks, [])
    assert isinstance(out, Replacement)
    assert out.method == ReplaceMethod.UNCHANGED
    assert out.ranks is placed.ranks


def test_bad_input_is_refused_with_a_reason() -> None:
    topo = tree([[4]])
    snap = Snapshot.build(topo.index, [])
    placed = _job(topo, snap, _dp(16))
    unused = next(h for h in range(4) if h not in set(placed.ranks.hosts.tolist()))
    running = _running(snap, placed.ranks, [])

    with pytest.raises(InvalidInputError) as stray:
        replace(running, placed.request, placed.ranks, [unused])
    with pytest.raises(InvalidInputError) as short:
        replace(running, _dp(24), placed.ranks, [int(placed.ranks.hosts[0])])
    assert stray.value.reason == "host_not_in_job"
    assert short.value.reason == "rank_table_mismatch"


SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(st.data())
def test_replacements_are_valid_keep_survivors_and_stay_near_a_full_re_placement(
    data: st.DataObject,
) -> None:
    topo, snap = data.draw(clusters())
    request = data.draw(requests(topo))
    try:
        placed = place(snap, request, PARAMS)
    except InvalidInputError:
        return
    if not isinstance(placed, Placement):
        return
    job_hosts = sorted(set(placed.ranks.hosts.tolist()))
    gone = data.draw(st.lists(st.sampled_from(job_hosts), min_size=1, unique=True))
    spares = data.draw(st.sets(st.integers(0, topo.index.num_hosts - 1), max_size=3))
    running = _running(snap, placed.ranks, gone)
    before = running.busy.copy()

    out = replace(running, request, placed.ranks, gone, spares=spares, params=PARAMS)

    assert np.array_equal(running.busy, before), "the snapshot changed"
    event(out.method if isinstance(out, Replacement) else out.reason.value)
    if isinstance(out, PlacementFailure):
        assert out.message
        return
    freed = Snapshot(topo.index, snap.busy, running.unavailable)
    check_rank_table(freed, request, out.ranks)
    assert not set(out.ranks.hosts.tolist()) & set(gone)
    if out.method == ReplaceMethod.PARTIAL:
        kept = ~np.isin(placed.ranks.hosts, gone)
        assert np.array_equal(out.ranks.hosts[kept], placed.ranks.hosts[kept])
        assert np.array_equal(out.ranks.gpus, placed.ranks.gpus)
        assert sorted(out.moves) == sorted(gone)
        assert not set(out.moves.values()) & set(job_hosts)
        assert freed.whole_free_hosts[list(out.moves.values())].all()
    if out.full_cost_ms is not None:
        assert out.cost_ms <= 1.10 * out.full_cost_ms + 1e-6


def check_rank_table(snap: Snapshot, request: PlacementRequest, ranks: RankTable) -> None:
    """The hard rules of a rank table, from independent definitions."""
    index = snap.index
    par = request.par
    n = request.gpus
    g = common_gpus_per_host(index)
    gpu_ids = ranks.global_gpu_ids(index)
    assert len(ranks) == n
    assert len(set(gpu_ids.tolist())) == n, "a GPU is used twice"
    assert not snap.busy[gpu_ids].any(), "a busy GPU is used"
    assert snap.available_hosts[ranks.hosts].all(), "an unavailable host is used"
    assert not {index.host_names[h] for h in ranks.hosts.tolist()} & request.excluded_hosts
    if n >= g:
        assert np.array_equal(ranks.gpus, np.arange(n) % g), "rail alignment"
    anc = index.ancestors.tolist()
    hosts = ranks.hosts.tolist()
    for dim in DIMS:
        if par.sizes[dim] == 1:
            continue
        spans = [group_span(anc, [hosts[r] for r in grp]) for grp in megatron_groups(par, dim)]
        if dim in request.nvlink_dims:
            assert max(spans) <= index.nvlink_level, f"{dim} group outside NVLink"
        if dim in request.required_tier:
            assert max(spans) <= index.level(request.required_tier[dim])
    if request.max_leaves is not None and index.cluster_level > 1:
        assert np.unique(index.ancestors[ranks.hosts, 1]).size <= request.max_leaves
