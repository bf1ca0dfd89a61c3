"""The placer's cost model applied to a rank table chosen by someone else.

Baseline policies choose hosts and rank order themselves; their communication cost must be
measured with the *same* model the placer optimises (``placement.cost``: each group of a
dimension runs at the bandwidth of the highest tier it spans). This is the one module of the
simulator that reaches below ``placement.place``: it calls the placer's own span and cost
functions (never re-implements them), and a test checks that it reproduces
``Placement.cost_ms`` exactly on placements the placer made, so a change of the cost model
(for example new terms) shows up as a failing test, not as silently different figures.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime`` or ``agents``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement import PlacementParams, PlacementRequest
from placement.cost import cost_from_histograms, dimension_costs
from placement.dims import Dim
from placement.ranks import span_histograms
from placement.volumes import dimension_volumes_gb
from topology.index import IntArray, TopologyIndex


@dataclass(frozen=True, slots=True)
class RankCost:
    """Cost of a rank table under the placer's model.

    Attributes:
        cost_ms: communication cost per step (ms), as ``Placement.cost_ms``.
        by_dim_ms: its per-dimension parts.
        spans: per dimension, groups whose highest spanned level is each level name.
        cross_tier_gb: bytes per GPU per step (GB) of groups that span more than one leaf
            (their collective crosses the spine: the traffic oversubscription hurts).
    """

    cost_ms: float
    by_dim_ms: dict[Dim, float]
    spans: dict[Dim, dict[str, int]]
    cross_tier_gb: float


def rank_cost(
    index: TopologyIndex,
    request: PlacementRequest,
    params: PlacementParams,
    rank_hosts: IntArray,
) -> RankCost:
    """Cost of running ``request`` with rank ``r`` on host ``rank_hosts[r]``."""
    histograms = span_histograms(index, request.par, np.asarray(rank_hosts, dtype=np.int64))
    cost, by_dim = cost_from_histograms(dimension_costs(index, request, params), histograms)
    names = index.level_names
    spans = {
        d: {names[lv]: int(n) for lv, n in enumerate(h.tolist())} for d, h in histograms.items()
    }
    volumes = dimension_volumes_gb(request.par.sizes, request.model, request.volumes_gb)
    cross = 0.0
    for dim, hist in histograms.items():
        groups = int(hist.sum())
        if groups:
            cross += volumes.get(dim, 0.0) * float(hist[2:].sum()) / groups
    return RankCost(cost, by_dim, spans, cross)
