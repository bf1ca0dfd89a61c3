"""Tuning knobs of one placement run: solver limits, seed, exposure factors, tie-breakers.

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from placement.dims import Dim

NonNegative = Annotated[float, Field(ge=0)]


class PlacementParams(BaseModel):
    """Parameters of :func:`placement.place`.

    Attributes:
        time_limit_s: budget of all CP-SAT models of one placement together (seconds).
        num_workers: CP-SAT worker threads per model. One is the default: the models are
            small, start from an optimal or near-optimal hint, and with ``interleave_search``
            a single thread still runs every subsolver (LNS included).
        random_seed: CP-SAT seed.
        relative_gap_limit: stop a model when its relative gap falls below this.
        absolute_gap_ms: stop a model when objective and bound are this close (ms of cost):
            the tie-breakers are worth microseconds, and proving them optimal can take far
            longer than the placement is worth.
        probing_level: CP-SAT ``cp_model_probing_level`` (0: no probing in presolve).
        deterministic: bound every model by CP-SAT deterministic time (about seconds of work,
            independent of machine load) with ``interleave_search``, so a fixed seed gives the
            same answer on every run. A wall-clock guard of ``wall_guard_factor`` times the
            budget still applies; only when that guard fires can answers differ.
        wall_guard_factor: see ``deterministic``.
        exposure: per dimension, the fraction of its communication time that is not hidden
            behind compute (placement.md section 9). The cost weights each dimension's bytes by
            it. Defaults to 1 (raw communication time) for every dimension.
        domain_use_us: tie-breaker cost (microseconds) per domain used, times its level:
            prefer fewer leaves and pods when communication cost is equal.
        partial_domain_us: tie-breaker cost (microseconds) per domain touched but not
            exhausted, times its level (best fit: keep whole domains free).
        fast_path_max_hosts: jobs of at most this many hosts skip CP-SAT (the exact count
            recursion alone decides; it solves the same objective).
        use_cpsat: run the CP-SAT models at all (``False``: recursion and heuristics only).
        try_transposed_layout: also try the host layout that nests the heaviest dimension
            innermost (see :mod:`placement.ranks`).
        stranded_leaf_hosts: a free host counts as stranded when its leaf has fewer free
            hosts than this (a typical multi-host block).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_limit_s: Annotated[float, Field(gt=0)] = 1.5
    num_workers: Annotated[int, Field(ge=1)] = 1
    random_seed: Annotated[int, Field(ge=0)] = 0
    relative_gap_limit: NonNegative = 0.0
    absolute_gap_ms: NonNegative = 0.5
    probing_level: Annotated[int, Field(ge=0, le=2)] = 0
    deterministic: bool = True
    wall_guard_factor: Annotated[float, Field(ge=1)] = 4.0
    exposure: dict[Dim, NonNegative] = Field(default_factory=dict)
    domain_use_us: NonNegative = 1.0
    partial_domain_us: NonNegative = 1.0
    fast_path_max_hosts: Annotated[int, Field(ge=0)] = 8
    use_cpsat: bool = True
    try_transposed_layout: bool = True
    stranded_leaf_hosts: Annotated[int, Field(ge=1)] = 4

    def exposure_of(self, dim: Dim) -> float:
        """The exposure factor of ``dim`` (1 unless set)."""
        return self.exposure.get(dim, 1.0)
