"""The communication cost of a placement, in milliseconds per training step.

Definitions (all per training step):

- ``V_d``: bytes each GPU sends along dimension ``d`` (GB, :mod:`placement.volumes`);
  ``e_d``: its exposure factor (:class:`~placement.params.PlacementParams`);
  ``w_d = e_d * V_d`` its *weight* (GB).
- ``c_l = 1000 / BW_l``: milliseconds per GB per GPU of traffic whose lowest common level is
  ``l``, from the index's effective per-GPU bandwidth ``BW_l`` (GB/s) of that level.
- A group ``g`` of ``d`` runs its collective at the bandwidth of the highest level it spans
  (bottleneck model: a ring is as slow as its slowest edge), so it takes ``w_d * c_span(g)``.

The cost of a placement is the mean, over each dimension's groups, of that time, summed over
dimensions::

    cost = sum_d  w_d * (1 / |groups_d|) * sum_{g in groups_d} c_span(g)      [ms]

Because every group of ``d`` has the same size, this is also the communication time per step
averaged over the job's GPUs: a meaningful absolute figure, comparable with the lower bound of
:mod:`placement.bound` (same units), so ``cost / lower bound`` reads as "how much slower than
physically necessary". TP, whose groups the hard rules keep inside NVLink, contributes the
same ``w_tp * c_nvlink`` to both.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from placement.dims import Dim
from placement.params import PlacementParams
from placement.request import PlacementRequest
from placement.volumes import dimension_volumes_gb
from topology.index import FloatArray, IntArray, TopologyIndex


def tier_costs_ms(index: TopologyIndex) -> FloatArray:
    """``c_l``: milliseconds per GB per GPU of traffic spanning each level."""
    return np.asarray(1000.0 / index.bandwidth_gbytes_per_s, dtype=np.float64)


def monotone_costs_ms(costs: FloatArray) -> FloatArray:
    """``c'_l = min over l' >= l of c_l'``: a non-decreasing lower envelope of ``costs``.

    Equal to ``costs`` on every sane fabric (bandwidth never rises going up the tree). The
    lower bound and the count models telescope over it, which needs non-negative steps.
    """
    return np.minimum.accumulate(costs[::-1])[::-1].copy()


def dimension_weights(request: PlacementRequest, params: PlacementParams) -> dict[Dim, float]:
    """``w_d = e_d * V_d`` (GB) of every dimension (0 for dimensions of size 1)."""
    volumes = dimension_volumes_gb(request.par.sizes, request.model, request.volumes_gb)
    return {dim: params.exposure_of(dim) * volumes[dim] for dim in volumes}


def cost_from_histograms(
    costs: FloatArray, weights: Mapping[Dim, float], histograms: Mapping[Dim, IntArray]
) -> tuple[float, dict[Dim, float]]:
    """The cost (ms) and its per-dimension parts from each dimension's span histogram.

    Args:
        costs: ``c_l`` per level.
        weights: ``w_d`` per dimension.
        histograms: per dimension, groups spanning each level.
    """
    by_dim: dict[Dim, float] = {}
    for dim, hist in histograms.items():
        groups = int(hist.sum())
        if groups == 0:
            continue
        by_dim[dim] = float(weights.get(dim, 0.0) * np.dot(hist, costs) / groups)
    return float(sum(by_dim.values())), by_dim
