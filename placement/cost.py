"""The communication cost of a placement, in milliseconds per training step.

**Per group.** A group ``g`` of dimension ``d`` runs its collectives at the speed of the
highest level it spans (bottleneck model: a pipelined ring, or an all-to-all, is as slow as
its slowest edge, placement.md section 2.3). Spanning level ``l`` it takes, per step (the
alpha-beta model of NCCL's tuner, ``time = latency + bytes / bandwidth``, placement.md [22]
section 3)::

    C_d(l) = e_d * ( V_d * kappa_l / BW_l  +  M_d * lambda_l )           [ms]

- ``V_d``: bytes each GPU sends along ``d`` per step (:mod:`placement.volumes`);
- ``BW_l``: effective per-GPU bandwidth (GB/s) of traffic whose lowest common level is ``l``
  (the topology's tier bandwidth divided by the oversubscription of every tier below);
- ``kappa_l``: ECMP contention of level ``l`` (:meth:`PlacementParams.contention_of`):
  1 inside a leaf, above 1 for traffic that leaves it over hashed uplinks (placement.md
  section 9; Crux finds most production contention on ECMP paths, Meta runs 16 flows per
  pair plus enhanced ECMP to contain it);
- ``M_d``: sequential messages per step along ``d`` (ring steps of every collective,
  :func:`placement.volumes.dimension_messages`); ``lambda_l``: the one-way latency of
  level ``l`` (the topology's cumulative per-hop latencies). Latency is what makes an extra
  switch hop cost something even where two tiers have the same bandwidth;
- ``e_d``: exposure, the fraction of ``d``'s time not hidden behind compute
  (:meth:`PlacementParams.exposure_of`: TP, CP, EP 1; PP 0.5; DP 0.3 by default).

**Per placement.** The cost is, per dimension, the mean of ``C_d`` over its groups, summed::

    cost = sum_d (1 / |groups_d|) * sum_{g in groups_d} C_d(span(g))      [ms]

Every group of ``d`` has the same size, so this is the exposed communication time per step
averaged over the job's GPUs, in the same units as the lower bound of :mod:`placement.bound`.
TP, whose groups the hard rules keep inside NVLink, contributes ``C_tp(0)`` to both.
:meth:`PlacementParams.bandwidth_only` switches the three terms off (exposure 1, no
contention, no latency): the bytes-over-bandwidth model of the first placement engine.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from placement.dims import Dim
from placement.params import PlacementParams
from placement.request import PlacementRequest
from placement.volumes import dimension_messages, dimension_volumes_gb
from topology.index import FloatArray, IntArray, TopologyIndex

DimCosts = dict[Dim, FloatArray]
"""Per dimension, ``C_d(l)`` for every level ``l`` (ms per step)."""


def tier_costs_ms(index: TopologyIndex) -> FloatArray:
    """``1000 / BW_l``: milliseconds per GB per GPU of traffic spanning each level."""
    return np.asarray(1000.0 / index.bandwidth_gbytes_per_s, dtype=np.float64)


def contention_factors(index: TopologyIndex, params: PlacementParams) -> FloatArray:
    """``kappa_l`` per level: 1 up to the first network switch tier, then the ECMP factor."""
    first_switch = index.nvlink_level + 1
    out = np.ones(index.num_levels, dtype=np.float64)
    names = index.level_names
    for level in range(index.num_levels):
        if level > first_switch:
            out[level] = params.contention_of(names[level])
        elif names[level] in params.tier_contention:
            out[level] = params.tier_contention[names[level]]
    return out


def monotone_costs_ms(costs: FloatArray) -> FloatArray:
    """``c'_l = min over l' >= l of c_l'``: a non-decreasing lower envelope of ``costs``.

    Equal to ``costs`` on every sane fabric (bandwidth never rises and latency never falls
    going up the tree). The lower bound and the count models telescope over it, which needs
    non-negative steps.
    """
    return np.minimum.accumulate(costs[::-1])[::-1].copy()


def dimension_weights(request: PlacementRequest, params: PlacementParams) -> dict[Dim, float]:
    """``w_d = e_d * V_d`` (GB) of every dimension (0 for dimensions of size 1).

    Used to rank dimensions (which nests innermost), not to price them.
    """
    volumes = dimension_volumes_gb(request.par.sizes, request.model, request.volumes_gb)
    return {dim: params.exposure_of(dim) * volumes[dim] for dim in volumes}


def dimension_costs(
    index: TopologyIndex, request: PlacementRequest, params: PlacementParams
) -> DimCosts:
    """``C_d(l)`` of every dimension of size above 1 (see the module docstring)."""
    sizes = request.par.sizes
    volumes = dimension_volumes_gb(sizes, request.model, request.volumes_gb)
    per_gb = tier_costs_ms(index) * contention_factors(index, params)
    latency_ms = np.asarray(index.latency_us, dtype=np.float64) / 1000.0
    messages = dimension_messages(sizes, request.model) if params.latency else {}
    out: DimCosts = {}
    for dim, volume in volumes.items():
        if sizes[dim] <= 1:
            continue
        raw = volume * per_gb + messages.get(dim, 0.0) * latency_ms
        out[dim] = params.exposure_of(dim) * raw
    return out


def monotone_dimension_costs(costs: Mapping[Dim, FloatArray]) -> DimCosts:
    """:func:`monotone_costs_ms` of every dimension's costs."""
    return {dim: monotone_costs_ms(c) for dim, c in costs.items()}


def cost_from_histograms(
    costs: Mapping[Dim, FloatArray], histograms: Mapping[Dim, IntArray]
) -> tuple[float, dict[Dim, float]]:
    """The cost (ms) and its per-dimension parts from each dimension's span histogram.

    Args:
        costs: ``C_d(l)`` per dimension.
        histograms: per dimension, groups spanning each level.
    """
    by_dim: dict[Dim, float] = {}
    for dim, hist in histograms.items():
        groups = int(hist.sum())
        if groups == 0 or dim not in costs:
            continue
        by_dim[dim] = float(np.dot(hist, costs[dim]) / groups)
    return float(sum(by_dim.values())), by_dim
