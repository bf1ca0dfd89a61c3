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
   survivors' GPUs. No replacement: the job stays REQUEUED and the queue places it as
   before (``method: queue``).
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
from scheduler.core.records import Allocation, Failure, Job, RankSlot, Repair
from scheduler.core.states import Health, JobState
from topology.errors import FirsthopError

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
    place (ADMITTED now), or leave it REQUEUED for the queue when nothing fits."""
    state = ctx.state
    repair, alloc = job.repair, job.allocation
    assert repair is not None
    assert alloc is not None
    lost_hosts = {FailureReason.NODE_LOST, FailureReason.NODE_FAILED}
    excluded = job.excluded_hosts
    if repair.reason in lost_hosts:
        excluded = excluded | set(repair.vacated)
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
    result = _replacement(ctx, requeued, alloc)
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
    return new


def _replacement(ctx: Ctx, job: Job, old: Allocation) -> Replacement | PlacementFailure | None:
    """The placer's partial re-placement of ``job`` off its repair's vacated hosts."""
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
    unavailable = set(state.unavailable) | {ids[h] for h in job.excluded_hosts if h in ids}
    # The job's surviving hosts may be draining: they keep its ranks all the same.
    unavailable -= {ids[h] for h in old.hosts if h not in repair.vacated}
    snapshot = Snapshot(index, state.busy.copy(), frozenset(unavailable))
    request = job.spec.to_request(
        h for h in job.excluded_hosts if h not in old.hosts or h in repair.vacated
    )
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
