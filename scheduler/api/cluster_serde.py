"""Translation of the cluster-wide views: the topology, the cluster status, explanations.

Paired ``to``/``from`` functions with round-trip tests, like :mod:`scheduler.api.serde`; an
explanation travels one way only (it carries placer results, which stay on the server).

Must not import ``scheduler.store``, ``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from pydantic import ValidationError

from firsthop.v1 import admin_pb2, jobs_pb2, topology_pb2
from placement import Placement
from scheduler.api.serde import (
    allocation_to_proto,
    job_to_proto,
    require_time,
    set_time,
    timestamp_to_proto,
)
from scheduler.core.explain import Explanation
from scheduler.core.records import Allocation, Job, RankSlot
from scheduler.core.status import ClusterStatus, QueueStatus, TierStatus
from topology.errors import TopologyError
from topology.index import TopologyIndex
from topology.model import Topology
from topology.spec import HostEntry, HostSpec, SwitchSpec, TopologySpec
from topology.tiers import TierSpec

# ---------------------------------------------------------------- topology


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


# ---------------------------------------------------------------- cluster status and explain


def queue_status_to_proto(status: QueueStatus) -> admin_pb2.QueueStatus:
    """The wire form of one queue's depth and usage."""
    queue = admin_pb2.Queue(name=status.name, priority=status.priority, weight=status.weight)
    if status.gpu_quota is not None:
        queue.gpu_quota = status.gpu_quota
    return admin_pb2.QueueStatus(
        queue=queue,
        pending_jobs=status.pending_jobs,
        active_jobs=status.running_jobs,
        gpus_allocated=status.held_gpus,
        gpus_pending=status.pending_gpus,
    )


def queue_status_from_proto(msg: admin_pb2.QueueStatus) -> QueueStatus:
    """One queue's depth and usage from the wire (the queue's labels are not part of it)."""
    queue = msg.queue
    return QueueStatus(
        name=queue.name,
        priority=queue.priority,
        gpu_quota=queue.gpu_quota if queue.HasField("gpu_quota") else None,
        weight=queue.weight,
        pending_jobs=msg.pending_jobs,
        pending_gpus=msg.gpus_pending,
        running_jobs=msg.active_jobs,
        held_gpus=msg.gpus_allocated,
    )


def cluster_status_to_proto(status: ClusterStatus) -> admin_pb2.ClusterStatus:
    """The wire form of the cluster status."""
    return admin_pb2.ClusterStatus(
        at=timestamp_to_proto(status.at),
        hosts_total=status.hosts,
        hosts_by_state=status.nodes_by_state,
        hosts_by_health=status.nodes_by_health,
        gpus_total=status.gpus,
        gpus_allocated=status.allocated_gpus,
        gpus_free=status.free_gpus,
        gpus_schedulable=status.schedulable_gpus,
        gpus_fenced=status.fenced_gpus,
        stranded_gpus=status.stranded_gpus,
        stranded_hosts=status.stranded_hosts,
        tiers=[
            admin_pb2.TierStatus(
                tier=t.name,
                level=level,
                domains=t.domains,
                whole_free_domains=t.whole_free,
                partly_free_domains=t.partly_free,
                full_domains=t.full,
                largest_placeable_gpus=t.largest_job,
            )
            for level, t in enumerate(status.tiers)
        ],
        queues=[queue_status_to_proto(q) for q in status.queues],
        jobs_by_state=status.jobs_by_state,
        fits=[admin_pb2.FitCount(gpus=size, jobs=n) for size, n in sorted(status.fits.items())],
    )


def cluster_status_from_proto(msg: admin_pb2.ClusterStatus) -> ClusterStatus:
    """The cluster status of a wire message."""
    return ClusterStatus(
        at=require_time(msg, "at", "cluster status"),
        hosts=msg.hosts_total,
        gpus=msg.gpus_total,
        schedulable_gpus=msg.gpus_schedulable,
        allocated_gpus=msg.gpus_allocated,
        fenced_gpus=msg.gpus_fenced,
        free_gpus=msg.gpus_free,
        stranded_gpus=msg.stranded_gpus,
        stranded_hosts=msg.stranded_hosts,
        nodes_by_state=dict(sorted(msg.hosts_by_state.items())),
        nodes_by_health=dict(sorted(msg.hosts_by_health.items())),
        jobs_by_state=dict(sorted(msg.jobs_by_state.items())),
        queues=tuple(queue_status_from_proto(q) for q in msg.queues),
        tiers=tuple(
            TierStatus(
                name=t.tier,
                domains=t.domains,
                whole_free=t.whole_free_domains,
                partly_free=t.partly_free_domains,
                full=t.full_domains,
                largest_job=t.largest_placeable_gpus,
            )
            for t in msg.tiers
        ),
        fits={f.gpus: f.jobs for f in msg.fits},
    )


def placement_to_proto(
    placement: Placement, index: TopologyIndex, at: datetime
) -> jobs_pb2.Allocation:
    """A placer result as the allocation it would give (host names from ``index``)."""
    rows = placement.ranks.rows(index)
    allocation = Allocation(
        ranks=tuple(RankSlot(rank=r["rank"], host=r["host"], gpu=r["gpu"]) for r in rows),
        cost=float(placement.cost_ms),
        lower_bound=float(placement.lower_bound.total_ms),
        placed_at=at,
    )
    return allocation_to_proto(allocation)


def explanation_to_proto(
    explanation: Explanation, job: Job, index: TopologyIndex, at: datetime
) -> jobs_pb2.ExplainJobResponse:
    """The wire form of an explanation (one way: placer results do not travel back)."""
    msg = jobs_pb2.ExplainJobResponse(
        job=job_to_proto(job),
        reason=explanation.reason,
        message=explanation.message,
        details=list(explanation.details),
        queue_position=explanation.queue_position or 0,
    )
    if explanation.placement is not None:
        msg.would_place.CopyFrom(placement_to_proto(explanation.placement, index, at))
    if explanation.failure is not None:
        failure = explanation.failure
        msg.placement_failure = f"{failure.reason.value}: {failure.message}"
    set_time(msg, "reservation_start", explanation.reservation_start)
    return msg
