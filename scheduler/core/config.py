"""Tuning of the scheduling core: timeouts, grace periods, cycle budgets, policy switches.

A plain frozen pydantic model with defaults; the runtime builds it from its own settings (the
core reads no file and no environment variable).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from placement import PlacementParams

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(ge=1)]


def default_placement_params() -> PlacementParams:
    """Placement parameters for the scheduling cycle: a short CP-SAT budget per job."""
    return PlacementParams(time_limit_s=0.25)


class SchedulerConfig(BaseModel):
    """Parameters of :class:`~scheduler.core.scheduler.Scheduler`.

    Attributes:
        heartbeat_timeout_s: a node whose last heartbeat is older than this is LOST. With
            agents heartbeating every 5 s, 30 s tolerates five missed beats.
        stop_grace_s: grace given to ranks asked to stop (SIGTERM to SIGKILL on the agent);
            a preempted job whose ranks have not stopped by then is sent a forced stop, and
            GPUs fenced after a cancel or failure are released after twice this at the latest.
        start_timeout_s: a job whose ranks are not all running this long after it was placed
            goes through the failure path (``start_timeout``; requeued while restarts are
            left), like Kueue's ``waitForPodsReady``.
        default_time_limit_s: run time assumed, for backfill reservations only, of jobs that
            set no ``time_limit_s`` (it is never enforced).
        return_lost_nodes: a LOST node whose agent comes back returns to READY by itself;
            off (the default), it comes back DRAINED and an operator's resume (which runs a
            deep health check first) returns it.
        default_queue: the queue that always exists (created on first start).
        backfill: let smaller jobs start ahead of a blocked one when they do not delay it.
        preemption: let jobs of higher priority preempt lower-priority running jobs.
        max_placements_per_cycle: placement attempts (calls of the placer) per cycle beyond
            which remaining jobs wait for the next cycle. Bounds the cycle time.
        max_placement_seconds_per_cycle: once the placer calls of a cycle have taken this
            long (as the placer reports its own solve time), remaining jobs wait for the next
            cycle. A large job's CP-SAT placement costs ~10 ms on 4,096 hosts, a small one
            ~1 ms, so a count alone cannot bound the cycle time. ``None`` turns it off, which
            makes cycles depend on nothing but their inputs (the simulator's choice).
        max_admitted_gpus_per_cycle: once a cycle has admitted jobs holding this many GPUs,
            remaining jobs wait for the next cycle (``cycle_budget``), which the runtime runs
            at once. Bounds the size of one admission commit (filling an empty 32K-GPU
            cluster was one commit of 530 jobs and 32K rank slots that held up every
            submission behind it) without slowing the fill.
        defer_placement: the cycle runs no placer for admissions; it uses placements computed
            away from it (the server's placement worker process) and checked against the
            snapshot they were computed on, and stops at the first job it has none for
            (:mod:`~scheduler.core.proposals`). Off, the cycle places inline (the simulator
            and the core's tests).
        max_reservation_placements: placer calls spent finding the blocked head job's
            reservation (start time and GPUs) per cycle.
        max_preemption_placements: placer calls spent choosing preemption victims per cycle.
        placement: parameters of every placer call.
        max_checkpoint_grace_s: the most seconds a job's ranks get, on a planned stop, between
            its checkpoint signal and SIGKILL (a spec's ``checkpoint.grace_s`` above it is cut
            to it); a spec without ``grace_s`` gets ``stop_grace_s``.
        repair_in_place: a running job that checkpoints and loses a host (LOST, FAILED
            verdict, a rank exit blamed on a host) is repaired where it runs
            (:mod:`scheduler.core.repair`) instead of going back to the queue.
        blame_delay_s: how long after a rank's failed exit the core waits before blaming a
            host, so that a host that stopped heartbeating (or reported FAILED) is blamed
            rather than the survivor whose rank noticed first (about two heartbeat
            intervals).
        repair_preempt_above: an in-place repair whose best replacement on free hosts (and
            spares) costs more than this many times the job's cost before the failure, or that
            finds none, preempts lower-priority jobs holding hosts in the failed hosts' leaf or
            pod (gracefully, least lost work first) and takes their hosts, when that costs
            this many times less. ``None`` (or ``preemption`` off) turns this off.
        spares_per_leaf: idle healthy hosts the scheduler keeps in the spare pool of every
            leaf (level 1 of the topology), designating new ones as spares are used, lost or
            drained (:mod:`scheduler.core.spares`); operators' spares count towards it.
        spares_per_pod: the same per pod (level 2; the whole cluster when the topology has one
            switch tier), counting the pod's leaf spares.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_timeout_s: PositiveFloat = 30.0
    stop_grace_s: PositiveFloat = 30.0
    start_timeout_s: PositiveFloat = 600.0
    default_time_limit_s: PositiveInt = 24 * 3600
    return_lost_nodes: bool = False
    default_queue: Annotated[str, Field(min_length=1)] = "default"
    backfill: bool = True
    preemption: bool = True
    max_placements_per_cycle: PositiveInt = 1000
    max_placement_seconds_per_cycle: PositiveFloat | None = 0.5
    max_admitted_gpus_per_cycle: PositiveInt = 4096
    defer_placement: bool = False
    max_reservation_placements: PositiveInt = 12
    max_preemption_placements: PositiveInt = 12
    placement: PlacementParams = Field(default_factory=default_placement_params)
    max_checkpoint_grace_s: PositiveFloat = 600.0
    repair_in_place: bool = True
    blame_delay_s: Annotated[float, Field(ge=0)] = 10.0
    repair_preempt_above: Annotated[float, Field(ge=1)] | None = 1.10
    spares_per_leaf: Annotated[int, Field(ge=0)] = 0
    spares_per_pod: Annotated[int, Field(ge=0)] = 0
