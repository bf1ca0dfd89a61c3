"""The integer-count problem (hosts taken per domain) and its exact recursion.

**Problem.** Choose ``x_D`` whole free hosts in every domain ``D`` (levels 1..top; ``x_root =
H``) with ``x_D = sum of x_child`` and ``x_D <= F_D``. Following placement.md section 5.2 each
domain pays a *local* cost that depends only on its own count::

    local_D(x) = alpha_l * [x > 0]                      # domains used
               + gamma_l * [0 < x < F_D]                # touched but not exhausted
               - sum_b  rho_{b,l} * floor(x / B_b)      # whole blocks kept inside D
               + sum_b  (rho_{b,l} / 64) * [x mod B_b != 0]  # a partial block in D
               (+ infinity unless x is a multiple of M_l: required tiers, NVLink blocks)

where ``B_b`` are the physical block sizes of the job's layout (:meth:`JobLayout.blocks`) and
``rho_{b,l}`` is what keeping one block of ``b`` inside a level-``l`` domain saves: the block's
groups would otherwise span level ``l+1``, costing ``(c'_{l+1} - c'_l) * w_d * (groups per
block) / |groups_d|`` more (:mod:`placement.cost`). Summed over all domains this is,
up to a constant, the cost of :mod:`placement.cost` *if* the fill order packs every partial
block perfectly (the whole-block proxy): a block not inside one level-``l`` domain must span
level ``l+1``, and a domain holds at most ``floor(x/B)`` disjoint whole blocks. The last
term is a tie-breaker: the proxy is indifferent to where remainders go, but the fill order can
only pair them into whole blocks when few domains hold one (counts that are multiples of
``B`` never shift a later domain's blocks off the grid), so among equal proxies it prefers
aligned counts.

**Recursion.** The objective is separable over the tree, so min-plus convolution of the
children's cost curves solves it exactly (placement.md section 5.5, "exact DP alternative"):
``curve_D(x) = local_D(x) + min over sum(x_c) = x of sum_c curve_c(x_c)``. Hosts in a leaf are
interchangeable, so leaves need no convolution. All curves of a level are computed together
with numpy; curves are capped at ``H``. The CP-SAT models of :mod:`placement.cpsat` use these
curves as exact subtree costs and this solution as their hint.

Costs are integer nanoseconds held in float64 (exact below 2**53) so the recursion and CP-SAT
optimise the very same integers.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from topology.index import BoolArray, FloatArray, IntArray, TopologyIndex

INF = float("inf")


REMAINDER_DIVISOR = 64
"""The partial-block tie-breaker is the block's reward divided by this."""


def remainder_penalty(reward_ns: int) -> int:
    """Cost (ns) of a domain holding a partial block whose whole-block reward is ``reward_ns``."""
    return int(reward_ns) // REMAINDER_DIVISOR


@dataclass(frozen=True, slots=True)
class BlockTerm:
    """One physical block size and its reward per level.

    Attributes:
        hosts: ``B``, the block's size in hosts.
        reward_ns: ``rho`` per level ``0..top``: saved by a domain of that level holding one
            whole block (0 at the top level).
        label: what the block is (a dimension name, for explanations).
    """

    hosts: int
    reward_ns: IntArray
    label: str


@dataclass(frozen=True, slots=True)
class CountProblem:
    """Everything the count models need for one job layout on one snapshot.

    Attributes:
        index: the topology index.
        hosts: ``H``, whole hosts the job needs.
        eligible: per host, usable by the job (whole, free, healthy, right size, allowed).
        free: per level ``0..top``, eligible hosts per domain (``F_D``).
        blocks: the layout's block terms.
        multiple: per level, counts must be multiples of this (1: no constraint).
        use_ns: ``alpha`` per level.
        partial_ns: ``gamma`` per level.
        max_leaves: cap on level-1 domains used, or ``None``.
    """

    index: TopologyIndex
    hosts: int
    eligible: BoolArray
    free: tuple[IntArray, ...]
    blocks: tuple[BlockTerm, ...]
    multiple: tuple[int, ...]
    use_ns: IntArray
    partial_ns: IntArray
    max_leaves: int | None

    @property
    def top(self) -> int:
        """The cluster level."""
        return self.index.cluster_level

    def width(self, level: int) -> int:
        """Largest count any domain of ``level`` can take (curves have this + 1 columns)."""
        if level == self.top:
            return self.hosts
        return int(min(self.hosts, int(self.free[level].max(initial=0))))

    def local(self, level: int, domains: IntArray, width: int) -> FloatArray:
        """``local_D(x)`` for ``domains`` of ``level`` and ``x = 0..width`` (rows, columns)."""
        x = np.arange(width + 1, dtype=np.int64)
        free = self.free[level][domains][:, None]
        out = np.zeros((len(domains), width + 1), dtype=np.float64)
        if level < self.top:
            out += float(self.use_ns[level]) * (x > 0)
            out += float(self.partial_ns[level]) * ((x > 0) & (x < free))
            for block in self.blocks:
                reward = int(block.reward_ns[level])
                if reward:
                    out -= float(reward) * (x // block.hosts)
                    # Only where a whole block fits at all (as the CP-SAT models do).
                    partial = (x % block.hosts != 0) & (np.minimum(free, self.hosts) >= block.hosts)
                    out += float(remainder_penalty(reward)) * partial
        bad = (x > free) | (x % self.multiple[level] != 0)
        out[bad] = INF
        return out

    def local_value(self, level: int, domain: int, x: int) -> float:
        """``local_D(x)`` for one domain and count."""
        return float(self.local(level, np.array([domain]), x)[0, x])


@dataclass(frozen=True, slots=True)
class CountTables:
    """The recursion's curves and choices.

    Attributes:
        total: per level (index 0 unused), ``curve_D`` of every domain, ``(n_l, width_l + 1)``.
        inner: per level, the children's best total per count (level 1: zeros).
        slots: per level >= 2, for each child slot, the child id of every parent (-1: none).
        choice: per level >= 2, for each slot, the count given to that slot's child when the
            slots up to it hold ``x`` hosts: ``(n_l, width_l + 1)``.
    """

    total: tuple[FloatArray, ...]
    inner: tuple[FloatArray, ...]
    slots: tuple[tuple[IntArray, ...], ...]
    choice: tuple[tuple[IntArray, ...], ...]

    @property
    def optimum(self) -> float:
        """The best objective for the whole job (``inf`` when infeasible)."""
        return float(self.total[-1][0, -1])


def parents_of(index: TopologyIndex, level: int) -> IntArray:
    """The parent (level ``level + 1``) of every domain of ``level``."""
    first_hosts = index.domain_start[level]
    return np.asarray(index.ancestors[first_hosts, level + 1], dtype=np.int64)


def _minplus(cur: FloatArray, child: FloatArray) -> tuple[FloatArray, IntArray]:
    """Row-wise min-plus convolution ``new[p, k] = min_j cur[p, k - j] + child[p, j]``.

    ``child`` may be narrower than ``cur``. Returns the new curve (width of ``cur``) and the
    minimising ``j``.
    """
    rows, width = cur.shape
    finite = np.isfinite(child)
    last = int(np.max(np.where(finite.any(axis=0))[0], initial=0))
    span = min(last, width - 1)
    ext = np.concatenate([np.full((rows, span), INF), cur], axis=1)
    windows = sliding_window_view(ext, span + 1, axis=1)
    reversed_child = child[:, span::-1]
    totals = windows + reversed_child[:, None, :]
    t = np.argmin(totals, axis=2)
    best = np.take_along_axis(totals, t[..., None], axis=2)[..., 0]
    return best, (span - t).astype(np.int64)


def count_tables(problem: CountProblem) -> CountTables:
    """Solve the recursion bottom-up for every domain and every count (see module docstring)."""
    index = problem.index
    top = problem.top
    totals: list[FloatArray] = [np.zeros((0, 1))]
    inners: list[FloatArray] = [np.zeros((0, 1))]
    slots_by_level: list[tuple[IntArray, ...]] = [(), ()]
    choices_by_level: list[tuple[IntArray, ...]] = [(), ()]
    n1 = index.num_domains(1)
    w1 = problem.width(1)
    totals.append(problem.local(1, np.arange(n1), w1))
    inners.append(np.zeros((n1, w1 + 1)))
    for level in range(2, top + 1):
        n = index.num_domains(level)
        width = problem.width(level)
        parents = parents_of(index, level - 1)
        children = np.flatnonzero(problem.free[level - 1] > 0)
        child_parent = parents[children]
        order = np.argsort(child_parent, kind="stable")
        children, child_parent = children[order], child_parent[order]
        first = np.searchsorted(child_parent, np.arange(n))
        slot_of = np.arange(len(children)) - first[child_parent]
        num_slots = int(slot_of.max(initial=-1)) + 1
        cur = np.full((n, width + 1), INF)
        cur[:, 0] = 0.0
        child_total = totals[level - 1]
        level_slots: list[IntArray] = []
        level_choices: list[IntArray] = []
        identity = np.full(child_total.shape[1], INF)
        identity[0] = 0.0
        for slot in range(num_slots):
            ids = np.full(n, -1, dtype=np.int64)
            mask = slot_of == slot
            ids[child_parent[mask]] = children[mask]
            curves = np.where((ids >= 0)[:, None], child_total[np.maximum(ids, 0)], identity)
            cur, choice = _minplus(cur, curves)
            level_slots.append(ids)
            level_choices.append(choice)
        inners.append(cur)
        totals.append(cur + problem.local(level, np.arange(n), width))
        slots_by_level.append(tuple(level_slots))
        choices_by_level.append(tuple(level_choices))
    return CountTables(tuple(totals), tuple(inners), tuple(slots_by_level), tuple(choices_by_level))


def split_counts(tables: CountTables, level: int, counts: IntArray) -> IntArray:
    """The recursion's best split of ``counts`` (per domain of ``level``) among children.

    Returns counts per domain of ``level - 1``.
    """
    slots = tables.slots[level]
    choices = tables.choice[level]
    n_children = tables.total[level - 1].shape[0]
    out = np.zeros(n_children, dtype=np.int64)
    remaining = counts.astype(np.int64).copy()
    parents = np.arange(len(counts))
    for slot in range(len(slots) - 1, -1, -1):
        ids = slots[slot]
        give = choices[slot][parents, np.minimum(remaining, choices[slot].shape[1] - 1)]
        give = np.where((ids >= 0) & (remaining > 0), give, 0)
        out[ids[ids >= 0]] = give[ids >= 0]
        remaining -= give
    return out


def allocation_below(tables: CountTables, level: int, counts: IntArray) -> dict[int, IntArray]:
    """Counts per domain at ``level`` and every level below it, splitting by the recursion."""
    out = {level: counts.astype(np.int64)}
    for lv in range(level, 1, -1):
        out[lv - 1] = split_counts(tables, lv, out[lv])
    return out


def min_leaves_curve(problem: CountProblem, level: int, domain: int, width: int) -> IntArray:
    """Fewest level-1 domains under ``domain`` whose free hosts sum to each ``x = 0..width``.

    Counts beyond the subtree's capacity get a value above any cap (``num leaves + 1``).
    """
    index = problem.index
    start, end = index.domain_start[level][domain], index.domain_end[level][domain]
    leaves = np.unique(index.ancestors[start:end, 1])
    free = np.sort(problem.free[1][leaves])[::-1]
    reach = np.cumsum(free)
    x = np.arange(width + 1)
    need = np.searchsorted(reach, x, side="left") + 1
    need[0] = 0
    need[x > (reach[-1] if reach.size else 0)] = len(leaves) + 1
    return need.astype(np.int64)
