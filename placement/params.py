"""Tuning knobs of one placement run: solver limits, seed, the cost model's terms, tie-breakers.

The cost model's defaults (exposure per dimension, ECMP contention above the leaf, per-hop
latency) are documented with their sources in :mod:`placement.cost` and placement.md sections
2.3, 3 and 9. A cluster sets them in the scheduler's ``--config`` YAML (or as
``FIRSTHOP_PLACEMENT__ECMP_CONTENTION=1.3`` and so on), for example after NCCL tests show
1.3x across leaves, a 2:1 core that hurts more, and DP that overlaps less than assumed::

    placement:
      ecmp_contention: 1.3
      tier_contention: {core: 2.0}
      exposure: {dp: 0.5}

:meth:`PlacementParams.bandwidth_only` gives the bytes-over-bandwidth model without the
three terms (the first placement engine's).

Must not import grpc, generated protos, databases, subprocess, typer, rich or ``scheduler``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from placement.dims import Dim

NonNegative = Annotated[float, Field(ge=0)]

DEFAULT_EXPOSURE: dict[Dim, float] = {"tp": 1.0, "cp": 1.0, "ep": 1.0, "pp": 0.5, "dp": 0.3}
"""Fraction of each dimension's communication time on the critical path (placement.md
section 9): TP, all-gather CP and EP all-to-all sit on it (Llama 3: CP is "exposed in the
critical path"); PP p2p overlaps about half with the pipeline schedule; FSDP/ZeRO DP overlaps
with backward and prefetch (0.2-0.5; 0.3 here)."""

DEFAULT_ECMP_CONTENTION = 1.5
"""Slowdown of traffic that leaves its leaf over ECMP-hashed uplinks (placement.md section 9).

Derived, not quoted: hashing ``f`` flows per uplink at random onto ``u`` uplinks loads the
busiest one about ``1 + sqrt(2 ln u / f)`` times the mean (balls into bins), and a ring
collective runs at its busiest link's pace: 1.4-1.7 for 32-64 uplinks and 16 flows each
(Meta's 16 flows per GPU pair). Crux (SIGCOMM'24) finds most production contention on such
paths. Calibrate per cluster from NCCL tests across leaves against inside one."""


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
            behind compute (placement.md section 9); dimensions not given take
            :data:`DEFAULT_EXPOSURE`.
        ecmp_contention: ``kappa``, the slowdown of bandwidth-bound traffic at every level
            above the first network switch tier (:data:`DEFAULT_ECMP_CONTENTION`); 1 turns
            it off.
        tier_contention: per tier name (``pod``, ``core``, ``leaf``...), a contention factor
            overriding ``ecmp_contention`` for that level.
        latency: charge each dimension's messages per step times the hop latency of the
            level its groups span (alpha-beta model, :mod:`placement.cost`).
        domain_use_us: tie-breaker cost (microseconds) per domain used, times its level:
            prefer fewer leaves and pods when communication cost is equal.
        partial_domain_us: tie-breaker cost (microseconds) per domain touched but not
            exhausted, times its level (best fit: keep whole domains free).
        fast_path_max_hosts: jobs of at most this many hosts skip CP-SAT (the exact count
            recursion alone decides; it solves the same objective).
        use_cpsat: run the CP-SAT models at all (``False``: recursion and heuristics only).
        prove_count_model: also run them for jobs without a leaf cap, where the recursion is
            already exact for their objective: they then only add CP-SAT's proven bound on
            the count model (``Placement.solver``), at up to ``time_limit_s``. Jobs with a leaf
            cap always run them.
        try_transposed_layout: also try the host layout that nests the heaviest dimension
            innermost (see :mod:`placement.ranks`).
        stranded_leaf_hosts: a free host counts as stranded when its leaf has fewer free
            hosts than this (a typical multi-host block).
        improve: run the improvement phase (:mod:`placement.improve`): restricted re-solves
            around the best candidates, so that more free hosts never give a worse answer.
        improve_resolves: most re-solves of that phase per job.
        improve_work: re-solves times job hosts allowed (a 2,048-host job gets 1): keeps the
            phase deterministic and within the large-job time target.
        improve_move_work: count-move evaluations times job hosts allowed (the phase's
            hill-climb on hosts per leaf).
        improve_cluster_work: re-solves, and separately move evaluations, times cluster hosts
            allowed (each walks every host: 2 of each on 12,288 hosts, 16 on 1,024), so small
            jobs on large clusters stay within their time target.
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
    ecmp_contention: Annotated[float, Field(ge=1)] = DEFAULT_ECMP_CONTENTION
    tier_contention: dict[str, Annotated[float, Field(ge=1)]] = Field(default_factory=dict)
    latency: bool = True
    domain_use_us: NonNegative = 1.0
    partial_domain_us: NonNegative = 1.0
    fast_path_max_hosts: Annotated[int, Field(ge=0)] = 8
    use_cpsat: bool = True
    prove_count_model: bool = False
    try_transposed_layout: bool = True
    stranded_leaf_hosts: Annotated[int, Field(ge=1)] = 4

    improve: bool = True
    improve_resolves: Annotated[int, Field(ge=0)] = 16
    improve_work: Annotated[int, Field(ge=0)] = 2048
    improve_move_work: Annotated[int, Field(ge=0)] = 4096
    improve_cluster_work: Annotated[int, Field(ge=0)] = 32768

    def exposure_of(self, dim: Dim) -> float:
        """The exposure factor of ``dim`` (:data:`DEFAULT_EXPOSURE` unless set)."""
        return self.exposure.get(dim, DEFAULT_EXPOSURE[dim])

    def contention_of(self, tier: str) -> float:
        """The ECMP contention factor of traffic spanning the tier named ``tier``."""
        return self.tier_contention.get(tier, self.ecmp_contention)

    @classmethod
    def bandwidth_only(cls, **overrides: object) -> PlacementParams:
        """Bytes over bandwidth only: exposure 1, no contention, no latency.

        The cost model of the first placement engine; benchmarks compare against it.
        """
        base: dict[str, object] = {
            "exposure": dict.fromkeys(DEFAULT_EXPOSURE, 1.0),
            "ecmp_contention": 1.0,
            "latency": False,
        }
        base.update(overrides)
        return cls.model_validate(base)
