"""What :func:`placement.place` returns: a :class:`Placement` or a :class:`PlacementFailure`.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from placement.bound import LowerBound
from placement.cpsat import ModelStats
from placement.dims import Dim
from placement.errors import FailureReason
from placement.fragmentation import Fragmentation
from placement.request import PlacementRequest
from topology.index import IntArray, TopologyIndex


@dataclass(frozen=True, slots=True)
class RankTable:
    """Host id and local GPU index of every rank (index = rank)."""

    hosts: IntArray
    gpus: IntArray

    def __len__(self) -> int:
        return len(self.hosts)

    def global_gpu_ids(self, index: TopologyIndex) -> IntArray:
        """Global GPU id of every rank."""
        return np.asarray(index.gpu_offset[self.hosts] + self.gpus, dtype=np.int64)

    def rows(self, index: TopologyIndex) -> list[dict[str, Any]]:
        """``[{"rank", "host", "gpu"}]`` with host names."""
        names = index.host_names
        return [
            {"rank": r, "host": names[h], "gpu": g}
            for r, (h, g) in enumerate(zip(self.hosts.tolist(), self.gpus.tolist(), strict=True))
        ]


@dataclass(frozen=True, slots=True)
class SolverReport:
    """What the CP-SAT level models did.

    Attributes:
        status: the top model's status (``not_run`` on the fast path or when no model had
            more than one child).
        models: every level model, top first.
        objective_ms: the count model's estimate of the chosen counts' cost (the whole-block
            proxy of :mod:`placement.counts`, plus tie-breakers of a few microseconds).
        bound_ms: CP-SAT's proven lower bound on that proxy over all count choices, or
            ``None``. It bounds the count model, not the cost (the proxy can exceed the cost
            of a real fill): :attr:`Placement.lower_bound` is the bound on the cost.
    """

    status: str = "not_run"
    models: tuple[ModelStats, ...] = ()
    objective_ms: float | None = None
    bound_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """A placed job.

    Attributes:
        request: what was asked.
        ranks: the rank table.
        hosts: the job's hosts in fill order (slot positions).
        cost_ms: communication cost per step (:mod:`placement.cost`).
        cost_by_dim_ms: its per-dimension parts.
        lower_bound: the lower bound and its components (:mod:`placement.bound`).
        solver: CP-SAT's part.
        solve_seconds: wall time of :func:`placement.place`.
        spans: per dimension, groups whose highest spanned level is each level name.
        fragmentation_before: metrics of the snapshot as given.
        fragmentation_after: metrics once this job's GPUs are busy.
        domains: per switch tier name, hosts taken in each domain used.
        method: which candidate won (``cpsat``, ``recursion``, ``improved`` (the improvement
            phase, :mod:`placement.improve`), ``best_fit``, ``first_fit``, ``single_host``).
        layout: physical nesting of the slot digits, innermost first.
        candidates: cost (ms) of every candidate evaluated, by name.
        gpus_per_host: ``G`` used for the rank table.
    """

    request: PlacementRequest
    ranks: RankTable
    hosts: IntArray
    cost_ms: float
    cost_by_dim_ms: dict[Dim, float]
    lower_bound: LowerBound
    solver: SolverReport
    solve_seconds: float
    spans: dict[Dim, dict[str, int]]
    fragmentation_before: Fragmentation
    fragmentation_after: Fragmentation
    domains: dict[str, dict[str, int]]
    method: str
    layout: tuple[str, ...]
    candidates: dict[str, float] = field(default_factory=dict)
    gpus_per_host: int = 8

    @property
    def ratio(self) -> float:
        """``cost / lower bound`` (1 when both are 0)."""
        return _ratio(self.cost_ms, self.lower_bound.total_ms)

    @property
    def gap(self) -> float:
        """Proven optimality gap ``1 - lower bound / cost`` (0 when the cost is 0).

        No placement of the job on this snapshot costs less than ``cost * (1 - gap)``.
        """
        if self.cost_ms <= 0:
            return 0.0
        return max(0.0, 1.0 - self.lower_bound.total_ms / self.cost_ms)

    @property
    def proven_bound_ms(self) -> float | None:
        """CP-SAT's proven bound on the *count model's* objective, when it ran.

        Not a bound on :attr:`cost_ms` (see :attr:`SolverReport.bound_ms`); kept for callers
        of the first engine. Use :attr:`lower_bound` and :attr:`gap` for the cost.
        """
        return self.solver.bound_ms


@dataclass(frozen=True, slots=True)
class PlacementFailure:
    """A valid request that does not fit the snapshot.

    Attributes:
        reason: stable reason.
        message: one line for people.
        counts: the numbers behind the reason (needed vs available, per tier).
        solve_seconds: wall time spent.
    """

    reason: FailureReason
    message: str
    counts: dict[str, int]
    solve_seconds: float


def _ratio(cost: float, bound: float) -> float:
    if bound <= 0:
        return 1.0 if cost <= 0 else float("inf")
    return cost / bound
