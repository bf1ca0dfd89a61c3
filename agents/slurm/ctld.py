"""The rank table of a Slurm allocation: firsthop's placement restricted to the allocated hosts.

Slurm picks the nodes; :func:`allocation_table` decides which rank runs on which GPU of them.
It builds a snapshot of the topology in which every host outside the allocation is out of
service and calls :func:`placement.place` with the job's parallelism and rank order, so the
engine's rules hold inside the allocation: TP groups inside one host (NVLink domain), rail
alignment (local GPU = rank mod G, each host one aligned block of consecutive ranks), and
DP/CP groups and pipeline neighbours under one leaf where the allocation allows. Slurm itself
numbers tasks in node-list order; :func:`slurm_order_cost` prices that order with the same
cost model, so every table records what the reordering saved.

Shapes: a job of ``N`` whole nodes of ``G`` GPUs must have ``tp*cp*ep*dp*pp == N*G``; a job
on one node may use fewer GPUs (ranks then map to the job's GPU ordinals ``0..W-1`` of
``CUDA_VISIBLE_DEVICES``, which Slurm chose). Anything else fails with a stable reason.

Must not import ``scheduler``, grpc or the generated protos (the ``--server`` publisher
does that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.slurm.comment import JobShape
from agents.slurm.state import HostSlice, JobTable
from placement import (
    InvalidRequestError,
    Parallelism,
    PlacementFailure,
    PlacementParams,
    PlacementRequest,
    Snapshot,
    place,
)
from placement.cost import cost_from_histograms, dimension_costs
from placement.ranks import span_histograms
from topology.errors import FirsthopError
from topology.model import Topology


class ShapeError(FirsthopError):
    """The job's parallelism cannot run on the nodes Slurm allocated.

    Stable reasons: ``unknown_node`` (a node the topology does not have),
    ``shape_mismatch`` (the sizes do not multiply to the allocated GPUs), ``invalid_comment``
    (the sizes or order are not a valid parallelism), or the placement failure's reason.
    """

    status_code = "FAILED_PRECONDITION"
    default_reason = "shape_mismatch"


@dataclass(frozen=True, slots=True)
class AllocationTable:
    """A computed table and how it compares with Slurm's own order.

    Attributes:
        table: what gets published.
        cost_ms: firsthop's communication cost per step (placement cost model).
        slurm_order_cost_ms: the same job numbered in Slurm's node-list order.
        solve_seconds: time in :func:`placement.place`.
    """

    table: JobTable
    cost_ms: float
    slurm_order_cost_ms: float
    solve_seconds: float


def master_port(job_id: str, base: int, span: int) -> int:
    """The job's rendezvous port: ``base + job_id % span`` (deterministic per job)."""
    digits = "".join(c for c in job_id if c.isdigit()) or "0"
    return base + int(digits) % max(span, 1)


def allocation_table(
    topology: Topology,
    job_id: str,
    nodes: Sequence[str],
    shape: JobShape,
    *,
    port_base: int = 20000,
    port_span: int = 10000,
    params: PlacementParams | None = None,
) -> AllocationTable:
    """Place the job on exactly ``nodes`` (Slurm's allocation, in node-list order).

    Raises:
        ShapeError: see the class.
    """
    index = topology.index
    unknown = [n for n in nodes if n not in topology.hosts]
    if unknown:
        raise ShapeError(
            f"nodes not in the firsthop topology: {', '.join(unknown[:5])}",
            reason="unknown_node",
        )
    if len(set(nodes)) != len(nodes) or not nodes:
        raise ShapeError(f"bad node list {list(nodes)[:5]}", reason="unknown_node")
    gpus_per_node = {topology.hosts[n].gpus for n in nodes}
    if len(gpus_per_node) != 1:
        raise ShapeError("the allocated nodes have different GPU counts", reason="shape_mismatch")
    g = gpus_per_node.pop()
    whole = len(nodes) * g
    try:
        sizes = shape.resolved(whole)
        par = (
            Parallelism(**sizes) if shape.order is None else Parallelism(**sizes, order=shape.order)
        )
    except (ValueError, InvalidRequestError) as exc:
        reason = getattr(exc, "reason", "invalid_comment")
        raise ShapeError(str(exc), reason=reason) from exc
    world = par.world_size
    if not (world == whole or (len(nodes) == 1 and world <= g)):
        raise ShapeError(
            f"tp*cp*ep*dp*pp = {world} GPUs, but Slurm allocated {len(nodes)} node(s) of {g} "
            f"GPUs ({whole}); ask for whole nodes (--gres=gpu:{g} or --exclusive)",
            reason="shape_mismatch",
        )
    allocated = np.zeros(index.num_hosts, dtype=np.bool_)
    ids = np.array([index.host_id(n) for n in nodes], dtype=np.int64)
    allocated[ids] = True
    snapshot = Snapshot(
        index,
        np.zeros(index.num_gpus, dtype=np.bool_),
        frozenset(np.flatnonzero(~allocated).tolist()),
    )
    try:
        request = PlacementRequest(gpus=world, parallelism=par)
        result = place(snapshot, request, params)
    except FirsthopError as exc:
        raise ShapeError(exc.message, reason=exc.reason) from exc
    if isinstance(result, PlacementFailure):
        raise ShapeError(result.message, reason=str(result.reason))
    if world < g:
        # One node, part of its GPUs: ranks run on the job's GPU ordinals 0..W-1 (Slurm
        # chose which physical GPUs; CUDA_VISIBLE_DEVICES renumbers them).
        hosts = np.full(world, ids[0], dtype=np.int64)
        gpus = np.arange(world, dtype=np.int64)
    else:
        hosts, gpus = result.ranks.hosts, result.ranks.gpus
    port = master_port(job_id, port_base, port_span)
    table = _table(topology, job_id=job_id, hosts=hosts, gpus=gpus, g=g, port=port, world=world)
    slurm_cost = slurm_order_cost(topology, nodes, request, params)
    meta: dict[str, Any] = {
        "world_size": world,
        "nnodes": len(nodes),
        "gpus_per_node": g,
        "parallelism": {**par.sizes, "order": par.order},
        "slurm_nodes": list(nodes),
        "node_order": [topology.index.host_names[h] for h in _node_order(hosts, g)],
        "cost_ms": result.cost_ms,
        "slurm_order_cost_ms": slurm_cost,
        "lower_bound_ms": result.lower_bound.total_ms,
        "solve_seconds": result.solve_seconds,
        "method": result.method,
    }
    return AllocationTable(
        JobTable(job_id, table, meta), result.cost_ms, slurm_cost, result.solve_seconds
    )


def slurm_order_cost(
    topology: Topology,
    nodes: Sequence[str],
    request: PlacementRequest,
    params: PlacementParams | None = None,
) -> float:
    """Cost (ms per step) of numbering ranks in Slurm's node-list order.

    Slurm gives task ``r`` the ``r // G``-th node of the list and, with one task per GPU,
    local GPU ``r mod G``.
    """
    index = topology.index
    g = topology.hosts[nodes[0]].gpus
    ids = np.array([index.host_id(n) for n in nodes], dtype=np.int64)
    world = request.gpus
    rank_hosts = ids[np.arange(world) // g] if world >= g else np.full(world, ids[0])
    histograms = span_histograms(index, request.par, rank_hosts)
    costs = dimension_costs(index, request, params or PlacementParams())
    cost, _ = cost_from_histograms(costs, histograms)
    return cost


def _node_order(hosts: np.ndarray, g: int) -> list[int]:
    return [int(h) for h in hosts[:: max(g, 1)]] if len(hosts) >= g else [int(hosts[0])]


def _table(
    topology: Topology,
    *,
    job_id: str,
    hosts: np.ndarray,
    gpus: np.ndarray,
    g: int,
    port: int,
    world: int,
) -> dict[str, HostSlice]:
    names = topology.index.host_names
    per_node: dict[int, list[int]] = {}
    for rank, (h, gpu) in enumerate(zip(hosts.tolist(), gpus.tolist(), strict=True)):
        slots = per_node.setdefault(h, [-1] * min(g, world))
        slots[gpu] = rank
    order = sorted(per_node, key=lambda h: min(per_node[h]))
    master = names[order[0]]
    slices: dict[str, HostSlice] = {}
    for node_rank, h in enumerate(order):
        ranks = per_node[h]
        if world >= g and ranks != list(range(node_rank * g, node_rank * g + g)):
            # The engine's tables always have this shape (rail alignment, one aligned block
            # per host); torchrun's static rendezvous depends on it.
            raise ShapeError(
                f"rank table of {names[h]} is not one aligned block: {ranks}",
                reason="irregular_table",
            )
        slices[names[h]] = HostSlice(
            job_id=job_id,
            world_size=world,
            nnodes=len(order),
            node_rank=node_rank,
            gpus_per_node=len(ranks),
            master_addr=master,
            master_port=port,
            ranks=tuple(ranks),
        )
    return slices
