"""The two baselines a user would otherwise get; also candidates and CP-SAT hints.

- :func:`best_fit_hosts`: greedy best fit per domain, roughly Slurm ``topology/tree`` and Kueue
  TAS ``BestFit``. Find the lowest tier with one domain that can hold the whole job and take
  the tightest such domain (Slurm: "the lowest level switch that can satisfy a job's request";
  best fit). Inside it, recursively: take children from the one with the most free hosts down,
  and for the last one take the child whose free hosts exceed the remainder least (Kueue:
  "optimizes the selection of the last domain ... to minimize the remaining free resources").
  Leaves give their first free hosts. Ranks fill hosts in that selection order.
- :func:`first_fit_hosts`: the first free hosts in host-name order, what a topology-unaware
  scheduler does (Slurm ``select/linear`` walks nodes in configuration order, usually by name).

Both take whole hosts and know nothing of the job's parallel groups.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

import numpy as np

from placement.counts import parents_of
from placement.snapshot import Snapshot
from topology.index import BoolArray, IntArray, TopologyIndex


def best_fit_hosts(index: TopologyIndex, eligible: BoolArray, hosts: int) -> IntArray | None:
    """Greedy best-fit hosts in fill order, or ``None`` when too few are eligible."""
    if int(eligible.sum()) < hosts:
        return None
    top = index.cluster_level
    free = [eligible.astype(np.int64)] + [
        index.sum_per_domain(level, eligible.astype(np.int64)) for level in range(1, top + 1)
    ]
    for level in range(1, top + 1):
        fits = np.flatnonzero(free[level] >= hosts)
        if fits.size:
            domain = int(fits[np.argmin(free[level][fits])])
            break
    children = {level: _children_by_parent(index, level, free[level]) for level in range(1, top)}
    out: list[IntArray] = []

    def take(level: int, domain: int, count: int) -> None:
        if level == 1:
            ids = index.hosts_under(level, domain)
            out.append(ids[eligible[ids]][:count])
            return
        kids = children[level - 1].get(domain, [])
        ranked = sorted(kids, key=lambda c: (-int(free[level - 1][c]), c))
        remaining = count
        chosen: set[int] = set()
        for child in ranked:
            if child in chosen:
                continue
            have = int(free[level - 1][child])
            if have >= remaining:
                fitting = [c for c in ranked if c not in chosen and free[level - 1][c] >= remaining]
                last = min(fitting, key=lambda c: (int(free[level - 1][c]), c))
                take(level - 1, last, remaining)
                return
            chosen.add(child)
            take(level - 1, child, have)
            remaining -= have

    take(level, domain, hosts)
    return np.concatenate(out)


def _children_by_parent(index: TopologyIndex, level: int, free: IntArray) -> dict[int, list[int]]:
    parents = parents_of(index, level)
    table: dict[int, list[int]] = {}
    for child in np.flatnonzero(free > 0).tolist():
        table.setdefault(int(parents[child]), []).append(child)
    return table


def first_fit_hosts(index: TopologyIndex, eligible: BoolArray, hosts: int) -> IntArray | None:
    """The first ``hosts`` eligible hosts in host-name order, or ``None`` if too few."""
    ids = np.flatnonzero(eligible)
    if ids.size < hosts:
        return None
    names = np.array(index.host_names, dtype=object)[ids]
    order = np.argsort(names, kind="stable")
    return ids[order][:hosts]


def best_fit_host(snapshot: Snapshot, usable: BoolArray, gpus: int) -> int | None:
    """For a job smaller than a host: the usable host with the fewest free GPUs that fit.

    Ties go to the host whose leaf has the fewest free GPUs (pack leaves), then the lowest id.
    """
    free = snapshot.free_gpus_per_host
    ids = np.flatnonzero(usable & (free >= gpus))
    if ids.size == 0:
        return None
    index = snapshot.index
    level = 1 if index.cluster_level > 1 else index.cluster_level
    leaf_free = index.sum_per_domain(level, free * usable)[index.ancestors[ids, level]]
    order = np.lexsort((ids, leaf_free, free[ids]))
    return int(ids[order[0]])


def first_fit_host(snapshot: Snapshot, usable: BoolArray, gpus: int) -> int | None:
    """For a job smaller than a host: the first usable host by name with enough free GPUs."""
    free = snapshot.free_gpus_per_host
    ids = np.flatnonzero(usable & (free >= gpus))
    if ids.size == 0:
        return None
    names = [snapshot.index.host_names[i] for i in ids.tolist()]
    return int(ids[min(range(len(names)), key=names.__getitem__)])
