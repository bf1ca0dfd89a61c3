"""Job lifecycle handlers: submit, cancel, rank reports, checkpoints, failures, admission.

Each handler validates its event first and raises (changing nothing) on bad input; then it
changes jobs only through :meth:`SchedulerState.transition`, i.e. through the transitions
table. Reports from agents about an older attempt, an unknown host of the job, or a job that
already left the state they refer to are ignored: agents repeat and reorder reports, and the
core must be idempotent towards them.

The failure path (:func:`interrupt`): a job that loses a node or a rank records a
:class:`~scheduler.core.records.Failure` with its lost work (time since the last checkpoint),
stops its remaining ranks, and is REQUEUED (the failed node excluded, when a node is to blame,
until that node is back in service: :mod:`scheduler.core.nodes`) while its failure-caused
restarts stay within ``max_restarts``; otherwise it FAILS.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from firsthop.reasons import ErrorReason, FailureReason, JobReason, RankExitReason, StopReason
from placement import Placement
from scheduler.core import repair
from scheduler.core.context import Ctx
from scheduler.core.errors import (
    DuplicateJobError,
    DuplicateSubmissionError,
    QuotaExceededError,
    UnknownJobError,
    UnknownQueueError,
)
from scheduler.core.events import (
    CheckpointReported,
    JobCancelRequested,
    JobSubmitted,
    RankExited,
    RanksStarted,
    RanksStopped,
    StartAcknowledged,
)
from scheduler.core.records import Allocation, Failure, Job, RankSlot
from scheduler.core.state import SchedulerState
from scheduler.core.states import (
    ALLOCATED_JOB_STATES,
    QUEUED_JOB_STATES,
    InvalidTransitionError,
    JobState,
)
from topology.index import TopologyIndex

J = JobState


def get_job(state: SchedulerState, job_id: str) -> Job:
    """The job with ``job_id`` or :class:`UnknownJobError`."""
    job = state.jobs.get(job_id)
    if job is None:
        raise UnknownJobError(f"unknown job {job_id!r}")
    return job


def _since_safe(job: Job) -> datetime | None:
    """Start of the work not yet saved by a checkpoint in the current run."""
    if job.started_at is None:
        return None
    if job.last_checkpoint_at is not None and job.last_checkpoint_at > job.started_at:
        return job.last_checkpoint_at
    return job.started_at


def lost_seconds(job: Job, at: datetime) -> float:
    """Seconds of work lost if the current run stops at ``at``."""
    since = _since_safe(job) if job.state is J.RUNNING else None
    return 0.0 if since is None else max(0.0, (at - since).total_seconds())


# ---------------------------------------------------------------------------- submit / cancel


def check_submission(state: SchedulerState, event: JobSubmitted) -> Job | None:
    """Validate a submission; return the existing job for a repeated submission id.

    Raises:
        DuplicateJobError, DuplicateSubmissionError, UnknownQueueError, QuotaExceededError.
    """
    if event.job_id in state.jobs:
        raise DuplicateJobError(f"job id {event.job_id!r} is already in use")
    if event.submission_id is not None:
        existing = state.job_for_submission(event.user, event.submission_id)
        if existing is not None:
            if existing.spec != event.spec:
                raise DuplicateSubmissionError(
                    f"submission id {event.submission_id!r} was used for job {existing.id} "
                    "with a different spec"
                )
            return existing
    queue = state.queues.get(event.spec.queue)
    if queue is None:
        raise UnknownQueueError(
            f"unknown queue {event.spec.queue!r} (queues: {', '.join(sorted(state.queues))})"
        )
    if queue.gpu_quota is not None and event.spec.gpus > queue.gpu_quota:
        raise QuotaExceededError(
            f"the job needs {event.spec.gpus} GPUs; queue {queue.name!r} may hold at most "
            f"{queue.gpu_quota}"
        )
    return None


def submit(ctx: Ctx, event: JobSubmitted) -> Job:
    """Create the job (PENDING). Call after :func:`check_submission` returned ``None``."""
    job = Job(
        id=event.job_id,
        spec=event.spec,
        user=event.user,
        state=J.PENDING,
        submitted_at=event.at,
        updated_at=event.at,
        submission_id=event.submission_id,
        reason=JobReason.SUBMITTED,
        version=1,  # what put_job gives a new record: it then keeps this one, not a copy
    )
    return ctx.state.put_job(job)


def cancel(ctx: Ctx, event: JobCancelRequested) -> None:
    """Cancel a job in any live state; repeating a cancel is a no-op.

    Raises:
        UnknownJobError; InvalidTransitionError (``job_finished``) for a job that already
        succeeded or failed.
    """
    state = ctx.state
    job = get_job(state, event.job_id)
    if job.state is J.CANCELLED:
        return
    if job.state in (J.SUCCEEDED, J.FAILED):
        raise InvalidTransitionError(
            f"job {job.id} already finished ({job.state})", reason=ErrorReason.JOB_FINISHED
        )
    message = event.reason or "cancelled by request"
    if job.state in QUEUED_JOB_STATES:
        state.transition(job, J.CANCELLED, event.at, JobReason.CANCELLED, message)
        return
    held = job
    skip = job.stopped_hosts if job.state is J.PREEMPTED else frozenset()
    state.transition(
        job,
        J.CANCELLED,
        event.at,
        JobReason.CANCELLED,
        message,
        updated=replace(
            _closed(job),
            allocation=None,
            stopped_hosts=frozenset(),
            stop_deadline=None,
            checkpoint_requested_at=None,
            clean_hosts=frozenset(),
        ),
    )
    ctx.stop_and_fence(held, event.at, StopReason.CANCELLED, skip=skip, graceful=event.graceful)


# ---------------------------------------------------------------------------- agent reports


def _current(state: SchedulerState, job_id: str, node: str, attempt: int) -> Job | None:
    """The job if the report is about its current attempt on one of its hosts."""
    job = get_job(state, job_id)
    if job.restarts != attempt or job.allocation is None or node not in job.allocation.hosts:
        return None
    return job


def start_acknowledged(ctx: Ctx, event: StartAcknowledged) -> None:
    """ADMITTED -> STARTING once an agent accepts the start command."""
    job = _current(ctx.state, event.job_id, event.node, event.attempt)
    if job is not None and job.state is J.ADMITTED:
        ctx.state.transition(job, J.STARTING, event.at, JobReason.STARTING)


def ranks_started(ctx: Ctx, event: RanksStarted) -> None:
    """Record a host's ranks running; RUNNING once every host reported."""
    state = ctx.state
    job = _current(state, event.job_id, event.node, event.attempt)
    if job is None or job.state not in (J.ADMITTED, J.STARTING):
        return
    if job.state is J.ADMITTED:
        job = state.transition(job, J.STARTING, event.at, JobReason.STARTING)
    started = job.started_hosts | {event.node}
    alloc = job.allocation
    if alloc is not None and started >= set(alloc.hosts):
        state.transition(
            job,
            J.RUNNING,
            event.at,
            JobReason.RUNNING,
            updated=repair.ranks_running(
                replace(
                    job,
                    started_hosts=started,
                    started_at=event.at,
                    first_started_at=job.first_started_at or event.at,
                ),
                event.at,
            ),
        )
    else:
        state.put_job(replace(job, started_hosts=started, updated_at=event.at))


def rank_exited(ctx: Ctx, event: RankExited) -> None:
    """A rank ended by itself: success when all ranks exit 0, the failure path otherwise."""
    state = ctx.state
    job = _current(state, event.job_id, event.node, event.attempt)
    if job is None or job.state not in (J.ADMITTED, J.STARTING, J.RUNNING):
        return
    if not 0 <= event.rank < job.gpus:
        return
    if event.reason is RankExitReason.START_FAILED:
        detail = f": {event.message}" if event.message else ""
        interrupt(
            ctx,
            job,
            event.at,
            FailureReason.START_FAILED,
            event.node,
            exclude=False,
            message=f"rank {event.rank} on {event.node} failed to start{detail}",
        )
        return
    if event.exit_code != 0:
        if job.rank_failed_at is not None:
            return  # a failure is already waiting to be blamed: its peers follow it
        if (
            ctx.config.blame_delay_s > 0
            and job.fault_restarts < job.spec.max_restarts
            and repair.eligible(ctx, job, FailureReason.RANK_EXITED)
        ):
            state.put_job(
                replace(
                    job, rank_failed_at=event.at, rank_failed_host=event.node, updated_at=event.at
                )
            )
            return
        interrupt(
            ctx,
            job,
            event.at,
            FailureReason.RANK_EXITED,
            event.node,
            exclude=False,
            message=f"rank {event.rank} on {event.node} exited with status {event.exit_code}",
        )
        return
    exited = job.exited_ranks | {event.rank}
    if len(exited) < job.gpus:
        state.put_job(replace(job, exited_ranks=exited, updated_at=event.at))
        return
    since = _since_safe(job)
    gained = 0.0 if since is None else max(0.0, (event.at - since).total_seconds())
    hosts = job.allocation.hosts if job.allocation else ()
    state.transition(
        job,
        J.SUCCEEDED,
        event.at,
        JobReason.SUCCEEDED,
        updated=replace(
            job, allocation=None, exited_ranks=exited, productive_s=job.productive_s + gained
        ),
    )
    ctx.settle_drains(hosts)


def ranks_stopped(ctx: Ctx, event: RanksStopped) -> None:
    """A host's ranks are gone: release a fence, or advance a preemption."""
    state = ctx.state
    get_job(state, event.job_id)
    state.release_fence(event.job_id, event.node, event.attempt)
    job = _current(state, event.job_id, event.node, event.attempt)
    if job is not None and job.state is J.PREEMPTED:
        host_stopped(ctx, job, event.node, event.at, clean=event.clean)


def host_stopped(ctx: Ctx, job: Job, node: str, at: datetime, *, clean: bool = False) -> None:
    """A preempted job's ranks on ``node`` are gone (stopped or lost); requeue when all are.

    ``clean``: every rank there exited 0 after the stop. A graceful stop all of whose hosts
    stopped cleanly lost nothing (the program saved its state before exiting).
    """
    state = ctx.state
    stopped = job.stopped_hosts | {node}
    cleaned = job.clean_hosts | {node} if clean else job.clean_hosts
    alloc = job.allocation
    if alloc is None or not stopped >= set(alloc.hosts):
        state.put_job(replace(job, stopped_hosts=stopped, clean_hosts=cleaned, updated_at=at))
        return
    if job.checkpoint_requested_at is not None and cleaned >= set(alloc.hosts):
        job = state.put_job(_saved(job, at))
    if job.repair is not None:
        repair.finish_stop(ctx, replace(job, stopped_hosts=stopped), at)
        return
    state.transition(
        job,
        J.REQUEUED,
        at,
        JobReason.PREEMPTED,
        job.message,
        updated=replace(
            job,
            allocation=None,
            restarts=job.restarts + 1,
            started_at=None,
            started_hosts=frozenset(),
            exited_ranks=frozenset(),
            stopped_hosts=frozenset(),
            stop_deadline=None,
            checkpoint_requested_at=None,
            clean_hosts=frozenset(),
        ),
    )
    ctx.settle_drains(alloc.hosts)
    repair.resume_waiting(ctx, at)  # a repair may wait for this job's GPUs


def _saved(job: Job, at: datetime) -> Job:
    """``job`` (PREEMPTED gracefully) with its stop marked as losing nothing."""
    failures = job.failures
    if failures and not failures[-1].checkpointed:
        last = replace(failures[-1], lost_s=0.0, checkpointed=True)
        failures = (*failures[:-1], last)
    return replace(job, failures=failures, updated_at=at)


def checkpoint_reported(ctx: Ctx, event: CheckpointReported) -> None:
    """Work up to ``at`` is safe: count it as productive. A checkpoint reported after a
    graceful stop was requested makes that stop lose nothing."""
    state = ctx.state
    job = get_job(state, event.job_id)
    if job.restarts != event.attempt or job.state not in (J.RUNNING, J.PREEMPTED):
        return
    since = _since_safe(job)
    if since is None or event.at <= since:
        return
    gained = (event.at - since).total_seconds()
    job = replace(
        job,
        last_checkpoint_at=event.at,
        productive_s=job.productive_s + gained,
        updated_at=event.at,
    )
    requested = job.checkpoint_requested_at
    if job.state is J.PREEMPTED and requested is not None and event.at > requested:
        job = _saved(job, event.at)
    state.put_job(job)


# ---------------------------------------------------------------------------- failure path


def interrupt(
    ctx: Ctx,
    job: Job,
    at: datetime,
    reason: FailureReason,
    node: str | None,
    *,
    exclude: bool,
    message: str = "",
    unreachable: frozenset[str] = frozenset(),
    requeue: bool = True,
    vacate: frozenset[str] | None = None,
) -> Job:
    """The failure path (module docstring). ``unreachable`` hosts get no stop command.

    A job that qualifies is repaired in place instead (:mod:`scheduler.core.repair`):
    ``vacate`` (default: ``node`` when a node is to blame, else none) are the hosts it
    leaves; ``unreachable`` ones count as stopped.
    """
    state = ctx.state
    held = job
    failure = Failure(
        at=at, reason=reason, host=node, lost_s=lost_seconds(job, at), message=message
    )
    failures = (*job.failures, failure)
    faults = job.fault_restarts + 1
    message = message or reason
    if requeue and faults <= job.spec.max_restarts and repair.eligible(ctx, job, reason):
        if vacate is None:
            vacate = frozenset({node}) if node is not None and exclude else frozenset()
        return repair.begin(
            ctx, job, at, failure, vacate=vacate, stopped=unreachable, message=message
        )
    if requeue and faults <= job.spec.max_restarts:
        excluded = job.excluded_hosts | {node} if exclude and node else job.excluded_hosts
        new = state.transition(
            job,
            J.REQUEUED,
            at,
            JobReason(reason),
            message,
            updated=replace(
                _closed(job),
                allocation=None,
                failures=failures,
                restarts=job.restarts + 1,
                excluded_hosts=excluded,
                started_at=None,
                started_hosts=frozenset(),
                exited_ranks=frozenset(),
            ),
        )
    else:
        if requeue:
            message = f"{message}; restarts exhausted ({job.spec.max_restarts} allowed)"
        new = state.transition(
            job,
            J.FAILED,
            at,
            JobReason(reason),
            message,
            updated=replace(_closed(job), allocation=None, failures=failures),
        )
    ctx.stop_and_fence(held, at, StopReason(reason), skip=unreachable)
    return new


def _closed(job: Job) -> Job:
    """``job`` with a repair in progress closed (recorded as ending in the queue) and a
    pending blame dropped: it leaves its allocation another way."""
    repairs = job.repairs
    if job.repair is not None:
        repairs = (*repairs, replace(job.repair, method="queue"))
    return replace(job, repair=None, repairs=repairs, rank_failed_at=None, rank_failed_host=None)


def preempt(ctx: Ctx, victim: Job, at: datetime, by: Job) -> None:
    """Start preempting ``victim`` for ``by`` (a planned stop, :func:`stop_for_checkpoint`)."""
    stop_for_checkpoint(ctx, victim, at, f"preempted by job {by.id}")


def stop_for_checkpoint(ctx: Ctx, job: Job, at: datetime, message: str) -> Job:
    """A planned stop of a running job: ask it to checkpoint, then stop and requeue it.

    The one entry point for every planned stop (preemption, maintenance, moves). ``job``
    goes PREEMPTED (a :class:`Failure` ``preempted`` records the work at stake, which does
    not count against ``max_restarts``); every host gets a stop command with the job's
    checkpoint signal and grace (``checkpoint.signal``/``grace_s``, operator-bounded;
    SIGTERM and ``stop_grace_s`` for a job that does not checkpoint). A checkpoint reported
    after now, or every rank exiting 0, makes the stop lose nothing (``lost_s`` 0,
    ``checkpointed``); otherwise the work since the last checkpoint is lost as for a failure.
    Once every host's ranks are gone the job is REQUEUED (:func:`host_stopped`); hosts that
    are lost or fail meanwhile count as stopped. Returns the PREEMPTED record.

    Raises:
        InvalidTransitionError: the job does not hold an allocation it can be stopped on.
    """
    graceful = job.spec.checkpoint is not None and job.state is J.RUNNING
    grace = ctx.checkpoint_grace_s(job) if graceful else ctx.config.stop_grace_s
    lost = lost_seconds(job, at)
    failure = Failure(at=at, reason=FailureReason.PREEMPTED, host=None, lost_s=lost)
    new = ctx.state.transition(
        job,
        J.PREEMPTED,
        at,
        JobReason.PREEMPTED,
        message,
        updated=replace(
            _closed(job),  # a job restarting after a repair is requeued, not repaired again
            failures=(*job.failures, failure),
            stopped_hosts=frozenset(),
            clean_hosts=frozenset(),
            stop_deadline=at + timedelta(seconds=grace),
            checkpoint_requested_at=at if graceful else None,
        ),
    )
    if new.allocation is not None:
        for node in new.allocation.hosts:
            ctx.stop(new, node, StopReason.PREEMPTED, graceful=graceful)
    return new


def enforce_deadlines(ctx: Ctx, at: datetime) -> None:
    """Time limits of running jobs, start timeouts, forced stops of slow preemptions, and
    expired fences."""
    state = ctx.state
    for job_id in sorted(state.allocated):
        job = state.jobs[job_id]
        limit = job.spec.time_limit_s
        if job.state is J.RUNNING and repair.blame_due(ctx, job, at):
            _blame(ctx, job, at)
            continue
        if (
            job.state is J.RUNNING
            and limit is not None
            and job.started_at is not None
            and at >= job.started_at + timedelta(seconds=limit)
        ):
            interrupt(
                ctx,
                job,
                at,
                FailureReason.TIME_LIMIT,
                None,
                exclude=False,
                message=f"ran past its time limit of {limit} s",
                requeue=False,
            )
        elif (
            job.state in (J.ADMITTED, J.STARTING)
            and job.allocation is not None
            and at >= job.allocation.placed_at + timedelta(seconds=ctx.config.start_timeout_s)
        ):
            missing = [h for h in job.allocation.hosts if h not in job.started_hosts]
            interrupt(
                ctx,
                job,
                at,
                FailureReason.START_TIMEOUT,
                missing[0] if missing else None,
                exclude=False,
                message=f"ranks on {', '.join(missing[:3])} not running after "
                f"{ctx.config.start_timeout_s:.0f} s",
            )
        elif job.state is J.PREEMPTED and job.stop_deadline is not None and at >= job.stop_deadline:
            alloc = job.allocation
            hosts = [h for h in (alloc.hosts if alloc else ()) if h not in job.stopped_hosts]
            for node in hosts:
                ctx.stop(job, node, StopReason.PREEMPTED, force=True)
            deadline = at + timedelta(seconds=ctx.config.stop_grace_s)
            state.put_job(replace(job, stop_deadline=deadline))
    for key, fence in sorted(state.fences.items()):
        if at >= fence.deadline:
            state.release_fence(*key)


def _blame(ctx: Ctx, job: Job, at: datetime) -> None:
    """A rank failure waited ``blame_delay_s``: blame silent or FAILED hosts, else restart in
    place on the same hosts (the rank's host named in the failure)."""
    silent = frozenset(repair.silent_hosts(ctx, job))
    node = min(silent) if silent else job.rank_failed_host
    what = f"host {', '.join(sorted(silent))} went silent" if silent else "a rank exited"
    interrupt(
        ctx,
        job,
        at,
        FailureReason.RANK_EXITED,
        node,
        exclude=bool(silent),
        message=f"{what} (first failed rank on {job.rank_failed_host})",
        unreachable=silent,
        vacate=silent,
    )


# ---------------------------------------------------------------------------- admission


def allocation_of(placement: Placement, index: TopologyIndex, at: datetime) -> Allocation:
    """The allocation a placer result gives: its rank table with host names from ``index``,
    its modelled cost and lower bound, placed at ``at``.

    The one conversion of placer results into records: admission and explanations use it,
    so the API never sees a placer type.
    """
    names = index.host_names
    ranks = tuple(
        RankSlot(rank, names[h], g)
        for rank, (h, g) in enumerate(
            zip(placement.ranks.hosts.tolist(), placement.ranks.gpus.tolist(), strict=True)
        )
    )
    return Allocation(
        ranks=ranks,
        cost=float(placement.cost_ms),
        lower_bound=float(placement.lower_bound.total_ms),
        placed_at=at,
    )


def admit(ctx: Ctx, job: Job, placement: Placement, at: datetime) -> Job:
    """Give ``job`` its placement (ADMITTED) and queue its start commands."""
    allocation = allocation_of(placement, ctx.state.index, at)
    new = ctx.state.transition(
        job,
        J.ADMITTED,
        at,
        JobReason.PLACED,
        f"placed on {len(allocation.hosts)} host(s)",
        updated=replace(
            job, allocation=allocation, started_hosts=frozenset(), exited_ranks=frozenset()
        ),
    )
    ctx.start_all(new)
    return new


def resend_commands(ctx: Ctx) -> None:
    """After a restart: repeat start and stop commands that may not have been delivered."""
    state = ctx.state
    for job_id in sorted(state.allocated):
        job = state.jobs[job_id]
        alloc = job.allocation
        if alloc is None or job.state not in ALLOCATED_JOB_STATES:  # pragma: no cover
            continue
        if job.state in (J.ADMITTED, J.STARTING):
            ctx.start_hosts(job, [h for h in alloc.hosts if h not in job.started_hosts])
        elif job.state is J.PREEMPTED:
            graceful = job.checkpoint_requested_at is not None
            for node in alloc.hosts:
                if node not in job.stopped_hosts:
                    ctx.stop(job, node, StopReason.PREEMPTED, graceful=graceful)
