"""Fragmentation of the free capacity a placement leaves behind (placement.md section 7).

- *stranded GPUs*: free GPUs on hosts that are partly busy; jobs of a host or more (which need
  whole hosts) cannot use them;
- *stranded hosts*: wholly free hosts in leaves that have fewer wholly free hosts than a
  typical multi-host block (``stranded_leaf_hosts``);
- *largest job per tier*: the most GPUs one job could get inside a single domain of each
  level (a host: its free GPUs; a switch domain or the cluster: its wholly free hosts of the
  common size times the GPUs per host, or a single host's free GPUs if more);
- *whole free domains*: leaves, pods, ... with every host free and in service.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topology.index import BoolArray, IntArray, TopologyIndex


@dataclass(frozen=True, slots=True)
class Fragmentation:
    """Fragmentation metrics of one cluster state.

    Attributes:
        free_gpus: free GPUs on hosts in service.
        stranded_gpus: free GPUs on partly busy hosts.
        stranded_hosts: wholly free hosts in leaves with too few of them.
        largest_job: per level name, the largest job (GPUs) one domain of it can hold.
        whole_free_domains: per switch tier name, domains entirely free.
    """

    free_gpus: int
    stranded_gpus: int
    stranded_hosts: int
    largest_job: dict[str, int]
    whole_free_domains: dict[str, int]


def fragmentation(
    index: TopologyIndex,
    free_per_host: IntArray,
    available: BoolArray,
    gpus_per_host: int,
    stranded_leaf_hosts: int,
) -> Fragmentation:
    """Metrics for a state given each host's free GPUs and which hosts are in service."""
    free = np.where(available, free_per_host, 0).astype(np.int64)
    whole = available & (free == index.host_gpus)
    partial = available & (free > 0) & ~whole
    usable = (whole & (index.host_gpus == gpus_per_host)).astype(np.int64)
    names = index.level_names
    top = index.cluster_level
    host_max = int(free.max(initial=0))
    largest = {names[0]: host_max}
    whole_domains: dict[str, int] = {}
    stranded_hosts = 0
    for level in range(1, top + 1):
        per_domain = index.sum_per_domain(level, usable)
        largest[names[level]] = max(host_max, int(per_domain.max(initial=0)) * gpus_per_host)
        if level == top:
            continue
        whole_count = index.sum_per_domain(level, whole.astype(np.int64))
        whole_domains[names[level]] = int(np.sum(whole_count == index.hosts_per_domain(level)))
        if level == 1:
            small = per_domain < stranded_leaf_hosts
            stranded_hosts = int(per_domain[small].sum())
    if top == 1 and int(usable.sum()) < stranded_leaf_hosts:
        stranded_hosts = int(usable.sum())
    return Fragmentation(
        free_gpus=int(free.sum()),
        stranded_gpus=int(free[partial].sum()),
        stranded_hosts=stranded_hosts,
        largest_job=largest,
        whole_free_domains=whole_domains,
    )
