"""Space-filling fill order: counts per domain -> ordered hosts -> rank table.

placement.md section 5.3. Given how many hosts each domain gives the job, lay physical slot
positions ``0..H-1`` over the chosen domains depth-first, so every domain holds one contiguous
range of positions. Inside each parent the children are ordered so that block boundaries fall
on child boundaries as often as possible (:func:`order_children`): children holding whole
blocks first while aligned, then remainders paired so that a remainder ``r`` is followed by a
child completing the block (``B - r``); a child that stays inside an already split block costs
nothing. Inside a leaf, hosts go in topology order.

The rank table then follows from the job layout: rank ``r`` runs on local GPU ``r mod G`` of
the host at physical position ``phys(r // G)`` (rail alignment; consecutive ranks per host).

Jobs smaller than a host get GPUs on one host (:func:`choose_gpus`): an aligned window of free
GPUs when one exists, so the job's local indices stay contiguous (and rail-consistent with
other jobs sharing the host), else the lowest free indices.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from enum import StrEnum

import numpy as np

from placement.counts import CountProblem, parents_of
from placement.ranks import JobLayout
from topology.index import IntArray


class FillStrategy(StrEnum):
    """How children are ordered inside a parent."""

    PAIRED = "paired"
    """Aligned children first, then remainders paired (:func:`order_children`)."""
    TOPOLOGY = "topology"
    """Children in topology (id) order."""


def order_children(
    items: Sequence[tuple[int, int]], start: int, blocks: Sequence[tuple[int, float]]
) -> list[int]:
    """Order ``(child id, hosts)`` items starting at physical position ``start``.

    Greedy: at each step take the item whose end opens the fewest new split blocks (weighted
    by ``blocks``' ``(size, weight)``), preferring one whose end is aligned, then one whose
    remainder another item can complete, then the larger, then the earlier item.
    """
    remaining = list(items)
    pos = start
    out: list[int] = []
    heavy = max(blocks, key=lambda b: b[1])[0] if blocks else 0
    residues: Counter[int] = Counter(x % heavy for _, x in remaining) if heavy else Counter()
    while remaining:
        if len(remaining) == 1:
            out.append(remaining[0][0])
            break
        best: tuple[float, int, int, int, int] | None = None
        best_idx = 0
        for idx, (_, x) in enumerate(remaining):
            end = pos + x
            cost = 0.0
            aligned = True
            for size, weight in blocks:
                if end % size:
                    aligned = False
                    if pos % size == 0 or end // size != pos // size:
                        cost += weight
            partner = 1
            if heavy and end % heavy:
                need = (-end) % heavy
                have = residues[need] - (1 if x % heavy == need else 0)
                partner = 0 if have > 0 else 1
            key = (cost, partner, 0 if aligned else 1, -x, idx)
            if best is None or key < best:
                best, best_idx = key, idx
        cid, x = remaining.pop(best_idx)
        if heavy:
            residues[x % heavy] -= 1
        out.append(cid)
        pos += x
    return out


def chosen_hosts_per_leaf(problem: CountProblem, leaf_counts: IntArray) -> IntArray:
    """The hosts taken: in each leaf, its first ``x`` eligible hosts in topology order."""
    index = problem.index
    eligible = problem.eligible.astype(np.int64)
    leaf = index.ancestors[:, 1]
    before = np.concatenate([[0], np.cumsum(eligible)])
    rank = before[1:] - before[index.domain_start[1][leaf]]
    return np.flatnonzero(problem.eligible & (rank <= leaf_counts[leaf]))


def fill_hosts(
    problem: CountProblem,
    counts: Mapping[int, IntArray],
    strategy: FillStrategy,
    forced: Mapping[tuple[int, int], Sequence[int]] | None = None,
) -> IntArray:
    """Hosts in physical position order for the given counts per level.

    Args:
        problem: the count problem.
        counts: hosts per domain, per level ``1..top``.
        strategy: how children are ordered inside each parent.
        forced: ``(parent level, parent id) -> children in order`` overriding ``strategy``
            for those parents (the zone repair of :mod:`placement.zones`).
    """
    index = problem.index
    top = problem.top
    chosen = chosen_hosts_per_leaf(problem, counts[1])
    leaf_of_chosen = index.ancestors[chosen, 1]
    if top == 1:
        return chosen
    kids: dict[int, dict[int, list[int]]] = {}
    for level in range(1, top):
        parent = parents_of(index, level)
        ids = np.flatnonzero(counts[level] > 0)
        table: dict[int, list[int]] = {}
        for i in ids.tolist():
            table.setdefault(int(parent[i]), []).append(i)
        kids[level] = table
    weights = _order_weights(problem)
    out: list[IntArray] = []

    def visit(level: int, domain: int, start: int) -> None:
        if level == 1:
            out.append(chosen[leaf_of_chosen == domain])
            return
        children = kids[level - 1].get(domain, [])
        items = [(c, int(counts[level - 1][c])) for c in children]
        if forced is not None and (level, domain) in forced:
            order = list(forced[level, domain])
        elif strategy is FillStrategy.PAIRED:
            order = order_children(items, start, weights[level])
        else:
            order = children
        pos = start
        for child in order:
            visit(level - 1, child, pos)
            pos += int(counts[level - 1][child])

    visit(top, 0, 0)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _order_weights(problem: CountProblem) -> dict[int, list[tuple[int, float]]]:
    """Per parent level, ``(block size, weight of splitting it among the children)``.

    Splitting a block among children of a level-``l`` parent costs its reward at level
    ``l - 1``. Where that is zero (two tiers of equal bandwidth), a tiny weight from the
    block's largest reward keeps the order aligned anyway.
    """
    out: dict[int, list[tuple[int, float]]] = {}
    for level in range(2, problem.top + 1):
        pairs = []
        for block in problem.blocks:
            weight = float(block.reward_ns[level - 1])
            if weight <= 0:
                weight = 1e-6 * float(block.reward_ns.max(initial=0)) + 1e-9 * block.hosts
            pairs.append((block.hosts, weight))
        out[level] = pairs
    return out


def rank_table(layout: JobLayout, hosts_by_position: IntArray) -> tuple[IntArray, IntArray]:
    """Host and local GPU of every rank (whole-host jobs).

    Args:
        layout: the job layout (logical slot -> physical position).
        hosts_by_position: host id at each physical position.
    """
    ranks = np.arange(layout.gpus, dtype=np.int64)
    positions = layout.physical_positions()
    host_of_slot = hosts_by_position[positions]
    g = layout.gpus_per_host
    return host_of_slot[ranks // g], ranks % g


def choose_gpus(free_local: IntArray, count: int, gpus_per_host: int) -> IntArray:
    """Pick ``count`` of a host's free local GPU indices for a job smaller than the host.

    Prefers an aligned window (start a multiple of the window size, the smallest power of two
    holding ``count``), then any contiguous run, then the lowest free indices.
    """
    free = set(free_local.tolist())
    window = 1
    while window < count:
        window *= 2
    for start in range(0, gpus_per_host - count + 1, window):
        run = range(start, start + count)
        if all(i in free for i in run):
            return np.arange(start, start + count, dtype=np.int64)
    for start in range(gpus_per_host - count + 1):
        if all(i in free for i in range(start, start + count)):
            return np.arange(start, start + count, dtype=np.int64)
    return np.sort(free_local)[:count].astype(np.int64)
