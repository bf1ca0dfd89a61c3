"""``explain_job``: why a job is where it is, and the placement it would get now.

For a queued job the explanation names the rule or the capacity that holds it back, as a
stable ``reason``:

- ``quota``: its queue would exceed its GPU quota;
- ``reserved`` / ``preempting`` / ``waiting_for_preemption``: it is the blocked head job and
  holds a reservation (``reservation_start``), has just preempted lower-priority jobs, or waits
  for preempted jobs to stop;
- a placer failure reason (``insufficient_gpus``, ``insufficient_free_hosts``,
  ``no_nvlink_domain_for_tp``, ``required_tier_impossible``, ``too_many_leaves``, ...) when it
  does not fit the free capacity now, with the placer's numbers in ``details``;
- ``backfill_would_delay``: it fits, but only on GPUs reserved for the head job, and it would
  not end before the head job's reserved start;
- ``maintenance_reserved``: it fits the free capacity only on hosts that ``--busy wait``
  maintenance campaigns hold (:mod:`~scheduler.core.maintenance_hold`): it has no time limit,
  or would still run when the campaign reaches them; ``details`` names the campaigns;
- ``blocked_by_head``: backfill is off and a job ahead of it is blocked;
- ``cycle_budget``: the last cycle ran out of placer calls before reaching it;
- ``next_cycle``: it fits now and will be admitted by the next cycle unless a job ahead of it
  takes the room.

``would_place`` is the allocation the placer gives it on the free capacity now (ignoring
reservations), converted by :func:`~scheduler.core.jobs.allocation_of`. For other states the
reason is the job's own latest reason (``placed``, ``preempted``, ``node_lost``, ...).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from firsthop.reasons import PendingReason
from placement import Placement, PlacementFailure
from scheduler.core.capacity import FreeCapacity
from scheduler.core.jobs import allocation_of, get_job
from scheduler.core.maintenance_hold import REASON as MAINTENANCE_RESERVED
from scheduler.core.queueing import queue_position, within_quota
from scheduler.core.records import Allocation
from scheduler.core.states import QUEUED_JOB_STATES, JobState
from topology.errors import FirsthopError

if TYPE_CHECKING:
    from scheduler.core.scheduler import Scheduler

HEAD_REASONS = frozenset(
    {PendingReason.RESERVED, PendingReason.PREEMPTING, PendingReason.WAITING_FOR_PREEMPTION}
)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a job is where it is.

    Attributes:
        job_id: the job.
        state: its state.
        reason: stable reason (see the module docstring).
        message: one line for people.
        details: further lines (placer numbers, reservation, queue position).
        queue_position: 1-based position in its queue while queued.
        would_place: the allocation it would get on the free capacity now (queued jobs).
        failure: the placer's refusal on the free capacity now (queued jobs).
        reservation_start: when the head job's reservation starts, if it holds one.
    """

    job_id: str
    state: JobState
    reason: str
    message: str
    details: tuple[str, ...] = ()
    queue_position: int | None = None
    would_place: Allocation | None = None
    failure: PlacementFailure | None = None
    reservation_start: datetime | None = None


def explain_job(scheduler: Scheduler, job_id: str, now: datetime) -> Explanation:
    """Explain ``job_id`` (see the module docstring).

    Raises:
        UnknownJobError: no such job.
    """
    state = scheduler.state
    job = get_job(state, job_id)
    if job.state not in QUEUED_JOB_STATES:
        details: list[str] = []
        if job.allocation is not None:
            hosts = job.allocation.hosts
            details.append(
                f"on {len(hosts)} host(s) from {hosts[0]}; cost {job.allocation.cost:.1f} ms "
                f"(lower bound {job.allocation.lower_bound:.1f} ms)"
            )
        if job.failures:
            last = job.failures[-1]
            details.append(f"last interruption: {last.reason} at {last.at.isoformat()}")
        return Explanation(
            job.id, job.state, job.reason or job.state.value.lower(), job.message, tuple(details)
        )
    queue = state.queues[job.queue]
    held = state.queue_usage.get(job.queue, 0)
    position = queue_position(state, job)
    details = [f"position {position} in queue {queue.name}"]
    if not within_quota(queue, held, job):
        return Explanation(
            job.id,
            job.state,
            PendingReason.QUOTA,
            f"queue {queue.name} holds {held} of its {queue.gpu_quota} GPUs; the job needs "
            f"{job.gpus} more",
            tuple(details),
            position,
        )
    placement: Placement | None = None
    failure: PlacementFailure | None = None
    try:
        result = scheduler.cache.place(FreeCapacity(state, state.busy.copy()).snapshot(), job)
    except FirsthopError as exc:
        return Explanation(job.id, job.state, exc.reason, exc.message, tuple(details), position)
    if isinstance(result, Placement):
        placement = result
        details.append(
            f"would get {len(result.hosts)} host(s), cost {result.cost_ms:.1f} ms "
            f"(ratio {result.ratio:.2f} to the lower bound)"
        )
    else:
        failure = result
        counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
        details.append(f"placer: {result.reason.value} ({counts})")
    holding: dict[str, int] = (
        scheduler.cache.holds.campaigns_for(job) if scheduler.cache.holds else {}
    )
    if holding:
        details.append(
            "hosts reserved for maintenance: "
            + ", ".join(f"campaign {name} holds {n}" for name, n in sorted(holding.items()))
        )
    unheld_fit = False
    if holding and failure is not None:
        unheld = scheduler.cache.place_unheld(
            FreeCapacity(state, state.busy.copy()).snapshot(), job
        )
        unheld_fit = isinstance(unheld, Placement)
    report = scheduler.last_cycle
    blocked = report.blocked.get(job.id) if report is not None else None
    reservation = report.reservation if report is not None else None
    start = reservation.start if reservation is not None and reservation.job_id == job.id else None
    if reservation is not None and reservation.job_id != job.id:
        details.append(
            f"job {reservation.job_id} holds a reservation from {reservation.start.isoformat()}"
        )
    if blocked in HEAD_REASONS and not (unheld_fit and blocked == PendingReason.RESERVED):
        reason = blocked
        message = _head_message(blocked, start, report.preempted if report else [])
    elif unheld_fit:
        reason = MAINTENANCE_RESERVED
        message = (
            f"hosts reserved for maintenance campaign {', '.join(sorted(holding))}: "
            + (
                "it has no time limit"
                if job.spec.time_limit_s is None
                else "it would still run when the campaign reaches them"
            )
            + "; they open again as the campaign finishes with them"
        )
    elif failure is not None:
        reason, message = failure.reason.value, failure.message
    elif blocked == PendingReason.BACKFILL_WOULD_DELAY:
        reason = blocked
        message = "it fits only on GPUs reserved for a blocked job it would delay"
    elif blocked == PendingReason.CYCLE_BUDGET:
        reason = blocked
        message = "the last scheduling cycle ran out of placement attempts before this job"
    elif blocked == PendingReason.PLACING:
        reason = blocked
        message = (
            "its placement is being computed off the scheduling cycle; the next cycle admits "
            "it unless the cluster changed meanwhile"
        )
    elif not scheduler.config.backfill and reservation is not None and reservation.job_id != job.id:
        reason = PendingReason.BLOCKED_BY_HEAD
        message = f"backfill is off and job {reservation.job_id} ahead of it is blocked"
    else:
        reason = PendingReason.NEXT_CYCLE
        message = "it fits now and will be admitted by the next scheduling cycle"
    return Explanation(
        job.id,
        job.state,
        reason,
        message,
        tuple(details),
        position,
        None if placement is None else allocation_of(placement, state.index, now),
        failure,
        start,
    )


def _head_message(reason: str, start: datetime | None, victims: list[str]) -> str:
    if reason == PendingReason.PREEMPTING:
        return f"preempting lower-priority jobs to make room: {', '.join(victims)}"
    if reason == PendingReason.WAITING_FOR_PREEMPTION:
        return "waiting for preempted jobs to stop; their GPUs are reserved for it"
    when = start.isoformat() if start is not None else "unknown"
    return f"blocked; GPUs reserved for it from {when} as running jobs reach their time limits"
