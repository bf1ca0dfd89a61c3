"""Placement policies the simulator compares, as placers for the core's placement seam.

``firsthop`` is ``placement.place`` itself.

A policy label is ``NAME[:REPAIR]``: ``REPAIR`` is how a running job that loses a host comes
back. ``queue`` (the default, so that only placement differs between policies) sends it
through the core's failure path into the queue; ``in-place`` turns on the core's in-place
repair (:mod:`scheduler.core.repair`: only the lost hosts' ranks move, to spare or free hosts,
in the same event) and marks ``SimConfig.spares_per_leaf`` hosts of every leaf as the spare
pool. In-place repairs use the core's partial re-placement whatever the policy's placer;
the peers requeue (Slurm ``--requeue``, Kueue evicting the workload), so ``in-place`` is
meant for ``firsthop``. ``firsthop:in-place,firsthop:queue`` compares the two on the same
arrivals and failures. The baselines (:mod:`scheduler.sim.baselines`)
choose hosts and rank order by their own rules; this module turns that choice into the
:class:`~placement.Placement` the core admits:

- the request is first validated by the real placer on a snapshot where only the chosen
  hosts are available (so the hard rules, TP inside the NVLink domain and whole hosts, are
  checked by the same code, and the result carries the lower bound and ``ideal_ms``);
- its rank table is then replaced by the baseline's (rank ``r`` on GPU ``r mod G`` of the
  baseline's ``r div G``-th host), and its cost recomputed under the placer's own cost model
  (:mod:`scheduler.sim.costing`).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from placement import (
    FailureReason,
    Placement,
    PlacementFailure,
    PlacementParams,
    PlacementRequest,
    RankTable,
    Snapshot,
)
from placement import place as run_placer
from scheduler.core.capacity import common_gpus_per_host
from scheduler.core.cycle import Placer
from scheduler.sim import baselines
from scheduler.sim.costing import rank_cost
from topology.errors import InvalidInputError
from topology.index import BoolArray, IntArray, TopologyIndex

HostsRule = Callable[[TopologyIndex, BoolArray, int], IntArray | None]
HostRule = Callable[[TopologyIndex, IntArray, BoolArray, int], int | None]

FIRSTHOP = "firsthop"
POLICIES = (FIRSTHOP, "slurm-tree", "kueue-tas", "first-fit")
REPAIR_QUEUE = "queue"
REPAIR_IN_PLACE = "in-place"
REPAIRS = (REPAIR_QUEUE, REPAIR_IN_PLACE)


def split_policy(label: str) -> tuple[str, str]:
    """``NAME[:REPAIR]`` -> (policy name, repair mode); the mode defaults to ``queue``.

    Raises:
        InvalidInputError: ``unknown_policy`` for an unknown name, ``unknown_repair`` for an
            unknown repair mode.
    """
    name, sep, repair = label.partition(":")
    name, repair = name.strip(), repair.strip() if sep else REPAIR_QUEUE
    if repair not in REPAIRS:
        raise InvalidInputError(
            f"policy {label!r}: unknown repair mode {repair!r} (modes: {', '.join(REPAIRS)})",
            reason="unknown_repair",
        )
    placer_for(name)
    return name, repair


def baseline_placer(name: str, hosts_rule: HostsRule, host_rule: HostRule) -> Placer:
    """A placer that places by ``hosts_rule`` (whole hosts) and ``host_rule`` (one host)."""

    def place(
        snapshot: Snapshot, request: PlacementRequest, params: PlacementParams
    ) -> Placement | PlacementFailure:
        index = snapshot.index
        g = common_gpus_per_host(index)
        excluded = np.zeros(index.num_hosts, dtype=np.bool_)
        for host_name in request.excluded_hosts:
            if host_name in index.host_ids:
                excluded[index.host_ids[host_name]] = True
        usable = snapshot.available_hosts & ~excluded
        quick = params.model_copy(update={"use_cpsat": False, "try_transposed_layout": False})
        if request.gpus < g:
            host = host_rule(index, snapshot.free_gpus_per_host, usable, request.gpus)
            if host is None:
                return _failure(FailureReason.INSUFFICIENT_GPUS, name, request)
            result = run_placer(_only(snapshot, np.array([host])), request, quick)
            return replace(result, method=name) if isinstance(result, Placement) else result
        if request.gpus % g:
            return run_placer(snapshot, request, quick)  # raises the placer's own error
        count = request.gpus // g
        eligible = usable & snapshot.whole_free_hosts & (index.host_gpus == g)
        hosts = hosts_rule(index, eligible, count)
        if hosts is None:
            reason = (
                FailureReason.INSUFFICIENT_FREE_HOSTS
                if int(eligible.sum()) < count
                else FailureReason.REQUIRED_TIER_IMPOSSIBLE
            )
            return _failure(reason, name, request)
        result = run_placer(_only(snapshot, hosts), request, quick)
        if not isinstance(result, Placement):
            return result
        rank_hosts = np.repeat(hosts, g)
        ranks = RankTable(rank_hosts, np.tile(np.arange(g, dtype=np.int64), count))
        cost = rank_cost(index, request, params, rank_hosts)
        return replace(
            result,
            ranks=ranks,
            hosts=hosts,
            cost_ms=cost.cost_ms,
            cost_by_dim_ms=cost.by_dim_ms,
            spans=cost.spans,
            method=name,
            candidates={name: cost.cost_ms},
        )

    return place


def _only(snapshot: Snapshot, hosts: IntArray) -> Snapshot:
    """``snapshot`` with every host but ``hosts`` unavailable."""
    keep = set(hosts.tolist())
    down = frozenset(h for h in range(snapshot.index.num_hosts) if h not in keep)
    return Snapshot(snapshot.index, snapshot.busy, down)


def _failure(reason: FailureReason, name: str, request: PlacementRequest) -> PlacementFailure:
    return PlacementFailure(
        reason, f"{name}: no room for {request.gpus} GPUs", {"needed_gpus": request.gpus}, 0.0
    )


def placer_for(name: str) -> Placer:
    """The placer of policy ``name``.

    Raises:
        InvalidInputError: ``unknown_policy``.
    """
    if name == FIRSTHOP:
        return run_placer
    rules: dict[str, tuple[HostsRule, HostRule]] = {
        "slurm-tree": (baselines.slurm_tree_hosts, baselines.slurm_tree_host),
        "kueue-tas": (baselines.kueue_tas_hosts, baselines.kueue_tas_host),
        "first-fit": (baselines.first_fit_hosts, baselines.first_fit_host),
    }
    if name not in rules:
        raise InvalidInputError(
            f"unknown policy {name!r} (policies: {', '.join(POLICIES)})", reason="unknown_policy"
        )
    return baseline_placer(name, *rules[name])


def parse_policies(text: str) -> list[str]:
    """``LABEL[,LABEL...]`` -> policy labels (``NAME[:REPAIR]``), checked and without repeats."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise InvalidInputError("no policy given", reason="unknown_policy")
    for name in names:
        split_policy(name)
    return names
