"""``--busy migrate``: move running jobs off the hosts a maintenance campaign drains.

On every step of a migrate campaign (:func:`step`, called by
:func:`scheduler.core.campaigns.advance` before drained hosts start their action), each job on
one of the campaign's DRAINING hosts is handled by what it can do:

- **RUNNING with a checkpoint spec**, once its current run reported a checkpoint or ran for
  its grace (a program just restarted may not handle the signal yet, whose default action
  kills it): asked to checkpoint and moved with the in-place repair
  path (:func:`scheduler.core.repair.begin`, ``graceful``): every host gets the job's
  checkpoint signal; once every rank stopped, only the ranks on the campaign's draining hosts
  are re-placed (partial re-placement; the survivors keep their GPUs) and the job restarts at
  once from the checkpoint it just wrote. Without ``--force`` the request has no deadline and
  the agents never SIGKILL (``escalate=False``): a job that does not checkpoint within its
  grace is left running, the host waits, and status says so (host reason, ``jobs_waited``).
  With ``--force`` the ranks are killed after the grace as for any planned stop.
- **RUNNING without a checkpoint spec**: nothing can save its work, so it is waited for
  (``jobs_waited``); with ``--force`` it is stopped and requeued
  (:func:`scheduler.core.jobs.stop_for_checkpoint`) and the work since its start is lost.
- **Anything else** (starting, restarting after a move, stopping for another reason): waited
  for; it is handled again on the next step.

The job's history says why: its :class:`~scheduler.core.records.Failure` (reason
``preempted``, which does not count against ``max_restarts``) carries the message ``moved for
maintenance campaign NAME``. A move is settled when the job left PREEMPTED: it counts in
``jobs_moved`` and, when it was stopped without a checkpoint newer than the request, its lost
work in ``gpu_hours_lost``. The jobs being moved are durable in the campaign
(``Campaign.moving``) in the same change set as the job's stop, so a restart neither asks a
job twice nor forgets one.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from firsthop.reasons import FailureReason
from scheduler.core import jobs, repair
from scheduler.core.campaign_records import BusyPolicy, Campaign, CampaignHost, HostPhase
from scheduler.core.context import Ctx
from scheduler.core.records import Failure, Job
from scheduler.core.states import JobState

J = JobState
P = HostPhase
MOVED = "moved for maintenance campaign "
"""The start of the message of a move's failure record (the job's history)."""


def move_message(campaign: str) -> str:
    """What a job's history says about a move for ``campaign``."""
    return f"{MOVED}{campaign}"


def _is_move(failure: Failure, campaign: str) -> bool:
    text = move_message(campaign)
    return failure.message == text or failure.message.startswith(f"{text} ")


def move_failure(job: Job, campaign: str) -> Failure | None:
    """The failure record of ``job``'s latest move for ``campaign``, if any."""
    for failure in reversed(job.failures):
        if _is_move(failure, campaign):
            return failure
    return None


def stopping_for(job: Job, campaign: str) -> bool:
    """Whether ``job`` is stopping (PREEMPTED) for a move of ``campaign``."""
    return job.state is J.PREEMPTED and bool(job.failures) and _is_move(job.failures[-1], campaign)


def _settled(ctx: Ctx, job: Job, at: datetime) -> bool:
    """Whether a checkpointing ``job``'s current run may be asked to checkpoint: it reported
    a checkpoint since it started, or ran for its grace. A program just started (say after
    the previous move) may not handle its checkpoint signal yet, and the signal's default
    action would kill it without a checkpoint."""
    started = job.started_at
    if started is None:
        return False
    if job.last_checkpoint_at is not None and job.last_checkpoint_at > started:
        return True
    return at >= started + timedelta(seconds=ctx.checkpoint_grace_s(job))


def step(ctx: Ctx, campaign: Campaign, at: datetime) -> Campaign:
    """Move or wait for the jobs on ``campaign``'s draining hosts; settle finished moves.

    Returns the campaign as changed (the caller stores it when it differs).
    """
    if campaign.spec.busy is not BusyPolicy.MIGRATE:
        return campaign
    book = _Book(campaign)
    book.settle(ctx, at)
    hosts = tuple(
        book.drain_host(ctx, entry, at) if entry.phase is P.DRAINING else entry
        for entry in campaign.hosts
    )
    return book.result(hosts, at)


class _Book:
    """A campaign's job lists while one step changes them."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.name = campaign.name
        self.moving = dict.fromkeys(campaign.moving)
        self.moved = dict.fromkeys(campaign.jobs_moved)
        self.waited = dict.fromkeys(campaign.jobs_waited)
        self.lost_h = campaign.gpu_hours_lost

    def result(self, hosts: tuple[CampaignHost, ...], at: datetime) -> Campaign:
        c = self.campaign
        new = replace(
            c,
            hosts=hosts,
            moving=tuple(self.moving),
            jobs_moved=tuple(self.moved),
            jobs_waited=tuple(self.waited),
            gpu_hours_lost=self.lost_h,
        )
        if new == c:
            return c
        return replace(new, updated_at=at)

    # ------------------------------------------------------------------ settling

    def settle(self, ctx: Ctx, at: datetime) -> None:
        """Moves whose ranks all stopped (the job left PREEMPTED) are done."""
        for job_id in list(self.moving):
            job = ctx.state.jobs.get(job_id)
            if job is not None and stopping_for(job, self.name):
                continue
            failure = None if job is None else move_failure(job, self.name)
            del self.moving[job_id]
            if job is None or failure is None or job.state in (J.CANCELLED, J.FAILED):
                continue  # ended another way: not a move
            self.moved.setdefault(job_id)
            if not failure.checkpointed:
                self.lost_h += failure.lost_s * job.gpus / 3600.0

    # ------------------------------------------------------------------ one host

    def drain_host(self, ctx: Ctx, entry: CampaignHost, at: datetime) -> CampaignHost:
        """Handle every job on a draining host; the host's reason says what it waits for."""
        notes = []
        for job_id in sorted(ctx.state.host_jobs.get(entry.host, ())):
            job = ctx.state.jobs[job_id]
            notes.append(self._job(ctx, job, entry.host, at))
        reason = "; ".join(notes)
        return entry if reason == entry.reason else replace(entry, reason=reason)

    def _job(self, ctx: Ctx, job: Job, host: str, at: datetime) -> str:
        if stopping_for(job, self.name):
            return self._stopping(ctx, job, host, at)
        force = self.campaign.spec.force
        if job.state is not J.RUNNING or job.rank_failed_at is not None:
            return f"waiting for job {job.id} ({job.state.value.lower()})"
        if job.spec.checkpoint is not None and not _settled(ctx, job, at):
            return f"waiting for job {job.id} to settle before asking it to checkpoint"
        if job.spec.checkpoint is None:
            if not force:
                self.waited.setdefault(job.id)
                return f"waiting for job {job.id} to end (no checkpoint spec; --force stops it)"
            message = f"{move_message(self.name)} (no checkpoint spec, --force)"
            new = jobs.stop_for_checkpoint(ctx, job, at, message)
            last = replace(new.failures[-1], message=message)
            ctx.state.put_job(replace(new, failures=(*new.failures[:-1], last)))
            self.moving.setdefault(job.id)
            return f"stopping job {job.id} (no checkpoint spec, --force)"
        alloc = job.allocation
        assert alloc is not None
        vacate = sorted(h for h in alloc.hosts if self._draining(h))
        message = f"{move_message(self.name)} (off {', '.join(vacate)})"
        failure = Failure(
            at=at,
            reason=FailureReason.PREEMPTED,
            host=None,
            lost_s=jobs.lost_seconds(job, at),
            message=message,
        )
        repair.begin(
            ctx,
            job,
            at,
            failure,
            vacate=vacate,
            message=message,
            graceful=True,
            escalate=force,
        )
        self.moving.setdefault(job.id)
        return f"moving job {job.id}: checkpoint requested"

    def _stopping(self, ctx: Ctx, job: Job, host: str, at: datetime) -> str:
        """A job asked to move: add this host to its vacated ones; report an unanswered
        request after its grace."""
        if job.repair is not None and host not in job.repair.vacated:
            job = ctx.state.put_job(repair.vacate_more(job, host))
        failure = move_failure(job, self.name)
        requested = job.checkpoint_requested_at
        if failure is None or failure.checkpointed or requested is None:
            return f"moving job {job.id}: ranks stopping"
        grace = ctx.checkpoint_grace_s(job)
        if job.stop_deadline is None and at >= requested + timedelta(seconds=grace):
            self.waited.setdefault(job.id)
            return (
                f"job {job.id} did not checkpoint within its grace ({grace:g} s): "
                "left running, host waits"
            )
        return f"moving job {job.id}: checkpoint requested"

    def _draining(self, host: str) -> bool:
        entry = self.campaign.host(host)
        return entry is not None and entry.phase is P.DRAINING
