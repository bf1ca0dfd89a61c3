"""Small topologies and snapshots for the placement tests (plain specs, no generators)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from placement import Snapshot
from topology.model import Topology
from topology.spec import HostSpec, SwitchSpec, TopologySpec
from topology.tiers import CORE, LEAF_400G, NVL72_RACK, NVLINK_H100, POD_SPINE, TierSpec

Shape = Sequence[object]
"""Nested lists: a list of children per switch, an int (hosts) at each leaf."""


def tree(
    shape: Shape,
    *,
    gpus: int = 8,
    tiers: Sequence[TierSpec] | None = None,
    host_fabric: TierSpec = NVLINK_H100,
) -> Topology:
    """A topology from a nested shape, hosts ``h001``... in depth-first order.

    ``[[4, 4], [2]]`` is two pods: the first with two leaves of 4 hosts, the second with one
    leaf of 2. The depth of the nesting gives the number of switch tiers (nearest first:
    ``leaf``, ``pod``, ``core``) unless ``tiers`` is given.
    """
    depth = _depth(shape)
    if tiers is None:
        tiers = [LEAF_400G, POD_SPINE, CORE][:depth]
    tier_names = [t.name for t in tiers]
    switches: list[SwitchSpec] = []
    counter = [0]

    def build(node: object, level: int, parent: str | None, path: str) -> None:
        name = f"{tier_names[level - 1]}{path}"
        if isinstance(node, int):
            hosts = []
            for _ in range(node):
                counter[0] += 1
                hosts.append(f"h{counter[0]:03d}")
            switches.append(
                SwitchSpec(name=name, tier=tier_names[0], parent=parent, hosts=tuple(hosts))
            )
            return
        switches.append(SwitchSpec(name=name, tier=tier_names[level - 1], parent=parent))
        assert isinstance(node, Sequence)
        for i, child in enumerate(node):
            build(child, level - 1, name, f"{path}.{i}")

    for i, top in enumerate(shape):
        build(top, depth, None, f"{i}")
    spec = TopologySpec(
        name="t",
        gpus_per_host=gpus,
        host_fabric=host_fabric,
        tiers=tuple(tiers),
        switches=tuple(switches),
    )
    return Topology.from_spec(spec)


def _depth(shape: object) -> int:
    if isinstance(shape, int):
        return 0
    assert isinstance(shape, Sequence)
    return 1 + max(_depth(child) for child in shape)


def fat_tree(pods: int, leaves: int, hosts: int, gpus: int = 8) -> Topology:
    """A regular pods x leaves x hosts tree (leaf 50 GB/s, pod 50 GB/s with 7:1 above)."""
    return tree([[hosts] * leaves for _ in range(pods)], gpus=gpus)


def nvl72(racks_per_leaf: int, leaves: int, hosts_per_rack: int = 18, gpus: int = 4) -> Topology:
    """Leaves of NVLink racks (tier ``rack`` is one NVLink domain of ``hosts_per_rack`` hosts)."""
    shape = [[hosts_per_rack] * racks_per_leaf for _ in range(leaves)]
    tiers = [NVL72_RACK, LEAF_400G]
    fabric = TierSpec(
        name="nvlink", bandwidth_gbytes_per_s=NVL72_RACK.bandwidth_gbytes_per_s, nvlink=True
    )
    return tree(shape, gpus=gpus, tiers=tiers, host_fabric=fabric)


def mixed_hosts() -> TopologySpec:
    """A leaf with one odd 4-GPU host among 8-GPU hosts."""
    hosts: tuple[str | HostSpec, ...] = ("h001", "h002", HostSpec(name="h003", gpus=4), "h004")
    return TopologySpec(
        name="mixed",
        gpus_per_host=8,
        tiers=(LEAF_400G,),
        switches=(SwitchSpec(name="l0", tier="leaf", hosts=hosts),),
    )


def snapshot(
    topology: Topology,
    busy_hosts: Iterable[str] = (),
    busy_gpus: Iterable[str] = (),
    down: Iterable[str] = (),
) -> Snapshot:
    """A snapshot with whole hosts busy, single GPUs (``host:gpu``) busy, and hosts down."""
    return Snapshot.build(topology.index, [*busy_hosts, *busy_gpus], down)


def free_hosts(topology: Topology, keep: dict[str, int]) -> Snapshot:
    """Busy everywhere except ``keep[leaf name]`` hosts free at the start of each named leaf."""
    index = topology.index
    busy = np.ones(index.num_gpus, dtype=np.bool_)
    for leaf, count in keep.items():
        domain = index.domain_id(1, leaf)
        for host in index.hosts_under(1, domain)[:count].tolist():
            first = int(index.gpu_offset[host])
            busy[first : first + int(index.host_gpus[host])] = False
    return Snapshot(index, busy)
