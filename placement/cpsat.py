"""Hierarchical CP-SAT count models: pods over the cluster, then leaves inside each chosen pod.

One *level model* per parent domain with more than one usable child (placement.md section 5.2).
For children ``i`` (pods of the cluster, or leaves of a pod) with ``F_i`` free hosts:

Variables (keys of the returned dict):
    ``("hosts", i)``   ``x_i``, integer in the counts the child can take (``<= F_i``, multiples
                       required by tiers, and, for children with children of their own,
                       counts their subtree can split feasibly).
    ``("used", i)``    ``u_i`` boolean, ``u_i <=> x_i >= 1``.
    ``("full", i)``    ``f_i`` boolean, ``f_i <=> x_i = F_i``.
    ``("whole", i, B)`` ``q_{i,B} = floor(x_i / B)``: whole blocks of ``B`` hosts in ``i``.
    ``("inner", i)``   ``s_i = S_i[x_i]``: the exact best cost of splitting ``x_i`` inside the
                       child's subtree (the curve of :mod:`placement.counts`; element constraint).
    ``("leaves", i)``  ``k_i``: leaf domains the child uses (``u_i`` for a leaf; for a pod,
                       ``K_i[x_i]``, the fewest leaves holding ``x_i`` hosts). Only with a cap.

Constraints:
    ``sum_i x_i = X`` (the parent's count), and ``sum_i k_i <= cap`` with a leaf cap.

Objective (integer nanoseconds; minimise)::

    sum_i s_i + alpha * sum_i u_i + gamma * sum_i (u_i - f_i)
        - sum_{i,B} rho_B * q_{i,B} + sum_{i,B} (rho_B / 64) * p_{i,B}

with ``p_{i,B}`` true when ``x_i`` is not a multiple of ``B`` (the partial-block tie-breaker
of :mod:`placement.counts`).

This is the separable objective of :mod:`placement.counts` at the child level, so the exact
recursion gives a full hint that is optimal whenever no cap couples the children; CP-SAT then
only proves the bound, and with a cap it searches from that hint (or from greedy best fit).

The models are solved top-down: the cluster's model fixes each pod's count, then each pod's
model fixes its leaves' counts (deeper trees recurse the same way). Each model gets a share of
the time budget; when the budget is gone the remaining levels take the recursion's split.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from placement.counts import (
    CountProblem,
    CountTables,
    min_leaves_curve,
    parents_of,
    remainder_penalty,
    split_counts,
)
from placement.params import PlacementParams
from topology.index import IntArray

NS_PER_MS = 1e6

VarKey = tuple[Any, ...]
"""Readable variable key, e.g. ``("hosts", "pod03")``."""


class SolveStatus(StrEnum):
    """Outcome of one level model (CP-SAT's statuses plus ours)."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    MODEL_INVALID = "model_invalid"
    UNKNOWN = "unknown"
    """No solution within the time limit; the hint was used."""
    SKIPPED = "skipped"
    """Budget exhausted before this model; the recursion's split was used."""


_STATUS = {
    cp_model.OPTIMAL: SolveStatus.OPTIMAL,
    cp_model.FEASIBLE: SolveStatus.FEASIBLE,
    cp_model.INFEASIBLE: SolveStatus.INFEASIBLE,
    cp_model.MODEL_INVALID: SolveStatus.MODEL_INVALID,
    cp_model.UNKNOWN: SolveStatus.UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class LevelChild:
    """One child of a level model.

    Attributes:
        name: domain name (variable keys use it).
        domain: domain id at the child level.
        free: ``F_i``.
        allowed: counts the child may take, ascending.
        inner_ns: ``S_i`` per count ``0..max(allowed)`` (``None`` for leaves: hosts are
            interchangeable). Entries at disallowed counts are ignored.
        leaves: ``K_i`` per count (``None`` for leaves: ``k_i = u_i``).
    """

    name: str
    domain: int
    free: int
    allowed: IntArray
    inner_ns: IntArray | None
    leaves: IntArray | None


@dataclass(frozen=True, slots=True)
class LevelTerms:
    """The child level's local terms: ``alpha``, ``gamma`` and ``(B, rho_B)`` pairs."""

    use_ns: int
    partial_ns: int
    blocks: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class ModelStats:
    """What one level model did.

    Attributes:
        parent: the parent domain's name.
        level: the children's level.
        children: children in the model.
        status: its outcome.
        objective_ns: objective of the solution used.
        bound_ns: CP-SAT's proven bound (``None`` when it did not run or found nothing).
        wall_s: solve time.
        variables: model size.
    """

    parent: str
    level: int
    children: int
    status: SolveStatus
    objective_ns: float | None
    bound_ns: float | None
    wall_s: float
    variables: int


def build_level_model(
    children: Sequence[LevelChild], total: int, terms: LevelTerms, leaf_cap: int | None
) -> tuple[cp_model.CpModel, dict[VarKey, cp_model.IntVar]]:
    """Build one level model (math in the module docstring).

    Returns:
        The model and its variables keyed by readable tuples.
    """
    model = cp_model.CpModel()
    v: dict[VarKey, cp_model.IntVar] = {}
    objective: list[Any] = []
    leaf_terms: list[Any] = []
    for child in children:
        name = child.name
        x = model.new_int_var_from_domain(
            cp_model.Domain.from_values([int(a) for a in child.allowed]), f"hosts[{name}]"
        )
        used = model.new_bool_var(f"used[{name}]")
        full = model.new_bool_var(f"full[{name}]")
        model.add(x >= 1).only_enforce_if(used)
        model.add(x == 0).only_enforce_if(~used)
        model.add(x == child.free).only_enforce_if(full)
        model.add(x <= child.free - 1).only_enforce_if(~full)
        v["hosts", name], v["used", name], v["full", name] = x, used, full
        objective += [terms.use_ns * used, terms.partial_ns * used, -terms.partial_ns * full]
        top = int(child.allowed[-1])
        for block, reward in terms.blocks:
            if block > top or reward == 0:
                continue
            whole = model.new_int_var(0, top // block, f"whole[{name},{block}]")
            model.add_division_equality(whole, x, block)
            v["whole", name, block] = whole
            objective.append(-reward * whole)
            penalty = remainder_penalty(reward)
            if penalty:
                part = model.new_bool_var(f"part[{name},{block}]")
                model.add(x - block * whole >= 1).only_enforce_if(part)
                model.add(x - block * whole == 0).only_enforce_if(~part)
                v["part", name, block] = part
                objective.append(penalty * part)
        if child.inner_ns is not None:
            values = [int(c) for c in child.inner_ns[: top + 1]]
            inner = model.new_int_var(min(values), max(values), f"inner[{name}]")
            model.add_element(x, values, inner)
            v["inner", name] = inner
            objective.append(inner)
        if leaf_cap is not None:
            if child.leaves is None:
                leaf_terms.append(used)
            else:
                counts = [int(c) for c in child.leaves[: top + 1]]
                leaves = model.new_int_var(0, max(counts), f"leaves[{name}]")
                model.add_element(x, counts, leaves)
                v["leaves", name] = leaves
                leaf_terms.append(leaves)
    model.add(sum(v["hosts", c.name] for c in children) == total)
    if leaf_cap is not None:
        model.add(sum(leaf_terms) <= leaf_cap)
    model.minimize(sum(objective))
    return model, v


def hint_values(
    children: Sequence[LevelChild], terms: LevelTerms, counts: Sequence[int]
) -> dict[VarKey, int]:
    """Values of every model variable for the given counts (a full hint)."""
    out: dict[VarKey, int] = {}
    for child, x in zip(children, counts, strict=True):
        name = child.name
        out["hosts", name] = x
        out["used", name] = int(x >= 1)
        out["full", name] = int(x == child.free)
        for block, _ in terms.blocks:
            out["whole", name, block] = x // block
            out["part", name, block] = int(x % block != 0)
        if child.inner_ns is not None:
            out["inner", name] = int(child.inner_ns[x])
        if child.leaves is not None:
            out["leaves", name] = int(child.leaves[x])
    return out


def objective_of(children: Sequence[LevelChild], terms: LevelTerms, counts: Sequence[int]) -> float:
    """The model objective of the given counts."""
    total = 0.0
    for child, x in zip(children, counts, strict=True):
        total += terms.use_ns * (x >= 1) + terms.partial_ns * (1 <= x < child.free)
        kept = [(b, r) for b, r in terms.blocks if b <= child.allowed[-1] and r]
        total -= sum(r * (x // b) for b, r in kept)
        total += sum(remainder_penalty(r) * (x % b != 0) for b, r in kept)
        if child.inner_ns is not None:
            total += float(child.inner_ns[x])
    return total


def solve_level_model(
    model: cp_model.CpModel,
    *,
    variables: Mapping[VarKey, cp_model.IntVar],
    children: Sequence[LevelChild],
    hint: Mapping[VarKey, int] | None,
    params: PlacementParams,
    budget_s: float,
) -> tuple[SolveStatus, list[int] | None, float | None, float | None]:
    """Solve one level model with explicit parameters.

    Returns:
        Status, the counts per child (``None`` when CP-SAT found none), objective and bound.
    """
    if hint is not None:
        for key, value in hint.items():
            var = variables.get(key)
            if var is not None:
                model.add_hint(var, value)
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.num_workers = params.num_workers
    p.random_seed = params.random_seed
    p.relative_gap_limit = params.relative_gap_limit
    p.absolute_gap_limit = params.absolute_gap_ms * NS_PER_MS
    # The models are small and the hint is usually optimal: presolve probing would cost more
    # than the whole search (placement.md section 5.4).
    p.cp_model_probing_level = params.probing_level
    p.max_presolve_iterations = 1
    if params.deterministic:
        p.interleave_search = True
        p.max_deterministic_time = max(budget_s, 1e-3)
        p.max_time_in_seconds = max(budget_s * params.wall_guard_factor, 0.05)
    else:
        p.max_time_in_seconds = max(budget_s, 1e-3)
    code = solver.solve(model)
    status = _STATUS.get(code, SolveStatus.UNKNOWN)
    if status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        counts = [int(solver.value(variables["hosts", c.name])) for c in children]
        return status, counts, float(solver.objective_value), float(solver.best_objective_bound)
    # Without a solution CP-SAT's bound may be a placeholder: report none.
    return status, None, None, None


@dataclass(slots=True)
class HierarchyResult:
    """Counts per level chosen by the models, and what each model did.

    Attributes:
        counts: per level ``1..top``, hosts per domain.
        models: one entry per level model, root first.
        infeasible: a model proved its constraints infeasible (with a leaf cap).
    """

    counts: dict[int, IntArray]
    models: list[ModelStats] = field(default_factory=list)
    infeasible: bool = False
    complete: bool = False
    """Every host of the job was assigned (otherwise the counts are unusable)."""

    @property
    def root(self) -> ModelStats | None:
        """The top model (the cluster's, or the first below a single-child root)."""
        return self.models[0] if self.models else None


class _Hierarchy:
    """Top-down driver of the level models for one count problem."""

    def __init__(
        self,
        problem: CountProblem,
        tables: CountTables,
        params: PlacementParams,
        hint_counts: Mapping[int, IntArray] | None,
    ) -> None:
        self.problem = problem
        self.tables = tables
        self.params = params
        self.hint_counts = hint_counts
        self.deadline = time.perf_counter() + params.time_limit_s
        self.index = problem.index
        self.parents = {lv: parents_of(self.index, lv) for lv in range(1, problem.top)}
        top = problem.top
        self.counts = {
            lv: np.zeros(self.index.num_domains(lv), dtype=np.int64) for lv in range(1, top + 1)
        }
        self.counts[top][0] = problem.hosts
        self.result = HierarchyResult(self.counts)
        self.pending = 1

    def run(self) -> HierarchyResult:
        self._solve(self.problem.top, 0, self.problem.hosts, self.problem.max_leaves)
        return self.result

    def _children(self, level: int, domain: int, total: int, with_cap: bool) -> list[LevelChild]:
        child_level = level - 1
        ids = np.flatnonzero(
            (self.parents[child_level] == domain) & (self.problem.free[child_level] > 0)
        )
        curve = self.tables.total[child_level]
        inner = self.tables.inner[child_level]
        names = self.index.domain_names[child_level]
        out = []
        for i in ids:
            width = min(total, curve.shape[1] - 1)
            finite = np.flatnonzero(np.isfinite(curve[i, : width + 1]))
            if finite.size == 0:
                continue
            inner_ns = None if child_level == 1 else _int_curve(inner[i, : width + 1])
            leaves = None
            if with_cap and child_level > 1:
                leaves = min_leaves_curve(self.problem, child_level, int(i), width)
            out.append(
                LevelChild(
                    str(names[i]),
                    int(i),
                    int(self.problem.free[child_level][i]),
                    finite,
                    inner_ns,
                    leaves,
                )
            )
        return out

    def _terms(self, child_level: int) -> LevelTerms:
        p = self.problem
        return LevelTerms(
            int(p.use_ns[child_level]),
            int(p.partial_ns[child_level]),
            tuple((b.hosts, int(b.reward_ns[child_level])) for b in p.blocks),
        )

    def _hint(
        self, level: int, domain: int, total: int, children: Sequence[LevelChild]
    ) -> list[int]:
        child_level = level - 1
        if self.hint_counts is not None and int(self.hint_counts[level][domain]) == total:
            given = self.hint_counts[child_level]
            return [int(given[c.domain]) for c in children]
        counts = np.zeros(len(self.counts[level]), dtype=np.int64)
        counts[domain] = total
        split = split_counts(self.tables, level, counts)
        return [int(split[c.domain]) for c in children]

    def _solve(self, level: int, domain: int, total: int, cap: int | None) -> int:
        """Fix counts under ``domain``; return the leaves used."""
        self.pending -= 1
        if level == 1:
            return int(total > 0)
        children = self._children(level, domain, total, cap is not None)
        terms = self._terms(level - 1)
        hint = self._hint(level, domain, total, children)
        counts: list[int] | None = hint
        if len(children) > 1:
            counts = self._solve_model(
                level=level,
                domain=domain,
                total=total,
                cap=cap,
                children=children,
                terms=terms,
                hint=hint,
            )
        if counts is None:
            return -1
        for child, x in zip(children, counts, strict=True):
            self.counts[level - 1][child.domain] = x
        self.pending += sum(1 for x in counts if x > 0)
        used = 0
        for child, x in zip(children, counts, strict=True):
            if x <= 0:
                continue
            budget = None
            if cap is not None:
                floor = int(child.leaves[x]) if child.leaves is not None else 1
                budget = cap - used - self._min_rest(children, counts, child)
                budget = max(budget, floor)
            got = self._solve(level - 1, child.domain, x, budget)
            if got < 0:
                return -1
            used += got
        return used

    def _min_rest(
        self, children: Sequence[LevelChild], counts: Sequence[int], current: LevelChild
    ) -> int:
        """Leaves the not-yet-solved siblings after ``current`` need at least."""
        rest = 0
        seen = False
        for child, x in zip(children, counts, strict=True):
            if child is current:
                seen = True
                continue
            if seen and x > 0:
                rest += int(child.leaves[x]) if child.leaves is not None else 1
        return rest

    def _solve_model(
        self,
        *,
        level: int,
        domain: int,
        total: int,
        cap: int | None,
        children: Sequence[LevelChild],
        terms: LevelTerms,
        hint: list[int],
    ) -> list[int] | None:
        name = str(self.index.domain_names[level][domain])
        remaining = self.deadline - time.perf_counter()
        hint_ok = sum(hint) == total and _within_cap(children, hint, cap)
        hint_objective = objective_of(children, terms, hint) if hint_ok else None
        if not self.params.use_cpsat or remaining <= 0:
            stats = ModelStats(
                name, level - 1, len(children), SolveStatus.SKIPPED, hint_objective, None, 0.0, 0
            )
            self.result.models.append(stats)
            return hint if hint_ok else None
        share = 0.5 if not self.result.models else 1.0 / max(self.pending + 1, 1)
        budget = max(remaining * share, 0.01)
        model, variables = build_level_model(children, total, terms, cap)
        values = hint_values(children, terms, hint) if hint_ok else None
        start = time.perf_counter()
        status, counts, objective, bound = solve_level_model(
            model,
            variables=variables,
            children=children,
            hint=values,
            params=self.params,
            budget_s=budget,
        )
        wall = time.perf_counter() - start
        better = objective is not None and (hint_objective is None or objective < hint_objective)
        if counts is not None and not better:
            # No strict improvement: keep the recursion's canonical answer (deterministic).
            counts, objective = hint, hint_objective
        if counts is None:
            if status is SolveStatus.INFEASIBLE:
                self.result.infeasible = True
            counts, objective = (hint, hint_objective) if hint_ok else (None, None)
        stats = ModelStats(
            name, level - 1, len(children), status, objective, bound, wall, len(variables)
        )
        self.result.models.append(stats)
        return counts


def _within_cap(children: Sequence[LevelChild], counts: Sequence[int], cap: int | None) -> bool:
    if cap is None:
        return True
    need = 0
    for child, x in zip(children, counts, strict=True):
        if x > 0:
            need += int(child.leaves[x]) if child.leaves is not None else 1
    return need <= cap


def _int_curve(curve: np.ndarray[Any, np.dtype[np.float64]]) -> IntArray:
    big = np.where(np.isfinite(curve), curve, 0.0)
    return np.rint(big).astype(np.int64)


def solve_hierarchy(
    problem: CountProblem,
    tables: CountTables,
    params: PlacementParams,
    hint_counts: Mapping[int, IntArray] | None = None,
) -> HierarchyResult:
    """Solve the level models top-down.

    Args:
        problem: the count problem.
        tables: its recursion (exact subtree curves and the default hint).
        params: solver parameters; ``time_limit_s`` is the budget of all models together.
        hint_counts: counts per level to hint instead of the recursion's (e.g. greedy best
            fit when the recursion ignores a leaf cap).

    Returns:
        The counts and model statistics; ``complete`` is false when some model had neither a
        solution nor a usable hint.
    """
    result = _Hierarchy(problem, tables, params, hint_counts).run()
    result.complete = int(result.counts[1].sum()) == problem.hosts
    return result
