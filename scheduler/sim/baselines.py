"""Placement as the peers do it: Slurm ``topology/tree``, Kueue TAS BestFit, first fit.

Each baseline is a host-selection rule plus a rank order, and nothing else: queueing, gang
admission, backfill and the failure path stay the core's (the baselines plug into the core's
placement seam, :data:`scheduler.core.cycle.Placer`). Jobs of a host or more take whole free
hosts of the common size (as firsthop does); rank ``r`` runs on GPU ``r mod G`` of the
``r div G``-th host of the baseline's rank order. Smaller jobs take one host.

``slurm-tree`` follows SchedMD Slurm's tree topology plugin: ``doc/html/topology.shtml``
("identify the lowest level switch in the hierarchy that can satisfy a job's request and then
allocate resources on its underlying leaf switches using a best-fit algorithm") and
``src/plugins/topology/tree/eval_nodes_tree.c`` (``_eval_nodes_topo`` in
``select/cons_tres`` before 23.11): among the lowest-level switches holding enough available
nodes, the one with the fewest; then leaf switches under it, repeatedly the one that holds the
remaining count with the fewest nodes, or, if none does, the one with the most; nodes of a
leaf in node order. Task ranks follow the node list (Slurm hands out ranks in node order,
ignoring the switch the nodes came from; ``TopologyParam=SwitchAsNodeRank`` is off by
default). Smaller jobs: the leaf with the fewest available nodes that fit, then its first
fitting node.

``kueue-tas`` follows Kueue's topology-aware scheduling, BestFit profile
(``site/content/en/docs/concepts/topology_aware_scheduling.md``; KEP-2724 "Computing the
assignment"; ``pkg/cache/tas_flavor_snapshot.go``): the job asks for
``podset-required-topology`` at the lowest tier one of whose domains can ever hold it (what a
user would annotate), and waits while no single domain of that tier has room; the tightest
such domain is chosen, then at each lower level children are taken from the most free down,
the last one chosen best fit (the smallest that holds the remainder). Pods with consecutive
indexes go to the same domain, domains in the assignment's sorted order (kueue#3533). Jobs
too large for any pod are unconstrained at the top (``podset-preferred-topology``).
Smaller jobs: the host with the least free capacity that fits.

``first-fit`` is a topology-unaware scheduler (Slurm ``select/linear`` without a topology
plugin): the first available hosts in node-name order, ranks in that order; smaller jobs on
the first host by name with room.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

import numpy as np

from topology.index import BoolArray, IntArray, TopologyIndex


def _by_name(index: TopologyIndex, hosts: IntArray) -> IntArray:
    names = [index.host_names[h] for h in hosts.tolist()]
    order = sorted(range(len(names)), key=names.__getitem__)
    return hosts[np.asarray(order, dtype=np.int64)] if order else hosts


# ---------------------------------------------------------------------------- first fit


def first_fit_hosts(index: TopologyIndex, eligible: BoolArray, count: int) -> IntArray | None:
    """The first ``count`` eligible hosts by name (rank order), or ``None``."""
    ids = np.flatnonzero(eligible)
    if ids.size < count:
        return None
    return _by_name(index, ids)[:count]


def first_fit_host(
    index: TopologyIndex, free: IntArray, usable: BoolArray, gpus: int
) -> int | None:
    """The first usable host by name with ``gpus`` free GPUs."""
    ids = np.flatnonzero(usable & (free >= gpus))
    return int(_by_name(index, ids)[0]) if ids.size else None


# ---------------------------------------------------------------------------- Slurm tree


def slurm_tree_hosts(index: TopologyIndex, eligible: BoolArray, count: int) -> IntArray | None:
    """Slurm ``topology/tree`` node selection (module docstring), ranks in node-list order."""
    if int(eligible.sum()) < count:
        return None
    avail = eligible.astype(np.int64)
    top = index.cluster_level
    chosen_level, chosen = top, 0
    for level in range(1, top + 1):
        per_switch = index.sum_per_domain(level, avail)
        fits = np.flatnonzero(per_switch >= count)
        if fits.size:
            chosen_level = level
            chosen = int(fits[np.argmin(per_switch[fits])])
            break
    under = index.hosts_under(chosen_level, chosen)
    leaf_level = 1 if top > 1 else top
    leaves_of = index.ancestors[under, leaf_level]
    leaf_nodes: dict[int, list[int]] = {}
    for host, leaf in zip(under.tolist(), leaves_of.tolist(), strict=True):
        if eligible[host]:
            leaf_nodes.setdefault(int(leaf), []).append(host)
    remaining = count
    picked: list[int] = []
    while remaining > 0:
        sizes = {leaf: len(nodes) for leaf, nodes in leaf_nodes.items() if nodes}
        fitting = [leaf for leaf, n in sizes.items() if n >= remaining]
        if fitting:
            leaf = min(fitting, key=lambda x: (sizes[x], x))
        else:
            leaf = max(sizes, key=lambda x: (sizes[x], -x))
        take = leaf_nodes[leaf][:remaining]
        leaf_nodes[leaf] = leaf_nodes[leaf][len(take) :]
        picked += take
        remaining -= len(take)
    return _by_name(index, np.asarray(picked, dtype=np.int64))


def slurm_tree_host(
    index: TopologyIndex, free: IntArray, usable: BoolArray, gpus: int
) -> int | None:
    """A one-host job under ``topology/tree``: tightest leaf by fitting nodes, first node."""
    fit = usable & (free >= gpus)
    ids = np.flatnonzero(fit)
    if ids.size == 0:
        return None
    leaf_level = 1 if index.cluster_level > 1 else index.cluster_level
    per_leaf = index.sum_per_domain(leaf_level, fit.astype(np.int64))
    leaves = index.ancestors[ids, leaf_level]
    best = min(zip(per_leaf[leaves].tolist(), leaves.tolist(), strict=True))[1]
    return int(_by_name(index, ids[leaves == best])[0])


# ---------------------------------------------------------------------------- Kueue TAS


def kueue_required_level(index: TopologyIndex, count: int) -> int:
    """The lowest switch tier one of whose domains can ever hold ``count`` hosts."""
    top = index.cluster_level
    for level in range(1, top + 1):
        if int(index.hosts_per_domain(level).max(initial=0)) >= count:
            return level
    return top


def kueue_tas_hosts(index: TopologyIndex, eligible: BoolArray, count: int) -> IntArray | None:
    """Kueue TAS BestFit at the required tier (module docstring), ranks in domain order."""
    if int(eligible.sum()) < count:
        return None
    level = kueue_required_level(index, count)
    avail = eligible.astype(np.int64)
    per_domain = index.sum_per_domain(level, avail)
    fits = np.flatnonzero(per_domain >= count)
    if fits.size == 0:
        return None
    domain = int(fits[np.argmin(per_domain[fits])])
    picked = _kueue_take(index, avail, level, [domain], count)
    return _domain_order(index, np.asarray(picked, dtype=np.int64))


def _kueue_take(
    index: TopologyIndex, avail: IntArray, level: int, domains: list[int], count: int
) -> list[int]:
    """Take ``count`` hosts below ``domains`` of ``level``: children from the most free
    down, the last one best fit; recursively to hosts."""
    children: list[tuple[int, int]] = []
    if level == 1:
        for d in domains:
            hosts = index.hosts_under(1, d)
            children += [(int(h), int(avail[h])) for h in hosts.tolist() if avail[h]]
    else:
        child_level = level - 1
        free = index.sum_per_domain(child_level, avail)
        for d in domains:
            hosts = index.hosts_under(level, d)
            kids = np.unique(index.ancestors[hosts, child_level])
            children += [(int(k), int(free[k])) for k in kids.tolist() if free[k] > 0]
    children.sort(key=lambda c: (-c[1], c[0]))
    chosen: list[tuple[int, int]] = []
    remaining = count
    for i, (child, have) in enumerate(children):
        if have >= remaining:
            rest = [c for c in children[i:] if c[1] >= remaining]
            last = min(rest, key=lambda c: (c[1], c[0]))
            chosen.append((last[0], remaining))
            remaining = 0
            break
        chosen.append((child, have))
        remaining -= have
    if level == 1:
        return [child for child, _ in chosen]
    out: list[int] = []
    for child, take in chosen:
        out += _kueue_take(index, avail, level - 1, [child], take)
    return out


def _domain_order(index: TopologyIndex, hosts: IntArray) -> IntArray:
    """Hosts sorted by their domain path (pod, leaf, ...) and then by name."""
    top = index.cluster_level
    names = index.domain_names

    def key(h: int) -> tuple[str, ...]:
        path = tuple(names[lv][int(index.ancestors[h, lv])] for lv in range(top - 1, 0, -1))
        return (*path, index.host_names[h])

    return np.asarray(sorted(hosts.tolist(), key=key), dtype=np.int64)


def kueue_tas_host(
    index: TopologyIndex, free: IntArray, usable: BoolArray, gpus: int
) -> int | None:
    """A one-host job under Kueue BestFit: the fitting host with the least free capacity."""
    ids = np.flatnonzero(usable & (free >= gpus))
    if ids.size == 0:
        return None
    return int(min(ids.tolist(), key=lambda h: (int(free[h]), index.host_names[h])))
