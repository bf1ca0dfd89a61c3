"""Generator for a rail-optimized fabric (NVIDIA DGX SuperPOD style).

Physically, GPU ``i`` of every host in a rail group attaches through its own NIC to rail
switch ``i`` of that group: a group of ``hosts_per_group`` hosts with ``G`` GPUs each has ``G``
rail (leaf) switches, and the rail switches uplink to the spine group of their pod. A DGX
SuperPOD scalable unit is such a group: 32 DGX H100 (256 GPUs), 8 rails of NDR 400 Gb/s
(placement.md section 3).

**Model.** A rail group is ONE leaf-level domain (tier ``rail_group``, ``rails = G``), not
``G`` separate switches. For rail-aligned placement, which firsthop enforces (a rank's local
GPU index is ``rank mod G``), this is exact:

- Members of a DP/CP group on different hosts share one local GPU index ``i``, so all of them
  sit on rail ``i``: same-rail peers in a group are exactly one switch hop apart, at the full
  NIC rate, as under a non-blocking leaf.
- Traffic between different rails (GPU ``i`` on host A to GPU ``j`` on host B) is first moved
  over NVLink inside host A to GPU ``j`` (NCCL's PXN), then crosses rail ``j``: still one
  network hop inside the group, with the NVLink leg already accounted for by the host tier.
- Traffic between groups climbs from the rail switch to the spine, as from a leaf to a pod.

So the only placement-relevant facts are the group boundary and the rail count, which the
``rails`` attribute records; the individual rail switches add no choice for the placer.

Pods are spine groups of ``groups_per_pod`` rail groups; the pods' uplinks to the core are
``oversubscription:1`` (1 by default: SuperPOD fabrics are full fat trees).

Names: hosts ``h0001``... globally in depth-first order; switches ``pod00``, ``pod00-rg00``.

Must not import grpc, generated protos, databases, subprocess, ``placement``, ``scheduler`` or
``agents``.
"""

from __future__ import annotations

from topology.generators._layout import (
    Level,
    build_spec,
    check_count,
    check_name,
    check_ratio,
    tier_with,
)
from topology.spec import TopologySpec
from topology.tiers import POD_SPINE, RAIL_GROUP_400G

SUPERPOD_SU_HOSTS = 32
"""Hosts in a DGX SuperPOD (H100) scalable unit."""


def rail_optimized(
    pods: int = 1,
    groups_per_pod: int = 4,
    hosts_per_group: int = SUPERPOD_SU_HOSTS,
    gpus_per_host: int = 8,
    *,
    oversubscription: float = 1.0,
    name: str | None = None,
) -> TopologySpec:
    """A rail-optimized fabric of ``pods x groups_per_pod x hosts_per_group`` hosts.

    The defaults give one non-blocking pod of four scalable units (128 hosts, 1,024 GPUs).

    Args:
        pods: spine groups in the cluster.
        groups_per_pod: rail groups (scalable units) per pod.
        hosts_per_group: hosts per rail group.
        gpus_per_host: GPUs per host, which is also the number of rails.
        oversubscription: downlink:uplink ratio of the pods' uplinks to the core (``x:1``).
        name: topology name; defaults to ``rail-optimized-PxGxH``.

    Returns:
        The spec; build it with :meth:`topology.model.Topology.from_spec`.

    Raises:
        TopologyError: ``invalid_generator_args`` for counts below 1, a ratio below 1 or
            more hosts than a generator builds.
    """
    pods = check_count("pods", pods)
    groups_per_pod = check_count("groups_per_pod", groups_per_pod)
    hosts_per_group = check_count("hosts_per_group", hosts_per_group)
    gpus_per_host = check_count("gpus_per_host", gpus_per_host)
    ratio = check_ratio("oversubscription", oversubscription)
    topo_name = check_name(name, f"rail-optimized-{pods}x{groups_per_pod}x{hosts_per_group}")
    group_tier = tier_with(RAIL_GROUP_400G, rails=gpus_per_host)
    pod_tier = tier_with(POD_SPINE, oversubscription=ratio)
    return build_spec(
        name=topo_name,
        levels=[Level("pod", "pod", pods), Level(group_tier.name, "rg", groups_per_pod)],
        hosts_per_switch=hosts_per_group,
        tiers=[group_tier, pod_tier],
        gpus_per_host=gpus_per_host,
    )
