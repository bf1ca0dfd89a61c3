"""A per-tier summary of a topology, for people (``firsthopctl topology show``) and JSON.

Must not import grpc, generated protos, databases, subprocess or UI libraries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from topology.model import Topology


@dataclass(frozen=True, slots=True)
class TierSummary:
    """One level of the hierarchy."""

    level: int
    name: str
    domains: int
    virtual_domains: int
    hosts_min: int
    hosts_max: int
    gpus_min: int
    gpus_max: int
    bandwidth_gbytes_per_s: float
    """Effective per-GPU bandwidth of traffic whose lowest common level is this one."""
    latency_us: float
    oversubscription: float
    nvlink: bool
    rails: int | None


@dataclass(frozen=True, slots=True)
class TopologySummary:
    """The whole topology in a few numbers."""

    name: str
    hosts: int
    gpus: int
    gpus_per_host: tuple[int, ...]
    """Distinct GPU counts per host, ascending."""
    nvlink_domain: str
    """Tier whose domains are one NVLink fabric."""
    tiers: tuple[TierSummary, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return asdict(self)


def summarize(topology: Topology) -> TopologySummary:
    """Summarise ``topology`` level by level, host first and cluster last."""
    index = topology.index
    specs = [topology.host_fabric, *topology.tiers, None]
    tiers = []
    for level, name in enumerate(index.level_names):
        hosts = index.hosts_per_domain(level)
        gpus = index.gpus_per_domain(level)
        spec = specs[level]
        tiers.append(
            TierSummary(
                level=level,
                name=name,
                domains=index.num_domains(level),
                virtual_domains=int(index.domain_virtual[level].sum()),
                hosts_min=int(hosts.min()),
                hosts_max=int(hosts.max()),
                gpus_min=int(gpus.min()),
                gpus_max=int(gpus.max()),
                bandwidth_gbytes_per_s=float(index.bandwidth_gbytes_per_s[level]),
                latency_us=float(index.latency_us[level]),
                oversubscription=spec.oversubscription if spec else 1.0,
                nvlink=spec.nvlink if spec else False,
                rails=spec.rails if spec else None,
            )
        )
    return TopologySummary(
        name=topology.name,
        hosts=index.num_hosts,
        gpus=index.num_gpus,
        gpus_per_host=tuple(int(g) for g in np.unique(index.host_gpus)),
        nvlink_domain=index.level_names[index.nvlink_level],
        tiers=tuple(tiers),
    )
