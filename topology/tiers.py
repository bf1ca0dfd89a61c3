"""Bandwidth tiers of a GPU cluster fabric and their H100-class defaults.

Figures follow shared/research/placement.md section 3: NVLink4 at 450 GB/s per direction per
GPU, one 400 Gb/s NIC (50 GB/s) per GPU under a non-blocking leaf or rail group, non-blocking
pods, and an oversubscribed layer above the pods (1:7 at Meta's aggregation layer, 15:1 at
Alibaba HPN's core). Latencies are the NCCL model's per-hop figures (0.47 us NVLink LL,
2.7 us per network step) plus one switch hop per tier climbed.

Must not import anything outside the standard library and pydantic.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Name of the implicit bottom level (one host) and the implicit root level.
HOST_LEVEL = "host"
CLUSTER_LEVEL = "cluster"
RESERVED_TIER_NAMES = frozenset({HOST_LEVEL, CLUSTER_LEVEL})

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

PositiveFloat = Annotated[float, Field(gt=0)]


class TierSpec(BaseModel):
    """One tier of the fabric.

    ``bandwidth_gbytes_per_s`` is the per-GPU bandwidth (GB/s, one direction) of the links at this
    tier. ``oversubscription`` is the downlink:uplink ratio of this tier's switches, so it
    throttles every tier above it: the effective bandwidth of traffic whose lowest common tier
    is ``t`` is ``bandwidth(t) / prod(oversubscription(s) for s below t)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    bandwidth_gbytes_per_s: PositiveFloat
    latency_us: Annotated[float, Field(ge=0)] = 0.0
    oversubscription: Annotated[float, Field(ge=1.0)] = 1.0
    nvlink: bool = False
    """GPUs under one switch of this tier share one NVLink domain (NVL72-class racks)."""
    rails: Annotated[int, Field(ge=1)] | None = None
    """Rail-optimized: GPU index i of every host in the domain attaches to rail switch i."""
    optional: bool = False
    """Hosts or switches may skip this tier (mixed depths must be declared)."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"tier name {value!r} must match {_NAME.pattern}")
        return value


#: Intra-host fabric of an H100 SXM host (NVLink4 through NVSwitch).
NVLINK_H100 = TierSpec(name="nvlink", bandwidth_gbytes_per_s=450.0, latency_us=0.47, nvlink=True)
#: NVLink rack domain of a GB200 NVL72 (72 GPUs over 18 hosts).
NVL72_RACK = TierSpec(name="rack", bandwidth_gbytes_per_s=900.0, latency_us=0.7, nvlink=True)
#: Leaf / ToR: one NDR 400 Gb/s NIC per GPU, non-blocking.
LEAF_400G = TierSpec(name="leaf", bandwidth_gbytes_per_s=50.0, latency_us=2.7)
#: Rail group: the leaf-level domain of a rail-optimized fabric (8 rails).
RAIL_GROUP_400G = TierSpec(name="rail_group", bandwidth_gbytes_per_s=50.0, latency_us=2.7, rails=8)
#: Pod / spine: non-blocking inside, 1:7 to the layer above (Meta's aggregation layer).
POD_SPINE = TierSpec(name="pod", bandwidth_gbytes_per_s=50.0, latency_us=4.0, oversubscription=7.0)
#: Core above the pods.
CORE = TierSpec(name="core", bandwidth_gbytes_per_s=50.0, latency_us=10.0)


def effective_bandwidths(host_fabric: TierSpec, tiers: list[TierSpec]) -> list[float]:
    """Per-GPU GB/s of traffic whose lowest common level is host, each tier, then cluster.

    The cluster level is what traffic between two top-level switches gets: the top tier's
    bandwidth throttled by the oversubscription of every tier, the top one included.
    """
    out = [host_fabric.bandwidth_gbytes_per_s]
    throttle = 1.0
    for tier in tiers:
        out.append(tier.bandwidth_gbytes_per_s / throttle)
        throttle *= tier.oversubscription
    top = tiers[-1].bandwidth_gbytes_per_s if tiers else host_fabric.bandwidth_gbytes_per_s
    out.append(top / throttle)
    return out


def cumulative_latencies(host_fabric: TierSpec, tiers: list[TierSpec]) -> list[float]:
    """One-way latency (us) of traffic whose lowest common level is host, each tier, cluster.

    Climbing to tier ``t`` pays the latency of every tier up to and including ``t``; the
    cluster level pays once more the top tier's hop (through the core or root).
    """
    out = [host_fabric.latency_us]
    total = 0.0
    for tier in tiers:
        total += tier.latency_us
        out.append(total)
    out.append(total + (tiers[-1].latency_us if tiers else 0.0))
    return out
