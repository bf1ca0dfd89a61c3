"""Generator for a two-tier fat tree (leaf and pod/spine), optionally with NVL72-style racks.

The fabric: ``pods`` spine groups, each with ``leaves_per_pod`` leaf (ToR) switches, each with
``hosts_per_leaf`` hosts. Inside a pod the tree is non-blocking (one 400 Gb/s NIC per GPU,
:data:`~topology.tiers.LEAF_400G`); the pods' uplinks to the core are oversubscribed
``oversubscription:1`` (7 by default, Meta's aggregation layer; placement.md section 3). The
core itself is the cluster root of the model.

With ``nvlink_rack_hosts`` set, a rack tier (:data:`~topology.tiers.NVL72_RACK`) sits between
the hosts and the leaf: every ``nvlink_rack_hosts`` consecutive hosts of a leaf form one NVLink
domain (a GB200 NVL72 rack is 18 hosts x 4 GPUs), which exercises NVLink domains larger than a
host. The host fabric then runs at the rack's NVLink bandwidth.

Names: hosts ``h`` + the global number from 1, zero-padded to ``max(4, digits of the total)``
(``h00001``..``h12288``), in depth-first order, so each leaf's hosts compress to one Slurm
hostlist range; switches ``pod00``, ``pod00-leaf00`` (``pod00-leaf00-rack00``), zero-padded to
the digits of their sibling count (at least two).

Must not import grpc, generated protos, databases, subprocess, ``placement``, ``scheduler`` or
``agents``.
"""

from __future__ import annotations

from topology.errors import TopologyError
from topology.generators._layout import (
    INVALID_ARGS,
    Level,
    build_spec,
    check_count,
    check_name,
    check_ratio,
    tier_with,
)
from topology.spec import TopologySpec
from topology.tiers import LEAF_400G, NVL72_RACK, NVLINK_H100, POD_SPINE, TierSpec

#: Intra-host fabric of a GB200 compute tray: the same NVLink5 fabric as its rack.
NVLINK_NVL72_HOST = TierSpec(
    name="nvlink",
    bandwidth_gbytes_per_s=NVL72_RACK.bandwidth_gbytes_per_s,
    latency_us=NVLINK_H100.latency_us,
    nvlink=True,
)


def fat_tree(
    pods: int,
    leaves_per_pod: int,
    hosts_per_leaf: int,
    gpus_per_host: int = 8,
    *,
    oversubscription: float = 7.0,
    name: str | None = None,
    nvlink_rack_hosts: int | None = None,
) -> TopologySpec:
    """A fat tree of ``pods x leaves_per_pod x hosts_per_leaf`` hosts.

    Args:
        pods: spine groups (pods) in the cluster.
        leaves_per_pod: leaf switches per pod.
        hosts_per_leaf: hosts per leaf switch.
        gpus_per_host: GPUs per host (8 for HGX H100; 4 for a GB200 compute tray).
        oversubscription: downlink:uplink ratio of the pods' uplinks to the core (``x:1``).
        name: topology name; defaults to ``fat-tree-PxLxH``.
        nvlink_rack_hosts: when set, group every this many hosts of a leaf into one NVLink
            rack domain (tier ``rack``); ``hosts_per_leaf`` must be a multiple of it.

    Returns:
        The spec; build it with :meth:`topology.model.Topology.from_spec`.

    Raises:
        TopologyError: ``invalid_generator_args`` for counts below 1, a ratio below 1, a rack
            size that does not divide ``hosts_per_leaf``, or more hosts than a generator builds.
    """
    pods = check_count("pods", pods)
    leaves_per_pod = check_count("leaves_per_pod", leaves_per_pod)
    hosts_per_leaf = check_count("hosts_per_leaf", hosts_per_leaf)
    gpus_per_host = check_count("gpus_per_host", gpus_per_host)
    ratio = check_ratio("oversubscription", oversubscription)
    topo_name = check_name(name, f"fat-tree-{pods}x{leaves_per_pod}x{hosts_per_leaf}")

    levels = [Level("pod", "pod", pods), Level("leaf", "leaf", leaves_per_pod)]
    tiers = [LEAF_400G, tier_with(POD_SPINE, oversubscription=ratio)]
    host_fabric = NVLINK_H100
    hosts_per_switch = hosts_per_leaf
    if nvlink_rack_hosts is not None:
        rack_hosts = check_count("nvlink_rack_hosts", nvlink_rack_hosts)
        if hosts_per_leaf % rack_hosts:
            raise TopologyError(
                f"hosts_per_leaf ({hosts_per_leaf}) must be a multiple of nvlink_rack_hosts "
                f"({rack_hosts})",
                reason=INVALID_ARGS,
            )
        levels.append(Level("rack", "rack", hosts_per_leaf // rack_hosts))
        tiers.insert(0, NVL72_RACK)
        host_fabric = NVLINK_NVL72_HOST
        hosts_per_switch = rack_hosts
    return build_spec(
        name=topo_name,
        levels=levels,
        hosts_per_switch=hosts_per_switch,
        tiers=tiers,
        gpus_per_host=gpus_per_host,
        host_fabric=host_fabric,
    )
