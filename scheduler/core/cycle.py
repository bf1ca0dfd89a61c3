"""The scheduling cycle: admit queued jobs in order, with backfill and preemption.

One cycle (run on every :class:`~scheduler.core.events.TimerFired`):

1. walk queued jobs in :class:`~scheduler.core.queueing.CycleOrder` (queue priority, fair
   share, job priority, submit time); skip a job over its queue's quota;
2. turn a job away in microseconds when the counts say it cannot fit
   (:class:`~scheduler.core.capacity.FreeCapacity`) or when the placer already refused the
   same request since capacity last grew (:class:`PlacementCache`); otherwise call the placer
   (at most ``max_placements_per_cycle`` calls, or ``max_placement_seconds_per_cycle`` of
   placer time; the rest wait for the next cycle). With ``defer_placement`` the cycle runs no
   placer for an admission at all: it uses placements computed off the event loop, checked
   against the snapshot they were computed on, and at the first job it has none for it
   stops and asks for them (:mod:`~scheduler.core.proposals`; the job is ``placing``);
3. a job that fits is admitted (gang: all its ranks at once, or nothing); once the cycle has
   admitted ``max_admitted_gpus_per_cycle`` GPUs the rest wait for the next cycle, so one
   cycle's commit stays small (the report says ``truncated`` and the runtime runs the next
   cycle at once);
4. the first job that does not fit is the *head*: if jobs being preempted or fenced GPUs would
   make room, it waits for them; else, with preemption on, lower-priority victims are chosen
   (:mod:`~scheduler.core.preemption`); else it gets a backfill reservation
   (:mod:`~scheduler.core.backfill`). Later jobs start only without delaying it. With backfill
   off, nothing after a blocked head starts. A head that fits nowhere even on an emptied
   cluster (drained hosts, exclusions) does not block; up to three heads are tried per cycle.

Spare hosts (the operator's pool, ``Node.spare``) are closed to queued jobs except
preemptible ones and *repairs through the queue*: a job back in the queue because a failure
interrupted it (its in-place repair found no room, a failure hit it while it restarted, or
in-place repair is off). The pool is there for repairs; without this a job repaired onto
spares that then fails over to the queue could not go back onto the hosts it ran on, and a job
that fills the non-spare hosts would wait for every failed host's repair (measured: days).

The outcome per examined job (``blocked`` reasons) and the reservation are kept in a
:class:`CycleReport` for :mod:`~scheduler.core.explain` and metrics.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from firsthop.reasons import FailureReason, JobReason, PendingReason
from placement import Placement, PlacementFailure, PlacementParams, PlacementRequest, Snapshot
from placement import place as run_placer
from scheduler.core.backfill import Reservation, ends_before, find_reservation
from scheduler.core.capacity import FreeCapacity, gpu_mask, placement_gpu_ids
from scheduler.core.context import Ctx
from scheduler.core.jobs import admit, preempt
from scheduler.core.maintenance_hold import MaintenanceHolds
from scheduler.core.preemption import plan_preemption
from scheduler.core.proposals import (
    PlacementWork,
    ProposalBook,
    RequestKey,
    Unplaceable,
    WorkItem,
)
from scheduler.core.queueing import CycleOrder, within_quota
from scheduler.core.records import Job
from scheduler.core.state import SchedulerState
from scheduler.core.states import JobState
from topology.errors import InvalidInputError
from topology.index import BoolArray

MAX_HEADS = 3
MAX_WORK_JOBS = 256
"""Jobs one deferred cycle asks to be placed (the worker's time budget may stop sooner)."""

Placer = Callable[[Snapshot, PlacementRequest, PlacementParams], Placement | PlacementFailure]
"""The placement policy seam: ``placement.place`` in production; the simulator passes other
policies (Slurm- and Kueue-style baselines) so that only placement differs between runs."""


@dataclass
class CycleReport:
    """What one cycle did (volatile: for explanations and metrics).

    Attributes:
        at: the cycle's time.
        examined: queued jobs looked at.
        placements: placer calls (admission, reservation and preemption together).
        placement_seconds: solve time the placer reported for the admission calls.
        admitted: ids of jobs admitted, in order.
        admitted_gpus: GPUs those jobs hold.
        backfilled: those admitted while a head job held a reservation.
        preempted: ids of jobs chosen as preemption victims.
        reservation: the head job's reservation, if any.
        blocked: per examined job that was not admitted, a stable reason: ``quota``,
            ``insufficient_capacity``, a placer failure reason, ``backfill_would_delay``,
            ``reserved``, ``preempting``, ``waiting_for_preemption``,
            ``blocked_by_head`` (backfill off), ``cycle_budget`` or ``placing``.
        truncated: the placer budget ran out before every queued job was examined.
        proposals_used: admissions (and refusals) that used a proposal instead of the placer.
        work: with deferred placement, the placements the cycle stopped for (``None`` when it
            needed none).
    """

    at: datetime
    examined: int = 0
    placements: int = 0
    placement_seconds: float = 0.0
    admitted: list[str] = field(default_factory=list)
    admitted_gpus: int = 0
    backfilled: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    reservation: Reservation | None = None
    blocked: dict[str, str] = field(default_factory=dict)
    truncated: bool = False
    proposals_used: int = 0
    work: PlacementWork | None = None


class PlacementCache:
    """Placement requests per job, and requests the placer refused, per capacity epoch.

    A refusal stays valid while ``capacity_epoch`` is unchanged: capacity only shrank since,
    so the same request cannot fit now either. Jobs with equal requests share the entry, so
    10,000 queued jobs of a few shapes cost a few placer calls, not 10,000.
    """

    def __init__(
        self, params: PlacementParams, placer: Placer = run_placer, *, deferred: bool = False
    ) -> None:
        self.params = params
        self.placer = placer
        self.deferred = deferred
        """Admission placements come from :attr:`proposals` only (module docstring)."""
        self.proposals = ProposalBook()
        self._requests: dict[str, tuple[frozenset[str], PlacementRequest, tuple[str, ...]]] = {}
        self.spares: frozenset[str] = frozenset()
        """Spare hosts (set every cycle): closed to jobs that are neither preemptible nor
        repairs (:func:`may_use_spares`)."""
        self.holds = MaintenanceHolds()
        """Hosts ``--busy wait`` campaigns hold (set every tick): closed to jobs that would
        still run when the campaign reaches them (:mod:`~scheduler.core.maintenance_hold`)."""
        self._refused: dict[RequestKey, tuple[int, str]] = {}

    def request(self, job: Job) -> PlacementRequest:
        """The job's placement request (with its excluded hosts)."""
        return self._entry(job)[1]

    def key(self, job: Job) -> RequestKey:
        """A key equal for jobs whose placement requests are equal."""
        entry = self._entry(job)
        return (job.spec.request_key, entry[2])

    def _unheld(self, job: Job) -> frozenset[str]:
        excluded = job.excluded_hosts
        if self.spares and not may_use_spares(job):
            excluded = excluded | self.spares
        return excluded

    def _entry(self, job: Job) -> tuple[frozenset[str], PlacementRequest, tuple[str, ...]]:
        entry = self._requests.get(job.id)
        excluded = self._unheld(job)
        if self.holds:
            held = self.holds.excluded(job)
            if held:
                excluded = excluded | held
        if entry is None or entry[0] != excluded:
            entry = (excluded, job.spec.to_request(excluded), tuple(sorted(excluded)))
            self._requests[job.id] = entry
        return entry

    def refused(self, key: RequestKey, epoch: int) -> str | None:
        """The placer's reason if this request was refused at ``epoch``."""
        hit = self._refused.get(key)
        return hit[1] if hit is not None and hit[0] == epoch else None

    def refuse(self, key: RequestKey, epoch: int, reason: str) -> None:
        """Remember a refusal at ``epoch``."""
        self._refused[key] = (epoch, reason)

    def place(self, snapshot: Snapshot, job: Job) -> Placement | PlacementFailure:
        """Run the placer for ``job`` on ``snapshot``."""
        return self.placer(snapshot, self.request(job), self.params)

    def work_item(self, job: Job) -> WorkItem:
        """``job``'s request, to be placed off the cycle."""
        return WorkItem(job.id, self.key(job), self.request(job))

    def place_unheld(self, snapshot: Snapshot, job: Job) -> Placement | PlacementFailure:
        """Run the placer for ``job`` as if no campaign held hosts (for explanations)."""
        request = job.spec.to_request(self._unheld(job))
        return self.placer(snapshot, request, self.params)

    @property
    def size(self) -> int:
        """Jobs with a cached request."""
        return len(self._requests)

    def prune(self, keep: set[str]) -> None:
        """Forget jobs not in ``keep`` (call now and then to bound memory)."""
        for job_id in [j for j in self._requests if j not in keep]:
            del self._requests[job_id]
        if len(self._refused) > 4 * max(len(keep), 64):
            self._refused.clear()


def may_use_spares(job: Job) -> bool:
    """Whether queued ``job`` may be placed on spare hosts: preemptible, or back in the queue
    after a failure (a repair through the queue; module docstring)."""
    if job.spec.preemptible:
        return True
    return (
        job.state is JobState.REQUEUED
        and bool(job.failures)
        and job.failures[-1].reason != FailureReason.PREEMPTED
    )


def run_cycle(ctx: Ctx, at: datetime, cache: PlacementCache) -> CycleReport:
    """One scheduling cycle at ``at`` (see the module docstring)."""
    state, config = ctx.state, ctx.config
    cache.spares = state.spares
    report = CycleReport(at)
    seconds_budget = config.max_placement_seconds_per_cycle
    plain = FreeCapacity(state, state.busy)
    held_back: FreeCapacity | None = None
    refused_held_back: set[RequestKey] = set()
    heads = 0
    order = iter(CycleOrder(state))
    for job in order:
        report.examined += 1
        if not _within_quota(state, job):
            report.blocked[job.id] = PendingReason.QUOTA
            continue
        reservation = report.reservation
        avoid = held_back is not None and not (
            reservation is not None and ends_before(job, at, reservation.start)
        )
        capacity = held_back if avoid and held_back is not None else plain
        key = cache.key(job)
        reason: str | None = None
        placement: Placement | None = None
        if not capacity.could_fit(job):
            reason = PendingReason.INSUFFICIENT_CAPACITY
        elif avoid and key in refused_held_back:
            reason = PendingReason.BACKFILL_WOULD_DELAY
        elif not avoid and (hit := cache.refused(key, state.capacity_epoch)) is not None:
            reason = hit
        elif (
            _out_of_budget(report, config.max_placements_per_cycle, seconds_budget)
            or report.admitted_gpus >= config.max_admitted_gpus_per_cycle
        ):
            report.blocked[job.id] = PendingReason.CYCLE_BUDGET
            report.truncated = True
            break
        else:
            snapshot = capacity.snapshot()
            result = cache.proposals.take(job.id, key, snapshot) if cache.proposals else None
            if result is not None:
                report.proposals_used += 1
            elif cache.deferred:
                report.blocked[job.id] = PendingReason.PLACING
                report.truncated = True
                report.work = _work(ctx, cache, snapshot=snapshot, job=job, rest=order, plain=plain)
                break
            else:
                report.placements += 1
                try:
                    result = cache.place(snapshot, job)
                except InvalidInputError as exc:
                    result = Unplaceable(str(exc.reason), exc.message)
                else:
                    report.placement_seconds += result.solve_seconds
            if isinstance(result, Unplaceable):
                _fail_unplaceable(ctx, job, at, result)
                continue
            if isinstance(result, Placement):
                placement = result
            elif avoid:
                refused_held_back.add(key)
                reason = PendingReason.BACKFILL_WOULD_DELAY
            else:
                reason = result.reason.value
                cache.refuse(key, state.capacity_epoch, reason)
        if placement is not None:
            new = admit(ctx, job, placement, at)
            if new.allocation is not None:
                ids = state.gpu_ids(new.allocation)
                plain.take(ids)
                if held_back is not None:
                    held_back.take(ids)
            report.admitted.append(job.id)
            report.admitted_gpus += job.spec.gpus
            if report.reservation is not None:
                report.backfilled.append(job.id)
            continue
        if avoid and reason == PendingReason.INSUFFICIENT_CAPACITY and plain.could_fit(job):
            reason = PendingReason.BACKFILL_WOULD_DELAY
        if report.reservation is None and heads < MAX_HEADS and not avoid:
            heads += 1
            found, code = _head_of_line(ctx, job, at, cache, report)
            report.blocked[job.id] = code if found is not None else (reason or code)
            if found is not None:
                report.reservation = found
                held_back = FreeCapacity(state, state.busy | found.mask)
                if not config.backfill:
                    break
            continue
        report.blocked[job.id] = reason or PendingReason.INSUFFICIENT_CAPACITY
    return report


def _within_quota(state: SchedulerState, job: Job) -> bool:
    return within_quota(state.queues[job.queue], state.queue_usage.get(job.queue, 0), job)


def _out_of_budget(report: CycleReport, calls: int, seconds: float | None) -> bool:
    if report.placements >= calls:
        return True
    return seconds is not None and report.placement_seconds >= seconds


def _fail_unplaceable(ctx: Ctx, job: Job, at: datetime, refusal: Unplaceable) -> None:
    ctx.state.transition(
        job, JobState.FAILED, at, JobReason.UNPLACEABLE_JOB, f"{refusal.reason}: {refusal.message}"
    )


def _work(
    ctx: Ctx,
    cache: PlacementCache,
    *,
    snapshot: Snapshot,
    job: Job,
    rest: Iterator[Job],
    plain: FreeCapacity,
) -> PlacementWork:
    """The placements a deferred cycle stopped for: ``job`` on ``snapshot``, then the next
    queued jobs that the counts do not already rule out (at most ``MAX_WORK_JOBS``)."""
    state = ctx.state
    items = [cache.work_item(job)]
    for later in rest:
        if len(items) >= MAX_WORK_JOBS:
            break
        if not _within_quota(state, later) or not plain.could_fit(later):
            continue
        if cache.refused(cache.key(later), state.capacity_epoch) is not None:
            continue
        items.append(cache.work_item(later))
    return PlacementWork(snapshot.busy, snapshot.unavailable, tuple(items))


def _in_flight(state: SchedulerState) -> BoolArray:
    """GPUs on their way to being free: held by preempted jobs, or fenced."""
    mask = np.zeros(state.index.num_gpus, dtype=np.bool_)
    for job_id in state.allocated:
        job = state.jobs[job_id]
        if job.state is JobState.PREEMPTED and job.allocation is not None:
            mask[state.gpu_ids(job.allocation)] = True
    for fence in state.fences.values():
        mask[list(fence.gpus)] = True
    return mask


def _head_of_line(
    ctx: Ctx, job: Job, at: datetime, cache: PlacementCache, report: CycleReport
) -> tuple[Reservation | None, str]:
    state, config = ctx.state, ctx.config
    index = state.index
    in_flight = _in_flight(state)
    base = state.busy & ~in_flight
    if in_flight.any():
        soon = FreeCapacity(state, base.copy())
        if soon.could_fit(job):
            report.placements += 1
            result = cache.place(soon.snapshot(), job)
            if isinstance(result, Placement):
                mask = gpu_mask(index, placement_gpu_ids(index, result))
                return Reservation(job.id, at, mask, "preemption", result), (
                    PendingReason.WAITING_FOR_PREEMPTION
                )
    if config.preemption:
        plan, spent = plan_preemption(
            state,
            job,
            at,
            base_busy=base,
            place=cache.place,
            max_placements=config.max_preemption_placements,
        )
        report.placements += spent
        if plan is not None and plan.victims:
            for victim_id in plan.victims:
                preempt(ctx, state.jobs[victim_id], at, job)
                report.preempted.append(victim_id)
            mask = gpu_mask(index, placement_gpu_ids(index, plan.placement))
            return Reservation(
                job.id, at, mask, "preemption", plan.placement
            ), PendingReason.PREEMPTING
    found, spent = find_reservation(
        state,
        job,
        at,
        default_limit_s=config.default_time_limit_s,
        place=cache.place,
        max_placements=config.max_reservation_placements,
    )
    report.placements += spent
    if found is None:
        return None, PendingReason.INSUFFICIENT_CAPACITY
    return found, PendingReason.RESERVED
