"""Partial re-placement: move only the ranks on hosts a running job must leave.

:func:`replace` is the placer's answer to "host X failed (or is drained, or is due for
maintenance): where do its ranks go?" A full re-placement (:func:`placement.place` on the
cluster with the job's GPUs freed) may move every rank of a 16,384-GPU job to repair one host;
in-place repair keeps every surviving rank on its GPU and swaps the vacated hosts for others
(Meta's MAST, ByteDance's ByteRobust, the Llama 3 team; ``shared/research/anchors.md``).

**What moves.** A job of a host or more occupies whole hosts, and the rank table puts rank
``r`` on local GPU ``r mod G`` of its host (rail alignment). A vacated host's ranks therefore
move as one *slot* to one whole free host of ``G`` GPUs, keeping their local GPU indices, so
the hard rules that hold inside a host keep holding. Groups that span hosts are checked again
(NVLink domains larger than a host, required tiers, the leaf cap) by the same span histograms
as :func:`placement.place`'s verifier.

**Which host.** The cost of a placement depends on a host only through the switch domains
above it, and only through whether each of them already holds some of the job. So the free
hosts fall into a few *signature* classes (per level: the domain when the job uses it, else
"elsewhere"), and every host of one class costs the same. Each vacated slot, in host order,
is tried on one representative of every class and goes to the cheapest; ties go to the host
nearest the vacated one (same leaf, then same pod: its switches already carry that traffic),
then to a spare (operators keep spares for exactly this), then to the leaf with the fewest free
hosts (best fit: keep whole leaves free), then to the lowest host id.

**Fallback.** The full re-placement is computed as well, on the same freed snapshot. It wins
when the partial answer costs more than ``full_threshold`` times it, or when no partial answer
exists; its lower bound is reported beside either, so the ratio reads as for :func:`place`.

Jobs smaller than a host take one host's GPUs; moving them *is* placing them again, so they
always get the full answer.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from placement.context import JobContext, job_context
from placement.cost import cost_from_histograms
from placement.engine import place
from placement.errors import FailureReason
from placement.params import PlacementParams
from placement.ranks import span_histograms
from placement.request import PlacementRequest
from placement.result import Placement, PlacementFailure, RankTable
from placement.snapshot import Snapshot
from topology.errors import InvalidInputError
from topology.index import BoolArray, IntArray

DEFAULT_FULL_THRESHOLD = 1.10
"""A full re-placement replaces the partial one only when that costs over 10 % more."""


class ReplaceMethod:
    """How a :class:`Replacement` was found (stable strings)."""

    PARTIAL = "partial"
    FULL = "full"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Replacement:
    """A running job's new rank table after vacating some hosts.

    Attributes:
        ranks: the new rank table.
        method: ``partial`` (only the vacated hosts' ranks moved), ``full`` (placed again from
            scratch) or ``unchanged`` (nothing to vacate).
        moves: vacated host id -> replacement host id (partial only).
        cost_before_ms: cost of the current rank table (as if every host were still there).
        cost_ms: cost of the new rank table.
        full_cost_ms: cost of the full re-placement, when one exists.
        lower_bound_ms: lower bound of a full re-placement on the freed cluster, when known.
        ranks_moved: ranks whose host or GPU changed.
        spares_used: replacement hosts that were spares.
        solve_seconds: wall time of :func:`replace`.
        full: the full re-placement considered, when one exists.
    """

    ranks: RankTable
    method: str
    moves: dict[int, int]
    cost_before_ms: float
    cost_ms: float
    full_cost_ms: float | None
    lower_bound_ms: float | None
    ranks_moved: int
    spares_used: tuple[int, ...] = ()
    solve_seconds: float = 0.0
    full: Placement | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float | None:
        """``cost / lower bound`` of a full re-placement (``None`` without a bound)."""
        if self.lower_bound_ms is None:
            return None
        if self.lower_bound_ms <= 0:
            return 1.0 if self.cost_ms <= 0 else float("inf")
        return self.cost_ms / self.lower_bound_ms


def replace(
    snapshot: Snapshot,
    request: PlacementRequest,
    current: RankTable,
    vacate: Iterable[int],
    *,
    spares: Iterable[int] = (),
    params: PlacementParams | None = None,
    full_threshold: float = DEFAULT_FULL_THRESHOLD,
) -> Replacement | PlacementFailure:
    """Move the ranks of ``current`` that sit on ``vacate`` (see the module docstring).

    Args:
        snapshot: the cluster as it is, with the job's own GPUs busy.
        request: the job's placement request (the one it was placed with).
        current: the job's rank table.
        vacate: ids of hosts the job must leave (a subset of the table's hosts).
        spares: ids of spare hosts; preferred over other free hosts of equal cost.
        params: placer parameters (the full re-placement uses them too).
        full_threshold: the full re-placement wins when the partial one costs more than this
            many times as much.

    Raises:
        InvalidInputError: ``rank_table_mismatch`` when the table does not fit the request,
            ``host_not_in_job`` when a vacated host holds none of the job's ranks; and the
            errors of :func:`place` for a request that can never be placed.
    """
    start = time.perf_counter()
    params = params or PlacementParams()
    index = snapshot.index
    if len(current) != request.gpus:
        raise InvalidInputError(
            f"the rank table has {len(current)} ranks; the job has {request.gpus}",
            reason="rank_table_mismatch",
        )
    job_hosts = np.unique(current.hosts)
    gone = sorted({int(h) for h in vacate})
    stray = [h for h in gone if h not in set(job_hosts.tolist())]
    if stray:
        names = [index.host_names[h] if 0 <= h < index.num_hosts else str(h) for h in stray]
        raise InvalidInputError(
            f"hosts {names[:5]} hold none of the job's ranks", reason="host_not_in_job"
        )
    freed = _freed_snapshot(snapshot, current, gone)
    ctx = job_context(freed, request, params)
    before_ms = _cost(ctx, current.hosts)[0]
    if not gone:
        return Replacement(
            ranks=current,
            method=ReplaceMethod.UNCHANGED,
            moves={},
            cost_before_ms=before_ms,
            cost_ms=before_ms,
            full_cost_ms=None,
            lower_bound_ms=None,
            ranks_moved=0,
            solve_seconds=time.perf_counter() - start,
        )
    full = place(freed, request, params)
    full_placement = full if isinstance(full, Placement) else None
    spare_mask = np.zeros(index.num_hosts, dtype=np.bool_)
    spare_ids = [h for h in {int(s) for s in spares} if 0 <= h < index.num_hosts]
    spare_mask[spare_ids] = True
    partial = None if ctx.sub_host else _partial(ctx, current, gone, job_hosts, spare_mask)
    bound = full_placement.lower_bound.total_ms if full_placement is not None else None
    full_cost = full_placement.cost_ms if full_placement is not None else None
    use_full = full_placement is not None and (
        partial is None or partial[1] > full_threshold * full_placement.cost_ms + 1e-9
    )
    if use_full:
        assert full_placement is not None
        return Replacement(
            ranks=full_placement.ranks,
            method=ReplaceMethod.FULL,
            moves={},
            cost_before_ms=before_ms,
            cost_ms=full_placement.cost_ms,
            full_cost_ms=full_cost,
            lower_bound_ms=bound,
            ranks_moved=_ranks_moved(current, full_placement.ranks),
            spares_used=tuple(
                h for h in np.unique(full_placement.ranks.hosts).tolist() if spare_mask[h]
            ),
            solve_seconds=time.perf_counter() - start,
            full=full_placement,
        )
    if partial is None:
        if isinstance(full, PlacementFailure):
            return PlacementFailure(
                full.reason, full.message, full.counts, time.perf_counter() - start
            )
        return PlacementFailure(  # pragma: no cover - full is a Placement or a failure
            FailureReason.INSUFFICIENT_FREE_HOSTS, "no replacement", {}, 0.0
        )
    ranks, cost_ms, moves = partial
    return Replacement(
        ranks=ranks,
        method=ReplaceMethod.PARTIAL,
        moves=moves,
        cost_before_ms=before_ms,
        cost_ms=cost_ms,
        full_cost_ms=full_cost,
        lower_bound_ms=bound,
        ranks_moved=_ranks_moved(current, ranks),
        spares_used=tuple(h for h in moves.values() if spare_mask[h]),
        solve_seconds=time.perf_counter() - start,
        full=full_placement,
    )


# ---------------------------------------------------------------------------- helpers


def _freed_snapshot(snapshot: Snapshot, current: RankTable, gone: list[int]) -> Snapshot:
    """The cluster with the job's GPUs free again and the vacated hosts out of service."""
    busy = snapshot.busy.copy()
    busy[current.global_gpu_ids(snapshot.index)] = False
    return Snapshot(snapshot.index, busy, snapshot.unavailable | frozenset(gone))


def _cost(ctx: JobContext, rank_hosts: IntArray) -> tuple[float, bool]:
    """Cost (ms) of a rank -> host map, and whether it keeps the job's span rules."""
    histograms = span_histograms(ctx.index, ctx.par, rank_hosts)
    cost, _ = cost_from_histograms(ctx.costs, histograms)
    valid = all(
        int(histograms[d][level + 1 :].sum()) == 0
        for d, level in ctx.required.items()
        if d in histograms
    )
    cap = ctx.request.max_leaves
    if valid and cap is not None and ctx.index.cluster_level > 1:
        valid = np.unique(ctx.index.ancestors[np.unique(rank_hosts), 1]).size <= cap
    return cost, valid


def _ranks_moved(old: RankTable, new: RankTable) -> int:
    return int(np.sum((old.hosts != new.hosts) | (old.gpus != new.gpus)))


def _partial(
    ctx: JobContext,
    current: RankTable,
    gone: list[int],
    job_hosts: IntArray,
    spare_mask: BoolArray,
) -> tuple[RankTable, float, dict[int, int]] | None:
    """Greedy slot-by-slot replacement over signature classes; ``None`` if a slot has none."""
    index = ctx.index
    top = index.cluster_level
    candidates = ctx.eligible.copy()
    candidates[job_hosts] = False
    leaf_free = index.sum_per_domain(1, candidates.astype(np.int64)) if top > 1 else None
    rank_hosts = current.hosts.copy()
    staying = np.ones(index.num_hosts, dtype=np.bool_)
    staying[gone] = False
    moves: dict[int, int] = {}
    for old in gone:
        in_job = np.unique(rank_hosts)
        in_job = in_job[staying[in_job]]
        near = np.append(in_job, old)
        options = _representatives(ctx, candidates, near, spare_mask, leaf_free)
        best: tuple[float, int, int, int, int] | None = None
        best_host = -1
        slot = rank_hosts == old
        for host in options.tolist():
            trial = rank_hosts.copy()
            trial[slot] = host
            trial_cost, valid = _cost(ctx, trial)
            if not valid:
                continue
            free_in_leaf = int(leaf_free[index.ancestors[host, 1]]) if leaf_free is not None else 0
            shared = int(np.argmax(index.ancestors[host] == index.ancestors[old]))
            spare = 0 if spare_mask[host] else 1
            key = (round(trial_cost, 9), shared, spare, free_in_leaf, host)
            if best is None or key < best:
                best, best_host = key, host
        if best is None:
            return None
        rank_hosts[slot] = best_host
        candidates[best_host] = False
        staying[best_host] = True
        if leaf_free is not None:
            leaf_free[index.ancestors[best_host, 1]] -= 1
        moves[old] = best_host
    final_cost, _ = _cost(ctx, rank_hosts)
    return RankTable(rank_hosts, current.gpus.copy()), final_cost, moves


def _representatives(
    ctx: JobContext,
    candidates: BoolArray,
    near: IntArray,
    spare_mask: BoolArray,
    leaf_free: IntArray | None,
) -> IntArray:
    """One host per (signature, spare) class of the candidate hosts, the best-fit one each.

    The signature of a host is, per switch level, its domain there when one of ``near`` (the
    job's staying hosts and the vacated one) is under it, else ``-1``.
    """
    index = ctx.index
    hosts = np.flatnonzero(candidates)
    if hosts.size == 0:
        return hosts
    top = index.cluster_level
    columns: list[IntArray] = []
    for level in range(1, top):
        used = np.zeros(len(index.domain_names[level]), dtype=np.bool_)
        used[index.ancestors[near, level]] = True
        anc = index.ancestors[hosts, level]
        columns.append(np.where(used[anc], anc, -1))
    columns.append(spare_mask[hosts].astype(np.int64))
    fit = leaf_free[index.ancestors[hosts, 1]] if leaf_free is not None else np.zeros_like(hosts)
    # Within a class: spares first is already the class split; then best fit, then host id.
    order = np.lexsort((hosts, fit, *reversed(columns)))
    keys = np.stack(columns, axis=1)[order]
    first = np.ones(order.size, dtype=np.bool_)
    first[1:] = np.any(keys[1:] != keys[:-1], axis=1)
    return np.asarray(hosts[order][first], dtype=np.int64)
