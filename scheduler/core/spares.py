"""Spare counts per domain: keep ``spares_per_leaf`` / ``spares_per_pod`` idle hosts in the pool.

Operators may name spares (``firsthopctl nodes spare HOST...``) or give counts in the config;
with counts the scheduler keeps each leaf (level 1 of the topology) and each pod (level 2, or
the whole cluster when the topology has a single switch tier) at that many *serving* spares:
hosts flagged spare that are READY and healthy. Spares run only ``preemptible`` jobs, which a
repair preempts first, so an idle spare and one running preemptible work both serve.

On every tick, :func:`keep` designates new spares where a domain is short: a spare a repair
took (it leaves the pool), one that was lost, failed or drained, or a count just raised. It
chooses idle hosts (READY, HEALTHY, no job, no fenced GPU): in a leaf the highest-numbered one
(the placer fills from the low end, so the pool stays out of its way); in a pod, from the
leaf with the fewest serving spares, then the most idle hosts. Operators' spares count towards
the target; a domain above it is left alone (``unspare`` shrinks it), and a domain with no
idle host waits until one frees up. A spare that went down keeps its flag and serves again
once back.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scheduler.core.context import Ctx
from scheduler.core.state import SchedulerState, node_schedulable
from scheduler.core.states import Health, NodeState
from topology.index import BoolArray


def pod_level(state: SchedulerState) -> int:
    """The topology level ``spares_per_pod`` counts at (2, or the cluster's when lower)."""
    return min(2, state.index.cluster_level)


def keep(ctx: Ctx) -> list[str]:
    """Designate spares where a leaf or pod is short of its count; the hosts designated."""
    per_leaf, per_pod = ctx.config.spares_per_leaf, ctx.config.spares_per_pod
    if not per_leaf and not per_pod:
        return []
    state = ctx.state
    serving, idle = _masks(state)
    chosen: list[int] = []
    if per_leaf:
        chosen += _fill(state, 1, per_leaf, serving, idle)
    if per_pod:
        chosen += _fill(state, pod_level(state), per_pod, serving, idle)
    names = state.index.host_names
    for host in chosen:
        node = state.nodes[names[host]]
        state.put_node(replace(node, spare=True))
    return [names[h] for h in chosen]


def _masks(state: SchedulerState) -> tuple[BoolArray, BoolArray]:
    """Per host id: a serving spare; an idle host that may become one."""
    index = state.index
    serving = np.zeros(index.num_hosts, dtype=np.bool_)
    idle = np.zeros(index.num_hosts, dtype=np.bool_)
    free = index.free_gpus_per_host(state.busy) == index.host_gpus
    ids = index.host_ids
    for name, node in state.nodes.items():
        host = ids[name]
        if node.spare:
            serving[host] = node_schedulable(node)
        elif (
            node.state is NodeState.READY
            and node.health is Health.HEALTHY
            and not state.host_jobs.get(name)
            and free[host]
            and host not in state.unavailable
        ):
            idle[host] = True
    return serving, idle


def _fill(
    state: SchedulerState, level: int, want: int, serving: BoolArray, idle: BoolArray
) -> list[int]:
    """Flag idle hosts in ``serving`` (and clear them in ``idle``) until every domain of
    ``level`` has ``want`` serving spares or no idle host left; the hosts flagged."""
    index = state.index
    chosen: list[int] = []
    leaves = index.ancestors[:, 1]
    for domain in range(len(index.domain_names[level])):
        start, end = int(index.domain_start[level][domain]), int(index.domain_end[level][domain])
        need = want - int(np.count_nonzero(serving[start:end]))
        while need > 0:
            hosts = np.flatnonzero(idle[start:end]) + start
            if hosts.size == 0:
                break
            if level == 1:
                host = int(hosts[-1])
            else:
                spares_in_leaf = np.bincount(leaves[serving], minlength=len(index.domain_names[1]))
                idle_in_leaf = np.bincount(leaves[idle], minlength=len(index.domain_names[1]))
                key = np.lexsort(
                    (-hosts, -idle_in_leaf[leaves[hosts]], spares_in_leaf[leaves[hosts]])
                )
                host = int(hosts[key[0]])
            serving[host] = True
            idle[host] = False
            chosen.append(host)
            need -= 1
    return chosen
