"""Validate a request against a snapshot and derive what every placement step needs.

:func:`job_context` checks the hard rules that no cluster state can satisfy (raising
:class:`~placement.errors.InvalidRequestError` or the index's ``unknown_host`` /
``unknown_tier`` errors), then fixes ``G`` (GPUs per host of the job), the identity and
transposed layouts, the dimension weights, the tier costs, the required level of every
dimension, and which hosts are usable. :func:`count_problem` builds the count model of one
layout (:mod:`placement.counts`).

Rules checked here:

- a dimension in ``nvlink_dims`` (``tp`` always) must fit one NVLink domain: the aligned block
  of ranks holding its groups (:meth:`Parallelism.prefix_gpus`) may not exceed the domain
  (``tp_exceeds_nvlink_domain`` for TP itself, else ``nvlink_group_too_large``), and for jobs
  of a host or more it must tile hosts without straddling one (``nvlink_group_misaligned``);
- a ``required_tier`` of ``host`` obeys the same rule with the host as the domain
  (``group_exceeds_host``); other required tiers become count constraints;
- ``G`` is the most common GPU count per host (ties: the larger); multi-host jobs use only
  hosts of that size, so local index ``rank mod G`` is the same rail everywhere.

Layouts tried (:class:`~placement.ranks.JobLayout`): the framework's nesting; the heaviest
dimension innermost; and that with dimensions that have a required tier innermost too (so a
light dimension that must stay in a pod can).

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from placement.cost import (
    DimCosts,
    dimension_costs,
    dimension_weights,
    monotone_dimension_costs,
)
from placement.counts import BlockTerm, CountProblem
from placement.dims import Dim
from placement.errors import InvalidRequestError
from placement.params import PlacementParams
from placement.ranks import JobLayout, job_layout, multi_rank_dims
from placement.request import Parallelism, PlacementRequest
from placement.snapshot import Snapshot
from topology.index import BoolArray, TopologyIndex

NS_PER_MS = 1e6


@dataclass(frozen=True, slots=True)
class JobContext:
    """Derived facts of one request on one snapshot.

    Attributes:
        snapshot: the snapshot.
        request: the request.
        params: the parameters.
        gpus_per_host: ``G``.
        layouts: candidate layouts, identity first.
        weights: ``w_d = e_d * V_d`` per dimension (ranks dimensions for the layouts).
        costs: ``C_d(l)`` per dimension and level (ms per step, :mod:`placement.cost`).
        monotone: their non-decreasing envelopes ``C'_d(l)``.
        required: per dimension, the highest level its groups may span.
        usable: per host, in service and not excluded.
        eligible: per host, usable, wholly free and of ``G`` GPUs (multi-host jobs).
    """

    snapshot: Snapshot
    request: PlacementRequest
    params: PlacementParams
    gpus_per_host: int
    layouts: tuple[JobLayout, ...]
    weights: dict[Dim, float]
    costs: DimCosts
    monotone: DimCosts
    required: dict[Dim, int]
    usable: BoolArray
    eligible: BoolArray

    @property
    def index(self) -> TopologyIndex:
        """The topology index."""
        return self.snapshot.index

    @property
    def par(self) -> Parallelism:
        """The job's parallelism."""
        return self.request.par

    @property
    def hosts(self) -> int:
        """``H``: hosts the job needs."""
        return self.layouts[0].num_hosts

    @property
    def sub_host(self) -> bool:
        """The job is smaller than one host (partial-host placement)."""
        return self.request.gpus < self.gpus_per_host


def common_gpus_per_host(index: TopologyIndex) -> int:
    """The most common GPU count per host (ties: the larger)."""
    counts = np.bincount(index.host_gpus)
    return int(len(counts) - 1 - np.argmax(counts[::-1]))


def _nvlink_domain_gpus(index: TopologyIndex, gpus_per_host: int) -> int:
    if index.nvlink_level == 0:
        return gpus_per_host
    return int(index.gpus_per_domain(index.nvlink_level).max())


def _check_group_fits(
    par: Parallelism, dim: Dim, domain_gpus: int, gpus_per_host: int, *, reason: str, what: str
) -> None:
    sizes = par.sizes
    block = par.prefix_gpus(dim)
    if dim == "tp" and par.tp > domain_gpus:
        raise InvalidRequestError(
            f"tp={par.tp} exceeds the NVLink domain of {domain_gpus} GPUs",
            reason="tp_exceeds_nvlink_domain",
        )
    if block > domain_gpus:
        raise InvalidRequestError(
            f"{dim}={sizes[dim]} groups span {block} GPUs with order {par.order}, more than "
            f"the {what} of {domain_gpus} GPUs",
            reason=reason,
        )
    if par.world_size < gpus_per_host:
        return
    straddles = gpus_per_host % block if block <= gpus_per_host else block % gpus_per_host
    if straddles:
        raise InvalidRequestError(
            f"{dim} groups span {block} GPUs with order {par.order}, which does not tile "
            f"hosts of {gpus_per_host} GPUs; some groups would straddle two hosts",
            reason="nvlink_group_misaligned",
        )


def job_context(
    snapshot: Snapshot, request: PlacementRequest, params: PlacementParams
) -> JobContext:
    """Validate ``request`` on ``snapshot`` and derive its context (see module docstring)."""
    index = snapshot.index
    par = request.par
    g = common_gpus_per_host(index)
    domain_gpus = _nvlink_domain_gpus(index, g)
    required: dict[Dim, int] = {}
    for dim, tier in request.required_tier.items():
        required[dim] = index.level(tier)
    sizes = par.sizes
    for dim in sorted(request.nvlink_dims):
        if sizes[dim] > 1:
            _check_group_fits(
                par, dim, domain_gpus, g, reason="nvlink_group_too_large", what="NVLink domain"
            )
            required[dim] = min(required.get(dim, index.nvlink_level), index.nvlink_level)
    for dim, level in required.items():
        if level == 0 and sizes[dim] > 1 and dim not in request.nvlink_dims:
            _check_group_fits(par, dim, g, g, reason="group_exceeds_host", what="host")
    excluded = np.zeros(index.num_hosts, dtype=np.bool_)
    for name in request.excluded_hosts:
        excluded[index.host_id(name)] = True
    usable = snapshot.available_hosts & ~excluded
    eligible = usable & snapshot.whole_free_hosts & (index.host_gpus == g)
    weights = dimension_weights(request, params)
    identity = job_layout(par, g)
    layouts = [identity]
    if params.try_transposed_layout:
        nvlink = frozenset(d for d in request.nvlink_dims if sizes[d] > 1)
        kept = frozenset(d for d in required if sizes[d] > 1) | nvlink
        for pinned in (nvlink, kept):
            transposed = identity.transposed(weights, pinned)
            if all(transposed.physical != seen.physical for seen in layouts):
                layouts.append(transposed)
    costs = dimension_costs(index, request, params)
    return JobContext(
        snapshot=snapshot,
        request=request,
        params=params,
        gpus_per_host=g,
        layouts=tuple(layouts),
        weights=weights,
        costs=costs,
        monotone=monotone_dimension_costs(costs),
        required={d: lv for d, lv in required.items() if sizes[d] > 1},
        usable=usable,
        eligible=eligible,
    )


def count_problem(
    ctx: JobContext, layout: JobLayout, eligible: BoolArray | None = None
) -> CountProblem:
    """The count model of ``layout`` (:mod:`placement.counts`).

    ``eligible`` restricts the hosts to a subset of ``ctx.eligible`` (restricted re-solves
    of :mod:`placement.improve`).
    """
    index = ctx.index
    top = index.cluster_level
    steps = {d: np.diff(c) for d, c in ctx.monotone.items()}
    groups = {d: ctx.par.world_size // ctx.par.sizes[d] for d in multi_rank_dims(ctx.par)}
    blocks: list[BlockTerm] = []
    multiple = [1] * (top + 1)
    for digit_index, block in layout.blocks():
        digit = layout.digits[digit_index]
        if digit.dim is not None:
            dims: list[Dim] = [digit.dim]
            share = block * layout.gpus_per_host / layout.gpus
        else:
            dims = [d for d in groups if _spans_hosts(ctx.par, d, layout.gpus_per_host)]
            share = 1.0
        saved_ms = np.zeros(top, dtype=np.float64)
        for dim in dims:
            if dim in steps:
                saved_ms += steps[dim] * share
        reward = np.zeros(top + 1, dtype=np.int64)
        reward[:top] = np.rint(saved_ms * NS_PER_MS).astype(np.int64)
        blocks.append(BlockTerm(block, reward, digit.dim or "job"))
        for dim in dims:
            level = ctx.required.get(dim)
            if level is None:
                continue
            for lv in range(max(level, 1), top + 1):
                multiple[lv] = math.lcm(multiple[lv], block)
    eligible = ctx.eligible if eligible is None else eligible & ctx.eligible
    free = tuple(
        [eligible.astype(np.int64)]
        + [index.sum_per_domain(lv, eligible.astype(np.int64)) for lv in range(1, top + 1)]
    )
    levels = np.arange(top + 1, dtype=np.int64)
    return CountProblem(
        index=index,
        hosts=layout.num_hosts,
        eligible=eligible,
        free=free,
        blocks=tuple(blocks),
        multiple=tuple(multiple),
        use_ns=np.rint(levels * ctx.params.domain_use_us * 1e3).astype(np.int64),
        partial_ns=np.rint(levels * ctx.params.partial_domain_us * 1e3).astype(np.int64),
        max_leaves=ctx.request.max_leaves,
    )


def _spans_hosts(par: Parallelism, dim: Dim, gpus_per_host: int) -> bool:
    block = par.prefix_gpus(dim)
    return block > gpus_per_host or gpus_per_host % block != 0
