"""In-place repair: a running job that loses hosts keeps the rest and swaps only those.

A job that checkpoints (``checkpoint`` in its spec) and is RUNNING when one of its hosts is
LOST, reports a FAILED verdict, or is blamed for a rank's exit, does not go back through the
queue (where its freed GPUs could go to other jobs and a 512-host job waits for 512 hosts):

1. **Blame** (rank exits only). When one rank dies the others follow within a second (gloo
   and NCCL ranks exit when a peer goes), so the first report often comes from a survivor.
   The core waits ``blame_delay_s`` (about two heartbeat intervals) after the first failed
   exit, then blames the job's hosts that went silent since (no heartbeat after that exit:
   their agent died with them) or report FAILED; a rank exit with no such host restarts the
   job in place on the same hosts. A LOST or FAILED host seen meanwhile takes the normal
   path at once.
2. **Stop** (:func:`begin`): the job goes PREEMPTED with the failure's reason; the failure
   is recorded (lost work as for any failure: since the last checkpoint); survivors get a
   stop command; the vacated hosts count as stopped already (a lost host cannot answer; its
   ranks' peers saw it go). Hosts that are lost or fail while it stops join the vacated set,
   so a leaf switch taking out several hosts is repaired in one re-placement.
3. **Re-place** (:func:`finish_stop`, once every host stopped): the attempt ends (REQUEUED,
   restart count + 1) and, in the same event, :func:`placement.replace` moves only the
   vacated hosts' ranks to spares, free hosts, or (placer's fallback) a full re-placement;
   the job is ADMITTED at once with its new rank table, so nothing else can take the
   survivors' GPUs. A spare it takes leaves the spare pool (it now runs a long job). No
   replacement: the job stays REQUEUED and the queue places it as before (``method:
   queue``).
3b. **Preempt in the domain**: when the best replacement on free hosts and spares costs more
   than ``repair_preempt_above`` times the job's cost before the failure (or none exists),
   lower-priority jobs holding hosts in the vacated hosts' leaf or pod are preempted instead
   (:func:`~scheduler.core.preemption.plan_repair_preemption`: gracefully, through the
   checkpoint signal, least lost work first), when the partial re-placement onto their hosts
   costs that many times less. The job stays PREEMPTED, holding its stopped survivors' GPUs,
   until every victim let go of its GPUs (:func:`resume_waiting`, on each victim's requeue
   and every tick), then is placed as in 3 (the victims' hosts are free by then). One round
   of preemption per repair: the second placement takes what it finds.
4. **Run**: once all ranks run again the :class:`~scheduler.core.records.Repair` (hosts
   swapped and phase times) moves to ``Job.repairs``; the program resumes from its
   checkpoint (``FIRSTHOP_RESTART_COUNT`` > 0).

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from firsthop.reasons import FailureReason, JobReason, StopReason
from placement import PlacementFailure, RankTable, Snapshot
from placement.replace import Replacement
from placement.replace import replace as replace_ranks
from scheduler.core.context import Ctx
from scheduler.core.preemption import partial_only, plan_repair_preemption
from scheduler.core.records import Allocation, Failure, Job, RankSlot, Repair
from scheduler.core.state import SchedulerState
from scheduler.core.states import Health, JobState
from topology.errors import FirsthopError
from topology.index import BoolArray

J = JobState

REPAIRABLE = frozenset(
    {FailureReason.NODE_LOST, FailureReason.NODE_FAILED, FailureReason.RANK_EXITED}
)
"""Failures a job is repaired in place after."""


def eligible(ctx: Ctx, job: Job, reason: FailureReason) -> bool:
    """Whether ``job`` is repaired in place after a failure of ``reason`` (module docstring).

    Restarts left are the caller's check (they bound repairs as they bound requeues).
    """
    return (
        ctx.config.repair_in_place
        and reason in REPAIRABLE
        and job.spec.checkpoint is not None
        and job.state is J.RUNNING
        and job.allocation is not None
    )


def begin(
    ctx: Ctx,
    job: Job,
    at: datetime,
    failure: Failure,
    *,
    vacate: Iterable[str],
    stopped: Iterable[str] = (),
    message: str,
    graceful: bool = False,
    escalate: bool = True,
) -> Job:
    """Start repairing ``job``: PREEMPTED, survivors stopped, ``vacate`` to be replaced.

    ``stopped``: hosts whose ranks count as gone already (lost or failed hosts, silent hosts
    whose peers saw them go); they get no stop command.

    ``graceful`` (a planned move, e.g. a maintenance campaign's ``--busy migrate``; the
    ``vacate`` hosts are healthy): every host gets the job's checkpoint signal and grace, a
    checkpoint reported after ``at`` makes the stop lose nothing (as for
    :func:`~scheduler.core.jobs.stop_for_checkpoint`), and the vacated hosts are not
    excluded (``failure.reason`` is ``preempted``). ``escalate=False``: no stop deadline and
    no SIGKILL; ranks that do not answer are left running and the caller waits.
    """
    alloc = job.allocation
    assert alloc is not None
    hosts = set(alloc.hosts)
    gone = frozenset(stopped) & hosts
    vacated = tuple(sorted(set(vacate) & hosts))
    started = job.rank_failed_at or at
    grace = ctx.checkpoint_grace_s(job) if graceful else ctx.config.stop_grace_s
    new = ctx.state.transition(
        job,
        J.PREEMPTED,
        at,
        JobReason(failure.reason),
        f"repairing in place: {message}",
        updated=replace(
            job,
            failures=(*job.failures, failure),
            stopped_hosts=gone,
            clean_hosts=frozenset(),
            stop_deadline=at + timedelta(seconds=grace) if escalate else None,
            checkpoint_requested_at=at if graceful else None,
            repair=Repair(failed_at=started, reason=failure.reason, vacated=vacated),
            rank_failed_at=None,
            rank_failed_host=None,
        ),
    )
    for node in alloc.hosts:
        if node not in gone:
            ctx.stop(new, node, StopReason(failure.reason), graceful=graceful)
    if gone >= hosts:
        return finish_stop(ctx, new, at)
    return new


def vacate_more(job: Job, node: str) -> Job:
    """``job`` (repairing) with ``node`` added to the hosts it leaves (lost or failed while
    the job stopped): one re-placement repairs them all."""
    repair = job.repair
    if repair is None or node in repair.vacated:
        return job
    return replace(job, repair=replace(repair, vacated=tuple(sorted({*repair.vacated, node}))))


def finish_stop(ctx: Ctx, job: Job, at: datetime) -> Job:
    """Every host of the repairing ``job`` stopped: end the attempt and place it again in
    place (ADMITTED now), preempt jobs in its domain for a better replacement (it waits,
    PREEMPTED), or leave it REQUEUED for the queue when nothing fits."""
    state = ctx.state
    repair, alloc = job.repair, job.allocation
    assert repair is not None
    assert alloc is not None
    if waiting(state, job):
        return state.put_job(replace(job, updated_at=at))
    lost_hosts = {FailureReason.NODE_LOST, FailureReason.NODE_FAILED}
    excluded = job.excluded_hosts
    if repair.reason in lost_hosts:
        excluded = excluded | set(repair.vacated)
    result = _replacement(ctx, job, alloc, excluded)
    if not repair.victims and _worth_preempting(ctx, result):
        planned = _preempt_for(ctx, job, alloc, excluded, result, at=at)
        if planned is not None:
            return planned
    requeued = state.transition(
        job,
        J.REQUEUED,
        at,
        JobReason(repair.reason),
        job.message,
        updated=replace(
            job,
            allocation=None,
            restarts=job.restarts + 1,
            excluded_hosts=excluded,
            started_at=None,
            started_hosts=frozenset(),
            exited_ranks=frozenset(),
            stopped_hosts=frozenset(),
            clean_hosts=frozenset(),
            stop_deadline=None,
            checkpoint_requested_at=None,
            repair=replace(repair, stopped_at=at),
        ),
    )
    ctx.settle_drains(alloc.hosts)
    stopped = requeued.repair
    assert stopped is not None
    if not isinstance(result, Replacement):
        done = replace(stopped, method="queue")
        return state.put_job(replace(requeued, repair=None, repairs=(*requeued.repairs, done)))
    names = state.index.host_names
    moves = tuple((names[old], names[new]) for old, new in sorted(result.moves.items()))
    allocation = Allocation(
        ranks=tuple(
            RankSlot(rank, names[h], g)
            for rank, (h, g) in enumerate(
                zip(result.ranks.hosts.tolist(), result.ranks.gpus.tolist(), strict=True)
            )
        ),
        cost=float(result.cost_ms),
        lower_bound=float(result.lower_bound_ms or 0.0),
        placed_at=at,
    )
    placed = replace(
        stopped, moves=moves, method=result.method, placed_at=at, ranks_moved=result.ranks_moved
    )
    swapped = ", ".join(f"{a}->{b}" for a, b in moves) or "same hosts"
    new = state.transition(
        requeued,
        J.ADMITTED,
        at,
        JobReason.PLACED,
        f"repaired in place ({result.method}: {swapped})",
        updated=replace(
            requeued,
            allocation=allocation,
            started_hosts=frozenset(),
            exited_ranks=frozenset(),
            repair=placed,
        ),
    )
    ctx.start_all(new)
    _leave_spare_pool(ctx, [names[h] for h in result.spares_used])
    return new


def _leave_spare_pool(ctx: Ctx, hosts: Iterable[str]) -> None:
    """Spares a repair took run a long job now: out of the pool (``spares_per_*`` designate
    others)."""
    state = ctx.state
    for name in hosts:
        node = state.nodes.get(name)
        if node is not None and node.spare:
            state.put_node(replace(node, spare=False))


def waiting(state: SchedulerState, job: Job) -> bool:
    """Whether ``job``'s repair waits for jobs it preempted to let go of their GPUs."""
    repair = job.repair
    if repair is None or not repair.victims:
        return False
    for victim_id in repair.victims:
        victim = state.jobs.get(victim_id)
        if victim is not None and victim.state is J.PREEMPTED and victim.allocation is not None:
            return True
    return False


def resume_waiting(ctx: Ctx, at: datetime) -> None:
    """Place repairs whose victims all let go of their GPUs (call after a requeue and on
    every tick)."""
    state = ctx.state
    jobs = state.jobs
    held = [jobs[i] for i in state.allocated]
    for job in sorted(
        (j for j in held if j.state is J.PREEMPTED and j.repair is not None and j.repair.victims),
        key=lambda j: j.id,
    ):
        alloc = job.allocation
        if alloc is not None and job.stopped_hosts >= set(alloc.hosts) and not waiting(state, job):
            finish_stop(ctx, job, at)


def _worth_preempting(ctx: Ctx, result: Replacement | PlacementFailure | None) -> bool:
    """Whether the free replacement is poor enough to preempt for (``repair_preempt_above``)."""
    threshold = ctx.config.repair_preempt_above
    if threshold is None or not ctx.config.preemption:
        return False
    if not isinstance(result, Replacement):
        return True
    return result.cost_ms > threshold * result.cost_before_ms + 1e-9


def _preempt_for(
    ctx: Ctx,
    job: Job,
    alloc: Allocation,
    excluded: frozenset[str],
    free: Replacement | PlacementFailure | None,
    *,
    at: datetime,
) -> Job | None:
    """Preempt jobs in the vacated hosts' domains for ``job`` (module docstring, 3b); the job
    waiting for them, or ``None`` when no plan beats ``free``."""
    from scheduler.core.jobs import stop_for_checkpoint  # jobs imports this module

    state = ctx.state
    repair = job.repair
    assert repair is not None
    threshold = ctx.config.repair_preempt_above or 1.0

    def accept(trial: Replacement) -> bool:
        if not partial_only(trial):
            return False
        return not isinstance(free, Replacement) or trial.cost_ms * threshold <= free.cost_ms

    plan, _ = plan_repair_preemption(
        state,
        job,
        at,
        vacated=repair.vacated,
        replace_on=lambda busy: _replacement(ctx, job, alloc, excluded, busy),
        accept=accept,
        max_placements=ctx.config.max_preemption_placements,
    )
    if plan is None:
        return None
    for victim_id in plan.victims:
        stop_for_checkpoint(
            ctx, state.jobs[victim_id], at, f"preempted to repair job {job.id} ({plan.scope})"
        )
    names = ", ".join(plan.victims)
    return state.put_job(
        replace(
            job,
            stop_deadline=None,
            message=f"{job.message}; waiting for {names} (preempted in {plan.scope})",
            repair=replace(repair, victims=plan.victims),
            updated_at=at,
        )
    )


def _replacement(
    ctx: Ctx,
    job: Job,
    old: Allocation,
    excluded: frozenset[str],
    busy: BoolArray | None = None,
) -> Replacement | PlacementFailure | None:
    """The placer's partial re-placement of ``job`` off its repair's vacated hosts, on the
    scheduler's busy mask (or ``busy``), avoiding ``excluded`` but for the job's survivors."""
    state = ctx.state
    index = state.index
    repair = job.repair
    assert repair is not None
    ids = index.host_ids
    ranks = sorted(old.ranks, key=lambda s: s.rank)
    current = RankTable(
        hosts=np.array([ids[s.host] for s in ranks], dtype=np.int64),
        gpus=np.array([s.gpu for s in ranks], dtype=np.int64),
    )
    vacate = [ids[h] for h in repair.vacated]
    unavailable = set(state.unavailable) | {ids[h] for h in excluded if h in ids}
    # The job's surviving hosts may be draining: they keep its ranks all the same.
    unavailable -= {ids[h] for h in old.hosts if h not in repair.vacated}
    mask = state.busy if busy is None else busy
    snapshot = Snapshot(index, mask.copy(), frozenset(unavailable))
    request = job.spec.to_request(h for h in excluded if h not in old.hosts or h in repair.vacated)
    spares = [ids[name] for name in sorted(state.spares) if name in ids]
    try:
        return replace_ranks(
            snapshot, request, current, vacate, spares=spares, params=ctx.config.placement
        )
    except FirsthopError:  # a refusal of the placer sends the job to the queue
        return None


def ranks_running(job: Job, at: datetime) -> Job:
    """``job`` (RUNNING again) with its repair in progress closed and recorded."""
    repair = job.repair
    if repair is None:
        return job
    return replace(job, repair=None, repairs=(*job.repairs, replace(repair, running_at=at)))


def blame_due(ctx: Ctx, job: Job, at: datetime) -> bool:
    """Whether a rank failure of ``job`` waited long enough to be blamed."""
    failed = job.rank_failed_at
    return failed is not None and at >= failed + timedelta(seconds=ctx.config.blame_delay_s)


def silent_hosts(ctx: Ctx, job: Job) -> list[str]:
    """Hosts of ``job`` silent since its first failed rank exit, or reporting FAILED."""
    failed = job.rank_failed_at
    alloc = job.allocation
    if failed is None or alloc is None:
        return []
    out = []
    for name in alloc.hosts:
        node = ctx.state.nodes.get(name)
        if node is None:
            continue
        beat = node.last_heartbeat_at
        if node.health is Health.FAILED or beat is None or beat <= failed:
            out.append(name)
    return out
