"""Translation of the topology between :class:`topology.model.Topology` and its wire message
(``proto/firsthop/v1/topology.proto``), paired: ``topology_from_proto(topology_to_proto(t))``
is ``t``. A message that is not a valid tree fails with :class:`~topology.errors.TopologyError`.

Used by the server (``GetTopology``) and by the client, so it needs nothing of the scheduler.

Must not import ``scheduler.core``, ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from pydantic import ValidationError

from firsthop.v1 import topology_pb2
from topology.errors import TopologyError
from topology.model import Topology
from topology.spec import HostEntry, HostSpec, SwitchSpec, TopologySpec
from topology.tiers import TierSpec


def topology_to_proto(topology: Topology) -> topology_pb2.Topology:
    """The wire form of a topology: tiers, every domain (parents first) and every host."""
    nvlink_level = topology.nvlink_level
    msg = topology_pb2.Topology(
        name=topology.name,
        tiers=[_tier_to_proto(t, level) for level, t in enumerate(topology.tiers, start=1)],
        host_fabric=_tier_to_proto(topology.host_fabric, 0),
    )
    for domain in topology.domains.values():  # builder order: parents before children
        out = msg.domains.add(
            name=domain.name,
            tier=domain.tier,
            children=list(domain.children),
            hosts=list(domain.hosts),
            virtual=domain.virtual,
        )
        if domain.parent is not None:
            out.parent = domain.parent
    for host in topology.hosts.values():
        out_host = msg.hosts.add(name=host.name, gpu_count=host.gpus)
        if host.parent is not None:
            out_host.parent = host.parent
        if nvlink_level > 0:
            out_host.nvlink_domain = _ancestor(topology, host.parent, nvlink_level)
    return msg


def topology_from_proto(msg: topology_pb2.Topology) -> Topology:
    """Rebuild and validate a topology (``TopologyError`` when the message is not one)."""
    domains = {d.name: d for d in msg.domains}
    gpu_counts = Counter(h.gpu_count for h in msg.hosts)
    gpus_per_host = gpu_counts.most_common(1)[0][0] if gpu_counts else 8
    hosts_under: dict[str | None, list[HostEntry]] = {}
    for host in msg.hosts:
        parent = _real_parent(domains, host.parent if host.HasField("parent") else None)
        entry: HostEntry = (
            host.name
            if host.gpu_count == gpus_per_host
            else HostSpec(name=host.name, gpus=host.gpu_count)
        )
        hosts_under.setdefault(parent, []).append(entry)
    try:
        spec = TopologySpec(
            name=msg.name,
            gpus_per_host=max(gpus_per_host, 1),
            host_fabric=_tier_from_proto(msg.host_fabric),
            tiers=tuple(_tier_from_proto(t) for t in msg.tiers),
            switches=tuple(
                SwitchSpec(
                    name=d.name,
                    tier=d.tier,
                    parent=_real_parent(domains, d.parent if d.HasField("parent") else None),
                    hosts=tuple(hosts_under.get(d.name, ())),
                )
                for d in msg.domains
                if not d.virtual
            ),
            hosts=tuple(hosts_under.get(None, ())),
        )
    except ValidationError as exc:
        raise TopologyError(f"topology message: {exc.errors()[0]['msg']}") from None
    return Topology.from_spec(spec)


def _tier_to_proto(tier: TierSpec, level: int) -> topology_pb2.Tier:
    return topology_pb2.Tier(
        name=tier.name,
        level=level,
        bandwidth_gbytes_per_s=tier.bandwidth_gbytes_per_s,
        latency_us=tier.latency_us,
        oversubscription=tier.oversubscription,
        nvlink=tier.nvlink,
        rails=tier.rails or 0,
        optional=tier.optional,
    )


def _tier_from_proto(msg: topology_pb2.Tier) -> TierSpec:
    try:
        return TierSpec(
            name=msg.name,
            bandwidth_gbytes_per_s=msg.bandwidth_gbytes_per_s,
            latency_us=msg.latency_us if msg.HasField("latency_us") else 0.0,
            oversubscription=msg.oversubscription if msg.HasField("oversubscription") else 1.0,
            nvlink=msg.nvlink,
            rails=msg.rails or None,
            optional=msg.optional,
        )
    except ValidationError as exc:
        raise TopologyError(f"tier {msg.name!r}: {exc.errors()[0]['msg']}") from None


def _real_parent(domains: Mapping[str, topology_pb2.Domain], name: str | None) -> str | None:
    """The nearest non-virtual domain at or above ``name``."""
    while name is not None and name in domains and domains[name].virtual:
        parent = domains[name]
        name = parent.parent if parent.HasField("parent") else None
    return name


def _ancestor(topology: Topology, domain: str | None, level: int) -> str:
    while domain is not None:
        node = topology.domains[domain]
        if node.level >= level:
            return node.name
        domain = node.parent
    return "cluster"
