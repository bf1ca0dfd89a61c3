"""Generator for a dual-plane, dual-ToR fabric in the style of Alibaba HPN.

HPN (placement.md section 3): hosts of 8 GPUs, one 2x200 Gb/s NIC per GPU. A *segment* is 128
active hosts (1,024 GPUs) under 16 ToRs: 8 rails x 2 ToRs per rail (dual-ToR), each NIC port
going to a different ToR of its rail pair, one per *plane*. A ToR has 128 active 200G
downlinks and 60x400G uplinks, so the ToR tier is oversubscribed 25.6:24 = 16:15 (~1.067:1).
A *pod* joins 15 segments (15,360 GPUs) through two independent aggregation planes; pods are
joined by a core at 15:1.

**Model and assumptions.**

- ONE logical plane. The two planes are symmetric (same switches, same ECMP), so a host sees
  one 400 Gb/s (50 GB/s) path per GPU and the placer can ignore planes (placement.md). The
  dual ToRs of a rail are folded into one.
- A segment is the leaf-level domain (tier ``segment``, ``rails = gpus_per_host``), exact for
  rail-aligned placement for the reasons given in :mod:`topology.generators.rail_optimized`.
- The ToR tier's ``oversubscription`` (16:15 by default) throttles everything above the
  segment; the pod tier's (15 by default) throttles cross-pod traffic through the core.
- Not modelled: the 8 backup hosts per segment (add them as ordinary hosts if they are in
  service), plane or single-ToR failures (which halve a host's bandwidth rather than cut it
  off), and the frontend NIC.

Names: hosts ``h0001``... globally in depth-first order; switches ``pod00``, ``pod00-seg00``.

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
from topology.tiers import LEAF_400G, POD_SPINE

HPN_SEGMENT_HOSTS = 128
"""Active hosts per HPN segment."""
HPN_SEGMENTS_PER_POD = 15
"""Segments per HPN pod."""
HPN_TOR_OVERSUBSCRIPTION = (128 * 200) / (60 * 400)
"""ToR downlink:uplink ratio: 128 x 200G down, 60 x 400G up (16:15)."""
HPN_CORE_OVERSUBSCRIPTION = 15.0
"""Aggregation-core oversubscription."""


def dual_plane(
    pods: int = 1,
    segments_per_pod: int = HPN_SEGMENTS_PER_POD,
    hosts_per_segment: int = HPN_SEGMENT_HOSTS,
    gpus_per_host: int = 8,
    *,
    oversubscription: float = HPN_CORE_OVERSUBSCRIPTION,
    name: str | None = None,
    tor_oversubscription: float = HPN_TOR_OVERSUBSCRIPTION,
) -> TopologySpec:
    """An HPN-like fabric of ``pods x segments_per_pod x hosts_per_segment`` hosts.

    The defaults give one HPN pod: 15 segments of 128 hosts (1,920 hosts, 15,360 GPUs).

    Args:
        pods: pods in the cluster.
        segments_per_pod: segments per pod.
        hosts_per_segment: hosts per segment.
        gpus_per_host: GPUs per host, which is also the number of rails.
        oversubscription: the pods' uplinks to the core (``x:1``, 15 in HPN).
        name: topology name; defaults to ``dual-plane-PxSxH``.
        tor_oversubscription: the ToRs' uplinks to the aggregation planes (16:15 in HPN).

    Returns:
        The spec; build it with :meth:`topology.model.Topology.from_spec`.

    Raises:
        TopologyError: ``invalid_generator_args`` for counts below 1, a ratio below 1 or
            more hosts than a generator builds.
    """
    pods = check_count("pods", pods)
    segments_per_pod = check_count("segments_per_pod", segments_per_pod)
    hosts_per_segment = check_count("hosts_per_segment", hosts_per_segment)
    gpus_per_host = check_count("gpus_per_host", gpus_per_host)
    core_ratio = check_ratio("oversubscription", oversubscription)
    tor_ratio = check_ratio("tor_oversubscription", tor_oversubscription)
    topo_name = check_name(name, f"dual-plane-{pods}x{segments_per_pod}x{hosts_per_segment}")
    segment_tier = tier_with(
        LEAF_400G, name="segment", oversubscription=tor_ratio, rails=gpus_per_host
    )
    pod_tier = tier_with(POD_SPINE, oversubscription=core_ratio)
    return build_spec(
        name=topo_name,
        levels=[Level("pod", "pod", pods), Level("segment", "seg", segments_per_pod)],
        hosts_per_switch=hosts_per_segment,
        tiers=[segment_tier, pod_tier],
        gpus_per_host=gpus_per_host,
    )
