"""``Scheduler``: the sans-IO core. ``handle(event) -> list[Action]``.

The runtime (or the simulator, or a test) feeds events in order and executes the returned
actions in order: first :class:`~scheduler.core.actions.PersistChanges` (durable before the
request that caused the event is acknowledged), then notifications, then stop and start
commands. Bad input raises a :class:`~topology.errors.FirsthopError` with a stable reason and
changes nothing.

Submissions are idempotent per (user, submission id): a repeat with the same spec changes
nothing and is answered with the first job (:meth:`Scheduler.job_for`); a repeat with another
spec is ``duplicate_submission_id``.

Must not import grpc, generated protos, ``scheduler.api``, ``scheduler.store``,
``scheduler.runtime``, ``scheduler.cli``, databases, subprocess or clocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import assert_never

from firsthop.reasons import ErrorReason
from placement import FailureReason, PlacementFailure, Snapshot
from placement import place as run_placer
from scheduler.core import campaigns as maintenance
from scheduler.core import jobs, nodes, repair, spares
from scheduler.core.actions import (
    Action,
    NotifyJobChanged,
    NotifyNodeChanged,
    PersistChanges,
)
from scheduler.core.campaign_records import Campaign
from scheduler.core.config import SchedulerConfig
from scheduler.core.context import Ctx, Outbox
from scheduler.core.cycle import CycleReport, PlacementCache, Placer, run_cycle
from scheduler.core.errors import InvalidQueueError, JobTooLargeError
from scheduler.core.events import (
    CampaignControlRequested,
    CampaignStartRequested,
    CheckpointReported,
    Event,
    HeartbeatReceived,
    JobCancelRequested,
    JobSubmitted,
    MaintenanceReported,
    NodeDrainRequested,
    NodeRegistered,
    NodeResumeRequested,
    NodeSpareSet,
    PlacementsProposed,
    QueueSet,
    RankExited,
    RanksStarted,
    RanksStopped,
    SchedulerStarted,
    StartAcknowledged,
    TimerFired,
)
from scheduler.core.explain import Explanation, explain_job
from scheduler.core.maintenance_hold import holds_at
from scheduler.core.records import Job, Node, Queue
from scheduler.core.state import SchedulerState
from scheduler.core.states import NodeState, is_terminal
from scheduler.core.status import ClusterStatus, cluster_status
from scheduler.jobspec import JobSpec
from topology.errors import FirsthopError, InvalidInputError
from topology.index import TopologyIndex

QUEUE_NAME_MAX = 128
CAPACITY_REASONS = frozenset(
    {FailureReason.INSUFFICIENT_GPUS, FailureReason.INSUFFICIENT_FREE_HOSTS}
)


class Scheduler:
    """The scheduling core over one topology.

    Args:
        index: the topology index; every host is a node (UNKNOWN until its agent registers).
        config: tuning; defaults to :class:`SchedulerConfig` ().
        jobs: stored jobs to restore.
        nodes: stored nodes to restore (hosts missing from the store are created).
        queues: stored queues to restore (the default queue is created if missing).
        placer: the placement policy of the scheduling cycle (admission, backfill
            reservations, preemption); ``placement.place`` unless given. Whether a job can
            ever be placed (checked at submission) is always decided by ``placement.place``.
        campaigns: stored maintenance campaigns to restore.

    Raises:
        InvalidInputError: ``topology_mismatch`` when stored nodes name hosts the topology
            does not have or disagree on GPU counts, or stored jobs are held on such hosts.
    """

    def __init__(
        self,
        index: TopologyIndex,
        config: SchedulerConfig | None = None,
        *,
        jobs: Iterable[Job] = (),
        nodes: Iterable[Node] = (),
        queues: Iterable[Queue] = (),
        placer: Placer = run_placer,
        campaigns: Iterable[Campaign] = (),
    ) -> None:
        self.config = config or SchedulerConfig()
        self.index = index
        node_list = list(nodes)
        _check_topology(index, node_list)
        try:
            self.state = SchedulerState.from_records(index, jobs, node_list, queues)
        except (KeyError, FirsthopError) as exc:
            raise InvalidInputError(
                f"the stored state does not fit the topology: {exc}",
                reason=ErrorReason.TOPOLOGY_MISMATCH,
            ) from None
        for h, name in enumerate(index.host_names):
            if name not in self.state.nodes:
                self.state.put_node(
                    Node(name=name, state=NodeState.UNKNOWN, gpus=int(index.host_gpus[h]))
                )
        if self.config.default_queue not in self.state.queues:
            self.state.put_queue(Queue(name=self.config.default_queue))
        self.cache = PlacementCache(
            self.config.placement, placer, deferred=self.config.defer_placement
        )
        self.last_cycle: CycleReport | None = None
        self._empty = Snapshot.empty(index)
        self._placeable: dict[str, FirsthopError | None] = {}
        self.campaigns = maintenance.CampaignBook(campaigns)
        self.state.validate()

    # ------------------------------------------------------------------ events

    def handle(self, event: Event) -> list[Action]:
        """Apply ``event`` and return what the runtime must do, in order.

        Raises:
            FirsthopError: bad input (stable ``reason``); nothing was changed.
        """
        ctx = Ctx(self.state, self.config, Outbox())
        match event:
            case TimerFired():
                self._tick(ctx, event.at)
            case PlacementsProposed():
                self.cache.proposals.offer(event.proposals)
                self._tick(ctx, event.at)
            case JobSubmitted():
                self._submit(ctx, event)
            case JobCancelRequested():
                jobs.cancel(ctx, event)
            case HeartbeatReceived():
                nodes.heartbeat(ctx, event)
            case NodeRegistered():
                nodes.register(ctx, event)
            case NodeDrainRequested():
                nodes.drain(ctx, event)
            case NodeResumeRequested():
                nodes.resume(ctx, event)
            case NodeSpareSet():
                nodes.set_spare(ctx, event)
            case StartAcknowledged():
                jobs.start_acknowledged(ctx, event)
            case RanksStarted():
                jobs.ranks_started(ctx, event)
            case RankExited():
                jobs.rank_exited(ctx, event)
            case RanksStopped():
                jobs.ranks_stopped(ctx, event)
            case CheckpointReported():
                jobs.checkpoint_reported(ctx, event)
            case QueueSet():
                self._set_queue(event.queue)
            case SchedulerStarted():
                nodes.refresh_heartbeats(ctx, event.at)
                jobs.resend_commands(ctx)
                maintenance.resend(ctx, self.campaigns)
            case CampaignStartRequested():
                maintenance.start(ctx, self.campaigns, self.index, event)
            case CampaignControlRequested():
                maintenance.control(ctx, self.campaigns, self.index, event)
            case MaintenanceReported():
                maintenance.reported(ctx, self.campaigns, self.index, event)
            case _:
                assert_never(event)
        return self._finish(ctx)

    def _finish(self, ctx: Ctx) -> list[Action]:
        changes, changed_jobs, changed_nodes = self.state.take_changes()
        changed_campaigns = self.campaigns.take_changes()
        if changed_campaigns:
            changes = replace(changes, campaigns=changed_campaigns)
        actions: list[Action] = []
        if changes:
            actions.append(PersistChanges(changes))
        actions.extend(NotifyJobChanged(job) for job in changed_jobs)
        actions.extend(NotifyNodeChanged(node) for node in changed_nodes)
        actions.extend(ctx.out.stops)
        actions.extend(ctx.out.starts)
        actions.extend(ctx.out.maintenance)
        return actions

    def _tick(self, ctx: Ctx, at: datetime) -> None:
        nodes.detect_lost(ctx, at)
        jobs.enforce_deadlines(ctx, at)
        repair.resume_waiting(ctx, at)
        spares.keep(ctx)
        maintenance.tick(ctx, self.campaigns, self.index, at)
        self.cache.holds = holds_at(
            self.campaigns.all.values(),
            at,
            cluster_hosts=self.index.num_hosts,
            host_jobs=self.state.host_jobs,
        )
        self.last_cycle = run_cycle(ctx, at, self.cache)
        queued = sum(len(keys) for keys in self.state.pending.values())
        if self.cache.size > 2 * queued + 1024:
            self.cache.prune({k[2] for keys in self.state.pending.values() for k in keys})

    def _submit(self, ctx: Ctx, event: JobSubmitted) -> None:
        if jobs.check_submission(self.state, event) is not None:
            return
        self._check_placeable(event.spec)
        jobs.submit(ctx, event)

    def _check_placeable(self, spec: JobSpec) -> None:
        key = spec.request_key
        if key not in self._placeable:
            error: FirsthopError | None = None
            try:
                result = run_placer(self._empty, spec.request, self.config.placement)
            except FirsthopError as exc:
                error = exc
            else:
                if isinstance(result, PlacementFailure):
                    error = _unplaceable_error(spec, result)
            self._placeable[key] = error
        error = self._placeable[key]
        if error is not None:
            raise type(error)(error.message, reason=error.reason)

    def _set_queue(self, queue: Queue) -> None:
        _check_queue(queue)
        old = self.state.queues.get(queue.name)
        if old is not None and _same_queue(old, queue):
            return
        self.state.put_queue(queue)
        if old is not None and (
            (old.gpu_quota or 0) != (queue.gpu_quota or 0) or old.priority != queue.priority
        ):
            self.state.capacity_epoch += 1

    # ------------------------------------------------------------------ queries

    def job_for(self, event: JobSubmitted) -> Job:
        """The job that answers ``event`` once handled (the first one for a repeat)."""
        if event.submission_id is not None:
            job = self.state.job_for_submission(event.user, event.submission_id)
            if job is not None:
                return job
        return jobs.get_job(self.state, event.job_id)

    def explain(self, job_id: str, now: datetime) -> Explanation:
        """Why a job is where it is, and the placement it would get now (see ``explain``)."""
        return explain_job(self, job_id, now)

    def status(self, now: datetime) -> ClusterStatus:
        """Capacity, usage, fragmentation and queue depths (see ``status``)."""
        return cluster_status(self.state, now)

    def live_jobs(self) -> list[Job]:
        """Jobs not yet finished, by id."""
        return [j for _, j in sorted(self.state.jobs.items()) if not is_terminal(j.state)]


def _unplaceable_error(spec: JobSpec, failure: PlacementFailure) -> FirsthopError | None:
    if failure.reason is FailureReason.NO_SOLUTION_IN_TIME:
        return None
    if failure.reason in CAPACITY_REASONS:
        return JobTooLargeError(
            f"the job needs {spec.gpus} GPUs; the whole cluster cannot hold it "
            f"({failure.reason.value}: {failure.message})"
        )
    return JobTooLargeError(
        f"the job can never be placed on this cluster ({failure.reason.value}): {failure.message}",
        reason=ErrorReason.UNPLACEABLE_JOB,
    )


def _check_queue(queue: Queue) -> None:
    name = queue.name
    if not name or len(name) > QUEUE_NAME_MAX or not all(c.isalnum() or c in "._-" for c in name):
        raise InvalidQueueError(f"invalid queue name {name!r} (letters, digits, '.', '_', '-')")
    if queue.gpu_quota is not None and queue.gpu_quota < 0:
        raise InvalidQueueError(f"queue {name}: gpu_quota must be >= 0, not {queue.gpu_quota}")
    if not queue.weight > 0 or queue.weight == float("inf"):
        raise InvalidQueueError(f"queue {name}: weight must be a positive number")


def _same_queue(a: Queue, b: Queue) -> bool:
    return (
        a.priority == b.priority
        and a.gpu_quota == b.gpu_quota
        and a.weight == b.weight
        and dict(a.labels) == dict(b.labels)
    )


def _check_topology(index: TopologyIndex, stored: list[Node]) -> None:
    for node in stored:
        host = index.host_ids.get(node.name)
        if host is None:
            raise InvalidInputError(
                f"stored node {node.name!r} is not a host of the topology",
                reason=ErrorReason.TOPOLOGY_MISMATCH,
            )
        if int(index.host_gpus[host]) != node.gpus:
            raise InvalidInputError(
                f"stored node {node.name!r} has {node.gpus} GPUs; the topology says "
                f"{int(index.host_gpus[host])}",
                reason=ErrorReason.TOPOLOGY_MISMATCH,
            )
