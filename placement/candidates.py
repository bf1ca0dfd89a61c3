"""Candidate placements: a host order for a layout, verified and priced.

A candidate is one way to lay the job out: a :class:`~placement.ranks.JobLayout` and the hosts
in physical fill order. :func:`evaluate` builds its rank table, enumerates the real groups
(:mod:`placement.ranks`), prices them (:mod:`placement.cost`) and checks the hard rules the
count models only approximate (required tiers, the leaf cap). :func:`fills` turns one set of
counts per domain into candidates with both fill orders and the zone repair.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placement.context import JobContext
from placement.cost import cost_from_histograms
from placement.counts import CountProblem, CountTables
from placement.dims import Dim
from placement.fill import FillStrategy, fill_hosts, rank_table
from placement.ranks import JobLayout, span_histograms
from placement.result import RankTable
from placement.zones import zone_repair
from topology.index import IntArray

PRIORITY = {"cpsat": 0, "recursion": 1, "improved": 2, "best_fit": 3, "first_fit": 4}
"""Tie order between candidates of equal cost (lower first)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One verified, priced placement of the job (see the module docstring)."""

    name: str
    layout: JobLayout
    hosts: IntArray
    ranks: RankTable
    cost_ms: float
    by_dim: dict[Dim, float]
    histograms: dict[Dim, IntArray]
    valid: bool


def evaluate(ctx: JobContext, name: str, layout: JobLayout, hosts: IntArray) -> Candidate:
    """Rank table, spans, cost and validity of ``hosts`` (physical order) for ``layout``."""
    host_ids, gpus = rank_table(layout, hosts)
    histograms = span_histograms(ctx.index, ctx.par, host_ids)
    cost, by_dim = cost_from_histograms(ctx.costs, histograms)
    valid = all(
        int(histograms[d][level + 1 :].sum()) == 0
        for d, level in ctx.required.items()
        if d in histograms
    )
    cap = ctx.request.max_leaves
    if cap is not None and ctx.index.cluster_level > 1:
        valid = valid and np.unique(ctx.index.ancestors[hosts, 1]).size <= cap
    return Candidate(
        name, layout, hosts, RankTable(host_ids, gpus), cost, by_dim, histograms, valid
    )


def fills(
    ctx: JobContext,
    *,
    name: str,
    layout: JobLayout,
    problem: CountProblem,
    tables: CountTables,
    counts: dict[int, IntArray],
) -> list[Candidate]:
    """Candidates from one set of counts: both fill orders, and the zone repair if it applies."""
    out = [
        evaluate(ctx, name, layout, fill_hosts(problem, counts, strategy))
        for strategy in FillStrategy
    ]
    zoned = zone_repair(problem, tables, counts)
    if zoned is not None:
        hosts = fill_hosts(problem, zoned.counts, FillStrategy.PAIRED, zoned.forced)
        out.append(evaluate(ctx, name, layout, hosts))
    return out
