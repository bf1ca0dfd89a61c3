"""The validated network hierarchy of a cluster, as a typed networkx tree.

``cluster -> (core/spine tiers) -> pod -> leaf or rail group -> host -> GPU``. A
:class:`Topology` is built from a :class:`~topology.spec.TopologySpec` by
:meth:`Topology.from_spec`, which enforces the structural rules a schema cannot: no cycles, no
host under two switches, no duplicate names, known tier names, parents on higher tiers, and no
skipped tier unless that tier is declared ``optional``. Where a declared optional tier is
skipped, a *virtual* pass-through domain keeps every host at the same depth, so the placer
sees a uniform tree.

The networkx graph (:attr:`Topology.graph`) is the model for queries that are not hot; the
placer uses the compact :class:`~topology.index.TopologyIndex` built once from it.

Must not import grpc, generated protos, databases or subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import networkx as nx

from topology.errors import TopologyError
from topology.index import TopologyIndex
from topology.spec import HostEntry, HostSpec, SwitchSpec, TopologySpec, load_spec
from topology.tiers import (
    CLUSTER_LEVEL,
    HOST_LEVEL,
    RESERVED_TIER_NAMES,
    TierSpec,
    cumulative_latencies,
    effective_bandwidths,
)

ROOT = (CLUSTER_LEVEL, CLUSTER_LEVEL)
"""The root node of :attr:`Topology.graph`."""


@dataclass(frozen=True, slots=True)
class Domain:
    """A switch-level domain: every host under one switch of some tier."""

    name: str
    tier: str
    level: int
    parent: str | None
    children: tuple[str, ...]
    hosts: tuple[str, ...]
    """Hosts cabled directly to this switch (only at the lowest switch level)."""
    virtual: bool = False
    """Stands in for a skipped optional tier; it has no switch of its own."""


@dataclass(frozen=True, slots=True)
class Host:
    """One host (the bottom network level); its GPUs share its NVLink fabric."""

    name: str
    gpus: int
    parent: str | None


class Topology:
    """A validated cluster topology. Immutable once built."""

    def __init__(
        self,
        spec: TopologySpec,
        domains: dict[str, Domain],
        hosts: dict[str, Host],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.host_fabric = spec.host_fabric
        self.tiers: tuple[TierSpec, ...] = spec.tiers
        self.domains = domains
        self.hosts = hosts

    # ---------------------------------------------------------------- construction

    @classmethod
    def load(cls, path: Path) -> Topology:
        """Read, validate and build a topology file."""
        return cls.from_spec(load_spec(path))

    @classmethod
    def from_spec(cls, spec: TopologySpec) -> Topology:
        """Check the structural rules and build the tree (see module docstring)."""
        return _Builder(spec).build()

    # ---------------------------------------------------------------- levels

    @property
    def level_names(self) -> tuple[str, ...]:
        """``host``, each switch tier nearest first, then ``cluster``."""
        return (HOST_LEVEL, *(t.name for t in self.tiers), CLUSTER_LEVEL)

    @property
    def bandwidths_gbytes_per_s(self) -> tuple[float, ...]:
        """Effective per-GPU GB/s of traffic whose lowest common level is each level."""
        return tuple(effective_bandwidths(self.host_fabric, list(self.tiers)))

    @property
    def latencies_us(self) -> tuple[float, ...]:
        """One-way latency of traffic whose lowest common level is each level."""
        return tuple(cumulative_latencies(self.host_fabric, list(self.tiers)))

    @property
    def nvlink_level(self) -> int:
        """The highest level whose domains are one NVLink fabric (0: the host)."""
        level = 0
        for i, tier in enumerate(self.tiers, start=1):
            if tier.nvlink:
                level = i
        return level

    # ---------------------------------------------------------------- queries

    @property
    def num_gpus(self) -> int:
        """Total GPUs in the cluster."""
        return sum(h.gpus for h in self.hosts.values())

    def location(self, host: str) -> tuple[str, ...]:
        """Switch domains above ``host``, nearest first, without virtual pass-through domains:
        what an agent reports when it registers and what the scheduler checks it against.

        Raises:
            KeyError: no such host.
        """
        path: list[str] = []
        domain = self.hosts[host].parent
        while domain is not None:
            node = self.domains[domain]
            if not node.virtual:
                path.append(node.name)
            domain = node.parent
        return tuple(path)

    def domains_at(self, level: int) -> Iterator[Domain]:
        """Domains of one switch level (1 = nearest tier), in host order."""
        return (d for d in self.domains.values() if d.level == level)

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The tree as a directed graph from the root down to every GPU.

        Nodes are typed tuples: ``("cluster", "cluster")``, ``("switch", name)``,
        ``("host", name)``, ``("gpu", "host/index")``. Every node carries ``kind`` and
        ``level``; switches carry ``tier`` and ``virtual``, hosts and GPUs their counts and
        indices.
        """
        top = len(self.tiers) + 1
        graph = nx.DiGraph(name=self.name)
        graph.add_node(ROOT, kind=CLUSTER_LEVEL, level=top)
        for domain in self.domains.values():
            node = ("switch", domain.name)
            graph.add_node(
                node, kind="switch", tier=domain.tier, level=domain.level, virtual=domain.virtual
            )
            parent = ROOT if domain.parent is None else ("switch", domain.parent)
            graph.add_edge(parent, node)
        for host in self.hosts.values():
            node = ("host", host.name)
            graph.add_node(node, kind=HOST_LEVEL, level=0, gpus=host.gpus)
            graph.add_edge(ROOT if host.parent is None else ("switch", host.parent), node)
            for gpu in range(host.gpus):
                gpu_node = ("gpu", f"{host.name}/{gpu}")
                graph.add_node(gpu_node, kind="gpu", level=-1, index=gpu)
                graph.add_edge(node, gpu_node)
        return graph

    @cached_property
    def index(self) -> TopologyIndex:
        """The compact index for the placer, built once."""
        return TopologyIndex.build(self)

    def to_spec(self) -> TopologySpec:
        """The spec this topology was built from (files round-trip through it)."""
        return self.spec


class _Builder:
    """Checks one spec and lays the tree out in depth-first host order."""

    def __init__(self, spec: TopologySpec) -> None:
        self.spec = spec
        self.levels: dict[str, int] = {}
        self.domains: dict[str, _PendingDomain] = {}
        self.hosts: dict[str, Host] = {}

    def build(self) -> Topology:
        self._check_tiers()
        switches = self._check_switches()
        children = self._check_tree(switches)
        for root in [s for s in self.spec.switches if s.parent is None]:
            self._place_switch(root, None, len(self.spec.tiers) + 1, children)
        self._place_hosts(None, self.spec.hosts, len(self.spec.tiers) + 1)
        if not self.hosts:
            raise TopologyError(
                f"topology {self.spec.name!r} has no hosts", reason="empty_topology"
            )
        return Topology(self.spec, self._frozen_domains(), self.hosts)

    # ------------------------------------------------------------ checks

    def _check_tiers(self) -> None:
        seen_network_tier = not self.spec.host_fabric.nvlink
        for level, tier in enumerate(self.spec.tiers, start=1):
            if tier.name in RESERVED_TIER_NAMES:
                raise TopologyError(
                    f"tier name {tier.name!r} is reserved", reason="invalid_topology"
                )
            if tier.name in self.levels:
                raise TopologyError(f"tier {tier.name!r} declared twice", reason="duplicate_name")
            if tier.nvlink and seen_network_tier:
                raise TopologyError(
                    f"NVLink tier {tier.name!r} sits above a network tier; NVLink domains must "
                    "nest directly above the host",
                    reason="tier_order",
                )
            seen_network_tier = seen_network_tier or not tier.nvlink
            self.levels[tier.name] = level

    def _check_switches(self) -> dict[str, SwitchSpec]:
        switches: dict[str, SwitchSpec] = {}
        host_parent: dict[str, str] = {}
        for switch in self.spec.switches:
            if switch.name in switches:
                raise TopologyError(
                    f"switch {switch.name!r} declared twice", reason="duplicate_name"
                )
            if switch.tier not in self.levels:
                known = ", ".join(self.levels) or "none"
                raise TopologyError(
                    f"switch {switch.name!r} has unknown tier {switch.tier!r} (tiers: {known})",
                    reason="unknown_tier",
                )
            switches[switch.name] = switch
            for entry in switch.hosts:
                name = entry.name if isinstance(entry, HostSpec) else entry
                self._claim_host(name, switch.name, host_parent)
        for entry in self.spec.hosts:
            name = entry.name if isinstance(entry, HostSpec) else entry
            self._claim_host(name, CLUSTER_LEVEL, host_parent)
        for name in host_parent:
            if name in switches:
                raise TopologyError(
                    f"{name!r} is both a host and a switch", reason="duplicate_name"
                )
        return switches

    @staticmethod
    def _claim_host(name: str, parent: str, host_parent: dict[str, str]) -> None:
        previous = host_parent.get(name)
        if previous == parent:
            raise TopologyError(
                f"host {name!r} listed twice under {parent!r}", reason="duplicate_name"
            )
        if previous is not None:
            raise TopologyError(
                f"host {name!r} is under two switches: {previous!r} and {parent!r}",
                reason="host_multiple_parents",
            )
        host_parent[name] = parent

    def _check_tree(self, switches: dict[str, SwitchSpec]) -> dict[str | None, list[SwitchSpec]]:
        graph = nx.DiGraph()
        children: dict[str | None, list[SwitchSpec]] = {}
        for switch in self.spec.switches:
            if switch.parent is not None and switch.parent not in switches:
                raise TopologyError(
                    f"switch {switch.name!r} has unknown parent {switch.parent!r}",
                    reason="unknown_switch",
                )
            if switch.parent is not None:
                graph.add_edge(switch.parent, switch.name)
            children.setdefault(switch.parent, []).append(switch)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = []
        if cycle:
            path = " -> ".join([str(edge[0]) for edge in cycle] + [str(cycle[0][0])])
            raise TopologyError(f"switch parents form a cycle: {path}", reason="topology_cycle")
        for switch in self.spec.switches:
            if switch.parent is None:
                continue
            parent_level = self.levels[switches[switch.parent].tier]
            if parent_level <= self.levels[switch.tier]:
                raise TopologyError(
                    f"switch {switch.name!r} (tier {switch.tier!r}) has parent "
                    f"{switch.parent!r} on tier {switches[switch.parent].tier!r}, which is not "
                    "above it",
                    reason="tier_order",
                )
        return children

    def _require_optional(self, low: int, high: int, what: str) -> None:
        """Levels strictly between ``low`` and ``high`` are skipped by ``what``."""
        for level in range(low + 1, high):
            tier = self.spec.tiers[level - 1]
            if not tier.optional:
                raise TopologyError(
                    f"{what} skips tier {tier.name!r}; declare it `optional: true` to allow "
                    "mixed depths",
                    reason="mixed_depth",
                )

    # ------------------------------------------------------------ layout

    def _virtual_chain(
        self, anchor: str, parent: str | None, high: int, low: int, *, shared: bool
    ) -> str | None:
        """Create virtual domains for levels ``high-1`` down to ``low``; return the lowest.

        ``shared`` chains (for hosts cabled straight to a higher switch) are named after the
        switch and reused; the others are named after the child switch they carry.
        """
        for level in range(high - 1, low - 1, -1):
            tier = self.spec.tiers[level - 1].name
            name = f"{anchor}~{tier}"
            if not (shared and name in self.domains):
                self._add_domain(name, tier, level, parent, virtual=True)
            parent = name
        return parent

    def _add_domain(
        self, name: str, tier: str, level: int, parent: str | None, *, virtual: bool
    ) -> None:
        if name in self.domains:
            raise TopologyError(f"name {name!r} is used twice", reason="duplicate_name")
        self.domains[name] = _PendingDomain(tier, level, parent, virtual)
        if parent is not None:
            self.domains[parent].children.append(name)

    def _place_switch(
        self,
        switch: SwitchSpec,
        parent: str | None,
        parent_level: int,
        children: dict[str | None, list[SwitchSpec]],
    ) -> None:
        level = self.levels[switch.tier]
        self._require_optional(level, parent_level, f"switch {switch.name!r}")
        parent = self._virtual_chain(switch.name, parent, parent_level, level + 1, shared=False)
        self._add_domain(switch.name, switch.tier, level, parent, virtual=False)
        for child in children.get(switch.name, []):
            self._place_switch(child, switch.name, level, children)
        self._place_hosts(switch.name, switch.hosts, level)

    def _place_hosts(self, switch: str | None, entries: tuple[HostEntry, ...], level: int) -> None:
        if not entries:
            return
        anchor = switch if switch is not None else CLUSTER_LEVEL
        self._require_optional(0, level, f"hosts under {anchor!r}")
        parent = self._virtual_chain(anchor, switch, level, 1, shared=True)
        for entry in entries:
            name, gpus = self.spec.host_gpus(entry)
            self.hosts[name] = Host(name, gpus, parent)
            if parent is not None:
                self.domains[parent].hosts.append(name)

    def _frozen_domains(self) -> dict[str, Domain]:
        return {
            name: Domain(
                name, d.tier, d.level, d.parent, tuple(d.children), tuple(d.hosts), d.virtual
            )
            for name, d in self.domains.items()
        }


@dataclass(slots=True)
class _PendingDomain:
    tier: str
    level: int
    parent: str | None
    virtual: bool
    children: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
